"""Planning: expansion, include/exclude, filters, changed files, ids, labels, outputs, local runs."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_runner import config, plan
from gpu_runner.cli import main
from gpu_runner.errors import ConfigError
from gpu_runner.execute.spec import EntryRun

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "matrix_fixtures"
EXAMPLE = REPO / "matrix" / "example.yml"
NO_GITHUB = {"GITHUB_RUN_ID": "", "GITHUB_RUN_ATTEMPT": ""}
GCE_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")

NOTEBOOK = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n'

REPO_MATRIX = """\
machines:
  local: {provider: local}
  l4: {machine_type: g2-standard-8, zones: [us-central1-a]}
  t4:
    machine_type: n1-standard-8
    accelerator: {type: nvidia-tesla-t4}
    zones: [us-central1-b]
runtimes:
  torch:
    notebooks: [notebooks/torch/*.ipynb]
    paths: [docker/torch/**]
    parameters: {epochs: 1}
    env: {A: 1}
  jax:
    notebooks: [notebooks/jax]
    machines: [local, l4]
    checks: [gpu, {name: gcc, run: gcc --version}]
"""


@pytest.fixture(autouse=True)
def _outside_github(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_OUTPUT", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)


def make_repo(tmp_path: Path, matrix: str = REPO_MATRIX) -> Path:
    """A repository with notebooks and matrix/m.yml; returns the matrix path."""
    (tmp_path / ".git").mkdir()
    for nb in ("notebooks/torch/a.ipynb", "notebooks/torch/b.ipynb", "notebooks/jax/c.ipynb"):
        (tmp_path / nb).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / nb).write_text(NOTEBOOK)
    (tmp_path / "matrix").mkdir()
    path = tmp_path / "matrix" / "m.yml"
    path.write_text(matrix)
    return path


def load(tmp_path: Path, text: str) -> config.LoadedMatrix:
    path = tmp_path / "m.yml"
    path.write_text(text)
    return config.load(path, display="m.yml")


def ids(p: plan.Plan) -> list[str]:
    return [e.id for e in p.entries]


# --------------------------------------------------------------------------- expansion


def test_example_expands_to_its_entries() -> None:
    p = plan.plan(EXAMPLE, env=NO_GITHUB)
    assert ids(p) == ["pytorch--local", "pytorch--l4", "pytorch--t4", "pytorch--a100x4",
                      "jax--local", "jax--cpu", "jax--l4", "jax--a100x4"]
    a100 = next(e for e in p.entries if e.id == "pytorch--a100x4")
    assert a100.parameters == {"epochs": 1, "batch_size": 256}  # include adjusts the entry
    assert a100.gce is not None and a100.gce.provisioning_models == ["SPOT"]
    assert a100.gce.accelerator_count == 4 and a100.gce.attach_accelerators is False
    assert a100.gce.disk_type == "pd-ssd" and a100.gce.disk_size_gb == 300
    assert a100.gce.max_run_duration_s == 3 * 3600 and a100.timeout_minutes == 180
    t4 = next(e for e in p.entries if e.id == "pytorch--t4")
    assert t4.gce is not None and t4.gce.attach_accelerators is True
    assert t4.gce.zones == ["us-central1-a", "us-central1-b", "us-east1-c", "us-west1-b"]
    l4 = next(e for e in p.entries if e.id == "jax--l4")
    assert l4.gce is not None
    assert l4.gce.zones == ["us-central1-a", "us-central1-b", "us-central1-c", "us-central1-f"]  # region letters
    assert l4.gce.provisioning_models == ["SPOT", "STANDARD"]
    assert l4.gce.source_image == ("projects/deeplearning-platform-release/global/images/family/"
                                   + config.DEFAULT_BOOT_IMAGE_FAMILY)
    assert l4.gce.labels == {"team": "ml-platform"} and l4.gce.project == "my-gpu-project"
    assert l4.env == {"PYTHONUNBUFFERED": "1", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    assert l4.timeout_s == 1800 and l4.cell_timeout_s == 600
    assert l4.checks == [{"name": "gpu"}, {"name": "cuda"}, {"name": "frameworks"}, {"name": "resources"}]
    local = next(e for e in p.entries if e.id == "pytorch--local")
    assert local.gce is None and local.runs_on == "ubuntu-latest" and local.timeout_minutes is None
    assert local.checks[-1] == {"name": "triton-gcc", "run": "gcc --version", "expect_exit": 0, "timeout_s": 300.0}


def test_defaults_apply_unless_a_runtime_or_machine_sets_its_own(tmp_path: Path) -> None:
    lm = load(tmp_path, """\
defaults:
  runtime: {timeout: 20m, kernel: python3, env: {A: a, B: b}, parameters: {x: 1}, checks: []}
  machine: {zones: [us-east1-b], spot: only, disk: {size_gb: 50}}
machines:
  l4: {machine_type: g2-standard-8}
  t4: {machine_type: n1-standard-4, accelerator: {type: nvidia-tesla-t4}, zones: [us-west1-a], spot: never}
runtimes:
  r: {notebooks: [a.ipynb], timeout: 5m, env: {B: own}, parameters: {y: 2}}
""")
    l4, t4 = plan.plan(lm).entries
    assert (l4.timeout_s, l4.kernel, l4.env, l4.parameters, l4.checks) == (300, "python3", {"A": "a", "B": "own"},
                                                                           {"x": 1, "y": 2}, [])
    assert l4.gce and l4.gce.zones == ["us-east1-b"] and l4.gce.provisioning_models == ["SPOT"]
    assert l4.gce.disk_size_gb == 50 and l4.gce.disk_type == "pd-balanced" and l4.gce.max_run_duration_s == 7200
    assert t4.gce and t4.gce.zones == ["us-west1-a"] and t4.gce.provisioning_models == ["STANDARD"]


def test_default_checks_are_the_builtins(tmp_path: Path) -> None:
    lm = load(tmp_path, "machines: {local: {provider: local}}\nruntimes: {r: {notebooks: [a.ipynb]}}\n")
    assert plan.plan(lm).entries[0].checks == [{"name": n} for n in config.BUILTIN_CHECKS]


def test_exclude_by_glob_and_include_adds_back(tmp_path: Path) -> None:
    lm = load(tmp_path, """\
machines:
  local: {provider: local}
  gpu-a: {provider: local}
  gpu-b: {provider: local}
runtimes:
  torch-2: {notebooks: [a.ipynb]}
  torch-3: {notebooks: [a.ipynb]}
  jax: {notebooks: [a.ipynb], machines: [local]}
exclude:
  - {runtime: 'torch-*', machine: 'gpu-*'}
  - {machine: local, runtime: torch-3}
include:
  - {runtime: jax, machine: gpu-b, env: {X: '1'}}
  - {runtime: torch-3, machine: gpu-a}
""")
    p = plan.plan(lm)
    assert ids(p) == ["torch-2--local", "torch-3--gpu-a", "jax--local", "jax--gpu-b"]
    assert p.entries[-1].env == {"X": "1"}


def test_filters_by_name_and_glob(tmp_path: Path) -> None:
    lm = config.load(EXAMPLE)
    assert ids(plan.plan(lm, runtimes=["jax"], env=NO_GITHUB)) == ["jax--local", "jax--cpu", "jax--l4",
                                                                   "jax--a100x4"]
    assert ids(plan.plan(lm, machines=["l4", "t4"])) == ["pytorch--l4", "pytorch--t4", "jax--l4"]
    assert ids(plan.plan(lm, runtimes=["py*"], machines=["a100*"])) == ["pytorch--a100x4"]


def test_unknown_filter_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        plan.plan(EXAMPLE, runtimes=["pytroch"])
    assert str(info.value) == (f"--runtime pytroch: {EXAMPLE} has no runtime 'pytroch'; did you mean 'pytorch'? "
                               "(runtimes: pytorch, jax)")
    with pytest.raises(ConfigError, match=r"--machine h100\*: .* has pattern 'h100\*' matches no machine"):
        plan.plan(EXAMPLE, machines=["h100*"])


def test_empty_selection_from_filters_names_the_file() -> None:
    lm = config.load(EXAMPLE, display="matrix/example.yml")
    with pytest.raises(ConfigError) as info:
        plan.plan(lm, runtimes=["jax"], machines=["t4"])
    line = EXAMPLE.read_text().splitlines().index("runtimes:") + 1
    assert str(info.value) == (f"matrix/example.yml:{line}:1: runtimes: the selection is empty: --runtime jax --machine t4 "
                               "gives no entries (jax runs on local, cpu, l4, a100x4)")
    assert info.value.exit_code == 2


def test_empty_selection_from_the_file() -> None:
    with pytest.raises(ConfigError) as info:
        plan.plan(config.load(FIXTURES / "empty_selection.yml", display="empty_selection.yml"))
    assert str(info.value) == ("empty_selection.yml:7:1: exclude: the selection is empty: exclude rules remove every "
                               "runtime x machine entry")


def test_257_entries_is_too_many_for_github() -> None:
    lm = config.load(FIXTURES / "too_many_entries.yml", display="too_many_entries.yml")
    with pytest.raises(ConfigError) as info:
        plan.plan(lm)
    assert str(info.value) == ("too_many_entries.yml:19:1: runtimes: 257 entries; a GitHub Actions matrix holds at "
                               "most 256: select fewer with --runtime/--machine or exclude rules")
    assert len(plan.plan(lm, runtimes=["r0*", "r1[0-6]"]).entries) == 256
    assert len(plan.plan(lm, limit=None).entries) == 257


# --------------------------------------------------------------------------- ids and labels


def test_ids_are_stable_whatever_else_is_selected() -> None:
    full = {(e.runtime, e.machine): e.id for e in plan.plan(EXAMPLE).entries}
    for r in ("pytorch", "jax"):
        for e in plan.plan(EXAMPLE, runtimes=[r]).entries:
            assert full[(e.runtime, e.machine)] == e.id
    assert plan.entry_id("pytorch", "l4") == "pytorch--l4"
    assert plan.entry_id("PyTorch 2.4 (CUDA 12.4)", "L4_x1") == "pytorch-2-4-cuda-12-4--l4-x1"


def test_long_names_give_short_unique_ids() -> None:
    a = plan.entry_id("pytorch-nightly-cuda-12.6-cudnn9-devel", "a3-megagpu-8g-h100-mega")
    b = plan.entry_id("pytorch-nightly-cuda-12.6-cudnn9-devel", "a3-megagpu-8g-h100-mega-2")
    assert len(a) <= 40 and len(b) <= 40 and a != b
    assert a == plan.entry_id("pytorch-nightly-cuda-12.6-cudnn9-devel", "a3-megagpu-8g-h100-mega")  # stable
    assert GCE_NAME.match(a) and GCE_NAME.match(b)


def test_id_halves_never_run_into_each_other() -> None:
    assert plan.entry_id("a-b", "c") != plan.entry_id("a", "b-c")


def test_labels_follow_the_design(monkeypatch: pytest.MonkeyPatch) -> None:
    assert plan.runner_label("pytorch--l4", env={}) == "gpu-runner-local-1-pytorch--l4"
    env = {"GITHUB_RUN_ID": "12345678901", "GITHUB_RUN_ATTEMPT": "2"}
    assert plan.runner_label("pytorch--l4", env=env) == "gpu-runner-12345678901-2-pytorch--l4"
    long_id = plan.entry_id("x" * 60, "y" * 60)
    label = plan.runner_label(long_id, env=env)
    assert len(label) <= 63 and GCE_NAME.match(label) and label.startswith("gpu-runner-12345678901-2-")
    assert label != plan.runner_label(plan.entry_id("x" * 60, "y" * 59), env=env)
    monkeypatch.setenv("GITHUB_RUN_ID", "987")
    monkeypatch.setenv("GITHUB_RUN_ATTEMPT", "3")
    assert plan.plan(EXAMPLE, runtimes=["jax"], machines=["l4"]).entries[0].label == "gpu-runner-987-3-jax--l4"


def test_a_retry_has_a_label_of_its_own_and_knows_its_ladder() -> None:
    env = {"GITHUB_RUN_ID": "555", "GITHUB_RUN_ATTEMPT": "2"}
    assert plan.runner_label("pytorch--l4", env=env, retry=1) == "gpu-runner-555-2r1-pytorch--l4"
    first = plan.find_entry(EXAMPLE, "jax--l4", env=env)
    again = plan.find_entry(EXAMPLE, "jax--l4", env=env, retry=2)
    assert again.label == "gpu-runner-555-2r2-jax--l4" != first.label and again.retry == 2
    assert GCE_NAME.match(again.label) and len(plan.runner_label("x" * 40, env=env, retry=2)) <= 63
    assert first.gce is not None and first.gce.idle_timeout_s == 15 * 60
    spot = [e for e in plan.plan(EXAMPLE, env=env).entries if e.gce and "SPOT" in e.gce.provisioning_models]
    standard = [e for e in plan.plan(EXAMPLE, env=env).entries if e.gce and "SPOT" not in e.gce.provisioning_models]
    assert spot and all(e.retries_preempted == 1 for e in spot)  # the default: one retry
    assert all(e.retries_preempted == 0 for e in standard)  # a STANDARD VM is not preempted


def test_every_label_of_a_big_matrix_is_a_valid_unique_gce_name() -> None:
    env = {"GITHUB_RUN_ID": "99999999999", "GITHUB_RUN_ATTEMPT": "10"}
    p = plan.plan(FIXTURES / "too_many_entries.yml", env=env, limit=None)
    labels = [e.label for e in p.entries]
    assert len(set(labels)) == len(labels) == 257
    assert all(len(x) <= 63 and GCE_NAME.match(x) for x in labels)


# --------------------------------------------------------------------------- changed files


@pytest.mark.parametrize("changed,expected", [
    (["notebooks/torch/a.ipynb"], ["torch--local", "torch--l4", "torch--t4"]),
    (["./notebooks/jax/c.ipynb"], ["jax--local", "jax--l4"]),  # a folder pattern takes files below it
    (["docker/torch/base/Dockerfile"], ["torch--local", "torch--l4", "torch--t4"]),  # paths: with **
    (["matrix/m.yml"], ["torch--local", "torch--l4", "torch--t4", "jax--local", "jax--l4"]),  # the matrix itself
    (["README.md", "src/x.py"], []),
    (["notebooks/torch/sub/deep.ipynb"], []),  # * stays within one folder
])
def test_changed_files_select_runtimes(tmp_path: Path, changed: list[str], expected: list[str]) -> None:
    p = plan.plan(make_repo(tmp_path), changed_files=changed)
    assert ids(p) == expected
    assert p.github_output().endswith(f"has-work={'true' if expected else 'false'}\n")


def test_changed_files_and_global_paths(tmp_path: Path) -> None:
    matrix = make_repo(tmp_path, REPO_MATRIX + "paths: ['.github/workflows/*.yml']\n")
    p = plan.plan(matrix, changed_files=[".github/workflows/gpu.yml"], runtimes=["jax"])
    assert ids(p) == ["jax--local", "jax--l4"]
    assert p.notes == [".github/workflows/gpu.yml matches paths: .github/workflows/*.yml"]


def test_changed_files_absolute_paths(tmp_path: Path) -> None:
    matrix = make_repo(tmp_path)
    p = plan.plan(matrix, changed_files=[str(tmp_path / "notebooks" / "jax" / "c.ipynb"), "/elsewhere/x"])
    assert ids(p) == ["jax--local", "jax--l4"]


@pytest.mark.parametrize("pattern,path,hit", [
    ("notebooks/*.ipynb", "notebooks/a.ipynb", True),
    ("notebooks/*.ipynb", "notebooks/x/a.ipynb", False),
    ("notebooks/**/*.ipynb", "notebooks/a.ipynb", True),
    ("notebooks/**/*.ipynb", "notebooks/x/y/a.ipynb", True),
    ("notebooks/**", "notebooks/x/y", True),
    ("notebooks", "notebooks/x/y.ipynb", True),
    ("notebooks/", "notebooks/y.ipynb", True),
    ("notebooks", "notebooks2/y.ipynb", False),
    ("nb/[ab].ipynb", "nb/b.ipynb", True),
    ("nb/[!ab].ipynb", "nb/b.ipynb", False),
    ("nb/?.ipynb", "nb/cc.ipynb", False),
    ("nb/a+b.ipynb", "nb/a+b.ipynb", True),
])
def test_path_matching(pattern: str, path: str, hit: bool) -> None:
    assert plan.path_matches(pattern, path) is hit


def test_read_changed_files(tmp_path: Path) -> None:
    f = tmp_path / "changed.txt"
    f.write_text("a.ipynb\n\n  b/c.py  \n")
    assert plan.read_changed_files(str(f)) == ["a.ipynb", "b/c.py"]
    assert plan.read_changed_files("-", stdin=io.StringIO("x\ny\n")) == ["x", "y"]
    with pytest.raises(ConfigError, match="--changed-files: cannot read"):
        plan.read_changed_files(str(tmp_path / "missing.txt"))


# --------------------------------------------------------------------------- outputs


def test_matrix_json_carries_what_the_jobs_need() -> None:
    p = plan.plan(EXAMPLE, env={"GITHUB_RUN_ID": "42", "GITHUB_RUN_ATTEMPT": "1"})
    doc = json.loads(p.matrix_json())
    item = next(i for i in doc["include"] if i["id"] == "pytorch--t4")
    assert item["label"] == item["runs_on"] == "gpu-runner-42-1-pytorch--t4"
    assert item["container"] == "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime"
    assert item["gce"]["machine_type"] == "n1-standard-8"
    assert (item["gce"]["accelerator_type"], item["gce"]["accelerator_count"]) == ("nvidia-tesla-t4", 1)
    assert set(item) == set(plan.Entry.MATRIX_FIELDS)
    assert "\n" not in p.matrix_json()


def test_cli_plan_json_and_github_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    matrix = make_repo(tmp_path)
    out = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    monkeypatch.setenv("GITHUB_RUN_ID", "7")
    changed = tmp_path / "changed.txt"
    changed.write_text("notebooks/jax/c.ipynb\n")
    with pytest.raises(SystemExit) as info:
        main(["plan", "--matrix", str(matrix), "--changed-files", str(changed), "--format", "json"])
    assert info.value.code == 0
    printed = json.loads(capsys.readouterr().out)
    assert [i["id"] for i in printed["include"]] == ["jax--local", "jax--l4"]
    lines = out.read_text().splitlines()
    assert lines[0] == "matrix=" + json.dumps(printed, separators=(",", ":"))
    assert lines[1] == "has-work=true"


def test_cli_plan_no_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                          ) -> None:
    matrix = make_repo(tmp_path)
    out = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    monkeypatch.setattr("sys.stdin", io.StringIO("README.md\n"))
    with pytest.raises(SystemExit) as info:
        main(["plan", "--matrix", str(matrix), "--changed-files", "-", "--format", "json"])
    assert info.value.code == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"include": []}
    assert "no runtime is touched by the 1 changed file(s)" in captured.err
    assert out.read_text() == 'matrix={"include":[]}\nhas-work=false\n'


def test_cli_plan_table(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as info:
        main(["plan", "--matrix", str(make_repo(tmp_path)), "--format", "table"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())  # the caption names the matrix file, whose path may wrap at 80 columns
    assert "5 entries" in flat and "torch--t4" in out and "gpu-runner-local-1-<id>" in out


def test_the_example_matrix_as_a_table_fits_80_columns_and_never_breaks_a_name(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).parent.parent / "matrix" / "example.yml"
    p = plan.plan(example)
    names = [e.id for e in p.entries] + [e.gce.machine_type for e in p.entries if e.gce]
    for columns, tabular in (("80", True), ("40", False)):
        monkeypatch.setenv("COLUMNS", columns)
        with pytest.raises(SystemExit):
            main(["plan", "--matrix", str(example), "--format", "table"])
        lines = capsys.readouterr().out.splitlines()
        for name in names:  # each name whole on some line
            assert any(name in line for line in lines), (columns, name)
        for e in p.entries:  # and one line per entry when it is a table
            assert sum(line.split()[:1] == [e.id] for line in lines) == 1, (columns, e.id)
        if tabular:
            assert all(len(line.rstrip()) <= 80 for line in lines)
            assert any(line.split()[:4] == ["id", "machine", "GPUs", "zones"] for line in lines)
            row = next(line for line in lines if line.split()[:1] == ["pytorch--a100x4"])
            assert row.split()[:6] == ["pytorch--a100x4", "a2-highgpu-4g", "4x", "a100", "us-central1-a", "+2"]
            assert row.split()[7] == "spot"  # its price, then the provisioning model
        else:
            assert "  machine: a2-highgpu-4g" in lines


def test_shell_completion_offers_the_matrix_runtimes_machines_and_entries(tmp_path: Path) -> None:
    matrix = make_repo(tmp_path)
    env = {**os.environ, "_GPU_RUNNER_COMPLETE": "bash_complete"}

    def complete(*words: str) -> list[str]:
        line = ["gpu-runner", *words]
        r = subprocess.run([sys.executable, "-m", "gpu_runner"], env={**env, "COMP_WORDS": " ".join(line),
                                                                     "COMP_CWORD": str(len(line) - 1)},
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return [item.split(",", 1)[1] for item in r.stdout.splitlines() if item]

    lm = config.load(matrix)
    assert complete("run", "--matrix", str(matrix), "--runtime", "") == list(lm.model.runtimes)
    assert complete("plan", "--matrix", str(matrix), "--machine", "") == list(lm.model.machines)
    assert complete("check", "--matrix", str(matrix), "--entry", "torch--") == \
        [e.id for e in plan.plan(matrix).entries if e.id.startswith("torch--")]
    assert complete("run", "--runtime", "") == []  # no matrix yet: nothing to offer
    assert complete("run", "--matrix", str(tmp_path / "nope.yml"), "--runtime", "") == []


def test_cli_plan_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["plan", "--matrix", str(FIXTURES / "unknown_key.yml")])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == (f"gpu-runner: error: {FIXTURES / 'unknown_key.yml'}:4:5: "
                                               "machines.l4.zone: unknown key 'zone'; did you mean 'zones'?")


def test_cli_plan_checks_notebooks_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = make_repo(tmp_path, REPO_MATRIX.replace("notebooks/jax]", "notebooks/jax, notebooks/gone/*.ipynb]"))
    with pytest.raises(SystemExit) as info:
        main(["plan", "--matrix", str(matrix)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"{matrix}:15:32: runtimes.jax.notebooks[1]: no notebooks (*.ipynb) match 'notebooks/gone/*.ipynb'" in err


def test_cli_plan_warnings_as_workflow_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    matrix = make_repo(tmp_path, REPO_MATRIX.replace("g2-standard-8", "g2-standard-7"))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    with pytest.raises(SystemExit):
        main(["plan", "--matrix", str(matrix), "--format", "json"])
    err = capsys.readouterr().err
    assert f"::warning file={matrix},line=3,col=22::machines.l4.machine_type: g2-standard-7 is not a g2" in err


# --------------------------------------------------------------------------- find_entry


def test_find_entry_gives_the_full_spec() -> None:
    e = plan.find_entry(EXAMPLE, "pytorch--a100x4", env={"GITHUB_RUN_ID": "5", "GITHUB_RUN_ATTEMPT": "1"})
    assert e.label == "gpu-runner-5-1-pytorch--a100x4"
    assert e.notebooks == ["notebooks/cpu_smoke.ipynb", "notebooks/parameters.ipynb", "notebooks/gpu_torch.ipynb"]
    assert e.parameters == {"epochs": 1, "batch_size": 256}
    full = e.to_dict()
    assert full["gce"]["max_run_duration_s"] == 10800 and full["checks"][0] == {"name": "gpu"}
    json.dumps(full)  # plain data


def test_find_entry_unknown_id() -> None:
    with pytest.raises(ConfigError) as info:
        plan.find_entry(EXAMPLE, "pytorch--l5")
    assert str(info.value).startswith(f"no entry 'pytorch--l5' in {EXAMPLE}; did you mean 'pytorch--l4'? (entries: "
                                      "pytorch--local, pytorch--l4,")


# --------------------------------------------------------------------------- local runs


def test_local_runs_take_local_entries(tmp_path: Path) -> None:
    matrix = make_repo(tmp_path)
    runs = plan.local_runs(Path("matrix/m.yml"), cwd=tmp_path)
    assert all(isinstance(r, EntryRun) for r in runs)
    assert [r.info.id for r in runs] == ["torch--local", "jax--local"]
    torch, jax = runs
    assert [nb.path for nb in torch.notebooks] == ["notebooks/torch/a.ipynb", "notebooks/torch/b.ipynb"]
    assert torch.notebooks[0].source == (tmp_path / "notebooks/torch/a.ipynb").resolve()
    assert [nb.path for nb in jax.notebooks] == ["notebooks/jax/c.ipynb"]
    assert torch.parameters == {"epochs": 1} and torch.env == {"A": "1"}
    assert jax.checks == [{"name": "gpu"}, {"name": "gcc", "run": "gcc --version", "expect_exit": 0,
                                            "timeout_s": 300.0}]
    assert (torch.info.provider, torch.info.ran_locally, torch.info.label) == ("local", True, None)
    assert (torch.info.runtime, torch.info.machine) == ("torch", "local")
    assert matrix.exists()


def test_local_runs_resolve_notebooks_from_the_root_wherever_called(tmp_path: Path) -> None:
    matrix = make_repo(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    runs = plan.local_runs(matrix, cwd=tmp_path / "elsewhere")
    assert [nb.path for nb in runs[0].notebooks] == ["notebooks/torch/a.ipynb", "notebooks/torch/b.ipynb"]


def test_local_flag_runs_cloud_entries_here(tmp_path: Path) -> None:
    make_repo(tmp_path)
    runs = plan.local_runs(Path("matrix/m.yml"), machines=["t4", "l4"], local=True, cwd=tmp_path)
    assert [r.info.id for r in runs] == ["torch--l4", "torch--t4", "jax--l4"]
    info = runs[1].info
    assert (info.provider, info.ran_locally, info.label) == ("gce", True, "gpu-runner-local-1-torch--t4")


def test_local_runs_without_a_local_entry_suggest_local(tmp_path: Path) -> None:
    make_repo(tmp_path)
    with pytest.raises(ConfigError) as info:
        plan.local_runs(Path("matrix/m.yml"), machines=["l4"], runtimes=["jax"], cwd=tmp_path)
    assert str(info.value) == ("no selected entry runs on this machine: the 1 selected entry runs on cloud machines "
                               "(l4); add --local to run their notebooks here, or select a machine whose provider is "
                               "local with --machine")


def test_local_runs_name_a_pattern_that_matches_nothing(tmp_path: Path) -> None:
    make_repo(tmp_path, REPO_MATRIX.replace("notebooks/torch/*.ipynb", "notebooks/torch/*.ipynbx"))
    with pytest.raises(ConfigError) as info:
        plan.local_runs(Path("matrix/m.yml"), cwd=tmp_path)
    assert str(info.value) == (f"matrix/m.yml:10:17: runtimes.torch.notebooks[0]: no notebooks (*.ipynb) match "
                               f"'notebooks/torch/*.ipynbx' (under {tmp_path.resolve()})")


def test_local_runs_of_the_example() -> None:
    """The README's main command: the example's local entries run the sample notebooks."""
    runs = plan.local_runs(Path("matrix/example.yml"), cwd=REPO)
    assert [r.info.id for r in runs] == ["pytorch--local", "jax--local"]
    assert [nb.path for nb in runs[0].notebooks] == ["notebooks/cpu_smoke.ipynb", "notebooks/parameters.ipynb",
                                                     "notebooks/gpu_torch.ipynb"]
    assert runs[0].timeout_s == 1800 and runs[0].cell_timeout_s == 600
    everything = plan.local_runs(EXAMPLE, local=True, cwd=REPO)
    assert len(everything) == 8

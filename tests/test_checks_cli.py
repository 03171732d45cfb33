"""`gpu-runner check` and the checks of `gpu-runner run`, through the real command line,
with a stand-in nvidia-smi on PATH where a GPU is needed."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from junitparser import JUnitXml

from conftest import gpu_runner, make_nb, results
from test_checks import fixture_text, standin_smi


def _env(tmp_path: Path, *, smi: str | None = None, exit_code: int = 0, **extra: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if smi is not None:
        standin_smi(bin_dir, text=fixture_text(smi), exit_code=exit_code)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **extra}


def _matrix(folder: Path, *, count: int, checks: str, acc_type: str = "nvidia-l4") -> Path:
    make_nb(folder, "nb/ok.ipynb", "print('fine')")
    m = folder / "matrix.yml"
    m.write_text(textwrap.dedent(f"""\
        version: 1
        machines:
          box:
            provider: local
            accelerator: {{type: {acc_type}, count: {count}}}
        runtimes:
          rt:
            notebooks: [nb/ok.ipynb]
            checks: {checks}
        """), encoding="utf-8")
    return m


def test_check_alone_here_passes_or_skips_and_writes_results_and_junit(tmp_path):
    p = gpu_runner("check", "--out", "res", cwd=tmp_path, env=_env(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    res = results(tmp_path / "res")
    assert [c["name"] for c in res["checks"]] == ["gpu", "cuda", "compilers", "frameworks", "resources"]
    assert all(c["status"] in ("passed", "skipped") for c in res["checks"])
    assert res["notebooks"] == [] and res["facts"]["gpu_count"] == 0 and res["facts"]["hostname"]
    assert "[SKIPPED] local: check gpu" in p.stdout and "no NVIDIA GPU" not in p.stderr
    cases = [c.name for s in JUnitXml.fromfile(str(tmp_path / "res/local/junit.xml")) for c in s]
    assert cases == ["gpu", "cuda", "compilers", "frameworks", "resources"]


def test_check_entry_happy_path_with_a_standin_nvidia_smi(tmp_path):
    m = _matrix(tmp_path, count=4, checks="[gpu, {name: hello, run: 'echo hello from $GPU_RUNNER'}]")
    p = gpu_runner("check", "--matrix", str(m), "--entry", "rt--box", "--out", "res", cwd=tmp_path,
                   env=_env(tmp_path, smi="4xl4"))
    assert p.returncode == 0, p.stdout + p.stderr
    res = results(tmp_path / "res", "rt--box")
    gpu, hello = res["checks"]
    assert gpu["status"] == "passed" and gpu["summary"].startswith("4× NVIDIA L4 (23034 MiB), driver 550.90.07")
    assert hello["status"] == "passed" and hello["summary"] == "`echo hello from $GPU_RUNNER` exited 0: hello from 1"
    assert {k: res["facts"][k] for k in ("gpu_model", "gpu_count", "driver_version", "cuda_version")} == {
        "gpu_model": "NVIDIA L4", "gpu_count": 4, "driver_version": "550.90.07", "cuda_version": "12.4"}
    assert (tmp_path / "res/rt--box/checks/gpu/nvidia-smi-q.txt").read_text() == fixture_text("4xl4")
    assert "GPU: 4× NVIDIA L4, driver 550.90.07, CUDA 12.4" in p.stdout
    suite = next(iter(JUnitXml.fromfile(str(tmp_path / "res/rt--box/junit.xml"))))
    props = {pr.name: pr.value for pr in suite.properties()}
    assert props["gpu_model"] == "NVIDIA L4" and props["driver_version"] == "550.90.07"


def test_check_entry_count_mismatch_exits_1(tmp_path):
    m = _matrix(tmp_path, count=2, checks="[gpu]")
    p = gpu_runner("check", "--matrix", str(m), "--entry", "rt--box", "--out", "res", cwd=tmp_path,
                   env=_env(tmp_path, smi="l4"))
    assert p.returncode == 1, p.stdout + p.stderr
    gpu = results(tmp_path / "res", "rt--box")["checks"][0]
    assert gpu["status"] == "failed" and gpu["failure"]["kind"] == "check_failed"
    assert "the matrix expects 2 GPUs (nvidia-l4), found 1" in gpu["failure"]["message"]
    assert "[FAILED] rt--box: check gpu" in p.stdout


def test_check_folds_each_checks_output_in_github_actions(tmp_path):
    m = _matrix(tmp_path, count=1, checks="[gpu, {name: boom, run: 'echo bad news; exit 4'}]")
    p = gpu_runner("check", "--matrix", str(m), "--entry", "rt--box", "--out", "res", cwd=tmp_path,
                   env=_env(tmp_path, smi="l4", GITHUB_ACTIONS="true"))
    assert p.returncode == 1
    out = p.stdout
    assert "::group::rt--box: check gpu: passed" in out and "Driver Version                            : 550.90.07" in out
    assert "::group::rt--box: check boom: failed\nbad news\n::endgroup::" in out
    assert "[FAILED] rt--box: check boom" in out


@pytest.mark.parametrize("args, message", [
    (["--matrix", "matrix.yml"], "--matrix FILE and --entry ID go together"),
    (["--matrix", "matrix.yml", "--entry", "nope"], "no entry 'nope'"),
    (["--matrix", "missing.yml", "--entry", "x"], "missing.yml: no such file"),
])
def test_check_usage_errors_exit_2(tmp_path, args, message):
    _matrix(tmp_path, count=1, checks="[gpu]")
    p = gpu_runner("check", *args, cwd=tmp_path, env=_env(tmp_path))
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr


def test_run_records_checks_beside_the_notebooks_and_no_checks_leaves_them_out(tmp_path):
    make_nb(tmp_path, "a.ipynb", "print(1)")
    p = gpu_runner("run", "a.ipynb", "--out", "res", "--no-pdf", cwd=tmp_path, env=_env(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    res = results(tmp_path / "res")
    assert [c["name"] for c in res["checks"]] == ["gpu", "cuda", "compilers", "frameworks", "resources"]
    assert res["notebooks"][0]["status"] == "passed"
    assert p.stdout.index("check resources") < p.stdout.index("[PASSED] local: a.ipynb")

    p = gpu_runner("run", "a.ipynb", "--out", "res", "--no-pdf", "--no-checks", cwd=tmp_path, env=_env(tmp_path))
    assert p.returncode == 0
    assert results(tmp_path / "res")["checks"] == []
    assert "check gpu" not in p.stdout


def test_a_failed_check_fails_a_matrix_run_but_the_notebooks_still_run(tmp_path):
    m = _matrix(tmp_path, count=1, checks="[gpu, {name: no-gcc, run: 'exit 5'}]")
    p = gpu_runner("run", "--matrix", str(m), "--out", "res", "--no-pdf", cwd=tmp_path,
                   env=_env(tmp_path, smi="l4"))
    assert p.returncode == 1, p.stdout + p.stderr
    res = results(tmp_path / "res", "rt--box")
    assert res["status"] == "failed"
    assert [(c["name"], c["status"]) for c in res["checks"]] == [("gpu", "passed"), ("no-gcc", "failed")]
    assert res["checks"][1]["failure"]["exit_code"] == 5
    assert res["notebooks"][0]["status"] == "passed"
    assert res["facts"]["gpu_model"] == "NVIDIA L4"
    summary = (tmp_path / "res/summary.md").read_text()
    assert "no-gcc" in summary

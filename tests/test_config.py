"""The matrix file: typed model, JSON Schema, and errors that name FILE:LINE:COL: key.path."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from gpu_runner import config
from gpu_runner.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "matrix_fixtures"
EXAMPLE = REPO / "matrix" / "example.yml"


def load_text(tmp_path: Path, text: str, name: str = "m.yml") -> config.LoadedMatrix:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return config.load(path, display=name)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    return str(info.value)


MINIMAL = """\
machines:
  local: {provider: local}
runtimes:
  pytorch:
    notebooks: [notebooks/cpu_smoke.ipynb]
"""

# --------------------------------------------------------------------------- schema


def test_committed_schema_is_the_generated_one() -> None:
    committed = (REPO / "matrix" / "schema.json").read_text(encoding="utf-8")
    assert committed == config.schema_text(), (
        "matrix/schema.json is stale; regenerate it with: python -m gpu_runner.config --write-schema")


def test_schema_is_valid_and_accepts_the_example() -> None:
    schema = config.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert list(validator.iter_errors(data)) == []


def test_schema_rejects_what_the_model_rejects() -> None:
    validator = jsonschema.Draft202012Validator(config.json_schema())
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["machines"]["l4"]["zone"] = ["us-central1-a"]  # unknown key
    data["machines"]["bad name"] = {"provider": "local"}  # name pattern
    data["runtimes"]["jax"]["checks"].append("gpus")  # unknown built-in
    data["defaults"]["runtime"]["timeout"] = "soon"  # not a duration
    messages = [e.message for e in validator.iter_errors(data)]
    assert len(messages) == 4, messages


def test_example_refers_to_the_schema_for_editors() -> None:
    first = EXAMPLE.read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=./schema.json"


def test_schema_command_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "schema.json"
    assert config._main(["--check-schema", "--path", str(target)]) == 1
    assert config._main(["--write-schema", "--path", str(target)]) == 0
    assert config._main(["--check-schema", "--path", str(target)]) == 0
    assert json.loads(target.read_text())["title"] == "gpu-runner matrix"


# --------------------------------------------------------------------------- the example


def test_example_loads_without_warnings() -> None:
    lm = config.load(EXAMPLE)
    assert lm.warnings == []
    m = lm.model
    assert list(m.machines) == ["local", "cpu", "l4", "t4", "a100x4"]
    assert list(m.runtimes) == ["pytorch", "jax"]
    assert m.machines["l4"].machine_type == "g2-standard-8"
    assert m.machines["t4"].accelerator == config.Accelerator(type="nvidia-tesla-t4", count=1)
    assert m.machines["a100x4"].max_run_duration == 3 * 3600
    assert m.defaults and m.defaults.runtime and m.defaults.runtime.env == {"PYTHONUNBUFFERED": "1"}


# --------------------------------------------------------------------------- broken files: exact messages

BROKEN = {
    "tabs.yml":
        "tabs.yml:6:1: runtimes.pytorch: a tab character is not allowed here; YAML indents with spaces only",
    "duplicate_key.yml":
        "duplicate_key.yml:9:3: runtimes.pytorch: duplicate key 'pytorch' (first defined at line 5)",
    "wrong_type.yml":
        "wrong_type.yml:4:49: machines.t4.accelerator.count: expected an integer, got a string ('2')",
    "unknown_key.yml":
        "unknown_key.yml:4:5: machines.l4.zone: unknown key 'zone'; did you mean 'zones'?",
    "dangling_reference.yml":
        "dangling_reference.yml:10:23: runtimes.jax.machines[1]: unknown machine 'l5'; did you mean 'l4'? "
        "(machines: local, l4)",
    "bad_pairing.yml":
        "bad_pairing.yml:4:18: machines.l4.accelerator: n1 machine types take nvidia-tesla-t4, nvidia-tesla-v100, "
        "nvidia-tesla-p4, nvidia-tesla-p100 as guest accelerators, not nvidia-l4 (nvidia-l4 comes with g2 "
        "machine types)",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_file_message(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(FIXTURES / name, display=name)
    assert str(info.value) == BROKEN[name]
    assert info.value.exit_code == 2
    assert info.value.location == BROKEN[name].split(": ", 1)[0]


def test_tab_inside_a_list(tmp_path: Path) -> None:
    text = "machines:\n  local: {provider: local}\nruntimes:\n  pytorch:\n    notebooks:\n\t- a.ipynb\n"
    assert error_of(tmp_path, text) == ("m.yml:6:1: runtimes.pytorch.notebooks: a tab character is not allowed "
                                        "here; YAML indents with spaces only")


def test_other_syntax_error_names_line_and_key(tmp_path: Path) -> None:
    text = MINIMAL + "    machines: [local\n"
    msg = error_of(tmp_path, text)
    assert msg == ("m.yml:7:1: runtimes.pytorch.machines[1]: YAML syntax error: expected ',' or ']', but got "
                   "'<stream end>' (while parsing a flow sequence at line 6)")


def test_duplicate_key_inside_a_flow_mapping(tmp_path: Path) -> None:
    text = MINIMAL.replace("{provider: local}", "{provider: local, provider: gce}")
    assert error_of(tmp_path, text) == ("m.yml:2:28: machines.local.provider: duplicate key 'provider' "
                                        "(first defined at line 2)")


def test_anchors_and_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = """\
machines:
  base: &gpu {machine_type: g2-standard-8, zones: [us-central1-a]}
  l4:
    <<: *gpu
    spot: preferred
runtimes:
  pytorch: {notebooks: [a.ipynb]}
"""
    lm = load_text(tmp_path, text)
    assert lm.model.machines["l4"].machine_type == "g2-standard-8"


def test_unknown_top_level_key_suggests(tmp_path: Path) -> None:
    msg = error_of(tmp_path, MINIMAL.replace("runtimes:", "runtime:"))
    assert msg.splitlines()[0] == "m.yml:1:1: missing required key 'runtimes'"
    assert "m.yml:3:1: runtime: unknown key 'runtime'; did you mean 'runtimes'?" in msg.splitlines()


def test_unknown_key_without_a_close_match_lists_the_allowed(tmp_path: Path) -> None:
    msg = error_of(tmp_path, MINIMAL + "    colour: blue\n")
    assert msg.startswith("m.yml:6:5: runtimes.pytorch.colour: unknown key 'colour' (allowed: env, parameters, ")


def test_every_error_is_reported_in_file_order(tmp_path: Path) -> None:
    text = """\
machines:
  local: {provider: local, runs_onn: x}
runtimes:
  pytorch:
    notebooks: a.ipynb
    timeout: soon
"""
    lines = error_of(tmp_path, text).splitlines()
    assert lines == [
        "m.yml:2:28: machines.local.runs_onn: unknown key 'runs_onn'; did you mean 'runs_on'?",
        "m.yml:5:16: runtimes.pytorch.notebooks: expected a list, got a string ('a.ipynb')",
        "m.yml:6:14: runtimes.pytorch.timeout: 'soon' is not a duration; write seconds or e.g. 90s, 30m, 2h, 1h30m",
    ]


def test_missing_notebooks(tmp_path: Path) -> None:
    text = "machines:\n  local: {provider: local}\nruntimes:\n  pytorch:\n    kernel: python3\n"
    assert error_of(tmp_path, text) == "m.yml:5:5: runtimes.pytorch: missing required key 'notebooks'"


def test_bad_name_points_at_the_key(tmp_path: Path) -> None:
    msg = error_of(tmp_path, MINIMAL.replace("  pytorch:", "  py torch:"))
    assert msg == ("m.yml:4:3: runtimes.py torch: 'py torch' is not a valid name here (letters, digits, '.', '_' "
                   "and '-', starting with a letter or digit, at most 63)")


def test_wrong_enum_suggests(tmp_path: Path) -> None:
    msg = error_of(tmp_path, MINIMAL.replace("{provider: local}", "{provider: locl}"))
    assert msg == "m.yml:2:21: machines.local.provider: 'locl' is not one of: gce, local; did you mean 'local'?"


def test_empty_and_non_mapping_files(tmp_path: Path) -> None:
    assert error_of(tmp_path, "# nothing\n") == "m.yml:1:1: the file is empty; a matrix needs machines: and runtimes:"
    assert error_of(tmp_path, "- a\n- b\n") == ("m.yml:1:1: a matrix file is a mapping with machines: and runtimes:, "
                                                 "not a list")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="no such matrix file: nope.yml"):
        config.load(Path("nope.yml"))


def test_empty_maps_and_lists(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "machines: {}\nruntimes:\n  pytorch: {notebooks: []}\n")
    assert msg.splitlines() == [
        "m.yml:1:11: machines: must not be empty",
        "m.yml:3:24: runtimes.pytorch.notebooks: must not be empty",
    ]


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("text,seconds", [
    (90, 90.0), (1.5, 1.5), ("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0),
    ("1h30m", 5400.0), ("1d", 86400.0), (" 2h 15m ", 8100.0),
])
def test_durations(text: object, seconds: float) -> None:
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "soon", "-1", "2x", True, 0, [1]])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        config.parse_duration(bad)


def test_env_values_become_strings(tmp_path: Path) -> None:
    lm = load_text(tmp_path, MINIMAL + "    env: {A: 1, B: true, C: 0.5, D: text}\n")
    assert lm.model.runtimes["pytorch"].env == {"A": "1", "B": "true", "C": "0.5", "D": "text"}
    msg = error_of(tmp_path, MINIMAL + "    env: {A: [1]}\n")
    assert msg == "m.yml:6:14: runtimes.pytorch.env.A: expected a string, got a list"


def test_checks_builtin_and_command(tmp_path: Path) -> None:
    lm = load_text(tmp_path, MINIMAL + "    checks: [gpu, {name: gcc, run: gcc --version, expect_exit: 0}]\n")
    checks = lm.model.runtimes["pytorch"].checks
    assert checks is not None and [c.name for c in checks] == ["gpu", "gcc"] and checks[1].run == "gcc --version"
    msg = error_of(tmp_path, MINIMAL + "    checks: [gpus]\n")
    assert msg == ("m.yml:6:14: runtimes.pytorch.checks[0]: unknown built-in check 'gpus'; did you mean 'gpu'? "
                   "(built-ins: gpu, cuda, compilers, frameworks, resources; a command check needs run:)")
    msg = error_of(tmp_path, MINIMAL + "    checks: [gpu, gpu]\n")
    assert msg == "m.yml:6:19: runtimes.pytorch.checks[1]: check 'gpu' is listed twice"


# --------------------------------------------------------------------------- GCE rules

GCE = """\
machines:
  vm:
    machine_type: {machine_type}
{accelerator}    zones: [us-central1-a]
runtimes:
  pytorch: {{notebooks: [a.ipynb]}}
"""


def gce_machine(tmp_path: Path, machine_type: str, accelerator: str | None = None) -> config.LoadedMatrix:
    acc = f"    accelerator: {accelerator}\n" if accelerator else ""
    return load_text(tmp_path, GCE.format(machine_type=machine_type, accelerator=acc))


@pytest.mark.parametrize("machine_type,accelerator", [
    ("g2-standard-8", None),
    ("g2-standard-8", "{type: nvidia-l4}"),
    ("g2-standard-48", "{type: nvidia-l4, count: 4}"),
    ("a2-highgpu-4g", "{type: nvidia-tesla-a100, count: 4}"),
    ("a2-ultragpu-1g", "{type: nvidia-a100-80gb}"),
    ("a3-highgpu-8g", "{type: nvidia-h100-80gb, count: 8}"),
    ("a3-megagpu-8g", "{type: nvidia-h100-mega-80gb, count: 8}"),
    ("n1-standard-8", "{type: nvidia-tesla-t4, count: 2}"),
    ("n1-highmem-16", "{type: nvidia-tesla-v100, count: 8}"),
    ("n1-standard-4", "{type: nvidia-tesla-p4}"),
    ("n1-standard-4", "{type: nvidia-tesla-p100, count: 4}"),
    ("n2-standard-8", None),
    ("e2-standard-4", None),
])
def test_known_pairings_pass(tmp_path: Path, machine_type: str, accelerator: str | None) -> None:
    assert gce_machine(tmp_path, machine_type, accelerator).warnings == []


@pytest.mark.parametrize("machine_type,accelerator,message", [
    ("g2-standard-8", "{type: nvidia-tesla-t4}",
     "g2-standard-8 comes with 1 x nvidia-l4, not 1 x nvidia-tesla-t4; leave accelerator out or make it match"),
    ("a2-highgpu-4g", "{type: nvidia-tesla-a100, count: 2}",
     "a2-highgpu-4g comes with 4 x nvidia-tesla-a100, not 2 x nvidia-tesla-a100; leave accelerator out or make "
     "it match"),
    ("a3-highgpu-8g", "{type: nvidia-tesla-a100, count: 8}",
     "a3-highgpu-8g comes with 8 x nvidia-h100-80gb, not 8 x nvidia-tesla-a100; leave accelerator out or make "
     "it match"),
    ("n1-standard-8", "{type: nvidia-tesla-t4, count: 3}", "n1 takes 1, 2, 4 x nvidia-tesla-t4, not 3"),
    ("n1-standard-8", "{type: nvidia-h100-80gb}",
     "n1 machine types take nvidia-tesla-t4, nvidia-tesla-v100, nvidia-tesla-p4, nvidia-tesla-p100 as guest "
     "accelerators, not nvidia-h100-80gb (nvidia-h100-80gb comes with a3 machine types)"),
    ("n2-standard-8", "{type: nvidia-tesla-t4}",
     "n2 machine types take no GPUs; nvidia-tesla-t4 comes with n1 machine types"),
    ("g2-standard-8", "{type: nvidia-l4, count: 2}",
     "g2-standard-8 comes with 1 x nvidia-l4, not 2 x nvidia-l4; leave accelerator out or make it match"),
])
def test_wrong_pairings_fail_before_any_vm(tmp_path: Path, machine_type: str, accelerator: str, message: str
                                           ) -> None:
    with pytest.raises(ConfigError) as info:
        gce_machine(tmp_path, machine_type, accelerator)
    assert str(info.value) == f"m.yml:4:18: machines.vm.accelerator: {message}"


def test_unknown_machine_family_passes_with_a_warning(tmp_path: Path) -> None:
    lm = gce_machine(tmp_path, "g9-turbo-8", "{type: nvidia-zz}")
    assert lm.warnings == ["m.yml:3:19: machines.vm.machine_type: g9-turbo-8: machine family 'g9' is not one "
                           "gpu-runner knows; its GPU pairing is not checked"]
    lm = gce_machine(tmp_path, "g2-standard-3")
    assert lm.warnings == ["m.yml:3:19: machines.vm.machine_type: g2-standard-3 is not a g2 machine type gpu-runner "
                           "knows; its GPU count is not checked"]


def test_gce_machine_needs_type_and_zones(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "machines:\n  vm: {spot: only}\nruntimes:\n  r: {notebooks: [a.ipynb]}\n")
    assert msg.splitlines() == [
        "m.yml:2:7: machines.vm: missing required key 'machine_type' (provider gce)",
        "m.yml:2:7: machines.vm: no zones: give machines.<name>.zones or defaults.machine.zones",
    ]


def test_machine_type_pattern(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        gce_machine(tmp_path, "G2_standard")
    assert str(info.value) == ("m.yml:3:19: machines.vm.machine_type: 'G2_standard' is not valid here (a Compute "
                               "Engine machine type such as g2-standard-8)")


def test_zone_letters_need_a_region(tmp_path: Path) -> None:
    text = GCE.format(machine_type="g2-standard-8", accelerator="").replace("[us-central1-a]", "[a, b]")
    msg = error_of(tmp_path, text)
    assert msg.splitlines()[0] == ("m.yml:4:13: machines.vm.zones[0]: zone 'a' is a single letter; set gce.region "
                                   "or write the full zone (e.g. us-central1-a)")
    lm = load_text(tmp_path, "gce: {region: europe-west4}\n" + text)
    assert lm.model.machines["vm"].zones == ["a", "b"]


def test_labels_follow_gce_patterns_and_reserved_names(tmp_path: Path) -> None:
    text = GCE.format(machine_type="g2-standard-8", accelerator="")
    msg = error_of(tmp_path, text + "gce:\n  labels: {Team: x}\n")
    assert msg == ("m.yml:8:12: gce.labels.Team: 'Team' is not a valid name here (GCE label keys: lower-case "
                   "letters, digits, '_' and '-', starting with a letter, at most 63)")
    msg = error_of(tmp_path, text + "gce:\n  labels: {team: ML Platform}\n")
    assert msg == ("m.yml:8:18: gce.labels.team: 'ML Platform' is not valid here (GCE label values: lower-case "
                   "letters, digits, '_' and '-', at most 63)")
    msg = error_of(tmp_path, text + "gce:\n  labels: {entry: x}\n")
    assert msg == "m.yml:8:12: gce.labels.entry: label 'entry' is set by gpu-runner itself; choose another name"


def test_self_delete_and_scopes_need_a_service_account(tmp_path: Path) -> None:
    """The VMs get no service account unless the matrix names one; self-deletion needs one."""
    text = GCE.format(machine_type="g2-standard-8", accelerator="")
    msg = error_of(tmp_path, text + "gce:\n  self_delete: true\n")
    assert msg.startswith("m.yml:8:16: gce.self_delete: self_delete needs gce.service_account")
    msg = error_of(tmp_path, text + "gce:\n  scopes: [https://www.googleapis.com/auth/cloud-platform]\n")
    assert msg.startswith("m.yml:8:11: gce.scopes: scopes are for gce.service_account")
    lm = load_text(tmp_path, text + "gce:\n  service_account: vm@p.iam.gserviceaccount.com\n  self_delete: true\n")
    assert lm.model.gce.self_delete is True


def test_local_machines_take_no_vm_settings(tmp_path: Path) -> None:
    msg = error_of(tmp_path, MINIMAL.replace("{provider: local}", "{provider: local, machine_type: n2-standard-4}"))
    assert msg == "m.yml:2:28: machines.local.machine_type: machine_type is for gce machines; this machine's " \
                  "provider is local"


def test_max_run_duration_limits(tmp_path: Path) -> None:
    text = GCE.format(machine_type="g2-standard-8", accelerator="    max_run_duration: 10s\n")
    assert error_of(tmp_path, text) == ("m.yml:4:23: machines.vm.max_run_duration: max_run_duration must be between "
                                        "30s and 120 days (Compute Engine), got 10 seconds")


def test_idle_timeout_and_retries(tmp_path: Path) -> None:
    text = GCE.format(machine_type="g2-standard-8", accelerator="    idle_timeout: 10s\n")
    assert error_of(tmp_path, text) == ("m.yml:4:19: machines.vm.idle_timeout: idle_timeout must be at least 60s "
                                        "(GitHub needs a moment to give the runner its job), got 10 seconds")
    text = GCE.format(machine_type="g2-standard-8", accelerator="    retries: {preempted: 3}\n")
    assert error_of(tmp_path, text) == "m.yml:4:26: machines.vm.retries.preempted: input should be less than or equal to 2"
    text = GCE.format(machine_type="g2-standard-8", accelerator="    retries: {failed: 1}\n")
    assert "unknown key 'failed'" in error_of(tmp_path, text)
    text = GCE.format(machine_type="g2-standard-8", accelerator="    idle_timeout: 3h\n    max_run_duration: 2h\n")
    assert load_text(tmp_path, text).warnings == [
        "m.yml:4:19: machines.vm.idle_timeout: idle_timeout (10800s) is not shorter than max_run_duration (7200s): "
        "an idle VM lives until Compute Engine deletes it"]
    msg = error_of(tmp_path, MINIMAL.replace("{provider: local}", "{provider: local, retries: {preempted: 1}}"))
    assert msg.endswith("machines.local.retries: retries is for gce machines; this machine's provider is local")


def test_timeout_beyond_the_vm_lifetime_warns(tmp_path: Path) -> None:
    text = GCE.format(machine_type="g2-standard-8", accelerator="    max_run_duration: 1h\n").replace(
        "notebooks: [a.ipynb]", "notebooks: [a.ipynb], timeout: 2h")
    lm = load_text(tmp_path, text)
    assert lm.warnings == ["m.yml:7:44: runtimes.pytorch.timeout: a notebook may run 7200s but machine 'vm' lives at "
                           "most 3600s (max_run_duration); the VM goes first"]


def test_boot_image_family_or_name(tmp_path: Path) -> None:
    text = GCE.format(machine_type="g2-standard-8", accelerator="    boot_image: {family: f, name: n}\n")
    assert error_of(tmp_path, text) == "m.yml:4:17: machines.vm.boot_image: give family or name, not both"
    assert config.BootImage(project="p", name="img").source_image == "projects/p/global/images/img"
    assert config.BootImage().source_image == ("projects/deeplearning-platform-release/global/images/family/"
                                               + config.DEFAULT_BOOT_IMAGE_FAMILY)


def test_names_that_slug_alike_are_refused(tmp_path: Path) -> None:
    text = MINIMAL + "  PyTorch: {notebooks: [a.ipynb]}\n"
    assert error_of(tmp_path, text) == ("m.yml:6:3: runtimes.PyTorch: runtime names 'pytorch' and 'PyTorch' give "
                                        "the same id part 'pytorch'; rename one")


def test_include_and_exclude_references(tmp_path: Path) -> None:
    msg = error_of(tmp_path, MINIMAL + "exclude:\n  - {runtime: pytorh}\n  - {machine: 'gpu-*'}\n  - {}\n")
    assert msg.splitlines() == [
        "m.yml:7:15: exclude[0].runtime: unknown runtime 'pytorh'; did you mean 'pytorch'? (runtimes: pytorch)",
        "m.yml:8:15: exclude[1].machine: pattern 'gpu-*' matches no machine",
        "m.yml:9:5: exclude[2]: an exclude rule names a runtime, a machine or both",
    ]
    msg = error_of(tmp_path, MINIMAL + "include:\n  - {runtime: pytorch, machine: l4}\n")
    assert msg == "m.yml:7:33: include[0].machine: unknown machine 'l4' (machines: local)"


def test_root_directory(tmp_path: Path) -> None:
    (tmp_path / "repo" / "matrix").mkdir(parents=True)
    lm = load_text(tmp_path / "repo" / "matrix", MINIMAL)
    assert lm.root_dir(cwd=tmp_path) == tmp_path.resolve()  # no git: the current directory
    (tmp_path / "repo" / ".git").mkdir()
    assert lm.root_dir(cwd=tmp_path) == (tmp_path / "repo").resolve()  # the work tree
    lm = load_text(tmp_path / "repo" / "matrix", "root: ../..\n" + MINIMAL)
    assert lm.root_dir(cwd=Path("/")) == tmp_path.resolve()  # explicit, relative to the file


@pytest.mark.parametrize("text", ["90", "90s", "30m", "2h", "1h30m", "1d", " 2h 15m ", "1.5h",
                                  "", "soon", "2x", "1h30", "h", "-1"])
def test_schema_duration_pattern_agrees_with_the_model(text: str) -> None:
    schema = config.DURATION_SCHEMA["anyOf"][1]
    by_schema = jsonschema.Draft202012Validator(schema).is_valid(text)
    try:
        by_model = config.parse_duration(text) > 0
    except ValueError:
        by_model = False
    assert by_schema == by_model


def test_unknown_key_in_a_list_item_suggests(tmp_path: Path) -> None:
    msg = error_of(tmp_path, MINIMAL + "    checks: [{name: x, run: 'true', expct_exit: 1}]\n")
    assert msg == "m.yml:6:37: runtimes.pytorch.checks[0].expct_exit: unknown key 'expct_exit'; did you mean " \
                  "'expect_exit'?"


# --------------------------------------------------------------------------- regression thresholds


def test_regression_thresholds_merge_key_by_key_over_the_defaults(tmp_path: Path) -> None:
    from gpu_runner.plan import find_entry

    text = MINIMAL.replace("runtimes:", "defaults:\n  runtime:\n    regression: {time_percent: 30, memory_min_mib: 512}\n"
                           "runtimes:") + "    regression: {time_min: 2m}\n"
    lm = load_text(tmp_path, text)
    assert find_entry(lm, "pytorch--local").regression == {"time_percent": 30.0, "time_min": 120.0,
                                                           "memory_percent": 10.0, "memory_min_mib": 512.0}
    assert find_entry(load_text(tmp_path, MINIMAL), "pytorch--local").regression == config.DEFAULT_REGRESSION


@pytest.mark.parametrize("value,message", [
    ("{time_percent: 20%}", "runtimes.pytorch.regression.time_percent: expected a number, got a string ('20%')"),
    ("{memory_min_mib: -1}", "runtimes.pytorch.regression.memory_min_mib: input should be greater than or equal to 0"),
    ("{time: 5s}", "runtimes.pytorch.regression.time: unknown key 'time'; did you mean 'time_min'?"),
])
def test_bad_regression_thresholds_are_named(tmp_path: Path, value: str, message: str) -> None:
    assert error_of(tmp_path, MINIMAL + f"    regression: {value}\n").endswith(message)

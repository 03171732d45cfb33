"""System checks, in-process: the nvidia-smi parser, each built-in on this machine, stand-ins.

The ``nvidia-smi -q`` fixtures under ``checks_fixtures/`` follow the layout NVIDIA
documents in ``man nvidia-smi`` (GPU ATTRIBUTES) and prints in published logs: the
``==============NVSMI LOG==============`` banner, Timestamp / Driver Version / CUDA
Version / Attached GPUs, then one ``GPU <bus id>`` block per GPU with four-space
indented ``key : value`` lines and sections. The L4, 4x L4, A100 and H100 files use the
R535-R570 layout (``Product Architecture``, ``FB Memory Usage`` with ``Reserved``,
SRAM/DRAM ECC counters, ``Remapped Rows``); the T4 file the older R470 layout
(``Ecc Mode``, Single/Double Bit ECC sections, ``Clocks Throttle Reasons``,
``Power Readings``).
"""

from __future__ import annotations

import json
import subprocess
import shutil
import os
import stat
import sys
import threading
from pathlib import Path

import pytest

from gpu_runner.checks import CheckContext, default_specs, kernel_pythons, run_checks
from gpu_runner.checks import builtin
from gpu_runner.checks import nvidia_smi as smi

FIX = Path(__file__).parent / "checks_fixtures"


def fixture_text(name: str) -> str:
    return (FIX / f"nvidia-smi-q-{name}.txt").read_text(encoding="utf-8")


def standin_smi(bin_dir: Path, *, text: str = "", exit_code: int = 0) -> Path:
    """A stand-in ``nvidia-smi`` that prints ``text`` and exits ``exit_code``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "smi-output.txt").write_text(text, encoding="utf-8")
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat '{bin_dir / 'smi-output.txt'}'\nexit {exit_code}\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def ctx_for(tmp_path: Path, *, bin_dir: Path | None = None, env: dict[str, str] | None = None,
            **kw) -> CheckContext:
    e = dict(env or {})
    if bin_dir is not None:
        e["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    entry = tmp_path / "out" / "entry"
    entry.mkdir(parents=True, exist_ok=True)
    return CheckContext(entry_dir=entry, env=e, cwd=tmp_path, **kw)


def one(tmp_path: Path, spec: dict, **kw):
    ctx = ctx_for(tmp_path, **kw)
    out = run_checks([spec], ctx)
    assert len(out.results) == 1
    return out.results[0], out, ctx


@pytest.fixture(autouse=True)
def _no_nvml(monkeypatch):
    """NVML is not what these tests prove: every answer comes from (stand-in) nvidia-smi."""
    monkeypatch.setattr(builtin, "_nvml_view", lambda: {"available": False, "reason": "NVML: not in this test",
                                                        "count": 0})


# -- the parser ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, count, model, mem, driver, cuda, arch", [
    ("l4", 1, "NVIDIA L4", 23034, "550.90.07", "12.4", "Ada Lovelace"),
    ("t4", 1, "Tesla T4", 15109, "470.199.02", "11.4", None),
    ("a100", 1, "NVIDIA A100-SXM4-40GB", 40960, "535.129.03", "12.2", "Ampere"),
    ("h100", 1, "NVIDIA H100 80GB HBM3", 81559, "570.124.06", "12.8", "Hopper"),
    ("4xl4", 4, "NVIDIA L4", 23034, "550.90.07", "12.4", "Ada Lovelace"),
])
def test_parser_reads_model_count_memory_driver_and_cuda(name, count, model, mem, driver, cuda, arch):
    r = smi.parse(fixture_text(name))
    assert (r.count, r.driver_version, r.cuda_version) == (count, driver, cuda)
    assert len(r.gpus) == count
    for g in r.gpus:
        assert (g.name, g.memory_total_mib, g.architecture) == (model, mem, arch)
        assert g.uuid and g.uuid.startswith("GPU-")
        assert g.warnings() == []
        assert g.volatile_uncorrectable_ecc == 0
    assert r.gpus[0].tree["PCI"]["Bus Id"] == r.gpus[0].bus_id


def test_parser_multi_gpu_keeps_each_gpu_apart():
    r = smi.parse(fixture_text("4xl4"))
    assert [g.index for g in r.gpus] == [0, 1, 2, 3]
    assert len({g.uuid for g in r.gpus}) == 4
    assert [g.bus_id for g in r.gpus] == [f"00000000:00:0{i}.0" for i in (3, 4, 5, 6)]
    assert [g.memory_used_mib for g in r.gpus] == [17912, 0, 0, 0]
    assert r.gpus[0].performance_state == "P0" and r.gpus[1].performance_state == "P8"


def test_parser_older_layout_fields():
    g = smi.parse(fixture_text("t4")).gpus[0]
    assert g.ecc_mode == "Enabled"              # "Ecc Mode" in R470
    assert g.power_limit_w == 70.0              # "Power Readings / Power Limit"
    assert g.memory_reserved_mib is None        # not printed before R510
    assert g.mig_mode is None                   # N/A


def test_parser_flags_a_gpu_that_needs_a_reset():
    text = fixture_text("a100")
    text = text.replace("        Pending                           : No\n",
                        "        Pending                           : Yes\n", 1)
    text = text.replace("            DRAM Uncorrectable            : 0", "            DRAM Uncorrectable            : 2", 1)
    g = smi.parse(text).gpus[0]
    assert g.remapped_rows_pending is True and g.volatile_uncorrectable_ecc == 2
    assert any("reset" in w for w in g.warnings()) and any("uncorrectable" in w for w in g.warnings())


@pytest.mark.parametrize("text", ["", "No devices were found\n", "garbage : \n  x\n\tGPU", "GPU 0000:00:00.0\n"])
def test_parser_never_raises(text):
    r = smi.parse(text)
    assert r.count in (0, 1)


@pytest.mark.parametrize("acc, name, ok", [
    ("nvidia-l4", "NVIDIA L4", True), ("nvidia-tesla-t4", "Tesla T4", True),
    ("nvidia-tesla-a100", "NVIDIA A100-SXM4-40GB", True), ("nvidia-a100-80gb", "NVIDIA A100-SXM4-80GB", True),
    ("nvidia-h100-80gb", "NVIDIA H100 80GB HBM3", True), ("nvidia-h100-mega-80gb", "NVIDIA H100 80GB HBM3", True),
    ("nvidia-l4", "Tesla T4", False), ("nvidia-tesla-a100", "NVIDIA H100 80GB HBM3", False),
])
def test_model_matches_accelerator_types(acc, name, ok):
    assert builtin.model_matches(acc, name) is ok


# -- every check on this machine -------------------------------------------------------------

def test_every_builtin_passes_or_skips_here_with_a_reason(tmp_path):
    ctx = ctx_for(tmp_path, env={"PATH": os.environ.get("PATH", "")})
    if any((Path(d) / "nvidia-smi").exists() for d in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("this machine has nvidia-smi")
    out = run_checks(default_specs(), ctx)
    assert [r.name for r in out.results] == ["gpu", "cuda", "compilers", "frameworks", "resources"]
    for r in out.results:
        assert r.status in ("passed", "skipped"), (r.name, r.summary, r.failure)
        assert r.summary and "\n" not in r.summary
        if r.status == "skipped":
            assert r.skip_reason
        for a in r.artifacts:
            assert not Path(a).is_absolute() and (ctx.entry_dir / a).is_file()
    gpu = out.results[0]
    assert gpu.status == "skipped" and "no NVIDIA GPU" in gpu.skip_reason
    assert out.facts["gpu_count"] == 0


# -- gpu ----------------------------------------------------------------------------------

def test_gpu_check_with_a_standin_nvidia_smi_records_facts_and_the_whole_output(tmp_path):
    standin_smi(tmp_path / "bin", text=fixture_text("l4"))
    r, out, ctx = one(tmp_path, {"name": "gpu"}, bin_dir=tmp_path / "bin", expected_gpus=1,
                      expected_gpu_type="nvidia-l4")
    assert r.status == "passed", r.summary
    assert r.summary.startswith("1× NVIDIA L4 (23034 MiB), driver 550.90.07, CUDA 12.4")
    assert r.artifacts == ["checks/gpu/nvidia-smi-q.txt"]
    assert (ctx.entry_dir / r.artifacts[0]).read_text() == fixture_text("l4")
    assert {k: out.facts[k] for k in ("gpu_model", "gpu_count", "driver_version", "cuda_version")} == {
        "gpu_model": "NVIDIA L4", "gpu_count": 1, "driver_version": "550.90.07", "cuda_version": "12.4"}


def test_gpu_count_mismatch_fails(tmp_path):
    standin_smi(tmp_path / "bin", text=fixture_text("4xl4"))
    r, _, _ = one(tmp_path, {"name": "gpu"}, bin_dir=tmp_path / "bin", expected_gpus=8)
    assert r.status == "failed"
    assert r.failure.kind == "check_failed"
    assert "expects 8 GPUs" in r.failure.message and "found 4" in r.failure.message


def test_a_model_other_than_the_matrix_says_is_a_warning(tmp_path):
    standin_smi(tmp_path / "bin", text=fixture_text("t4"))
    r, _, _ = one(tmp_path, {"name": "gpu"}, bin_dir=tmp_path / "bin", expected_gpus=1,
                  expected_gpu_type="nvidia-l4")
    assert r.status == "passed"
    assert "warning: the matrix says nvidia-l4, the machine has Tesla T4" in r.summary


def test_expected_gpus_and_none_found_fails_loudly(tmp_path):
    (tmp_path / "empty").mkdir()
    r, _, _ = one(tmp_path, {"name": "gpu"}, env={"PATH": str(tmp_path / "empty")}, expected_gpus=1)
    assert r.status == "failed"
    assert "expects 1 GPU" in r.failure.message and "nvidia-smi is not on PATH" in r.failure.message


def test_a_broken_driver_fails_even_without_an_expectation(tmp_path):
    msg = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
           "Make sure that the latest NVIDIA driver is installed and running.\n")
    standin_smi(tmp_path / "bin", text=msg, exit_code=9)
    r, _, ctx = one(tmp_path, {"name": "gpu"}, bin_dir=tmp_path / "bin")
    assert r.status == "failed" and r.failure.exit_code == 9
    assert "couldn't communicate with the NVIDIA driver" in r.failure.message
    assert (ctx.entry_dir / "checks/gpu/nvidia-smi-q.txt").read_text() == msg


def test_no_devices_found_is_a_skip_without_an_expectation(tmp_path):
    standin_smi(tmp_path / "bin", text="No devices were found\n", exit_code=6)
    r, _, _ = one(tmp_path, {"name": "gpu"}, bin_dir=tmp_path / "bin")
    assert r.status == "skipped" and "No devices were found" in r.skip_reason


# -- cuda ---------------------------------------------------------------------------------

def standin_nvcc(bin_dir: Path, release: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    p = bin_dir / "nvcc"
    p.write_text("#!/bin/sh\necho 'nvcc: NVIDIA (R) Cuda compiler driver'\n"
                 f"echo 'Cuda compilation tools, release {release}, V{release}.77'\n", encoding="utf-8")
    p.chmod(0o755)


def test_cuda_newer_than_the_driver_fails_and_a_newer_minor_warns(tmp_path):
    standin_smi(tmp_path / "bin", text=fixture_text("t4"))     # driver CUDA 11.4
    standin_nvcc(tmp_path / "bin", "12.6")
    r, out, _ = one(tmp_path, {"name": "cuda"}, bin_dir=tmp_path / "bin")
    assert r.status == "failed"
    assert "the toolkit (nvcc) is CUDA 12.6, newer than the driver supports (CUDA 11.4" in r.failure.message
    assert out.facts["cuda_toolkit_version"] == "12.6"
    assert r.artifacts == ["checks/cuda/output.txt"]

    tmp2 = tmp_path / "second"
    standin_smi(tmp2 / "bin", text=fixture_text("l4"))          # driver CUDA 12.4
    standin_nvcc(tmp2 / "bin", "12.6")
    r, _, _ = one(tmp2, {"name": "cuda"}, bin_dir=tmp2 / "bin")
    assert any("nvcc) is CUDA 12.6, newer than the driver's CUDA 12.4" in w for w in r.details["warnings"])


def test_cuda_home_that_is_not_a_folder_fails(tmp_path):
    r, _, _ = one(tmp_path, {"name": "cuda"}, env={"CUDA_HOME": str(tmp_path / "nowhere")})
    assert r.status == "failed" and "CUDA_HOME" in r.failure.message


# -- compilers ----------------------------------------------------------------------------

def test_compilers_pass_here_with_versions(tmp_path):
    r, out, _ = one(tmp_path, {"name": "compilers"})
    if r.status == "failed" and "no C" in r.failure.message:
        pytest.skip("no compiler on this machine")
    assert r.status == "passed", r.failure
    assert r.details["c"]["compiles"] and r.details["c++"]["compiles"] and r.details["c"]["version"]
    assert out.facts["gcc_version"]


def test_a_missing_compiler_fails(tmp_path):
    r, _, _ = one(tmp_path, {"name": "compilers"}, env={"CC": "no-such-cc", "CXX": "no-such-c++"})
    assert r.status == "failed"
    assert "no C compiler ($CC no-such-cc not found)" in r.failure.message
    assert "no C++ compiler" in r.failure.message


# -- frameworks ---------------------------------------------------------------------------

FAKE_TORCH = '''
import os, time
__version__ = "2.99.0+fake"
if os.environ.get("FAKE_TORCH_SLEEP"):
    time.sleep(float(os.environ["FAKE_TORCH_SLEEP"]))
class version:
    cuda = None
    hip = None
class backends:
    class cudnn:
        @staticmethod
        def is_available():
            return False
class cuda:
    @staticmethod
    def is_available():
        return False
    @staticmethod
    def device_count():
        return 0
class _T:
    def __init__(self, n, v=1.0):
        self.n, self.v = n, v
    def __matmul__(self, other):
        return _T(self.n, self.v * other.v * self.n)
    def sum(self):
        return _T(1, self.v * self.n * self.n)
    def item(self):
        return self.v
def ones(n, m, device="cpu"):
    return _T(n)
'''


def fake_packages(root: Path, **modules: str) -> Path:
    for name, src in modules.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "__init__.py").write_text(src, encoding="utf-8")
    return root


def test_frameworks_not_installed_is_skipped(tmp_path):
    r, _, _ = one(tmp_path, {"name": "frameworks"}, env={"PYTHONPATH": ""})
    installed = r.details["pythons"][sys.executable]["installed"]
    if installed:
        pytest.skip(f"this Python has {', '.join(installed)}")
    assert r.status == "skipped" and "none of PyTorch, TensorFlow, JAX" in r.skip_reason


def test_a_framework_without_gpu_on_a_machine_without_gpu_passes_with_a_cpu_op(tmp_path):
    pkgs = fake_packages(tmp_path / "pkgs", torch=FAKE_TORCH)
    (tmp_path / "empty").mkdir()
    r, out, ctx = one(tmp_path, {"name": "frameworks"},
                      env={"PYTHONPATH": str(pkgs), "PATH": f"{tmp_path / 'empty'}{os.pathsep}{os.environ['PATH']}"})
    if (r.details["pythons"][sys.executable]["installed"].keys() - {"torch"}):
        pytest.skip("this Python has real frameworks")
    assert r.status == "passed", r.failure
    assert r.summary == "PyTorch 2.99.0+fake: CPU only, matmul ok"
    data = r.details["pythons"][sys.executable]["frameworks"]["torch"]
    assert data["why_no_gpu"] == "PyTorch was built without CUDA"
    assert data["ops"][0]["device"] == "cpu" and data["ops"][0]["ok"]
    assert r.artifacts == ["checks/frameworks/torch.txt"]
    assert out.facts["torch_version"] == "2.99.0+fake"


def test_a_framework_that_sees_no_gpu_on_a_gpu_machine_fails(tmp_path):
    pkgs = fake_packages(tmp_path / "pkgs", torch=FAKE_TORCH)
    standin_smi(tmp_path / "bin", text=fixture_text("l4"))
    r, _, _ = one(tmp_path, {"name": "frameworks"}, bin_dir=tmp_path / "bin",
                  env={"PYTHONPATH": str(pkgs)})
    assert r.status == "failed"
    assert "PyTorch 2.99.0+fake sees no GPU, but the machine has 1 GPU" in r.failure.message


def test_a_framework_that_fails_to_import_fails_and_one_that_hangs_is_killed(tmp_path, monkeypatch):
    pkgs = fake_packages(tmp_path / "pkgs", torch=FAKE_TORCH, jax="raise ImportError('libcuda.so.1: cannot open')\n")
    monkeypatch.setattr(builtin, "FRAMEWORK_TIMEOUT_S", 3.0)
    r, _, ctx = one(tmp_path, {"name": "frameworks"}, env={"PYTHONPATH": str(pkgs), "FAKE_TORCH_SLEEP": "60"})
    assert r.status == "failed"
    assert "JAX: ImportError: libcuda.so.1: cannot open" in r.failure.message
    assert "PyTorch: the probe timed out and was killed after 3 s" in r.failure.message
    assert "Traceback" in (ctx.entry_dir / "checks/frameworks/jax.txt").read_text()


def test_kernel_python_of_the_default_kernel_is_this_interpreter():
    pythons, notes = kernel_pythons([None, "python3"])
    assert len(pythons) == 1 and Path(pythons[0]).exists()
    pythons, notes = kernel_pythons(["no-such-kernel"])
    assert pythons == [sys.executable] and "not installed" in notes[0]


# -- resources ----------------------------------------------------------------------------

def test_resources_pass_here_and_fail_under_the_thresholds(tmp_path, monkeypatch):
    r, out, ctx = one(tmp_path, {"name": "resources"})
    assert r.status == "passed", r.failure
    assert r.details["memory"]["total_gib"] > 0 and r.details["disks"]
    assert json.loads((ctx.entry_dir / "checks/resources/resources.json").read_text())["memory"]
    monkeypatch.setattr(builtin, "DISK_FAIL_GIB", 1e9)
    monkeypatch.setattr(builtin, "SHM_FAIL_MIB", 1e12)
    r, _, _ = one(tmp_path / "again", {"name": "resources"})
    assert r.status == "failed"
    assert "free disk for the results" in r.failure.message and "/dev/shm is only" in r.failure.message


# -- user checks ---------------------------------------------------------------------------

def test_a_user_check_fails_with_its_exit_code_and_keeps_its_output(tmp_path):
    spec = {"name": "triton-gcc", "run": "echo compiling; echo 'gcc: not found' >&2; exit 127", "expect_exit": 0,
            "timeout_s": 30}
    r, _, ctx = one(tmp_path, spec)
    assert r.status == "failed" and r.failure.exit_code == 127
    assert "exited 127, expected exit 0: gcc: not found" in r.failure.message
    assert r.artifacts == ["checks/triton-gcc/output.txt"]
    assert (ctx.entry_dir / r.artifacts[0]).read_text() == "compiling\ngcc: not found\n"
    assert "gcc: not found" in r.failure.output_tail


def test_a_user_check_passes_on_its_expected_exit_code_in_the_runtime_env(tmp_path):
    spec = {"name": "env", "run": "test \"$MY_VAR\" = hello && pwd; exit 3", "expect_exit": 3}
    r, _, _ = one(tmp_path, spec, env={"MY_VAR": "hello"})
    assert r.status == "passed", r.failure
    assert r.details["exit_code"] == 3 and str(tmp_path) in r.summary


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc")
def test_a_user_check_verdict_is_its_first_meaningful_line_not_licence_boilerplate(tmp_path):
    r, _, _ = one(tmp_path, {"name": "gcc", "run": "set -x; gcc --version"})
    assert r.status == "passed"
    first = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    assert r.summary == f"`set -x; gcc --version` exited 0: {first}"  # not "... warranty; not even for MERCHANTABILITY"
    assert "MERCHANTABILITY" not in r.summary


def test_a_failing_user_check_says_its_last_meaningful_line_or_only_its_exit_code(tmp_path):
    r, _, _ = one(tmp_path, {"name": "py", "run": "python3 -c 'import no_such_module_here'"})
    assert r.status == "failed"
    assert r.failure.message.endswith("expected exit 0: ModuleNotFoundError: No module named 'no_such_module_here'")
    r, _, _ = one(tmp_path / "q", {"name": "quiet", "run": "echo; echo '-----'; exit 4"})
    assert r.failure.message.endswith("4, expected exit 0"), r.failure.message  # nothing worth quoting: the code


def test_a_user_check_is_bounded_by_its_timeout_and_pipefail_applies(tmp_path):
    r, _, _ = one(tmp_path, {"name": "slow", "run": "echo start; sleep 30", "timeout_s": 0.5})
    assert r.status == "failed" and r.failure.timeout_s == 0.5 and "did not finish in 0.5 s" in r.failure.message
    r, _, _ = one(tmp_path / "p", {"name": "pipe", "run": "false | cat"})
    assert r.status == "failed" and r.failure.exit_code == 1


def test_a_stopped_run_starts_no_more_commands(tmp_path):
    stop = threading.Event()
    stop.set()
    r, _, _ = one(tmp_path, {"name": "x", "run": "echo hi"}, stop=stop)
    assert r.status == "failed" and r.failure.kind == "interrupted"


def test_checks_keep_the_order_given(tmp_path):
    specs = [{"name": f"c{i}", "run": f"echo {i}"} for i in range(6)] + [{"name": "gpu"}]
    out = run_checks(specs, ctx_for(tmp_path))
    assert [r.name for r in out.results] == [f"c{i}" for i in range(6)] + ["gpu"]

"""The built-in checks and the command check. Each returns an :class:`Outcome`."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import psutil

from ..results import Failure
from . import _proc
from . import nvidia_smi as smi

# -- thresholds of the resources check (documented in README.md, `gpu-runner check`) ----
DISK_FAIL_GIB = 1.0
"""Less free disk than this under the results, working or temp folder fails the check."""
DISK_WARN_GIB = 10.0
MEMORY_FAIL_GIB = 1.0
"""Less available memory than this fails; below the warning level the check passes with a warning."""
MEMORY_WARN_GIB = 4.0
SHM_FAIL_MIB = 64.0
"""A /dev/shm smaller than Docker's default (64 MiB) fails; below 1 GiB warns: PyTorch's
DataLoader workers pass batches through it (``docker run --shm-size=...`` or ``--ipc=host``)."""
SHM_WARN_MIB = 1024.0

# -- time limits ---------------------------------------------------------------------------
SMI_TIMEOUT_S = 60.0
TOOL_TIMEOUT_S = 30.0
COMPILE_TIMEOUT_S = 60.0
FRAMEWORK_TIMEOUT_S = 300.0
"""Import + CUDA initialisation + one matmul per device; TensorFlow on 8 GPUs takes a while."""
DEFAULT_COMMAND_TIMEOUT_S = 300.0
OUTPUT_TAIL_CHARS = 4000

PROBE_SCRIPT = Path(__file__).with_name("_framework_probe.py")
FRAMEWORK_NAMES = {"torch": "PyTorch", "tensorflow": "TensorFlow", "jax": "JAX"}


@dataclass
class CheckContext:
    """What the checks know about the entry they prove."""

    entry_dir: Path
    expected_gpus: int | None = None
    """GPUs the matrix says this machine has; None: no expectation (a plain local run)."""
    expected_gpu_type: str | None = None
    """The matrix's accelerator type (``nvidia-l4``); a different model is a warning."""
    pythons: list[str] = field(default_factory=lambda: [sys.executable])
    """The runtime's Python interpreters (one per distinct kernel), for ``frameworks``."""
    env: dict[str, str] = field(default_factory=dict)
    """The runtime's environment (the matrix's ``env``), over this process's."""
    cwd: Path = field(default_factory=Path.cwd)
    stop: threading.Event = field(default_factory=threading.Event)
    _gpu: GpuState | None = field(default=None, repr=False)
    _gpu_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _python_info: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def child_env(self) -> dict[str, str]:
        return _proc.child_env(self.env)

    def gpu(self) -> GpuState:
        """What nvidia-smi and NVML say, found once for every check that asks."""
        with self._gpu_lock:
            if self._gpu is None:
                self._gpu = GpuState.probe(self)
            return self._gpu

    def python_info(self, python: str) -> dict[str, Any]:
        with self._gpu_lock:
            if python in self._python_info:
                return self._python_info[python]
        code = ("import json,site,sys,sysconfig,os;"
                "sp=[]\ntry: sp=site.getsitepackages()\nexcept Exception: pass\n"
                "sp+=[p for p in sys.path if p.endswith(('site-packages','dist-packages'))];"
                "inc=sysconfig.get_paths().get('include') or '';"
                "print(json.dumps({'executable':sys.executable,'version':sys.version.split()[0],"
                "'site':sorted(set(sp)),'include':inc,'python_h':os.path.exists(os.path.join(inc,'Python.h'))}))")
        p = _proc.run([python, "-c", code], timeout=TOOL_TIMEOUT_S, env=self.child_env(), split=True, stop=self.stop)
        info: dict[str, Any] = {}
        if p.ok:
            try:
                info = json.loads(p.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                info = {}
        if not info:
            info = {"error": f"{python}: {p.how()}", "output": p.output[-OUTPUT_TAIL_CHARS:]}
        with self._gpu_lock:
            self._python_info[python] = info
        return info


@dataclass
class Outcome:
    status: str
    summary: str = ""
    failure: Failure | None = None
    skip_reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    captured: str = ""

    @staticmethod
    def fail(message: str, *, summary: str | None = None, output: str = "", **failure: Any) -> Outcome:
        tail = output[-OUTPUT_TAIL_CHARS:].strip() or None
        return Outcome("failed", summary or message,
                       failure=Failure(kind="check_failed", message=message, output_tail=tail, **failure),
                       captured=output)

    def add(self, details: dict[str, Any], facts: dict[str, Any] | None = None) -> Outcome:
        """More details and facts (returns self, for ``Outcome.fail(...).add(details, facts)``)."""
        self.details.update(details)
        self.facts.update(facts or {})
        return self


def _write(path: Path, text: str) -> None:
    path.write_text(text if text.endswith("\n") or not text else text + "\n", encoding="utf-8")


def _warned(summary: str, warnings: list[str]) -> str:
    if not warnings:
        return summary
    return f"{summary}; warning: {warnings[0]}" + (f" (+{len(warnings) - 1} more)" if len(warnings) > 1 else "")


def _version_tuple(v: str | None) -> tuple[int, ...] | None:
    if not v:
        return None
    m = re.match(r"^(\d+)(?:\.(\d+))?", v)
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2) or 0))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# ---------------------------------------------------------------------------------------
# gpu
# ---------------------------------------------------------------------------------------

_SMI_NO_DRIVER_HINTS = ("couldn't communicate with the NVIDIA driver", "Driver/library version mismatch",
                        "Failed to initialize NVML", "Unable to determine the device handle")


@dataclass
class GpuState:
    smi_path: str | None = None
    smi: _proc.Proc | None = None
    report: smi.SmiReport | None = None
    nvml: dict[str, Any] = field(default_factory=dict)
    """NVML's view: ``available``, ``reason``, ``count``, ``gpus``, ``driver_version``, ``cuda_version``."""

    @staticmethod
    def probe(ctx: CheckContext) -> GpuState:
        st = GpuState()
        env = ctx.child_env()
        st.smi_path = shutil.which("nvidia-smi", path=env.get("PATH"))
        if st.smi_path:
            st.smi = _proc.run([st.smi_path, "-q"], timeout=SMI_TIMEOUT_S, env=env, split=True, stop=ctx.stop)
            if st.smi.returncode == 0:
                st.report = smi.parse(st.smi.stdout)
        st.nvml = _nvml_view()
        return st

    @property
    def smi_no_devices(self) -> bool:
        return self.smi is not None and smi.NO_DEVICES.lower() in self.smi.output.lower()

    @property
    def count(self) -> int:
        if self.report is not None:
            return self.report.count
        return int(self.nvml.get("count") or 0)

    @property
    def driver_version(self) -> str | None:
        return (self.report.driver_version if self.report else None) or self.nvml.get("driver_version")

    @property
    def cuda_version(self) -> str | None:
        """The newest CUDA the driver supports."""
        return (self.report.cuda_version if self.report else None) or self.nvml.get("cuda_version")

    def gpus(self) -> list[dict[str, Any]]:
        if self.report is not None and self.report.gpus:
            return [g.summary() for g in self.report.gpus]
        return list(self.nvml.get("gpus") or [])

    def why_none(self) -> str:
        """Why no GPU answered, in words."""
        parts = []
        if not self.smi_path:
            parts.append("nvidia-smi is not on PATH")
        elif self.smi is not None and not self.smi.ok:
            first = next((l.strip() for l in self.smi.output.splitlines() if l.strip()), "")
            parts.append(f"nvidia-smi -q {self.smi.how()}" + (f": {first}" if first else ""))
        elif self.report is not None and self.report.count == 0:
            parts.append("nvidia-smi reports 0 attached GPUs")
        if not self.nvml.get("available"):
            parts.append(str(self.nvml.get("reason") or "NVML found no GPU"))
        return "; ".join(parts) or "no GPU found"


def _nvml_view() -> dict[str, Any]:
    from ..execute.metrics import Nvml

    nv = Nvml()
    try:
        view: dict[str, Any] = {"available": nv.available, "reason": nv.reason, "count": len(nv.devices)}
        if nv.available:
            view["gpus"] = nv.describe()
            view["driver_version"] = nv.driver_version()
            try:
                v = int(nv._nv.nvmlSystemGetCudaDriverVersion())  # 12040 -> "12.4"
                view["cuda_version"] = f"{v // 1000}.{(v % 1000) // 10}"
            except Exception:  # noqa: BLE001
                pass
        return view
    finally:
        nv.shutdown()


def _model_token(accelerator_type: str) -> list[str]:
    """``nvidia-tesla-a100`` -> ['a100']; ``nvidia-h100-80gb`` -> ['h100']; ``nvidia-rtx-pro-6000`` -> ['rtx', 'pro', '6000']."""
    parts = [p for p in re.split(r"[-_ ]+", accelerator_type.lower()) if p]
    return [p for p in parts if p not in ("nvidia", "tesla", "mega") and not re.fullmatch(r"\d+gb", p)]


def model_matches(accelerator_type: str, name: str) -> bool:
    tokens = _model_token(accelerator_type)
    words = set(re.split(r"[^a-z0-9]+", name.lower()))
    flat = re.sub(r"[^a-z0-9]", "", name.lower())
    return all(t in words or t in flat for t in tokens) if tokens else True


def gpu_check(ctx: CheckContext, out_dir: Path) -> Outcome:
    st = ctx.gpu()
    captured = ""
    if st.smi is not None:
        captured = st.smi.output
        _write(out_dir / "nvidia-smi-q.txt", st.smi.output)
    n = st.count
    gpus = st.gpus()
    expected = ctx.expected_gpus
    details: dict[str, Any] = {
        "expected_gpus": expected, "gpu_count": n, "gpus": gpus, "driver_version": st.driver_version,
        "cuda_version": st.cuda_version, "nvidia_smi": st.smi_path,
        "nvidia_smi_exit": st.smi.returncode if st.smi else None,
        "nvml": {k: v for k, v in st.nvml.items() if k != "gpus"},
    }
    if ctx.expected_gpu_type:
        details["expected_gpu_type"] = ctx.expected_gpu_type
    facts: dict[str, Any] = {"gpu_count": n}
    if n:
        names = [g.get("name") for g in gpus if g.get("name")]
        model = ", ".join(dict.fromkeys(names)) or None
        facts.update({"gpu_model": model, "gpus": gpus, "driver_version": st.driver_version,
                      "cuda_version": st.cuda_version})
        mem = [g.get("memory_total_mib") for g in gpus if g.get("memory_total_mib")]
        if mem:
            facts["gpu_memory_total_mib"] = mem[0]
    expect_txt = (f"the matrix expects {_plural(expected, 'GPU')}"
                  + (f" ({ctx.expected_gpu_type})" if ctx.expected_gpu_type and expected else "")) if expected is not None else ""
    if n == 0:
        why = st.why_none()
        details["why_no_gpu"] = why
        smi_broken = st.smi is not None and not st.smi.ok and not st.smi_no_devices
        if expected:
            return Outcome.fail(f"{expect_txt}, but none was found: {why}", output=captured,
                                exit_code=st.smi.returncode if st.smi else None).add(details, facts)
        if smi_broken:
            return Outcome.fail(f"nvidia-smi is installed but fails, so the driver is broken or missing: {why}",
                                output=captured, exit_code=st.smi.returncode).add(details, facts)
        return Outcome("skipped", f"no GPU: {why}", skip_reason=f"no NVIDIA GPU on this machine ({why})",
                       details=details, facts=facts, captured=captured)
    # n > 0
    warnings: list[str] = []
    if st.report is not None:
        for g in st.report.gpus:
            warnings += g.warnings()
        if st.nvml.get("available") and st.nvml.get("count") not in (None, n):
            warnings.append(f"nvidia-smi lists {n} GPUs, NVML {st.nvml.get('count')}")
    if ctx.expected_gpu_type and names and not all(model_matches(ctx.expected_gpu_type, x) for x in names):
        warnings.append(f"the matrix says {ctx.expected_gpu_type}, the machine has {model}")
    details["warnings"] = warnings
    mem_txt = f" ({facts['gpu_memory_total_mib']} MiB)" if facts.get("gpu_memory_total_mib") else ""
    desc = f"{n}× {model or 'unknown GPU'}{mem_txt}, driver {st.driver_version or '?'}, CUDA {st.cuda_version or '?'}"
    if st.smi is None:
        desc += " (NVML; nvidia-smi is not on PATH)"
    if expected is not None and expected != n:
        return Outcome.fail(f"{expect_txt}, found {n}: {desc}", summary=f"found {n}, expected {expected}: {desc}",
                            output=captured).add(details, facts)
    return Outcome("passed", _warned(desc, warnings), details=details, facts=facts, captured=captured)


# ---------------------------------------------------------------------------------------
# cuda
# ---------------------------------------------------------------------------------------

_NVCC_RELEASE = re.compile(r"release (\d+\.\d+)(?:, V(\d+(?:\.\d+)+))?")
_CUDART = re.compile(r"libcudart\.so(?:\.(\d+(?:\.\d+)*))?$")


def _ldconfig() -> str | None:
    for c in (shutil.which("ldconfig"), "/sbin/ldconfig", "/usr/sbin/ldconfig"):
        if c and os.path.exists(c):
            return c
    return None


def _cudart_version(path: str) -> str | None:
    """From the file name the link resolves to: libcudart.so.12.4.127 -> 12.4.127."""
    for p in (os.path.realpath(path), path):
        m = _CUDART.search(os.path.basename(p))
        if m and m.group(1):
            return m.group(1)
    return None


def _cudart_runtime_version(path: str, ctx: CheckContext) -> str | None:
    """``cudaRuntimeGetVersion`` (needs no driver), in a throwaway process: 13000 -> 13.0."""
    code = ("import ctypes,sys;l=ctypes.CDLL(sys.argv[1]);v=ctypes.c_int(0);"
            "r=l.cudaRuntimeGetVersion(ctypes.byref(v));print(v.value if r==0 else '')")
    p = _proc.run([ctx.pythons[0] if ctx.pythons else sys.executable, "-c", code, path], timeout=TOOL_TIMEOUT_S,
                  env=ctx.child_env(), split=True, stop=ctx.stop)
    out = p.stdout.strip()
    if p.ok and out.isdigit() and int(out) > 0:
        n = int(out)
        return f"{n // 1000}.{(n % 1000) // 10}"
    return None


def cuda_check(ctx: CheckContext, out_dir: Path) -> Outcome:
    env = ctx.child_env()
    log: list[str] = []
    details: dict[str, Any] = {}
    problems: list[str] = []
    warnings: list[str] = []

    cuda_home = env.get("CUDA_HOME") or env.get("CUDA_PATH")
    details["cuda_home_env"] = cuda_home
    if cuda_home and not os.path.isdir(cuda_home):
        problems.append(f"CUDA_HOME is {cuda_home}, which is not a folder")
    home = cuda_home if cuda_home and os.path.isdir(cuda_home) else (
        "/usr/local/cuda" if os.path.isdir("/usr/local/cuda") else None)
    details["cuda_home"] = home

    # nvcc
    nvcc = shutil.which("nvcc", path=env.get("PATH"))
    if nvcc is None and home and os.access(os.path.join(home, "bin", "nvcc"), os.X_OK):
        nvcc = os.path.join(home, "bin", "nvcc")
    toolkit = None
    if nvcc:
        p = _proc.run([nvcc, "--version"], timeout=TOOL_TIMEOUT_S, env=env, stop=ctx.stop)
        log += [f"$ {nvcc} --version", p.output.rstrip(), ""]
        m = _NVCC_RELEASE.search(p.output)
        if not p.ok:
            problems.append(f"nvcc --version {p.how()}")
        elif m:
            toolkit = m.group(1)
            details["nvcc_full_version"] = m.group(2)
    details["nvcc"] = nvcc
    details["toolkit_version"] = toolkit

    # libcudart: the linker cache, LD_LIBRARY_PATH, CUDA_HOME, pip wheels
    libs: dict[str, str | None] = {}
    ldc = _ldconfig()
    if ldc:
        p = _proc.run([ldc, "-p"], timeout=TOOL_TIMEOUT_S, env=env, stop=ctx.stop)
        lines = [l.strip() for l in p.output.splitlines() if "libcudart.so" in l]
        log += [f"$ {ldc} -p | grep libcudart", *lines, ""]
        for l in lines:
            if "=>" in l:
                path = l.split("=>", 1)[1].strip()
                libs.setdefault(os.path.realpath(path), _cudart_version(path))
    dirs = [d for d in env.get("LD_LIBRARY_PATH", "").split(":") if d]
    if home:
        dirs += [os.path.join(home, "lib64"), os.path.join(home, "lib")]
    for py in ctx.pythons:
        for sp in ctx.python_info(py).get("site", []):
            dirs.append(os.path.join(sp, "nvidia", "cuda_runtime", "lib"))
    for d in dirs:
        for f in sorted(glob.glob(os.path.join(d, "libcudart.so*"))):
            libs.setdefault(os.path.realpath(f), _cudart_version(f))
    for path, v in list(libs.items()):
        if v is None or "." not in v:  # libcudart.so.13: ask the library itself
            libs[path] = _cudart_runtime_version(path, ctx) or v
    details["libcudart"] = [{"path": k, "version": v} for k, v in libs.items()]
    if libs:
        log += ["libcudart found:", *[f"  {k} ({v or 'version unknown'})" for k, v in libs.items()], ""]
    runtime_versions = sorted({v for v in libs.values() if v}, key=lambda v: _version_tuple(v) or (0,))

    gpu = ctx.gpu()
    driver_cuda = gpu.cuda_version
    details["driver_cuda_version"] = driver_cuda
    details["driver_version"] = gpu.driver_version
    captured = "\n".join(log)
    _write(out_dir / "output.txt", captured + "\n" + json.dumps({k: v for k, v in env.items()
                                                                  if k.startswith(("CUDA", "LD_LIBRARY", "NVIDIA"))},
                                                                 indent=2))
    facts = {"cuda_toolkit_version": toolkit, "cuda_runtime_version": runtime_versions[-1] if runtime_versions else None}

    if not nvcc and not libs and not problems:
        why = ("nvcc not on PATH, " + ("CUDA_HOME unset, " if not cuda_home else "")
               + "no libcudart in the linker cache, LD_LIBRARY_PATH or pip's nvidia wheels")
        return Outcome("skipped", f"no CUDA toolkit or runtime: {why}",
                       skip_reason=f"no CUDA toolkit or runtime library found ({why}); frameworks may bring their own",
                       details=details, captured=captured)

    # consistency with the driver: a runtime newer than the driver's CUDA does not run
    # (different major), or runs through minor-version compatibility (same major: no PTX JIT)
    dv = _version_tuple(driver_cuda)
    for what, v in [("the toolkit (nvcc)", toolkit)] + [("libcudart", x) for x in runtime_versions]:
        vt = _version_tuple(v)
        if dv is None or vt is None:
            continue
        if vt[0] > dv[0]:
            problems.append(f"{what} is CUDA {v}, newer than the driver supports (CUDA {driver_cuda}, "
                            f"driver {gpu.driver_version}): upgrade the driver or use a CUDA {dv[0]}.x runtime")
        elif vt[0] == dv[0] and vt[1] > dv[1]:
            warnings.append(f"{what} is CUDA {v}, newer than the driver's CUDA {driver_cuda}: runs through "
                            "minor-version compatibility, but PTX built for it cannot be JIT-compiled")
    details["warnings"] = warnings
    found = []
    if toolkit:
        found.append(f"nvcc {toolkit}")
    if runtime_versions:
        found.append("libcudart " + ", ".join(runtime_versions))
    elif libs:
        found.append("libcudart (version unknown)")
    if home:
        found.append(f"CUDA_HOME {home}" if cuda_home else f"toolkit at {home}")
    driver_txt = (f"driver supports CUDA {driver_cuda}" if driver_cuda
                  else "no driver here, so consistency with it is not checked")
    summary = ", ".join(found) + f"; {driver_txt}"
    if problems:
        return Outcome.fail("; ".join(problems), summary=f"{problems[0]} ({summary})", output=captured).add(details, facts)
    return Outcome("passed", _warned(summary, warnings), details=details, facts=facts, captured=captured)


# ---------------------------------------------------------------------------------------
# compilers
# ---------------------------------------------------------------------------------------

_C_PROGRAM = "#include <stdlib.h>\n#include <stdio.h>\nint gpu_runner_probe(void) { return (int) abs(-42); }\n"
_CXX_PROGRAM = ("#include <vector>\n#include <string>\n"
                "extern \"C\" int gpu_runner_probe() { std::vector<std::string> v{\"ok\"}; return (int) v.size(); }\n")


def _find_compiler(env: Mapping[str, str], var: str, names: tuple[str, ...]) -> tuple[str | None, str]:
    if env.get(var):
        first = env[var].split()[0]
        found = shutil.which(first, path=env.get("PATH"))
        return found, f"${var}={env[var]}"
    for n in names:
        found = shutil.which(n, path=env.get("PATH"))
        if found:
            return found, n
    return None, ""


def _compiler_version(path: str, env: Mapping[str, str], ctx: CheckContext) -> tuple[str | None, str]:
    p = _proc.run([path, "--version"], timeout=TOOL_TIMEOUT_S, env=env, stop=ctx.stop)
    first = next((l.strip() for l in p.output.splitlines() if l.strip()), "")
    version = None
    if p.ok:
        q = _proc.run([path, "-dumpfullversion", "-dumpversion"], timeout=TOOL_TIMEOUT_S, env=env, stop=ctx.stop)
        line = q.output.strip().splitlines()[0] if q.ok and q.output.strip() else ""
        if re.fullmatch(r"\d+(\.\d+)*", line):
            version = line
        else:
            m = re.search(r"(\d+\.\d+(?:\.\d+)?)", first)
            version = m.group(1) if m else None
    return version, f"$ {path} --version\n{p.output.rstrip()}\n"


def compilers_check(ctx: CheckContext, out_dir: Path) -> Outcome:
    env = ctx.child_env()
    log: list[str] = []
    details: dict[str, Any] = {}
    problems: list[str] = []
    found: list[str] = []
    for lang, var, names, program, flag in (
        ("c", "CC", ("gcc", "cc", "clang"), _C_PROGRAM, "c"),
        ("c++", "CXX", ("g++", "c++", "clang++"), _CXX_PROGRAM, "c++"),
    ):
        path, how = _find_compiler(env, var, names)
        if path is None:
            problems.append(f"no {lang.upper()} compiler ({'$' + var + ' ' + env[var] + ' not found' if env.get(var) else ', '.join(names) + ' not on PATH'})")
            details[lang] = None
            continue
        version, text = _compiler_version(path, env, ctx)
        log.append(text)
        with tempfile.TemporaryDirectory(prefix="gpu-runner-cc-") as tmp:
            out = os.path.join(tmp, "libprobe.so")
            p = _proc.run([path, "-x", flag, "-", "-shared", "-fPIC", "-o", out], timeout=COMPILE_TIMEOUT_S,
                          env=env, input_text=program, stop=ctx.stop)
            compiled = p.ok and os.path.exists(out)
        log.append(f"$ {os.path.basename(path)} -x {flag} - -shared -fPIC -o libprobe.so  ({'ok' if compiled else p.how()})\n"
                   + p.output.rstrip() + "\n")
        details[lang] = {"path": path, "found_as": how, "version": version, "compiles": compiled}
        name = os.path.basename(path)
        found.append(f"{name} {version or '(version unknown)'}")
        if not compiled:
            problems.append(f"{name} cannot compile a {lang.upper()} shared library ({p.how()})")
    warnings: list[str] = []
    for py in ctx.pythons:
        info = ctx.python_info(py)
        if info.get("include") and info.get("python_h") is False:
            warnings.append(f"no Python.h for {py} ({info['include']}): JIT compilers that build Python "
                            "extensions (triton's launcher) need the Python development headers")
    details["warnings"] = warnings
    captured = "\n".join(log)
    _write(out_dir / "output.txt", captured)
    facts = {"gcc_version": (details.get("c") or {}).get("version")}
    if problems:
        return Outcome.fail("; ".join(problems), output=captured).add(details, facts)
    return Outcome("passed", _warned(", ".join(found), warnings), details=details, facts=facts, captured=captured)


# ---------------------------------------------------------------------------------------
# frameworks
# ---------------------------------------------------------------------------------------

def _probe(python: str, args: list[str], ctx: CheckContext, timeout: float) -> tuple[dict[str, Any] | None, _proc.Proc]:
    p = _proc.run([python, str(PROBE_SCRIPT), *args], timeout=timeout, env=ctx.child_env(), split=True,
                  cwd=str(ctx.cwd), stop=ctx.stop)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("GPU_RUNNER_PROBE "):
            try:
                return json.loads(line[len("GPU_RUNNER_PROBE "):]), p
            except ValueError:
                break
    return None, p


def frameworks_check(ctx: CheckContext, out_dir: Path) -> Outcome:
    from concurrent.futures import ThreadPoolExecutor

    details: dict[str, Any] = {"pythons": {}}
    problems: list[str] = []
    verdicts: list[str] = []
    captured: list[str] = []
    jobs: list[tuple[str, str, str]] = []  # (python, framework, artifact name)
    for i, py in enumerate(ctx.pythons):
        found, p = _probe(py, ["--discover"], ctx, TOOL_TIMEOUT_S)
        if found is None:
            problems.append(f"cannot run the runtime's Python {py}: {p.how()}")
            captured.append(f"$ {py} --discover\n{p.output}")
            continue
        details["pythons"][py] = {"python_version": found.get("python_version"), "installed": found.get("installed"),
                                  "frameworks": {}}
        prefix = "" if len(ctx.pythons) == 1 else f"python{i + 1}-"
        for fw in found.get("installed") or {}:
            jobs.append((py, fw, f"{prefix}{fw}.txt"))
    if not jobs and not problems:
        where = ", ".join(ctx.pythons)
        return Outcome("skipped", f"no PyTorch, TensorFlow or JAX in {where}",
                       skip_reason=f"none of PyTorch, TensorFlow, JAX is installed in the runtime's Python ({where})",
                       details=details)
    if jobs:
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            probes = list(pool.map(lambda j: _probe(j[0], [j[1]], ctx, FRAMEWORK_TIMEOUT_S), jobs))
    else:
        probes = []
    gpu = ctx.gpu()
    machine_gpus = gpu.count or (ctx.expected_gpus or 0)
    for (py, fw, artifact), (data, p) in zip(jobs, probes):
        label = FRAMEWORK_NAMES[fw]
        _write(out_dir / artifact, f"$ {py} {PROBE_SCRIPT.name} {fw}\n{p.output}")
        captured.append(f"----- {label} ({py}) -----\n{p.output.rstrip()}")
        if data is None:
            problems.append(f"{label}: the probe {p.how()}" + (f" after {FRAMEWORK_TIMEOUT_S:g} s" if p.timed_out else ""))
            details["pythons"][py]["frameworks"][fw] = {"error": p.how()}
            continue
        details["pythons"][py]["frameworks"][fw] = data
        if not data.get("import_ok"):
            problems.append(f"{label}: {data.get('error')}")
            continue
        seen = data.get("gpus") or []
        bad_ops = [o for o in data.get("ops") or [] if not o.get("ok")]
        version = data.get("version")
        if bad_ops:
            problems.append(f"{label} {version}: matmul failed on " + "; ".join(
                f"{o.get('device')}: {o.get('error')}" for o in bad_ops))
        if machine_gpus and not seen:
            problems.append(f"{label} {version} sees no GPU, but the machine has {_plural(machine_gpus, 'GPU')} "
                            f"({data.get('why_no_gpu') or 'no reason given'})")
        elif machine_gpus and len(seen) < machine_gpus:
            visible = ctx.child_env().get("CUDA_VISIBLE_DEVICES")
            if visible is None:
                problems.append(f"{label} {version} sees {len(seen)} of the machine's {machine_gpus} GPUs")
        if seen:
            names = ", ".join(dict.fromkeys(str(g.get("name")) for g in seen))
            verdicts.append(f"{label} {version}: {len(seen)}× {names}, matmul "
                            + ("ok" if not bad_ops else "FAILED"))
        else:
            verdicts.append(f"{label} {version}: CPU only, matmul " + ("ok" if not bad_ops else "FAILED"))
        if fw == "torch" and data.get("cuda_build"):
            details.setdefault("torch_cuda_version", data.get("cuda_build"))
    text = "\n".join(captured)
    facts: dict[str, Any] = {}
    for py, d in details["pythons"].items():
        for fw, data in (d.get("frameworks") or {}).items():
            if isinstance(data, dict) and data.get("version"):
                facts.setdefault(f"{fw}_version", data["version"])
    summary = "; ".join(verdicts) or "no framework answered"
    if problems:
        return Outcome.fail("; ".join(problems), summary=f"{problems[0]}" + (f" ({summary})" if verdicts else ""),
                            output=text).add(details, facts)
    return Outcome("passed", summary, details=details, facts=facts, captured=text)


# ---------------------------------------------------------------------------------------
# resources
# ---------------------------------------------------------------------------------------

def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def resources_check(ctx: CheckContext, out_dir: Path) -> Outcome:
    problems: list[str] = []
    warnings: list[str] = []
    details: dict[str, Any] = {"thresholds": {
        "disk_fail_gib": DISK_FAIL_GIB, "disk_warn_gib": DISK_WARN_GIB, "memory_fail_gib": MEMORY_FAIL_GIB,
        "memory_warn_gib": MEMORY_WARN_GIB, "shm_fail_mib": SHM_FAIL_MIB, "shm_warn_mib": SHM_WARN_MIB}}
    # disk: one line per filesystem (results, working folder, temp folder)
    disks = []
    seen_dev: set[int] = set()
    for role, path in (("results", ctx.entry_dir), ("working folder", ctx.cwd), ("temp", Path(tempfile.gettempdir()))):
        try:
            st = os.stat(path)
            if st.st_dev in seen_dev:
                continue
            seen_dev.add(st.st_dev)
            du = shutil.disk_usage(path)
        except OSError as e:
            warnings.append(f"cannot read the free disk of {path}: {e.strerror}")
            continue
        free_gib = du.free / 2**30
        disks.append({"role": role, "path": str(path), "free_gib": round(free_gib, 1), "total_gib": round(du.total / 2**30, 1)})
        if free_gib < DISK_FAIL_GIB:
            problems.append(f"only {_gib(du.free)} free disk for the {role} ({path}); at least {DISK_FAIL_GIB:g} GiB needed")
        elif free_gib < DISK_WARN_GIB:
            warnings.append(f"{_gib(du.free)} free disk for the {role} ({path})")
    details["disks"] = disks
    vm = psutil.virtual_memory()
    details["memory"] = {"total_gib": round(vm.total / 2**30, 1), "available_gib": round(vm.available / 2**30, 1)}
    if vm.available / 2**30 < MEMORY_FAIL_GIB:
        problems.append(f"only {_gib(vm.available)} memory available; at least {MEMORY_FAIL_GIB:g} GiB needed")
    elif vm.available / 2**30 < MEMORY_WARN_GIB:
        warnings.append(f"{_gib(vm.available)} memory available")
    shm_txt = "no /dev/shm"
    try:
        sv = os.statvfs("/dev/shm")
        shm_total, shm_free = sv.f_blocks * sv.f_frsize, sv.f_bavail * sv.f_frsize
        details["shm"] = {"size_mib": round(shm_total / 2**20), "free_mib": round(shm_free / 2**20)}
        shm_txt = f"/dev/shm {_gib(shm_total)}" if shm_total >= 2**30 else f"/dev/shm {shm_total / 2**20:.0f} MiB"
        hint = "; PyTorch DataLoader workers need more (docker run --shm-size=16g, or --ipc=host)"
        if shm_total / 2**20 < SHM_FAIL_MIB:
            problems.append(f"/dev/shm is only {shm_total / 2**20:.0f} MiB{hint}")
        elif shm_total / 2**20 < SHM_WARN_MIB:
            warnings.append(f"/dev/shm is {shm_total / 2**20:.0f} MiB{hint}")
    except OSError:
        details["shm"] = None
        warnings.append("no /dev/shm: shared-memory users (PyTorch DataLoader workers) will fail")
    details["cpu_count"] = os.cpu_count()
    details["warnings"] = warnings
    disk_txt = ", ".join(f"{d['free_gib']:g} GiB free ({d['role']})" for d in disks)
    summary = (f"disk {disk_txt}; memory {_gib(vm.available)} of {_gib(vm.total)} available; {shm_txt}; "
               f"{os.cpu_count()} CPUs")
    text = json.dumps(details, indent=2)
    _write(out_dir / "resources.json", text)
    facts = {"memory_total_gib": round(vm.total / 2**30, 1),
             "shm_size_mib": details["shm"]["size_mib"] if details.get("shm") else None}
    if problems:
        return Outcome.fail("; ".join(problems), summary=f"{problems[0]} ({summary})").add(details, facts)
    return Outcome("passed", _warned(summary, warnings), details=details, facts=facts, captured=summary)


# ---------------------------------------------------------------------------------------
# user checks
# ---------------------------------------------------------------------------------------

_NOT_A_VERDICT = re.compile(r"^(\++ |Traceback \(most recent call last\):$|[\W_]+$)")


def verdict_line(output: str, *, failed: bool) -> str:
    """The line of a command's output that says what happened: the first meaningful one when it
    passed (``gcc --version``: its version, not the licence below), the last when it failed (where
    errors are). Blank lines, ``set -x`` traces, rules and "Traceback" headers do not count; no
    such line: "" (the verdict is then the exit code alone)."""
    lines = [line.strip() for line in output.splitlines()]
    meaningful = [line for line in lines if line and not _NOT_A_VERDICT.match(line)]
    if not meaningful:
        return ""
    return meaningful[-1] if failed else meaningful[0]


def command_check(spec: dict[str, Any], ctx: CheckContext, out_dir: Path) -> Outcome:
    cmd = str(spec["run"])
    expect = int(spec.get("expect_exit", 0) or 0)
    timeout = float(spec.get("timeout_s") or spec.get("timeout") or DEFAULT_COMMAND_TIMEOUT_S)
    env = ctx.child_env()
    bash = shutil.which("bash", path=env.get("PATH"))
    argv = [bash, "--noprofile", "--norc", "-eo", "pipefail", "-c", cmd] if bash else ["/bin/sh", "-c", cmd]
    p = _proc.run(argv, timeout=timeout, env=env, cwd=str(ctx.cwd), stop=ctx.stop)
    _write(out_dir / "output.txt", p.output)
    details = {"run": cmd, "expect_exit": expect, "exit_code": p.returncode, "timeout_s": timeout,
               "shell": argv[0]}
    failed = not p.timed_out and not p.error and p.returncode != expect
    first = verdict_line(p.output, failed=failed)
    if p.timed_out:
        return Outcome.fail(f"`{cmd}` did not finish in {timeout:g} s and was killed", output=p.output,
                            timeout_s=timeout).add(details, {})
    if p.error:
        return Outcome.fail(f"`{cmd}`: {p.error}", output=p.output).add(details, {})
    if p.returncode != expect:
        how = p.how()
        return Outcome.fail(f"`{cmd}` {how}, expected exit {expect}" + (f": {first[:200]}" if first else ""),
                            output=p.output, exit_code=p.returncode if (p.returncode or 0) >= 0 else None).add(details, {})
    return Outcome("passed", f"`{cmd}` exited {p.returncode}" + (f": {first[:160]}" if first else ""),
                   details=details, captured=p.output)


BUILTINS: dict[str, Callable[[CheckContext, Path], Outcome]] = {
    "gpu": gpu_check,
    "cuda": cuda_check,
    "compilers": compilers_check,
    "frameworks": frameworks_check,
    "resources": resources_check,
}


# ---------------------------------------------------------------------------------------
# the runtime's Python
# ---------------------------------------------------------------------------------------

def kernel_pythons(kernel_names: list[str | None], runtime: Any = None) -> tuple[list[str], list[str]]:
    """The Python interpreters of these kernels (None: ``python3``), deduplicated, and notes
    on those that could not be resolved. ``runtime``, the runtime's
    :class:`~gpu_runner.execute.runtime.Interpreter`: a kernelspec with a generic ``python``
    runs under it, as the kernels do (else under this interpreter, as jupyter_client starts it)."""
    from jupyter_client.kernelspec import NoSuchKernel

    from ..execute.kernels import KernelSpecs, kernel_python

    named = runtime is not None and runtime.named
    default = runtime.executable if named else sys.executable
    ksm = KernelSpecs(runtime).manager
    out: list[str] = []
    notes: list[str] = []
    for name in dict.fromkeys(n or "python3" for n in kernel_names) or ["python3"]:
        python = None
        try:
            spec = ksm.get_kernel_spec(name)
            python = kernel_python(spec, runtime)
            if python is None:
                notes.append(f"kernel {name} is {spec.language}, not Python")
                continue
            if not os.path.exists(python):
                python = None
        except NoSuchKernel:
            if name in ("python3", "python"):
                python = default
            else:
                notes.append(f"kernel {name} is not installed")
        except Exception as e:  # noqa: BLE001
            notes.append(f"kernel {name}: {e}")
        if python and python not in out:
            out.append(python)
    return out or [default], notes

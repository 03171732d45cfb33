"""The runtime's interpreter: the Python that notebooks and framework checks run under.

A runtime *is* its interpreter: the container's ``/opt/conda/bin/python``, a VM image's
``python3``, a conda or virtual environment. gpu-runner itself lives in an environment of
its own, so it must never answer for the runtime. Which interpreter, most specific first:

1. ``--python PATH_OR_COMMAND`` (``run`` and ``check``);
2. the matrix's ``runtimes.<name>.python``;
3. the environment variable ``GPU_RUNNER_PYTHON`` (the action sets it to the job's own
   ``python3``, found before gpu-runner's private environment exists);
4. none: Jupyter's own resolution, as ``jupyter nbconvert`` would (a ``python3`` kernelspec
   runs under gpu-runner's interpreter).

With an interpreter named, every Python kernelspec whose argv starts ipykernel with a
generic ``python`` (``python``, ``python3``, ``python3.X``, ``{python}``, or gpu-runner's own
interpreter) runs under it, and kernelspecs are also looked up in its own Jupyter data paths
(a runtime that ships ``conda-env-...`` kernels keeps them). An interpreter without ipykernel
(``pytorch/pytorch`` images ship none) gets the *kernel overlay*: ipykernel and what it needs,
installed by the runtime's own pip into a cache folder outside the runtime
(``python -m pip install --target``) and appended to the kernel's ``sys.path``, after the
runtime's own site-packages, so the runtime's packages always win and its site-packages are
never changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

PYTHON_ENV = "GPU_RUNNER_PYTHON"
"""The runtime's interpreter when neither ``--python`` nor the matrix names one."""
CACHE_ENV = "GPU_RUNNER_CACHE_DIR"
"""Where the kernel overlays are kept (default: ``$XDG_CACHE_HOME/gpu-runner``, ``~/.cache/gpu-runner``)."""
OVERLAY_REQUIREMENTS = ("ipykernel>=6.29",)
"""What the kernel overlay installs (with everything it needs)."""
OVERLAY_INSTALL_TIMEOUT_S = 900.0
PROBE_TIMEOUT_S = 60.0
PACKAGES_OF_INTEREST = ("torch", "tensorflow", "jax", "jaxlib", "numpy", "cupy", "triton", "ipykernel")
"""Distributions whose versions an entry records (with every ``nvidia-*`` CUDA library)."""
GENERIC_PYTHONS = frozenset({"python", "python3", "{python}",
                             f"python{sys.version_info[0]}.{sys.version_info[1]}"})

_BOOT = ("import sys;sys.path.append(sys.argv.pop(1));import runpy;"
         "runpy.run_module('ipykernel_launcher',run_name='__main__',alter_sys=True)")
"""``python -c _BOOT OVERLAY ARGS``: ``python -m ipykernel_launcher ARGS`` with the overlay
appended to ``sys.path`` (after the runtime's own site-packages)."""

# Runs under the runtime's Python (any 3.x): no f-strings, nothing beyond the standard library.
_PROBE = r"""
import json, os, sys, sysconfig
try:
    import importlib.util as iu
    def has(m): return iu.find_spec(m) is not None
except Exception:
    def has(m): return False
want = set(sys.argv[1].split(','))
pkgs = {}
try:
    from importlib import metadata as md
    for d in md.distributions():
        try:
            name = (d.metadata['Name'] or '').lower().replace('_', '-')
        except Exception:
            continue
        if name in want or name.startswith('nvidia-'):
            pkgs.setdefault(name, d.version)
except Exception:
    pass
paths = []
try:
    from jupyter_core.paths import jupyter_path
    paths = jupyter_path()
except Exception:
    env = os.environ.get('JUPYTER_PATH')
    if env:
        paths += [p for p in env.split(os.pathsep) if p]
    data_home = os.environ.get('XDG_DATA_HOME') or os.path.join(os.path.expanduser('~'), '.local', 'share')
    paths += [os.path.join(data_home, 'jupyter'), os.path.join(sys.prefix, 'share', 'jupyter'),
              '/usr/local/share/jupyter', '/usr/share/jupyter']
print(json.dumps({
    'executable': sys.executable, 'version': sys.version.split()[0], 'prefix': sys.prefix,
    'implementation': sys.implementation.name, 'soabi': sysconfig.get_config_var('SOABI') or '',
    'platform': sysconfig.get_platform(), 'packages': pkgs, 'jupyter_path': paths,
    'ipykernel': has('ipykernel'), 'pip': has('pip'),
}))
"""


class InterpreterError(Exception):
    """The runtime's interpreter cannot be used: not found, not a Python, no kernel machinery."""


@dataclass
class Interpreter:
    """The runtime's Python, as it answered for itself."""

    executable: str
    """The path kernels are started with (as given or found on PATH: a virtual environment's
    ``bin/python`` is not resolved to the interpreter it links to)."""
    source: str
    """What chose it: ``--python``, ``matrix``, ``GPU_RUNNER_PYTHON`` or ``jupyter`` (the default)."""
    version: str = ""
    prefix: str = ""
    implementation: str = ""
    soabi: str = ""
    platform: str = ""
    packages: dict[str, str] = field(default_factory=dict)
    jupyter_path: list[str] = field(default_factory=list)
    has_ipykernel: bool = False
    has_pip: bool = False
    overlay: Path | None = None
    """The kernel overlay appended to the kernels' ``sys.path``, when one is used."""
    overlay_packages: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    """Why ipykernel kernels cannot run under it (not found, not a Python, no ipykernel and no
    overlay): each such notebook's ``setup_error``."""

    @property
    def named(self) -> bool:
        """True when a runtime interpreter was named (else Jupyter's resolution is kept)."""
        return self.source != "jupyter"

    def kernel_dirs(self) -> list[str]:
        return [os.path.join(p, "kernels") for p in self.jupyter_path]

    def describe(self) -> str:
        how = {"--python": "from --python", "matrix": "from the matrix's python",
               PYTHON_ENV: f"from {PYTHON_ENV}", "jupyter": "Jupyter's python3 kernelspec"}.get(self.source, self.source)
        overlay = ""
        if self.overlay is not None:
            overlay = f"; ipykernel {self.overlay_packages.get('ipykernel', '?')} from the kernel overlay"
        return f"{self.executable} (Python {self.version or '?'}; {how}{overlay})"

    def facts(self) -> dict[str, Any]:
        """What an entry's results record about the interpreter its kernels used."""
        out: dict[str, Any] = {
            "python": self.version or None,
            "python_executable": self.executable,
            "python_source": self.source,
            "packages": dict(sorted(self.packages.items())),
        }
        if self.problem:
            out["python_problem"] = self.problem
        if self.overlay is not None:
            out["kernel_overlay"] = {"path": str(self.overlay), "packages": dict(sorted(self.overlay_packages.items()))}
        return out


def resolve_command(command: str) -> str:
    """``PATH_OR_COMMAND`` to an absolute path of an executable file, or InterpreterError."""
    command = command.strip()
    if not command:
        raise InterpreterError("the runtime's Python is empty")
    words = command.split()
    if len(words) > 1 and not os.path.exists(os.path.expanduser(command)) and shutil.which(command) is None:
        raise InterpreterError(f"the runtime's Python takes one path or command name, without arguments: "
                               f"{command!r} has {len(words) - 1} (a wrapper script can add them)")
    if os.sep in command or (os.altsep and os.altsep in command):
        path = os.path.abspath(os.path.expanduser(command))
        if not os.path.exists(path):
            raise InterpreterError(f"the runtime's Python {command} does not exist")
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise InterpreterError(f"the runtime's Python {command} is not an executable file")
        return path
    found = shutil.which(command)
    if found is None:
        raise InterpreterError(f"the runtime's Python {command!r} is not on PATH")
    return os.path.abspath(found)


def probe(executable: str, source: str, *, env: dict[str, str] | None = None,
          timeout: float = PROBE_TIMEOUT_S) -> Interpreter:
    """Ask the interpreter about itself (version, packages, Jupyter paths, ipykernel, pip)."""
    try:
        p = subprocess.run([executable, "-c", _PROBE, ",".join(PACKAGES_OF_INTEREST)], capture_output=True,
                           text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL, errors="replace")
    except subprocess.TimeoutExpired:
        raise InterpreterError(f"the runtime's Python {executable} did not answer within {timeout:g} s") from None
    except OSError as e:
        raise InterpreterError(f"the runtime's Python {executable} cannot be run: {e.strerror or e}") from None
    data: dict[str, Any] = {}
    for line in reversed(p.stdout.splitlines()):
        with contextlib.suppress(ValueError):
            data = json.loads(line)
            break
    if p.returncode != 0 or not isinstance(data, dict) or "version" not in data:
        said = (p.stderr or p.stdout).strip().splitlines()
        raise InterpreterError(f"{executable} is not a Python that gpu-runner can use (exit {p.returncode}"
                            + (f": {said[-1][:300]}" if said else "") + ")")
    return Interpreter(
        executable=executable, source=source, version=str(data.get("version", "")),
        prefix=str(data.get("prefix", "")), implementation=str(data.get("implementation", "")),
        soabi=str(data.get("soabi", "")), platform=str(data.get("platform", "")),
        packages={str(k): str(v) for k, v in (data.get("packages") or {}).items()},
        jupyter_path=[str(x) for x in data.get("jupyter_path") or []],
        has_ipykernel=bool(data.get("ipykernel")), has_pip=bool(data.get("pip")),
    )


def default_python() -> str:
    """The interpreter Jupyter's own resolution gives a ``python3`` kernelspec."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

        try:
            argv0 = (KernelSpecManager().get_kernel_spec("python3").argv or [""])[0]
        except NoSuchKernel:
            argv0 = "python"
    except Exception:  # noqa: BLE001 - no Jupyter: this interpreter is as good a guess as any
        argv0 = "python"
    if argv0 in GENERIC_PYTHONS or not argv0:
        return sys.executable
    return shutil.which(argv0) or argv0


def choose(flag: str | None, matrix: str | None, env: dict[str, str] | os._Environ[str] | None = None
           ) -> tuple[str | None, str]:
    """``(command, source)``: most specific wins (flag, matrix, variable); ``(None, "jupyter")``: none named."""
    env = os.environ if env is None else env
    if flag:
        return flag, "--python"
    if matrix:
        return matrix, "matrix"
    if env.get(PYTHON_ENV):
        return env[PYTHON_ENV], PYTHON_ENV
    return None, "jupyter"


# ---------------------------------------------------------------------------------------
# the kernel overlay
# ---------------------------------------------------------------------------------------

def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpu-runner"


def overlay_dir(interp: Interpreter, requirements: tuple[str, ...] = OVERLAY_REQUIREMENTS) -> Path:
    """One overlay per interpreter kind (implementation, ABI, platform) and requirement set:
    runtimes of the same Python share it."""
    key = json.dumps([interp.implementation, interp.version.rsplit(".", 1)[0], interp.soabi, interp.platform,
                      list(requirements)])
    tag = re.sub(r"[^A-Za-z0-9.]+", "-", f"{interp.implementation}{interp.version.rsplit('.', 1)[0]}")
    return cache_dir() / "kernel-overlay" / f"{tag}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def overlay_packages(path: Path) -> dict[str, str]:
    """``{name: version}`` of what an overlay folder holds (from its ``*.dist-info``)."""
    out: dict[str, str] = {}
    for info in path.glob("*.dist-info"):
        name = version = None
        with contextlib.suppress(OSError):
            for line in (info / "METADATA").read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("Name:"):
                    name = line.split(":", 1)[1].strip().lower().replace("_", "-")
                elif line.startswith("Version:"):
                    version = line.split(":", 1)[1].strip()
                elif not line.strip():
                    break
        if name and version:
            out[name] = version
    return dict(sorted(out.items()))


def _complete(path: Path) -> bool:
    return (path / "ipykernel").is_dir() and (path / "ipykernel_launcher.py").is_file()


def ensure_overlay(interp: Interpreter, *, log: Callable[[str], None] = lambda s: None,
                   log_file: Path | None = None, env: dict[str, str] | None = None,
                   timeout: float = OVERLAY_INSTALL_TIMEOUT_S) -> Path:
    """The kernel overlay for ``interp``, installed by its own pip on first use.

    Installed into a temporary folder beside the final one and renamed into place, under a
    lock: concurrent runs neither see half an overlay nor install it twice. InterpreterError with
    pip's last words when it cannot be installed (no pip, no network, no matching wheel).
    """
    import fcntl

    final = overlay_dir(interp)
    if _complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:  # noqa: PTH123
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(final):
            return final
        if not interp.has_pip:
            raise InterpreterError(
                f"the runtime's Python {interp.executable} has neither ipykernel nor pip to install it: "
                f"install ipykernel in the runtime (e.g. in its image), or name a Python that has it")
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        # bytecode compiled once, here: every kernel after this one starts without compiling
        cmd = [interp.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
               "--no-warn-script-location", "--target", str(tmp), *OVERLAY_REQUIREMENTS]
        log(f"the runtime's Python has no ipykernel: installing the kernel overlay "
            f"({', '.join(OVERLAY_REQUIREMENTS)}) with its own pip into {final}")
        t0 = time.monotonic()
        try:
            out = log_file.open("ab") if log_file is not None else None  # noqa: SIM115
            try:
                if out is not None:
                    out.write(f"$ {' '.join(cmd)}\n".encode())
                    out.flush()
                p = subprocess.run(cmd, stdout=out if out is not None else subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, timeout=timeout, start_new_session=True)
            finally:
                if out is not None:
                    out.close()
            said = ""
            if p.returncode != 0:
                text = (p.stdout or b"").decode(errors="replace") if out is None else \
                    log_file.read_bytes()[-4000:].decode(errors="replace")  # type: ignore[union-attr]
                lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
                errors = [ln for ln in lines if ln.startswith("ERROR")] or lines
                said = errors[-1][:400] if errors else ""
                raise InterpreterError(
                    f"the kernel overlay could not be installed with {interp.executable} -m pip (exit "
                    f"{p.returncode}{': ' + said if said else ''}); install ipykernel in the runtime, or make "
                    f"the package index reachable (pip's own settings apply: PIP_INDEX_URL, PIP_FIND_LINKS)")
            if not _complete(tmp):
                raise InterpreterError(f"{interp.executable} -m pip installed no ipykernel into the kernel overlay")
            if final.exists():
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except subprocess.TimeoutExpired:
            raise InterpreterError(f"installing the kernel overlay took more than {timeout:g} s and was stopped") from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log(f"kernel overlay ready in {time.monotonic() - t0:.0f} s")
        return final


def for_run(command: str | None, source: str, *, overlay: bool = True, env: dict[str, str] | None = None,
            log: Callable[[str], None] = lambda s: None, log_file: Path | None = None) -> Interpreter:
    """The interpreter an entry's kernels and framework checks use, ready to start kernels:
    probed, with the kernel overlay when it lacks ipykernel. Never raises: what is wrong is
    the returned interpreter's ``problem`` (every Python notebook's setup error)."""
    if command is None:
        exe = default_python()
        try:
            return probe(exe, "jupyter", env=env)
        except InterpreterError:  # Jupyter's resolution as ever; the kernels will say what is wrong
            return Interpreter(executable=exe, source="jupyter")
    try:
        exe = resolve_command(command)
        interp = probe(exe, source, env=env)
    except InterpreterError as e:
        return Interpreter(executable=command, source=source, problem=str(e))
    if interp.has_ipykernel:
        return interp
    if not overlay:
        interp.problem = (
            f"the runtime's Python {exe} has no ipykernel and the kernel overlay is off: install it in the runtime "
            f"({exe} -m pip install ipykernel), or turn the overlay on (leave out --no-kernel-overlay; "
            "kernel_overlay: true in the matrix)")
        return interp
    try:
        interp.overlay = ensure_overlay(interp, log=log, log_file=log_file, env=env)
        interp.overlay_packages = overlay_packages(interp.overlay)
    except InterpreterError as e:
        interp.problem = str(e)
    return interp


def overlay_boot_command(python: str, overlay: Path, args: list[str]) -> list[str]:
    """The command that starts ``python -m ipykernel_launcher ARGS`` with the overlay appended."""
    return [python, "-c", _BOOT, str(overlay), *args]


__all__ = [
    "CACHE_ENV", "GENERIC_PYTHONS", "Interpreter", "OVERLAY_REQUIREMENTS", "PYTHON_ENV", "InterpreterError", "cache_dir",
    "choose", "default_python", "ensure_overlay", "for_run", "overlay_boot_command", "overlay_dir", "overlay_packages", "probe",
    "resolve_command",
]

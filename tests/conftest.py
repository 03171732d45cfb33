"""Shared helpers: build notebooks in a folder, run the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent
# prices come from the matrix and the shipped table unless a test points gpu-runner at the Billing
# Catalog stand-in (GPU_RUNNER_BILLING_EMULATOR_HOST): never the real catalog from a developer's ADC
os.environ.setdefault("GPU_RUNNER_BILLING_CATALOG", "0")
FIXTURE_NOTEBOOKS = HERE / "notebooks"
REPO = HERE.parent


def make_nb(folder: Path, name: str, *cells: Any, kernel: str = "python3", **metadata: Any) -> Path:
    """Write a notebook. A cell is code (str), ("md", text), or ("code", source, [tags])."""
    built = []
    for c in cells:
        if isinstance(c, str):
            built.append(new_code_cell(c))
        elif c[0] == "md":
            built.append(new_markdown_cell(c[1]))
        else:
            built.append(new_code_cell(c[1], metadata={"tags": list(c[2])} if len(c) > 2 else {}))
    nb = new_notebook(cells=built)
    nb.metadata["kernelspec"] = {"name": kernel, "language": "python", "display_name": kernel}
    nb.metadata.update(metadata)
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


_LAUNCHER: Any = None


def launcher() -> Any:
    """The session's command-line fork server (tests/launcher.py), started on first use;
    None with GPU_RUNNER_TEST_LAUNCHER=off (every call then a plain ``python -m gpu_runner``)."""
    global _LAUNCHER
    if _LAUNCHER is None and os.environ.get("GPU_RUNNER_TEST_LAUNCHER") != "off":
        import tempfile

        from launcher import Launcher

        _LAUNCHER = Launcher(Path(tempfile.mkdtemp(prefix="grl-", dir="/tmp"))).start()
    return _LAUNCHER


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    if _LAUNCHER is not None:
        _LAUNCHER.stop()


def gpu_runner_command() -> tuple[list[str], dict[str, str]]:
    """The command that runs ``gpu-runner`` (a new process, forked from the launcher when one
    runs), and the environment it needs besides the caller's."""
    lau = launcher()
    if lau is None:
        return [sys.executable, "-m", "gpu_runner"], {}
    return lau.command(), lau.env()


def make_zip(members: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    """A zip archive (an artifact's download) of ``members`` (name -> bytes) and symbolic ``links``
    (name -> target), as a hostile archive may hold them."""
    import io
    import stat
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def local_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment as a user's shell has it, outside GitHub Actions (no ``GITHUB_*``),
    with ``extra`` on top."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}, **(extra or {})}


def gpu_runner(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as a user would, in ``cwd``: a process of its own, in the
    environment given (forked from the session's launcher, which has imported gpu-runner once)."""
    cmd, extra = gpu_runner_command()
    return subprocess.run(
        [*cmd, *args], cwd=cwd, env={**local_env(env), **extra}, capture_output=True, text=True, timeout=timeout,
    )


def results(out: Path, entry: str = "local") -> dict[str, Any]:
    return json.loads((out / entry / "results.json").read_text(encoding="utf-8"))


def by_path(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["path"]: n for n in res["notebooks"]}


def saved(out: Path, nb_result: dict[str, Any], entry: str = "local") -> Any:
    return nbformat.read(out / entry / nb_result["files"]["ipynb"], as_version=4)


@pytest.fixture
def nbdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


# -- a runtime: a second interpreter, not gpu-runner's ------------------------------------

RUNTIME_ONLY_PACKAGE = "runtime_only"
"""A package that the runtime's interpreter has and gpu-runner's environment lacks."""


def tree_listing(root: Path) -> list[tuple[str, int]]:
    """Every file under ``root`` with its size: to show a folder was left as it was."""
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())


def purelib(python: Path) -> Path:
    """The site-packages folder of ``python``, as it says itself."""
    return Path(subprocess.run([str(python), "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())


def make_runtime(folder: Path, *, with_pip: bool = True) -> Path:
    """A virtual environment made from scratch, as a runtime image's Python would be: no
    ipykernel, a package of its own (``runtime_only``) and a stand-in ``torch``. Returns its
    ``python``."""
    from test_checks import FAKE_TORCH

    args = [sys.executable, "-m", "venv", str(folder)] + ([] if with_pip else ["--without-pip"])
    subprocess.run(args, check=True, capture_output=True, timeout=300)
    python = folder / "bin" / "python"
    site = purelib(python)
    pkg = site / RUNTIME_ONLY_PACKAGE
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "1.2.3"\n', encoding="utf-8")
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text(FAKE_TORCH, encoding="utf-8")
    # what importlib.metadata reads: the runtime's own packages carry their versions
    for name, version in ((RUNTIME_ONLY_PACKAGE, "1.2.3"), ("torch", "2.99.0+fake")):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    return python


@pytest.fixture(scope="session")
def runtime_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runtime's interpreter (see :func:`make_runtime`), shared by the session."""
    return make_runtime(tmp_path_factory.mktemp("runtime") / "venv")


@pytest.fixture(scope="session")
def kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One GPU_RUNNER_CACHE_DIR for the session: the kernel overlay is installed into it once,
    by the runtime's own pip, and reused as it is on a runner that keeps its cache. Shared by
    pytest-xdist's workers (the overlay is made under a lock and renamed into place whole)."""
    shared = tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") else None
    if shared is None:
        return tmp_path_factory.mktemp("gpu-runner-cache")
    path = shared / "gpu-runner-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def gpu_series_results(tmp_path_factory) -> Path:
    """A real run (no PDF) of a notebook playing a known GPU series through the NVML stand-in
    (report_fixtures/gpu_series.py); tests that change files work on a copy."""
    from report_fixtures import gpu_series

    return gpu_series.run(tmp_path_factory.mktemp("gpu-series"), "--no-pdf")


# -- where the suite's CPU goes (opt-in: GPU_RUNNER_TEST_CPU=FILE appends one JSON line per test) --

@pytest.fixture(autouse=True)
def _cpu_account(request: pytest.FixtureRequest):
    path = os.environ.get("GPU_RUNNER_TEST_CPU")
    if not path:
        yield
        return
    import resource
    import time

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    c0, t0 = cpu(), time.monotonic()
    yield
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"test": request.node.nodeid, "cpu_s": round(cpu() - c0, 3),
                            "wall_s": round(time.monotonic() - t0, 3)}) + "\n")

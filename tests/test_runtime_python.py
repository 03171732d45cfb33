"""The runtime's interpreter, not gpu-runner's: notebooks and framework checks run under the
Python the runtime names (--python, the matrix's python, GPU_RUNNER_PYTHON), a real second
interpreter made here, with the kernel overlay when it has no ipykernel."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from junitparser import JUnitXml

from conftest import RUNTIME_ONLY_PACKAGE, by_path, gpu_runner, make_nb, purelib, results, saved, tree_listing
from gpu_runner.execute import runtime as runtimes

pytestmark = pytest.mark.slow

NEEDS_RUNTIME = (
    f"import sys, {RUNTIME_ONLY_PACKAGE}\n"
    f"print('EXE', sys.executable)\n"
    f"print('PKG', {RUNTIME_ONLY_PACKAGE}.__version__)\n"
    "import ipykernel\nprint('IPYKERNEL', ipykernel.__file__)"
)


def _outputs(out: Path, res: dict, path: str, entry: str = "local") -> dict[str, str]:
    nb = saved(out, by_path(res)[path], entry)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    return dict(line.split(" ", 1) for line in text.splitlines() if line[:3] in ("EXE", "PKG", "IPY"))


@pytest.fixture
def env(kernel_cache: Path) -> dict[str, str]:
    return {runtimes.CACHE_ENV: str(kernel_cache), runtimes.PYTHON_ENV: ""}


def test_python_flag_runs_the_notebook_in_the_runtime_through_the_overlay(nbdir, runtime_python, env):
    make_nb(nbdir, "needs.ipynb", NEEDS_RUNTIME)
    site = purelib(runtime_python)
    before = tree_listing(site)
    p = gpu_runner("run", "needs.ipynb", "--no-pdf", "--no-checks", "--out", "out", "--python", str(runtime_python),
                   cwd=nbdir, env=env, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    # before any notebook starts, the log says which interpreter the kernels use
    lines = p.stdout.splitlines()
    said = next(i for i, line in enumerate(lines) if "kernels run under" in line)
    assert said < next(i for i, line in enumerate(lines) if line.startswith("[start]"))
    assert f"kernels run under {runtime_python} (Python " in lines[said] and "from --python" in lines[said]
    res = results(nbdir / "out")
    seen = _outputs(nbdir / "out", res, "needs.ipynb")
    assert seen["EXE"] == str(runtime_python)
    assert seen["PKG"] == "1.2.3"
    facts = res["facts"]
    assert facts["python_executable"] == str(runtime_python) and facts["python_source"] == "--python"
    assert facts["packages"]["torch"] == "2.99.0+fake"  # the runtime's, though gpu-runner has none
    overlay = facts["kernel_overlay"]
    assert seen["IPYKERNEL"].startswith(overlay["path"] + os.sep)  # ipykernel from the overlay...
    assert overlay["packages"]["ipykernel"] and Path(overlay["path"]).is_relative_to(env[runtimes.CACHE_ENV])
    assert tree_listing(site) == before  # ...and the runtime's site-packages untouched
    # every report names the interpreter
    junit = JUnitXml.fromfile(str(nbdir / "out" / "junit.xml"))
    props = {p.name: p.value for suite in junit for p in suite.properties()}
    assert props["python_executable"] == str(runtime_python) and props["package.torch"] == "2.99.0+fake"
    assert props["kernel_overlay"].startswith("ipykernel==")
    assert str(runtime_python) in (nbdir / "out" / "index.html").read_text(encoding="utf-8")
    assert "torch 2.99.0+fake" in (nbdir / "out" / "summary.md").read_text(encoding="utf-8")


def test_gpu_runner_python_names_the_runtime_and_the_fork_server_is_not_needed(nbdir, runtime_python, env):
    make_nb(nbdir, "needs.ipynb", NEEDS_RUNTIME)
    for forks in ("1", "0"):  # forked from a server under the runtime's Python, or started from scratch
        out = f"out{forks}"
        p = gpu_runner("run", "needs.ipynb", "--no-pdf", "--no-checks", "--out", out, cwd=nbdir, timeout=600,
                       env={**env, runtimes.PYTHON_ENV: str(runtime_python), "GPU_RUNNER_FORKSERVER": forks})
        assert p.returncode == 0, p.stdout + p.stderr
        res = results(nbdir / out)
        assert _outputs(nbdir / out, res, "needs.ipynb")["EXE"] == str(runtime_python)
        assert res["facts"]["python_source"] == "GPU_RUNNER_PYTHON"


def test_without_a_runtime_named_jupyter_resolves_as_before_and_says_so(nbdir, env):
    make_nb(nbdir, "plain.ipynb", "import sys\nprint('EXE', sys.executable)")
    p = gpu_runner("run", "plain.ipynb", "--no-pdf", "--no-checks", "--out", "out", cwd=nbdir, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"kernels run under {sys.executable} (Python " in p.stdout and "Jupyter's python3 kernelspec" in p.stdout
    res = results(nbdir / "out")
    assert _outputs(nbdir / "out", res, "plain.ipynb")["EXE"] == sys.executable
    assert res["facts"]["python_source"] == "jupyter" and "kernel_overlay" not in res["facts"]


def _matrix(folder: Path, python: str | None, *, overlay: bool | None = None) -> Path:
    make_nb(folder, "nb/needs.ipynb", NEEDS_RUNTIME)
    keys = (f"    python: {json.dumps(python)}\n" if python else "") + (
        f"    kernel_overlay: {str(overlay).lower()}\n" if overlay is not None else "")
    m = folder / "matrix.yml"
    m.write_text(textwrap.dedent("""\
        version: 1
        machines:
          box: {provider: local}
        runtimes:
          rt:
            notebooks: [nb/needs.ipynb]
            checks: []
        """) + keys, encoding="utf-8")
    return m


def test_the_matrix_python_wins_over_the_variable_and_the_flag_over_both(nbdir, runtime_python, env):
    _matrix(nbdir, str(runtime_python))
    # the variable names gpu-runner's own interpreter: the matrix's python still wins
    p = gpu_runner("run", "--matrix", "matrix.yml", "--no-pdf", "--out", "out", cwd=nbdir, timeout=600,
                   env={**env, runtimes.PYTHON_ENV: sys.executable})
    assert p.returncode == 0, p.stdout + p.stderr
    res = results(nbdir / "out", "rt--box")
    assert _outputs(nbdir / "out", res, "nb/needs.ipynb", "rt--box")["EXE"] == str(runtime_python)
    assert res["facts"]["python_source"] == "matrix" and res["options"]["python"] == str(runtime_python)
    # --python beats the matrix: gpu-runner's own interpreter lacks the runtime's package
    p = gpu_runner("run", "--matrix", "matrix.yml", "--no-pdf", "--out", "out2", "--python", sys.executable,
                   cwd=nbdir, env=env, timeout=600)
    assert p.returncode == 1
    nb = by_path(results(nbdir / "out2", "rt--box"))["nb/needs.ipynb"]
    assert nb["failure"]["ename"] == "ModuleNotFoundError" and RUNTIME_ONLY_PACKAGE in nb["failure"]["evalue"]


def test_overlay_off_is_a_setup_error_that_says_how_to_fix_it(nbdir, runtime_python, env):
    _matrix(nbdir, str(runtime_python), overlay=False)
    p = gpu_runner("run", "--matrix", "matrix.yml", "--no-pdf", "--out", "out", cwd=nbdir, env=env)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    f = by_path(results(nbdir / "out", "rt--box"))["nb/needs.ipynb"]["failure"]
    assert f["kind"] == "setup_error"
    assert "has no ipykernel and the kernel overlay is off" in f["message"]
    assert f"{runtime_python} -m pip install ipykernel" in f["message"]
    # the flag turns it back on
    p = gpu_runner("run", "--matrix", "matrix.yml", "--no-pdf", "--out", "out2", "--kernel-overlay", cwd=nbdir,
                   env=env, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr


def test_an_overlay_that_cannot_be_installed_is_a_clear_setup_error(nbdir, tmp_path, runtime_python):
    make_nb(nbdir, "needs.ipynb", NEEDS_RUNTIME)
    make_nb(nbdir, "other.ipynb", "print('an R or other kernel would still run; this one needs Python too')")
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    offline = {runtimes.CACHE_ENV: str(tmp_path / "fresh-cache"), "PIP_CONFIG_FILE": os.devnull,
               "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty), runtimes.PYTHON_ENV: ""}
    p = gpu_runner("run", ".", "--no-pdf", "--no-checks", "--out", "out", "--python", str(runtime_python),
                   cwd=nbdir, env=offline)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    res = results(nbdir / "out")
    for nb in res["notebooks"]:
        assert nb["failure"]["kind"] == "setup_error"
        assert "the kernel overlay could not be installed" in nb["failure"]["message"]
        assert "No matching distribution" in nb["failure"]["message"] or "ipykernel" in nb["failure"]["message"]
    assert (nbdir / "out" / "local" / "kernel-overlay.log").is_file()  # pip's whole say, for a look
    assert not any((tmp_path / "fresh-cache" / "kernel-overlay").glob("cpython*"))  # no half overlay left


def test_a_runtime_with_its_own_kernels_keeps_them(tmp_path, nbdir, kernel_cache, runtime_python):
    # a runtime that has ipykernel (here: on its path through a .pth, inside the runtime) and ships a named
    # kernel in its own Jupyter data folder, which gpu-runner's Jupyter does not know
    rt = tmp_path / "rt"
    from conftest import make_runtime

    python = make_runtime(rt)
    # another test (maybe on another worker, maybe still making it) may have made it; else make it
    # as a run would (under the overlay's lock, so never twice at once)
    overlay = next((kernel_cache / "kernel-overlay").glob("cpython*"), None)
    if overlay is None:
        interp = runtimes.for_run(str(runtime_python), "--python", env={**os.environ, runtimes.CACHE_ENV: str(kernel_cache)})
        overlay = interp.overlay
    assert overlay is not None
    (purelib(python) / "kernel-machinery.pth").write_text(str(overlay) + "\n", encoding="utf-8")
    kdir = rt / "share" / "jupyter" / "kernels" / "conda-env-rt-py"
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python [conda env:rt]", "language": "python"}), encoding="utf-8")
    make_nb(nbdir, "named.ipynb", NEEDS_RUNTIME, kernel="conda-env-rt-py")
    make_nb(nbdir, "default.ipynb", NEEDS_RUNTIME)
    p = gpu_runner("run", ".", "--no-pdf", "--no-checks", "--out", "out", "--python", str(python), cwd=nbdir,
                   env={runtimes.CACHE_ENV: str(kernel_cache)})
    assert p.returncode == 0, p.stdout + p.stderr
    res = results(nbdir / "out")
    for path in ("named.ipynb", "default.ipynb"):
        assert _outputs(nbdir / "out", res, path)["EXE"] == str(python)
    assert by_path(res)["named.ipynb"]["kernel"] == "conda-env-rt-py"
    assert "kernel_overlay" not in res["facts"]  # it has its own ipykernel: no overlay


def test_check_probes_the_runtimes_frameworks_not_gpu_runners(tmp_path, runtime_python, env):
    p = gpu_runner("check", "--out", "mine", cwd=tmp_path, env={**env, "PYTHONPATH": ""})
    assert p.returncode == 0, p.stdout + p.stderr
    mine = {c["name"]: c for c in results(tmp_path / "mine")["checks"]}
    assert mine["frameworks"]["status"] == "skipped"  # gpu-runner's environment has no framework
    p = gpu_runner("check", "--out", "rt", "--python", str(runtime_python), cwd=tmp_path, env={**env, "PYTHONPATH": ""})
    assert p.returncode == 0, p.stdout + p.stderr
    res = results(tmp_path / "rt")
    fw = {c["name"]: c for c in res["checks"]}["frameworks"]
    assert fw["status"] == "passed" and fw["summary"] == "PyTorch 2.99.0+fake: CPU only, matmul ok"
    assert list(fw["details"]["pythons"]) == [str(runtime_python)]
    assert res["facts"]["python_executable"] == str(runtime_python) and res["facts"]["torch_version"] == "2.99.0+fake"
    assert f"the runtime's Python is {runtime_python}" in p.stdout


@pytest.mark.parametrize("value, message", [
    ("/no/such/python", "does not exist"),
    ("no-such-python-command", "is not on PATH"),
    ("true", "is not a Python that gpu-runner can use"),
])
def test_a_python_flag_that_is_no_python_is_a_usage_error(nbdir, value, message, env):
    make_nb(nbdir, "a.ipynb", "1")
    for cmd in (["run", "a.ipynb", "--no-pdf"], ["check"]):
        p = gpu_runner(*cmd, "--python", value, cwd=nbdir, env=env)
        assert p.returncode == 2, p.stdout + p.stderr
        assert message in p.stderr and "Traceback" not in p.stderr


def test_the_most_specific_wins():
    assert runtimes.choose("a", "b", {"GPU_RUNNER_PYTHON": "c"}) == ("a", "--python")
    assert runtimes.choose(None, "b", {"GPU_RUNNER_PYTHON": "c"}) == ("b", "matrix")
    assert runtimes.choose(None, None, {"GPU_RUNNER_PYTHON": "c"}) == ("c", "GPU_RUNNER_PYTHON")
    assert runtimes.choose(None, None, {}) == (None, "jupyter")

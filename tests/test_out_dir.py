"""The --out folder under abuse: two runs into one folder, a folder that cannot be written,
and the previous results kept whole until the new ones are complete."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import gpu_runner, local_env, make_nb, results

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="POSIX")]


def _start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = local_env()
    return subprocess.Popen([sys.executable, "-m", "gpu_runner", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_second_run_into_a_busy_out_refuses_naming_the_holder(nbdir):
    make_nb(nbdir, "slow.ipynb", "import pathlib\npathlib.Path('started').touch()", "import time\ntime.sleep(600)")
    make_nb(nbdir, "quick.ipynb", "print('quick')")
    first = _start(nbdir, "run", "slow.ipynb", "--out", "o", "--no-pdf", "--no-checks")
    try:
        _wait_for(nbdir / "started", first)
        second = gpu_runner("run", "quick.ipynb", "--out", "o", "--no-pdf", "--no-checks", cwd=nbdir)
        assert second.returncode == 2, second.stdout + second.stderr
        line = _one_line_error(second.stderr)
        assert f"o is in use by gpu-runner pid {first.pid}" in line and "`gpu-runner run`" in line, line
        assert "[start]" not in second.stdout  # refused before any notebook
        # the other commands that write into a folder refuse too
        check = gpu_runner("check", "--out", "o", cwd=nbdir)
        assert check.returncode == 2 and "in use by gpu-runner pid" in _one_line_error(check.stderr)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 143
    res = results(nbdir / "o")
    assert [n["path"] for n in res["notebooks"]] == ["slow.ipynb"]  # the first run's results, whole
    assert not (nbdir / "o/.gpu-runner.lock").exists()
    # once it is done, the folder is free again
    again = gpu_runner("run", "quick.ipynb", "--out", "o", "--no-pdf", "--no-checks", cwd=nbdir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert [n["path"] for n in results(nbdir / "o")["notebooks"]] == ["quick.ipynb"]


def test_two_runs_started_0_3_s_apart_one_runs_one_refuses_nothing_lost(nbdir):
    make_nb(nbdir, "a.ipynb", "import time\ntime.sleep(1)\nprint('a')")
    make_nb(nbdir, "b.ipynb", "print('b')")
    one = _start(nbdir, "run", "a.ipynb", "--out", "o", "--no-pdf", "--no-checks")
    time.sleep(0.3)
    two = _start(nbdir, "run", "b.ipynb", "--out", "o", "--no-pdf", "--no-checks")
    outs = {name: p.communicate(timeout=120) for name, p in (("a.ipynb", one), ("b.ipynb", two))}
    codes = {name: p.returncode for name, p in (("a.ipynb", one), ("b.ipynb", two))}
    assert sorted(codes.values()) == [0, 2], (codes, outs)
    winner = next(n for n, c in codes.items() if c == 0)
    loser = next(n for n, c in codes.items() if c == 2)
    assert "is in use by gpu-runner pid" in _one_line_error(outs[loser][1])
    res = results(nbdir / "o")
    assert [n["path"] for n in res["notebooks"]] == [winner] and res["status"] == "passed"
    assert (nbdir / "o/summary.md").is_file() and (nbdir / "o/index.html").is_file()


def test_previous_results_stay_whole_until_the_new_run_completes(nbdir):
    make_nb(nbdir, "a.ipynb", "print('first run')")
    assert gpu_runner("run", "a.ipynb", "--out", "o", "--no-pdf", "--no-checks", cwd=nbdir).returncode == 0
    before = (nbdir / "o/local/results.json").read_text()
    make_nb(nbdir, "a.ipynb", "import pathlib\npathlib.Path('started').touch()", "import time\ntime.sleep(600)")
    killed = _start(nbdir, "run", "a.ipynb", "--out", "o", "--no-pdf", "--no-checks")
    _wait_for(nbdir / "started", killed)
    killed.kill()  # nothing can be written by a SIGKILLed process
    killed.communicate(timeout=30)
    assert (nbdir / "o/local/results.json").read_text() == before  # untouched, not half-replaced
    assert (nbdir / "o/local/notebooks/a/output.ipynb").is_file()
    # the next run clears what the killed one left aside, and replaces the entry whole
    make_nb(nbdir, "a.ipynb", "print('third run')")
    assert gpu_runner("run", "a.ipynb", "--out", "o", "--no-pdf", "--no-checks", cwd=nbdir).returncode == 0
    assert json.loads((nbdir / "o/local/results.json").read_text())["status"] == "passed"
    assert not (nbdir / "o/.gpu-runner-staging").exists()
    assert "third run" in (nbdir / "o/local/notebooks/a/output.ipynb").read_text()


def test_out_under_a_file_is_a_one_line_usage_error_before_any_notebook(nbdir):
    make_nb(nbdir, "a.ipynb", "print('ran')")
    (nbdir / "file").write_text("not a folder")
    for out in ("file", "file/sub"):
        r = gpu_runner("run", "a.ipynb", "--out", out, "--no-pdf", cwd=nbdir)
        assert r.returncode == 2, r.stdout + r.stderr
        line = _one_line_error(r.stderr)
        assert f"--out {out}" in line and "a file" in line and "not a folder" in line, line
        assert "[start]" not in r.stdout and "check" not in r.stdout
    assert (nbdir / "file").read_text() == "not a folder"


def _read_only_command(folder: Path, args: list[str]) -> list[str] | None:
    """``args`` run with ``folder`` a read-only file system (a private mount namespace, as root),
    or read-only by its mode (as a user); None where neither can be arranged."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return args
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-m", "true"], capture_output=True).returncode != 0:
        return None
    script = 'mount -t tmpfs -o ro tmpfs "$1" && shift && exec "$@"'
    return [unshare, "-m", "sh", "-c", script, "sh", str(folder), *args]


def test_a_read_only_out_is_a_one_line_usage_error_before_any_notebook(nbdir):
    make_nb(nbdir, "a.ipynb", "print('ran')")
    ro = nbdir / "ro"
    ro.mkdir()
    env = local_env()
    cmd = _read_only_command(ro, [sys.executable, "-m", "gpu_runner", "run", "a.ipynb", "--out", "ro/results",
                                  "--no-pdf"])
    if cmd is None:
        pytest.skip("cannot make a read-only folder here (root without mount namespaces)")
    try:
        r = subprocess.run(cmd, cwd=nbdir, env=env, capture_output=True, text=True, timeout=120)
    finally:
        ro.chmod(0o755)
    assert r.returncode == 2, r.stdout + r.stderr
    line = _one_line_error(r.stderr)
    assert "--out ro/results: cannot write there:" in line, line
    assert "read-only file system" in line or "permission denied" in line, line
    assert "[start]" not in r.stdout

"""No orphaned kernels, ever: SIGTERM, SIGINT and SIGKILL of a parallel `gpu-runner run`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import by_path, local_env, make_nb, results, saved

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]

# Each notebook starts a child of its own (as DataLoader workers or a server would) and then hangs.
HANG = [
    "import subprocess, sys\nchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print('child', child.pid, flush=True)",
    "import time\ntime.sleep(600)",
]


def _start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = local_env()
    return subprocess.Popen([sys.executable, "-m", "gpu_runner", "run", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _wait_for_hanging_children(proc: subprocess.Popen[str], count: int, timeout: float = 90
                               ) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """Wait until ``count`` notebooks have started their child; return (every descendant, the kernels)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = _descendants(proc.pid)
        grandchildren = [p for p in procs if _safe_cmdline(p).endswith("time.sleep(600)")]
        if len(grandchildren) >= count:
            time.sleep(0.5)  # let the kernels reach their sleeping cell
            kernels = [k for k in (_parent(g) for g in grandchildren) if k is not None]
            return _descendants(proc.pid), kernels
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.1)
    raise AssertionError("the notebooks never started")


def _parent(p: psutil.Process) -> psutil.Process | None:
    try:
        return p.parent()
    except psutil.Error:
        return None


def _safe_cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _gone(procs: list[psutil.Process], timeout: float = 10) -> list[psutil.Process]:
    """The processes still alive after ``timeout`` (zombies count as gone: they hold nothing)."""
    deadline = time.monotonic() + timeout
    alive = procs
    while time.monotonic() < deadline:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return []
        time.sleep(0.1)
    return alive


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signalled_parallel_run_leaves_no_kernel_and_saves_what_ran(nbdir, sig, code):
    for name in ("a", "b", "c"):
        make_nb(nbdir, f"{name}.ipynb", *HANG)
    proc = _start(nbdir, ".", "-j", "2", "--out", "o", "--no-pdf")
    procs, kernels = _wait_for_hanging_children(proc, 2)
    assert len(kernels) == 2 and len(procs) > 4  # two executing, the third started ahead
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, out
    assert _gone(procs) == [], "processes left behind"

    res = results(nbdir / "o")
    assert res["interrupted"] is True
    nbs = by_path(res)
    interrupted = [n for n in nbs.values() if n["status"] == "failed"]
    assert len(interrupted) == 2 and all(n["failure"]["kind"] == "interrupted" for n in interrupted)
    assert all(n["failure"]["cell_index"] == 1 for n in interrupted)
    for n in interrupted:  # the executed notebook, with the outputs it got
        assert "child" in saved(nbdir / "o", n).cells[0].outputs[0]["text"]
    (not_run,) = [n for n in nbs.values() if n["status"] == "skipped"]
    assert "interrupted before" in not_run["skip_reason"]
    assert (nbdir / "o/summary.md").exists()  # the reports of what did finish


def test_sigkill_of_gpu_runner_takes_its_kernels_with_it(nbdir):
    """Nothing can run in a SIGKILLed process: the fork server's parent-death signal takes the
    kernels' process groups, children included (kernels started from scratch, with
    GPU_RUNNER_FORKSERVER=0, die by their own parent-death signal, their children do not)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    make_nb(nbdir, "a.ipynb", *HANG)
    # this one's child leaves the session and ignores SIGTERM: the fork server, a subreaper, still has it
    make_nb(nbdir, "b.ipynb", HANG[0].replace("time.sleep(600)'])", "time.sleep(600)'], start_new_session=True)"),
            HANG[1])
    proc = _start(nbdir, ".", "-j", "2", "--out", "o", "--no-pdf")
    procs, kernels = _wait_for_hanging_children(proc, 2)
    assert len(kernels) == 2
    proc.kill()
    proc.communicate(timeout=30)
    assert _gone(kernels) == [], "kernels outlived a SIGKILLed gpu-runner"
    # forked kernels: the fork server also takes what the notebooks started
    assert _gone(procs) == [], "a notebook's own process outlived a SIGKILLed gpu-runner"


def test_a_normal_run_leaves_no_process_behind(nbdir):
    make_nb(nbdir, "spawns.ipynb",
            "import subprocess, sys\nchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "print(child.pid)")
    proc = _start(nbdir, "spawns.ipynb", "--out", "o", "--no-pdf")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    nb = results(nbdir / "o")["notebooks"][0]
    pid = int(saved(nbdir / "o", nb).cells[0].outputs[0]["text"])
    try:
        child = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return  # killed and reaped already
    assert _gone([child]) == [], "the notebook's child outlived its kernel"


def _group_start(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """gpu-runner leading its own process group, as a shell starts a job: a signal to the group
    reaches it and everything it started there (``timeout -s INT`` and a terminal's Ctrl-C do that)."""
    return subprocess.Popen([sys.executable, "-m", "gpu_runner", "run", *args], cwd=cwd, env=local_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _two_sigints_to_the_group(proc: subprocess.Popen[str]) -> str:
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=90)
    return out


def _valid_reports(out_dir: Path) -> dict:
    res = results(out_dir)  # parses: a whole, valid results.json
    assert res["interrupted"] is True and res["schema_version"] == 1
    from junitparser import JUnitXml

    assert JUnitXml.fromfile(str(out_dir / "junit.xml"))  # parses
    assert (out_dir / "summary.md").read_text().startswith("## ")
    return res


def test_two_sigints_10ms_apart_never_abandon_the_results(nbdir):
    """The first SIGINT stops the run; the second only hurries it: results.json, JUnit, the summary
    and the dashboard are all written, the interrupted notebooks say how long they really ran, and
    Playwright's driver (in its own session) is closed by gpu-runner, not killed by the signal."""
    for name in ("a", "b"):
        make_nb(nbdir, f"{name}.ipynb", _marking(name), "import time\ntime.sleep(600)")
    proc = _group_start(nbdir, ".", "-j", "2", "--out", "o", "--no-checks")  # PDFs on: the browser warms up
    _wait_for_markers(proc, nbdir, 2)
    time.sleep(1.0)
    out = _two_sigints_to_the_group(proc)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "Future exception was never retrieved" not in out, out
    res = _valid_reports(nbdir / "o")
    assert (nbdir / "o/index.html").is_file()
    nbs = res["notebooks"]
    assert [n["status"] for n in nbs] == ["failed", "failed"]
    for n in nbs:
        assert n["failure"]["kind"] == "interrupted"
        assert n["duration_s"] >= 1.0  # the time it really ran, not 0
        assert [c["status"] for c in n["cells"]] == ["passed", "failed"]
        assert "started" in saved(nbdir / "o", n).cells[0].outputs[0]["text"]
    assert not (nbdir / "o/.gpu-runner-staging").exists()


def test_the_hard_exit_after_the_second_signal_still_writes_a_valid_results_json(nbdir):
    """With the limit at 0 the second signal sends gpu-runner straight to its hard exit: whatever
    the wind-down had reached, results.json, junit.xml and summary.md are whole."""
    make_nb(nbdir, "a.ipynb", _marking("a"), "import time\ntime.sleep(600)")
    make_nb(nbdir, "later.ipynb", "1")
    proc = _group_start(nbdir, ".", "-j", "1", "--out", "o", "--no-checks", "--no-pdf",
                        env={"GPU_RUNNER_STOP_LIMIT_S": "0"})
    _wait_for_markers(proc, nbdir, 1)
    time.sleep(0.5)
    out = _two_sigints_to_the_group(proc)
    assert proc.returncode == 130, out
    assert "Traceback" not in out, out
    nbs = by_path(_valid_reports(nbdir / "o"))
    assert nbs["a.ipynb"]["status"] == "failed" and nbs["a.ipynb"]["failure"]["kind"] == "interrupted"
    assert nbs["a.ipynb"]["duration_s"] >= 0.5
    assert nbs["later.ipynb"]["status"] in ("passed", "skipped")  # it ran before the signal, or never
    assert not (nbdir / "o/.gpu-runner-staging").exists()


def _wait_for_markers(proc: subprocess.Popen[str], folder: Path, count: int, timeout: float = 90) -> None:
    """Wait until ``count`` notebooks have run their first cell (each touches a marker file)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(folder.glob("started-*"))) >= count:
            time.sleep(0.3)  # into the sleeping cell
            return
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.05)
    raise AssertionError("the notebooks never started")


def _marking(name: str) -> str:
    return f"import pathlib\npathlib.Path('started-{name}').touch()\nprint('started', flush=True)"


DAEMONS = (
    "import json, os, subprocess, sys, time\n"
    # a daemon in a new session that ignores SIGTERM (the example)
    "d1 = subprocess.Popen(['bash', '-c', 'trap \"\" TERM; sleep 600'], start_new_session=True)\n"
    # a double fork: its parent exits at once, so it is an orphan while the notebook still runs
    "r, w = os.pipe()\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        os.close(r); os.write(w, str(os.getpid()).encode()); os.close(w); time.sleep(600)\n"
    "    os._exit(0)\n"
    "os.close(w); d2 = int(os.read(r, 32)); os.close(r)\n"
    # one that also clears its environment: only a cgroup holds it
    "d3 = subprocess.Popen([sys.executable, '-c', 'import os, time; os.setsid(); time.sleep(600)'], env={})\n"
    "open('pids.json', 'w').write(json.dumps({'d1': d1.pid, 'd2': d2, 'd3': d3.pid,\n"
    "                                         'cgroup': os.environ.get('GPU_RUNNER_CGROUP')}))"
)
WAIT_GONE = (
    "import json, os, time\n"
    "deadline = time.time() + 60\n"
    "while not os.path.exists('pids.json') and time.time() < deadline:\n"
    "    time.sleep(0.05)\n"
    "time.sleep(0.1)\n"
    "pids = json.load(open('pids.json'))\n"
    "def alive(pid):\n"
    "    try:\n"
    "        return open(f'/proc/{pid}/stat').read().split(') ')[1][0] != 'Z'\n"
    "    except OSError:\n"
    "        return False\n"
    "deadline = time.time() + 20\n"
    # d2 goes with its notebook too, except from a forked kernel without a cgroup (see the test)
    "wait_d2 = bool(pids['cgroup']) or os.environ.get('GPU_RUNNER_FORKSERVER') == '0'\n"
    "while time.time() < deadline and (alive(pids['d1']) or alive(pids['d2']) and wait_d2):\n"
    "    time.sleep(0.05)\n"
    "print(json.dumps({'d1': alive(pids['d1']), 'd2': alive(pids['d2']), 'd3': alive(pids['d3'])}))"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="child subreapers are Linux-only")
@pytest.mark.parametrize(("forkserver", "cgroups"), [("1", "1"), ("1", "0"), ("0", "0")])
def test_daemons_in_their_own_session_are_gone_when_the_notebook_ends(nbdir, forkserver, cgroups):
    """A notebook's daemons (new session, SIGTERM ignored, double-forked) die with the notebook,
    not with the run: a notebook running beside it sees them go. One that also clears its environment is
    caught where a cgroup could be made."""
    make_nb(nbdir, "a_starts.ipynb", DAEMONS)
    make_nb(nbdir, "b_looks.ipynb", WAIT_GONE)
    r = subprocess.run([sys.executable, "-m", "gpu_runner", "run", "a_starts.ipynb", "b_looks.ipynb", "-j", "2",
                        "--out", "o", "--no-pdf", "--no-checks"], cwd=nbdir, capture_output=True, text=True,
                       timeout=180, env=local_env({"GPU_RUNNER_FORKSERVER": forkserver, "GPU_RUNNER_CGROUPS": cgroups}))
    pids = json.loads((nbdir / "pids.json").read_text())
    leftovers = [psutil.Process(p) for p in (pids["d1"], pids["d2"], pids["d3"]) if psutil.pid_exists(p)]
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        seen = json.loads(saved(nbdir / "o", by_path(results(nbdir / "o"))["b_looks.ipynb"]).cells[0]
                          .outputs[0]["text"])
        assert not seen["d1"], "a daemon outlived its notebook"
        # a fork without exec in a kernel forked from the fork server shows the server's environment
        # in /proc, without the notebook's mark: without a cgroup it goes at the end of the run
        assert not seen["d2"] or (forkserver, cgroups) == ("1", "0") and not pids["cgroup"]
        assert "process(es) the notebook left running" in r.stdout
        # after the run: nothing at all, not even the one without the mark
        assert _gone(leftovers, timeout=5) == [], "a daemon outlived the run"
        if pids["cgroup"]:  # in a cgroup even the one with a cleared environment goes with its notebook
            assert not seen["d3"]
            assert not Path(pids["cgroup"]).exists()  # and the cgroup is removed
        else:
            assert cgroups == "0" or not _cgroups_possible()
    finally:
        for p in leftovers:
            with contextlib.suppress(psutil.Error):
                p.kill()


def _cgroups_possible() -> bool:
    from gpu_runner.execute.sweep import Cgroups

    c = Cgroups("probe")
    ok = c.available
    c.close()
    return ok

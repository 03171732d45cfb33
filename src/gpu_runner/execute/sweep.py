"""Nothing a notebook started outlives it: child subreaper, a marker in the environment, cgroups.

Killing a kernel's process group takes what stayed in that group. A process that starts a
new session (``subprocess.Popen(..., start_new_session=True)``, ``setsid``, a double fork)
leaves the group, and when its parent dies it would be re-parented to PID 1 and outlive the
run, holding GPU memory on a shared machine. On Linux:

* gpu-runner and the fork server are *child subreapers* (``PR_SET_CHILD_SUBREAPER``): an
  orphan below them is re-parented to them, not to PID 1, so it stays a descendant.
* Every kernel gets ``GPU_RUNNER_NOTEBOOK=<token>`` (one per notebook) in its environment,
  which whatever it starts inherits. At the end of each notebook every descendant of
  gpu-runner carrying that token is SIGKILLed; on every way out of gpu-runner (the end, a
  failure, a signal, the hard exit, ``atexit``) every descendant carrying the run's token,
  and at the very end of ``gpu-runner run`` (the browser closed) every descendant at all.
* Where a cgroup v2 can be created below gpu-runner's own (root in a container or VM, or a
  delegated subtree), each kernel joins its own cgroup before it runs anything, and the
  notebook's end kills the cgroup (``cgroup.kill``): that catches everything, whatever its
  environment.

The mark is what ``/proc/PID/environ`` shows: the environment a process was *exec*-ed
with. A kernel forked from the fork server was not exec-ed, so what it forks without an
exec shows the server's environment, without the mark: without a cgroup, such a process
that leaves the session goes at the end of the run (the fork server kills every
descendant when it closes), not at the end of its notebook. Not caught: without a cgroup,
a process that both clears its environment and leaves the session; anything started through another service (``systemd-run``, ``docker run``, ``at``),
which is not a descendant; on other systems than Linux, anything outside the kernel's
process group. When gpu-runner is SIGKILLed, the fork server (a subreaper too) kills every
descendant it has and the run's cgroup; kernels started without the fork server
(``GPU_RUNNER_FORKSERVER=0``) die by their parent-death signal, but what they started in a
new session escapes unless it is in a cgroup.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

NOTEBOOK_ENV = "GPU_RUNNER_NOTEBOOK"
"""``<run token>-<n>``: marks every process a notebook's kernel started."""
CGROUP_ENV = "GPU_RUNNER_CGROUP"
"""The cgroup (a folder under the cgroup2 mount) a kernel joins before it runs anything."""
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process a child subreaper (Linux); False where it cannot be."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _marked(proc: psutil.Process, prefix: str) -> bool:
    try:
        value = proc.environ().get(NOTEBOOK_ENV, "")
    except (psutil.Error, OSError):
        return False
    return value == prefix or value.startswith(prefix + "-")


def kill_marked(prefix: str, *, rounds: int = 5) -> int:
    """SIGKILL every descendant of this process whose ``GPU_RUNNER_NOTEBOOK`` is ``prefix`` or
    starts with ``prefix-``; reap those that were re-parented to us. Returns how many."""
    me = os.getpid()
    killed: set[int] = set()
    for _ in range(rounds):
        try:
            procs = psutil.Process(me).children(recursive=True)
        except psutil.Error:
            return len(killed)
        found = [p for p in procs if p.pid not in killed and _marked(p, prefix)]
        if not found:
            break
        _kill(found, killed)
    return len(killed)


def _kill(procs: list[psutil.Process], killed: set[int]) -> None:
    """SIGKILL each of ``procs`` (gone already is fine), note it in ``killed``, and reap them."""
    for p in procs:
        with contextlib.suppress(psutil.Error, OSError):
            p.send_signal(signal.SIGKILL)
        killed.add(p.pid)
    _reap(p.pid for p in procs)


def _reap(pids: Iterable[int]) -> None:
    """Collect those of ``pids`` that were re-parented to us (orphans are no child Python knows
    of: no one else waits for them)."""
    me = os.getpid()
    for pid in pids:
        try:
            if psutil.Process(pid).ppid() == me:
                _wait_dead(pid)
        except psutil.Error:
            continue


def _wait_dead(pid: int) -> None:
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.01)


def kill_descendants(*, rounds: int = 5) -> int:
    """SIGKILL every descendant of this process, marked or not, and reap our own: for the very
    end of a command, when nothing it started may be left (the browser closed, the kernels gone)."""
    me = os.getpid()
    killed: set[int] = set()
    for _ in range(rounds):
        try:
            procs = [p for p in psutil.Process(me).children(recursive=True) if p.pid not in killed]
        except psutil.Error:
            break
        procs = [p for p in procs if _running(p)]
        if not procs:
            break
        _kill(procs, killed)
    return len(killed)


def _running(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# -- cgroups -------------------------------------------------------------------------------
def _cgroup2_dir() -> Path | None:
    """This process's own cgroup v2 folder, when the unified hierarchy is mounted."""
    try:
        own = next((line.split("::", 1)[1].strip() for line in Path("/proc/self/cgroup").read_text().splitlines()
                    if line.startswith("0::")), None)
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    if own is None:
        return None
    for line in mounts:
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] != "cgroup2":
            continue
        fields = left.split()
        root, mount_point = fields[3], fields[4]
        rel = os.path.relpath(own, root) if own.startswith(root) else None
        if rel is None or rel.startswith(".."):
            continue
        path = Path(mount_point) / ("" if rel == "." else rel)
        if path.is_dir():
            return path
    return None


class Cgroups:
    """One cgroup per notebook under ``<our cgroup>/gpu-runner-<pid>-<token>``, where one can be
    created; otherwise :attr:`available` is False and every method does nothing."""

    def __init__(self, token: str) -> None:
        self.root: Path | None = None
        self._n = 0
        if not sys.platform.startswith("linux") or os.environ.get("GPU_RUNNER_CGROUPS", "1") == "0":
            return
        base = _cgroup2_dir()
        if base is None:
            return
        path = base / f"gpu-runner-{os.getpid()}-{token}"
        try:
            path.mkdir()
        except OSError:
            return
        if not (path / "cgroup.procs").exists():
            with contextlib.suppress(OSError):
                path.rmdir()
            return
        self.root = path

    @property
    def available(self) -> bool:
        return self.root is not None

    def new(self) -> Path | None:
        """A fresh, empty cgroup for one notebook's kernel (None when unavailable)."""
        if self.root is None:
            return None
        self._n += 1
        path = self.root / f"nb-{self._n}"
        try:
            path.mkdir()
        except OSError:
            return None
        return path

    @staticmethod
    def kill(path: Path | None, remove: bool = True) -> int:
        """Kill everything in ``path`` (and below) and remove it. Returns how many processes."""
        if path is None:
            return 0
        n = kill_cgroup(path)
        if remove:
            remove_cgroup(path)
        return n

    def close(self) -> None:
        if self.root is not None:
            kill_cgroup(self.root)
            remove_cgroup(self.root)
            self.root = None


def kill_cgroup(path: Path) -> int:
    """SIGKILL every process in the cgroup ``path`` and its children: ``cgroup.kill`` (Linux 5.14)
    where there is one, else each listed process, until none is left. Returns how many there were."""
    if not path.is_dir():
        return 0
    found = set(_pids_below(path))
    with contextlib.suppress(OSError):
        (path / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        pids = _pids_below(path)
        if not pids:
            break
        found.update(pids)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    _reap(found)
    return len(found)


def _pids_below(path: Path) -> list[int]:
    pids: list[int] = []
    for procs in [path / "cgroup.procs", *path.rglob("*/cgroup.procs")]:
        with contextlib.suppress(OSError, ValueError):
            pids += [int(x) for x in procs.read_text().split()]
    return pids


def remove_cgroup(path: Path) -> None:
    """rmdir ``path`` and its child cgroups, deepest first (a cgroup goes once it is empty)."""
    if not path.is_dir():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        _rmdir_when_empty(sub)
    _rmdir_when_empty(path)


def _rmdir_when_empty(path: Path) -> None:
    deadline = time.monotonic() + 2.0
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)


class Sweeper:
    """The run's side of all this: tokens, cgroups, and the sweeps."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(6)
        self.subreaper = become_subreaper()
        self.cgroups = Cgroups(self.token)
        self._n = 0

    def notebook(self) -> tuple[dict[str, str], Path | None, str]:
        """(environment to add to the kernel's, its cgroup or None, its token)."""
        self._n += 1
        token = f"{self.token}-{self._n}"
        cgroup = self.cgroups.new()
        env = {NOTEBOOK_ENV: token}
        if cgroup is not None:
            env[CGROUP_ENV] = str(cgroup)
        return env, cgroup, token

    def end_notebook(self, token: str, cgroup: Path | None) -> int:
        """Kill what the notebook started (its kernel is gone already). Returns how many were swept."""
        return Cgroups.kill(cgroup) + kill_marked(token)

    def end_run(self) -> int:
        """Every way out: whatever any notebook of this run left."""
        self.cgroups.close()
        return kill_marked(self.token)

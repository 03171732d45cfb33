"""Where gpu-runner's own CPU time goes, by phase: off unless ``GPU_RUNNER_PROFILE`` names a file.

With ``GPU_RUNNER_PROFILE=FILE``, the process writes FILE (JSON) as it exits::

    {"wall_s": ..., "cpu_s": ..., "children_cpu_s": ..., "peak_rss_mib": ...,
     "notebooks": N, "phases": {"html": {"cpu_s": ..., "calls": ...}, ...},
     "kernels": {"start_cpu_s": ..., "run_cpu_s": ..., "count": ...}}

``cpu_s`` is this process's CPU (every thread), ``children_cpu_s`` that of the processes it
started and reaped (the fork server, and through it every kernel), ``peak_rss_mib`` this process's
own high-water mark (never a kernel's). Each phase's ``cpu_s`` is exclusive: CPU spent in it
and not in a phase nested inside it. Two ways a phase is measured:

* :func:`phase` around synchronous work, on any thread (``with phase("html"): ...``);
* :func:`enter` in a coroutine: every step of that task (and of the tasks it starts) counts
  for the phase it last entered, until it enters another. Steps of the event loop that belong
  to no task (I/O callbacks) are ``loop``.

The CPU no phase claimed is ``other`` (the thread pool, garbage collection, interpreter exit...).
The kernels' own CPU is read from ``/proc`` (psutil) when each is ready and just before it is
shut down: ``start_cpu_s`` is what they spent starting, ``run_cpu_s`` running the cells. As each
fork server closes, its own CPU (``fork_server_cpu_s``) and all its kernels' (``forked_kernels_cpu_s``,
their exit included) are read from ``/proc`` too.

When the variable is unset, :func:`phase` returns one shared do-nothing context manager,
:func:`enter` and :func:`kernel` return at once, and nothing is patched.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import threading
import time
from collections import defaultdict
from typing import Any

ENV = "GPU_RUNNER_PROFILE"

_NULL = contextlib.nullcontext()
_PHASE: contextvars.ContextVar[str] = contextvars.ContextVar("gpu_runner_phase", default="loop")


class _Phase:
    __slots__ = ("prof", "name")

    def __init__(self, prof: Profile, name: str) -> None:
        self.prof = prof
        self.name = name

    def __enter__(self) -> None:
        self.prof._push()

    def __exit__(self, *exc: object) -> None:
        self.prof._pop(self.name)


class Profile:
    """CPU seconds by phase for one process (see the module's description)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.t0 = time.monotonic()
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.kernels: dict[str, float] = defaultdict(float)
        self.stages: dict[str, float] = defaultdict(float)
        """Wall seconds per stage of a notebook's way through the run, summed over notebooks."""
        self.notebooks = 0
        self.marks: dict[str, float] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._loop_original: Any = None

    # -- exclusive CPU time per thread: a stack of [start, CPU of the frames nested in it] ---
    def _stack(self) -> list[list[float]]:
        st = getattr(self._local, "stack", None)
        if st is None:
            st = self._local.stack = []
        return st

    def _push(self) -> None:
        self._stack().append([time.thread_time(), 0.0])

    def _pop(self, name: str) -> None:
        st = self._stack()
        t0, inner = st.pop()
        spent = time.thread_time() - t0
        if st:
            st[-1][1] += spent
        with self._lock:
            self.cpu[name] += spent - inner
            self.calls[name] += 1

    def mark(self, name: str) -> None:
        """This process's CPU so far, under ``name`` (e.g. what start-up cost)."""
        self.marks[name] = time.process_time()

    def patch_loop(self) -> None:
        """Count every step of the event loop for the phase of the task it belongs to."""
        import asyncio.events

        if self._loop_original is not None:
            return
        original = self._loop_original = asyncio.events.Handle._run
        prof = self

        def _run(handle: Any) -> None:
            prof._push()
            try:
                original(handle)
            finally:
                owner = getattr(handle._callback, "__self__", None)
                name = "loop"
                if isinstance(owner, asyncio.Future) and handle._context is not None:
                    name = handle._context.get(_PHASE, "loop")
                prof._pop(name)

        asyncio.events.Handle._run = _run  # type: ignore[method-assign]

    def unpatch_loop(self) -> None:
        import asyncio.events

        if self._loop_original is not None:
            asyncio.events.Handle._run = self._loop_original  # type: ignore[method-assign]
            self._loop_original = None

    def kernel_cpu(self, pid: int | None) -> float | None:
        if pid is None:
            return None
        try:
            import psutil

            t = psutil.Process(pid).cpu_times()
            return float(t.user + t.system)
        except Exception:  # noqa: BLE001 - gone already
            return None

    def report(self) -> dict[str, Any]:
        import resource

        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = me.ru_utime + me.ru_stime
        with self._lock:
            phases = {k: {"cpu_s": round(v, 4), "calls": self.calls[k]} for k, v in sorted(self.cpu.items())}
            claimed = sum(self.cpu.values())
        startup = self.marks.get("startup")
        if startup is not None:
            phases["startup"] = {"cpu_s": round(startup, 4), "calls": 1}
            claimed += startup
        phases["other"] = {"cpu_s": round(max(cpu - claimed, 0.0), 4), "calls": 0}
        return {
            "wall_s": round(time.monotonic() - self.t0, 3),
            "cpu_s": round(cpu, 4),
            "children_cpu_s": round(kids.ru_utime + kids.ru_stime, 4),
            "peak_rss_mib": round(me.ru_maxrss / 1024, 1),  # Linux: KiB
            "notebooks": self.notebooks,
            "phases": phases,
            "kernels": {k: round(v, 4) for k, v in self.kernels.items()},
            "stages_wall_s": {k: round(v, 4) for k, v in self.stages.items()},
        }

    def write(self) -> None:
        with contextlib.suppress(OSError):
            with open(self.path, "w", encoding="utf-8") as f:
                json.dump(self.report(), f, indent=1)


def _from_environment() -> Profile | None:
    path = os.environ.get(ENV, "").strip()
    if not path:
        return None
    import atexit

    prof = Profile(os.path.abspath(path))
    atexit.register(prof.write)
    return prof


PROFILE: Profile | None = _from_environment()


def phase(name: str) -> Any:
    """A context manager counting the CPU of the synchronous work inside it for ``name``."""
    return _NULL if PROFILE is None else _Phase(PROFILE, name)


def enter(name: str) -> None:
    """From here on, this task's steps (and those of tasks it starts) count for ``name``."""
    if PROFILE is not None:
        _PHASE.set(name)


def started() -> None:
    """The run begins: what came before is start-up; from now on the event loop is accounted."""
    if PROFILE is not None:
        PROFILE.mark("startup")
        PROFILE.patch_loop()


def fork_server(pid: int | None) -> None:
    """A fork server is about to close: its own CPU, and that of the kernels it has reaped."""
    if PROFILE is None or pid is None:
        return
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
    except Exception:  # noqa: BLE001 - gone already
        return
    with PROFILE._lock:
        PROFILE.kernels["fork_server_cpu_s"] += t.user + t.system
        PROFILE.kernels["forked_kernels_cpu_s"] += t.children_user + t.children_system


def clock() -> float:
    """Now (monotonic), for :func:`stage`; 0.0 when profiling is off."""
    return time.monotonic() if PROFILE is not None else 0.0


def stage(name: str, since: float) -> float:
    """Add the wall time from ``since`` (a :func:`clock`) to stage ``name``; return now."""
    if PROFILE is None:
        return 0.0
    now = time.monotonic()
    with PROFILE._lock:
        PROFILE.stages[name] += now - since
    return now


def notebook() -> None:
    if PROFILE is not None:
        with PROFILE._lock:
            PROFILE.notebooks += 1


def kernel(event: str, pid: int | None, since: float | None = None) -> float | None:
    """A kernel's CPU at ``event`` ("ready": counted as its start-up; "end": the rest as its run)."""
    if PROFILE is None:
        return None
    now = PROFILE.kernel_cpu(pid)
    if now is None:
        return since
    with PROFILE._lock:
        if event == "ready":
            PROFILE.kernels["start_cpu_s"] += now
            PROFILE.kernels["count"] += 1
        else:
            PROFILE.kernels["run_cpu_s"] += now - (since or 0.0)
    return now

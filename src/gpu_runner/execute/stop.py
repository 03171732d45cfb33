"""Stopping on a signal without losing what ran.

One :class:`Stop` watches SIGINT, SIGTERM and SIGHUP for the whole of a command (the
notebooks and the reports after them). ``timeout -s INT`` signals both the process and
its group, and a double Ctrl-C sends two: further signals hurry the shutdown, they never
abandon it.

1. The first signal stops the run: every kernel's process group is killed at once, the
   notebooks are wound up (each executed notebook is written with the outputs it got),
   then results.json, JUnit, the summary, the dashboard and each notebook's HTML are
   written; no PDFs.
2. The second hurries: no more HTML or PDF, and a deadline: :data:`STOP_LIMIT_ENV`
   seconds later (default :data:`DEFAULT_STOP_LIMIT_S`), whatever is still running,
   what is known is written (results.json of every entry, junit.xml, summary.md,
   index.html) and the process exits.
3. A third does that at once.

The exit status is always 128 + the first signal's number (130 for SIGINT).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
STOP_LIMIT_ENV = "GPU_RUNNER_STOP_LIMIT_S"
DEFAULT_STOP_LIMIT_S = 5.0

WRITE_LOCK = threading.Lock()
"""Held while results are written (an entry's results.json and its folder swap, the run's
reports). The final writer takes it for good: nothing is written after it."""


def stop_limit_s() -> float:
    try:
        return max(0.0, float(os.environ.get(STOP_LIMIT_ENV, DEFAULT_STOP_LIMIT_S)))
    except ValueError:
        return DEFAULT_STOP_LIMIT_S


class Stop:
    """The signals of one command. ``install()`` in the main thread; ``restore()`` at the end."""

    def __init__(self, limit_s: float | None = None) -> None:
        self.limit_s = stop_limit_s() if limit_s is None else limit_s
        self.signum: int | None = None
        self.count = 0
        self.hurry = threading.Event()
        """Set by the second signal: skip whatever is not results (HTML, PDF)."""
        self._callbacks: list[Callable[[str], None]] = []
        self._final: list[Callable[[], None]] = []
        self._cleanup: list[Callable[[], None]] = []
        self._previous: dict[int, Any] = {}
        self._exit_started = threading.Lock()
        self._armed = False

    # -- set-up ------------------------------------------------------------------------------
    def install(self) -> Stop:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError, OSError):  # not the main thread: the caller handles signals
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)
        self._previous.clear()

    def on_stop(self, callback: Callable[[str], None]) -> None:
        """``callback(signal name)`` runs inside the handler on the first signal (at once if one
        came already): it must be quick and must not take locks the main thread may hold."""
        self._callbacks.append(callback)
        if self.signum is not None:
            callback(self.name or "")

    def add_final_writer(self, fn: Callable[[], None], *, first: bool = False) -> None:
        """Write what is known, for the hard exit. Called in order (``first``: before the others),
        from a helper thread, with :data:`WRITE_LOCK` held."""
        if first:
            self._final.insert(0, fn)
        else:
            self._final.append(fn)

    def add_cleanup(self, fn: Callable[[], None]) -> None:
        """Kill what must not outlive the hard exit (after the final writers)."""
        self._cleanup.append(fn)

    # -- state -------------------------------------------------------------------------------
    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else 128 + int(self.signum)

    # -- the handler -------------------------------------------------------------------------
    def _handler(self, sig: int, frame: Any = None) -> None:
        """A plain signal handler: Python runs it between bytecodes even while the event loop is
        busy, so the first signal's callbacks (which kill the kernels) act at once."""
        self.count += 1
        if self.count == 1:
            self.signum = sig
            for cb in list(self._callbacks):
                with contextlib.suppress(Exception):
                    cb(self.name or "")
            return
        name = signal.Signals(sig).name
        if self.count == 2:
            self.hurry.set()
            _say(f"gpu-runner: {name} again: hurrying (no more HTML or PDF); writing results.json and the "
                 f"summary, then exiting within {self.limit_s:g} s\n")
            self._arm(self.limit_s)
        else:
            _say(f"gpu-runner: {name} again: writing what is known and exiting now\n")
            self._arm(0.0)

    def _arm(self, delay: float) -> None:
        """The bounded hard exit: a helper thread, so the handler returns and the main thread,
        if it holds the write lock, can finish the file it is writing."""
        t = threading.Thread(target=self._hard_exit, args=(delay,), name="gpu-runner-hard-exit", daemon=True)
        t.start()

    def _hard_exit(self, delay: float) -> None:
        if delay > 0:
            time.sleep(delay)
        if not self._exit_started.acquire(blocking=False):
            return  # another hard exit is on its way
        # a file the main thread is writing is finished first (atomic writes: never half a file)
        WRITE_LOCK.acquire(timeout=2.0)
        try:
            for fn in self._final:
                try:
                    fn()
                except BaseException as e:  # noqa: BLE001 - write what can be written
                    _say(f"gpu-runner: while writing what is known: {type(e).__name__}: {e}\n")
        finally:
            for fn in self._cleanup:
                with contextlib.suppress(BaseException):
                    fn()
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(self.exit_code or 130)


def _say(text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, text.encode("utf-8", "replace"))

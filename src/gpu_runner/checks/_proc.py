"""Bounded subprocesses for the checks: own process group, timeout, killed with the run."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

from ..execute.kernels import REGISTRY, kill_group, signal_name

OUTPUT_MAX_CHARS = 200_000
"""What a check keeps of one command's output (head and tail), in memory and on disk."""


@dataclass
class Proc:
    argv: Sequence[str]
    returncode: int | None
    output: str
    """stdout and stderr, interleaved as the command wrote them."""
    timed_out: bool = False
    error: str | None = None
    """Set when the command could not be started at all."""
    stdout: str = ""
    """stdout alone (only when ``split`` was asked for)."""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.error is None

    def how(self) -> str:
        """How it ended, in words."""
        if self.error:
            return self.error
        if self.timed_out:
            return "timed out and was killed"
        sig = signal_name(self.returncode)
        return f"killed by {sig}" if sig else f"exited {self.returncode}"


def _bounded(text: str) -> str:
    if len(text) <= OUTPUT_MAX_CHARS:
        return text
    half = OUTPUT_MAX_CHARS // 2
    return text[:half] + f"\n[... {len(text) - 2 * half} characters left out ...]\n" + text[-half:]


def run(argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None, cwd: str | None = None,
        input_text: str | None = None, split: bool = False, stop: threading.Event | None = None) -> Proc:
    """Run ``argv``; never raises. The command leads its own process group, which is killed
    on timeout and by the run's signal handlers (it is in the kernel registry meanwhile)."""
    if stop is not None and stop.is_set():
        return Proc(argv, None, "", error="not started: the run was interrupted")
    try:
        p = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE if split else subprocess.STDOUT,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )
    except OSError as e:
        return Proc(argv, None, "", error=f"could not run {argv[0]}: {e.strerror or e}")
    REGISTRY.add(p.pid)
    timed_out = False
    deadline = time.monotonic() + timeout
    data = input_text.encode() if input_text is not None else None
    try:
        while True:
            try:
                out, err = p.communicate(input=data, timeout=max(0.01, min(0.5, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                data = None  # communicate() sends the input once
                stopped = stop is not None and stop.is_set()
                if stopped or time.monotonic() >= deadline:
                    timed_out = not stopped
                    kill_group(p.pid, signal.SIGKILL)
                    out, err = p.communicate()
                    if stopped:
                        return Proc(argv, p.returncode, _bounded(out.decode("utf-8", "replace")),
                                    error="killed: the run was interrupted")
                    break
    finally:
        kill_group(p.pid, signal.SIGKILL)  # whatever it left behind in its group
        REGISTRY.discard(p.pid)
    text = out.decode("utf-8", "replace")
    if split:
        err_text = (err or b"").decode("utf-8", "replace")
        return Proc(argv, p.returncode, _bounded(text + err_text), timed_out, stdout=text)
    return Proc(argv, p.returncode, _bounded(text), timed_out)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    env.setdefault("GPU_RUNNER", "1")
    return env

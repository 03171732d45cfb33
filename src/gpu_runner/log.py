"""A CI-aware logger: plain lines in logs, folded groups in GitHub Actions, rich on a terminal.

Notebooks run in parallel, so a notebook's lines are grouped where the CI folds them:
in GitHub Actions each notebook's log is one ``::group::``. With one job the group is
opened when the notebook starts and its cell lines stream into it live; with several
jobs a notebook's cell lines are held and the whole group is printed when it ends,
so groups never interleave, while the start and result lines appear live outside.

What a cell prints (stdout, stderr) is shown as it arrives, one console line per line of
output, prefixed by the notebook's name (``[entry: nb] out| ...``, ``err|`` for stderr):
with one job inside the notebook's group, with several jobs outside any group (each line
names its notebook, so interleaved lines stay readable; groups cannot nest or interleave:
https://github.com/actions/runner/issues/802, https://github.com/actions/runner/issues/1477).
It is bounded: a line is cut at :data:`LIVE_LINE_CHARS`, a notebook shows at most
``GPU_RUNNER_LIVE_OUTPUT`` characters (0: none) and at most :data:`LIVE_LINES_PER_S` lines a
second on average (bursts of :data:`LIVE_BURST` lines), and a progress bar redrawn with a
carriage return shows at most one state every :data:`LIVE_PROGRESS_S` seconds. What is left out is
counted on the console; the executed notebook keeps the output whatever the console showed.

Notebook names, error messages, check output and log.py text come from the code under test.
In GitHub Actions every such line goes through :func:`gpu_runner.github.workflow.safe_log`, so
the runner never takes one for a workflow command; only the logger's own commands (group,
warning, error, add-mask) are written as commands, with their data escaped.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from .github.workflow import escape_data, escape_property, in_github_actions, safe_log  # noqa: F401


def _fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m{s:02d}s"


LIVE_ENV = "GPU_RUNNER_LIVE_OUTPUT"
DEFAULT_LIVE_CHARS = 200_000
"""Characters of a notebook's cell output shown live on the console, at most."""
LIVE_LINE_CHARS = 1000
LIVE_LINES_PER_S = 20.0
LIVE_BURST = 200
LIVE_PROGRESS_S = 10.0


def live_budget() -> int:
    try:
        return max(0, int(float(os.environ.get(LIVE_ENV, DEFAULT_LIVE_CHARS))))
    except ValueError:
        return DEFAULT_LIVE_CHARS


class LiveOutput:
    """One notebook's cell output on its way to the console: whole lines, bounded (see the module)."""

    def __init__(self, budget: int, *, clock: Any = time.monotonic) -> None:
        self.budget = budget
        self.shown = 0
        self.clock = clock
        self.partial: dict[str, str] = {}
        self.tokens = float(LIVE_BURST)
        self.t_last = clock()
        self.t_progress = float("-inf")
        self.dropped_lines = 0
        self.exhausted = False

    def _allow(self) -> bool:
        now = self.clock()
        self.tokens = min(float(LIVE_BURST), self.tokens + (now - self.t_last) * LIVE_LINES_PER_S)
        self.t_last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def _line(self, stream: str, line: str, out: list[str]) -> None:
        if self.exhausted:
            return
        if len(line) > LIVE_LINE_CHARS:
            line = line[:LIVE_LINE_CHARS] + f" … [{len(line) - LIVE_LINE_CHARS:,} more characters]"
        if not self._allow():
            self.dropped_lines += 1
            return
        if self.dropped_lines:
            out.append(f"… [{self.dropped_lines:,} line(s) not shown: more than {LIVE_LINES_PER_S:g} a second; "
                       "the notebook keeps them]")
            self.dropped_lines = 0
        if self.shown + len(line) > self.budget:
            self.exhausted = True
            out.append(f"… [live output stops here: {self.shown:,} characters shown ({LIVE_ENV}={self.budget}); "
                       "the notebook keeps the rest]")
            return
        self.shown += len(line)
        out.append(("err| " if stream == "stderr" else "out| ") + line)

    def feed(self, stream: str, text: str) -> list[str]:
        """The console lines ``text`` completes (without the notebook's prefix)."""
        out: list[str] = []
        if self.budget <= 0:
            return out
        buf = self.partial.get(stream, "") + text.replace("\r\n", "\n")
        *lines, rest = buf.split("\n")
        for line in lines:
            self._line(stream, line.rsplit("\r", 1)[-1] if "\r" in line else line, out)
        if "\r" in rest:  # a progress bar: its latest state now and then
            done, rest = rest.rsplit("\r", 1)
            state = done.rsplit("\r", 1)[-1]
            now = self.clock()
            if state.strip() and now - self.t_progress >= LIVE_PROGRESS_S:
                self.t_progress = now
                self._line(stream, state, out)
        self.partial[stream] = rest[-4 * LIVE_LINE_CHARS:]
        return out

    def flush(self) -> list[str]:
        """The cell ended: its unfinished lines, and what was left out since the last line shown."""
        out: list[str] = []
        for stream, rest in list(self.partial.items()):
            if rest.strip():
                self._line(stream, rest, out)
        self.partial.clear()
        if self.dropped_lines and not self.exhausted:
            out.append(f"… [{self.dropped_lines:,} line(s) not shown: more than {LIVE_LINES_PER_S:g} a second; "
                       "the notebook keeps them]")
            self.dropped_lines = 0
        return out


class NotebookOutcome(Protocol):
    status: str
    duration_s: float


@dataclass
class _NbState:
    name: str
    started: float
    total_cells: int
    lines: list[str] = field(default_factory=list)
    task_id: Any = None
    live: LiveOutput | None = None


class Logger:
    """Where progress goes. Thread-safe; one instance per command."""

    def __init__(self, stream: IO[str] | None = None, *, github: bool = False, jobs: int = 1) -> None:
        self.stream = stream or sys.stdout
        self.github = github
        self.jobs = jobs
        self._lock = threading.RLock()
        self._nbs: dict[str, _NbState] = {}

    @staticmethod
    def for_environment(jobs: int = 1) -> Logger:
        if in_github_actions():
            return Logger(github=True, jobs=jobs)
        if sys.stdout.isatty() and os.environ.get("TERM") != "dumb" and not os.environ.get("CI"):
            return RichLogger(jobs=jobs)
        return Logger(jobs=jobs)

    # -- plain messages -----------------------------------------------------------------
    def _raw(self, text: str) -> None:
        with self._lock:
            self.stream.write(text if text.endswith("\n") else text + "\n")
            self.stream.flush()

    def _write(self, text: str) -> None:
        """Text, never read as a workflow command (see :func:`safe_log`)."""
        self._raw(safe_log(text, github=self.github))

    def _command(self, name: str, data: str = "") -> None:
        """One workflow command of ours, its data escaped (no newline can end it early)."""
        self._raw(f"::{name}::{escape_data(data)}")

    def info(self, message: str) -> None:
        self._write(message)

    def warning(self, message: str) -> None:
        if self.github:
            self._command("warning", message)
        else:
            self._write(f"warning: {message}")

    def error(self, message: str) -> None:
        if self.github:
            self._command("error", message)
        else:
            self._write(f"error: {message}")

    def mask(self, secret: str) -> None:
        """Ask GitHub Actions to hide ``secret`` in every later log line."""
        if self.github and secret:
            self._command("add-mask", secret)

    def group(self, title: str, body: str) -> None:
        """Print ``body`` folded under ``title`` (in GitHub Actions), as one block."""
        with self._lock:
            if self.github:
                self._command("group", title)
                self._write(body)
                self._command("endgroup")
            else:
                self._write(f"----- {title} -----")
                self._write(body)

    # -- notebook progress ----------------------------------------------------------------
    def set_total(self, total: int) -> None:
        """How many notebooks this run will execute (for progress displays)."""

    def notebook_started(self, name: str, detail: str, total_cells: int) -> None:
        with self._lock:
            st = _NbState(name, time.monotonic(), total_cells)
            self._nbs[name] = st
            if self.github and self.jobs == 1:
                self._command("group", name)
            self._write(f"[start] {name} ({detail})")

    def cell_output(self, name: str, stream: str, text: str) -> None:
        """Text a cell of notebook ``name`` just printed on ``stream``: shown live (see the module)."""
        with self._lock:
            st = self._nbs.get(name)
            if st is None:
                return
            if st.live is None:
                st.live = LiveOutput(live_budget())
            self._live_lines(name, st.live.feed(stream, text))

    def _live_lines(self, name: str, lines: list[str]) -> None:
        for line in lines:
            self._write(f"[{name}] {line}")

    def _flush_live(self, name: str) -> None:
        st = self._nbs.get(name)
        if st is not None and st.live is not None:
            self._live_lines(name, st.live.flush())

    def cell_finished(self, name: str, done: int, total: int, status: str, cell_s: float, label: str = "",
                      number: int | None = None) -> None:
        """``number``: the cell as every report names it (its position among all the notebook's
        cells, from 1); ``done``/``total``: progress over the code cells."""
        with self._lock:
            self._flush_live(name)
            st = self._nbs.get(name)
            elapsed = time.monotonic() - st.started if st else 0.0
            if number is None:
                line = f"[{name}] {label}cell {done}/{total} {status} in {_fmt_s(cell_s)} (elapsed {_fmt_s(elapsed)})"
            else:
                line = (f"[{name}] {label}cell {number} {status} in {_fmt_s(cell_s)} "
                        f"(code cell {done}/{total}, elapsed {_fmt_s(elapsed)})")
            if self.github and self.jobs > 1 and st is not None:
                st.lines.append(line)
            else:
                self._write(line)

    def notebook_finished(self, name: str, status: str, duration_s: float, message: str = "",
                          log_text: str | None = None, detail: str | None = None) -> None:
        """``detail``: shown under the result line (the end of a failure's traceback)."""
        with self._lock:
            self._flush_live(name)
            st = self._nbs.pop(name, None)
            tail = f": {message}" if message else ""
            result = f"[{status.upper()}] {name} in {_fmt_s(duration_s)}{tail}"
            if detail:
                result += "\n" + "\n".join(f"    {line}" for line in detail.splitlines())
            if self.github:
                if self.jobs == 1 and st is not None:
                    if log_text:
                        self._write(log_text)
                    self._command("endgroup")
                elif st is not None or log_text:
                    body = "\n".join([*(st.lines if st else []), *([log_text] if log_text else [])])
                    if body:
                        self.group(name, body)
            elif log_text:
                self.group(f"{name} (log.py)", log_text)
            self._write(result)

    def close(self) -> None:
        pass


class RichLogger(Logger):
    """A live progress display for people at a terminal."""

    def __init__(self, jobs: int = 1) -> None:
        super().__init__(stream=sys.stdout, github=False, jobs=jobs)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console()
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._overall = None

    def _write(self, text: str) -> None:
        with self._lock:
            self.console.print(text.rstrip("\n"), markup=False, highlight=False)

    def set_total(self, total: int) -> None:
        with self._lock:
            if self._overall is None:
                self.progress.start()
                self._overall = self.progress.add_task("notebooks", total=total)
            else:
                self.progress.update(self._overall, total=total)

    def notebook_started(self, name: str, detail: str, total_cells: int) -> None:
        with self._lock:
            st = _NbState(name, time.monotonic(), total_cells)
            st.task_id = self.progress.add_task(f"  {name}", total=max(total_cells, 1))
            self._nbs[name] = st

    def cell_finished(self, name: str, done: int, total: int, status: str, cell_s: float, label: str = "",
                      number: int | None = None) -> None:
        with self._lock:
            self._flush_live(name)
            st = self._nbs.get(name)
            if st is not None:
                self.progress.update(st.task_id, completed=done, total=max(total, 1),
                                     description=f"  {name} {label}".rstrip())

    def notebook_finished(self, name: str, status: str, duration_s: float, message: str = "",
                          log_text: str | None = None, detail: str | None = None) -> None:
        with self._lock:
            self._flush_live(name)
            st = self._nbs.pop(name, None)
            if st is not None:
                self.progress.remove_task(st.task_id)
            if self._overall is not None:
                self.progress.advance(self._overall)
            colour = {"passed": "green", "failed": "red", "skipped": "yellow"}.get(status, "white")
            tail = f": {message}" if message else ""
            if log_text:
                self.console.rule(f"{name} (log.py)")
                self.console.print(log_text, markup=False, highlight=False)
            from rich.markup import escape

            self.console.print(f"[{colour}]{status.upper():>7}[/] {escape(name)} in {_fmt_s(duration_s)}{escape(tail)}",
                               highlight=False)
            if detail:
                self.console.print("\n".join(f"        {line}" for line in detail.splitlines()), style="dim",
                                   markup=False, highlight=False)

    def close(self) -> None:
        with self._lock:
            if self._overall is not None:
                self.progress.stop()
                self._overall = None

"""A CI-aware logger: plain lines in logs, folded groups in GitHub Actions, rich on a terminal.

Notebooks run in parallel, so a notebook's lines are grouped where the CI folds them:
in GitHub Actions each notebook's log is one ``::group::``. With one job the group is
opened when the notebook starts and its cell lines stream into it live; with several
jobs a notebook's cell lines are held and the whole group is printed when it ends,
so groups never interleave, while the start and result lines appear live outside.

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

    def cell_finished(self, name: str, done: int, total: int, status: str, cell_s: float, label: str = "",
                      number: int | None = None) -> None:
        """``number``: the cell as every report names it (its position among all the notebook's
        cells, from 1); ``done``/``total``: progress over the code cells."""
        with self._lock:
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
            st = self._nbs.get(name)
            if st is not None:
                self.progress.update(st.task_id, completed=done, total=max(total, 1),
                                     description=f"  {name} {label}".rstrip())

    def notebook_finished(self, name: str, status: str, duration_s: float, message: str = "",
                          log_text: str | None = None, detail: str | None = None) -> None:
        with self._lock:
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

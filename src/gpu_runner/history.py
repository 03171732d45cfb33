"""Across runs, per notebook and machine: how often it passed, whether it is flaky, whether it got
slower or hungrier. A pure function of the runs' digests (:func:`gpu_runner.github.fetch.write_digest`).

* Pass rate: passed / (passed + failed); skipped, not run and unknown runs are not counted.
* Flaky: it both passed and failed on the same commit, or its outcomes alternate (passed then
  failed then passed, or the other way: at least two changes). One change is a regression or a
  fix, not flakiness.
* Trends (wall time, GPU peak memory): the median of the newer half of its runs against the
  median of the older half, over at least :data:`MIN_POINTS` runs; ``slower`` / ``more memory``
  from ``threshold`` (20 % by default) up, ``faster`` / ``less memory`` from the same ratio down.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MIN_POINTS = 4
DEFAULT_THRESHOLD = 0.2


@dataclass
class Point:
    run_id: int
    run_number: int | None
    head_sha: str | None
    created_at: str | None
    status: str
    duration_s: float | None
    gpu_peak_memory_mib: float | None


@dataclass
class Cell:
    notebook: str
    """The notebook's path, after its runtime where the entry names one (``runtime: path``)."""
    machine: str
    points: list[Point] = field(default_factory=list)
    """Oldest first."""
    passed: int = 0
    failed: int = 0
    pass_rate: float | None = None
    flaky: bool = False
    flaky_why: str | None = None
    time_trend: float | None = None
    """Newer half's median wall time over the older half's (1.3: 30 % slower)."""
    memory_trend: float | None = None
    marks: list[str] = field(default_factory=list)
    """``flaky``, ``slower``, ``faster``, ``more memory``, ``less memory``."""


def _ratio(values: Sequence[float | None]) -> float | None:
    xs = [v for v in values if isinstance(v, (int, float)) and v >= 0]
    if len(xs) < MIN_POINTS:
        return None
    half = len(xs) // 2
    old, new = statistics.median(xs[:half]), statistics.median(xs[len(xs) - half:])
    if old <= 0:
        return None
    return new / old


def _flaky(points: Sequence[Point]) -> str | None:
    by_sha: dict[str, set[str]] = {}
    for p in points:
        if p.head_sha and p.status in ("passed", "failed"):
            by_sha.setdefault(p.head_sha, set()).add(p.status)
    both = [sha for sha, s in by_sha.items() if len(s) == 2]
    if both:
        return f"passed and failed on the same commit ({both[0][:7]})"
    seq = [p.status for p in points if p.status in ("passed", "failed")]
    changes = sum(1 for a, b in zip(seq, seq[1:]) if a != b)
    if changes >= 2:
        return f"outcome changed {changes} times in {len(seq)} runs"
    return None


def compute(digests: Sequence[dict[str, Any]], *, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """The history of these runs (any order; shown oldest first) as a JSON-ready dict."""
    runs = sorted(digests, key=lambda d: ((d["run"].get("created_at") or ""), d["run"].get("id") or 0))
    cells: dict[tuple[str, str], Cell] = {}
    for d in runs:
        run = d["run"]
        for e in d.get("entries") or []:
            machine = e.get("machine") or e.get("id") or "?"
            for nb in e.get("notebooks") or []:
                row = f"{e['runtime']}: {nb['path']}" if e.get("runtime") else str(nb["path"])
                cell = cells.get((row, machine))
                if cell is None:
                    cell = cells[(row, machine)] = Cell(notebook=row, machine=machine)
                cell.points.append(Point(run_id=run["id"], run_number=run.get("run_number"),
                                         head_sha=run.get("head_sha"), created_at=run.get("created_at"),
                                         status=nb["status"], duration_s=nb.get("duration_s"),
                                         gpu_peak_memory_mib=nb.get("gpu_peak_memory_mib")))
    up = 1 + threshold
    for cell in cells.values():
        cell.passed = sum(1 for p in cell.points if p.status == "passed")
        cell.failed = sum(1 for p in cell.points if p.status == "failed")
        counted = cell.passed + cell.failed
        cell.pass_rate = cell.passed / counted if counted else None
        cell.flaky_why = _flaky(cell.points)
        cell.flaky = cell.flaky_why is not None
        # wall time of runs that went to the end: a failure at the first cell says nothing of speed
        cell.time_trend = _ratio([p.duration_s for p in cell.points if p.status == "passed"])
        cell.memory_trend = _ratio([p.gpu_peak_memory_mib for p in cell.points if p.status == "passed"])
        cell.marks = [m for m, on in (
            ("flaky", cell.flaky),
            ("slower", cell.time_trend is not None and cell.time_trend >= up),
            ("faster", cell.time_trend is not None and cell.time_trend <= 1 / up),
            ("more memory", cell.memory_trend is not None and cell.memory_trend >= up),
            ("less memory", cell.memory_trend is not None and cell.memory_trend <= 1 / up)) if on]
    notebooks = sorted({c.notebook for c in cells.values()})
    machines = sorted({c.machine for c in cells.values()})
    return {
        "history_version": 1,
        "threshold": threshold,
        "runs": [{"id": d["run"]["id"], "run_number": d["run"].get("run_number"),
                  "attempt": d["run"].get("attempt"), "head_branch": d["run"].get("head_branch"),
                  "head_sha": d["run"].get("head_sha"), "created_at": d["run"].get("created_at"),
                  "conclusion": d["run"].get("conclusion"), "html_url": d["run"].get("html_url"),
                  "folder": d.get("folder"), "dashboard": d.get("dashboard")} for d in runs],
        "notebooks": notebooks,
        "machines": machines,
        "cells": [asdict(c) for c in sorted(cells.values(), key=lambda c: (c.notebook, c.machine))],
    }


def run_summary(digest: dict[str, Any]) -> dict[str, Any]:
    """One run as ``gpu-runner runs`` lists it: the verdict per entry, counts, duration and cost."""
    entries = digest.get("entries") or []
    verdicts = {e["id"]: ("not run" if e["status"] == "not_run" else e["status"]) for e in entries}
    counts = {"passed": 0, "failed": 0, "skipped": 0, "total": 0}
    for e in entries:
        for k in counts:
            counts[k] += int((e.get("counts") or {}).get(k, 0))
    costs = [e.get("cost_usd") for e in entries if e.get("cost_usd") is not None]
    run = digest["run"]
    return {
        "id": run["id"], "run_number": run.get("run_number"), "attempt": run.get("attempt"),
        "head_branch": run.get("head_branch"), "head_sha": run.get("head_sha"), "event": run.get("event"),
        "created_at": run.get("created_at"), "conclusion": run.get("conclusion"), "html_url": run.get("html_url"),
        "duration_s": run.get("duration_s"),
        "cost_usd": round(sum(costs), 4) if costs else None,
        "entries": verdicts,
        "entry_counts": {w: sum(1 for v in verdicts.values() if v == w)
                         for w in ("passed", "failed", "not run", "skipped", "unknown")},
        "notebooks": counts,
    }


# -- a history.json as the report reads it: untrusted input, checked before anything is shown ---------
HISTORY_MAX_BYTES = 64 * 2**20
"""A larger file is refused: 1,000 runs of 400 notebook x machine cells stay well below it."""
_TEXT_MAX = 2000
_MARKS = ("flaky", "slower", "faster", "more memory", "less memory")
_STATUSES = ("passed", "failed", "skipped", "not_run", "unknown")


class HistoryError(ValueError):
    """A history.json the report will not use (one line: where and what)."""


@dataclass(frozen=True)
class Mark:
    """What the history says of one notebook on one machine, as the reports show it."""

    runs: int
    """Runs in the history with an outcome for it (passed or failed)."""
    failed: int
    flaky: bool = False
    flaky_why: str | None = None
    slower: float | None = None
    """The newer half's median wall time over the older half's, when the history marked it slower."""
    more_memory: float | None = None
    """Likewise for the GPU peak memory, when the history marked it."""

    @property
    def shown(self) -> bool:
        return self.flaky or self.slower is not None or self.more_memory is not None

    def words(self) -> list[str]:
        """``flaky: 3 of 10 runs failed (passed and failed on the same commit (abc1234))``,
        ``slower: wall time +45 %``, ``more GPU memory: +30 %``: plain text, for the caller to escape."""
        out = []
        if self.flaky:
            out.append(f"flaky: {self.failed} of {self.runs} runs failed" + (f" ({self.flaky_why})" if self.flaky_why
                                                                            else ""))
        if self.slower is not None:
            out.append(f"slower: wall time {(self.slower - 1) * 100:+.0f}%")
        if self.more_memory is not None:
            out.append(f"more GPU memory: {(self.more_memory - 1) * 100:+.0f}%")
        return out

    def properties(self) -> list[tuple[str, object]]:
        """JUnit properties: ``history_runs``, ``history_failed``, ``history_marks`` and the figures."""
        marks = [m for m, on in (("flaky", self.flaky), ("slower", self.slower is not None),
                                 ("more_memory", self.more_memory is not None)) if on]
        return [("history_runs", self.runs), ("history_failed", self.failed),
                ("history_flaky", "true" if self.flaky else None), ("history_flaky_why", self.flaky_why),
                ("history_duration_trend_pct", round((self.slower - 1) * 100, 1) if self.slower is not None else None),
                ("history_gpu_peak_memory_trend_pct",
                 round((self.more_memory - 1) * 100, 1) if self.more_memory is not None else None),
                ("history_marks", ",".join(marks))]


@dataclass(frozen=True)
class HistoryMarks:
    """The marks of a history, by (notebook row, machine) as :func:`compute` keys its cells; only the
    cells the history flagged flaky, slower or hungrier are kept."""

    runs: int
    marks: dict[tuple[str, str], Mark] = field(default_factory=dict)

    def of(self, runtime: str | None, machine: str | None, entry_id: str, path: str) -> Mark | None:
        """The mark of notebook ``path`` of an entry (its runtime, machine, id), or None."""
        row = f"{runtime}: {path}" if runtime else str(path)
        return self.marks.get((row, machine or entry_id or "?"))

    def __bool__(self) -> bool:
        return bool(self.marks)


def _bad(where: str, what: str) -> HistoryError:
    return HistoryError(f"{where}: {what}")


def _is_num(x: Any) -> bool:
    import math

    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 10**6


def _text(x: Any, *, none: bool = False) -> bool:
    return (none and x is None) or (isinstance(x, str) and 0 < len(x) <= _TEXT_MAX and "\x00" not in x)


def marks_from(doc: Any) -> HistoryMarks:
    """The marks of a history document (``gpu-runner history``'s JSON), checked as untrusted input:
    every field the reports use must have its type and range; anything else is a :class:`HistoryError`."""
    if not isinstance(doc, dict):
        raise _bad("history", "not a JSON object")
    if doc.get("history_version") != 1:
        raise _bad("history_version", f"{doc.get('history_version')!r} is not 1 (gpu-runner history writes 1)")
    runs, cells = doc.get("runs"), doc.get("cells")
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise _bad("runs", "not a list of objects")
    if not isinstance(cells, list):
        raise _bad("cells", "not a list")
    out: dict[tuple[str, str], Mark] = {}
    for i, c in enumerate(cells):
        at = f"cells[{i}]"
        if not isinstance(c, dict):
            raise _bad(at, "not an object")
        for key in ("notebook", "machine"):
            if not _text(c.get(key)):
                raise _bad(f"{at}.{key}", f"not a string of 1 to {_TEXT_MAX} characters")
        for key in ("passed", "failed"):
            if not _is_count(c.get(key)):
                raise _bad(f"{at}.{key}", "not a count")
        if c["passed"] + c["failed"] > len(runs):
            raise _bad(at, f"{c['passed'] + c['failed']} outcomes in a history of {len(runs)} runs")
        if not isinstance(c.get("flaky"), bool):
            raise _bad(f"{at}.flaky", "not true or false")
        if not _text(c.get("flaky_why"), none=True):
            raise _bad(f"{at}.flaky_why", f"not null or a string of 1 to {_TEXT_MAX} characters")
        marks = c.get("marks")
        if not isinstance(marks, list) or any(m not in _MARKS for m in marks) or len(set(marks)) != len(marks):
            raise _bad(f"{at}.marks", f"not a list of distinct marks among {', '.join(_MARKS)}")
        if ("flaky" in marks) != c["flaky"]:
            raise _bad(at, "'flaky' and the marks disagree")
        for key in ("time_trend", "memory_trend"):
            v = c.get(key)
            if v is not None and not (_is_num(v) and v > 0):
                raise _bad(f"{at}.{key}", "not null or a positive number")
        if "slower" in marks and c.get("time_trend") is None:
            raise _bad(at, "marked slower without a time_trend")
        if "more memory" in marks and c.get("memory_trend") is None:
            raise _bad(at, "marked 'more memory' without a memory_trend")
        points = c.get("points", [])
        if not isinstance(points, list) or any(not isinstance(p, dict) or p.get("status") not in _STATUSES
                                               for p in points):
            raise _bad(f"{at}.points", "not a list of runs with a known status")
        key = (c["notebook"], c["machine"])
        if key in out:
            raise _bad(at, "a second cell for the same notebook and machine")
        mark = Mark(runs=c["passed"] + c["failed"], failed=c["failed"], flaky=c["flaky"],
                    flaky_why=c["flaky_why"] if c["flaky"] else None,
                    slower=float(c["time_trend"]) if "slower" in marks else None,
                    more_memory=float(c["memory_trend"]) if "more memory" in marks else None)
        out[key] = mark
    return HistoryMarks(runs=len(runs), marks={k: m for k, m in out.items() if m.shown})


def read_history(path: Any) -> HistoryMarks:
    """The marks of the history.json at ``path`` (a plain file, at most :data:`HISTORY_MAX_BYTES`);
    :class:`HistoryError` (one line) when it cannot be read or is not a history."""
    import json
    import os
    import stat
    from pathlib import Path

    p = Path(path)
    try:  # a plain file, not through a link at its own name (it may sit in a folder others wrote)
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not hang the report
    except FileNotFoundError:
        raise HistoryError(f"{p}: no such file") from None
    except OSError as e:
        raise HistoryError(f"{p}: cannot be read: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise HistoryError(f"{p}: not a plain file")
        if st.st_size > HISTORY_MAX_BYTES:
            raise HistoryError(f"{p}: larger than {HISTORY_MAX_BYTES // 2**20} MiB")
        data = f.read(HISTORY_MAX_BYTES + 1)
    if len(data) > HISTORY_MAX_BYTES:
        raise HistoryError(f"{p}: larger than {HISTORY_MAX_BYTES // 2**20} MiB")

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise HistoryError(f"{p}: not JSON: {' '.join(str(e).split())[:200]}") from None
    try:
        return marks_from(doc)
    except HistoryError as e:
        raise HistoryError(f"{p}: {e}") from None

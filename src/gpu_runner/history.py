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

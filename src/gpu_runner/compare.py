"""This run against a baseline (a previous run's results): a pure function of two result models.

Each entry is matched by its id, each notebook by its path. For every notebook in both:

* **status**: ``newly_failing`` (failed now, not in the baseline), ``fixed`` (failed in the
  baseline, passed now), ``still_failing``, ``newly_skipped`` (passed in the baseline,
  skipped now), or ``same``;
* **figures** (only when it passed on both sides: a notebook that failed half-way is not
  faster): wall time, GPU peak memory and kernel peak RSS, each a :class:`Delta` that is a
  regression when it grew by more than both thresholds (percent and absolute), an
  improvement when it shrank by more than both, else unchanged.

Thresholds come from the current entry's results (``options.regression``, which ``run``
copies from the matrix), else :data:`DEFAULT_REGRESSION`. An entry or a
notebook on one side only is listed as such, never guessed at. Every figure read from a
results.json is checked (the baseline is a downloaded artifact: hostile input).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import first_line
from .results import RESULTS_FILE, EntryResult, NotebookResult, find_entry_dirs, load_results

DEFAULT_REGRESSION = {"time_percent": 20.0, "time_min": 5.0, "memory_percent": 10.0, "memory_min_mib": 256.0}
"""What counts as a regression (or an improvement) against the baseline, unless the matrix says
(the matrix model, :mod:`gpu_runner.config`, takes its defaults from here)."""

METRICS = ("duration_s", "gpu_peak_memory_mib", "peak_rss_mib")
METRIC_LABELS = {"duration_s": "wall time", "gpu_peak_memory_mib": "GPU peak memory", "peak_rss_mib": "kernel peak RSS"}
STATUS_CHANGES = ("newly_failing", "fixed", "still_failing", "newly_skipped", "same")


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) and x >= 0 else None


def thresholds_of(result: EntryResult) -> dict[str, float]:
    """The entry's regression thresholds: its recorded ones where valid, else the defaults."""
    out = dict(DEFAULT_REGRESSION)
    recorded = (result.options or {}).get("regression") if isinstance(result.options, dict) else None
    if isinstance(recorded, dict):
        for k in out:
            v = _num(recorded.get(k))
            if v is not None:
                out[k] = v
    return out


@dataclass
class Delta:
    """One figure of one notebook, baseline against this run."""

    metric: str
    before: float | None
    after: float | None
    verdict: str = "unchanged"
    """``regressed``, ``improved``, ``unchanged``, or ``unknown`` (a side has no figure)."""

    @property
    def change(self) -> float | None:
        return None if self.before is None or self.after is None else self.after - self.before

    @property
    def change_pct(self) -> float | None:
        if self.before is None or self.after is None or self.before == 0:
            return None
        return 100.0 * (self.after - self.before) / self.before

    @property
    def label(self) -> str:
        return METRIC_LABELS.get(self.metric, self.metric)


def judge(metric: str, before: float | None, after: float | None, th: dict[str, float]) -> Delta:
    """A regression when ``after`` exceeds ``before`` by more than both thresholds of the metric."""
    if before is None or after is None:
        return Delta(metric, before, after, "unknown")
    pct, minimum = ((th["time_percent"], th["time_min"]) if metric == "duration_s"
                    else (th["memory_percent"], th["memory_min_mib"]))
    grew, shrank = after - before, before - after
    if grew > minimum and after > before * (1 + pct / 100):
        return Delta(metric, before, after, "regressed")
    if shrank > minimum and after < before * (1 - pct / 100):
        return Delta(metric, before, after, "improved")
    return Delta(metric, before, after, "unchanged")


@dataclass
class NotebookComparison:
    path: str
    before_status: str | None
    """None: the notebook is not in the baseline's entry."""
    after_status: str | None
    """None: it was in the baseline but not in this run."""
    change: str = "same"
    deltas: list[Delta] = field(default_factory=list)

    @property
    def regressions(self) -> list[Delta]:
        return [d for d in self.deltas if d.verdict == "regressed"]

    @property
    def improvements(self) -> list[Delta]:
        return [d for d in self.deltas if d.verdict == "improved"]

    def delta(self, metric: str) -> Delta | None:
        return next((d for d in self.deltas if d.metric == metric), None)


@dataclass
class EntryComparison:
    entry_id: str
    presence: str
    """``both``, ``new`` (not in the baseline) or ``gone`` (in the baseline only)."""
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_REGRESSION))
    notebooks: list[NotebookComparison] = field(default_factory=list)

    def notebook(self, path: str) -> NotebookComparison | None:
        return next((n for n in self.notebooks if n.path == path), None)


@dataclass
class BaselineSource:
    """Where the baseline came from (``baseline.json`` that ``gpu-runner baseline fetch`` writes,
    or just the folder given)."""

    description: str = ""
    """For people: 'run #812 on main (3f2a1c9)', or the folder."""
    url: str | None = None
    run_id: int | None = None
    head_sha: str | None = None
    branch: str | None = None


@dataclass
class Comparison:
    """The whole comparison; ``available`` False (with ``reason``) when there is no baseline."""

    available: bool
    source: BaselineSource = field(default_factory=BaselineSource)
    reason: str = ""
    entries: list[EntryComparison] = field(default_factory=list)
    nothing_in_common: bool = False
    """There was a baseline, but not one notebook (entry id and notebook path) is on both
    sides: nothing could be compared (``available`` False, ``reason`` names both sides)."""

    def entry(self, entry_id: str) -> EntryComparison | None:
        return next((e for e in self.entries if e.entry_id == entry_id), None)

    def notebook(self, entry_id: str, path: str) -> NotebookComparison | None:
        e = self.entry(entry_id)
        return e.notebook(path) if e is not None else None

    def _pairs(self) -> list[tuple[EntryComparison, NotebookComparison]]:
        return [(e, n) for e in self.entries for n in e.notebooks]

    def with_change(self, change: str) -> list[tuple[EntryComparison, NotebookComparison]]:
        return [(e, n) for e, n in self._pairs() if n.change == change]

    def regressions(self) -> list[tuple[EntryComparison, NotebookComparison, Delta]]:
        return [(e, n, d) for e, n in self._pairs() for d in n.regressions]

    def improvements(self) -> list[tuple[EntryComparison, NotebookComparison, Delta]]:
        return [(e, n, d) for e, n in self._pairs() for d in n.improvements]

    def entries_only_in(self, side: str) -> list[EntryComparison]:
        """``new``: entries of this run the baseline lacks; ``gone``: the other way."""
        return [e for e in self.entries if e.presence == side]

    def notebooks_only_in(self, side: str) -> list[tuple[EntryComparison, NotebookComparison]]:
        """Notebooks of entries on both sides that one side lacks (``new`` or ``gone``)."""
        key = "before_status" if side == "new" else "after_status"
        return [(e, n) for e, n in self._pairs() if e.presence == "both" and getattr(n, key) is None]

    def counts(self) -> dict[str, int]:
        return {"newly_failing": len(self.with_change("newly_failing")), "fixed": len(self.with_change("fixed")),
                "regressions": len(self.regressions()), "improvements": len(self.improvements())}


def _status(nb: NotebookResult) -> str:
    s = nb.status
    return s if isinstance(s, str) else "unknown"


def _change(before: str, after: str) -> str:
    if after == "failed":
        return "still_failing" if before == "failed" else "newly_failing"
    if before == "failed":
        return "fixed" if after == "passed" else "same"
    if before == "passed" and after == "skipped":
        return "newly_skipped"
    return "same"


def compare_notebook(before: NotebookResult, after: NotebookResult, th: dict[str, float]) -> NotebookComparison:
    b, a = _status(before), _status(after)
    nc = NotebookComparison(path=after.path, before_status=b, after_status=a, change=_change(b, a))
    if b == "passed" and a == "passed":
        nc.deltas = [judge(m, _num(getattr(before, m, None)), _num(getattr(after, m, None)), th) for m in METRICS]
    return nc


def compare(results: list[EntryResult], baseline: list[EntryResult], *,
            source: BaselineSource | None = None) -> Comparison:
    """This run's entries against the baseline's, notebook by notebook."""
    by_id: dict[str, EntryResult] = {}
    for r in baseline:
        eid = getattr(r.entry, "id", None)
        if isinstance(eid, str) and eid not in by_id:
            by_id[eid] = r
    comp = Comparison(available=True, source=source or BaselineSource())
    seen: set[str] = set()
    for r in results:
        eid = r.entry.id
        seen.add(eid)
        th = thresholds_of(r)
        old = by_id.get(eid)
        if old is None:
            comp.entries.append(EntryComparison(eid, "new", th, [
                NotebookComparison(nb.path, None, _status(nb), "same") for nb in r.notebooks]))
            continue
        olds = {nb.path: nb for nb in old.notebooks if isinstance(getattr(nb, "path", None), str)}
        ec = EntryComparison(eid, "both", th)
        for nb in r.notebooks:
            prev = olds.pop(nb.path, None)
            ec.notebooks.append(compare_notebook(prev, nb, th) if prev is not None
                                else NotebookComparison(nb.path, None, _status(nb), "same"))
        ec.notebooks += [NotebookComparison(path, _status(nb), None, "same") for path, nb in olds.items()]
        comp.entries.append(ec)
    for eid, old in by_id.items():
        if eid not in seen:
            comp.entries.append(EntryComparison(eid, "gone", thresholds_of(old), [
                NotebookComparison(nb.path, _status(nb), None, "same") for nb in old.notebooks
                if isinstance(getattr(nb, "path", None), str)]))
    if not any(n.before_status is not None and n.after_status is not None for _, n in comp._pairs()):
        comp.available, comp.nothing_in_common = False, True
        comp.reason = ("not one notebook is in both this run and the baseline (by entry id and notebook path): "
                       f"this run has {_names(comp, 'after_status')}; the baseline has {_names(comp, 'before_status')}")
    return comp


def _names(comp: Comparison, side: str, limit: int = 5) -> str:
    """Some notebooks of one side, ``entry: path``, for saying why nothing was compared."""
    names = [f"{e.entry_id}: {n.path}" for e, n in comp._pairs() if getattr(n, side) is not None]
    if not names:
        return "no notebook"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def unavailable(reason: str, source: BaselineSource | None = None) -> Comparison:
    return Comparison(available=False, reason=reason, source=source or BaselineSource())


# -- the baseline folder -------------------------------------------------------------------------
BASELINE_FILE = "baseline.json"
"""What ``gpu-runner baseline fetch`` writes next to the entry folders it extracted: where
they came from (``found``, ``reason``, ``run_id``, ``html_url``, ``head_sha``, ``head_branch``,
``event``, ``created_at``, ``description``)."""


def read_source(folder: Path) -> tuple[BaselineSource, str | None]:
    """Where the baseline in ``folder`` came from, and why there is none when the fetch said so."""
    path = folder / BASELINE_FILE
    src = BaselineSource(description=str(folder))
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict):
        return src, None

    def text(key: str, limit: int = 300) -> str | None:
        v = data.get(key)
        return " ".join(v.split())[:limit] if isinstance(v, str) and v.strip() else None

    run_id = data.get("run_id")
    src = BaselineSource(description=text("description") or str(folder),
                         url=u if (u := text("html_url", 2000)) and u.startswith("https://") else None,
                         run_id=run_id if isinstance(run_id, int) and not isinstance(run_id, bool) else None,
                         head_sha=text("head_sha", 64), branch=text("head_branch"))
    if data.get("found") is False:
        return src, text("reason", 500) or "the fetch found none"
    return src, None


def load_baseline(folder: Path, results: list[EntryResult], *, warn: Any = None) -> Comparison:
    """The comparison of ``results`` with the entry folders under ``folder`` (every
    ``results.json`` below it). No results.json, or a fetch that found none, is a Comparison
    with ``available`` False and the reason; an unreadable results.json is warned about and
    left out."""
    folder = Path(folder)
    src, none_reason = read_source(folder)
    if none_reason is not None:
        return unavailable(none_reason, src)
    entries: list[EntryResult] = []
    for d in find_entry_dirs(folder):
        try:
            entries.append(load_results(d))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            if warn is not None:
                warn(f"baseline {d / RESULTS_FILE}: not a results.json this version can read ({first_line(e)[:200]}); "
                     "left out of the comparison")
    if not entries:
        return unavailable(f"no readable results.json under {folder}", src)
    return compare(results, entries, source=src)


def to_dict(comp: Comparison) -> dict[str, Any]:
    """comparison.json: the whole comparison, with each change's verdict, for machines."""
    d = asdict(comp)
    d["counts"] = comp.counts() if comp.available else None
    return d

"""What the reports show: every planned entry once, from its results, its tries and the plan.

The inputs of ``gpu-runner report`` in a workflow run are the artifacts of many jobs: each
try's run job uploads its entry folder (``results.json`` ...), and each try's stop job uploads a
:class:`~gpu_runner.results.TryRecord` (``gpu-runner-try.json``) saying how that try went. With
the plan (the plan job's matrix JSON) this module decides, per entry:

* the results of its last try are the entry's result; the results of earlier tries (a Spot VM
  preempted mid-run) are kept beside it, marked, and never counted;
* an entry whose last try has no results, or was preempted too, is ``not_run`` with the reason
  the records give ("no capacity for ...", "runner never came online", "cancelled",
  "preempted twice");
* an entry of the plan with neither results nor records is ``not_run`` too;
* "Re-run failed jobs" makes a new attempt of the same workflow run, whose artifacts sit beside
  the earlier attempts' (their names carry the attempt, ``gpu-runner-<id>.attempt-<A>...``): an
  entry's results and records are those of the latest attempt that has any of its artifacts, and
  the report says which earlier attempts' it left out. An entry no job of the re-run touched keeps
  its earlier attempt's.

Without a plan and without records (``gpu-runner run``, or ``report`` on a local results
folder) every entry folder is shown as it is, in the order given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cost.usage import cost_of
from ..errors import ConfigError
from .untrusted import read_text
from ..results import (
    TRY_FILE,
    EntryInfo,
    EntryResult,
    TryInfo,
    TryRecord,
    artifact_attempt,
    not_run_result,
    parse_artifact_name,
)

NO_RESULTS = "no results: its jobs did not run or uploaded nothing (the workflow was cancelled, or a job failed " \
             "before gpu-runner ran; see the run's log)"


@dataclass
class ShownEntry:
    """One entry as the reports show it: the model, where its folder is (None for an entry
    that did not run), the partial results of earlier tries (preempted), oldest first, and its name."""

    result: EntryResult
    entry_dir: Path | None
    earlier: list[ShownEntry] = field(default_factory=list)
    name: str = ""
    """How the reports name it: its id, or where ids repeat (runs of plain paths, all ``local``,
    merged with ``report``) its folder: ``run-a/local``. See :func:`gpu_runner.report.dashboard.name_entries`."""

    def __post_init__(self) -> None:
        self.name = self.name or self.result.entry.id


@dataclass
class Collected:
    entries: list[ShownEntry]
    unreadable: list[str] = field(default_factory=list)
    """Files that could not be read (each also warned about)."""


def read_plan(path: Path) -> list[dict[str, Any]]:
    """The plan job's matrix JSON (``{"include": [...]}``, or the list itself) as entry items."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (give the plan job's matrix JSON)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not the plan's JSON: {e}") from None
    items = data.get("include") if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("id"), str) for i in items):
        raise ConfigError(f"{path}: not the plan's JSON: expected {{\"include\": [{{\"id\": ...}}, ...]}} as "
                          "`gpu-runner plan --format json` writes it")
    return items


def _info_from_plan(item: dict[str, Any]) -> EntryInfo:
    provider = str(item.get("provider") or "local")

    def text(key: str) -> str | None:
        v = item.get(key)
        return str(v) if isinstance(v, (str, int)) and str(v) else None

    return EntryInfo(id=str(item["id"]), runtime=text("runtime"), machine=text("machine"),
                     label=text("label") if provider != "local" else None, provider=provider,
                     ran_locally=provider == "local")


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _why_no_results(rec: TryRecord | None) -> str:
    if rec is None:
        return NO_RESULTS
    if rec.error and rec.error.startswith("hijack:"):  # stop saw another run's job on the entry's runner
        return rec.error
    outcome = rec.outcome
    if outcome == "cancelled":
        return "cancelled"
    if outcome == "not_started":
        if rec.error:
            return rec.error
        return "the start job failed before it could say why (see its log)"
    if rec.run == "failure":
        return "the run job failed before it wrote any results (see its log)"
    if rec.run == "success":
        return "the run job passed but uploaded no results"
    return NO_RESULTS


def collect(entry_dirs: Sequence[Path], *, records: Sequence[Path] = (), plan: Sequence[dict[str, Any]] | None = None,
            warn: Callable[[str], None] = lambda _m: None, artifacts: bool = False) -> Collected:
    """Every entry to show, in plan order (entries not in the plan after, in folder order).

    ``artifacts``: the inputs are the report job's downloads (see :func:`artifact_layout`); a
    results.json or record whose entry and try are not those its artifact's name says is ignored."""
    out = Collected(entries=[])

    def read(paths: Sequence[Path], load: Callable[[Path], Any], file_of: Callable[[Path], Path],
             says: Callable[[Any], tuple[str, int]]) -> list[tuple[Any, Path]]:
        """Each readable one (an entry folder, a record) with its path; with ``artifacts``, only
        those whose artifact (the folder they are in) is their entry's and try's."""
        kept = []
        for p in paths:
            try:
                item = load(Path(p))
            except ConfigError as e:
                warn(str(e))
                out.unreadable.append(str(p))
                continue
            eid, retry = says(item)
            if artifacts and _artifact_of(Path(p).parent) != (eid, retry):
                warn(f"{file_of(p)}: ignored: it says entry {eid} (try {retry + 1}), its artifact "
                     f"{Path(p).parent.name} is another's")
                continue
            kept.append((item, Path(p)))
        return kept

    loaded: list[tuple[EntryResult, Path]] = read(entry_dirs, load_entry_result, lambda d: Path(d) / "results.json",
                                                  lambda r: (r.entry.id, r.entry.retry))
    read_records = read(records, load_record, lambda f: f, lambda rec: (rec.entry_id, rec.retry))
    if artifacts:
        loaded, read_records = _latest_attempt(loaded, read_records, warn)
    tries: dict[tuple[str, int], TryRecord] = {(rec.entry_id, rec.retry): rec for rec, _f in read_records}

    for r, _d in loaded:  # what a VM cost is what its stop job recorded, never what a results.json says
        r.cost = None
    if plan is None and not tries:
        out.entries = [ShownEntry(r, d) for r, d in loaded]
        return out

    by_id: dict[str, list[tuple[EntryResult, Path]]] = {}
    for r, d in loaded:
        by_id.setdefault(r.entry.id, []).append((r, d))
    order = [str(i["id"]) for i in plan or []]
    planned = {str(i["id"]): i for i in plan or []}
    for eid in [*by_id, *(k[0] for k in tries)]:
        if eid not in order:
            order.append(eid)

    for eid in dict.fromkeys(order):
        results = sorted(by_id.get(eid, []), key=lambda rd: rd[0].entry.retry)
        recs = sorted((r for (i, _n), r in tries.items() if i == eid), key=lambda r: r.retry)
        last = max([r.entry.retry for r, _ in results] + [r.retry for r in recs], default=0)
        last_rec = next((r for r in recs if r.retry == last), None)
        infos = [r.to_info() for r in recs]
        final = [(r, d) for r, d in results if r.entry.retry == last]
        earlier = [ShownEntry(r, d) for r, d in results if r.entry.retry < last]
        preempted_last = last_rec is not None and last_rec.outcome == "preempted"
        cost = cost_of(r.vm for r in recs if r.vm is not None)  # every try's VM: a retried entry pays twice
        if final and not preempted_last:
            for r, d in final:
                if len(infos) > 1 or (infos and infos[-1].outcome != "ran"):
                    r.tries = infos
                r.cost = cost
                out.entries.append(ShownEntry(r, d, earlier))
            continue
        # nothing of the last try to show: the entry did not run
        earlier += [ShownEntry(r, d) for r, d in final]
        if final or results:
            info = (final or results)[-1][0].entry
        elif eid in planned:
            info = _info_from_plan(planned[eid])
        else:
            info = EntryInfo(id=eid, label=last_rec.label if last_rec else None, provider="gce", ran_locally=False)
        if last_rec is not None and info.label is None:
            info.label = last_rec.label
        info.retry = last
        preempted = [r for r in recs if r.outcome == "preempted"]
        if preempted_last:
            assert last_rec is not None
            if last_rec.will_retry:
                reason = "preempted; its retry did not run (the workflow was cancelled?)"
            elif len(preempted) == 1:
                reason = "preempted (no retry: the machine's retries.preempted is 0)"
            else:
                reason = f"preempted {_times(len(preempted))}"
        else:
            reason = _why_no_results(last_rec)
            if preempted:
                reason = f"{reason} (after {len(preempted)} preempted tr{'y' if len(preempted) == 1 else 'ies'})"
        shown = not_run_result(info, reason, tries=infos)
        shown.cost = cost
        out.entries.append(ShownEntry(shown, None, earlier))
    return out


def _latest_attempt(loaded: list[tuple[EntryResult, Path]], records: list[tuple[TryRecord, Path]],
                    warn: Callable[[str], None]) -> tuple[list[tuple[EntryResult, Path]], list[tuple[TryRecord, Path]]]:
    """Per entry, only the results and records of the latest run attempt that has any (each one's
    attempt is its artifact's, the folder it was downloaded into); says which attempts it left out."""
    def attempt(path: Path) -> int:
        return artifact_attempt(path.parent.name)

    loaded, records = _without_shadows(loaded, records, warn)
    latest: dict[str, int] = {}
    for r, d in loaded:
        latest[r.entry.id] = max(latest.get(r.entry.id, 0), attempt(d))
    for rec, f in records:
        latest[rec.entry_id] = max(latest.get(rec.entry_id, 0), attempt(f))
    left: dict[str, set[int]] = {}
    for eid, a in [(r.entry.id, attempt(d)) for r, d in loaded] + [(rec.entry_id, attempt(f)) for rec, f in records]:
        if a < latest[eid]:
            left.setdefault(eid, set()).add(a)
    for eid, old in left.items():
        earlier = ", ".join(str(a) for a in sorted(old))
        warn(f"{eid}: reported from attempt {latest[eid]} of this run (re-run); the results and records of "
             f"attempt{'s' if len(old) > 1 else ''} {earlier} are left out")
    return ([(r, d) for r, d in loaded if attempt(d) == latest[r.entry.id]],
            [(rec, f) for rec, f in records if attempt(f) == latest[rec.entry_id]])


def _without_shadows(loaded: list[tuple[EntryResult, Path]], records: list[tuple[TryRecord, Path]],
                     warn: Callable[[str], None]) -> tuple[list[tuple[EntryResult, Path]], list[tuple[TryRecord, Path]]]:
    """Leave out an artifact named as an older version named them (no ``.attempt-<A>``) where this
    version's own name for the same entry, try and kind is there too. The workflow names every
    artifact with its attempt; any step of a run job may upload any name first, so a second,
    older-style name beside the real one is a plant (a record saying "preempted" to turn a failure
    into "not run"), never the job's own."""
    def key(path: Path, kind: str) -> tuple[str, int, str] | None:
        parsed = parse_artifact_name(path.parent.name)
        return (parsed[0], parsed[1], kind) if parsed else None

    def explicit(path: Path) -> bool:
        return ".attempt-" in path.parent.name

    named = {key(d, "results") for _r, d in loaded if explicit(d)} | {key(f, "record") for _r, f in records
                                                                     if explicit(f)}

    def keep(path: Path, kind: str) -> bool:
        if explicit(path) or key(path, kind) not in named:
            return True
        warn(f"{path.parent.name}: left out: an artifact without the run attempt in its name, beside this "
             "version's own for the same entry and try (a run job may upload any name)")
        return False

    return [(r, d) for r, d in loaded if keep(d, "results")], [(r, f) for r, f in records if keep(f, "record")]


def load_record(path: Path) -> TryRecord:
    """A try's record (``gpu-runner-try.json``); one that is not valid is a ConfigError naming it."""
    try:
        return TryRecord.from_dict(json.loads(read_text(path)))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError, TypeError, RecursionError) as e:
        raise ConfigError(f"{path}: not a {TRY_FILE} this version can read: {e}") from None




def artifact_layout(entry_dirs: Sequence[Path], records: Sequence[Path], *, roots: Sequence[Path],
                    plan: Sequence[dict[str, Any]]) -> tuple[list[Path], list[Path], list[str]]:
    """What the report job may trust of its downloads (one folder per artifact): a results.json
    only at ``<root>/gpu-runner-<id>[.attempt-A][.retry-N]/<id>/results.json`` and a record only at
    ``<root>/gpu-runner-<id>[.attempt-A][.retry-N].record/gpu-runner-try.json``, for an entry of the plan.
    The code under test writes what its run job uploads, so a file anywhere else (another
    entry's name, a record inside a results artifact) speaks for nothing. Returns the entry
    folders and records kept, and why each other one was ignored."""
    planned = {str(i["id"]) for i in plan}
    resolved = [Path(r).resolve() for r in roots]

    def where(path: Path) -> tuple[str, ...] | None:
        p = path.resolve()
        for root in resolved:
            if p.is_relative_to(root):
                return p.relative_to(root).parts
        return None

    kept_dirs: list[Path] = []
    kept_records: list[Path] = []
    ignored: list[str] = []
    for d in entry_dirs:
        parts = where(Path(d) / "results.json")
        a = parse_artifact_name(parts[0]) if parts and len(parts) == 3 else None
        if a is None or a[2] or parts[1] != a[0] or a[0] not in planned:
            ignored.append(f"{Path(d) / 'results.json'}: not where the run job of an entry of the plan puts its "
                           "results (gpu-runner-<id>[.retry-N]/<id>/results.json)")
            continue
        kept_dirs.append(Path(d))
    for f in records:
        parts = where(Path(f))
        a = parse_artifact_name(parts[0]) if parts and len(parts) == 2 else None
        if a is None or not a[2] or a[0] not in planned:
            ignored.append(f"{f}: not where the stop job of an entry of the plan puts its record "
                           f"(gpu-runner-<id>[.retry-N].record/{TRY_FILE})")
            continue
        kept_records.append(Path(f))
    return kept_dirs, kept_records, ignored


def _artifact_of(folder: Path) -> tuple[str, int] | None:
    a = parse_artifact_name(folder.name)
    return (a[0], a[1]) if a else None


def load_entry_result(entry_dir: Path) -> EntryResult:
    """results.json of an entry folder; a file this version cannot read is a ConfigError naming it."""
    path = Path(entry_dir) / "results.json"
    try:
        return EntryResult.from_dict(json.loads(read_text(path)))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no results.json here") from None
    except (OSError, ValueError, TypeError, KeyError, RecursionError) as e:
        raise ConfigError(f"{path}: not a results.json this version can read: {e}") from None


def describe_tries(tries: Sequence[TryInfo], status: str) -> str:
    """One phrase for an entry tried more than once, e.g. "preempted, passed on the retry (STANDARD)"."""
    if len(tries) < 2 and not (tries and tries[-1].outcome == "preempted"):
        return ""
    preempted = sum(1 for t in tries if t.outcome == "preempted")
    if status == "not_run":
        return f"{len(tries)} tr{'y' if len(tries) == 1 else 'ies'}, {preempted} preempted" if len(tries) > 1 else ""
    last = tries[-1]
    model = f" ({last.provisioning_model})" if last.provisioning_model else ""
    word = {"passed": "passed", "failed": "failed", "skipped": "skipped"}.get(status, status)
    which = "the retry" if len(tries) == 2 else f"try {len(tries)}"
    head = "preempted" if preempted == 1 else f"preempted {_times(preempted)}"
    return f"{head}, {word} on {which}{model}"

"""The one result model: entry -> system checks + notebooks -> cells.

Defined once, serialised once (``results.json``, versioned by ``schema_version``).
Every report (JUnit, summary, dashboard, comment, annotations) is a pure function
of :class:`EntryResult`; no report re-reads an executed notebook to learn what
happened.

Layout of one entry folder (a contract the reports, the action and the dashboard
rely on)::

    OUT/<entry-id>/
        results.json
        notebooks/<notebook path without .ipynb>/
            output.ipynb  metrics.json  params.json  log.py  artifacts/

Every path stored in the model is relative to the entry folder and uses ``/``.

A results.json is read only through :meth:`EntryResult.from_dict`, which first checks it against
``results.schema.json`` (it may have been written by the code under test). That schema is
generated from these dataclasses: after changing them, run
``python -m gpu_runner.results_schema --write-schema``.

An entry of the plan that ran nothing (no capacity, a runner that never came online, a
cancelled job, a VM preempted on every try) has the status ``not_run`` and a ``reason``; the
reports build it from the plan and the small :class:`TryRecord` files (``gpu-runner-try.json``)
that each try's ``stop`` writes. An entry tried more than once (a preempted Spot VM is retried)
lists its tries in ``tries``; only the last try's notebooks count.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from .files import write_json_atomic

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"

Status = Literal["passed", "failed", "skipped"]
EntryStatus = Literal["passed", "failed", "skipped", "not_run"]
ENTRY_STATUSES: tuple[str, ...] = ("passed", "failed", "skipped", "not_run")
"""``not_run``: the entry was planned but none of its notebooks or checks ran (see ``reason``)."""
TRY_FILE = "gpu-runner-try.json"
JOB_RESULTS = ("", "success", "failure", "cancelled", "skipped")
ENTRY_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
"""An entry id as the plan makes it (lower case, digits and '-'; at most 40 in practice)."""
FailureKind = Literal["error", "timeout", "kernel_died", "rerun_error", "setup_error", "interrupted", "check_failed"]
FAILURE_KINDS: tuple[str, ...] = (
    "error", "timeout", "kernel_died", "rerun_error", "setup_error", "interrupted", "check_failed",
)
"""``interrupted``: gpu-runner itself was stopped (SIGINT/SIGTERM) while the notebook ran."""


@dataclass
class Failure:
    """Why a notebook (or a check) failed.

    ``cell_index`` is the 0-based index of the failing cell in the executed notebook's
    ``cells`` list (markdown and the injected-parameters cell included); every log line,
    report and HTML anchor shows ``cell_number`` = ``cell_index + 1`` ("cell 4"), and
    results.json carries both (see :data:`CELL_NUMBERING`). ``source_line`` is the 1-based line of the ``.ipynb``
    file that holds the failing statement (``cell_line``, from the traceback), else the line where
    the cell's ``source`` starts, so annotations land on it in GitHub's file view. ``cell_line``
    is that statement's line within the cell (1-based; None when the traceback names none: a
    timeout before the cell's code ran, a dead kernel); ``log_py_line`` the same line in log.py
    (the jupytext view, with ``--log py``).
    """

    kind: str
    message: str
    cell_index: int | None = None
    source_line: int | None = None
    cell_line: int | None = None
    log_py_line: int | None = None
    ename: str | None = None
    evalue: str | None = None
    traceback: str | None = None
    output_tail: str | None = None
    signal: str | None = None
    exit_code: int | None = None
    timeout_s: float | None = None

    @property
    def cell_number(self) -> int | None:
        return None if self.cell_index is None else self.cell_index + 1


@dataclass
class CellResult:
    """One code cell. ``status`` is ``not_run`` for cells after a failure. ``index`` as
    :attr:`Failure.cell_index`: people read ``index + 1`` (``number`` in results.json)."""

    index: int
    status: Literal["passed", "failed", "skipped", "not_run"]
    duration_s: float | None = None
    execution_count: int | None = None
    gpu_peak_memory_mib: float | None = None
    """The notebook's GPU memory (its scope, see :attr:`Timeline.gpu_scope`) at its highest
    while this cell ran, its end included; None without a GPU or for a cell that did not run.
    With ``--rerun``, the higher of the two passes."""
    peak_rss_mib: float | None = None
    """The kernel's resident memory (its process tree) at its highest while this cell ran."""


@dataclass
class DeviceSeries:
    """One GPU over a notebook's run: memory in use on the device and its utilisation."""

    index: int
    memory_used_mib: list[float | None] = field(default_factory=list)
    utilization_pct: list[float | None] = field(default_factory=list)


@dataclass
class CellSpan:
    """When a cell ran, in seconds from the start of the notebook's execution."""

    index: int
    start_s: float
    end_s: float
    rerun: bool = False


@dataclass
class Timeline:
    """A notebook's resource use over time, bounded (at most a few hundred points).

    Point ``i`` covers ``t_s[i]`` to ``t_s[i] + interval_s``: the memory figures are the
    peaks over that stretch (downsampling keeps the peaks), the utilisation its mean.
    ``gpu_memory_mib`` is the notebook's own GPU memory in ``gpu_scope``: ``process`` (its
    kernel's processes, as NVML lists them) or ``device`` (everything on its GPUs); None
    without a GPU. ``cells`` says when each cell ran (twice each with ``--rerun``).
    """

    t_s: list[float] = field(default_factory=list)
    rss_mib: list[float | None] = field(default_factory=list)
    interval_s: float = 0.0
    gpu_scope: str | None = None
    gpu_memory_mib: list[float | None] | None = None
    devices: list[DeviceSeries] = field(default_factory=list)
    cells: list[CellSpan] = field(default_factory=list)


@dataclass
class RerunResult:
    """The second pass through all cells in the same kernel (``--rerun``)."""

    status: Status
    duration_s: float


@dataclass
class NotebookResult:
    path: str
    """The notebook as a reader names it: relative to the working directory when it lies
    under it (so, in CI, repo-relative), else relative to the directory given on the
    command line."""
    dir: str
    """Its output folder, relative to the entry folder: ``notebooks/<path without .ipynb>``."""
    status: Status
    duration_s: float
    failure: Failure | None = None
    skip_reason: str | None = None
    kernel: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    cells: list[CellResult] = field(default_factory=list)
    rerun: RerunResult | None = None
    started_at: str | None = None
    finished_at: str | None = None
    peak_rss_mib: float | None = None
    gpu_peak_memory_mib: float | None = None
    gpu_mean_utilization_pct: float | None = None
    timeline: Timeline | None = None
    """Memory and utilisation over time (also in the notebook's metrics.json)."""
    files: dict[str, Any] = field(default_factory=dict)
    """What was written, relative to the entry folder: ``ipynb``, ``metrics``, ``params``,
    ``log_py`` (str or absent), ``artifacts`` (list of str). Reports add ``html``/``pdf``."""


@dataclass
class CheckResult:
    """One system check (``gpu``, ``cuda``, ``compilers``, ... or a user check)."""

    name: str
    status: Status
    duration_s: float
    summary: str = ""
    failure: Failure | None = None
    skip_reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)


@dataclass
class EntryInfo:
    """Which matrix entry this is. ``id`` is ``local`` for a run without a matrix."""

    id: str
    runtime: str | None = None
    machine: str | None = None
    label: str | None = None
    provider: str = "local"
    ran_locally: bool = True
    """True when the notebooks ran on this machine (the local provider, or ``--local`` for a
    cloud entry); the reports mark cloud entries that ran locally as such."""
    matrix_position: list[int] | None = None
    """[runtime index, machine index] in the matrix file (None without a matrix): the dashboard's
    grid, its entry list and the summary follow the matrix's order."""
    retry: int = 0
    """0 for the entry's first try; 1, 2 for the tries after its VM was preempted."""


@dataclass
class VmUse:
    """One VM an entry ran on (one try), how long it lived and what it cost: an estimate.

    ``lifetime_s`` is created -> deleted (the boot disk is billed for all of it); ``running_s``
    the part of it the VM was not powered off (its vCPUs, memory and GPUs are billed for that).
    The cost is ``parts_usd_per_hour`` (``machine``, ``gpu``) x running hours + ``disk`` x lifetime
    hours, or ``usd_per_hour`` x lifetime hours for a price given whole (the matrix's)."""

    name: str
    retry: int = 0
    zone: str | None = None
    region: str | None = None
    machine_type: str | None = None
    accelerator_type: str | None = None
    accelerator_count: int = 0
    provisioning_model: str | None = None
    """``SPOT`` or ``STANDARD``."""
    disk_type: str | None = None
    disk_size_gb: int | None = None
    created_at: str | None = None
    """RFC 3339: when Compute Engine created the VM."""
    deleted_at: str | None = None
    """RFC 3339: when it was deleted (or, held for a look, when its hold ends)."""
    lifetime_s: float | None = None
    running_s: float | None = None
    timed_by: str | None = None
    """Where the times come from: ``stop`` (the VM as stop found and deleted it), ``operations``
    (the VM's own insert and delete or preemption operations, when it was gone before stop),
    ``hold`` (held for a look: counted to the end of its hold)."""
    usd_per_hour: float | None = None
    parts_usd_per_hour: dict[str, float] = field(default_factory=dict)
    price_source: str | None = None
    """``matrix``, ``billing-catalog`` or ``table``."""
    price_as_of: str | None = None
    usd: float | None = None
    """The estimate for this VM; None when its price or its lifetime is unknown (``note`` says why)."""
    held_until: str | None = None
    """RFC 3339: the end of its hold for a look, when a failed entry's VM was kept."""
    note: str | None = None


@dataclass
class Cost:
    """What an entry's VMs cost: every try's VM, and their sum. Estimates in USD."""

    vms: list[VmUse] = field(default_factory=list)
    usd: float | None = None
    """The sum; None when a VM's cost is unknown."""
    currency: str = "USD"
    estimate: bool = True


@dataclass
class TryInfo:
    """One try of an entry in a workflow run, as its ``stop`` recorded it."""

    retry: int
    outcome: str
    """``ran`` (its run job ended by itself), ``preempted``, ``not_started`` (start failed),
    ``cancelled``, or ``no_results`` (the run job ended without results)."""
    label: str | None = None
    zone: str | None = None
    provisioning_model: str | None = None
    reason: str | None = None


@dataclass
class EntryResult:
    entry: EntryInfo
    status: EntryStatus
    started_at: str
    finished_at: str
    duration_s: float
    notebooks: list[NotebookResult] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    """What is known about the machine: ``gpu_model``, ``gpu_count``, ``driver_version``,
    ``cuda_version``, ``hostname``, ``platform``, ``python``, ``cpu_count``..."""
    options: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    """The run was stopped (SIGINT/SIGTERM) before every notebook ran."""
    cost: Cost | None = None
    """What the entry's Compute Engine VMs cost (the report adds it from what stop recorded);
    None for an entry that ran on no VM."""
    reason: str | None = None
    """Why an entry did not run (status ``not_run``): the start's error, "cancelled", ..."""
    tries: list[TryInfo] = field(default_factory=list)
    """Every try of the entry when there was more than one, or when it did not run; the last is
    the one whose notebooks these are."""
    tool_version: str = ""
    schema_version: int = SCHEMA_VERSION

    # -- derived --------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Test cases (JUnit's view): notebooks and checks together. People are shown
        :meth:`notebook_counts` and :meth:`check_counts`, never this sum."""
        return count_statuses([*self.checks, *self.notebooks])

    def notebook_counts(self) -> dict[str, int]:
        """``passed``, ``failed``, ``skipped`` (and any other status present) and ``total`` of the notebooks."""
        return count_statuses(self.notebooks)

    def check_counts(self) -> dict[str, int]:
        """The same for the system checks."""
        return count_statuses(self.checks)

    # -- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # the numbering people read, next to the index programs use
        for nb in d["notebooks"]:
            _number_cells(nb)
        for ch in d["checks"]:
            _number_cells(ch)
        # schema_version first, for people reading the file
        return {"schema_version": d.pop("schema_version"), "cell_numbering": CELL_NUMBERING, **d,
                "totals": {"notebooks": self.notebook_counts(), "checks": self.check_counts()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EntryResult:
        """The model of a results.json's data, once its schema (``results.schema.json``) accepts it:
        what ran on the entry's machine may have written anything (:mod:`gpu_runner.results_schema`)."""
        from .results_validation import validate

        if not isinstance(data, dict):
            raise ValueError(f"results.json holds a JSON {type(data).__name__}, not an object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"results.json schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
        validate(data)
        return _build(cls, data)

    def write(self, entry_dir: Path) -> Path:
        path = Path(entry_dir) / RESULTS_FILE
        write_json_atomic(path, self.to_dict())
        return path


CELL_NUMBERING = (
    "cell_index: the 0-based position of a cell in the executed notebook's cells (markdown cells and the "
    "injected-parameters cell included); cell_number = cell_index + 1 is how every log line, report and HTML "
    "anchor (#cell-N) names a cell"
)


def _number_cells(item: dict[str, Any]) -> None:
    f = item.get("failure")
    if isinstance(f, dict) and "cell_index" in f:
        f["cell_number"] = None if f["cell_index"] is None else f["cell_index"] + 1
    for c in item.get("cells") or []:
        c["number"] = c["index"] + 1


def count_statuses(items: list[Any]) -> dict[str, int]:
    c = {"passed": 0, "failed": 0, "skipped": 0}
    for item in items:
        c[item.status] = c.get(item.status, 0) + 1
    c["total"] = sum(c.values())
    return c


def timeline_from_dict(data: dict[str, Any] | None) -> Timeline | None:
    """A :class:`Timeline` from the plain data metrics.json keeps."""
    return None if data is None else _build(Timeline, data)


def not_run_result(info: EntryInfo, reason: str, *, tries: list[TryInfo] | None = None,
                   when: str = "") -> EntryResult:
    """The result of a planned entry none of whose notebooks or checks ran."""
    return EntryResult(entry=info, status="not_run", started_at=when, finished_at=when, duration_s=0.0,
                       reason=reason, tries=list(tries or []))


@dataclass
class TryRecord:
    """What one try of an entry came to, written by its ``stop`` job (``gpu-runner-try.json``),
    so the report can say why an entry has no results, or that they are a preempted try's."""

    entry_id: str
    retry: int = 0
    label: str | None = None
    start: str = ""
    """The start job's result: success, failure, cancelled, skipped ('' when unknown)."""
    run: str = ""
    """The run job's result: success, failure, cancelled, skipped ('' when unknown)."""
    error: str | None = None
    """The start's error, one line (no capacity, runner never came online, ...)."""
    zone: str | None = None
    provisioning_model: str | None = None
    preempted: bool = False
    will_retry: bool = False
    """Another try of the entry follows (it was preempted and has retries left)."""
    vm: VmUse | None = None
    """The try's VM as stop saw it: its lifetime and estimated cost (None when it had none)."""
    schema_version: int = SCHEMA_VERSION

    @property
    def outcome(self) -> str:
        if self.preempted and self.run != "success":
            return "preempted"
        if self.start in ("failure", "cancelled") or (self.start == "success" and self.run == "skipped"):
            return "cancelled" if "cancelled" in (self.start, self.run) else "not_started"
        if self.run == "cancelled":
            return "cancelled"
        return "ran"

    def to_info(self) -> TryInfo:
        return TryInfo(retry=self.retry, outcome=self.outcome, label=self.label, zone=self.zone,
                       provisioning_model=self.provisioning_model, reason=self.error)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"schema_version": d.pop("schema_version"), **d}

    @classmethod
    def from_dict(cls, data: Any) -> TryRecord:
        """The record of a ``gpu-runner-try.json``'s data, every field checked (it comes from an
        artifact): a ValueError names the first field that is wrong."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"schema_version {data.get('schema_version')!r} is not supported (expected "
                             f"{SCHEMA_VERSION})")
        known = {f.name for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f"{key}: not a field of a try record")
            if key == "entry_id":
                ok = isinstance(value, str) and ENTRY_ID_RE.match(value) is not None
            elif key == "retry":
                ok = type(value) is int and 0 <= value <= 9
            elif key in ("start", "run"):
                ok = value in JOB_RESULTS
            elif key in ("preempted", "will_retry"):
                ok = type(value) is bool
            elif key == "vm":
                if value is not None:
                    from .results_validation import ResultsError, validate_part

                    try:
                        validate_part("VmUse", value)
                    except ResultsError as e:
                        raise ValueError(f"vm: {e}") from None
                ok = True
            elif key == "schema_version":
                ok = True
            else:
                ok = value is None or (isinstance(value, str) and len(value) <= 2000)
            if not ok:
                raise ValueError(f"{key}: {value!r:.80} is not allowed here")
        if "entry_id" not in data:
            raise ValueError("entry_id: missing")
        return _build(cls, data)

    def write(self, folder: Path) -> Path:
        path = Path(folder) / TRY_FILE
        write_json_atomic(path, self.to_dict())
        return path


ARTIFACT_RE = re.compile(r"^gpu-runner-(?P<id>[a-z0-9-]+?)(?:\.attempt-(?P<attempt>[1-9][0-9]{0,3}))?"
                         r"(?:\.retry-(?P<retry>[1-9]))?(?P<record>\.record)?$")
"""The artifacts of an entry's try in a workflow run: ``gpu-runner-<id>.attempt-<A>`` (the first try's
results in attempt A of the run), ``gpu-runner-<id>.attempt-<A>.retry-<N>`` (a retry's), each with
``.record`` for the try's record. Artifact names are unique per run, every attempt included, so a
re-run attempt's names carry its number; a name without ``.attempt-<A>`` (an older version's) is attempt 1.
``gpu-runner-report`` (the merged report) and ``gpu-runner-summary`` (the summary for the comment
job) are not an entry's: no entry id is ``report`` or ``summary`` (an id is ``<runtime>--<machine>``,
or 40 characters when cut)."""


def parse_artifact_name(name: str) -> tuple[str, int, bool] | None:
    """(entry id, retry, is the try's record) of one of an entry's artifacts, else None."""
    m = ARTIFACT_RE.match(name)
    if m is None or m.group("id") in ("report", "summary"):
        return None
    return m.group("id"), int(m.group("retry") or 0), bool(m.group("record"))


def artifact_attempt(name: str) -> int:
    """The run attempt an entry's artifact belongs to (1 for a name without one)."""
    m = ARTIFACT_RE.match(name)
    return int(m.group("attempt")) if m is not None and m.group("attempt") else 1


def find_try_records(root: str | os.PathLike[str]) -> list[Path]:
    """Every ``gpu-runner-try.json`` under ``root``, sorted."""
    return sorted(Path(root).rglob(TRY_FILE))


def load_results(entry_dir_or_file: str | os.PathLike[str]) -> EntryResult:
    """Read ``results.json`` from an entry folder (or the file itself)."""
    path = Path(entry_dir_or_file)
    if path.is_dir():
        path = path / RESULTS_FILE
    with path.open(encoding="utf-8") as f:
        return EntryResult.from_dict(json.load(f))


def find_entry_dirs(root: str | os.PathLike[str]) -> list[Path]:
    """Every folder under ``root`` (itself included) that holds a ``results.json``, sorted;
    hidden folders (a run's staging area) left out."""
    root = Path(root)
    return sorted({p.parent for p in root.rglob(RESULTS_FILE)
                   if not any(part.startswith(".") for part in p.parent.relative_to(root).parts)})


# -- generic dataclass builder -----------------------------------------------------------
_NESTED: dict[tuple[str, str], Any] = {}


def _build(cls: Any, data: dict[str, Any]) -> Any:
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        nested = _NESTED.get((cls.__name__, f.name))
        if nested is not None and value is not None:
            kind, sub = nested
            value = [_build(sub, v) for v in value] if kind == "list" else _build(sub, value)
        kwargs[f.name] = value
    return cls(**kwargs)


_NESTED.update(
    {
        ("EntryResult", "entry"): ("one", EntryInfo),
        ("EntryResult", "notebooks"): ("list", NotebookResult),
        ("EntryResult", "checks"): ("list", CheckResult),
        ("NotebookResult", "failure"): ("one", Failure),
        ("NotebookResult", "cells"): ("list", CellResult),
        ("NotebookResult", "rerun"): ("one", RerunResult),
        ("NotebookResult", "timeline"): ("one", Timeline),
        ("Timeline", "devices"): ("list", DeviceSeries),
        ("Timeline", "cells"): ("list", CellSpan),
        ("CheckResult", "failure"): ("one", Failure),
        ("EntryResult", "cost"): ("one", Cost),
        ("Cost", "vms"): ("list", VmUse),
        ("EntryResult", "tries"): ("list", TryInfo),
        ("TryRecord", "vm"): ("one", VmUse),
    }
)

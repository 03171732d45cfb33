"""Expand runtimes x machines into entries: filters, include/exclude, changed files, ids, labels.

One *entry* is one runtime on one machine. Its ``id`` is ``<runtime slug>--<machine slug>``
(a slug is the name in lower case with every run of other characters turned into one
``-``, so ``--`` only ever separates the two halves and ids are unique by construction).
Ids longer than 40 characters are cut and end in 6 hex digits of a hash of the full id,
so they stay stable and unique. An id depends on the two names only: adding, removing
or filtering other entries never changes it.

The plan's runner ``label`` is ``gpu-runner-<run id>-<attempt>-<entry id>``; the label ``start``
registers (also the VM name and the runner name, DESIGN.md section 4) adds 8 random base32
characters after the attempt, ``gpu-runner-<run id>-<attempt>-<nonce>-<entry id>``
(:func:`label_with_nonce`), and the run job takes it from start's output. The run id and attempt are
``GITHUB_RUN_ID`` and ``GITHUB_RUN_ATTEMPT``; outside GitHub Actions (neither set) they
are ``local`` and ``1``. A retry of the entry in the same run attempt (its Spot VM was
preempted) gets a fresh VM and runner: its attempt part is ``<attempt>r<retry>``
(``gpu-runner-123-1r1-torch--l4``), so every try has its own name. A label longer than 63 characters keeps its prefix and cuts the
entry id part, ending in a hash of the full id, so it still fits Compute Engine's name
pattern and stays unique.

Paths in a matrix file (notebooks, paths) are relative to the repository root: the
``root:`` setting (relative to the matrix file's folder), else the git work tree that
holds the matrix file, else the current directory.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .config import (
    DEFAULT_BOOT_IMAGE_FAMILY,
    DEFAULT_BOOT_IMAGE_PROJECT,
    DEFAULT_CHECKS,
    DEFAULT_DISK_SIZE_GB,
    DEFAULT_DISK_TYPE,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_RUN_DURATION_S,
    DEFAULT_REGRESSION,
    DEFAULT_PREEMPTED_RETRIES,
    DEFAULT_RUNS_ON,
    DEFAULT_SPOT_CPU,
    DEFAULT_SPOT_GPU,
    GCE_NAME_RE,
    BootImage,
    CheckSpec,
    LoadedMatrix,
    MachineSettings,
    Regression,
    RuntimeSettings,
    did_you_mean,
    gpu_pairing,
    load,
    slug,
)
from .errors import ConfigError
from .execute.spec import DEFAULT_CELL_TIMEOUT_S, DEFAULT_TIMEOUT_S, EntryRun, NotebookSpec, collect_notebooks
from .results import EntryInfo

MAX_ID_LENGTH = 40
MAX_LABEL_LENGTH = 63
LABEL_PREFIX = "gpu-runner"
GITHUB_MATRIX_LIMIT = 256
LOCAL_RUN_ID = "local"
LOCAL_RUN_ATTEMPT = "1"
DEFAULT_CHECK_TIMEOUT_S = 300.0


# --------------------------------------------------------------------------------------
# Ids and labels
# --------------------------------------------------------------------------------------


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:6]


def _fit(text: str, limit: int, hash_of: str) -> str:
    """``text`` when it fits, else its head and a hash of ``hash_of`` (stable, unique)."""
    if len(text) <= limit:
        return text
    head = text[: limit - 7].rstrip("-")
    return f"{head}-{_short_hash(hash_of)}"


def entry_id(runtime: str, machine: str) -> str:
    """Stable id of the entry ``runtime`` x ``machine``: lower case, <= 40 characters."""
    full = f"{slug(runtime)}--{slug(machine)}"
    return _fit(full, MAX_ID_LENGTH, f"{runtime}\0{machine}")


def run_identity(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(run id, attempt): GITHUB_RUN_ID / GITHUB_RUN_ATTEMPT, else ``local`` / ``1``."""
    env = os.environ if env is None else env
    run_id = slug(env.get("GITHUB_RUN_ID", "").strip() or LOCAL_RUN_ID)[:20].strip("-") or LOCAL_RUN_ID
    attempt = slug(env.get("GITHUB_RUN_ATTEMPT", "").strip() or LOCAL_RUN_ATTEMPT)[:4].strip("-") or LOCAL_RUN_ATTEMPT
    return run_id, attempt


NONCE_LENGTH = 8
NONCE_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
"""RFC 4648 base32 in lower case: a label part GCE names and runner labels both allow."""
LABEL_RE = re.compile(r"^gpu-runner-(?P<run>[0-9]+|local)-(?P<attempt>[0-9]+)(?:r(?P<retry>[1-9]))?-"
                      rf"(?P<nonce>[{NONCE_ALPHABET}]{{{NONCE_LENGTH}}})-(?P<entry>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)$")
"""The full name of what ``start`` makes (VM, runner, label): ``gpu-runner-<run>-<attempt>-<nonce>-<entry>``."""


def new_nonce() -> str:
    """8 random base32 characters (40 bits) from the OS's CSPRNG: the part of a runner label that
    nobody can guess, so no other workflow's job can ask for the runner (see :func:`label_with_nonce`)."""
    import secrets

    return "".join(secrets.choice(NONCE_ALPHABET) for _ in range(NONCE_LENGTH))


def label_run_prefix(base_label: str) -> str | None:
    """``gpu-runner-<run>-<attempt>-`` of a plan's label (what every try's label starts with), or None."""
    m = re.match(r"^gpu-runner-[^-]+-[^-]+-", base_label)
    return m.group(0) if m else None


def label_with_nonce(entry_id_: str, base_label: str, nonce: str) -> str:
    """The label ``start`` registers, names the runner and the VM after, and hands the run job:
    the base label's ``gpu-runner-<run>-<attempt>-``, the nonce, then the entry id (cut to fit 63
    characters, ending in a hash of the full id). The plan's label (the base) is public and
    predictable; a repository runner serves any workflow of the repository, a fork's
    ``pull_request`` included, so only a label nobody can guess keeps other jobs off the runner."""
    run_prefix = label_run_prefix(base_label)
    if run_prefix is None or len(nonce) != NONCE_LENGTH or any(c not in NONCE_ALPHABET for c in nonce):
        raise ConfigError(f"runner label {base_label!r} with nonce {nonce!r}: not a label start makes")
    prefix = f"{run_prefix}{nonce}-"
    label = prefix + _fit(entry_id_, MAX_LABEL_LENGTH - len(prefix), entry_id_)
    if not GCE_NAME_RE.match(label):  # pragma: no cover - slugs make this impossible
        raise ConfigError(f"runner label {label!r} breaks Compute Engine's name pattern")
    return label


def label_is_for(entry: Entry, name: str) -> bool:
    """Whether ``name`` is a label ``start`` makes for this try of ``entry`` (any nonce)."""
    m = LABEL_RE.match(name or "")
    return m is not None and label_with_nonce(entry.id, entry.label, m.group("nonce")) == name


def runner_label(entry_id_: str, run_id: str | None = None, attempt: str | None = None,
                 env: Mapping[str, str] | None = None, retry: int = 0) -> str:
    """``gpu-runner-<run id>-<attempt>-<entry id>``: the runner label, runner name and VM name;
    ``retry`` > 0 (a try after a preemption) makes the attempt part ``<attempt>r<retry>``."""
    env_run, env_attempt = run_identity(env)
    run_id = slug(run_id) if run_id else env_run
    attempt = slug(attempt) if attempt else env_attempt
    if retry:
        attempt = f"{attempt}r{int(retry)}"
    prefix = f"{LABEL_PREFIX}-{run_id}-{attempt}-"
    label = prefix + _fit(entry_id_, MAX_LABEL_LENGTH - len(prefix), entry_id_)
    if not GCE_NAME_RE.match(label):  # pragma: no cover - slugs make this impossible
        raise ConfigError(f"runner label {label!r} breaks Compute Engine's name pattern")
    return label


# --------------------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------------------


@dataclass
class GceSpec:
    """Everything the start/stop jobs need to create the VM of one entry."""

    project: str | None
    """GCP project; None means GOOGLE_CLOUD_PROJECT."""
    machine_type: str
    accelerator_type: str | None
    accelerator_count: int
    attach_accelerators: bool
    """List them as guestAccelerators (N1); False when they come with the machine type."""
    zones: list[str]
    provisioning_models: list[str]
    """The capacity ladder's models in order: ["SPOT", "STANDARD"], ["SPOT"] or ["STANDARD"]."""
    source_image: str
    disk_size_gb: int
    disk_type: str
    max_run_duration_s: int
    network: str | None
    subnetwork: str | None
    external_ip: bool
    service_account: str | None
    """None: the VM gets no service account (no Google credentials on it)."""
    scopes: list[str] | None
    labels: dict[str, str]
    """The matrix's own labels (gce.labels, defaults and the machine's); the start job adds
    gpu-runner, gh-repo, gh-run-id, gh-run-attempt, entry and created."""
    self_delete: bool = False
    """The VM deletes itself after its job (needs service_account); else it waits for stop to delete it."""
    debug_hold_s: int = 0
    """A failed entry's VM is kept this long after its job for a look (0: never); its
    maxRunDuration is ``max_run_duration_s`` plus this."""
    price_per_hour: dict[str, float] | None = None
    """The matrix's ``price_per_hour`` by provisioning model (``STANDARD``, ``SPOT``); None: priced
    by the Cloud Billing Catalog or gpu-runner's table (:mod:`gpu_runner.cost`)."""
    idle_timeout_s: int = int(DEFAULT_IDLE_TIMEOUT_S)
    """A runner that has no job within this many seconds is stopped and its VM goes."""


@dataclass
class Entry:
    """One runtime on one machine, with every setting resolved (defaults applied)."""

    id: str
    runtime: str
    machine: str
    label: str
    provider: str
    name: str
    """For people: 'pytorch on l4'."""
    runs_on: str
    """What the run job's runs-on takes: the label (gce) or the machine's runs_on (local)."""
    gpu_count: int
    accelerator_type: str | None
    container: str | None
    container_options: str | None
    timeout_s: float
    cell_timeout_s: float
    timeout_minutes: int | None
    """For the run job's timeout-minutes: the VM's hard lifetime; None for local machines."""
    notebooks: list[str]
    paths: list[str]
    parameters: dict[str, Any]
    env: dict[str, str]
    kernel: str | None
    python: str | None
    """The runtime's interpreter (matrix ``python``); None: the job's (GPU_RUNNER_PYTHON) or Jupyter's."""
    kernel_overlay: bool
    rerun: bool
    checks: list[dict[str, Any]]
    """Plain data: {"name": "gpu"} for a built-in; {"name", "run", "expect_exit", "timeout_s"}
    for a command check."""
    gce: GceSpec | None
    regression: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_REGRESSION))
    """Thresholds for regressions against the baseline: time_percent, time_min (seconds),
    memory_percent, memory_min_mib."""
    price: dict[str, Any] | None = None
    """Set by :func:`price_entries` for gce entries: per provisioning model of the entry's ladder
    ``{"usd_per_hour", "source", "as_of"}``, and ``worst_case_usd``; estimates."""
    matrix_position: list[int] = field(default_factory=list)
    """[runtime index, machine index] in the matrix file: the order reports list entries in."""
    retries_preempted: int = 0
    """How often the entry is tried again when its Spot VM is preempted (0 for local machines)."""
    retry: int = 0
    """Which try this spec is for: 0 the first, 1.. the retries (the label differs)."""

    MATRIX_FIELDS = ("id", "runtime", "machine", "label", "provider", "name", "runs_on", "gpu_count",
                     "accelerator_type", "container", "container_options", "timeout_s", "cell_timeout_s",
                     "timeout_minutes", "gce", "price")

    def to_dict(self) -> dict[str, Any]:
        """Every field (``plan.find_entry`` callers, ``--format json --full``)."""
        return asdict(self)

    def matrix_item(self) -> dict[str, Any]:
        """What one GitHub matrix item carries: everything the start, run and stop jobs read
        (the run step reads notebooks, parameters, env and checks through find_entry)."""
        d = asdict(self)
        return {k: d[k] for k in self.MATRIX_FIELDS}

    @property
    def is_local(self) -> bool:
        return self.provider == "local"


def _merged(default: dict[str, Any] | None, own: dict[str, Any] | None, extra: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in (default, own, extra):
        out.update(d or {})
    return out


def _pick(name: str, *sources: Any, default: Any = None) -> Any:
    for src in sources:
        if src is not None and getattr(src, name, None) is not None:
            return getattr(src, name)
    return default


def _check_data(c: CheckSpec) -> dict[str, Any]:
    if c.run is None:
        return {"name": c.name}
    return {"name": c.name, "run": c.run, "expect_exit": c.expect_exit,
            "timeout_s": c.timeout if c.timeout is not None else DEFAULT_CHECK_TIMEOUT_S}


def _provisioning_models(spot: str | None, gpus: int = 0) -> list[str]:
    """The capacity ladder's models. Unset, a GPU machine prefers SPOT (a preempted try is retried,
    on STANDARD) and a machine without GPUs takes STANDARD."""
    policy = spot or (DEFAULT_SPOT_GPU if gpus else DEFAULT_SPOT_CPU)
    return {"preferred": ["SPOT", "STANDARD"], "only": ["SPOT"]}.get(policy, ["STANDARD"])


def _zones(zones: list[str], region: str | None) -> list[str]:
    return [f"{region}-{z}" if len(z) == 1 else z for z in zones]


def _build_entry(lm: LoadedMatrix, runtime: str, machine: str, overrides: dict[str, Any],
                 run_id: str | None, attempt: str | None, env: Mapping[str, str] | None, retry: int = 0) -> Entry:
    m = lm.model
    rt = m.runtimes[runtime]
    mach = m.machines[machine]
    dr = (m.defaults.runtime if m.defaults else None) or RuntimeSettings()
    dm = (m.defaults.machine if m.defaults else None) or MachineSettings()
    gce_settings = m.gce
    eid = entry_id(runtime, machine)
    label = runner_label(eid, run_id, attempt, env, retry=retry)
    checks_src = _pick("checks", rt, dr)
    checks = [_check_data(c) for c in checks_src] if checks_src is not None else [{"name": n} for n in DEFAULT_CHECKS]

    gce: GceSpec | None = None
    gpu_count = mach.accelerator.count if mach.accelerator else 0
    acc_type = mach.accelerator.type if mach.accelerator else None
    timeout_minutes: int | None = None
    if mach.provider == "gce":
        assert mach.machine_type is not None  # validated
        pairing, _, _ = gpu_pairing(mach.machine_type, mach.accelerator)
        gpu_count, acc_type = pairing.accelerator_count, pairing.accelerator_type
        image: BootImage = _pick("boot_image", mach, dm) or BootImage(project=DEFAULT_BOOT_IMAGE_PROJECT,
                                                                       family=DEFAULT_BOOT_IMAGE_FAMILY)
        disk = _pick("disk", mach, dm)
        mrd = _pick("max_run_duration", mach, dm, default=DEFAULT_MAX_RUN_DURATION_S)
        labels = _merged(gce_settings.labels if gce_settings else None, dm.labels, mach.labels)
        gce = GceSpec(
            project=gce_settings.project if gce_settings else None,
            machine_type=mach.machine_type,
            accelerator_type=pairing.accelerator_type,
            accelerator_count=pairing.accelerator_count,
            attach_accelerators=pairing.attach_accelerators,
            zones=_zones(_pick("zones", mach, dm, default=[]), gce_settings.region if gce_settings else None),
            provisioning_models=_provisioning_models(_pick("spot", mach, dm), pairing.accelerator_count),
            source_image=image.source_image,
            disk_size_gb=disk.size_gb if disk else DEFAULT_DISK_SIZE_GB,
            disk_type=disk.type if disk else DEFAULT_DISK_TYPE,
            max_run_duration_s=int(math.ceil(mrd)),
            idle_timeout_s=int(math.ceil(_pick("idle_timeout", mach, dm, default=DEFAULT_IDLE_TIMEOUT_S))),
            network=gce_settings.network if gce_settings else None,
            subnetwork=gce_settings.subnetwork if gce_settings else None,
            external_ip=gce_settings.external_ip if gce_settings else True,
            service_account=gce_settings.service_account if gce_settings else None,
            scopes=list(gce_settings.scopes) if gce_settings and gce_settings.scopes else None,
            labels=labels,
            self_delete=bool(gce_settings.self_delete) if gce_settings else False,
            price_per_hour=_price_per_hour(mach),
            debug_hold_s=int(math.ceil(_pick("debug_hold", rt, mach, dr, dm, default=0))),
        )
        timeout_minutes = int(math.ceil(mrd / 60))
    gpus = f", {gpu_count} x {acc_type}" if gpu_count and acc_type else ""
    kind = mach.machine_type or mach.provider
    return Entry(
        id=eid,
        runtime=runtime,
        machine=machine,
        label=label,
        provider=mach.provider,
        name=f"{runtime} on {machine} ({kind}{gpus})",
        runs_on=label if mach.provider == "gce" else (mach.runs_on or DEFAULT_RUNS_ON),
        gpu_count=gpu_count,
        accelerator_type=acc_type,
        container=rt.container,
        container_options=_pick("container_options", rt, dr),
        timeout_s=_pick("timeout", rt, dr, default=DEFAULT_TIMEOUT_S),
        cell_timeout_s=_pick("cell_timeout", rt, dr, default=DEFAULT_CELL_TIMEOUT_S),
        timeout_minutes=timeout_minutes,
        notebooks=list(rt.notebooks),
        paths=list(rt.paths),
        parameters=_merged(dr.parameters, rt.parameters, overrides.get("parameters")),
        env=_merged(dr.env, rt.env, overrides.get("env")),
        kernel=_pick("kernel", rt, dr),
        python=_pick("python", rt, dr),
        kernel_overlay=bool(_pick("kernel_overlay", rt, dr, default=True)),
        rerun=bool(_pick("rerun", rt, dr, default=False)),
        checks=checks,
        gce=gce,
        regression=regression_thresholds(dr.regression, rt.regression),
        matrix_position=[list(m.runtimes).index(runtime), list(m.machines).index(machine)],
        retries_preempted=(_pick("preempted", _pick("retries", mach, dm), default=DEFAULT_PREEMPTED_RETRIES)
                           if gce is not None and "SPOT" in gce.provisioning_models else 0),
        retry=retry,
    )


def _price_per_hour(mach: Any) -> dict[str, float] | None:
    own = mach.price_per_hour
    if own is None:
        return None
    prices = {"STANDARD": own.standard, "SPOT": own.spot}
    return {k: float(v) for k, v in prices.items() if v is not None} or None


def regression_thresholds(*layers: Regression | None) -> dict[str, float]:
    """The defaults, overridden key by key by each layer that sets a key (later layers win)."""
    out = dict(DEFAULT_REGRESSION)
    for layer in layers:
        if layer is not None:
            out.update({k: float(v) for k, v in layer.model_dump().items() if v is not None})
    return out


# --------------------------------------------------------------------------------------
# Expansion, filters, changed files
# --------------------------------------------------------------------------------------


def _matches(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) if any(c in pattern for c in "*?[") else name == pattern


def expand(lm: LoadedMatrix) -> dict[tuple[str, str], dict[str, Any]]:
    """Every (runtime, machine) of the matrix with its include overrides, in file order."""
    m = lm.model
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for rname, rt in m.runtimes.items():
        for mname in rt.machines or list(m.machines):
            pairs[(rname, mname)] = {}
    for rule in m.exclude:
        for key in list(pairs):
            if (rule.runtime is None or _matches(rule.runtime, key[0])) and (
                    rule.machine is None or _matches(rule.machine, key[1])):
                del pairs[key]
    for inc in m.include:
        over = pairs.setdefault((inc.runtime, inc.machine), {})
        for k in ("env", "parameters"):
            value = getattr(inc, k)
            if value:
                over[k] = {**over.get(k, {}), **value}
    rorder = {n: i for i, n in enumerate(m.runtimes)}
    morder = {n: i for i, n in enumerate(m.machines)}
    return dict(sorted(pairs.items(), key=lambda kv: (rorder[kv[0][0]], morder[kv[0][1]])))


def _select_names(kind: str, wanted: Sequence[str], names: list[str], lm: LoadedMatrix) -> set[str]:
    chosen: set[str] = set()
    for w in wanted:
        hits = [n for n in names if _matches(w, n)]
        if not hits:
            what = f"pattern {w!r} matches no {kind}" if any(c in w for c in "*?[") else (
                f"no {kind} {w!r}{did_you_mean(w, names)}")
            raise ConfigError(f"--{kind} {w}: {lm.doc.display} has {what} ({kind}s: {', '.join(names)})")
        chosen.update(hits)
    return chosen


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A repository-relative glob as a regex: ``*`` and ``?`` stay within one folder,
    ``**`` spans folders, ``[...]`` is a character class."""
    pattern = _norm(pattern)
    i, out = 0, []
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1: i + 2] in ("!", "]") else i + 1)
            if j < 0:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1: j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _norm(path: str) -> str:
    p = path.strip().replace("\\", "/")
    while p.startswith("./"):
        p = p[2:]
    return p.rstrip("/")


def path_matches(pattern: str, changed: str) -> bool:
    """True when ``changed`` (a repo-relative file) is ``pattern`` or lies under a folder it names."""
    rx = glob_regex(pattern)
    parts = PurePosixPath(_norm(changed)).parts
    return any(rx.match("/".join(parts[:n])) for n in range(len(parts), 0, -1))


def read_changed_files(source: str | Path, stdin: Iterable[str] | None = None) -> list[str]:
    """One path per line from a file, or from stdin for ``-`` (blank lines skipped)."""
    if str(source) == "-":
        lines = list(stdin if stdin is not None else sys.stdin)
    else:
        try:
            lines = Path(source).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ConfigError(f"--changed-files: cannot read {source}: {e.strerror}") from None
    return [line.strip() for line in lines if line.strip()]


def runtimes_for_changes(lm: LoadedMatrix, changed: Sequence[str], *, cwd: Path | None = None
                         ) -> tuple[set[str], str]:
    """The runtimes a change touches, and why (for people)."""
    root = lm.root_dir(cwd)
    rel: list[str] = []
    for c in changed:
        p = Path(c)
        if p.is_absolute():
            try:
                rel.append(p.resolve().relative_to(root).as_posix())
            except ValueError:
                continue  # outside the repository: cannot touch a runtime
        else:
            rel.append(_norm(c))
    try:
        matrix_rel = lm.path.resolve().relative_to(root).as_posix()
    except ValueError:
        matrix_rel = None
    everything = set(lm.model.runtimes)
    if matrix_rel is not None and matrix_rel in rel:
        return everything, f"{matrix_rel} changed"
    for pattern in lm.model.paths:
        hit = next((c for c in rel if path_matches(pattern, c)), None)
        if hit:
            return everything, f"{hit} matches paths: {pattern}"
    chosen: set[str] = set()
    for name, rt in lm.model.runtimes.items():
        if any(path_matches(p, c) for p in [*rt.notebooks, *rt.paths] for c in rel):
            chosen.add(name)
    return chosen, f"{len(rel)} changed file(s) touch {len(chosen)} runtime(s)"


@dataclass
class Plan:
    """The selected entries of one matrix file."""

    matrix: LoadedMatrix
    entries: list[Entry]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def matrix_json(self) -> str:
        """``{"include": [...]}``, compact: the value of the ``matrix`` output."""
        return json.dumps({"include": [e.matrix_item() for e in self.entries]}, separators=(",", ":"))

    def github_output(self) -> str:
        return f"matrix={self.matrix_json()}\nhas-work={'true' if self.entries else 'false'}\n"


def plan(matrix: Path | str | LoadedMatrix, *, runtimes: Sequence[str] = (), machines: Sequence[str] = (),
         changed_files: Sequence[str] | None = None, run_id: str | None = None, attempt: str | None = None,
         env: Mapping[str, str] | None = None, limit: int | None = GITHUB_MATRIX_LIMIT,
         check_notebooks: bool = False, cwd: Path | None = None) -> Plan:
    """Expand, filter (``--runtime``/``--machine``: names or globs) and select by changed files.

    An empty selection from the file or the filters is a ConfigError; an empty selection
    because no changed file touches a runtime is not (``has-work=false``). More than
    ``limit`` entries is a ConfigError naming the count.
    """
    lm = matrix if isinstance(matrix, LoadedMatrix) else load(matrix)
    m = lm.model
    pairs = expand(lm)
    where = ("exclude",) if m.exclude else ("runtimes",)
    if not pairs:
        raise lm.error(where, "the selection is empty: exclude rules remove every runtime x machine entry",
                       key=True)
    rsel = _select_names("runtime", runtimes, list(m.runtimes), lm) if runtimes else set(m.runtimes)
    msel = _select_names("machine", machines, list(m.machines), lm) if machines else set(m.machines)
    pairs = {k: v for k, v in pairs.items() if k[0] in rsel and k[1] in msel}
    if not pairs:
        filters = " ".join([*(f"--runtime {r}" for r in runtimes), *(f"--machine {x}" for x in machines)])
        options = "; ".join(
            f"{r} runs on {', '.join(mm for rr, mm in expand(lm) if rr == r) or 'nothing'}" for r in sorted(rsel))
        raise lm.error(("runtimes",), f"the selection is empty: {filters} gives no entries ({options})", key=True)
    notes: list[str] = []
    if changed_files is not None:
        chosen, why = runtimes_for_changes(lm, changed_files, cwd=cwd)
        pairs = {k: v for k, v in pairs.items() if k[0] in chosen}
        notes.append(why if pairs else f"no runtime is touched by the {len(changed_files)} changed file(s)")
    if limit is not None and len(pairs) > limit:
        raise lm.error(("runtimes",), f"{len(pairs)} entries; a GitHub Actions matrix holds at most {limit}: select "
                       "fewer with --runtime/--machine or exclude rules", key=True)
    entries = [_build_entry(lm, r, mname, over, run_id, attempt, env) for (r, mname), over in pairs.items()]
    ids: dict[str, Entry] = {}
    for e in entries:
        if e.id in ids:  # pragma: no cover - only a hash collision of two cut ids
            raise lm.error(("runtimes", e.runtime), f"entries {ids[e.id].name!r} and {e.name!r} share the id {e.id!r}; "
                           "shorten a name", key=True)
        ids[e.id] = e
    if check_notebooks:
        root = lm.root_dir(cwd)
        for r in dict.fromkeys(e.runtime for e in entries):
            notebooks_for(lm, r, root)
    return Plan(matrix=lm, entries=entries, warnings=list(lm.warnings), notes=notes)


def notebooks_for(lm: LoadedMatrix, runtime: str, root: Path) -> list[NotebookSpec]:
    """The runtime's notebooks, resolved against the repository root; a pattern that matches
    nothing is a ConfigError at its place in the file."""
    patterns = lm.model.runtimes[runtime].notebooks
    for i, pattern in enumerate(patterns):
        try:
            collect_notebooks([pattern], cwd=root)
        except ConfigError as e:
            raise lm.error(("runtimes", runtime, "notebooks", i), f"{e.message} (under {root})") from None
    try:
        return collect_notebooks(list(patterns), cwd=root)
    except ConfigError as e:
        raise lm.error(("runtimes", runtime, "notebooks"), e.message) from None


# --------------------------------------------------------------------------------------
# What the other stages call
# --------------------------------------------------------------------------------------


def find_entry(matrix: Path | str | LoadedMatrix, entry_id_: str, *, env: Mapping[str, str] | None = None,
               run_id: str | None = None, attempt: str | None = None, retry: int = 0) -> Entry:
    """One entry's full spec by id (include rules applied, no filters, no size limit); ``retry``
    names the try (its label differs)."""
    lm = matrix if isinstance(matrix, LoadedMatrix) else load(matrix)
    pairs = expand(lm)
    for (r, mname), over in pairs.items():
        if entry_id(r, mname) == entry_id_:
            return _build_entry(lm, r, mname, over, run_id, attempt, env, retry=retry)
    ids = [entry_id(r, mname) for r, mname in pairs]
    raise ConfigError(f"no entry {entry_id_!r} in {lm.doc.display}{did_you_mean(entry_id_, ids)} "
                      f"(entries: {', '.join(ids)})")


def entry_run(entry: Entry, notebooks: list[NotebookSpec], *, ran_locally: bool = True) -> EntryRun:
    """The engine's view of one entry."""
    return EntryRun(
        info=EntryInfo(id=entry.id, runtime=entry.runtime, machine=entry.machine,
                       label=None if entry.is_local else entry.label, provider=entry.provider,
                       ran_locally=ran_locally, matrix_position=list(entry.matrix_position) or None,
                       retry=entry.retry),
        notebooks=notebooks,
        parameters=dict(entry.parameters),
        env=dict(entry.env),
        timeout_s=entry.timeout_s,
        cell_timeout_s=entry.cell_timeout_s,
        kernel=entry.kernel,
        python=entry.python,
        python_source="matrix" if entry.python else "jupyter",
        kernel_overlay=entry.kernel_overlay,
        rerun=entry.rerun,
        checks=[dict(c) for c in entry.checks],
        regression=dict(entry.regression),
        # a cloud entry run on this machine (--local) is not on the machine the matrix describes
        expected_gpus=None if (ran_locally and not entry.is_local) else expected_gpus(entry),
        expected_gpu_type=None if (ran_locally and not entry.is_local) else entry.accelerator_type,
    )


def entry_run_here(matrix_path: Path, entry_id_: str, *, cwd: Path | None = None,
                   env: Mapping[str, str] | None = None, retry: int = 0) -> EntryRun:
    """Exactly one entry, run on this machine (``gpu-runner run --entry``). On the entry's own VM
    (the GitHub runner is named after the entry's label: ``RUNNER_NAME``) it runs as the machine the
    matrix describes, so the ``gpu`` check holds it to the entry's GPU count; anywhere else a cloud
    entry is marked ran_locally, as ``--local`` does."""
    env = os.environ if env is None else env
    cwd = (cwd or Path.cwd()).resolve()
    path = Path(matrix_path)
    lm = load(path if path.is_absolute() else cwd / path, display=str(matrix_path))
    e = find_entry(lm, entry_id_, env=env, retry=retry)
    own_vm = not e.is_local and label_is_for(e, env.get("RUNNER_NAME", ""))
    return entry_run(e, notebooks_for(lm, e.runtime, lm.root_dir(cwd)), ran_locally=not own_vm)


def expected_gpus(entry: Entry) -> int | None:
    """The GPU count the ``gpu`` check holds the entry's machine to: the matrix's count; None
    for a local machine that declares no accelerator (any machine may run it)."""
    if entry.is_local and not entry.gpu_count and not entry.accelerator_type:
        return None
    return entry.gpu_count


def local_runs(matrix_path: Path, *, runtimes: Sequence[str] = (), machines: Sequence[str] = (),
               local: bool = False, cwd: Path | None = None) -> list[EntryRun]:
    """One :class:`EntryRun` per selected entry that runs on this machine.

    Entries whose machine's provider is ``local`` always; with ``local=True`` cloud entries
    too (``EntryInfo.ran_locally`` True, ``provider`` the machine's). Notebooks are resolved
    against the repository root (see the module docstring). No selected entry runnable
    here is a ConfigError that suggests ``--local``.
    """
    cwd = (cwd or Path.cwd()).resolve()
    path = Path(matrix_path)
    lm = load(path if path.is_absolute() else cwd / path, display=str(matrix_path))
    p = plan(lm, runtimes=runtimes, machines=machines, limit=None, cwd=cwd)
    selected = [e for e in p.entries if e.is_local or local]
    if not selected:
        cloud = ", ".join(sorted({e.machine for e in p.entries}))
        raise ConfigError(
            f"no selected entry runs on this machine: the {len(p.entries)} selected entr"
            f"{'y runs' if len(p.entries) == 1 else 'ies run'} on cloud machines ({cloud}); add --local to run their "
            "notebooks here, or select a machine whose provider is local with --machine")
    root = lm.root_dir(cwd)
    cache: dict[str, list[NotebookSpec]] = {}
    runs = []
    for e in selected:
        if e.runtime not in cache:
            cache[e.runtime] = notebooks_for(lm, e.runtime, root)
        runs.append(entry_run(e, cache[e.runtime]))
    return runs


def warning_lines(warnings: Sequence[str], *, github: bool) -> list[str]:
    """Warnings as text; in GitHub Actions as ``::warning`` workflow commands with file and line."""
    out = []
    for w in warnings:
        m = re.match(r"^(.*?):(\d+):(\d+): (.*)$", w, re.S)
        if github and m:
            msg = m.group(4).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
            out.append(f"::warning file={m.group(1)},line={m.group(2)},col={m.group(3)}::{msg}")
        else:
            out.append(f"warning: {w}")
    return out




def write_github_output(p: Plan, path: str | Path) -> None:
    """Append ``matrix=<json>`` and ``has-work=true|false`` to ``$GITHUB_OUTPUT``."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(p.github_output())


@dataclass
class PlanCost:
    """What the plan's entries cost per hour and at worst (estimates; see :mod:`gpu_runner.cost`)."""

    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    """entry id -> provisioning model -> :class:`~gpu_runner.cost.HourlyPrice`."""
    worst_case: dict[str, float | None] = field(default_factory=dict)
    """entry id -> USD: every try for the VM's whole lifetime; None when a price is unknown."""
    notes: list[str] = field(default_factory=list)

    @property
    def worst_case_usd(self) -> float:
        """The run's worst case over the entries whose price is known."""
        return round(sum(v for v in self.worst_case.values() if v is not None), 2)

    @property
    def unknown(self) -> list[str]:
        return [k for k, v in self.worst_case.items() if v is None]

    def origins(self) -> list[str]:
        return sorted({p.origin() for by_model in self.prices.values() for p in by_model.values()
                       if p.usd_per_hour is not None})

    def line(self) -> str:
        """One line for people: the worst case, its sources, that it is an estimate."""
        from .cost import money

        n = len(self.worst_case)
        if not n:
            return "no Compute Engine entries: nothing to pay for"
        text = (f"worst case: {money(self.worst_case_usd)} for {n - len(self.unknown)} VM entr"
                f"{'y' if n - len(self.unknown) == 1 else 'ies'} at their max_run_duration, preempted tries "
                f"retried (estimate; prices: {'; '.join(self.origins()) or 'none'})")
        if self.unknown:
            text += f"; no price for {', '.join(self.unknown)}"
        return text


def entry_hours(entry: Entry) -> float:
    """How long one try of the entry's VM may live, in hours: its max_run_duration, and its
    debug_hold should it fail."""
    return ((entry.gce.max_run_duration_s + entry.gce.debug_hold_s) if entry.gce else 0) / 3600.0


def price_entries(p: Plan, book: Any = None) -> PlanCost:
    """Price every gce entry of ``p`` per hour (each provisioning model of its ladder) and at
    worst; sets each entry's ``price`` (and so its GitHub matrix item's)."""
    from .cost import PriceBook, Shape, worst_case_usd

    book = book if book is not None else PriceBook()
    out = PlanCost()
    gce = [e for e in p.entries if e.gce is not None]
    book.prepare(Shape.of(e.gce).region for e in gce)
    for e in gce:
        assert e.gce is not None
        prices = book.prices(e.gce, models=e.gce.provisioning_models)
        worst = worst_case_usd(prices, e.gce.provisioning_models, entry_hours(e),
                               retries=int(getattr(e, "retries_preempted", 0) or 0))
        out.prices[e.id] = prices
        out.worst_case[e.id] = worst
        e.price = {m: {"usd_per_hour": hp.usd_per_hour, "source": hp.source, "as_of": hp.as_of}
                   for m, hp in prices.items()}
        e.price["worst_case_usd"] = worst
        for hp in prices.values():
            if hp.usd_per_hour is None and hp.note and hp.note not in out.notes:
                out.notes.append(f"{e.id}: {hp.note}")
    out.notes = [*book.notes, *out.notes]
    return out


def cost_markdown(p: Plan, cost: PlanCost) -> str:
    """The plan's prices as a job-summary section."""
    from .cost import money

    lines = ["### What this run may cost", "",
             "| entry | machine | per hour | worst case |", "|---|---|---|---|"]
    for e in p.entries:
        if e.id not in cost.prices:
            continue
        assert e.gce is not None
        per_hour = ", ".join(f"{money(hp.usd_per_hour)} {m.lower()}" for m, hp in cost.prices[e.id].items())
        lines.append(f"| {e.id} | {e.gce.machine_type} | {per_hour} | {money(cost.worst_case[e.id])} |")
    lines += ["", f"**Worst case: {money(cost.worst_case_usd)}** (every entry for its max_run_duration, preempted "
              f"tries retried). Estimates from {'; '.join(cost.origins()) or 'no source'}.", ""]
    lines += [f"- {n}" for n in cost.notes]
    return "\n".join(lines) + "\n"


def _short_gpu(accelerator_type: str) -> str:
    return accelerator_type.removeprefix("nvidia-").removeprefix("tesla-")


def table(p: Plan, cost: PlanCost | None = None, width: int = 80) -> Any:
    """The entries for people (with ``cost``, each VM's price per hour for each provisioning model
    and its worst case): a table whose names are never broken; where it does not fit in ``width``
    columns, one block per entry instead."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from .cost import money

    n = len(p.entries)
    title = f"{p.matrix.doc.display}: {n} entr{'y' if n == 1 else 'ies'}"
    short = {"STANDARD": "std", "SPOT": "spot"}
    # with prices, each provisioning model of the VM ladder is named with its price: no VMs column
    heads = ["id", "machine", "GPUs", "zones"] + (["$/h per VM", "max $"] if cost is not None else ["VMs"])
    rows: list[list[str]] = []
    for e in p.entries:
        g = e.gce
        gpus = f"{e.gpu_count}x {_short_gpu(e.accelerator_type)}" if e.gpu_count and e.accelerator_type else "-"
        zones = "-"
        if g is not None and g.zones:
            zones = g.zones[0] + (f" +{len(g.zones) - 1}" if len(g.zones) > 1 else "")
        row = [e.id, g.machine_type if g else e.runs_on, gpus, zones]
        if cost is None:
            row.append(", ".join(m.lower() for m in g.provisioning_models) if g else "-")
        else:
            prices = cost.prices.get(e.id) or {}
            row += ["\n".join(f"{money(prices[m].usd_per_hour) if m in prices else '?'} {short.get(m, m.lower())}"
                              for m in g.provisioning_models) if g else "-",
                    money(cost.worst_case[e.id]) if e.id in cost.worst_case else "-"]
        rows.append(row)
    caption = [f"runner label of an entry: {p.entries[0].label.rsplit(p.entries[0].id, 1)[0]}<id>"] if p.entries else []
    if cost is not None and p.entries:
        caption += [cost.line(), *cost.notes]

    def w(i: int) -> int:  # a column's width: its longest line
        return max([len(heads[i])] + [len(line) for r in rows for line in r[i].split("\n")])

    needed = sum(w(i) for i in range(len(heads))) + (len(heads) - 1)  # one space between columns
    if not rows or needed <= width:
        # title and caption outside the table: a table as narrow as its names would wrap them
        t = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
        for h in heads:
            t.add_column(h, no_wrap=True, justify="right" if h == "max $" else "left")
        for r in rows:
            t.add_row(*r)
        return Group(Text(title, style="italic"), t, *[Text(line, style="dim") for line in caption])
    # too narrow for the table: a block per entry, every name whole on its line
    parts: list[Any] = [Text(title, style="italic")]
    for r in rows:
        parts.append(Text(r[0], style="bold"))
        for h, v in zip(heads[1:], r[1:]):
            parts.append(Text(f"  {h + ':':<9}{v.replace(chr(10), ', ')}"))
    parts += [Text(line, style="dim") for line in caption]
    return Group(*parts)


__all__ = [
    "Entry", "GceSpec", "Plan", "PlanCost", "cost_markdown", "entry_id", "price_entries", "entry_run", "entry_run_here", "expand", "expected_gpus", "find_entry", "glob_regex", "local_runs",
    "path_matches", "plan", "read_changed_files", "run_identity", "runner_label", "runtimes_for_changes",
    "LABEL_RE", "label_is_for", "label_run_prefix", "label_with_nonce", "new_nonce",
    "table", "warning_lines", "write_github_output",
]

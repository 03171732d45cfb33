"""Matrix file -> typed, validated model. The JSON Schema comes from the same model.

A matrix file names *runtimes* (what runs: notebooks, checks, environment, an
optional container image) and *machines* (where it runs: the ``local`` machine or a
Compute Engine VM type with its GPUs, zones, spot policy, boot image, disk and hard
lifetime). :mod:`gpu_runner.plan` expands them into entries.

Every problem is a :class:`~gpu_runner.errors.ConfigError` (exit code 2) whose text
reads ``FILE:LINE:COL: key.path: what is wrong``; the line and column come from
PyYAML's node marks, so they point at the offending key or value in the file as typed.

Regenerate the published schema after changing the model::

    python -m gpu_runner.config --write-schema      # writes matrix/schema.json
    python -m gpu_runner.config --check-schema      # exit 1 when it is stale
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)

from .errors import ConfigError

SCHEMA_PATH = Path("matrix") / "schema.json"
SCHEMA_ID = "https://github.com/gpu-runner/gpu-runner/blob/main/matrix/schema.json"

# --------------------------------------------------------------------------------------
# Names and patterns (Compute Engine's own, from the v1 API description)
# --------------------------------------------------------------------------------------

NAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})$"
"""Runtime and machine names: letters, digits, '.', '_', '-'; they become slugs in ids."""
GCE_NAME_RE = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")
"""Instance names (RFC 1035): also the runner name and label, see :func:`gpu_runner.plan.runner_label`."""
LABEL_KEY_PATTERN = r"^[a-z][-_a-z0-9]{0,62}$"
LABEL_VALUE_PATTERN = r"^[-_a-z0-9]{0,63}$"
ZONE_PATTERN = r"^(?:[a-z]+-[a-z]+[0-9]+-[a-z]|[a-z])$"
MACHINE_TYPE_PATTERN = r"^[a-z][a-z0-9]*-[a-z0-9-]*[a-z0-9]$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

RESERVED_LABELS = ("gpu-runner", "gh-repo", "gh-run-id", "gh-run-attempt", "entry", "created")
"""GCE labels gpu-runner sets itself (DESIGN.md, section 4); a matrix may not set them."""

from .execute.spec import BUILTIN_CHECKS  # noqa: E402 - defined beside what runs them, imported by both

DEFAULT_CHECKS: tuple[str, ...] = BUILTIN_CHECKS

DEFAULT_BOOT_IMAGE_PROJECT = "deeplearning-platform-release"
DEFAULT_BOOT_IMAGE_FAMILY = "common-cu128-ubuntu-2204-nvidia-570"
"""The one place the default boot image is named: a current Deep Learning VM family (Ubuntu 22.04,
CUDA 12.8, NVIDIA driver 570, Docker), whose driver runs every GPU gpu-runner knows, Blackwell (B200)
included. The Debian 11 families (``common-cu124-debian-11-py310``...) are deprecated.
See https://cloud.google.com/deep-learning-vm/docs/images (the families) and
https://cloud.google.com/deep-learning-vm/docs/release-notes; ``gpu-runner doctor`` says when the
family in use is deprecated (``images.getFromFamily``, its ``deprecated.state``)."""
DEFAULT_DISK_SIZE_GB = 100
DEFAULT_DISK_TYPE = "pd-balanced"
DEFAULT_MAX_RUN_DURATION_S = 2 * 3600.0
DEFAULT_IDLE_TIMEOUT_S = 15 * 60.0
MIN_IDLE_TIMEOUT_S = 60.0
"""A VM whose runner has not been given a job within this deletes itself."""
DEFAULT_PREEMPTED_RETRIES = 1
MAX_PREEMPTED_RETRIES = 2
"""The reusable workflow has one try and up to two retries of an entry (gpu-entry.yml)."""
DEFAULT_RUNS_ON = "ubuntu-latest"
MIN_MAX_RUN_DURATION_S = 30.0
MIN_DEBUG_HOLD_S = 60.0
MAX_DEBUG_HOLD_S = 86400.0
MAX_MAX_RUN_DURATION_S = 120 * 86400.0

DISK_TYPES = (
    "pd-standard", "pd-balanced", "pd-ssd", "pd-extreme",
    "hyperdisk-balanced", "hyperdisk-extreme", "hyperdisk-throughput", "hyperdisk-ml",
)
SPOT_POLICIES = ("never", "preferred", "only")
DEFAULT_SPOT_GPU = "preferred"
"""A GPU machine's spot policy when the matrix says none: SPOT first, STANDARD when no zone has
SPOT capacity; a preempted try is retried (retries.preempted, on STANDARD)."""
DEFAULT_SPOT_CPU = "never"

# --------------------------------------------------------------------------------------
# Compute Engine machine families and their GPUs (checked before any VM is asked for)
# --------------------------------------------------------------------------------------

# Accelerator-optimized types: the GPUs come with the machine type (no guestAccelerators).
BUILTIN_GPU_TYPES: dict[str, tuple[str, int]] = {
    **{f"g2-standard-{n}": ("nvidia-l4", 1) for n in (4, 8, 12, 16, 32)},
    "g2-standard-24": ("nvidia-l4", 2),
    "g2-standard-48": ("nvidia-l4", 4),
    "g2-standard-96": ("nvidia-l4", 8),
    **{f"a2-highgpu-{n}g": ("nvidia-tesla-a100", n) for n in (1, 2, 4, 8)},
    "a2-megagpu-16g": ("nvidia-tesla-a100", 16),
    **{f"a2-ultragpu-{n}g": ("nvidia-a100-80gb", n) for n in (1, 2, 4, 8)},
    **{f"a3-highgpu-{n}g": ("nvidia-h100-80gb", n) for n in (1, 2, 4, 8)},
    "a3-edgegpu-8g": ("nvidia-h100-80gb", 8),
    "a3-megagpu-8g": ("nvidia-h100-mega-80gb", 8),
    "a3-ultragpu-8g": ("nvidia-h200-141gb", 8),
    "a4-highgpu-8g": ("nvidia-b200", 8),
}
BUILTIN_GPU_FAMILIES: dict[str, tuple[str, ...]] = {
    "g2": ("nvidia-l4",),
    "a2": ("nvidia-tesla-a100", "nvidia-a100-80gb"),
    "a3": ("nvidia-h100-80gb", "nvidia-h100-mega-80gb", "nvidia-h200-141gb"),
    "a4": ("nvidia-b200",),
}
# N1 takes guest accelerators: the GPU type and the counts it may attach.
N1_GUEST_ACCELERATORS: dict[str, tuple[int, ...]] = {
    "nvidia-tesla-t4": (1, 2, 4),
    "nvidia-tesla-v100": (1, 2, 4, 8),
    "nvidia-tesla-p4": (1, 2, 4),
    "nvidia-tesla-p100": (1, 2, 4),
}
# General-purpose and compute families that take no GPU at all.
CPU_ONLY_FAMILIES = frozenset(
    "e2 n2 n2d n4 n4d c2 c2d c3 c3d c4 c4a c4d t2a t2d m1 m2 m3 m4 h3 h4d x4 z3".split()
)


@dataclass(frozen=True)
class GpuPairing:
    """What Compute Engine will attach for a machine type: resolved from the tables above."""

    accelerator_type: str | None
    accelerator_count: int
    attach_accelerators: bool
    """True when the request must list ``guestAccelerators`` (N1); False when the GPUs come
    with the machine type (G2, A2, A3, A4) or there are none."""


# --------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*d)?\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*"
                          r"(?:(\d+(?:\.\d+)?)\s*m)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$")
DURATION_SCHEMA = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "minLength": 1, "examples": ["90s", "30m", "2h", "1h30m", "1d"],
         "pattern": r"^\s*(?:\d+(?:\.\d+)?|(?:\d+(?:\.\d+)?\s*d)?\s*(?:\d+(?:\.\d+)?\s*h)?\s*"
                    r"(?:\d+(?:\.\d+)?\s*m)?\s*(?:\d+(?:\.\d+)?\s*s)?)\s*$"},
    ],
    "description": "Seconds, or a duration such as '90s', '30m', '2h', '1h30m'.",
}


def parse_duration(value: Any) -> float:
    """``3600``, ``"3600"``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"``, ``"1d"`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30m or 2h, got a boolean ({value!r})")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        m = _DURATION_RE.match(text)
        if text and re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and m and any(m.groups()):
            d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
            seconds = d * 86400 + h * 3600 + mi * 60 + s
        else:
            raise ValueError(f"{value!r} is not a duration; write seconds or e.g. 90s, 30m, 2h, 1h30m")
    else:
        raise ValueError(f"expected a duration such as 30m or 2h, got {yaml_type(value)}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be more than 0 seconds, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(DURATION_SCHEMA)]


def _env_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value  # a string passes; anything else fails the str check with a clear type


EnvValue = Annotated[str, BeforeValidator(_env_value), WithJsonSchema({"type": ["string", "number", "boolean"]})]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN)]
Zone = Annotated[str, StringConstraints(pattern=ZONE_PATTERN)]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]


def _check_item(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, use_attribute_docstrings=True)


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


class Accelerator(_Model):
    """GPUs: for N1 they are guest accelerators; for G2/A2/A3 they come with the machine
    type and may be left out (given, they must match it)."""

    type: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][-a-z0-9]*$")]
    """Compute Engine accelerator type, e.g. nvidia-l4, nvidia-tesla-t4, nvidia-tesla-a100."""
    count: Annotated[int, Field(ge=1, le=16)] = 1
    """How many GPUs."""


class BootImage(_Model):
    """The VM's boot disk image: a family (the newest image in it) or one image by name."""

    project: NonEmpty = DEFAULT_BOOT_IMAGE_PROJECT
    """Project that holds the image."""
    family: NonEmpty | None = None
    """Image family: the newest image in it is used (default: a current Deep Learning VM family)."""
    name: NonEmpty | None = None
    """One image by name (instead of a family)."""

    @property
    def source_image(self) -> str:
        if self.name:
            return f"projects/{self.project}/global/images/{self.name}"
        return f"projects/{self.project}/global/images/family/{self.family or DEFAULT_BOOT_IMAGE_FAMILY}"


class Disk(_Model):
    """Boot disk."""

    size_gb: Annotated[int, Field(ge=10, le=65536)] = DEFAULT_DISK_SIZE_GB
    """Size in GB (at least 10; at least the image's size)."""
    type: Literal[DISK_TYPES] = DEFAULT_DISK_TYPE  # type: ignore[valid-type]
    """Disk type."""


class Retries(_Model):
    """When an entry is tried again in the same workflow run. Failures of a notebook or a check
    never are."""

    preempted: Annotated[int, Field(ge=0, le=MAX_PREEMPTED_RETRIES)] = DEFAULT_PREEMPTED_RETRIES
    """Retries after Compute Engine preempted the entry's Spot VM before its run ended (0-2;
    default 1): on STANDARD when spot is preferred, else on SPOT again."""


class MachineSettings(_Model):
    """Machine settings that ``defaults.machine`` may set for every machine."""

    zones: list[Zone] | None = Field(default=None, min_length=1)
    """Zones in order of preference, e.g. [us-central1-a, us-central1-b]; a single letter
    (a, b, ...) means that zone of gce.region."""
    spot: Literal[SPOT_POLICIES] | None = None  # type: ignore[valid-type]
    """never: STANDARD VMs only; preferred: SPOT first, STANDARD when no zone has SPOT capacity
    (a preempted try is retried on STANDARD); only: SPOT VMs only. Default: preferred for a
    machine with GPUs, never without."""
    boot_image: BootImage | None = None
    """Boot image; default: a Deep Learning VM family with NVIDIA drivers."""
    disk: Disk | None = None
    """Boot disk size and type; default 100 GB pd-balanced."""
    max_run_duration: Duration | None = None
    """Hard lifetime that Compute Engine enforces (the VM is deleted after it even if
    everything else died); default 2h."""
    idle_timeout: Duration | None = None
    """The VM deletes itself when its runner has not been given a job within this (the run job
    was skipped or cancelled); default 15m."""
    retries: Retries | None = None
    """Retries of an entry in the same workflow run: {preempted: N} (default 1)."""
    labels: dict[LabelKey, LabelValue] | None = None
    """Extra GCE labels on the VM (lower case; the names gpu-runner sets itself are reserved)."""
    debug_hold: Duration | None = None
    """Keep a failed entry's VM this long after its job, for a look (ssh, Jupyter), instead of
    deleting it; a passing entry's VM is deleted as usual. At most 1d; also a runtime key, and the
    workflow input debug-hold overrides it for one run."""


class PricePerHour(_Model):
    """What one VM costs per hour, for each provisioning model."""

    standard: Annotated[float, Field(ge=0, le=100000)] | None = None
    """USD per hour of a STANDARD (on-demand) VM: the machine, its GPUs and its disk."""
    spot: Annotated[float, Field(ge=0, le=100000)] | None = None
    """USD per hour of a SPOT VM."""


def _price(value: Any) -> Any:
    """A number is every provisioning model's price; a mapping names them."""
    if isinstance(value, bool) or not isinstance(value, (int, float, dict)):
        raise ValueError(f"expected a number (USD per hour) or {{standard: X, spot: Y}}, got {yaml_type(value)}")
    if isinstance(value, (int, float)):
        if not (math.isfinite(value) and 0 <= value <= 100000):
            raise ValueError(f"a price per hour is between 0 and 100000 (USD), got {value!r}")
        return {"standard": float(value), "spot": float(value)}
    return {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in value.items()}


PRICE_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": 100000},
        {"type": "object", "additionalProperties": False, "minProperties": 1,
         "properties": {m: {"type": "number", "minimum": 0, "maximum": 100000,
                            "description": f"USD per hour of a {m.upper()} VM."} for m in ("standard", "spot")}},
    ],
    "description": "USD per hour of the whole VM: a number for every provisioning model, or {standard, spot}.",
}
PriceSpec = Annotated[PricePerHour, BeforeValidator(_price), WithJsonSchema(PRICE_SCHEMA)]


class Machine(MachineSettings):
    """Where an entry runs: this machine (``local``) or a Compute Engine VM (``gce``)."""

    provider: Literal["gce", "local"] = "gce"
    """gce: an ephemeral VM with a just-in-time GitHub runner; local: the machine (or the
    GitHub job runner) that runs gpu-runner."""
    description: str | None = None
    """Shown in tables and reports."""
    machine_type: Annotated[str, StringConstraints(pattern=MACHINE_TYPE_PATTERN)] | None = None
    """Compute Engine machine type, e.g. g2-standard-8 (required for gce)."""
    accelerator: Accelerator | None = None
    """GPUs. For a local machine: the GPUs expected there (the gpu check compares)."""
    runs_on: NonEmpty | None = None
    """local machines only: the GitHub runner label the job uses in Actions (default
    ubuntu-latest)."""
    price_per_hour: PriceSpec | None = None
    """What the VM costs per hour in USD (machine, GPUs and disk), for cost estimates: a number
    for every provisioning model, or {standard: X, spot: Y}. Wins over the Cloud Billing Catalog
    and gpu-runner's price table."""


class CheckSpec(_Model):
    """A system check: a built-in by name, or a named shell command with an expected exit code."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    """A built-in (gpu, cuda, compilers, frameworks, resources) or the name of a command check."""
    run: NonEmpty | None = None
    """Shell command (command checks only)."""
    expect_exit: Annotated[int, Field(ge=0, le=255)] = 0
    """Exit code that means passed."""
    timeout: Duration | None = None
    """Limit for the command; default 5m."""


from .compare import DEFAULT_REGRESSION  # noqa: E402 - defined where regressions are found


class Regression(_Model):
    """When a notebook counts as slower or hungrier than in the baseline (``gpu-runner report
    --baseline``): both the relative and the absolute change must be exceeded. The same
    thresholds, the other way round, make an improvement. Keys left out keep their defaults."""

    time_percent: Annotated[float, Field(ge=0, le=100000)] | None = None
    """Wall time: more than this many percent slower (default 20)."""
    time_min: Duration | None = None
    """Wall time: and more than this much slower (default 5s)."""
    memory_percent: Annotated[float, Field(ge=0, le=100000)] | None = None
    """GPU peak memory and kernel peak RSS: more than this many percent higher (default 10)."""
    memory_min_mib: Annotated[float, Field(ge=0)] | None = None
    """GPU peak memory and kernel peak RSS: and more than this many MiB higher (default 256)."""


class RuntimeSettings(_Model):
    """Runtime settings that ``defaults.runtime`` may set for every runtime."""

    env: dict[Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)], EnvValue] | None = None
    """Environment of the kernels (merged over defaults.runtime.env)."""
    parameters: dict[Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)], Any] | None = None
    """Injected after the cell tagged 'parameters' (merged over defaults.runtime.parameters)."""
    timeout: Duration | None = None
    """Per-notebook limit; default 1h."""
    cell_timeout: Duration | None = None
    """Per-cell limit; default 10m."""
    kernel: NonEmpty | None = None
    """Kernel for every notebook instead of its own kernelspec."""
    python: NonEmpty | None = None
    """The runtime's Python interpreter (a path, or a command on PATH, e.g. /opt/conda/bin/python):
    Python kernels and the framework checks run under it. Default: the job's python3 in the
    action, else Jupyter's own resolution; --python and GPU_RUNNER_PYTHON also name it."""
    kernel_overlay: bool | None = None
    """When the runtime's Python has no ipykernel, install it with the runtime's own pip into a
    cache folder outside the runtime (default true); false: such notebooks fail with a setup error."""
    rerun: bool | None = None
    """After a clean pass, run every cell again in the same kernel."""
    checks: Annotated[list[CheckSpec], BeforeValidator(lambda v: [_check_item(i) for i in v] if isinstance(v, list) else v),
                      Field(json_schema_extra={"x-checks": True})] | None = None
    """System checks before the notebooks; default all built-ins; [] for none."""
    container_options: NonEmpty | None = None
    """Extra `docker run` options for the container (e.g. --shm-size 16g)."""
    regression: Regression | None = None
    """Thresholds for regressions against the baseline (merged key by key over
    defaults.runtime.regression); default: time +20% and 5s, memory +10% and 256 MiB."""
    debug_hold: Duration | None = None
    """Keep the VM of a failed entry of this runtime this long after its job, for a look (wins
    over the machine's debug_hold); gce machines only."""


class Runtime(RuntimeSettings):
    """What runs: notebooks, checks, environment; optionally inside a container image."""

    description: str | None = None
    """Shown in tables and reports."""
    container: NonEmpty | None = None
    """Container image the notebooks run in on the VM (e.g. pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime)."""
    notebooks: list[NonEmpty] = Field(min_length=1)
    """Notebooks: files, folders or globs, relative to the repository root."""
    paths: list[NonEmpty] = Field(default_factory=list)
    """More globs (relative to the repository root) whose change selects this runtime in
    `plan --changed-files`, e.g. docker/pytorch/**."""
    machines: list[Name] | None = Field(default=None, min_length=1)
    """Machines it runs on (names under machines:); default every machine."""


class Defaults(_Model):
    """Settings every runtime and machine gets unless it sets its own."""

    runtime: RuntimeSettings | None = None
    machine: MachineSettings | None = None


def _runner_version(value: Any) -> Any:
    from .github.releases import MIN_RUNNER_VERSION, accepted

    if isinstance(value, str) and not accepted(value):
        raise ValueError(f"runner version {value} is older than {MIN_RUNNER_VERSION}, the oldest GitHub lets register")
    return value


class RunnerPin(_Model):
    """A fixed GitHub Actions runner release instead of the current one (an image with the runner
    baked in, no access to github.com's releases, GitHub Enterprise Server)."""

    version: Annotated[str, StringConstraints(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$"), AfterValidator(_runner_version)]
    """Runner version, e.g. 2.330.0: at least 2.329.0 (GitHub refuses older ones), and GitHub gives
    jobs only to a runner that installed each new release within 30 days of its publication."""
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
    """sha256 of its actions-runner-linux-x64-VERSION.tar.gz, as the release lists it."""


class GceSettings(_Model):
    """Project-level Compute Engine settings."""

    project: Annotated[str, StringConstraints(pattern=r"^[a-z][-a-z0-9.:]{4,61}[a-z0-9]$")] | None = None
    """GCP project; default: GOOGLE_CLOUD_PROJECT."""
    region: Annotated[str, StringConstraints(pattern=r"^[a-z]+-[a-z]+[0-9]+$")] | None = None
    """Region that single-letter zones belong to, e.g. us-central1."""
    network: NonEmpty | None = None
    """VPC network (default: default)."""
    subnetwork: NonEmpty | None = None
    """Subnetwork (for custom-mode networks)."""
    external_ip: bool = True
    """Give VMs an external IP (false needs Cloud NAT for the runner to reach GitHub)."""
    service_account: NonEmpty | None = None
    """Service account email for the VMs. Default: none, so code on a VM gets no Google
    credentials. 'default' is the project's default compute account (often an Editor: avoid)."""
    scopes: list[NonEmpty] | None = None
    """OAuth scopes for the service account (default: cloud-platform; its IAM roles decide)."""
    self_delete: bool = False
    """The VM deletes itself after its job; needs service_account, with compute.instances.delete
    on it. Default: the VM stays up, idle, until the entry's stop job deletes it (its
    maxRunDuration at the latest)."""
    labels: dict[LabelKey, LabelValue] | None = None
    """GCE labels on every VM."""
    runner: RunnerPin | None = None
    """Pin the GitHub Actions runner release {version, sha256}; default: the current release,
    asked of GitHub when an entry starts (a runner on the image is used when it is at least that)."""


class Selector(_Model):
    """Names a runtime and/or machine (exact names or glob patterns like pytorch-*)."""

    runtime: NonEmpty | None = None
    machine: NonEmpty | None = None


class IncludeRule(_Model):
    """Adds one entry (runtime on machine), or adjusts it when the expansion has it already."""

    runtime: Name
    machine: Name
    env: dict[Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)], EnvValue] | None = None
    """Merged over the runtime's env for this entry."""
    parameters: dict[Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)], Any] | None = None
    """Merged over the runtime's parameters for this entry."""


class Matrix(_Model):
    """A gpu-runner matrix: runtimes x machines (https://github.com/gpu-runner/gpu-runner)."""

    model_config = ConfigDict(title="gpu-runner matrix", json_schema_extra={"$id": SCHEMA_ID})

    version: Literal[1] = 1
    """Format version."""
    root: NonEmpty | None = None
    """Repository root, relative to this file's folder; notebooks and paths are relative to it.
    Default: the git work tree that holds this file, else the current directory."""
    gce: GceSettings | None = None
    defaults: Defaults | None = None
    machines: dict[Name, Machine] = Field(min_length=1)
    """Machines by name."""
    runtimes: dict[Name, Runtime] = Field(min_length=1)
    """Runtimes by name."""
    include: list[IncludeRule] = Field(default_factory=list)
    """Entries to add (or adjust) after runtimes x machines is expanded."""
    exclude: list[Selector] = Field(default_factory=list)
    """Entries to drop from the expansion (include rules are applied after)."""
    paths: list[NonEmpty] = Field(default_factory=list)
    """Globs (relative to the repository root) whose change selects every runtime in
    `plan --changed-files`, e.g. the workflow file; a change to this matrix file always does."""


# --------------------------------------------------------------------------------------
# JSON Schema
# --------------------------------------------------------------------------------------


def _tighten(node: Any) -> None:
    """Maps with patterned keys reject other keys too (pydantic leaves them open); a check
    is a built-in's name or a command check."""
    if isinstance(node, dict):
        if node.pop("x-checks", False):
            for alt in node.get("anyOf", [node]):
                if alt.get("type") == "array":
                    alt["items"] = {"anyOf": [{"type": "string", "enum": list(BUILTIN_CHECKS)}, alt["items"]]}
        pp = node.get("patternProperties")
        if isinstance(pp, dict) and len(pp) == 1 and "additionalProperties" not in node:
            (pattern,) = pp
            node["propertyNames"] = {"pattern": pattern}
        for v in node.values():
            _tighten(v)
    elif isinstance(node, list):
        for v in node:
            _tighten(v)


def json_schema() -> dict[str, Any]:
    """The matrix file's JSON Schema (draft 2020-12), generated from :class:`Matrix`."""
    schema = Matrix.model_json_schema(mode="validation")
    _tighten(schema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


# --------------------------------------------------------------------------------------
# YAML: load with marks, duplicate keys, syntax errors with a key path
# --------------------------------------------------------------------------------------

Path_ = tuple[Any, ...]


def yaml_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        short = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({short!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def key_path(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass
class Document:
    """A parsed YAML file with the node of every key and value, for FILE:LINE:COL."""

    path: Path
    display: str
    root: yaml.Node | None
    data: Any

    def node_at(self, path: Path_, *, key: bool = False) -> tuple[yaml.Node | None, bool]:
        """The deepest node along ``path``; True when it is the node of the full path."""
        node = self.root
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                        node = k if (last and key) else v
                        break
                else:
                    return node, False
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
            else:
                return node, False
        return node, True

    def location(self, path: Path_ = (), *, key: bool = False) -> str:
        node, _ = self.node_at(path, key=key)
        if node is None:
            return f"{self.display}:1:1"
        m = node.start_mark
        return f"{self.display}:{m.line + 1}:{m.column + 1}"

    def error(self, path: Path_, message: str, *, key: bool = False) -> ConfigError:
        return ConfigError(message, location=self.location(path, key=key), key=key_path(path) or None)


@dataclass
class Problem:
    """One finding, before it becomes an error or a warning."""

    path: Path_
    message: str
    key: bool = False

    def render(self, doc: Document) -> str:
        kp = key_path(self.path)
        return f"{doc.location(self.path, key=self.key)}: " + (f"{kp}: " if kp else "") + self.message


def _raise_all(doc: Document, problems: list[Problem]) -> None:
    """Raise the first problem (in file order) as a ConfigError; the others follow on their own lines."""
    if not problems:
        return

    def order(p: Problem) -> tuple[int, int]:
        node, _ = doc.node_at(p.path, key=p.key)
        return (node.start_mark.line, node.start_mark.column) if node is not None else (0, 0)

    problems = sorted(problems, key=order)
    first = problems[0]
    err = doc.error(first.path, first.message, key=first.key)
    if len(problems) > 1:
        rest = "\n".join(p.render(doc) for p in problems[1:])
        err.message = err.message + "\n" + rest
        err.args = (err.message,)
    raise err


def _syntax_context(text: str) -> Path_:
    """The key path where parsing stopped, from the parser events read before the error."""
    stack: list[dict[str, Any]] = []  # {"map": key, "want_key": bool} or {"seq": last index}
    node_events = (yaml.ScalarEvent, yaml.AliasEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent)
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, node_events) and stack:
                top = stack[-1]
                if "seq" in top:
                    top["seq"] += 1
                elif top["want_key"]:
                    top["map"] = event.value if isinstance(event, yaml.ScalarEvent) else "?"
                    top["want_key"] = False
                else:
                    top["want_key"] = True  # this node is the value; a key comes next
            if isinstance(event, yaml.MappingStartEvent):
                stack.append({"map": None, "want_key": True})
            elif isinstance(event, yaml.SequenceStartEvent):
                stack.append({"seq": -1})
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                stack.pop()
    except yaml.YAMLError:
        pass
    path: list[Any] = []
    for i, frame in enumerate(stack):
        top = i == len(stack) - 1
        if "seq" in frame:
            index = frame["seq"] + (1 if top else 0)
            path.append(max(index, 0))
        elif frame["map"] is not None and (not top or not frame["want_key"]):
            path.append(frame["map"])
    return tuple(path)


def _syntax_error(display: str, text: str, exc: yaml.MarkedYAMLError) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    col = mark.column + 1 if mark else 1
    problem = exc.problem or "invalid YAML"
    lines = text.splitlines()
    char = ""
    if mark is not None and mark.line < len(lines) and mark.column < len(lines[mark.line]):
        char = lines[mark.line][mark.column]
    if "\t" in (problem + char) and ("cannot start any token" in problem or char == "\t"):
        message = "a tab character is not allowed here; YAML indents with spaces only"
    else:
        message = f"YAML syntax error: {problem}"
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            message += f" ({exc.context} at line {exc.context_mark.line + 1})"
    path = _syntax_context(text)
    return ConfigError(message, location=f"{display}:{line}:{col}", key=key_path(path) or None)


def _first_duplicate(root: yaml.Node) -> tuple[Path_, str, yaml.Node] | None:
    """The first repeated key in file order: (its key path, message, its key node)."""
    found: list[tuple[Path_, str, yaml.Node]] = []
    seen_nodes: set[int] = set()

    def walk(node: yaml.Node, path: Path_) -> None:
        if id(node) in seen_nodes:  # aliases share nodes; recursive ones would loop
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, yaml.Node] = {}
            for k, v in node.value:
                kv = k.value if isinstance(k, yaml.ScalarNode) else "?"
                if kv in first and kv != "<<":
                    found.append((path + (kv,), f"duplicate key {kv!r} (first defined at line "
                                  f"{first[kv].start_mark.line + 1})", k))
                first.setdefault(kv, k)
                walk(v, path + (kv,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    walk(root, ())
    return min(found, key=lambda f: (f[2].start_mark.line, f[2].start_mark.column)) if found else None


def load_yaml(path: Path, display: str | None = None) -> Document:
    """Read and parse ``path`` keeping node marks; syntax errors and duplicate keys raise ConfigError."""
    display = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no such matrix file: {display}") from None
    except IsADirectoryError:
        raise ConfigError(f"{display} is a folder; --matrix takes a YAML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text ({e.reason} at byte {e.start})", location=f"{display}:1:1") from None
    except OSError as e:
        raise ConfigError(f"cannot read the matrix file {display}: {e.strerror}") from None
    return parse_yaml(text, path=path, display=display)


def parse_yaml(text: str, *, path: Path, display: str) -> Document:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise ConfigError("the file is empty; a matrix needs machines: and runtimes:", location=f"{display}:1:1")
        doc = Document(path=path, display=display, root=root, data=None)
        dup = _first_duplicate(root)
        if dup is not None:
            dup_path, message, node = dup
            m = node.start_mark
            raise ConfigError(message, location=f"{display}:{m.line + 1}:{m.column + 1}", key=key_path(dup_path))
        doc.data = loader.construct_document(root)
    except yaml.MarkedYAMLError as e:
        raise _syntax_error(display, text, e) from None
    except yaml.YAMLError as e:  # pragma: no cover - every PyYAML error we know carries marks
        raise ConfigError(f"YAML error: {e}", location=f"{display}:1:1") from None
    finally:
        loader.dispose()
    return doc


# --------------------------------------------------------------------------------------
# Validation: pydantic errors -> FILE:LINE:COL: key.path: message
# --------------------------------------------------------------------------------------

_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "string_type": "a string", "bool_type": "a boolean (true or false)", "bool_parsing": "a boolean (true or false)",
    "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _strip(ann: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X``."""
    while True:
        origin = typing.get_origin(ann)
        if origin is Annotated:
            ann = typing.get_args(ann)[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(rest) != 1:
                return ann
            ann = rest[0]
        else:
            return ann


def _model_at(path: Path_) -> type[BaseModel] | None:
    """The model class whose fields live at ``path`` (for listing the allowed keys)."""
    model: Any = Matrix
    i = 0
    while i < len(path):
        fields = getattr(model, "model_fields", None)
        if fields is None or path[i] not in fields:
            return None
        ann = _strip(fields[path[i]].annotation)
        i += 1
        while typing.get_origin(ann) in (dict, list):  # a map key or a list index comes next
            ann = _strip(typing.get_args(ann)[-1])
            i += 1
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _pydantic_problem(doc: Document, err: dict[str, Any]) -> Problem:
    loc = tuple(err["loc"])
    etype = err["type"]
    value = err.get("input")
    if loc and loc[-1] == "[key]":  # a map key broke its pattern
        path = loc[:-1]
        return Problem(path, f"{str(path[-1])!r} is not a valid name here ({_pattern_words(err)})", key=True)
    if etype == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = list(model.model_fields) if model is not None else []
        hint = did_you_mean(str(loc[-1]), allowed)
        if not hint and allowed:
            hint = f" (allowed: {', '.join(allowed)})"
        return Problem(loc, f"unknown key {str(loc[-1])!r}{hint}", key=True)
    if etype == "missing":
        return Problem(loc[:-1], f"missing required key {str(loc[-1])!r}")
    if etype in _TYPE_WORDS:
        return Problem(loc, f"expected {_TYPE_WORDS[etype]}, got {yaml_type(value)}")
    if etype in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        choices = re.findall(r"'([^']*)'|(\d+)", expected)
        names = [a or b for a, b in choices]
        hint = did_you_mean(str(value), names) if isinstance(value, str) else ""
        return Problem(loc, f"{value!r} is not one of: {', '.join(names)}{hint}")
    if etype == "string_pattern_mismatch":
        return Problem(loc, f"{value!r} is not valid here ({_pattern_words(err)})")
    if etype == "too_short" and isinstance(value, (list, dict)) and not value:
        return Problem(loc, "must not be empty")
    if etype == "value_error":
        return Problem(loc, str(err.get("ctx", {}).get("error", err["msg"])))
    msg = err["msg"]
    return Problem(loc, msg[:1].lower() + msg[1:])


_PATTERN_WORDS = {
    NAME_PATTERN: "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63",
    LABEL_KEY_PATTERN: "GCE label keys: lower-case letters, digits, '_' and '-', starting with a letter, at most 63",
    LABEL_VALUE_PATTERN: "GCE label values: lower-case letters, digits, '_' and '-', at most 63",
    ZONE_PATTERN: "a zone such as us-central1-a, or a single letter with gce.region set",
    MACHINE_TYPE_PATTERN: "a Compute Engine machine type such as g2-standard-8",
    ENV_NAME_PATTERN: "an environment variable name",
    IDENTIFIER_PATTERN: "a Python identifier",
}


def _pattern_words(err: dict[str, Any]) -> str:
    pattern = err.get("ctx", {}).get("pattern", "")
    return _PATTERN_WORDS.get(pattern, f"it must match {pattern}")


# --------------------------------------------------------------------------------------
# Rules beyond types: references, GCE pairings, names, labels
# --------------------------------------------------------------------------------------


def slug(name: str) -> str:
    """Lower case, runs of anything but [a-z0-9] -> a single '-', trimmed: safe in GCE names."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s or "x"


def machine_family(machine_type: str) -> str:
    return machine_type.split("-", 1)[0]


def gpu_pairing(machine_type: str, accelerator: Accelerator | None) -> tuple[GpuPairing, str | None, str | None]:
    """Resolve what a machine type gets; returns (pairing, error, warning)."""
    family = machine_family(machine_type)
    if machine_type in BUILTIN_GPU_TYPES:
        acc_type, acc_count = BUILTIN_GPU_TYPES[machine_type]
        pairing = GpuPairing(acc_type, acc_count, attach_accelerators=False)
        if accelerator is not None and (accelerator.type != acc_type or accelerator.count != acc_count):
            return pairing, (f"{machine_type} comes with {acc_count} x {acc_type}, not {accelerator.count} x "
                             f"{accelerator.type}; leave accelerator out or make it match"), None
        return pairing, None, None
    if family in BUILTIN_GPU_FAMILIES:
        allowed = BUILTIN_GPU_FAMILIES[family]
        if accelerator is not None and accelerator.type not in allowed:
            return GpuPairing(accelerator.type, accelerator.count, False), (
                f"{family} machine types come with {' or '.join(allowed)}, not {accelerator.type}"), None
        acc = accelerator
        return (GpuPairing(acc.type if acc else None, acc.count if acc else 0, False), None,
                f"{machine_type} is not a {family} machine type gpu-runner knows; its GPU count is not checked")
    if family == "n1":
        if accelerator is None:
            return GpuPairing(None, 0, False), None, None
        if accelerator.type not in N1_GUEST_ACCELERATORS:
            known = ", ".join(N1_GUEST_ACCELERATORS)
            where = _family_of_accelerator(accelerator.type)
            hint = f" ({accelerator.type} comes with {where} machine types)" if where else ""
            return GpuPairing(accelerator.type, accelerator.count, True), (
                f"n1 machine types take {known} as guest accelerators, not {accelerator.type}{hint}"), None
        counts = N1_GUEST_ACCELERATORS[accelerator.type]
        if accelerator.count not in counts:
            return GpuPairing(accelerator.type, accelerator.count, True), (
                f"n1 takes {', '.join(map(str, counts))} x {accelerator.type}, not {accelerator.count}"), None
        return GpuPairing(accelerator.type, accelerator.count, True), None, None
    if family in CPU_ONLY_FAMILIES:
        if accelerator is not None:
            where = _family_of_accelerator(accelerator.type)
            hint = f"{accelerator.type} comes with {where} machine types" if where else (
                "GPUs attach to n1 (T4, V100, P4, P100) or come with g2 (L4), a2 (A100), a3 (H100)")
            return GpuPairing(None, 0, False), f"{family} machine types take no GPUs; {hint}", None
        return GpuPairing(None, 0, False), None, None
    acc = accelerator
    return (GpuPairing(acc.type if acc else None, acc.count if acc else 0, acc is not None), None,
            f"{machine_type}: machine family {family!r} is not one gpu-runner knows; "
            "its GPU pairing is not checked")


def _family_of_accelerator(acc_type: str) -> str | None:
    if acc_type in N1_GUEST_ACCELERATORS:
        return "n1"
    for fam, accelerators in BUILTIN_GPU_FAMILIES.items():
        if acc_type in accelerators:
            return fam
    return None


def _names_problem(kind: str, path: Path_, value: str, names: list[str]) -> Problem:
    return Problem(path, f"unknown {kind} {value!r}{did_you_mean(value, names)} ({kind}s: {', '.join(names)})")


def _has_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _rules(doc: Document, m: Matrix) -> tuple[list[Problem], list[Problem]]:
    errors: list[Problem] = []
    warnings: list[Problem] = []
    machines = list(m.machines)
    runtimes = list(m.runtimes)
    defaults_m = (m.defaults.machine if m.defaults else None) or MachineSettings()
    defaults_r = (m.defaults.runtime if m.defaults else None) or RuntimeSettings()
    region = m.gce.region if m.gce else None

    for kind, names in (("runtime", runtimes), ("machine", machines)):
        seen: dict[str, str] = {}
        for name in names:
            s = slug(name)
            if s in seen:
                errors.append(Problem((kind + "s", name), f"{kind} names {seen[s]!r} and {name!r} give the same id "
                                      f"part {s!r}; rename one", key=True))
            seen[s] = name

    def zone_rules(zones: list[str] | None, path: Path_) -> None:
        for i, z in enumerate(zones or []):
            if len(z) == 1 and not region:
                errors.append(Problem(path + (i,), f"zone {z!r} is a single letter; set gce.region or write the full "
                                      "zone (e.g. us-central1-a)"))

    def label_rules(labels: dict[str, str] | None, path: Path_) -> None:
        for k in labels or {}:
            if k in RESERVED_LABELS:
                errors.append(Problem(path + (k,), f"label {k!r} is set by gpu-runner itself; choose another name",
                                      key=True))

    def hold_rule(hold: float | None, path: Path_) -> None:
        if hold is not None and not MIN_DEBUG_HOLD_S <= hold <= MAX_DEBUG_HOLD_S:
            errors.append(Problem(path, f"debug_hold must be between 1m and 1d, got {hold:g} seconds"))

    hold_rule(defaults_m.debug_hold, ("defaults", "machine", "debug_hold"))
    hold_rule(defaults_r.debug_hold, ("defaults", "runtime", "debug_hold"))
    for name, mach in m.machines.items():
        hold_rule(mach.debug_hold, ("machines", name, "debug_hold"))
    for name, rt in m.runtimes.items():
        hold_rule(rt.debug_hold, ("runtimes", name, "debug_hold"))
    zone_rules(defaults_m.zones, ("defaults", "machine", "zones"))
    label_rules(defaults_m.labels, ("defaults", "machine", "labels"))
    if m.gce:
        label_rules(m.gce.labels, ("gce", "labels"))
        if m.gce.service_account is None:
            if m.gce.self_delete:
                errors.append(Problem(("gce", "self_delete"), "self_delete needs gce.service_account: a VM with no "
                                      "service account cannot delete itself (stop deletes it)"))
            if m.gce.scopes is not None:
                errors.append(Problem(("gce", "scopes"), "scopes are for gce.service_account, which is not set "
                                      "(the VMs get no service account)"))

    for name, mach in m.machines.items():
        base: Path_ = ("machines", name)
        zone_rules(mach.zones, base + ("zones",))
        label_rules(mach.labels, base + ("labels",))
        if mach.provider == "local":
            for f in ("machine_type", "zones", "spot", "boot_image", "disk", "max_run_duration", "idle_timeout",
                      "retries", "labels", "price_per_hour", "debug_hold"):
                if f in mach.model_fields_set:
                    errors.append(Problem(base + (f,), f"{f} is for gce machines; this machine's provider is local",
                                          key=True))
            continue
        if isinstance(mach.price_per_hour, PricePerHour) and mach.price_per_hour.standard is None \
                and mach.price_per_hour.spot is None:
            errors.append(Problem(base + ("price_per_hour",), "give standard, spot or both (USD per hour)"))
        if mach.runs_on is not None:
            errors.append(Problem(base + ("runs_on",), "runs_on is for local machines; a gce machine runs on its own "
                                  "just-in-time runner", key=True))
        if mach.machine_type is None:
            errors.append(Problem(base, "missing required key 'machine_type' (provider gce)"))
        else:
            _, err, warn = gpu_pairing(mach.machine_type, mach.accelerator)
            where = base + (("accelerator",) if mach.accelerator is not None and err else ("machine_type",))
            if err:
                errors.append(Problem(where, err))
            if warn:
                warnings.append(Problem(base + ("machine_type",), warn))
        if not (mach.zones or defaults_m.zones):
            errors.append(Problem(base, "no zones: give machines.<name>.zones or defaults.machine.zones"))
        bi = mach.boot_image or defaults_m.boot_image
        bi_path = base + ("boot_image",) if mach.boot_image else ("defaults", "machine", "boot_image")
        if bi is not None and bi.family and bi.name:
            errors.append(Problem(bi_path, "give family or name, not both"))
        mrd = mach.max_run_duration or defaults_m.max_run_duration or DEFAULT_MAX_RUN_DURATION_S
        mrd_path = base + ("max_run_duration",) if mach.max_run_duration else ("defaults", "machine", "max_run_duration")
        if not MIN_MAX_RUN_DURATION_S <= mrd <= MAX_MAX_RUN_DURATION_S:
            errors.append(Problem(mrd_path, f"max_run_duration must be between 30s and 120 days (Compute Engine), "
                                  f"got {mrd:g} seconds"))
        idle = mach.idle_timeout or defaults_m.idle_timeout
        idle_path = base + ("idle_timeout",) if mach.idle_timeout else ("defaults", "machine", "idle_timeout")
        if idle is not None and idle < MIN_IDLE_TIMEOUT_S:
            errors.append(Problem(idle_path, f"idle_timeout must be at least {MIN_IDLE_TIMEOUT_S:g}s (GitHub needs a "
                                  f"moment to give the runner its job), got {idle:g} seconds"))
        elif idle is not None and idle >= mrd:
            warnings.append(Problem(idle_path, f"idle_timeout ({idle:g}s) is not shorter than max_run_duration "
                                    f"({mrd:g}s): an idle VM lives until Compute Engine deletes it"))

    for name, rt in m.runtimes.items():
        base = ("runtimes", name)
        # A container job's runner drives Docker, which is root on the VM: `docker run --network
        # host` (or -v /:/host) undoes any firewall, so the service account's token on the metadata
        # server would be the job's. Refused, not half-closed (the threat model says so).
        gce_machines = [n for n in (rt.machines or machines) if n in m.machines and m.machines[n].provider == "gce"]
        if rt.container and m.gce and m.gce.service_account and gce_machines:
            errors.append(Problem(base + ("container",), f"a container runtime cannot run on gce machines "
                                  f"({', '.join(gce_machines)}) when gce.service_account is set: the job drives "
                                  "Docker, which is root on the VM and reaches the service account's token; drop "
                                  "gce.service_account (the default) or run this runtime without a container"))
        for i, ref in enumerate(rt.machines or []):
            if ref not in m.machines:
                errors.append(_names_problem("machine", base + ("machines", i), ref, machines))
        for src, checks, cpath in ((rt, rt.checks, base + ("checks",)),
                                   (defaults_r, defaults_r.checks, ("defaults", "runtime", "checks"))):
            if src is defaults_r and name != runtimes[0]:
                continue  # report defaults once
            seen_checks: set[str] = set()
            for i, c in enumerate(checks or []):
                if c.run is None and c.name not in BUILTIN_CHECKS:
                    hint = did_you_mean(c.name, BUILTIN_CHECKS)
                    errors.append(Problem(cpath + (i,), f"unknown built-in check {c.name!r}{hint} (built-ins: "
                                          f"{', '.join(BUILTIN_CHECKS)}; a command check needs run:)"))
                elif c.run is not None and c.name in BUILTIN_CHECKS:
                    errors.append(Problem(cpath + (i, "name"), f"{c.name!r} is a built-in check; give the command "
                                          "check another name"))
                elif c.run is None and ("expect_exit" in c.model_fields_set or c.timeout is not None):
                    errors.append(Problem(cpath + (i,), f"built-in check {c.name!r} takes no expect_exit or timeout"))
                if c.name in seen_checks:
                    errors.append(Problem(cpath + (i,), f"check {c.name!r} is listed twice"))
                seen_checks.add(c.name)
        timeout = rt.timeout or defaults_r.timeout
        for mname in rt.machines or machines:
            mach = m.machines.get(mname)
            if mach is None or mach.provider != "gce" or timeout is None:
                continue
            mrd = mach.max_run_duration or defaults_m.max_run_duration or DEFAULT_MAX_RUN_DURATION_S
            if timeout > mrd:
                warnings.append(Problem(base + ("timeout",) if rt.timeout else ("defaults", "runtime", "timeout"),
                                        f"a notebook may run {timeout:g}s but machine {mname!r} lives at most "
                                        f"{mrd:g}s (max_run_duration); the VM goes first"))

    for kind in ("include", "exclude"):
        for i, rule in enumerate(getattr(m, kind)):
            for field_, names in (("runtime", runtimes), ("machine", machines)):
                value = getattr(rule, field_)
                if value is None:
                    continue
                hits = [n for n in names if fnmatch.fnmatchcase(n, value)] if _has_glob(value) else (
                    [value] if value in names else [])
                if not hits:
                    if _has_glob(value):
                        errors.append(Problem((kind, i, field_), f"pattern {value!r} matches no {field_}"))
                    else:
                        errors.append(_names_problem(field_, (kind, i, field_), value, names))
            if kind == "exclude" and rule.runtime is None and rule.machine is None:
                errors.append(Problem((kind, i), "an exclude rule names a runtime, a machine or both"))
    return errors, warnings


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


@dataclass
class LoadedMatrix:
    """A validated matrix with its document (for locations) and warnings."""

    model: Matrix
    doc: Document
    warnings: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.doc.path

    def error(self, path: Path_, message: str, *, key: bool = False) -> ConfigError:
        return self.doc.error(path, message, key=key)

    def root_dir(self, cwd: Path | None = None) -> Path:
        """The repository root: ``root:`` (relative to this file's folder), else the git work tree
        holding this file, else ``cwd``."""
        here = self.path.resolve().parent
        if self.model.root is not None:
            return (here / self.model.root).resolve()
        for d in (here, *here.parents):
            if (d / ".git").exists():
                return d
        return (cwd or Path.cwd()).resolve()


def validate(doc: Document) -> LoadedMatrix:
    data = doc.data
    if not isinstance(data, dict):
        raise ConfigError(f"a matrix file is a mapping with machines: and runtimes:, not {yaml_type(data)}",
                          location=doc.location(()))
    try:
        model = Matrix.model_validate(data)
    except ValidationError as e:
        problems = [_pydantic_problem(doc, err) for err in e.errors(include_url=False)]
        # the same place reported twice (a bad map key also fails its value) reads as noise
        unique: dict[tuple[Path_, bool], Problem] = {}
        for p in problems:
            unique.setdefault((p.path, p.key), p)
        _raise_all(doc, list(unique.values()))
        raise  # pragma: no cover
    errors, warnings = _rules(doc, model)
    _raise_all(doc, errors)
    return LoadedMatrix(model=model, doc=doc, warnings=[w.render(doc) for w in warnings])


def load(path: Path | str, *, display: str | None = None) -> LoadedMatrix:
    """Read, parse and validate a matrix file; every problem is a ConfigError naming FILE:LINE:COL."""
    path = Path(path)
    return validate(load_yaml(path, display or str(path)))


def _main(argv: list[str] | None = None) -> int:
    from .schema_cli import main

    return main(argv, module="gpu_runner.config", what="matrix", text=schema_text(), default=SCHEMA_PATH,
                shown=f"{SCHEMA_PATH.as_posix()}")


if __name__ == "__main__":
    sys.exit(_main())

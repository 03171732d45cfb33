"""The provider interface: create a VM for an entry, wait until it is up, delete it, list ours.

A provider knows one cloud. It does not know GitHub: the start/stop/janitor flow
(:mod:`gpu_runner.cloud.lifecycle`) hands it the metadata the VM needs (the startup
script and the runner's just-in-time config) and the labels that mark it as ours.

Errors a provider raises, so that the capacity ladder can decide:

* :class:`CapacityError`: this zone (or this provisioning model) has no room now; try the next.
* :class:`ZoneNotOfferedError`: the machine type or accelerator type does not exist in this zone;
  no provisioning model helps there, so the zone is skipped.
* :class:`QuotaError`: the project is out of a quota. A regional one bars the rest of that region
  (for that provisioning model when the quota is the model's own, e.g. ``PREEMPTIBLE_*`` for
  SPOT); a global one (``GPUS_ALL_REGIONS``) bars every zone: the ladder stops.
* :class:`CloudError`: anything else, after the provider's own retries (429, 5xx, 403 rate
  limits). Stop.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import InfraError
from ..timestamps import rfc3339

OURS_LABEL = "gpu-runner"
"""Every VM we create carries ``gpu-runner=1``; the janitor and ``stop`` look for it."""

STATUS_MARKER = "gpu-runner-status:"
"""What the startup script prints on the serial console (and sets as a guest attribute):
``gpu-runner-status: <state> <detail>``. ``start`` polls for it to fail fast."""

STATES_FAILED = ("health-failed", "runner-failed", "install-failed", "firewall-failed")


class CloudError(InfraError):
    """A cloud call failed for good (after retries)."""


class CapacityError(CloudError):
    """No capacity for this request in this zone now (stockout, resource not ready)."""


class ZoneNotOfferedError(CloudError):
    """The zone does not offer the machine type (or accelerator type) at all: skip the zone."""


class QuotaError(CloudError):
    """The project's quota does not allow this VM.

    ``metric`` is Compute Engine's name for the quota (``NVIDIA_L4_GPUS``,
    ``PREEMPTIBLE_NVIDIA_L4_GPUS``, ``CPUS``, ``GPUS_ALL_REGIONS``); ``region`` the region it
    counts in, None for a global quota (one that counts every region: no other zone helps)."""

    def __init__(self, message: str, *, metric: str | None = None, region: str | None = None,
                 limit: float | None = None) -> None:
        super().__init__(message)
        self.metric, self.region, self.limit = metric, region, limit

    @property
    def is_global(self) -> bool:
        return self.region is None

    @property
    def preemptible(self) -> bool:
        """A quota only Spot (and preemptible) VMs count against, where the project has it."""
        return bool(self.metric and self.metric.startswith("PREEMPTIBLE_"))


@dataclass
class Instance:
    """What we need to know about one of our VMs."""

    name: str
    zone: str
    status: str
    """PROVISIONING, STAGING, RUNNING, STOPPING, SUSPENDED, TERMINATED, ... (Compute Engine's words)."""
    labels: dict[str, str] = field(default_factory=dict)
    provisioning_model: str = "STANDARD"
    created: float | None = None
    """Epoch seconds, from the ``created`` label."""
    preempted: bool = False
    max_run_duration_s: float | None = None
    """The VM's own hard lifetime (``scheduling.maxRunDuration``), when it has one."""
    created_at: str | None = None
    """``creationTimestamp`` (RFC 3339), as Compute Engine says it."""
    last_stop_at: str | None = None
    """``lastStopTimestamp``: when it last powered off (RFC 3339), if it did."""
    hold_until: float | None = None
    """Epoch seconds until which the VM is held for a look (metadata ``gpu-runner-hold``), if it is."""

    @property
    def run_id(self) -> str | None:
        return self.labels.get("gh-run-id")

    def age_s(self, now: float | None = None) -> float | None:
        if self.created is None:
            return None
        return (now if now is not None else time.time()) - self.created


@dataclass
class VmRequest:
    """One VM to create: everything but the zone and provisioning model (the ladder's rungs)."""

    name: str
    project: str
    spec: object
    """The entry's :class:`gpu_runner.plan.GceSpec`."""
    labels: dict[str, str]
    metadata: dict[str, str]
    """Instance metadata; values may be secret (the runner's config): never log them."""


def gce_label_value(text: str) -> str:
    """A string as a Compute Engine label value: lower case, [a-z0-9_-], at most 63."""
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")[:63]


def region_of(zone: str) -> str:
    """The region a Compute Engine zone is in (``us-central1-a`` -> ``us-central1``)."""
    return zone.rsplit("-", 1)[0]


def status_lines(text: str) -> list[tuple[str, str]]:
    """Every ``gpu-runner-status: STATE DETAIL`` in serial console text, in order, as (state, detail)."""
    found = []
    for line in text.splitlines():
        i = line.find(STATUS_MARKER)
        if i >= 0:
            state, _, detail = line[i + len(STATUS_MARKER):].strip().partition(" ")
            found.append((state, detail.strip()))
    return found


def parse_status_line(text: str) -> tuple[str, str] | None:
    """The last ``gpu-runner-status: STATE DETAIL`` in serial console text, as (state, detail)."""
    found = status_lines(text)
    return found[-1] if found else None


@dataclass
class VmTimes:
    """A VM's own timestamps (RFC 3339), and which operation removed it."""

    zone: str | None = None
    created_at: str | None = None
    deleted_at: str | None = None
    removed_by: str | None = None
    """The operation that removed it: ``delete``, ``compute.instances.preempted``, ..."""


class Provider(ABC):
    """One cloud: create, wait until ready, delete, list ours."""

    name: str = "?"

    @abstractmethod
    def create(self, req: VmRequest, zone: str, provisioning_model: str) -> Instance:
        """Create the VM and return once the cloud accepted it (the create operation finished).

        Raises CapacityError, QuotaError or CloudError."""

    @abstractmethod
    def get(self, project: str, zone: str, name: str) -> Instance | None:
        """The VM, or None when it does not exist."""

    @abstractmethod
    def delete(self, project: str, zone: str, name: str, *, wait: bool = True) -> bool:
        """Delete the VM; False when it was already gone. Idempotent."""

    def delete_timed(self, project: str, zone: str, name: str) -> str | None:
        """Delete the VM and say when it was deleted (RFC 3339, the cloud's own time where it
        tells); None when it was already gone."""
        return rfc3339(time.time()) if self.delete(project, zone, name) else None

    @abstractmethod
    def list_ours(self, project: str, labels: Mapping[str, str] | None = None, *,
                  name: str | None = None) -> list[Instance]:
        """Every VM labelled ``gpu-runner=1`` (and ``labels``; named ``name``), in every zone."""

    def serial_output(self, project: str, zone: str, name: str, start: int = 0) -> tuple[str, int]:
        """(serial console text from byte ``start``, the next offset); ('', start) when there is none."""
        return "", start

    def serial_tail(self, project: str, zone: str, name: str, lines: int = 40) -> str:
        """The last lines of the VM's serial console ('' when there is none)."""
        text, _ = self.serial_output(project, zone, name)
        return "\n".join(text.splitlines()[-lines:])

    def was_preempted(self, project: str, zones: list[str], name: str) -> bool:
        """Whether Compute Engine preempted this VM (looked up after it is gone)."""
        return False

    def lifetime(self, project: str, zones: list[str], name: str) -> VmTimes:
        """When a VM that is gone was created and removed, from what the cloud recorded
        (nothing, where the provider cannot tell)."""
        return VmTimes()

    def hold(self, project: str, zone: str, name: str, until: float) -> bool:
        """Mark the VM held for a look until ``until`` (epoch seconds); False when it is gone."""
        return False

    def wait_ready(self, project: str, zone: str, name: str, *, timeout_s: float, poll_s: float) -> Instance:
        """Wait until the VM is RUNNING; CloudError when it stops or disappears first."""
        deadline = time.monotonic() + timeout_s
        while True:
            inst = self.get(project, zone, name)
            if inst is None:
                raise CloudError(f"VM {name} in {zone} disappeared while starting")
            if inst.status == "RUNNING":
                return inst
            if inst.status in ("STOPPING", "TERMINATED", "SUSPENDED", "STOPPED"):
                why = " (preempted)" if inst.preempted else ""
                raise CloudError(f"VM {name} in {zone} is {inst.status}{why} before it ran")
            if time.monotonic() >= deadline:
                raise CloudError(f"VM {name} in {zone} still {inst.status} after {timeout_s:.0f}s")
            time.sleep(poll_s)

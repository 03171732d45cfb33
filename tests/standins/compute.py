"""A Compute Engine stand-in: instances (insert, get, delete, list, aggregatedList with label
filters, serial port output, setMetadata) and zone operations (get, wait, list), with VMs
that boot, run the gpu-runner startup script's part (health check, runner connects to the
GitHub stand-in) and can be preempted.

Failure knobs (attributes, settable while it runs):

* ``stockout_zones``: inserts in these zones fail with ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS;
  ``stockout_rate``: the same at random for that share of inserts; ``stockout_models``: only
  for these provisioning models (empty: all); ``stockout_machine_types``: every insert of these
  machine types, in every zone.
* ``quota_limits``: ``{(metric, region or None): limit}``: an insert whose VM would take a quota
  past its limit (counting the VMs there are) fails with QUOTA_EXCEEDED, in Compute Engine's shape
  (see :meth:`_quota_error`). Metrics: ``NVIDIA_L4_GPUS`` and the like and ``CPUS`` per region,
  ``GPUS_ALL_REGIONS`` and ``CPUS_ALL_REGIONS`` global (region None). A Spot VM counts against
  ``PREEMPTIBLE_<metric>`` in a region where that quota is granted (a limit above 0 here), else
  against ``<metric>`` like a standard VM. A quota not named has no limit.
* ``offered``: ``{zone: {"machineTypes": {...}, "acceleratorTypes": {...}}}`` (like :data:`OFFERED`):
  an insert naming a machine type or accelerator type its zone does not offer fails as Compute
  Engine's does (400 ``invalid`` / 404 ``notFound``). None (the default), or a zone not in it:
  every type is offered there.
* ``throttle``: a list of ``(status, retry_after or None)`` or ``(403, retry_after, reason)``
  answered, in order, to the next requests; 403 is Compute Engine's rate limit (reason
  ``rateLimitExceeded`` unless given, e.g. ``userRateLimitExceeded``).
* ``health_fail``: the VM's GPU health check fails (the serial console says so).
* ``never_online``: the VM runs but its runner never connects.
* ``boot_s``: seconds from insert to RUNNING.
* :meth:`preempt`: Compute Engine takes a Spot VM back (it is deleted, a
  ``compute.instances.preempted`` operation is recorded).
* :meth:`power_off`: the VM stops (TERMINATED, ``lastStopTimestamp`` set): a guest ``poweroff``,
  or a host maintenance event for a VM with ``onHostMaintenance: TERMINATE``; its termination
  time is cleared.
* maxRunDuration: a VM entering RUNNING gets ``resourceStatus.scheduling.terminationTimestamp``
  (now + ``scheduling.maxRunDuration``); once the stand-in's clock passes it while RUNNING, its
  ``instanceTerminationAction`` is applied (DELETE: the VM is deleted and a ``delete`` operation
  by ``system`` recorded; STOP: TERMINATED). A stopped VM's termination time is cleared, so a
  powered-off VM is never deleted by it.
* ``clock_offset_s``: the stand-in's clock runs this far ahead of the real one (its timestamps:
  ``creationTimestamp``, operations' times), so a VM can be made to live for hours in a test;
  :meth:`advance` moves it.

``inserted`` lists (name, zone, provisioning model) of every VM created.

What ``gpu-runner doctor`` reads (machine and accelerator types, images, regions and the project
with their quotas, routers, and Resource Manager's testIamPermissions) and its knobs: compute_doctor.py.
"""

from __future__ import annotations

import itertools
import random
import re
import threading
import time
import uuid
from typing import Any

from .compute_doctor import DoctorRoutes
from .http import Reply, StandIn
from .schemas import compute_validator, problems

BASE = "/compute/v1/projects/{project}"
STATUS_MARKER = "gpu-runner-status:"

OFFERED: dict[str, dict[str, set[str]]] = {
    "us-central1-a": {"machineTypes": {"g2-standard-8", "n1-standard-8", "a2-highgpu-1g"},
                      "acceleratorTypes": {"nvidia-l4", "nvidia-tesla-t4", "nvidia-tesla-a100"}},
    "us-central1-b": {"machineTypes": {"g2-standard-8", "n1-standard-8", "a2-highgpu-1g"},
                      "acceleratorTypes": {"nvidia-l4", "nvidia-tesla-t4", "nvidia-tesla-a100"}},
    "us-central1-c": {"machineTypes": {"g2-standard-8", "n1-standard-8", "a2-highgpu-1g"},
                      "acceleratorTypes": {"nvidia-l4", "nvidia-tesla-t4", "nvidia-tesla-a100"}},
    "us-central1-f": {"machineTypes": {"n1-standard-8", "a2-highgpu-1g"},
                      "acceleratorTypes": {"nvidia-tesla-t4", "nvidia-tesla-a100"}},
}
"""A catalogue in the shape of Compute Engine's ``machineTypes.list`` / ``acceleratorTypes.list``
per zone, for tests that want zones that differ (an example, not Google's current list: in truth
not every zone offers every GPU, https://cloud.google.com/compute/docs/gpus/gpu-regions-zones).
A stand-in uses it when its ``offered`` is set to it."""

MACHINE_TYPES: dict[str, dict[str, Any]] = {
    "g2-standard-8": {"guestCpus": 8, "accelerators": [("nvidia-l4", 1)]},
    "n1-standard-8": {"guestCpus": 8, "accelerators": []},
    "a2-highgpu-1g": {"guestCpus": 12, "accelerators": [("nvidia-tesla-a100", 1)]},
}
"""vCPUs and the GPUs that come with a machine type (for quotas); others: the number at the end of
the name, no GPUs."""

GPU_QUOTA_METRICS = {"nvidia-l4": "NVIDIA_L4_GPUS", "nvidia-tesla-t4": "NVIDIA_T4_GPUS",
                     "nvidia-tesla-a100": "NVIDIA_A100_GPUS", "nvidia-a100-80gb": "NVIDIA_A100_80GB_GPUS",
                     "nvidia-h100-80gb": "NVIDIA_H100_GPUS", "nvidia-tesla-v100": "NVIDIA_V100_GPUS",
                     "nvidia-tesla-p100": "NVIDIA_P100_GPUS", "nvidia-tesla-p4": "NVIDIA_P4_GPUS"}
"""Compute Engine's regional quota metric of each accelerator type (the Quotas page's names)."""


def _error(status: int, message: str, reason: str, domain: str = "global") -> Reply:
    return Reply(status, {"error": {"code": status, "message": message,
                                    "errors": [{"message": message, "domain": domain, "reason": reason}]}})


def _now_rfc3339(offset_s: float = 0.0) -> str:
    """Compute Engine's timestamp form, to the millisecond."""
    now = time.time() + offset_s
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}-00:00"


class ComputeStandIn(DoctorRoutes, StandIn):
    def __init__(self, *, github: Any = None, boot_s: float = 0.0, host_url: str | None = None,
                 validate_responses: bool = True) -> None:
        super().__init__()
        self.github = github
        self.boot_s = boot_s
        self.stockout_zones: set[str] = set()
        self.stockout_models: set[str] = set()
        self.stockout_rate = 0.0
        self.stockout_machine_types: set[str] = set()
        self.inserted: list[tuple[str, str, str]] = []
        self.quota_limits: dict[tuple[str, str | None], float] = {}
        self.offered: dict[str, dict[str, set[str]]] | None = None
        self.throttle: list[tuple[Any, ...]] = []
        self.health_fail = False
        self.never_online = False
        self.validate_responses = validate_responses
        self.rng = random.Random(7)
        self.instances: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.operations: dict[str, dict[str, Any]] = {}
        self.by_request_id: dict[str, str] = {}
        self.rejected: list[str] = []
        self.ids = itertools.count(1000)
        self.clock_offset_s = 0.0
        self._stop_ticker = threading.Event()
        p = BASE
        for method, path, name, handler in [
            ("POST", p + "/zones/{zone}/instances", "instances.insert", self.insert),
            ("GET", p + "/zones/{zone}/instances", "instances.list", self.list),
            ("GET", p + "/aggregated/instances", "instances.aggregatedList", self.aggregated_list),
            ("GET", p + "/zones/{zone}/instances/{name}", "instances.get", self.get),
            ("DELETE", p + "/zones/{zone}/instances/{name}", "instances.delete", self.delete),
            ("GET", p + "/zones/{zone}/instances/{name}/serialPort", "instances.getSerialPortOutput", self.serial),
            ("POST", p + "/zones/{zone}/instances/{name}/setMetadata", "instances.setMetadata", self.set_metadata),
            ("GET", p + "/zones/{zone}/operations/{op}", "zoneOperations.get", self.op_get),
            ("POST", p + "/zones/{zone}/operations/{op}/wait", "zoneOperations.wait", self.op_get),
            ("GET", p + "/zones/{zone}/operations", "zoneOperations.list", self.op_list),
        ]:
            self.route(method, path, name, handler)
        self._doctor_setup()  # what gpu-runner doctor reads (compute_doctor.py)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> ComputeStandIn:
        super().start()
        threading.Thread(target=self._ticker, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop_ticker.set()
        super().stop()

    def _ticker(self) -> None:
        while not self._stop_ticker.wait(0.02):
            with self.lock:
                for key, inst in list(self.instances.items()):
                    self._tick(inst)
                    self._end_of_run_duration(key, inst)

    def _tick(self, inst: dict[str, Any]) -> None:
        age = time.monotonic() - inst["_born"]
        if inst["status"] == "PROVISIONING" and age >= self.boot_s * 0.3:
            inst["status"] = "STAGING"
        if inst["status"] == "STAGING" and age >= self.boot_s:
            inst["status"] = "RUNNING"
            self._start_run_duration(inst)
            self._boot(inst)

    def _boot(self, inst: dict[str, Any]) -> None:
        """What the startup script does once the VM runs: health check, runner connects."""
        items = {i["key"]: i.get("value", "") for i in inst.get("metadata", {}).get("items", [])}
        serial = inst["_serial"]
        serial.append(f"Booting {inst['name']}")
        serial.append(f"startup-script: {STATUS_MARKER} booting {inst['name']}")
        if self.health_fail:
            serial.append(f"startup-script: {STATUS_MARKER} health-failed nvidia-smi failed: NVIDIA-SMI has failed "
                          "because it couldn't communicate with the NVIDIA driver")
            return
        serial.append(f"startup-script: {STATUS_MARKER} health-ok 1 GPU(s)")
        serial.append(f"startup-script: {STATUS_MARKER} runner-starting runner {inst['name']}")
        if self.github is not None and not self.never_online and "gpu-runner-jitconfig" in items:
            self.github.runner_connects(items["gpu-runner-jitconfig"])

    def count(self) -> int:
        with self.lock:
            return len(self.instances)

    def preempt(self, name: str) -> None:
        with self.lock:
            key = next(k for k in self.instances if k[2] == name)
            inst = self.instances.pop(key)
            self._disconnect(inst)
            self._operation(key[0], key[1], "compute.instances.preempted", inst, user="system")

    def now(self) -> str:
        """The stand-in's clock, as Compute Engine writes timestamps."""
        return _now_rfc3339(self.clock_offset_s)

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.clock_offset_s += seconds

    def power_off(self, name: str) -> None:
        """The guest shuts down (``poweroff``): TERMINATED, with its lastStopTimestamp."""
        with self.lock:
            inst = next(i for k, i in self.instances.items() if k[2] == name)
            inst["status"] = "TERMINATED"
            inst["lastStopTimestamp"] = self.now()
            self._clear_run_duration(inst)
            self._disconnect(inst)

    # -- maxRunDuration ----------------------------------------------------------------------
    # https://cloud.google.com/compute/docs/instances/limit-vm-runtime: "A VM's termination
    # timestamp (terminationTimestamp) is a read-only field that represents the planned time for
    # automatic termination and is automatically defined by Compute Engine whenever a VM has a time
    # limit and enters the RUNNING state. The termination timestamp is automatically cleared
    # whenever a VM is stopped or suspended." The discovery document puts it at
    # Instance.resourceStatus.scheduling.terminationTimestamp (Scheduling.terminationTime is the
    # input for a fixed time, not this output). The operation a DELETE at the termination time
    # leaves is not documented there; the stand-in records a `delete` by `system`.
    def _start_run_duration(self, inst: dict[str, Any]) -> None:
        mrd = inst.get("scheduling", {}).get("maxRunDuration")
        if not mrd:
            return
        seconds = float(mrd.get("seconds", 0) or 0) + float(mrd.get("nanos", 0) or 0) / 1e9
        inst["_terminate_at"] = time.time() + self.clock_offset_s + seconds
        inst.setdefault("resourceStatus", {}).setdefault("scheduling", {})["terminationTimestamp"] = _now_rfc3339(
            self.clock_offset_s + seconds)

    @staticmethod
    def _clear_run_duration(inst: dict[str, Any]) -> None:
        inst.pop("_terminate_at", None)
        inst.get("resourceStatus", {}).get("scheduling", {}).pop("terminationTimestamp", None)

    def termination_at(self, name: str) -> float | None:
        """When (the stand-in's clock, epoch seconds) Compute Engine ends this VM, if it will."""
        with self.lock:
            inst = next((i for k, i in self.instances.items() if k[2] == name), None)
            return None if inst is None else inst.get("_terminate_at")

    def _end_of_run_duration(self, key: tuple[str, str, str], inst: dict[str, Any]) -> None:
        at = inst.get("_terminate_at")
        if at is None or inst["status"] != "RUNNING" or time.time() + self.clock_offset_s < at:
            return
        # the enum's default, per the discovery document: "STOP ... default action"
        action = inst.get("scheduling", {}).get("instanceTerminationAction", "STOP")
        if action == "DELETE":
            del self.instances[key]
            self.deleted.append(inst["name"])
            self._disconnect(inst)
            self._operation(key[0], key[1], "delete", inst, user="system")
        else:
            inst["status"] = "TERMINATED"
            inst["lastStopTimestamp"] = self.now()
            self._clear_run_duration(inst)
            self._disconnect(inst)

    def _disconnect(self, inst: dict[str, Any]) -> None:
        items = {i["key"]: i.get("value", "") for i in inst.get("metadata", {}).get("items", [])}
        if self.github is not None and "gpu-runner-jitconfig" in items:
            self.github.runner_disconnects(items["gpu-runner-jitconfig"])

    # -- knobs -----------------------------------------------------------------------------
    def before(self, method: str, name: str, headers: Any) -> None:
        with self.lock:
            if self.throttle:
                self._throttled(*self.throttle.pop(0))

    @staticmethod
    def _throttled(status: int, after: float | None, reason: str | None = None) -> None:
        """Answer a throttled request. 403 is how Compute Engine refuses a request over a rate
        quota: "If your project exceeds a rate quota, you receive a 403 error with the reason
        rateLimitExceeded" (https://cloud.google.com/compute/api-quota), with the body
        ``{"error": {"code": 403, "message": "Rate Limit Exceeded", "errors": [{"message": "Rate
        Limit Exceeded", "reason": "rateLimitExceeded", "domain": "usageLimits"}]}}``
        (https://cloud.google.com/compute/docs/troubleshooting/troubleshoot-operation-limits)."""
        hdrs = {"Retry-After": f"{after:g}"} if after is not None else {}
        if status in (403, 429):
            reason = reason or "rateLimitExceeded"
            msg = "User Rate Limit Exceeded" if reason == "userRateLimitExceeded" else "Rate Limit Exceeded"
            domain = "usageLimits"
        else:
            reason, msg, domain = "backendError", "The service is currently unavailable.", "global"
        raise Reply(status, {"error": {"code": status, "message": msg, "errors": [
            {"message": msg, "domain": domain, "reason": reason}]}}, hdrs)

    # -- helpers ---------------------------------------------------------------------------
    def _link(self, *parts: str) -> str:
        return f"{self.url}/compute/v1/" + "/".join(parts)

    def _check(self, schema: str, body: Any) -> Any:
        if self.validate_responses:
            errs = problems(compute_validator(schema), body)
            if errs:
                raise Reply(500, {"error": {"code": 500, "message": f"stand-in answered outside {schema}: {errs}"}})
        return body

    def _operation(self, project: str, zone: str, kind: str, inst: dict[str, Any] | None, *,
                   error: dict[str, Any] | None = None, http: tuple[int, str] | None = None,
                   user: str = "gpu-runner@example.iam.gserviceaccount.com", target: str | None = None
                   ) -> dict[str, Any]:
        oid = str(next(self.ids))
        name = f"operation-{int(time.time() * 1000)}-{uuid.uuid4().hex[:12]}"
        target_name = inst["name"] if inst else target
        op: dict[str, Any] = {
            "kind": "compute#operation", "id": oid, "name": name, "operationType": kind,
            "zone": self._link("projects", project, "zones", zone),
            "targetLink": self._link("projects", project, "zones", zone, "instances", target_name or ""),
            "status": "DONE", "progress": 100, "user": user, "insertTime": self.now(),
            "startTime": self.now(), "endTime": self.now(),
            "selfLink": self._link("projects", project, "zones", zone, "operations", name),
        }
        if inst and "id" in inst:
            op["targetId"] = inst["id"]
        if error:
            op["error"] = {"errors": [error]}
        if http:
            op["httpErrorStatusCode"], op["httpErrorMessage"] = http
        self.operations[name] = op
        return op

    def _public(self, inst: dict[str, Any]) -> dict[str, Any]:
        return self._check("Instance", {k: v for k, v in inst.items() if not k.startswith("_")})

    # -- instances ---------------------------------------------------------------------------
    def insert(self, project: str, zone: str, body: Any, query: dict[str, str], **_: Any) -> Any:
        errs = problems(compute_validator("Instance", "compute.instances.insert"), body)
        if errs:
            self.rejected.append("; ".join(errs))
            raise _error(400, "Invalid value for field 'resource': " + "; ".join(errs), "invalid")
        with self.lock:
            rid = query.get("requestId")
            if rid and rid in self.by_request_id:
                return self.operations[self.by_request_id[rid]]
            name = body["name"]
            if any(k[0] == project and k[2] == name for k in self.instances):
                raise _error(409, f"The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists",
                             "alreadyExists")
            model = body.get("scheduling", {}).get("provisioningModel", "STANDARD")
            self._check_offered(project, zone, body)
            use = self._quota_use(zone, body, model)
            over = self._over_quota(use)
            stocked_out = (zone in self.stockout_zones or (self.stockout_rate and self.rng.random() < self.stockout_rate)
                           or body.get("machineType", "").rsplit("/", 1)[-1] in self.stockout_machine_types)
            if stocked_out and (not self.stockout_models or model in self.stockout_models):
                op = self._operation(project, zone, "insert", None, target=name, http=(503, "SERVICE UNAVAILABLE"), error={
                    "code": "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
                    "message": f"The zone 'projects/{project}/zones/{zone}' does not have enough resources available "
                               "to fulfill the request.  '(resource type:compute)'."})
            elif over is not None:
                op = self._operation(project, zone, "insert", None, target=name, http=(403, "FORBIDDEN"),
                                     error=self._quota_error(*over))
            else:
                inst = dict(body)
                inst.update({
                    "kind": "compute#instance", "id": str(next(self.ids)), "status": "PROVISIONING",
                    "creationTimestamp": self.now(),
                    "zone": self._link("projects", project, "zones", zone),
                    "selfLink": self._link("projects", project, "zones", zone, "instances", name),
                    "_born": time.monotonic(), "_serial": [], "_quota": use,
                })
                inst.setdefault("metadata", {})["fingerprint"] = uuid.uuid4().hex[:12]
                inst["metadata"]["kind"] = "compute#metadata"
                self.instances[(project, zone, name)] = inst
                self.inserted.append((name, zone, model))
                op = self._operation(project, zone, "insert", inst)
                op["status"] = "RUNNING"
                op["_done_at"] = time.monotonic()
            if rid:
                self.by_request_id[rid] = op["name"]
            return self._check("Operation", {k: v for k, v in op.items() if not k.startswith("_")})

    # -- insert: what the zone offers, and quotas ---------------------------------------------
    def _check_offered(self, project: str, zone: str, body: dict[str, Any]) -> None:
        """A machine type or accelerator type the zone does not offer is refused before any
        operation, in Compute Engine's words: ``Invalid value for field 'resource.machineType':
        'zones/Z/machineTypes/T'. Machine type with name 'T' does not exist in zone 'Z'.`` (400
        invalid) and ``The resource 'projects/P/zones/Z/acceleratorTypes/T' was not found`` (404
        notFound), as users of instances.insert report them."""
        zone_offers = (self.offered or {}).get(zone)
        if zone_offers is None:
            return
        mt_path = body.get("machineType", "")
        mt = mt_path.rsplit("/", 1)[-1]
        if mt and mt not in zone_offers.get("machineTypes", set()):
            raise _error(400, f"Invalid value for field 'resource.machineType': '{mt_path}'. Machine type with name "
                              f"'{mt}' does not exist in zone '{zone}'.", "invalid")
        for acc in body.get("guestAccelerators", []):
            at = str(acc.get("acceleratorType", "")).rsplit("/", 1)[-1]
            if at not in zone_offers.get("acceleratorTypes", set()):
                raise _error(404, f"The resource 'projects/{project}/zones/{zone}/acceleratorTypes/{at}' was not found",
                             "notFound")

    def _quota_use(self, zone: str, body: dict[str, Any], model: str) -> dict[tuple[str, str | None], float]:
        """What the VM counts against: its GPUs and vCPUs in its region, and in every region.

        Spot VMs take preemptible quota where the project has it, else standard quota: "To prevent
        Spot VMs from consuming your quotas for standard VMs' CPUs, GPUs, and disks, consider
        requesting preemptible quota for Spot VMs"
        (https://cloud.google.com/compute/docs/instances/create-use-spot). GPUS_ALL_REGIONS counts
        every GPU of the project, in every region (https://cloud.google.com/compute/resource-usage)."""
        region = zone.rsplit("-", 1)[0]
        mt = body.get("machineType", "").rsplit("/", 1)[-1]
        known = MACHINE_TYPES.get(mt)
        cpus = known["guestCpus"] if known else int(re.findall(r"\d+", mt)[-1]) if re.findall(r"\d+", mt) else 0
        gpus = list(known["accelerators"]) if known else []
        for acc in body.get("guestAccelerators", []):
            gpus.append((str(acc.get("acceleratorType", "")).rsplit("/", 1)[-1], int(acc.get("acceleratorCount", 1))))

        def regional(metric: str) -> str:
            pre = f"PREEMPTIBLE_{metric}"
            return pre if model == "SPOT" and self.quota_limits.get((pre, region), 0) > 0 else metric

        use: dict[tuple[str, str | None], float] = {}
        for acc, n in gpus:
            key = (regional(GPU_QUOTA_METRICS.get(acc, acc.upper().replace("-", "_") + "_GPUS")), region)
            use[key] = use.get(key, 0) + n
            use[("GPUS_ALL_REGIONS", None)] = use.get(("GPUS_ALL_REGIONS", None), 0) + n
        if cpus:
            use[(regional("CPUS"), region)] = cpus
            use[("CPUS_ALL_REGIONS", None)] = cpus
        return use

    def _over_quota(self, use: dict[tuple[str, str | None], float]) -> tuple[str, str | None, float] | None:
        """The first quota (regional before global) that this VM would take past its limit."""
        for key in sorted(use, key=lambda k: k[1] is None):
            if key not in self.quota_limits:
                continue
            used = sum(i.get("_quota", {}).get(key, 0) for i in self.instances.values()
                       if i["status"] not in ("TERMINATED", "STOPPED", "SUSPENDED"))
            if used + use[key] > self.quota_limits[key]:
                return key[0], key[1], self.quota_limits[key]
        return None

    @staticmethod
    def _quota_error(metric: str, region: str | None, limit: float) -> dict[str, Any]:
        """The insert operation's error, as Compute Engine words it: ``Quota 'NVIDIA_L4_GPUS'
        exceeded.  Limit: 1.0 in region us-central1.`` and, for a global quota, ``Quota
        'GPUS_ALL_REGIONS' exceeded.  Limit: 0.0 globally.`` (as gcloud prints them), with the
        Operation schema's errorDetails[].quotaInfo (QuotaExceededInfo: metricName, limitName,
        dimensions, limit)."""
        where = f"in region {region}" if region else "globally"
        info: dict[str, Any] = {"metricName": f"compute.googleapis.com/{metric.lower()}",
                                "limitName": metric.replace("_", "-") + ("-per-project-region" if region else "-per-project"),
                                "limit": limit}
        if region:
            info["dimensions"] = {"region": region}
        return {"code": "QUOTA_EXCEEDED", "message": f"Quota '{metric}' exceeded.  Limit: {limit:.1f} {where}.",
                "errorDetails": [{"quotaInfo": info}]}

    def _find(self, project: str, zone: str, name: str) -> dict[str, Any]:
        inst = self.instances.get((project, zone, name))
        if inst is None:
            raise _error(404, f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found",
                         "notFound")
        return inst

    def get(self, project: str, zone: str, name: str, **_: Any) -> Any:
        with self.lock:
            return self._public(self._find(project, zone, name))

    def delete(self, project: str, zone: str, name: str, **_: Any) -> Any:
        with self.lock:
            inst = self._find(project, zone, name)
            del self.instances[(project, zone, name)]
            self.deleted.append(name)
            self._disconnect(inst)
            op = self._operation(project, zone, "delete", inst)
            return self._check("Operation", op)

    def set_metadata(self, project: str, zone: str, name: str, body: Any, **_: Any) -> Any:
        errs = problems(compute_validator("Metadata", "compute.instances.setMetadata"), body)
        if errs:
            raise _error(400, "Invalid value for field 'resource': " + "; ".join(errs), "invalid")
        with self.lock:
            inst = self._find(project, zone, name)
            if body.get("fingerprint") != inst["metadata"].get("fingerprint"):
                raise _error(412, "Supplied fingerprint does not match current metadata fingerprint.",
                             "conditionNotMet")
            inst["metadata"] = {"kind": "compute#metadata", "fingerprint": uuid.uuid4().hex[:12],
                                "items": body.get("items", [])}
            return self._check("Operation", self._operation(project, zone, "setMetadata", inst))

    def serial(self, project: str, zone: str, name: str, query: dict[str, str], **_: Any) -> Any:
        with self.lock:
            inst = self._find(project, zone, name)
            text = "".join(line + "\n" for line in inst["_serial"])
            start = int(query.get("start", "0") or 0)
            return self._check("SerialPortOutput", {
                "kind": "compute#serialPortOutput", "contents": text[start:], "start": str(start),
                "next": str(len(text)), "selfLink": inst["selfLink"] + "/serialPort"})

    # -- lists and filters --------------------------------------------------------------------
    @staticmethod
    def _matches(inst: dict[str, Any], flt: str | None) -> bool:
        if not flt:
            return True
        conds = re.findall(r'\(?\s*([\w.-]+)\s*(=|!=|eq|ne)\s*"?([^")]*)"?\s*\)?', flt)
        if not conds:
            raise _error(400, f"Invalid list filter expression '{flt}'.", "invalid")
        for key, op, value in conds:
            if key.startswith("labels."):
                actual = inst.get("labels", {}).get(key[len("labels."):])
            else:
                actual = inst.get(key)
            ok = str(actual) == value if actual is not None else False
            if (op in ("=", "eq")) != ok:
                return False
        return True

    def list(self, project: str, zone: str, query: dict[str, str], **_: Any) -> Any:
        with self.lock:
            items = [self._public(i) for (p, z, _n), i in self.instances.items()
                     if p == project and z == zone and self._matches(i, query.get("filter"))]
            return self._check("InstanceList", {"kind": "compute#instanceList", "id": f"projects/{project}/zones/{zone}/instances",
                                                "items": items, "selfLink": self._link("projects", project, "zones", zone, "instances")})

    def aggregated_list(self, project: str, query: dict[str, str], **_: Any) -> Any:
        with self.lock:
            scopes: dict[str, Any] = {}
            for (p, z, _n), i in self.instances.items():
                if p == project and self._matches(i, query.get("filter")):
                    scopes.setdefault(f"zones/{z}", {"instances": []})["instances"].append(self._public(i))
            if not scopes:
                scopes["zones/us-central1-a"] = {"warning": {"code": "NO_RESULTS_ON_PAGE", "message": "There are no "
                                                 "results for scope 'zones/us-central1-a' on this page.",
                                                 "data": [{"key": "scope", "value": "zones/us-central1-a"}]}}
            return self._check("InstanceAggregatedList", {
                "kind": "compute#instanceAggregatedList", "id": f"projects/{project}/aggregated/instances",
                "items": scopes, "selfLink": self._link("projects", project, "aggregated", "instances")})

    # -- operations -----------------------------------------------------------------------------
    def op_get(self, project: str, zone: str, op: str, **_: Any) -> Any:
        with self.lock:
            o = self.operations.get(op)
            if o is None:
                raise _error(404, f"The resource 'projects/{project}/zones/{zone}/operations/{op}' was not found",
                             "notFound")
            if o["status"] != "DONE":
                o["status"] = "DONE"
                o["endTime"] = self.now()
            return self._check("Operation", {k: v for k, v in o.items() if not k.startswith("_")})

    def op_list(self, project: str, zone: str, query: dict[str, str], **_: Any) -> Any:
        with self.lock:
            ops = [{k: v for k, v in o.items() if not k.startswith("_")} for o in self.operations.values()
                   if o["zone"].endswith(f"/zones/{zone}") and self._matches(o, query.get("filter"))]
            return self._check("OperationList", {"kind": "compute#operationList", "id": f"projects/{project}/zones/{zone}/operations",
                                                 "items": ops, "selfLink": self._link("projects", project, "zones", zone, "operations")})

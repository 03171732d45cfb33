"""The Compute Engine provider, on google-cloud-compute (REST transport).

* Create: ``InstancesClient.insert_unary`` with a ``request_id`` (so a retried insert never makes
  two VMs), then ``ZoneOperationsClient.wait`` until the operation is DONE. (``op.result()``
  of the extended operation polls the default endpoint, so it is not used.)
* Errors are classified for the capacity ladder: ``ZONE_RESOURCE_POOL_EXHAUSTED(_WITH_DETAILS)``,
  ``RESOURCE_NOT_READY`` and ``UNSUPPORTED_OPERATION`` are :class:`CapacityError` (next zone);
  a machine type or accelerator type the zone does not offer is :class:`ZoneNotOfferedError`
  (skip the zone); quota errors are :class:`QuotaError` naming the quota and its region, or that
  it is global; 429, 5xx and 403 ``rateLimitExceeded`` / ``userRateLimitExceeded`` are retried
  with backoff that honours Retry-After (:mod:`gpu_runner.cloud.retry`).
* ``GPU_RUNNER_COMPUTE_EMULATOR_HOST=host:port`` points the client at a plain-HTTP endpoint
  with anonymous credentials (like Google's other ``*_EMULATOR_HOST`` variables).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..timestamps import epoch_of, rfc3339
from .base import (
    region_of,
    OURS_LABEL,
    CapacityError,
    CloudError,
    Instance,
    Provider,
    QuotaError,
    VmRequest,
    VmTimes,
    ZoneNotOfferedError,
)
from .retry import RATE_LIMIT_REASONS, call_with_retry, is_rate_limited

EMULATOR_ENV = "GPU_RUNNER_COMPUTE_EMULATOR_HOST"
CAPACITY_CODES = frozenset({
    "ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "RESOURCE_NOT_READY",
    "UNSUPPORTED_OPERATION", "RESOURCE_POOL_EXHAUSTED",
})
DEFAULT_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
OPERATION_TIMEOUT_S = 600.0
HOLD_METADATA_KEY = "gpu-runner-hold"
"""Instance metadata: epoch seconds until which a failed entry's VM is held for a look."""
REMOVED_BY = ("delete", "compute.instances.preempted")


def client_kwargs(env_name: str = EMULATOR_ENV) -> dict[str, Any]:
    """Constructor arguments for a Google Cloud client on REST: the compute_v1 clients, or another
    service's whose emulator address ``env_name`` holds (plain HTTP, anonymous credentials)."""
    host = os.environ.get(env_name, "").strip()
    if not host:
        return {"transport": "rest"}
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    endpoint = host if host.startswith(("http://", "https://")) else f"http://{host}"
    return {"transport": "rest", "credentials": AnonymousCredentials(),
            "client_options": ClientOptions(api_endpoint=endpoint)}


def _last(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _status_name(status: Any) -> str:
    return str(getattr(status, "name", status))


def _op_errors(op: Any) -> list[dict[str, Any]]:
    out = []
    if op.error and op.error.errors:
        for e in op.error.errors:
            quota = {}
            for d in e.error_details:
                if d.quota_info and d.quota_info.metric_name:
                    qi = d.quota_info
                    quota = {"metric": qi.metric_name, "limit_name": qi.limit_name, "limit": qi.limit,
                             "dimensions": dict(qi.dimensions)}
            out.append({"code": e.code, "message": e.message, "quota": quota})
    return out


def _not_found(errors: list[dict[str, Any]]) -> bool:
    """The operation failed because the VM was already gone."""
    return any(e["code"] == "RESOURCE_NOT_FOUND" for e in errors)


RATE_LIMIT_HINT = (" (Compute Engine's rate quota of the project, still exceeded after retries: fewer entries "
                   "at once, or ask for a higher API rate quota)")
QUOTA_FIX = "ask for more in the Cloud console (IAM & Admin > Quotas)"
QUOTA_RE = re.compile(r"Quota '(?P<metric>[^']+)' exceeded\.\s+Limit: (?P<limit>[0-9.]+) "
                      r"(?:(?P<global>globally)|in region (?P<region>[a-z0-9-]+))")
NOT_OFFERED_RES = (
    re.compile(r"Machine type with name '(?P<name>[^']+)' does not exist in zone '(?P<zone>[^']+)'"),
    re.compile(r"The resource '(?:projects/[^/']+/)?zones/(?P<zone>[^/']+)/(?P<kind>acceleratorTypes|machineTypes)/"
               r"(?P<name>[^/']+)' was not found"),
)
"""Compute Engine's words for a type the zone does not offer: ``Invalid value for field
'resource.machineType': 'zones/Z/machineTypes/T'. Machine type with name 'T' does not exist in
zone 'Z'.`` (400 invalid) and ``The resource 'projects/P/zones/Z/acceleratorTypes/T' was not
found`` (404 notFound)."""


def classify(errors: list[dict[str, Any]], zone: str, what: str) -> CloudError:
    """The error a list of Compute Engine errors ({code, message, quota}) stands for.

    Capacity (``ZONE_RESOURCE_POOL_EXHAUSTED``...): try the next zone. A type the zone does not
    offer: skip the zone. Quota (``QUOTA_EXCEEDED``): a :class:`QuotaError` naming the quota, its
    region (or that it is global) and the fix, in one line."""
    codes = [str(e.get("code") or "") for e in errors]
    text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or "unknown error"
    if any(c in CAPACITY_CODES for c in codes):
        return CapacityError(f"{what} in {zone}: {text}")
    for e in errors:
        code = str(e.get("code") or "")
        if "QUOTA" in code.upper() or code == "quotaExceeded":
            return quota_error(e, zone)
    for e in errors:
        for rx in NOT_OFFERED_RES:
            m = rx.search(str(e.get("message") or ""))
            if m:
                kind = "accelerator type" if m.groupdict().get("kind") == "acceleratorTypes" else "machine type"
                return ZoneNotOfferedError(f"zone {m.group('zone')} does not offer the {kind} {m.group('name')} "
                                           f"({e.get('code')}: {e.get('message')})")
    if any(c in RATE_LIMIT_REASONS for c in codes):
        return CloudError(f"{what} in {zone}: {text}{RATE_LIMIT_HINT}")
    return CloudError(f"{what} in {zone}: {text}")


def quota_error(e: dict[str, Any], zone: str) -> QuotaError:
    """A QUOTA_EXCEEDED error as a one-line QuotaError: the quota, regional or global, the fix."""
    q = e.get("quota") or {}
    message = str(e.get("message") or "")
    m = QUOTA_RE.search(message)
    metric = (m.group("metric") if m else None) or _metric_name(q.get("metric")) or q.get("limit_name") or "?"
    dims = q.get("dimensions") or {}
    if m and m.group("global"):
        region = None
    elif dims.get("region") or (m and m.group("region")):
        region = dims.get("region") or (m.group("region") if m else None)
    elif metric.endswith("_ALL_REGIONS") or (q and not dims):
        region = None
    else:
        region = region_of(zone)
    limit: float | None = None
    if isinstance(q.get("limit"), (int, float)):
        limit = float(q["limit"])
    elif m:
        limit = float(m.group("limit"))
    lim = f" (limit {limit:g})" if limit is not None else ""
    if region is None:
        text = (f"quota {metric} exceeded globally{lim}: it counts every region, so no other zone or region "
                f"helps; {QUOTA_FIX}, metric {metric}")
    else:
        text = (f"quota {metric} exceeded in region {region}{lim}: {QUOTA_FIX}, metric {metric} in {region}, "
                f"or add zones of another region")
        if metric.startswith("PREEMPTIBLE_"):
            text += " or allow STANDARD (spot: preferred): only Spot VMs count against it"
    return QuotaError(text, metric=metric, region=region, limit=limit)


def _metric_name(name: Any) -> str | None:
    """``compute.googleapis.com/nvidia_l4_gpus`` -> ``NVIDIA_L4_GPUS``."""
    if not name:
        return None
    return str(name).rsplit("/", 1)[-1].upper()


def _http_errors(exc: Any) -> list[dict[str, Any]]:
    out = []
    for e in getattr(exc, "errors", None) or []:
        if isinstance(e, dict):
            out.append({"code": e.get("reason") or e.get("code"), "message": e.get("message"), "quota": {}})
    if not out:
        out.append({"code": getattr(exc, "reason", None) or getattr(exc, "code", None),
                    "message": getattr(exc, "message", str(exc)), "quota": {}})
    return out


def label_filter(labels: Mapping[str, str], name: str | None = None) -> str:
    """A Compute Engine list filter: every condition in parentheses (an implicit AND)."""
    parts = [f'(labels.{k} = "{v}")' for k, v in labels.items()]
    if name:
        parts.append(f'(name = "{name}")')
    return " ".join(parts)


class GceProvider(Provider):
    name = "gce"

    def __init__(self, *, log: Callable[[str], None] | None = None) -> None:
        from google.cloud import compute_v1

        self.compute_v1 = compute_v1
        kw = client_kwargs()
        self.instances = compute_v1.InstancesClient(**kw)
        self.operations = compute_v1.ZoneOperationsClient(**kw)
        self.log = log or (lambda _m: None)
        self.operation_timeout_s = OPERATION_TIMEOUT_S

    # -- calls ------------------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], what: str, *, raw: bool = False, **kwargs: Any) -> Any:
        """``fn(**kwargs)`` with retries; errors other than NotFound become CloudError (``raw``: kept)."""
        import requests
        from google.api_core import exceptions as gexc

        kwargs.setdefault("retry", None)  # ours (below) honours Retry-After; the library's default does not
        kwargs.setdefault("timeout", 180.0)
        try:
            return call_with_retry(fn, what=what, on_retry=self.log, **kwargs)
        except gexc.NotFound:
            raise
        except gexc.GoogleAPICallError as e:
            if raw:
                raise
            hint = ""
            if is_rate_limited(e):
                hint = RATE_LIMIT_HINT
            elif e.code in (401, 403):
                hint = (" (the caller needs roles/compute.instanceAdmin.v1 on the project and "
                        "roles/iam.serviceAccountUser on the VMs' service account)")
            raise CloudError(f"Compute Engine: {what}: {e.code} {e.message}{hint}") from None
        except requests.RequestException as e:
            raise CloudError(f"Compute Engine: {what}: {e}") from None

    def _wait_op(self, project: str, zone: str, op: Any, what: str) -> Any:
        deadline = time.monotonic() + self.operation_timeout_s
        while _status_name(op.status) != "DONE":
            if time.monotonic() >= deadline:
                raise CloudError(f"{what} in {zone}: operation {op.name} not done after "
                                 f"{self.operation_timeout_s:.0f}s")
            op = self._call(self.operations.wait, f"wait for {what}", project=project, zone=zone,
                            operation=op.name)
        return op

    # -- the VM -------------------------------------------------------------------------
    def build_instance(self, req: VmRequest, zone: str, provisioning_model: str) -> Any:
        """The Instance resource for ``req`` in ``zone`` with ``provisioning_model``."""
        c = self.compute_v1
        s: Any = req.spec
        disk = c.AttachedDisk(
            boot=True, auto_delete=True,
            initialize_params=c.AttachedDiskInitializeParams(
                source_image=s.source_image, disk_size_gb=int(s.disk_size_gb),
                disk_type=f"zones/{zone}/diskTypes/{s.disk_type}"))
        nic = c.NetworkInterface()
        if s.network:
            nic.network = s.network if "/" in s.network else f"global/networks/{s.network}"
        if s.subnetwork:
            nic.subnetwork = s.subnetwork if "/" in s.subnetwork else (
                f"regions/{region_of(zone)}/subnetworks/{s.subnetwork}")
        if not s.network and not s.subnetwork:
            nic.network = "global/networks/default"
        if s.external_ip:
            nic.access_configs = [c.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")]
        scheduling = c.Scheduling(
            provisioning_model=provisioning_model,
            on_host_maintenance="TERMINATE",
            automatic_restart=False,
            instance_termination_action="DELETE",
            # Compute Engine deletes the VM at (time it entered RUNNING) + maxRunDuration, but clears
            # that time when the VM stops (cloud.google.com/compute/docs/instances/limit-vm-runtime):
            # so the VM never powers itself off (startup.sh). A failed entry's VM may be held for a
            # look after its job: its hard lifetime covers that too.
            max_run_duration=c.Duration(seconds=int(s.max_run_duration_s) + int(getattr(s, "debug_hold_s", 0) or 0)))
        inst = c.Instance(
            name=req.name,
            machine_type=f"zones/{zone}/machineTypes/{s.machine_type}",
            disks=[disk],
            network_interfaces=[nic],
            scheduling=scheduling,
            labels=dict(req.labels),
            metadata=c.Metadata(items=[c.Items(key=k, value=v) for k, v in req.metadata.items()]),
        )
        if s.service_account:  # else none at all: code on the VM gets no Google credentials
            inst.service_accounts = [c.ServiceAccount(email=s.service_account,
                                                      scopes=list(s.scopes or DEFAULT_SCOPES))]
        if s.accelerator_count and s.attach_accelerators and s.accelerator_type:
            inst.guest_accelerators = [c.AcceleratorConfig(
                accelerator_type=f"zones/{zone}/acceleratorTypes/{s.accelerator_type}",
                accelerator_count=int(s.accelerator_count))]
        return inst

    def create(self, req: VmRequest, zone: str, provisioning_model: str) -> Instance:
        from google.api_core import exceptions as gexc

        what = f"create {req.name} ({provisioning_model})"
        resource = self.build_instance(req, zone, provisioning_model)
        request_id = str(uuid.uuid4())  # the same id on every retry: Compute Engine de-duplicates
        try:
            op = self._call(self.instances.insert_unary, what, raw=True, request=self.compute_v1.InsertInstanceRequest(
                project=req.project, zone=zone, instance_resource=resource, request_id=request_id))
        except gexc.GoogleAPICallError as e:
            raise classify(_http_errors(e), zone, what) from None
        op = self._wait_op(req.project, zone, op, what)
        errors = _op_errors(op)
        if errors:
            raise classify(errors, zone, what)
        return Instance(name=req.name, zone=zone, status="PROVISIONING", labels=dict(req.labels),
                        provisioning_model=provisioning_model)

    def _to_instance(self, inst: Any) -> Instance:
        labels = dict(inst.labels)
        try:
            created = float(labels["created"]) if "created" in labels else None
        except ValueError:
            created = None
        mrd = inst.scheduling.max_run_duration.seconds if "max_run_duration" in inst.scheduling else None
        hold = next((i.value for i in inst.metadata.items if i.key == HOLD_METADATA_KEY), None)
        try:
            hold_until = float(hold) if hold else None
        except ValueError:
            hold_until = None
        return Instance(name=inst.name, zone=_last(inst.zone), status=_status_name(inst.status), labels=labels,
                        provisioning_model=inst.scheduling.provisioning_model or "STANDARD", created=created,
                        max_run_duration_s=float(mrd) if mrd else None,
                        created_at=inst.creation_timestamp or None, last_stop_at=inst.last_stop_timestamp or None,
                        hold_until=hold_until)

    def get(self, project: str, zone: str, name: str) -> Instance | None:
        from google.api_core import exceptions as gexc

        try:
            inst = self._call(self.instances.get, f"get {name}", project=project, zone=zone, instance=name)
        except gexc.NotFound:
            return None
        return self._to_instance(inst)

    def _delete(self, project: str, zone: str, name: str, *, wait: bool) -> Any | None:
        """The delete operation, waited for when ``wait`` (an error other than the VM being gone
        raises); None when the VM was gone before it."""
        from google.api_core import exceptions as gexc

        try:
            op = self._call(self.instances.delete, f"delete {name}", request=self.compute_v1.DeleteInstanceRequest(
                project=project, zone=zone, instance=name, request_id=str(uuid.uuid4())))
        except gexc.NotFound:
            return None
        if wait:
            op = self._wait_op(project, zone, op, f"delete {name}")
            errors = _op_errors(op)
            if errors and not _not_found(errors):
                raise classify(errors, zone, f"delete {name}")
        return op

    def delete(self, project: str, zone: str, name: str, *, wait: bool = True) -> bool:
        return self._delete(project, zone, name, wait=wait) is not None

    def delete_timed(self, project: str, zone: str, name: str) -> str | None:
        """Delete and wait; the delete operation's end time (Compute Engine's clock)."""
        op = self._delete(project, zone, name, wait=True)
        if op is None or _not_found(_op_errors(op)):
            return None
        return op.end_time or rfc3339(time.time())

    def list_ours(self, project: str, labels: Mapping[str, str] | None = None, *,
                  name: str | None = None) -> list[Instance]:
        flt = label_filter({OURS_LABEL: "1", **(labels or {})}, name)
        pager = self._call(self.instances.aggregated_list, "list VMs",
                           request=self.compute_v1.AggregatedListInstancesRequest(project=project, filter=flt))
        out = []
        for _scope, scoped in pager:
            for inst in scoped.instances:
                out.append(self._to_instance(inst))
        return out

    def serial_output(self, project: str, zone: str, name: str, start: int = 0) -> tuple[str, int]:
        """(contents since ``start``, next offset); ('', start) when the VM is gone."""
        from google.api_core import exceptions as gexc

        try:
            out = self._call(self.instances.get_serial_port_output, f"serial console of {name}",
                             request=self.compute_v1.GetSerialPortOutputInstanceRequest(
                                 project=project, zone=zone, instance=name, port=1, start=start))
        except (gexc.NotFound, gexc.BadRequest):
            return "", start
        return out.contents, int(out.next_ or start)

    def _ops_of(self, project: str, zone: str, name: str, kind: str) -> list[Any]:
        flt = f'(operationType = "{kind}")'
        pager = self._call(self.operations.list, "list operations", request=self.compute_v1.ListZoneOperationsRequest(
            project=project, zone=zone, filter=flt))
        return [op for op in pager if _last(op.target_link) == name]

    def lifetime(self, project: str, zones: list[str], name: str) -> VmTimes:
        """The VM's insert and the delete or preemption that removed it, from the zone operations
        Compute Engine keeps (the latest of each, should a name have been used twice)."""
        out = VmTimes()
        for zone in zones:
            inserts = [op for op in self._ops_of(project, zone, name, "insert") if not op.error.errors]
            if not inserts:
                continue
            out.zone = zone
            out.created_at = max((op.end_time or op.insert_time for op in inserts), key=epoch_of)
            created = epoch_of(out.created_at)
            for kind in REMOVED_BY:
                for op in self._ops_of(project, zone, name, kind):
                    end = op.end_time or op.insert_time
                    if end and epoch_of(end) >= created and (
                            out.deleted_at is None or epoch_of(end) > epoch_of(out.deleted_at)):
                        out.deleted_at, out.removed_by = end, kind
            return out
        return out

    def hold(self, project: str, zone: str, name: str, until: float) -> bool:
        """Set the metadata item ``gpu-runner-hold`` (the VM's own timer reads it, the janitor
        and stop respect it); every other item is kept as it is."""
        from google.api_core import exceptions as gexc

        try:
            inst = self._call(self.instances.get, f"get {name}", project=project, zone=zone, instance=name)
        except gexc.NotFound:
            return False
        items = [self.compute_v1.Items(key=i.key, value=i.value) for i in inst.metadata.items
                 if i.key != HOLD_METADATA_KEY]
        items.append(self.compute_v1.Items(key=HOLD_METADATA_KEY, value=str(int(until))))
        body = self.compute_v1.Metadata(fingerprint=inst.metadata.fingerprint, items=items)
        try:
            op = self._call(self.instances.set_metadata_unary, f"hold {name}", project=project, zone=zone,
                            instance=name, metadata_resource=body)
        except gexc.NotFound:
            return False
        op = self._wait_op(project, zone, op, f"hold {name}")
        errors = _op_errors(op)
        if errors:
            raise classify(errors, zone, f"hold {name}")
        return True

    def was_preempted(self, project: str, zones: list[str], name: str) -> bool:
        return any(self._ops_of(project, zone, name, "compute.instances.preempted") for zone in zones)

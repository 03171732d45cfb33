"""``gpu-runner doctor``: prove a project and a repository are ready before the first GPU minute.

Every check asks the real service, read-only, what a start would otherwise find out minutes later
(or never): the launcher's permissions, whether each zone offers the machine and its GPUs, whether
the boot image family resolves and is current, the GPU quota for what the matrix may start at
once, a way out to GitHub from a VM, the limits of a machine family, and the repository's runner,
fork pull request and workflow-token settings. Each finding is ✓ (holds), ✗ (does not: a start
would fail or a setting is unsafe, with the fix in one line) or ? (could not be checked: no
credentials, no permission to look, an outage).

The Compute Engine calls go through google-cloud-compute (``GPU_RUNNER_COMPUTE_EMULATOR_HOST``
points them at a test server); the permission test through google-cloud-resource-manager's
``projects.testIamPermissions`` (Compute Engine has no project-level permission test: its
``testIamPermissions`` methods each need an existing resource), pointed at a test server by
``GPU_RUNNER_RESOURCEMANAGER_EMULATOR_HOST`` (else the Compute Engine one); GitHub through PyGithub.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .cloud.base import region_of
from .errors import EXIT_FAILED, EXIT_INFRA, EXIT_OK, ConfigError, GpuRunnerError, first_line

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
SYMBOLS = {PASS: "✓", FAIL: "✗", UNKNOWN: "?"}
DEFAULT_MAX_PARALLEL = 8
"""The reusable workflow's ``max-parallel`` default: entries whose VMs may run at once."""
DEFAULT_APPROVAL_LABEL = "gpu-runner:approved"
RESOURCEMANAGER_EMULATOR_ENV = "GPU_RUNNER_RESOURCEMANAGER_EMULATOR_HOST"

# What start, stop and the janitor call, as IAM permissions on the project. Creating a VM needs
# compute.instances.create and, for what the request carries, compute.disks.create (its boot disk),
# compute.subnetworks.use (its NIC), compute.subnetworks.useExternalIp (an external IP),
# compute.instances.setMetadata (metadata), compute.instances.setLabels (labels) and
# compute.instances.setServiceAccount (a service account): "Required roles" in
# https://cloud.google.com/compute/docs/instances/create-start-instance and
# https://cloud.google.com/compute/docs/gpus/create-gpu-vm-accelerator-optimized. Stop and the
# janitor get, list, delete, read the serial console and the zone operations; a hold sets metadata.
LAUNCHER_PERMISSIONS = (
    "compute.instances.create", "compute.instances.get", "compute.instances.list", "compute.instances.delete",
    "compute.instances.getSerialPortOutput", "compute.instances.setMetadata", "compute.instances.setLabels",
    "compute.disks.create", "compute.subnetworks.use", "compute.zoneOperations.get", "compute.zoneOperations.list",
)
EXTERNAL_IP_PERMISSIONS = ("compute.subnetworks.useExternalIp",)
SERVICE_ACCOUNT_PERMISSIONS = ("compute.instances.setServiceAccount", "iam.serviceAccounts.actAs")

# Quota metrics of each GPU model, per region: on-demand, and for Spot VMs PREEMPTIBLE_<metric>
# ("To prevent Spot VMs from consuming your quotas for standard VMs' CPUs, GPUs, and disks,
# consider requesting preemptible quota": https://cloud.google.com/compute/docs/instances/create-use-spot;
# the metrics: https://cloud.google.com/compute/resource-usage#gpu_quota). GPUS_ALL_REGIONS is the
# project's global GPU quota (projects.get ``quotas``).
GPU_QUOTA_METRICS = {
    "nvidia-l4": "NVIDIA_L4_GPUS", "nvidia-tesla-t4": "NVIDIA_T4_GPUS", "nvidia-tesla-v100": "NVIDIA_V100_GPUS",
    "nvidia-tesla-p4": "NVIDIA_P4_GPUS", "nvidia-tesla-p100": "NVIDIA_P100_GPUS",
    "nvidia-tesla-a100": "NVIDIA_A100_GPUS", "nvidia-a100-80gb": "NVIDIA_A100_80GB_GPUS",
    "nvidia-h100-80gb": "NVIDIA_H100_GPUS", "nvidia-h100-mega-80gb": "NVIDIA_H100_MEGA_GPUS",
    "nvidia-h200-141gb": "NVIDIA_H200_GPUS", "nvidia-b200": "NVIDIA_B200_GPUS",
}
ALL_REGIONS_METRIC = "GPUS_ALL_REGIONS"

# The NVIDIA driver branch a GPU needs at least: Blackwell (B200) is supported from R570 on
# (https://docs.nvidia.com/datacenter/tesla/tesla-release-notes-570-86-10/). A Deep Learning VM
# family names its driver (``...-nvidia-570``).
MIN_DRIVER = {"nvidia-b200": 570}

# Constraints of machine families, refused by Compute Engine at insert time.
# Hyperdisk only: "The disk type you specify must be compatible with the instance's machine series"
# (AttachedDiskInitializeParams.diskType in the Compute Engine API); the series without Persistent
# Disk support: https://cloud.google.com/compute/docs/disks/persistent-disks#machine_series_support
# (A3 Ultra, A4, A4X and G4 take Hyperdisk only; e.g. "for A3U machines, the default value is
# hyperdisk-balanced", https://cloud.google.com/vertex-ai/docs/reference/rest/v1/DiskSpec).
HYPERDISK_ONLY = ("a3-ultragpu-", "a4-highgpu-", "a4x-", "g4-standard-")
# No on-demand (STANDARD) capacity: A3 Ultra and A4 come as Spot, flex-start or a reservation, A4X
# only with a reservation (https://cloud.google.com/ai-hypercomputer/docs/consumption-models: Spot
# and Flex-start "Any GPU machine except A4X"); A3 High with 1, 2 or 4 GPUs only as Spot or
# flex-start (https://cloud.google.com/compute/docs/accelerator-optimized-machines#a3-high-vms).
# gpu-runner asks for SPOT and STANDARD only.
NO_STANDARD = ("a3-ultragpu-", "a4-highgpu-", "a3-highgpu-1g", "a3-highgpu-2g", "a3-highgpu-4g")
RESERVATION_ONLY = ("a4x-",)
DEPRECATED_STATES = ("DEPRECATED", "OBSOLETE", "DELETED")


@dataclass
class Finding:
    status: str
    """pass, fail or unknown."""
    check: str
    subject: str
    detail: str
    fix: str = ""

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.status]


@dataclass
class Report:
    findings: list[Finding]

    def exit_code(self, *, allow_unknown: bool = False) -> int:
        """1 when something does not hold; 3 when something could not be checked (0 with
        ``allow_unknown``); else 0."""
        statuses = {f.status for f in self.findings}
        if FAIL in statuses:
            return EXIT_FAILED
        if UNKNOWN in statuses and not allow_unknown:
            return EXIT_INFRA
        return EXIT_OK

    def to_json(self, *, allow_unknown: bool = False) -> dict[str, Any]:
        return {"ok": all(f.status == PASS for f in self.findings),
                "exit_code": self.exit_code(allow_unknown=allow_unknown),
                "checks": [{**asdict(f), "symbol": f.symbol} for f in self.findings]}

    def table(self) -> str:
        """One line per finding (✓ / ✗ / ?), the fix under each that does not hold."""
        w1 = max((len(f.check) for f in self.findings), default=0)
        w2 = max((len(f.subject) for f in self.findings), default=0)
        lines = []
        for f in self.findings:
            lines.append(f"{f.symbol} {f.check:<{w1}}  {f.subject:<{w2}}  {f.detail}".rstrip())
            if f.fix and f.status != PASS:
                lines.append(f"  {' ' * w1}  fix: {f.fix}")
        counts = {s: sum(1 for f in self.findings if f.status == s) for s in (PASS, FAIL, UNKNOWN)}
        lines.append(f"{counts[PASS]} ✓, {counts[FAIL]} ✗, {counts[UNKNOWN]} ? (could not check)")
        return "\n".join(lines)

    def markdown(self) -> str:
        def cell(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")

        rows = ["### gpu-runner doctor", "", "| | check | for | finding | fix |", "|---|---|---|---|---|"]
        rows += [f"| {f.symbol} | {cell(f.check)} | {cell(f.subject)} | {cell(f.detail)} | "
                 f"{cell(f.fix if f.status != PASS else '')} |" for f in self.findings]
        return "\n".join(rows) + "\n"


# --------------------------------------------------------------------------------------------
# what the matrix asks for
# --------------------------------------------------------------------------------------------


def _last(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def quota_metric(accelerator_type: str, model: str) -> str | None:
    metric = GPU_QUOTA_METRICS.get(accelerator_type)
    if metric is None:
        return None
    return metric if model == "STANDARD" else f"PREEMPTIBLE_{metric}"


def gpu_demand(entries: Sequence[Any], max_parallel: int) -> tuple[dict[tuple[str, str], tuple[int, int]], int]:
    """What the matrix may hold at once: per (region, quota metric), and in all regions. At most
    ``max_parallel`` entries run at once, the ones with the most GPUs the worst case; an entry may
    land in any region of its zones, on any provisioning model of its ladder. Per key: (GPUs at
    once, GPUs of the largest single entry)."""
    per: dict[tuple[str, str], list[int]] = defaultdict(list)
    every: list[int] = []
    for e in entries:
        spec = e.gce
        if spec is None or not spec.accelerator_type or not spec.accelerator_count:
            continue
        every.append(int(spec.accelerator_count))
        for model in spec.provisioning_models:
            metric = quota_metric(spec.accelerator_type, model)
            if metric is None:
                continue
            for region in dict.fromkeys(region_of(z) for z in spec.zones):
                per[(region, metric)].append(int(spec.accelerator_count))

    def top(counts: list[int]) -> int:
        return sum(sorted(counts, reverse=True)[:max_parallel])

    return {k: (top(v), max(v)) for k, v in sorted(per.items())}, top(every)


def family_findings(machine: str, spec: Any) -> list[Finding]:
    """The limits of a machine family, known before any call (an error here is one at insert time)."""
    out: list[Finding] = []
    mt = spec.machine_type
    if mt.startswith(RESERVATION_ONLY):
        out.append(Finding(FAIL, "machine family", machine, f"{mt} is offered only through a reservation",
                           "choose another machine type: gpu-runner starts SPOT or STANDARD VMs, not reservation-bound"
                           " ones"))
    elif mt.startswith(NO_STANDARD) and "STANDARD" in spec.provisioning_models:
        out.append(Finding(FAIL, "machine family", machine, f"{mt} has no on-demand (STANDARD) capacity: only Spot "
                           "or flex-start", f"set spot: only on machine {machine}"))
    if mt.startswith(HYPERDISK_ONLY) and not spec.disk_type.startswith("hyperdisk-"):
        out.append(Finding(FAIL, "boot disk", machine, f"{mt} takes Hyperdisk only, not {spec.disk_type}",
                           f"set disk: {{type: hyperdisk-balanced}} on machine {machine}"))
    if not out:
        out.append(Finding(PASS, "machine family", machine, f"{mt}: {spec.disk_type} boot disk, "
                           f"{' then '.join(spec.provisioning_models)}"))
    return out


# --------------------------------------------------------------------------------------------
# Compute Engine and Resource Manager
# --------------------------------------------------------------------------------------------


class _Unknown(Exception):
    """A call that could not answer (permission, outage): the finding is ?, with why."""


class Gce:
    """The read-only Compute Engine and Resource Manager calls of the doctor."""

    def __init__(self, project: str) -> None:
        from google.cloud import compute_v1

        from .cloud.gce import EMULATOR_ENV, client_kwargs

        self.project = project
        kw = client_kwargs(EMULATOR_ENV)
        self.machine_types = compute_v1.MachineTypesClient(**kw)
        self.accelerator_types = compute_v1.AcceleratorTypesClient(**kw)
        self.images = compute_v1.ImagesClient(**kw)
        self.regions = compute_v1.RegionsClient(**kw)
        self.projects = compute_v1.ProjectsClient(**kw)
        self.routers = compute_v1.RoutersClient(**kw)
        self._regions: dict[str, Any] = {}

    def call(self, fn: Callable[..., Any], what: str, **kwargs: Any) -> Any:
        """``fn(**kwargs)`` (retried on 429/5xx); None when it is not there (404); _Unknown when
        it cannot be asked."""
        import requests
        from google.api_core import exceptions as gexc

        from .cloud.retry import call_with_retry

        try:
            return call_with_retry(fn, what=what, retry=None, timeout=60.0, **kwargs)
        except gexc.NotFound:
            return None
        except gexc.GoogleAPICallError as e:
            raise _Unknown(f"{what}: {e.code} {e.message}") from None
        except requests.RequestException as e:
            raise _Unknown(f"{what}: {e}") from None

    def region(self, region: str) -> Any:
        if region not in self._regions:
            self._regions[region] = self.call(self.regions.get, f"regions.get {region}", project=self.project,
                                              region=region)
        return self._regions[region]


def permission_findings(project: str, specs: Iterable[Any]) -> list[Finding]:
    """The launcher's permissions on the project (Resource Manager ``projects.testIamPermissions``:
    "Returns permissions that a caller has on the specified project",
    https://cloud.google.com/resource-manager/reference/rest/v3/projects/testIamPermissions)."""
    from google.api_core import exceptions as gexc

    try:
        from google.cloud import resourcemanager_v3
    except ImportError:
        return [Finding(UNKNOWN, "permissions", project, "google-cloud-resource-manager is not installed",
                        "pip install 'gpu-runner[gce]'")]
    specs = list(specs)
    wanted = list(LAUNCHER_PERMISSIONS)
    if not specs or any(s.external_ip for s in specs):
        wanted += EXTERNAL_IP_PERMISSIONS
    if any(s.service_account for s in specs):
        wanted += SERVICE_ACCOUNT_PERMISSIONS
    try:
        from .cloud.gce import EMULATOR_ENV, client_kwargs

        # a test server for Compute Engine serves Resource Manager too, unless one is named for it
        env = RESOURCEMANAGER_EMULATOR_ENV if os.environ.get(RESOURCEMANAGER_EMULATOR_ENV) else EMULATOR_ENV
        crm = resourcemanager_v3.ProjectsClient(**client_kwargs(env))
        got = crm.test_iam_permissions(request={"resource": f"projects/{project}", "permissions": wanted},
                                       timeout=60.0)
    except gexc.GoogleAPICallError as e:
        return [Finding(UNKNOWN, "permissions", project, f"projects.testIamPermissions: {e.code} {e.message}",
                        "enable the Cloud Resource Manager API on the project to let doctor test permissions")]
    missing = [p for p in wanted if p not in set(got.permissions)]
    if missing == ["iam.serviceAccounts.actAs"]:  # may be granted on the service account itself
        return [Finding(UNKNOWN, "permissions", project, "iam.serviceAccounts.actAs is not granted on the project; "
                        "it may be on the VMs' service account itself, which doctor does not ask",
                        "grant the launcher roles/iam.serviceAccountUser on the VMs' service account")]
    if missing:
        return [Finding(FAIL, "permissions", project, f"the launcher lacks {', '.join(missing)}",
                        f"grant it roles/compute.instanceAdmin.v1 on {project}"
                        + (" and roles/iam.serviceAccountUser on the VMs' service account"
                           if any(m.startswith("iam.") for m in missing) else ""))]
    return [Finding(PASS, "permissions", project, f"start, stop and janitor: all {len(wanted)} permissions held")]


def _zones_findings(gce: Gce, machine: str, spec: Any) -> list[Finding]:
    out = []
    for kind, name, client, field in (("machine type", spec.machine_type, gce.machine_types, "machine_type"),
                                      ("accelerator type", spec.accelerator_type, gce.accelerator_types,
                                       "accelerator_type")):
        if not name:
            continue
        missing, unknown = [], []
        for zone in spec.zones:
            try:
                got = gce.call(client.get, f"{kind} {name} in {zone}", project=gce.project, zone=zone,
                               **{field: name})
            except _Unknown as e:
                unknown.append(str(e))
                continue
            if got is None:
                missing.append(zone)
        if missing:
            where = "any of its zones" if len(missing) == len(spec.zones) else ", ".join(missing)
            listing = (f"gcloud compute machine-types list --filter=name={name}" if kind == "machine type"
                       else f"gcloud compute accelerator-types list --filter=name={name}")
            out.append(Finding(FAIL, kind, machine, f"{name} is not offered in {where}",
                               f"take {', '.join(missing)} out of machine {machine}'s zones (the zones that offer it: "
                               f"`{listing}`)" if len(missing) < len(spec.zones) else
                               f"choose zones that offer {name}: `{listing}`"))
        elif unknown:
            out.append(Finding(UNKNOWN, kind, machine, unknown[0],
                               "give the caller compute.machineTypes.get and compute.acceleratorTypes.get "
                               "(roles/compute.viewer)"))
        else:
            out.append(Finding(PASS, kind, machine, f"{name} offered in {', '.join(spec.zones)}"))
    return out


_SOURCE_IMAGE = re.compile(r"^(?:https://[^/]+/compute/v1/)?projects/(?P<project>[^/]+)/global/images/"
                           r"(?:family/(?P<family>[^/]+)|(?P<name>[^/]+))$")


def image_finding(gce: Gce, subject: str, source_image: str, accelerator_type: str | None) -> Finding:
    """The boot image resolves (``images.getFromFamily`` for a family) and is not deprecated
    (its ``deprecated.state``: DEPRECATED, OBSOLETE or DELETED), and its driver runs the GPU."""
    from .config import DEFAULT_BOOT_IMAGE_FAMILY, DEFAULT_BOOT_IMAGE_PROJECT

    m = _SOURCE_IMAGE.match(source_image)
    if m is None:
        return Finding(UNKNOWN, "boot image", subject, f"{source_image}: not an image path doctor can read")
    project, family, name = m.group("project"), m.group("family"), m.group("name")
    is_default = project == DEFAULT_BOOT_IMAGE_PROJECT and family == DEFAULT_BOOT_IMAGE_FAMILY
    shown = f"{project}/{'family/' + family if family else name}"
    fix = (f"upgrade gpu-runner (its default family {family} is no longer current), or set boot_image.family"
           if is_default else f"set boot_image.family to {DEFAULT_BOOT_IMAGE_FAMILY} (the default) or another "
           "current family")
    try:
        img = (gce.call(gce.images.get_from_family, f"images.getFromFamily {shown}", project=project, family=family)
               if family else gce.call(gce.images.get, f"images.get {shown}", project=project, image=name))
    except _Unknown as e:
        return Finding(UNKNOWN, "boot image", subject, str(e), "give the caller compute.images.get on the image's "
                       "project (public images: anyone may)")
    if img is None:
        return Finding(FAIL, "boot image", subject, f"{shown} does not resolve (no such image or family)", fix)
    state = img.deprecated.state if "deprecated" in img else ""
    if state in DEPRECATED_STATES:
        repl = f"; its replacement: {_last(img.deprecated.replacement)}" if img.deprecated.replacement else ""
        return Finding(FAIL, "boot image", subject, f"{shown} is {state} (image {img.name}){repl}", fix)
    driver = re.search(r"nvidia-(\d+)", family or name or "")
    need = MIN_DRIVER.get(accelerator_type or "")
    if need and driver and int(driver.group(1)) < need:
        return Finding(FAIL, "boot image", subject, f"{shown} has NVIDIA driver {driver.group(1)}; "
                       f"{accelerator_type} needs {need} or newer", f"set boot_image.family to {DEFAULT_BOOT_IMAGE_FAMILY}")
    return Finding(PASS, "boot image", subject, f"{shown}: {img.name}{' (gpu-runner default)' if is_default else ''}")


def _quota(quotas: Iterable[Any], metric: str) -> tuple[float, float] | None:
    for q in quotas:
        if q.metric == metric:
            return float(q.limit), float(q.usage)
    return None


def quota_findings(gce: Gce, entries: Sequence[Any], max_parallel: int) -> list[Finding]:
    per, total = gpu_demand(entries, max_parallel)
    out: list[Finding] = []
    for (region, metric), (need, one) in per.items():
        subject = f"{region} {metric}"
        try:
            reg = gce.region(region)
        except _Unknown as e:
            out.append(Finding(UNKNOWN, "GPU quota", subject, str(e), "give the caller compute.regions.get "
                               "(roles/compute.viewer)"))
            continue
        got = _quota(reg.quotas, metric) if reg is not None else None
        if got is None:
            out.append(Finding(UNKNOWN, "GPU quota", subject, f"region {region} lists no quota {metric}",
                               f"look it up: `gcloud compute regions describe {region}`"))
            continue
        limit, usage = got
        spot = metric.startswith("PREEMPTIBLE_")
        if limit < need:
            others = [f"lower max-parallel (to fit {limit:g})"] if one <= limit else []
            others += ["set spot: never"] if spot else []
            out.append(Finding(FAIL, "GPU quota", subject, f"limit {limit:g}, the matrix may hold {need} at once "
                               f"(max-parallel {max_parallel})",
                               f"ask for {metric} of at least {need} in {region} (IAM & Admin > Quotas)"
                               + "".join(f", or {o}" for o in others)))
        else:
            busy = f", {usage:g} in use now" if usage else ""
            out.append(Finding(PASS, "GPU quota", subject, f"limit {limit:g} ≥ {need} at once{busy}"))
    if total:
        try:
            proj = gce.call(gce.projects.get, "projects.get", project=gce.project)
        except _Unknown as e:
            return [*out, Finding(UNKNOWN, "GPU quota", ALL_REGIONS_METRIC, str(e),
                                  "give the caller compute.projects.get (roles/compute.viewer)")]
        got = _quota(proj.quotas, ALL_REGIONS_METRIC) if proj is not None else None
        if got is None:
            out.append(Finding(UNKNOWN, "GPU quota", ALL_REGIONS_METRIC, "the project lists no GPUS_ALL_REGIONS quota",
                               f"look it up: `gcloud compute project-info describe --project {gce.project}`"))
        elif got[0] < total:
            out.append(Finding(FAIL, "GPU quota", ALL_REGIONS_METRIC, f"limit {got[0]:g}, the matrix may hold {total} "
                               f"GPUs at once (max-parallel {max_parallel})",
                               f"ask for GPUS_ALL_REGIONS of at least {total} (IAM & Admin > Quotas), or lower "
                               "max-parallel"))
        else:
            out.append(Finding(PASS, "GPU quota", ALL_REGIONS_METRIC, f"limit {got[0]:g} ≥ {total} GPUs at once"))
    return out


def egress_finding(gce: Gce, machine: str, spec: Any) -> Finding:
    """The VM reaches GitHub: an external IP, or Cloud NAT for its subnet in each region of its
    zones ("Cloud NAT lets VMs without external IP addresses ... create outbound connections",
    https://cloud.google.com/nat/docs/overview; routers.list, each router's ``nats``)."""
    if spec.external_ip:
        return Finding(PASS, "egress", machine, "external IP")
    network = _last(spec.network) if spec.network else "default"
    subnet = _last(spec.subnetwork) if spec.subnetwork else network
    regions = list(dict.fromkeys(region_of(z) for z in spec.zones))
    if spec.subnetwork and "/regions/" in spec.subnetwork:
        regions = [spec.subnetwork.split("/regions/", 1)[1].split("/", 1)[0]]
    without = []
    for region in regions:
        try:
            routers = gce.call(gce.routers.list, f"routers.list {region}", project=gce.project, region=region)
        except _Unknown as e:
            return Finding(UNKNOWN, "egress", machine, str(e), "give the caller compute.routers.list "
                           "(roles/compute.networkViewer)")
        ok = False
        for router in routers or []:
            if _last(router.network) != network:
                continue
            for nat in router.nats:
                ranges = nat.source_subnetwork_ip_ranges_to_nat
                if ranges.startswith("ALL_SUBNETWORKS") or any(_last(s.name) == subnet for s in nat.subnetworks):
                    ok = True
        if not ok:
            without.append(region)
    if without:
        return Finding(FAIL, "egress", machine, f"no external IP and no Cloud NAT for subnet {subnet} of network "
                       f"{network} in {', '.join(without)}: the runner cannot reach GitHub",
                       f"set gce.external_ip: true, or add Cloud NAT: `gcloud compute routers nats create gpu-runner "
                       f"--router=ROUTER --region={without[0]} --auto-allocate-nat-external-ips "
                       "--nat-all-subnet-ip-ranges`")
    return Finding(PASS, "egress", machine, f"Cloud NAT in {', '.join(regions)}")


def _credentials() -> tuple[str | None, str]:
    """(None, how the calls authenticate) or (why there are no credentials, '')."""
    from .cloud.gce import EMULATOR_ENV

    if os.environ.get(EMULATOR_ENV):
        return None, f"test server {os.environ[EMULATOR_ENV]}"
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except DefaultCredentialsError as e:
        return str(e).splitlines()[0] if str(e) else "no Application Default Credentials", ""
    who = getattr(creds, "service_account_email", None) or getattr(creds, "signer_email", None)
    return None, f"Application Default Credentials{f' ({who})' if isinstance(who, str) else ''}"


def gce_findings(entries: Sequence[Any], project: str | None, max_parallel: int) -> list[Finding]:
    from .cloud.lifecycle import project_for
    from .config import DEFAULT_BOOT_IMAGE_FAMILY, DEFAULT_BOOT_IMAGE_PROJECT
    from .errors import missing_extra

    machines: dict[str, Any] = {}
    for e in entries:
        if e.gce is not None:
            machines.setdefault(e.machine, e.gce)
    out: list[Finding] = []
    for name, spec in machines.items():
        out += family_findings(name, spec)
    gce_entries = [e for e in entries if e.gce is not None]
    try:
        proj = project_for(gce_entries[0] if gce_entries else None, project)
    except ConfigError as e:
        return [*out, Finding(UNKNOWN, "GCP project", "", str(e), "pass --project PROJECT or set gce.project in the "
                              "matrix file; nothing on Compute Engine was checked")]
    missing = missing_extra("gce")
    if missing:
        return [*out, Finding(UNKNOWN, "credentials", proj, f"{missing} is not installed",
                              "pip install 'gpu-runner[gce]'")]
    why, how = _credentials()
    if why is not None:
        return [*out, Finding(UNKNOWN, "credentials", proj, f"no Google credentials: {why}",
                              "run `gcloud auth application-default login` (in GitHub Actions: "
                              "google-github-actions/auth); nothing on Compute Engine was checked")]
    out.append(Finding(PASS, "credentials", proj, how))
    try:
        gce = Gce(proj)
    except GpuRunnerError:
        raise
    except Exception as e:  # noqa: BLE001 - a client that cannot be made is a finding, not a traceback
        return [*out, Finding(UNKNOWN, "credentials", proj, f"Compute Engine client: {e}")]
    out += permission_findings(proj, machines.values())
    if not machines:
        out.append(image_finding(gce, "(default)", f"projects/{DEFAULT_BOOT_IMAGE_PROJECT}/global/images/family/"
                                 f"{DEFAULT_BOOT_IMAGE_FAMILY}", None))
    for name, spec in machines.items():
        out += _zones_findings(gce, name, spec)
        out.append(image_finding(gce, name, spec.source_image, spec.accelerator_type))
        out.append(egress_finding(gce, name, spec))
    out += quota_findings(gce, gce_entries, max_parallel)
    return out


# --------------------------------------------------------------------------------------------
# GitHub
# --------------------------------------------------------------------------------------------


class _GitHub:
    def __init__(self) -> None:
        import requests
        from github import GithubException

        from .github.client import client, repository

        self.repo_name = repository()
        self.gh = client()
        repo = self.gh.get_repo(self.repo_name)  # lazy: no request
        self.repo_url = repo.url
        self.requester = repo.requester if hasattr(repo, "requester") else repo._requester
        self.errors = (GithubException, requests.RequestException)

    def get(self, url: str, **params: Any) -> tuple[int, Any]:
        """(200, data), or (status, message) when GitHub refuses; _Unknown when it cannot answer."""
        try:
            _headers, data = self.requester.requestJsonAndCheck("GET", url, parameters=params or None)
        except self.errors as e:
            status = getattr(e, "status", None)
            if status in (401, 403, 404):
                data = getattr(e, "data", None)
                msg = data.get("message") if isinstance(data, dict) else None
                return int(status), str(msg or status)
            raise _Unknown(f"GET {url.replace(self.gh_base(), '')}: {status or ''} {e}".strip()) from None
        return 200, data

    def gh_base(self) -> str:
        from .github.client import api_url

        return api_url()


def _runner_release_check(gh: _GitHub) -> Finding:
    """The runner release ``start`` would install resolves, as ``start`` resolves it
    (:func:`gpu_runner.github.releases.resolve_runner_release`: a pin from the environment, else
    the latest release of actions/runner with its published sha256), and GitHub still accepts it."""
    from .errors import InfraError
    from .github.releases import MIN_RUNNER_VERSION, resolve_runner_release

    try:
        rel = resolve_runner_release(gh.gh)
    except ConfigError as e:
        return Finding(FAIL, "runner release", "actions/runner", first_line(e),
                       f"pin {MIN_RUNNER_VERSION} or later (GPU_RUNNER_RUNNER_VERSION and GPU_RUNNER_RUNNER_SHA256), "
                       "or leave the pin out")
    except InfraError as e:
        return Finding(UNKNOWN, "runner release", "actions/runner", first_line(e),
                       "retry later, or pin a runner (--runner-version and --runner-sha256)")
    return Finding(PASS, "runner release", "actions/runner", f"{rel.version} ({rel.source}), sha256 published")


def _runner_group_check(gh: _GitHub, group_id: int) -> Finding:
    """Runner group ``group_id`` (GET /orgs/{org}/actions/runner-groups/{id}) is what ``start``
    requires before it registers an organisation runner there: restricted to selected workflows that
    include this repository's gpu-runner workflow, open to this repository
    (:func:`gpu_runner.github.runners.group_problem`)."""
    import os

    from .github.runners import ORG_PERMISSION_HINT, group_problem, repository_is_public

    repo = gh.repo_name
    org = repo.split("/", 1)[0]
    subject = f"group {group_id} of {org}"
    try:
        status, data = gh.get(f"{gh.gh_base()}/orgs/{org}/actions/runner-groups/{int(group_id)}")
    except _Unknown as e:
        return Finding(UNKNOWN, "runner group", subject, str(e), "retry later")
    if status in (401, 403):
        return Finding(FAIL, "runner group", subject, f"the token cannot read the organisation's runner groups: "
                       f"{status} {data}", ORG_PERMISSION_HINT[0].upper() + ORG_PERMISSION_HINT[1:])
    problem = group_problem(data if status == 200 else None, group_id=group_id, repo=repo,
                            workflow_ref=os.environ.get("GITHUB_WORKFLOW_REF", ""), repo_public=repository_is_public())
    if problem:
        finding, _, fix = problem.partition(": ")
        return Finding(FAIL, "runner group", subject, finding, fix)
    return Finding(PASS, "runner group", subject, f"{data.get('name')!r}: restricted to selected workflows that "
                   f"include this one, open to {repo}")


def github_findings(approval_label: str, runner_group_id: int | None = None) -> list[Finding]:
    from .errors import missing_extra

    checks = ("runner admin", "runner release", "fork approval", "workflow token", "approval label")
    missing = missing_extra("github")
    if missing:
        return [Finding(UNKNOWN, "GitHub", ", ".join(checks), f"not checked: {missing} is not installed",
                        "pip install 'gpu-runner[github]'")]
    try:
        gh = _GitHub()
    except ConfigError as e:
        return [Finding(UNKNOWN, "GitHub", ", ".join(checks), f"not checked: {str(e).splitlines()[0]}",
                        "set GITHUB_REPOSITORY=OWNER/NAME and GPU_RUNNER_GITHUB_TOKEN (or a GitHub App)")]
    repo = gh.repo_name
    out: list[Finding] = []

    def ask(check: str, url: str, **params: Any) -> tuple[int, Any] | None:
        try:
            return gh.get(url, **params)
        except _Unknown as e:
            out.append(Finding(UNKNOWN, check, repo, str(e), "retry later"))
            return None

    # Administration: read lists runners (GET); the same token registers them (Administration: write)
    got = ask("runner admin", f"{gh.repo_url}/actions/runners", per_page=1)
    if got is not None:
        status, data = got
        if status == 200:
            out.append(Finding(PASS, "runner admin", repo, f"the token lists self-hosted runners "
                               f"({data.get('total_count', 0)} registered)"))
        else:
            out.append(Finding(FAIL, "runner admin", repo, f"the token cannot administer self-hosted runners: "
                               f"{status} {data}", "give the token (fine-grained) Administration: read and write on "
                               f"{repo}, or use a GitHub App with that permission"))
    out.append(_runner_release_check(gh))
    # "Require approval for all external contributors" is the setting that holds every fork's run
    # until a maintainer approves it: https://docs.github.com/en/repositories/managing-your-repositorys-settings-and-features/enabling-features-for-your-repository/managing-github-actions-settings-for-a-repository#controlling-changes-from-forks-to-workflows-in-public-repositories
    got = ask("fork approval", f"{gh.repo_url}/actions/permissions/fork-pr-contributor-approval")
    if got is not None:
        status, data = got
        if status != 200:
            out.append(Finding(UNKNOWN, "fork approval", repo, f"{status} {data}", "give the token Administration: "
                               "read to let doctor see it (a private repository has no such setting)"))
        elif data.get("approval_policy") != "all_external_contributors":
            out.append(Finding(FAIL, "fork approval", repo, f"fork pull requests need approval only for "
                               f"{data.get('approval_policy')}",
                               "Settings > Actions > General > Fork pull request workflows: require approval for all "
                               "external contributors"))
        else:
            out.append(Finding(PASS, "fork approval", repo, "every external contributor's run waits for approval"))
    # The default GITHUB_TOKEN should only read: https://docs.github.com/en/actions/security-for-github-actions/security-guides/automatic-token-authentication#modifying-the-permissions-for-the-github_token
    got = ask("workflow token", f"{gh.repo_url}/actions/permissions/workflow")
    if got is not None:
        status, data = got
        if status != 200:
            out.append(Finding(UNKNOWN, "workflow token", repo, f"{status} {data}", "give the token Administration: "
                               "read to let doctor see it"))
        elif data.get("default_workflow_permissions") != "read" or data.get("can_approve_pull_request_reviews"):
            what = []
            if data.get("default_workflow_permissions") != "read":
                what.append(f"the default GITHUB_TOKEN may {data.get('default_workflow_permissions')}")
            if data.get("can_approve_pull_request_reviews"):
                what.append("GitHub Actions may approve pull requests")
            out.append(Finding(FAIL, "workflow token", repo, "; ".join(what),
                               "Settings > Actions > General > Workflow permissions: read repository contents and "
                               "packages permissions, and do not allow GitHub Actions to approve pull requests"))
        else:
            out.append(Finding(PASS, "workflow token", repo, "the default GITHUB_TOKEN reads only"))
    got = ask("approval label", f"{gh.repo_url}/labels/{quote(approval_label, safe='')}")
    if got is not None:
        status, data = got
        if status == 200:
            out.append(Finding(PASS, "approval label", repo, f"{approval_label!r} exists"))
        elif status == 404:
            out.append(Finding(FAIL, "approval label", repo, f"no label {approval_label!r}: a maintainer cannot "
                               "approve a fork's pull request", f"create it: `gh label create '{approval_label}' "
                               f"--repo {repo}`"))
        else:
            out.append(Finding(UNKNOWN, "approval label", repo, f"{status} {data}", "give the token Issues: read"))
    if runner_group_id is not None and runner_group_id != 1:
        out.append(_runner_group_check(gh, runner_group_id))
    return out


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


def diagnose(matrix_path: Path | None, *, project: str | None = None, max_parallel: int = DEFAULT_MAX_PARALLEL,
             approval_label: str = DEFAULT_APPROVAL_LABEL, github: bool = True,
             runner_group_id: int | None = None) -> Report:
    """Every check, in the order a start meets them. A matrix that does not load is a ConfigError
    (exit 2); everything else is a finding."""
    entries: list[Any] = []
    if matrix_path is not None:
        from .plan import plan

        if not matrix_path.is_file():
            raise ConfigError(f"{matrix_path}: no such file")
        entries = plan(matrix_path).entries
    findings = gce_findings(entries, project, max_parallel)
    if github:
        findings += github_findings(approval_label, runner_group_id)
    return Report(findings)

"""What ``gpu-runner doctor`` reads from Compute Engine and Cloud Resource Manager, as routes of the
Compute stand-in (a mixin of :class:`standins.compute.ComputeStandIn`; its knobs are set in
:meth:`DoctorRoutes._doctor_setup`).

Shapes: the published Compute Engine and Cloud Resource Manager v3 discovery documents
(tests/fixtures/doctor-*.json). A machine or accelerator type a zone does not offer, and an image
or family that does not exist, answer 404 notFound as Compute Engine does ("The resource '...' was
not found"); a region's ``quotas`` and the project's ``quotas`` list {metric, limit, usage}
(https://cloud.google.com/compute/docs/reference/rest/v1/regions/get,
https://cloud.google.com/compute/docs/reference/rest/v1/projects/get); testIamPermissions answers
"A subset of TestPermissionsRequest.permissions that the caller is allowed"
(https://cloud.google.com/resource-manager/reference/rest/v3/projects/testIamPermissions).
"""

from __future__ import annotations

from typing import Any

from .doctor_schemas import (
    compute_method_params,
    doctor_compute_validator,
    resourcemanager_resource_ok,
    resourcemanager_validator,
)
from .http import Reply
from .schemas import problems

BASE = "/compute/v1/projects/{project}"

GPU_METRICS = ("NVIDIA_L4_GPUS", "NVIDIA_T4_GPUS", "NVIDIA_A100_GPUS", "NVIDIA_A100_80GB_GPUS", "NVIDIA_V100_GPUS")


def _error(status: int, message: str, reason: str) -> Reply:
    return Reply(status, {"error": {"code": status, "message": message,
                                    "errors": [{"message": message, "domain": "global", "reason": reason}]}})


class DoctorRoutes:
    """Knobs: ``not_offered`` ((zone, name) of machine or accelerator types answered 404),
    ``image_states`` (family or image name -> DEPRECATED, OBSOLETE or DELETED), ``missing_images``,
    ``quota_limits`` ((region or "global", metric) -> limit; others ``default_quota``),
    ``nat_regions`` (regions whose router on network default has Cloud NAT for every subnet),
    ``denied_permissions`` (what testIamPermissions leaves out)."""

    route: Any
    _link: Any

    def _doctor_setup(self) -> None:
        self.not_offered: set[tuple[str, str]] = set()
        self.image_states: dict[str, str] = {}
        self.missing_images: set[str] = set()
        self.default_quota = 16.0
        self.quota_limits: dict[tuple[str, str], float] = {}
        self.nat_regions: set[str] = set()
        self.denied_permissions: set[str] = set()
        p = BASE
        for method, path, name, handler in [
            ("GET", p + "/zones/{zone}/machineTypes/{name}", "machineTypes.get", self.machine_type_get),
            ("GET", p + "/zones/{zone}/acceleratorTypes/{name}", "acceleratorTypes.get", self.accelerator_type_get),
            ("GET", p + "/global/images/family/{family}", "images.getFromFamily", self.image_from_family),
            ("GET", p + "/global/images/{name}", "images.get", self.image_get),
            ("GET", p + "/regions/{region}/routers", "routers.list", self.routers_list),
            ("GET", p + "/regions/{region}", "regions.get", self.region_get),
            ("GET", p, "projects.get", self.project_get),
            ("POST", "/v3/projects/{project}:testIamPermissions", "projects.testIamPermissions", self.test_iam_permissions),
        ]:
            self.route(method, path, name, handler)

    def _doctor_check(self, schema: str, body: Any) -> Any:
        errs = problems(doctor_compute_validator(schema), body)
        if errs:
            raise Reply(500, {"error": {"code": 500, "message": f"stand-in answered outside {schema}: {errs}"}})
        return body

    def _doctor_query(self, resource: str, method: str, query: dict[str, str]) -> None:
        unknown = set(query) - compute_method_params(resource, method) - {"alt", "prettyPrint", "$alt", "fields"}
        if unknown:
            raise _error(400, f"Invalid JSON payload received. Unknown name {sorted(unknown)[0]!r}", "invalid")

    @staticmethod
    def _not_found(what: str) -> Reply:
        return _error(404, f"The resource '{what}' was not found", "notFound")

    def machine_type_get(self, project: str, zone: str, name: str, query: dict[str, str], **_: Any) -> Any:
        self._doctor_query("machineTypes", "get", query)
        if (zone, name) in self.not_offered:
            raise self._not_found(f"projects/{project}/zones/{zone}/machineTypes/{name}")
        return self._doctor_check("MachineType", {
            "kind": "compute#machineType", "id": "901008", "name": name, "description": name, "guestCpus": 8,
            "memoryMb": 32768, "zone": zone, "maximumPersistentDisks": 128, "maximumPersistentDisksSizeGb": "263168",
            "isSharedCpu": False, "architecture": "X86_64",
            "selfLink": self._link("projects", project, "zones", zone, "machineTypes", name)})

    def accelerator_type_get(self, project: str, zone: str, name: str, query: dict[str, str],
                             **_: Any) -> Any:
        self._doctor_query("acceleratorTypes", "get", query)
        if (zone, name) in self.not_offered:
            raise self._not_found(f"projects/{project}/zones/{zone}/acceleratorTypes/{name}")
        return self._doctor_check("AcceleratorType", {
            "kind": "compute#acceleratorType", "id": "10021", "name": name, "description": name,
            "maximumCardsPerInstance": 8, "zone": self._link("projects", project, "zones", zone),
            "selfLink": self._link("projects", project, "zones", zone, "acceleratorTypes", name)})

    def _image(self, project: str, key: str, family: str | None, name: str) -> Any:
        if key in self.missing_images:
            raise self._not_found(f"projects/{project}/global/images/{'family/' if family else ''}{key}")
        body: dict[str, Any] = {"kind": "compute#image", "id": "7001", "name": name, "status": "READY",
                                "creationTimestamp": "2026-10-01T00:00:00.000-07:00", "diskSizeGb": "50",
                                "architecture": "X86_64",
                                "selfLink": self._link("projects", project, "global", "images", name)}
        if family:
            body["family"] = family
        state = self.image_states.get(key)
        if state:
            body["deprecated"] = {"state": state, "replacement": self._link(
                "projects", project, "global", "images", "common-cu128-ubuntu-2204-nvidia-570-v20261101")}
        return self._doctor_check("Image", body)

    def image_from_family(self, project: str, family: str, query: dict[str, str], **_: Any) -> Any:
        self._doctor_query("images", "getFromFamily", query)
        return self._image(project, family, family, f"{family}-v20261101")

    def image_get(self, project: str, name: str, query: dict[str, str], **_: Any) -> Any:
        self._doctor_query("images", "get", query)
        return self._image(project, name, None, name)

    def _quotas(self, scope: str, metrics: tuple[str, ...]) -> list[dict[str, Any]]:
        out = []
        for metric in metrics:
            limit = self.quota_limits.get((scope, metric), self.default_quota)
            out.append({"metric": metric, "limit": limit, "usage": 0.0})
        return out

    def region_get(self, project: str, region: str, query: dict[str, str], **_: Any) -> Any:
        self._doctor_query("regions", "get", query)
        metrics = ("CPUS", *GPU_METRICS, *(f"PREEMPTIBLE_{m}" for m in GPU_METRICS))
        return self._doctor_check("Region", {
            "kind": "compute#region", "id": "1000", "name": region, "status": "UP",
            "creationTimestamp": "1969-12-31T16:00:00.000-08:00", "quotas": self._quotas(region, metrics),
            "zones": [self._link("projects", project, "zones", f"{region}-{z}") for z in "abcf"],
            "selfLink": self._link("projects", project, "regions", region)})

    def project_get(self, project: str, query: dict[str, str], **_: Any) -> Any:
        self._doctor_query("projects", "get", query)
        return self._doctor_check("Project", {
            "kind": "compute#project", "id": "4242", "name": project, "defaultNetworkTier": "PREMIUM",
            "quotas": self._quotas("global", ("GPUS_ALL_REGIONS", "NETWORKS")),
            "creationTimestamp": "2020-01-01T00:00:00.000-08:00",
            "selfLink": self._link("projects", project)})

    def routers_list(self, project: str, region: str, query: dict[str, str], **_: Any) -> Any:
        self._doctor_query("routers", "list", query)
        items = []
        if region in self.nat_regions:
            items.append({"kind": "compute#router", "id": "3001", "name": "nat-router",
                          "network": self._link("projects", project, "global", "networks", "default"),
                          "region": self._link("projects", project, "regions", region),
                          "nats": [{"name": "nat", "sourceSubnetworkIpRangesToNat": "ALL_SUBNETWORKS_ALL_IP_RANGES",
                                    "natIpAllocateOption": "AUTO_ONLY"}],
                          "selfLink": self._link("projects", project, "regions", region, "routers", "nat-router")})
        return self._doctor_check("RouterList", {
            "kind": "compute#routerList", "id": f"projects/{project}/regions/{region}/routers", "items": items,
            "selfLink": self._link("projects", project, "regions", region, "routers")})

    def test_iam_permissions(self, project: str, body: Any, **_: Any) -> Any:
        errs = problems(resourcemanager_validator("TestIamPermissionsRequest"), body)
        if errs or not resourcemanager_resource_ok(f"projects/{project}"):
            raise _error(400, "Invalid JSON payload received: " + "; ".join(errs), "invalid")
        if any("*" in p for p in body.get("permissions", [])):
            raise _error(400, "Permissions with wildcards are not allowed", "invalid")
        allowed = [p for p in body.get("permissions", []) if p not in self.denied_permissions]
        out = {"permissions": allowed} if allowed else {}
        assert not problems(resourcemanager_validator("TestIamPermissionsResponse"), out)
        return out


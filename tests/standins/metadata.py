"""A GCE metadata server stand-in for one VM of the Compute stand-in: project id, zone, name,
instance attributes (read live from the VM's metadata, so setMetadata shows), the service
account's email and access token (404 when the VM has none, as on Compute Engine), guest
attributes (PUT), and files under /files/ (a runner release to download)."""

from __future__ import annotations

from typing import Any

from .compute import ComputeStandIn
from .http import Reply, StandIn


class MetadataStandIn(StandIn):
    def __init__(self, compute: ComputeStandIn, project: str, zone: str, name: str, *,
                 service_account: str | None = None) -> None:
        super().__init__()
        self.compute, self.project, self.zone, self.name = compute, project, zone, name
        self.service_account = service_account
        self.guest_attributes: dict[str, str] = {}
        self.files: dict[str, bytes] = {}
        v1 = "/computeMetadata/v1"
        self.route("GET", v1 + "/project/project-id", "project-id", lambda **_: (200, project.encode()))
        self.route("GET", v1 + "/instance/zone", "zone",
                   lambda **_: (200, f"projects/123456/zones/{zone}".encode()))
        self.route("GET", v1 + "/instance/name", "name", lambda **_: (200, name.encode()))
        self.route("GET", v1 + "/instance/attributes/{key}", "attribute", self.attribute)
        self.route("GET", v1 + "/instance/service-accounts/default/token", "token",
                   lambda **_: self._identity({"access_token": "ya29.vm-token", "expires_in": 3599,
                                               "token_type": "Bearer"}))
        self.route("GET", v1 + "/instance/service-accounts/default/email", "email",
                   lambda **_: self._identity((200, str(self.service_account).encode())))
        self.route("PUT", v1 + "/instance/guest-attributes/{ns}/{key}", "guest-attribute", self.put_guest)
        self.route("GET", "/files/{a}/{b}", "file", self.file)

    def before(self, method: str, name: str, headers: Any) -> None:
        if name != "file" and headers.get("Metadata-Flavor") != "Google":
            raise Reply(403, b"Missing Metadata-Flavor:Google header.")

    def _identity(self, answer: Any) -> Any:
        if not self.service_account:
            raise Reply(404, b"not found")
        return answer

    def attribute(self, key: str, **_: Any) -> Any:
        with self.compute.lock:
            inst = self.compute.instances.get((self.project, self.zone, self.name))
            items = {i["key"]: i.get("value", "") for i in (inst or {}).get("metadata", {}).get("items", [])}
        if key not in items:
            raise Reply(404, b"not found")
        return 200, items[key].encode()

    def put_guest(self, ns: str, key: str, **kw: Any) -> Any:
        raise Reply(200, b"")

    def dispatch(self, method: str, path: str, query: Any, raw: bytes, headers: Any) -> Any:
        if method == "PUT" and "/guest-attributes/" in path:
            self.guest_attributes[path.rsplit("/guest-attributes/", 1)[1]] = raw.decode()
        return super().dispatch(method, path, query, b"" if method == "PUT" else raw, headers)

    def file(self, a: str, b: str, **_: Any) -> Any:
        data = self.files.get(f"{a}/{b}")
        if data is None:
            raise Reply(404, b"no such file")
        return 200, data

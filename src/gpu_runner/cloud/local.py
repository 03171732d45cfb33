"""The local provider: no VM. ``gpu-runner run`` executes on this machine (or on the job's own
runner in GitHub Actions), so create, delete and list are no-ops that say so."""

from __future__ import annotations

from collections.abc import Mapping

from .base import Instance, Provider, VmRequest


class LocalProvider(Provider):
    name = "local"

    def create(self, req: VmRequest, zone: str, provisioning_model: str) -> Instance:
        return Instance(name=req.name, zone="local", status="RUNNING", labels=dict(req.labels),
                        provisioning_model="LOCAL")

    def get(self, project: str, zone: str, name: str) -> Instance | None:
        return None

    def delete(self, project: str, zone: str, name: str, *, wait: bool = True) -> bool:
        return False

    def list_ours(self, project: str, labels: Mapping[str, str] | None = None, *,
                  name: str | None = None) -> list[Instance]:
        return []

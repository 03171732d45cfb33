"""Providers of machines for matrix entries: ``local`` (this machine) and ``gce`` (Compute Engine).

:mod:`.base` holds the interface and errors, :mod:`.gce` and :mod:`.local` the providers,
:mod:`.startup` the VM startup script, :mod:`.lifecycle` the start / stop / janitor flow.
"""

from __future__ import annotations

from .base import CapacityError, CloudError, Instance, Provider, QuotaError, VmRequest


def provider(name: str, **kwargs: object) -> Provider:
    """The provider called ``name``."""
    if name == "gce":
        from .gce import GceProvider

        return GceProvider(**kwargs)  # type: ignore[arg-type]
    if name == "local":
        from .local import LocalProvider

        return LocalProvider()
    raise ValueError(f"unknown provider {name!r} (known: gce, local)")


__all__ = ["CapacityError", "CloudError", "Instance", "Provider", "QuotaError", "VmRequest", "provider"]

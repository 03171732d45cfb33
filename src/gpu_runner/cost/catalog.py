"""Compute Engine prices from the Cloud Billing Catalog API (``services.skus.list`` of the
Compute Engine service, ``services/6F81-5844-456A``), through google-cloud-billing's
``CloudCatalogClient`` (REST transport).

The catalog lists every public SKU of the service with its regions and its price; this module
keeps the ones a VM is made of and reads them into per-region, per-model rates:

* ``<F> [Predefined ]Instance Core|Ram running in ...`` (``Spot Preemptible`` first for Spot):
  the vCPU-hour and GiB-hour of machine family ``F`` (N1, N2, G2, A2, A3, ...);
* ``Nvidia <GPU> GPU running in ...`` (``... attached to Spot Preemptible VMs ...`` or
  ``Spot Preemptible Nvidia ...`` for Spot): the GPU-hour of that accelerator type;
* ``Storage PD``, ``Balanced PD``, ``SSD backed PD``, ``Extreme PD``, ``Hyperdisk ...``
  ``Capacity``: the GiB-month of that disk type (the same for Spot VMs).

``usageType`` ``OnDemand`` is STANDARD and ``Preemptible`` is SPOT; commitments, custom and
sole-tenant SKUs are left out. The price of a SKU is the unit price of its latest pricing info,
the first tier that is not free.

It is asked once per process (the answer, or why there is none, is kept), with a short timeout
per page and a deadline for the whole listing. No credentials, a refusal (403), an unreachable
or too slow endpoint, or an answer that cannot be read raise :class:`CatalogUnavailable`, and
the caller falls back to the table. ``GPU_RUNNER_BILLING_EMULATOR_HOST=host:port`` points the
client at a plain-HTTP stand-in with anonymous credentials (like ``*_EMULATOR_HOST``);
``GPU_RUNNER_BILLING_CATALOG=0`` never asks (unless the emulator host is set).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .rates import SOURCE_CATALOG, Rates

COMPUTE_SERVICE = "services/6F81-5844-456A"
EMULATOR_ENV = "GPU_RUNNER_BILLING_EMULATOR_HOST"
SWITCH_ENV = "GPU_RUNNER_BILLING_CATALOG"
SCOPES = ["https://www.googleapis.com/auth/cloud-billing.readonly"]
PAGE_TIMEOUT_S = 15.0
DEADLINE_S = 60.0
PAGE_SIZE = 5000

_SPOT = re.compile(r"^(?:spot preemptible |preemptible )", re.I)
_SPOT_GPU = re.compile(r" attached to spot preemptible vms", re.I)
_MACHINE = re.compile(r"^(?P<family>[a-z][0-9][a-z]?(?:plus)?)(?: amd)?(?: predefined)? instance (?P<what>core|ram) "
                      r"running in ", re.I)
_GPU = re.compile(r"^nvidia (?P<name>.+?) gpu running in ", re.I)
_DISK = re.compile(r"^(?P<name>storage pd|balanced pd|ssd backed pd|extreme pd|hyperdisk balanced|hyperdisk extreme|"
                   r"hyperdisk throughput|hyperdisk ml) capacity(?: in .+)?$", re.I)
GPU_NAMES = {
    "t4": "nvidia-tesla-t4", "p4": "nvidia-tesla-p4", "p100": "nvidia-tesla-p100", "v100": "nvidia-tesla-v100",
    "k80": "nvidia-tesla-k80", "l4": "nvidia-l4", "a100": "nvidia-tesla-a100", "a100 40gb": "nvidia-tesla-a100",
    "a100 80gb": "nvidia-a100-80gb", "h100 80gb": "nvidia-h100-80gb", "h100": "nvidia-h100-80gb",
    "h100 80gb mega": "nvidia-h100-mega-80gb", "h100 mega 80gb": "nvidia-h100-mega-80gb",
    "h100 80gb plus": "nvidia-h100-mega-80gb", "h200 141gb": "nvidia-h200-141gb", "h200": "nvidia-h200-141gb",
    "b200": "nvidia-b200",
}
DISK_NAMES = {
    "storage pd": "pd-standard", "balanced pd": "pd-balanced", "ssd backed pd": "pd-ssd", "extreme pd": "pd-extreme",
    "hyperdisk balanced": "hyperdisk-balanced", "hyperdisk extreme": "hyperdisk-extreme",
    "hyperdisk throughput": "hyperdisk-throughput", "hyperdisk ml": "hyperdisk-ml",
}
MODEL_OF_USAGE = {"OnDemand": "STANDARD", "Preemptible": "SPOT"}
UNITS = {"core": ("h",), "gpu": ("h",), "ram": ("GiBy.h", "GBy.h"), "disk": ("GiBy.mo", "GBy.mo")}


class CatalogUnavailable(Exception):
    """The catalog could not be asked or read; the message says why, in a few words."""


@dataclass
class CatalogPrices:
    """What the catalog said: ``(kind, key, region, model) -> USD per unit``."""

    prices: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    as_of: str | None = None
    skus_read: int = 0
    skus_used: int = 0

    def rates(self, region: str | None, model: str) -> Rates | None:
        """The rates of ``region`` and ``model``, or None when the catalog has no VM prices there."""
        if region is None:
            return None
        r = Rates(source=SOURCE_CATALOG, as_of=self.as_of)
        kinds = {"core": r.vcpu_hour, "ram": r.gib_hour, "gpu": r.gpu_hour}
        for (kind, key, reg, mod), price in self.prices.items():
            if reg != region:
                continue
            if kind == "disk":
                r.disk_gib_month[key] = price
            elif mod == model:
                kinds[kind][key] = price
        if not (r.vcpu_hour or r.gpu_hour):
            return None
        return r


def _money(m: Any) -> float:
    return int(m.units or 0) + int(m.nanos or 0) / 1e9


def _unit_price(sku: Any) -> tuple[float, str, str] | None:
    """(USD per usage unit, the unit, the effective date) of the latest pricing info."""
    if not sku.pricing_info:
        return None
    info = sku.pricing_info[-1]
    expr = info.pricing_expression
    rates = list(expr.tiered_rates)
    if not rates:
        return None
    currencies = {r.unit_price.currency_code for r in rates if r.unit_price.currency_code}
    if currencies - {"USD"}:
        return None
    paid = [r for r in rates if _money(r.unit_price) > 0]
    price = _money((paid or rates)[0].unit_price)
    effective = info.effective_time
    day = effective.strftime("%Y-%m-%d") if effective and effective.year > 1970 else ""
    return price, expr.usage_unit, day


def read_sku(sku: Any) -> list[tuple[tuple[str, str, str, str], float, str]]:
    """The rates one SKU gives: ``((kind, key, region, model), price, effective date)`` per region."""
    model = MODEL_OF_USAGE.get(sku.category.usage_type)
    if model is None or sku.category.resource_family not in ("Compute", "Storage"):
        return []
    text = " ".join(sku.description.split())
    spot = bool(_SPOT.match(text) or _SPOT_GPU.search(text))
    if spot != (model == "SPOT"):
        return []
    text = _SPOT_GPU.sub("", _SPOT.sub("", text))
    kind = key = None
    if (m := _MACHINE.match(text)) is not None:
        kind, key = ("core" if m["what"].lower() == "core" else "ram"), m["family"].lower()
    elif (m := _GPU.match(text)) is not None:
        name = re.sub(r"^tesla ", "", m["name"].lower())
        kind, key = "gpu", GPU_NAMES.get(name)
    elif (m := _DISK.match(text)) is not None and model == "STANDARD":
        kind, key = "disk", DISK_NAMES[m["name"].lower()]
    if kind is None or key is None:
        return []
    priced = _unit_price(sku)
    if priced is None or priced[1] not in UNITS[kind]:
        return []
    price, _unit, day = priced
    return [((kind, key, region, model), price, day) for region in sku.service_regions]


def client() -> Any:
    """A CloudCatalogClient: the stand-in with anonymous credentials when
    ``GPU_RUNNER_BILLING_EMULATOR_HOST`` is set, else Application Default Credentials."""
    from google.api_core.client_options import ClientOptions
    from google.cloud import billing_v1

    host = os.environ.get(EMULATOR_ENV, "").strip()
    if host:
        from google.auth.credentials import AnonymousCredentials

        endpoint = host if host.startswith(("http://", "https://")) else f"http://{host}"
        return billing_v1.CloudCatalogClient(transport="rest", credentials=AnonymousCredentials(),
                                             client_options=ClientOptions(api_endpoint=endpoint))
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _project = google.auth.default(scopes=SCOPES)
    except DefaultCredentialsError:
        raise CatalogUnavailable("no Google credentials (Application Default Credentials) here") from None
    return billing_v1.CloudCatalogClient(transport="rest", credentials=credentials)


def _why(e: BaseException) -> str:
    from google.api_core import exceptions as gexc

    if isinstance(e, gexc.GoogleAPICallError):
        code = getattr(e, "code", None)
        first = " ".join(str(e.message or "").split())[:160]
        if code in (401, 403):
            return (f"it refused ({code} {first}; the Cloud Billing API, cloudbilling.googleapis.com, must be "
                    "enabled in the credentials' project)")
        return f"it answered {code} {first}"
    try:
        import requests

        if isinstance(e, requests.Timeout):
            return "it did not answer in time"
        if isinstance(e, requests.ConnectionError):
            return "it cannot be reached"
    except ImportError:  # pragma: no cover - google-api-core brings requests
        pass
    try:
        from google.auth.exceptions import GoogleAuthError

        if isinstance(e, GoogleAuthError):
            return f"the credentials do not work ({type(e).__name__})"
    except ImportError:  # pragma: no cover
        pass
    return f"its answer could not be read ({type(e).__name__}: {' '.join(str(e).split())[:160]})"


def _list(timeout_s: float, deadline_s: float) -> CatalogPrices:
    c = client()
    out = CatalogPrices()
    dates: list[str] = []
    started = time.monotonic()
    try:
        pager = c.list_skus(request={"parent": COMPUTE_SERVICE, "page_size": PAGE_SIZE}, retry=None,
                            timeout=timeout_s)
        for page in pager.pages:
            for sku in page.skus:
                out.skus_read += 1
                rows = read_sku(sku)
                if rows:
                    out.skus_used += 1
                for key, price, day in rows:
                    out.prices[key] = price
                    if day:
                        dates.append(day)
            if time.monotonic() - started > deadline_s:
                raise CatalogUnavailable(f"listing its SKUs took more than {deadline_s:g}s")
    except CatalogUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - whatever went wrong, the table stands in
        raise CatalogUnavailable(_why(e)) from None
    if not out.prices:
        raise CatalogUnavailable(f"it listed {out.skus_read} SKUs of Compute Engine and none gpu-runner can read")
    out.as_of = max(dates) if dates else _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    return out


_cache: dict[str, CatalogPrices | CatalogUnavailable] = {}
_cache_lock = threading.Lock()


def fetch(regions: Iterable[str] = (), *, timeout_s: float = PAGE_TIMEOUT_S, deadline_s: float = DEADLINE_S
          ) -> CatalogPrices:
    """Compute Engine's prices from the catalog, asked once per process and endpoint (a failure
    is kept too, so a run asks a refusing catalog once). ``regions`` is accepted for callers that
    know them; every region is read."""
    del regions  # the API has no filter: one listing serves every region
    switch = os.environ.get(SWITCH_ENV, "").strip().lower()
    if switch in ("0", "false", "no", "off") and not os.environ.get(EMULATOR_ENV, "").strip():
        raise CatalogUnavailable(f"turned off ({SWITCH_ENV}={switch})")
    try:
        from google.cloud import billing_v1  # noqa: F401
    except ImportError:
        raise CatalogUnavailable("google-cloud-billing is not installed (pip install 'gpu-runner[gce]')") from None
    key = os.environ.get(EMULATOR_ENV, "").strip() or "cloudbilling.googleapis.com"
    with _cache_lock:
        got = _cache.get(key)
        if got is None:
            try:
                got = _list(timeout_s, deadline_s)
            except CatalogUnavailable as e:
                got = e
            _cache[key] = got
    if isinstance(got, CatalogUnavailable):
        raise CatalogUnavailable(str(got))
    return got


def forget() -> None:
    """Drop what was asked (tests; a long-lived process that wants fresh prices)."""
    with _cache_lock:
        _cache.clear()

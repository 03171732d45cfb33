"""A Cloud Billing Catalog stand-in: ``GET /v1/services/{service}/skus`` (services.skus.list),
answering ``ListSkusResponse`` pages in the published shape (every answer is validated against
tests/fixtures/cloudbilling-schemas.json) and rejecting what the published description rejects
(a parent that breaks its pattern, an unknown query parameter, a page size that is no integer).

Its SKUs (:data:`CATALOG`) are Compute Engine's, written as the catalog writes them: cores and
memory of machine families, GPUs on demand and attached to Spot VMs, persistent-disk capacity,
in us-central1 and europe-west4, with prices that differ from gpu-runner's table so a test can
tell the sources apart. Beside them are SKUs a VM price must never take: commitments, custom and
sole-tenant cores, virtual-workstation GPUs, regional disks, another service's prices.

Failure knobs (attributes, settable while it runs):

* ``refuse``: every request gets ``403 PERMISSION_DENIED`` (the caller may not read the catalog);
* ``fail_status``: every request gets this status (e.g. 503);
* ``delay_s``: each answer waits this long (a slow catalog);
* ``page_size_cap``: pages hold at most this many SKUs, so a listing takes several pages.
"""

from __future__ import annotations

import time
from typing import Any

from .http import Reply, StandIn
from .schemas import billing_query_problems, billing_validator, problems

COMPUTE_SERVICE_ID = "6F81-5844-456A"
EFFECTIVE_TIME = "2026-11-30T08:00:00.000Z"
AS_OF = "2026-11-30"


def money(usd: float) -> dict[str, Any]:
    units = int(usd)
    return {"currencyCode": "USD", "units": str(units), "nanos": int(round((usd - units) * 1e9))}


def sku(sku_id: str, description: str, *, family: str, group: str, usage: str, regions: list[str], usd: float,
        unit: str, unit_text: str, free_first: float | None = None) -> dict[str, Any]:
    """One SKU in the published shape. ``free_first``: a first free tier up to that much usage."""
    base = {"h": ("s", "second", 3600), "GiBy.h": ("By.s", "byte second", 3600 * 2**30),
            "GiBy.mo": ("By.s", "byte second", 30 * 24 * 3600 * 2**30)}[unit]
    tiers = [{"startUsageAmount": 0, "unitPrice": money(usd)}]
    if free_first is not None:
        tiers = [{"startUsageAmount": 0, "unitPrice": money(0.0)},
                 {"startUsageAmount": free_first, "unitPrice": money(usd)}]
    return {
        "name": f"services/{COMPUTE_SERVICE_ID}/skus/{sku_id}",
        "skuId": sku_id,
        "description": description,
        "category": {"serviceDisplayName": "Compute Engine", "resourceFamily": family, "resourceGroup": group,
                     "usageType": usage},
        "serviceRegions": regions,
        "pricingInfo": [{
            "summary": "",
            "pricingExpression": {"usageUnit": unit, "usageUnitDescription": unit_text, "baseUnit": base[0],
                                  "baseUnitDescription": base[1], "baseUnitConversionFactor": base[2],
                                  "displayQuantity": 1, "tieredRates": tiers},
            "currencyConversionRate": 1,
            "effectiveTime": EFFECTIVE_TIME,
        }],
        "serviceProviderName": "Google",
        "geoTaxonomy": {"type": "REGIONAL", "regions": regions},
    }


US = ["us-central1"]
EU = ["europe-west4"]
PRICES: dict[tuple[str, str, str], float] = {
    # (what, region, model) -> USD per unit; what: "<family> core|ram", a GPU type, "<disk type> disk"
    ("n1 core", "us-central1", "STANDARD"): 0.0332, ("n1 ram", "us-central1", "STANDARD"): 0.00445,
    ("n1 core", "us-central1", "SPOT"): 0.0066, ("n1 ram", "us-central1", "SPOT"): 0.00089,
    ("g2 core", "us-central1", "STANDARD"): 0.0262, ("g2 ram", "us-central1", "STANDARD"): 0.00307,
    ("g2 core", "us-central1", "SPOT"): 0.0105, ("g2 ram", "us-central1", "SPOT"): 0.00123,
    ("g2 core", "europe-west4", "STANDARD"): 0.0288, ("g2 ram", "europe-west4", "STANDARD"): 0.00338,
    ("g2 core", "europe-west4", "SPOT"): 0.0115, ("g2 ram", "europe-west4", "SPOT"): 0.00135,
    ("nvidia-tesla-t4", "us-central1", "STANDARD"): 0.37, ("nvidia-tesla-t4", "us-central1", "SPOT"): 0.12,
    ("nvidia-l4", "us-central1", "STANDARD"): 0.59, ("nvidia-l4", "us-central1", "SPOT"): 0.21,
    ("nvidia-l4", "europe-west4", "STANDARD"): 0.65, ("nvidia-l4", "europe-west4", "SPOT"): 0.23,
    ("pd-balanced disk", "us-central1", "STANDARD"): 0.11, ("pd-standard disk", "us-central1", "STANDARD"): 0.044,
    ("pd-ssd disk", "us-central1", "STANDARD"): 0.187,
    ("pd-balanced disk", "europe-west4", "STANDARD"): 0.121,
}
"""What the stand-in's catalog charges: each figure differs from gpu-runner's table."""

_WHERE = {"us-central1": "Americas", "europe-west4": "EMEA"}
_GPU_TEXT = {"nvidia-tesla-t4": "Tesla T4", "nvidia-l4": "L4"}
_DISK_TEXT = {"pd-balanced": "Balanced PD", "pd-standard": "Storage PD", "pd-ssd": "SSD backed PD"}


def _catalog() -> list[dict[str, Any]]:
    out = []
    n = 0

    def next_id() -> str:
        nonlocal n
        n += 1
        return f"{0xA000 + n:04X}-{0xB000 + n:04X}-{0xC000 + n:04X}"

    for (what, region, model), usd in PRICES.items():
        spot = model == "SPOT"
        usage = "Preemptible" if spot else "OnDemand"
        where = _WHERE[region]
        if what.endswith((" core", " ram")):
            fam, kind = what.split()
            predefined = " Predefined" if fam == "n1" else ""
            text = f"{fam.upper()}{predefined} Instance {'Core' if kind == 'core' else 'Ram'} running in {where}"
            out.append(sku(next_id(), ("Spot Preemptible " if spot else "") + text, family="Compute",
                           group="CPU" if kind == "core" else "RAM", usage=usage, regions=[region], usd=usd,
                           unit="h" if kind == "core" else "GiBy.h", unit_text="hour" if kind == "core" else
                           "gibibyte hour"))
        elif what.endswith(" disk"):
            dtype = what.split()[0]
            out.append(sku(next_id(), f"{_DISK_TEXT[dtype]} Capacity in {where}", family="Storage",
                           group="SSD" if dtype != "pd-standard" else "PDStandard", usage=usage, regions=[region],
                           usd=usd, unit="GiBy.mo", unit_text="gibibyte month",
                           free_first=None if dtype != "pd-standard" else 0.0001))
        else:
            gpu = _GPU_TEXT[what]
            text = (f"Nvidia {gpu} GPU attached to Spot Preemptible VMs running in {where}" if spot
                    else f"Nvidia {gpu} GPU running in {where}")
            out.append(sku(next_id(), text, family="Compute", group="GPU", usage=usage, regions=[region], usd=usd,
                           unit="h", unit_text="hour"))
    # what a VM's price must never take
    decoys = [
        ("Commitment v1: N1 Cpu in Americas for 1 Year", "Compute", "CPU", "Commit1Yr", US, 0.001, "h"),
        ("N1 Custom Instance Core running in Americas", "Compute", "CPU", "OnDemand", US, 9.0, "h"),
        ("N1 Sole Tenancy Instance Core running in Americas", "Compute", "CPU", "OnDemand", US, 9.0, "h"),
        ("Nvidia Tesla T4 Virtual Workstation GPU running in Americas", "Compute", "GPU", "OnDemand", US, 9.0, "h"),
        ("Regional Balanced PD Capacity in Americas", "Storage", "SSD", "OnDemand", US, 9.0, "GiBy.mo"),
        ("N1 Custom Extended Instance Ram running in Americas", "Compute", "RAM", "OnDemand", US, 9.0, "GiBy.h"),
        ("Sole Tenancy Premium for G2 Instance Core running in Americas", "Compute", "CPU", "OnDemand", US, 9.0, "h"),
        ("Network Internet Egress from Americas to Americas", "Network", "PremiumInternetEgress", "OnDemand", US,
         0.12, "h"),
    ]
    for text, fam, group, usage, regions, usd, unit in decoys:
        out.append(sku(next_id(), text, family=fam, group=group, usage=usage, regions=regions, usd=usd, unit=unit,
                       unit_text="x"))
    return out


CATALOG = _catalog()


class BillingStandIn(StandIn):
    def __init__(self, skus: list[dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.skus = list(CATALOG if skus is None else skus)
        self.refuse = False
        self.fail_status: int | None = None
        self.delay_s = 0.0
        self.page_size_cap = 4
        self.rejected: list[str] = []
        self.route("GET", "/v1/services/{service}/skus", "services.skus.list", self.list_skus)

    def before(self, method: str, name: str, headers: Any) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.refuse:
            raise Reply(403, {"error": {"code": 403, "status": "PERMISSION_DENIED",
                                        "message": "The caller does not have permission"}})
        if self.fail_status:
            raise Reply(self.fail_status, {"error": {"code": self.fail_status, "status": "UNAVAILABLE",
                                                     "message": "The service is currently unavailable."}})

    def _reject(self, why: list[str]) -> None:
        self.rejected.extend(why)
        raise Reply(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "; ".join(why)}})

    def list_skus(self, *, service: str, query: dict[str, str], body: Any, **_: Any) -> dict[str, Any]:
        if body is not None:
            self._reject(["services.skus.list takes no request body"])
        # $alt is Google's system parameter (json, with enum-encoding=int from the REST clients)
        alt = query.pop("$alt", None)
        why = billing_query_problems("services.skus.list", {"parent": f"services/{service}"}, query)
        if alt is not None and not alt.startswith("json"):
            why.append(f"$alt: {alt!r} is not json")
        if why:
            self._reject(why)
        if service != COMPUTE_SERVICE_ID:
            raise Reply(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": f"service {service} not found"}})
        size = int(query.get("pageSize") or 5000)
        size = min(size if size > 0 else 5000, self.page_size_cap)
        start = int(query.get("pageToken") or 0)
        page = self.skus[start:start + size]
        answer: dict[str, Any] = {"skus": page}
        if start + size < len(self.skus):
            answer["nextPageToken"] = str(start + size)
        bad = problems(billing_validator("ListSkusResponse"), answer)
        if bad:  # the stand-in itself must speak the published shape
            raise AssertionError(f"the billing stand-in answered outside the published shape: {bad[:3]}")
        return answer

"""What a Compute Engine VM costs per hour, from three sources; the most specific wins.

1. **The matrix**: ``price_per_hour`` on a machine (a number for every provisioning model, or
   ``{standard: X, spot: Y}``): the whole VM, its GPUs and disk included. It always wins.
2. **The Cloud Billing Catalog API** (:mod:`gpu_runner.cost.catalog`): the SKUs of Compute
   Engine, when the caller's Google credentials may read them; asked once per process.
3. **The table shipped with the package** (``prices-table.json``): dated list prices of the
   common machine families (N1, N2, G2, A2, A3), GPUs (T4, P4, P100, V100, L4, A100 40/80 GB,
   H100), and disks, spot and on-demand, with the vCPU and memory of the predefined machine types.

A price from the catalog or the table is the sum of its parts: vCPUs x the family's vCPU-hour,
memory (GiB) x its GiB-hour, GPUs x the GPU-hour, and the boot disk (GiB) x its GiB-month / 730.
A source that cannot price every part of a VM gives way to the next one, whole: a figure never
mixes sources. Every figure carries its source and date and is an estimate (no discounts, no
network, no licences).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from .rates import SOURCE_MATRIX, SOURCE_NAMES, SOURCE_TABLE, Rates

MODELS = ("STANDARD", "SPOT")
TABLE_FILE = "prices-table.json"
HOURS_PER_MONTH = 730.0
"""Google bills a disk's GiB-month over 730 hours."""


@dataclass(frozen=True)
class Shape:
    """What a VM is made of, as far as its price goes."""

    machine_type: str
    accelerator_type: str | None = None
    accelerator_count: int = 0
    disk_type: str = "pd-balanced"
    disk_size_gb: int = 100
    region: str | None = None

    @property
    def family(self) -> str:
        return self.machine_type.split("-", 1)[0]

    @classmethod
    def of(cls, spec: Any, zone: str | None = None) -> Shape:
        """From a plan's :class:`~gpu_runner.plan.GceSpec` (or its dict): priced in ``zone``'s
        region, else its first zone's."""
        get = spec.get if isinstance(spec, Mapping) else (lambda k, d=None: getattr(spec, k, d))
        zones = get("zones") or []
        return cls(machine_type=str(get("machine_type")), accelerator_type=get("accelerator_type"),
                   accelerator_count=int(get("accelerator_count") or 0), disk_type=str(get("disk_type") or "pd-balanced"),
                   disk_size_gb=int(get("disk_size_gb") or 0), region=region_of(zone or (zones[0] if zones else None)))


def region_of(zone: str | None) -> str | None:
    """``us-central1-a`` -> ``us-central1``."""
    if not zone:
        return None
    return zone.rsplit("-", 1)[0] if zone.count("-") >= 2 else zone


@dataclass
class HourlyPrice:
    """One VM's price per hour under one provisioning model. ``usd_per_hour`` is None when no
    source knows it (``note`` says why)."""

    provisioning_model: str
    usd_per_hour: float | None
    source: str | None = None
    """``matrix``, ``billing-catalog`` or ``table``."""
    as_of: str | None = None
    """The date the figure is from: the catalog's effective time, the table's date; None for the matrix."""
    region: str | None = None
    parts: dict[str, float] = field(default_factory=dict)
    """USD per hour of ``machine`` (vCPUs and memory), ``gpu`` and ``disk``; empty for the matrix."""
    note: str | None = None
    """Why a source was passed over, or why there is no figure."""
    estimate: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def origin(self) -> str:
        """``Cloud Billing Catalog, 2026-11-30`` / ``gpu-runner's price table of 2025-06-01``."""
        return origin(self.source, self.as_of)


def origin(source: str | None, as_of: str | None) -> str:
    if source is None:
        return "no price known"
    name = SOURCE_NAMES.get(source, source)
    if source == SOURCE_TABLE and as_of:
        return f"{name} of {as_of}"
    return f"{name}, {as_of}" if as_of else name


# --------------------------------------------------------------------------------------
# The shipped table
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def table() -> dict[str, Any]:
    """The price table shipped with the package (``cost/prices-table.json``)."""
    return json.loads(resources.files(__package__).joinpath(TABLE_FILE).read_text(encoding="utf-8"))


def machine_shape(machine_type: str) -> tuple[int, float] | None:
    """(vCPUs, memory in GiB) of a predefined machine type the table knows, or of a custom type
    (``n1-custom-4-15360``: 4 vCPUs, 15 GiB); None when unknown."""
    known = table()["machine_types"].get(machine_type)
    if known is not None:
        return int(known[0]), float(known[1])
    parts = machine_type.split("-")
    if len(parts) >= 4 and parts[-3] == "custom" and parts[-2].isdigit() and parts[-1].isdigit():
        return int(parts[-2]), int(parts[-1]) / 1024.0
    return None


def table_rates(model: str) -> Rates:
    t = table()
    fams = t["machine_families"]
    return Rates(
        source=SOURCE_TABLE, as_of=t["as_of"],
        vcpu_hour={f: v[model]["vcpu_hour"] for f, v in fams.items() if model in v},
        gib_hour={f: v[model]["gib_hour"] for f, v in fams.items() if model in v},
        gpu_hour={g: v[model] for g, v in t["gpus"].items() if model in v},
        disk_gib_month=dict(t["disks_gib_month"]),
    )


def price_from_rates(shape: Shape, model: str, rates: Rates) -> HourlyPrice:
    """The shape's hourly price from ``rates``; ``usd_per_hour`` None (and ``note`` why) when a
    part is missing."""
    missing: list[str] = []
    parts: dict[str, float] = {}
    dims = machine_shape(shape.machine_type)
    fam = shape.family
    if dims is None:
        missing.append(f"the vCPUs and memory of {shape.machine_type}")
    elif fam not in rates.vcpu_hour or fam not in rates.gib_hour:
        missing.append(f"{fam.upper()} vCPU and memory")
    else:
        vcpus, gib = dims
        parts["machine"] = vcpus * rates.vcpu_hour[fam] + gib * rates.gib_hour[fam]
    if shape.accelerator_count and shape.accelerator_type:
        if shape.accelerator_type in rates.gpu_hour:
            parts["gpu"] = shape.accelerator_count * rates.gpu_hour[shape.accelerator_type]
        else:
            missing.append(shape.accelerator_type)
    if shape.disk_size_gb:
        if shape.disk_type in rates.disk_gib_month:
            parts["disk"] = shape.disk_size_gb * rates.disk_gib_month[shape.disk_type] / HOURS_PER_MONTH
        else:
            missing.append(f"{shape.disk_type} disks")
    if missing:
        return HourlyPrice(model, None, region=shape.region,
                           note=f"{origin(rates.source, rates.as_of)} has no price for {', '.join(missing)}")
    note = None
    if rates.source == SOURCE_TABLE and shape.region and shape.region != table()["region"]:
        note = f"{shape.region} priced at the table's {table()['region']} list prices"
    return HourlyPrice(model, round(sum(parts.values()), 6), source=rates.source, as_of=rates.as_of,
                       region=shape.region, parts={k: round(v, 6) for k, v in parts.items()}, note=note)


# --------------------------------------------------------------------------------------
# The book: the three sources in order
# --------------------------------------------------------------------------------------


def matrix_price(price_per_hour: Mapping[str, float] | None, model: str, region: str | None) -> HourlyPrice | None:
    if not price_per_hour or price_per_hour.get(model) is None:
        return None
    return HourlyPrice(model, float(price_per_hour[model]), source=SOURCE_MATRIX, region=region)


class PriceBook:
    """Prices VMs from the matrix, the Billing Catalog (asked at most once, for every region
    wanted at once) and the table, in that order. ``catalog=False`` never asks the catalog.
    ``notes`` collects, once each, why a source was passed over."""

    def __init__(self, *, catalog: bool = True, log: Callable[[str], None] | None = None,
                 fetch: Callable[[Iterable[str]], Any] | None = None) -> None:
        self.use_catalog = catalog
        self.log = log or (lambda _m: None)
        self._fetch = fetch
        self._catalog: Any = None
        self._catalog_error: str | None = None
        self.notes: list[str] = []

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            self.log(text)

    def prepare(self, regions: Iterable[str | None]) -> None:
        """Ask the catalog once for every region that will be priced (before :meth:`price`)."""
        if not self.use_catalog or self._catalog is not None or self._catalog_error is not None:
            return
        from . import catalog

        wanted = sorted({r for r in regions if r})
        if not wanted:
            return
        try:
            self._catalog = (self._fetch or catalog.fetch)(wanted)
        except catalog.CatalogUnavailable as e:
            self._catalog_error = str(e)
            self._note(f"prices: the Cloud Billing Catalog is not used: {e}; "
                       f"using the table of {table()['as_of']} where the matrix gives no price_per_hour")

    def price(self, shape: Shape, model: str, price_per_hour: Mapping[str, float] | None = None) -> HourlyPrice:
        """The hourly price of ``shape`` under ``model`` (``STANDARD`` or ``SPOT``)."""
        own = matrix_price(price_per_hour, model, shape.region)
        if own is not None:
            return own
        notes: list[str] = []
        if self.use_catalog:
            self.prepare([shape.region])
            if self._catalog is not None:
                rates = self._catalog.rates(shape.region, model)
                if rates is not None:
                    got = price_from_rates(shape, model, rates)
                    if got.usd_per_hour is not None:
                        return got
                    notes.append(got.note or "")
                else:
                    notes.append(f"the Cloud Billing Catalog lists no Compute Engine prices for {shape.region}")
        got = price_from_rates(shape, model, table_rates(model))
        if notes:
            got.note = "; ".join([*notes, *([got.note] if got.note else [])])
        if got.usd_per_hour is None:
            got.note = f"{got.note}: give the machine a price_per_hour"
        return got

    def prices(self, spec: Any, zone: str | None = None, models: Iterable[str] = MODELS) -> dict[str, HourlyPrice]:
        """Every provisioning model's price of a plan's GCE spec."""
        shape = Shape.of(spec, zone)
        own = spec.get("price_per_hour") if isinstance(spec, Mapping) else getattr(spec, "price_per_hour", None)
        return {m: self.price(shape, m, own) for m in models}


def worst_case_usd(prices: Mapping[str, HourlyPrice], provisioning_models: list[str], hours: float,
                   retries: int = 0) -> float | None:
    """The most one entry may cost: every try lives ``hours``; the tries that may be preempted
    (``retries`` of them) are Spot, the last one the dearest model the machine allows."""
    dearest = [prices[m].usd_per_hour for m in provisioning_models if m in prices]
    if not dearest or any(p is None for p in dearest):
        return None
    total = max(p for p in dearest if p is not None) * hours
    if retries and "SPOT" in provisioning_models:
        spot = prices["SPOT"].usd_per_hour
        if spot is None:
            return None
        total += retries * spot * hours
    return round(total, 4)


def money(usd: float | None, *, per_hour: bool = False) -> str:
    """``$0.71``, ``$12.40``, ``$0.0042``; ``?`` for an unknown figure."""
    if usd is None or not math.isfinite(usd):
        return "?"
    text = f"${usd:,.2f}" if abs(usd) >= 0.995 or usd == 0 else (f"${usd:.4f}" if abs(usd) < 0.01 else f"${usd:.3f}")
    return text + ("/h" if per_hour else "")

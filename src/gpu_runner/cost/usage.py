"""What an entry's VMs cost: each VM's lifetime (as ``stop`` saw it, or from the VM's own
operations) times its price per hour, and the sum over an entry's tries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..results import Cost, VmUse
from ..timestamps import epoch_of
from .prices import HourlyPrice, Shape, region_of


def _epoch(stamp: str | None) -> float | None:
    value = epoch_of(stamp)
    return value or None


def vm_use(*, name: str, spec: Any, zone: str | None, provisioning_model: str | None, created_at: str | None,
           deleted_at: str | None, last_stop_at: str | None = None, timed_by: str | None = None,
           price: HourlyPrice | None = None, retry: int = 0, held_until: str | None = None,
           note: str | None = None) -> VmUse:
    """One VM's use and cost. ``spec``: the entry's GceSpec (or its dict), for what the VM is made of."""
    shape = Shape.of(spec, zone)
    use = VmUse(name=name, retry=retry, zone=zone, region=region_of(zone), machine_type=shape.machine_type,
                accelerator_type=shape.accelerator_type, accelerator_count=shape.accelerator_count,
                provisioning_model=provisioning_model, disk_type=shape.disk_type, disk_size_gb=shape.disk_size_gb,
                created_at=created_at, deleted_at=deleted_at, timed_by=timed_by, held_until=held_until, note=note)
    created, deleted, stopped = _epoch(created_at), _epoch(deleted_at), _epoch(last_stop_at)
    if created is not None and deleted is not None and deleted >= created:
        use.lifetime_s = round(deleted - created, 3)
        ran_until = stopped if stopped is not None and created <= stopped <= deleted else deleted
        use.running_s = round(ran_until - created, 3)
    elif use.note is None:
        use.note = "its lifetime is unknown (no creation or deletion time)"
    if price is not None:
        use.usd_per_hour, use.price_source, use.price_as_of = price.usd_per_hour, price.source, price.as_of
        use.parts_usd_per_hour = dict(price.parts)
        if price.usd_per_hour is None and price.note:
            use.note = "; ".join(n for n in (use.note, price.note) if n)
    use.usd = estimate(use)
    return use


def estimate(use: VmUse) -> float | None:
    """The VM's cost: machine and GPUs over its running hours, the disk over its lifetime; a price
    given whole over its lifetime. None when the price or the lifetime is unknown."""
    if use.usd_per_hour is None or use.lifetime_s is None:
        return None
    running = use.running_s if use.running_s is not None else use.lifetime_s
    parts = use.parts_usd_per_hour
    if parts:
        usd = (parts.get("machine", 0.0) + parts.get("gpu", 0.0)) * running / 3600 \
            + parts.get("disk", 0.0) * use.lifetime_s / 3600
    else:
        usd = use.usd_per_hour * use.lifetime_s / 3600
    return round(usd, 6)


def cost_of(vms: Iterable[VmUse]) -> Cost | None:
    """An entry's cost from its VMs (every try's); None when it had none."""
    vms = list(vms)
    if not vms:
        return None
    known = [v.usd for v in vms]
    return Cost(vms=vms, usd=None if any(u is None for u in known) else round(sum(u or 0.0 for u in known), 6))


def run_total(costs: Iterable[Cost | None]) -> tuple[float, int, int]:
    """(the sum of the known costs, how many VMs, how many of them of unknown cost)."""
    total, n, unknown = 0.0, 0, 0
    for c in costs:
        if c is None:
            continue
        for v in c.vms:
            n += 1
            if v.usd is None:
                unknown += 1
            else:
                total += v.usd
    return round(total, 6), n, unknown


def price_from_dict(d: Mapping[str, Any] | None) -> HourlyPrice | None:
    """An :class:`HourlyPrice` from what ``start`` wrote in its outputs (or None)."""
    if not isinstance(d, Mapping) or not isinstance(d.get("provisioning_model"), str):
        return None
    number = (int, float)
    per_hour, parts = d.get("usd_per_hour"), d.get("parts") or {}
    if (per_hour is not None and not isinstance(per_hour, number)) or not isinstance(parts, Mapping) or not all(
            isinstance(k, str) and isinstance(v, number) for k, v in parts.items()):
        return None
    texts = {k: d.get(k) for k in ("source", "as_of", "region", "note")}
    if not all(v is None or isinstance(v, str) for v in texts.values()):
        return None
    return HourlyPrice(d["provisioning_model"], None if per_hour is None else float(per_hour),
                       parts={k: float(v) for k, v in parts.items()}, **texts)

"""What the run cost, as the reports show it: per entry (each VM it ran on: machine, provisioning
model, how long it lived, its price per hour and where that comes from) and the run's total.
Pure functions of the result model's ``cost``; every figure says it is an estimate."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

from ..cost.prices import money, origin
from ..cost.usage import run_total
from ..results import Cost, EntryResult, VmUse
from .text import fmt_duration

ESTIMATE_NOTE = ("Estimates: list prices, no discounts, no network or licences; a VM held for a look is counted "
                 "to the end of its hold.")


def entry_cost_text(cost: Cost | None) -> str:
    """``$0.42`` (one VM), ``$0.61 (2 VMs)``, ``?`` when a VM's cost is unknown, ``—`` without VMs."""
    if cost is None or not cost.vms:
        return "—"
    text = money(cost.usd) if cost.usd is not None else "?"
    return text + (f" ({len(cost.vms)} VMs)" if len(cost.vms) > 1 else "")


def vm_words(v: VmUse) -> str:
    """``g2-standard-8 + 1× nvidia-l4, SPOT, us-central1-b``."""
    gpus = f" + {v.accelerator_count}× {v.accelerator_type}" if v.accelerator_count and v.accelerator_type else ""
    bits = [f"{v.machine_type or '?'}{gpus}", v.provisioning_model or "", v.zone or v.region or ""]
    return ", ".join(b for b in bits if b)


def lifetime_words(v: VmUse) -> str:
    if v.lifetime_s is None:
        return "?"
    text = fmt_duration(v.lifetime_s)
    if v.running_s is not None and v.running_s < v.lifetime_s - 1:
        text += f" ({fmt_duration(v.running_s)} running)"
    return text


def source_words(v: VmUse) -> str:
    if v.usd_per_hour is None:
        return v.note or "no price known"
    return origin(v.price_source, v.price_as_of)


def totals_line(results: Sequence[EntryResult]) -> str | None:
    """``Estimated cost: $1.23 for 3 VMs (1 of unknown cost)``; None when no entry ran on a VM."""
    total, n, unknown = run_total(r.cost for r in results)
    if not n:
        return None
    text = f"Estimated cost: {money(total)} for {n} VM{'s' if n != 1 else ''}"
    if unknown:
        text += f" ({unknown} of unknown cost, not counted)"
    return text


def markdown_section(results: Sequence[EntryResult], code: Callable[[str], str], md: Callable[[object], str]
                     ) -> list[str]:
    """The summary's section: one row per VM, the total, the note. Empty when no entry ran on a VM.
    ``code`` and ``md`` are the summary's own escapes (text comes from untrusted files)."""
    line = totals_line(results)
    if line is None:
        return []
    rows = ["### What it cost", "",
            f"**{md(line)}** — {md(ESTIMATE_NOTE)}", "",
            "| Entry | VM | Lifetime | Per hour | Cost | Price from |", "|---|---|--:|--:|--:|---|"]
    for r in results:
        if r.cost is None:
            continue
        for v in r.cost.vms:
            try_note = f" (try {v.retry + 1})" if len(r.cost.vms) > 1 else ""
            held = f"; held for a look until {v.held_until}" if v.held_until else ""
            rows.append(f"| {code(r.entry.id)}{md(try_note)} | {md(vm_words(v))} | {md(lifetime_words(v))} | "
                        f"{md(money(v.usd_per_hour, per_hour=True))} | {md(money(v.usd))} | "
                        f"{md(source_words(v) + held)} |")
    return rows + [""]


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def dashboard_total(results: Sequence[EntryResult]) -> str:
    """A totals tile for the dashboard ('' when no entry ran on a VM)."""
    total, n, unknown = run_total(r.cost for r in results)
    if not n:
        return ""
    title = f"{n} VM{'s' if n != 1 else ''}" + (f", {unknown} of unknown cost" if unknown else "") + ". " + ESTIMATE_NOTE
    return (f'<div class="stat cost" title="{_e(title)}"><span class="n">{_e(money(total))}</span> '
            "estimated cost</div>")


def dashboard_entry(r: EntryResult) -> str:
    """The entry's VMs and their cost, for its section of the dashboard ('' without VMs)."""
    if r.cost is None or not r.cost.vms:
        return ""
    rows = []
    for v in r.cost.vms:
        held = f' <span class="badge warn">held until {_e(v.held_until)}</span>' if v.held_until else ""
        rows.append(f"<tr><th scope=\"row\"><code>{_e(v.name)}</code>{held}</th><td>{_e(vm_words(v))}</td>"
                    f"<td class=num>{_e(lifetime_words(v))}</td>"
                    f"<td class=num>{_e(money(v.usd_per_hour, per_hour=True))}</td>"
                    f"<td class=num>{_e(money(v.usd))}</td><td>{_e(source_words(v))}</td></tr>")
    return (f'<table class="list cost"><caption>What {_e(r.entry.id)} cost: {_e(entry_cost_text(r.cost))} '
            f'(estimate)</caption><thead><tr><th scope="col">VM</th><th scope="col">Machine</th>'
            '<th scope="col" class=num>Lifetime</th><th scope="col" class=num>Per hour</th>'
            '<th scope="col" class=num>Cost</th><th scope="col">Price from</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")

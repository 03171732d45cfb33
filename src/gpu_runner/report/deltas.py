"""The comparison with a baseline, as each report shows it: arrows and changes for one figure,
the Markdown section of summary.md (and so of the pull-request comment) and the dashboard's.

Order everywhere: newly failing first, then fixed, then regressions, then improvements, then
what could not be compared (an entry or a notebook on one side only), then the thresholds.
"""

from __future__ import annotations

import html
from typing import Any

from ..compare import Comparison, Delta, EntryComparison, NotebookComparison
from .text import fmt_duration, fmt_mib

UP, DOWN = "▲", "▼"


def fmt_value(metric: str, value: float | None) -> str:
    return fmt_duration(value) if metric == "duration_s" else fmt_mib(value)


def fmt_change(d: Delta) -> str:
    """``▲ +5.2 s (+52 %)``: the arrow says which way, regressions and improvements alike."""
    change = d.change
    if change is None:
        return "—"
    arrow = UP if change > 0 else (DOWN if change < 0 else "")
    size = fmt_value(d.metric, abs(change))
    sign = "+" if change > 0 else ("−" if change < 0 else "±")
    pct = d.change_pct
    pct_text = f" ({'+' if pct > 0 else '−' if pct < 0 else '±'}{abs(pct):,.0f} %)" if pct is not None else ""
    return f"{arrow} {sign}{size}{pct_text}".strip()


def thresholds_text(th: dict[str, float]) -> str:
    return (f"time +{th['time_percent']:g} % and {fmt_duration(th['time_min'])}, "
            f"memory +{th['memory_percent']:g} % and {fmt_mib(th['memory_min_mib'])}")


def source_text(comp: Comparison) -> str:
    return comp.source.description or "the baseline"


def _what_failed(n: NotebookComparison, results_by_id: dict[str, Any], entry_id: str) -> str:
    r = results_by_id.get(entry_id)
    nb = next((x for x in (r.notebooks if r is not None else []) if x.path == n.path), None)
    if nb is not None and nb.failure is not None:
        from .text import describe_failure

        return describe_failure(nb.failure, max_chars=200)
    return ""


# -- Markdown (summary.md, the comment) -----------------------------------------------------
def markdown_blocks(comp: Comparison | None, results: list[Any], code: Any, md: Any) -> list[tuple[str, str]]:
    """(block, what it is) pairs for summary.md's budget; ``code``/``md`` are its escapers."""
    if comp is None:
        return []
    if comp.nothing_in_common:
        return [(f"> ⚠️ Against the baseline, nothing could be compared: {md(comp.reason)}.\n", "")]
    if not comp.available:
        return [(f"> ℹ️ No baseline to compare with: {md(comp.reason)}. The report goes on without one.\n", "")]
    by_id = {r.entry.id: r for r in results}
    c = comp.counts()
    head = [f"{c['newly_failing']} newly failing", f"{c['fixed']} fixed", f"{c['regressions']} regression"
            f"{'' if c['regressions'] == 1 else 's'}", f"{c['improvements']} improvement"
            f"{'' if c['improvements'] == 1 else 's'}"]
    src = md(source_text(comp))
    if comp.source.url:
        src = f"[{src}]({comp.source.url})"
    out: list[tuple[str, str]] = [("### Compared with the baseline\n", ""),
                                  (f"Baseline: {src} · " + " · ".join(head) + "\n", "")]

    def status_table(title: str, pairs: list[tuple[EntryComparison, NotebookComparison]], before: str) -> None:
        if not pairs:
            return
        out.append((f"**{title} ({len(pairs)})**\n\n| Entry | Notebook | Baseline | This run |\n|---|---|---|---|", ""))
        for e, n in pairs:
            now = n.after_status or "—"
            why = _what_failed(n, by_id, e.entry_id) if n.after_status == "failed" else ""
            out.append((f"| {code(e.entry_id)} | {code(n.path)} | {md(n.before_status or before)} | "
                        f"{md(now + (': ' + why if why else ''))} |", "comparison rows"))
        out.append(("", ""))

    status_table("❌ Newly failing", comp.with_change("newly_failing"), "—")
    status_table("✅ Fixed", comp.with_change("fixed"), "—")

    def delta_table(title: str, rows: list[tuple[EntryComparison, NotebookComparison, Delta]]) -> None:
        if not rows:
            return
        out.append((f"**{title} ({len(rows)})**\n\n| Entry | Notebook | What | Baseline | This run | Change |\n"
                    "|---|---|---|--:|--:|--:|", ""))
        for e, n, d in rows:
            out.append((f"| {code(e.entry_id)} | {code(n.path)} | {d.label} | {fmt_value(d.metric, d.before)} | "
                        f"{fmt_value(d.metric, d.after)} | {fmt_change(d)} |", "comparison rows"))
        out.append(("", ""))

    delta_table("📈 Regressions", comp.regressions())
    delta_table("📉 Improvements", comp.improvements())
    if not any(c.values()):
        out.append(("No notebook newly fails, and none is slower or hungrier than in the baseline beyond the "
                    "thresholds.\n", ""))
    notes = not_compared(comp)
    if notes:
        out.append(("**Not compared:** " + "; ".join(md(x) for x in notes) + ".\n", "comparison notes"))
    ths = {tuple(sorted(e.thresholds.items())) for e in comp.entries if e.presence != "gone"}
    if len(ths) == 1:
        out.append((f"<sub>A regression is a notebook that passed on both sides and grew by more than "
                    f"{md(thresholds_text(dict(next(iter(ths)))))} (an improvement: shrank as much); "
                    "thresholds from the matrix's `regression` settings.</sub>\n", ""))
    elif ths:
        out.append(("<sub>Thresholds per entry, from the matrix's `regression` settings.</sub>\n", ""))
    return out


def not_compared(comp: Comparison) -> list[str]:
    """What is on one side only, said as it is."""
    out = []
    for e in comp.entries_only_in("new"):
        out.append(f"entry {e.entry_id} is not in the baseline (its {len(e.notebooks)} notebook(s) are new)")
    for e in comp.entries_only_in("gone"):
        out.append(f"entry {e.entry_id} was in the baseline but is not in this run")
    for e, n in comp.notebooks_only_in("new"):
        out.append(f"{e.entry_id} · {n.path} is not in the baseline")
    for e, n in comp.notebooks_only_in("gone"):
        out.append(f"{e.entry_id} · {n.path} was in the baseline but is not in this run")
    return out


# -- HTML (the dashboard) ---------------------------------------------------------------------
def delta_html(n: NotebookComparison | None, metric: str) -> str:
    """The change of one figure next to it in a table cell: an arrow, red when it regressed,
    green when it improved, grey when within the thresholds."""
    d = n.delta(metric) if n is not None else None
    if d is None or d.change is None:
        return ""
    cls = {"regressed": "worse", "improved": "better"}.get(d.verdict, "same")
    words = {"worse": "regression", "better": "improvement", "same": "within the thresholds"}[cls]
    title = f"{d.label}: {fmt_value(d.metric, d.before)} in the baseline, {words}"
    return (f'<span class="delta {cls}" title="{html.escape(title, quote=True)}">'
            f"{html.escape(fmt_change(d))}</span>")


def change_badge(n: NotebookComparison | None) -> str:
    if n is None:
        return ""
    if n.change == "newly_failing":
        return '<span class="badge bad" title="Passed in the baseline">newly failing</span>'
    if n.change == "fixed":
        return '<span class="badge good" title="Failed in the baseline">fixed</span>'
    if n.change == "newly_skipped":
        return '<span class="badge warn" title="Passed in the baseline">newly skipped</span>'
    if n.before_status is None and n.after_status is not None:
        return '<span class="badge" title="Not in the baseline">new</span>'
    return ""


def dashboard_section(comp: Comparison | None, entry_anchor: dict[str, int]) -> str:
    """The "Compared with the baseline" section of index.html."""
    if comp is None:
        return ""
    e = html.escape
    if comp.nothing_in_common:
        return (f'<section class="baseline" aria-labelledby="base-h"><h2 id="base-h">Compared with the baseline</h2>'
                f'<p class="warn">⚠️ Nothing could be compared ({e(source_text(comp))}): {e(comp.reason)}.</p></section>')
    if not comp.available:
        return (f'<section class="baseline" aria-labelledby="base-h"><h2 id="base-h">Compared with the baseline</h2>'
                f'<p class="muted">No baseline to compare with: {e(comp.reason)}.</p></section>')
    c = comp.counts()
    src = e(source_text(comp))
    if comp.source.url and comp.source.url.startswith("https://"):
        src = f'<a href="{e(comp.source.url, quote=True)}">{src}</a>'
    parts = [f'<section class="baseline" aria-labelledby="base-h"><h2 id="base-h">Compared with the baseline</h2>'
             f'<p>Baseline: {src} · {c["newly_failing"]} newly failing · {c["fixed"]} fixed · '
             f'{c["regressions"]} regressions · {c["improvements"]} improvements</p>']

    def where(ec: EntryComparison, n: NotebookComparison) -> str:
        i = entry_anchor.get(ec.entry_id)
        label = f'<span class="entry-id">{e(ec.entry_id)}</span> · <code>{e(n.path)}</code>'
        return f'<a class="where" href="#entry-{i}">{label}</a>' if i is not None else label

    def status_list(title: str, cls: str, pairs: list[tuple[EntryComparison, NotebookComparison]]) -> None:
        if pairs:
            parts.append(f'<h3 class="{cls}">{e(title)} <span class="count">{len(pairs)}</span></h3><ul class="changes">'
                         + "".join(f"<li>{where(ec, n)} <span class=muted>{e(n.before_status or '—')} → "
                                   f"{e(n.after_status or '—')}</span></li>" for ec, n in pairs) + "</ul>")

    status_list("Newly failing", "bad", comp.with_change("newly_failing"))
    status_list("Fixed", "good", comp.with_change("fixed"))

    def delta_list(title: str, cls: str, rows: list[tuple[EntryComparison, NotebookComparison, Delta]]) -> None:
        if rows:
            parts.append(f'<h3 class="{cls}">{e(title)} <span class="count">{len(rows)}</span></h3><ul class="changes">'
                         + "".join(f"<li>{where(ec, n)} {e(d.label)}: {e(fmt_value(d.metric, d.before))} → "
                                   f"{e(fmt_value(d.metric, d.after))} {delta_html(n, d.metric)}</li>"
                                   for ec, n, d in rows) + "</ul>")

    delta_list("Regressions", "bad", comp.regressions())
    delta_list("Improvements", "good", comp.improvements())
    notes = not_compared(comp)
    if notes:
        parts.append('<p class="muted">Not compared: ' + "; ".join(e(x) for x in notes) + ".</p>")
    parts.append("</section>")
    return "".join(parts)

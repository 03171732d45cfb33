"""index.html: the runtime x machine grid people look at instead of reading logs.

One self-contained page (inline CSS and JS, a Content-Security-Policy that forbids any
fetch and runs no script but its own, by hash), readable without JavaScript: each grid cell
is a link to its entry's section, which lists the notebooks with links to their HTML (at the
failing cell), PDF and .ipynb. Links are relative to the page, so it works from ``file://`` and from an
unzipped artifact wherever the entry folders sit next to it. A pure function of the
result model: nothing here looks at an executed notebook. Every string from the model is
HTML-escaped (it may come from the code under test), and every file link must stay inside its
entry folder.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from ..compare import Comparison
from ..history import HistoryMarks, Mark
from ..files import inside
from ..results import EntryResult, NotebookResult
from .chart import sparkline_svg
from .cost import dashboard_entry as cost_table
from .cost import dashboard_total as cost_total
from .cost import entry_cost_text
from .deltas import change_badge, dashboard_section, delta_html
from .collect import ShownEntry, describe_tries
from .text import KIND_LABELS, add_counts, count_parts, describe_failure, fmt_counts, fmt_duration, fmt_mib, fmt_pct, runtime_text

_ICON = {"passed": "✓", "failed": "✗", "skipped": "⤼", "not_run": "⊘"}
_WORD = {"passed": "Passed", "failed": "Failed", "skipped": "Skipped", "not_run": "Not run"}
LOCAL_MACHINE = "this machine"
PROBLEM = ("failed", "not_run")


DashboardEntry = ShownEntry
"""One entry as the dashboard shows it: the model, where its folder is (None when it did not
run), the partial results of its earlier (preempted) tries, and its name (:func:`name_entries`)."""


def in_matrix_order(entries: list[DashboardEntry]) -> list[DashboardEntry]:
    """Entries of a matrix in its order (runtimes as written, then machines as written); the
    others after them, in the order given."""
    def key(ie: tuple[int, DashboardEntry]) -> tuple[int, int, int, int]:
        i, d = ie
        pos = d.result.entry.matrix_position
        return (0, pos[0], pos[1], i) if pos and len(pos) == 2 else (1, 0, 0, i)

    return [d for _, d in sorted(enumerate(entries), key=key)]


def name_entries(entries: list[DashboardEntry]) -> list[DashboardEntry]:
    """A distinct name for each entry: its id, unless another entry has the same id; then the
    entry folder's path below the folders those entries share (``run-a/local``, ``run-b/local``)."""
    by_id: dict[str, list[DashboardEntry]] = {}
    for d in entries:
        by_id.setdefault(d.result.entry.id, []).append(d)
    for same in by_id.values():
        if len(same) < 2:
            continue
        if any(d.entry_dir is None for d in same):  # an entry that did not run has no folder
            for n, d in enumerate(same, 1):
                d.name = f"{d.result.entry.id} ({n})"
            continue
        paths = [Path(os.path.abspath(d.entry_dir)) for d in same]  # type: ignore[arg-type]
        common = Path(os.path.commonpath([str(p) for p in paths]))
        for d, p in zip(same, paths):
            rel = p.relative_to(common).as_posix() if p != common else p.name
            d.name = rel if rel.endswith(d.result.entry.id) or rel == "." else f"{rel}/{d.result.entry.id}"
        if len({d.name for d in same}) < len(same):  # the same folder given twice
            for n, d in enumerate(same, 1):
                d.name = f"{d.result.entry.id} ({n})"
    return entries


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def href(target: Path, base_dir: Path) -> str:
    """A relative URL from ``base_dir`` to ``target``, each segment percent-encoded."""
    rel = os.path.relpath(os.path.abspath(target), os.path.abspath(base_dir))
    return "/".join(quote(part) for part in Path(rel).as_posix().split("/"))


def grid_keys(result: EntryResult, name: str | None = None) -> tuple[str, str]:
    """(row, column) of an entry: runtime x machine; a run without a matrix gets one cell, on a
    row of its name."""
    e = result.entry
    row = e.runtime or name or e.id
    col = e.machine or (LOCAL_MACHINE if e.provider == "local" else e.provider)
    return row, col


def _counts_html(c: dict[str, int], noun: str) -> str:
    return _e(fmt_counts(c, noun))


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _word(status: str) -> str:
    return _WORD.get(status) or _e(status)


def _pill(status: str) -> str:
    return f'<span class="pill s-{_e(status)}"><span aria-hidden="true">{_ICON.get(status, "?")}</span> {_word(status)}</span>'


def _badges(r: EntryResult) -> str:
    out = []
    tries = describe_tries(r.tries, r.status)
    if tries and r.status != "not_run":
        out.append(f'<span class="badge warn" title="The entry was tried {len(r.tries)} times in this run">'
                   f'{_e(tries)}</span>')
    if r.entry.ran_locally and r.entry.provider != "local":
        out.append(f'<span class="badge local" title="A {_e(r.entry.provider)} entry whose notebooks ran on the '
                   'machine that ran gpu-runner, not on its own VM">ran locally</span>')
    if r.interrupted:
        out.append('<span class="badge warn" title="Stopped before every notebook ran">interrupted</span>')
    return "".join(out)


def _gpu_text(r: EntryResult) -> str:
    gpu = r.facts.get("gpu_model")
    if not gpu:
        return ""
    n = r.facts.get("gpu_count")
    return f"{n}× {gpu}" if isinstance(n, int) and n > 1 else str(gpu)


def _file_href(d: DashboardEntry, rel: object, base: Path) -> str | None:
    """The link to a file the entry names, or None when the path would leave its folder."""
    if not isinstance(rel, str):
        return None
    try:
        return href(inside(d.entry_dir, rel), base)
    except ValueError:
        return None


def _nb_links(d: DashboardEntry, nb: NotebookResult, base: Path) -> str:
    links: list[str] = []
    files = nb.files or {}
    if d.entry_dir is None:
        return '<span class="muted">no files</span>'

    cell = nb.failure.cell_number if nb.status == "failed" and nb.failure else None
    for key, text, extra in (("html", "HTML", f"#cell-{cell}" if cell else ""), ("pdf", "PDF", ""),
                             ("ipynb", ".ipynb", ""), ("log_py", "log.py", "")):
        url = _file_href(d, files.get(key), base) if files.get(key) else None
        if url is not None:
            attrs = " download" if key == "ipynb" else ""
            links.append(f'<a href="{url}{extra}"{attrs}>{text}</a>')
    if not links:
        return '<span class="muted">no files</span>'
    return " · ".join(links)


def _failure_text(nb_or_check) -> str:
    f = nb_or_check.failure
    if nb_or_check.status == "skipped":
        return f'<span class="muted">{_e(nb_or_check.skip_reason or "skipped")}</span>'
    if nb_or_check.status != "failed":
        rerun = getattr(nb_or_check, "rerun", None)
        return f'<span class="muted">rerun {_e(rerun.status)}</span>' if rerun else ""
    if f is None:
        return "failed"
    return (f'<span class="kind k-{_e(f.kind)}">{_e(KIND_LABELS.get(f.kind, f.kind))}</span> '
            f'<span class="msg">{_e(describe_failure(f, max_chars=400))}</span>')


def _mark(history: HistoryMarks | None, r: EntryResult, path: str) -> Mark | None:
    return history.of(r.entry.runtime, r.entry.machine, r.entry.id, path) if history else None


def _history_badges(mark: Mark | None) -> str:
    """What earlier runs say of a notebook (flaky, slower, more GPU memory), one badge each."""
    if mark is None:
        return ""
    return "".join(f'<span class="badge warn history" title="Across the last runs">⚠ {_e(w)}</span>'
                   for w in mark.words())


def _nb_rows(d: DashboardEntry, base: Path, comparison: Comparison | None = None,
             history: HistoryMarks | None = None) -> list[str]:
    rows = []
    e = d.result.entry
    for nb in d.result.notebooks:
        nc = comparison.notebook(e.id, nb.path) if comparison is not None and comparison.available else None
        rows.append(
            f'<tr class="s-{_e(nb.status)}"><th scope="row"><code>{_e(nb.path)}</code></th>'
            f"<td>{_pill(nb.status)}{change_badge(nc)}{_history_badges(_mark(history, d.result, nb.path))}</td>"
            f"<td class=num>{fmt_duration(nb.duration_s)}{delta_html(nc, 'duration_s')}</td>"
            f"<td class=num>{fmt_mib(nb.gpu_peak_memory_mib)}{delta_html(nc, 'gpu_peak_memory_mib')}</td>"
            f"<td class=num>{fmt_pct(nb.gpu_mean_utilization_pct)}</td>"
            f"<td class=spark-cell>{sparkline_svg(nb.timeline)}</td>"
            f"<td>{_failure_text(nb)}</td><td class=links>{_nb_links(d, nb, base)}</td></tr>"
        )
    return rows


_NB_HEAD = ('<thead><tr><th scope="col">Notebook</th><th scope="col">Result</th><th scope="col" class=num>Duration</th>'
            '<th scope="col" class=num>GPU peak</th><th scope="col" class=num>GPU util</th>'
            '<th scope="col">Memory over time</th><th scope="col">What happened</th><th scope="col">Open</th></tr></thead>')


def _tries_list(r: EntryResult) -> str:
    if not r.tries:
        return ""
    words = {"ran": "ran", "preempted": "preempted", "not_started": "did not start", "cancelled": "cancelled",
             "no_results": "no results"}
    items = []
    for t in r.tries:
        where = ", ".join(x for x in (t.provisioning_model, t.zone) if x)
        reason = f": {_e(t.reason)}" if t.reason and t.outcome != "ran" else ""
        items.append(f"<li>Try {t.retry + 1}{f' ({_e(where)})' if where else ''}: "
                     f"{_e(words.get(t.outcome, t.outcome))}{reason}</li>")
    return f'<ol class="tries" aria-label="Tries of {_e(r.entry.id)}">{"".join(items)}</ol>'


def _earlier(d: DashboardEntry, base: Path) -> str:
    parts = []
    for old in d.earlier:
        rows = _nb_rows(old, base)
        what = f"Try {old.result.entry.retry + 1}: partial results of a preempted VM (not counted)"
        parts.append(f'<table class="list earlier"><caption>{_e(what)}</caption>{_NB_HEAD}<tbody>'
                     + ("".join(rows) or '<tr><td colspan="8" class="muted">no notebook ran</td></tr>')
                     + "</tbody></table>")
    return "".join(parts)


def _entry_section(i: int, d: DashboardEntry, base: Path, comparison: Comparison | None = None,
                   history: HistoryMarks | None = None) -> str:
    r = d.result
    e = r.entry
    row, col = grid_keys(r, d.name)
    facts = []
    for label, value in (
        ("Runtime", e.runtime), ("Machine", e.machine), ("GPU", _gpu_text(r)),
        ("Driver", r.facts.get("driver_version")), ("CUDA", r.facts.get("cuda_version")),
        ("Runtime's Python", runtime_text(r.facts)),
        ("Host", r.facts.get("hostname")), ("Provider", e.provider), ("Runner label", e.label),
        ("Started", r.started_at), ("Duration", fmt_duration(r.duration_s) if r.status != "not_run" else ""),
        ("Cost (estimate)", entry_cost_text(r.cost) if r.cost is not None else None),
    ):
        if value:
            facts.append(f"<div><dt>{label}</dt><dd>{_e(value)}</dd></div>")
    nb_rows = _nb_rows(d, base, comparison, history)
    check_rows = []
    for ch in r.checks:
        check_rows.append(
            f'<tr class="s-{_e(ch.status)}"><th scope="row">{_e(ch.name)}</th><td>{_pill(ch.status)}</td>'
            f"<td class=num>{fmt_duration(ch.duration_s)}</td>"
            f'<td>{_failure_text(ch) if ch.status != "passed" else _e(ch.summary)}</td></tr>'
        )
    counts = (f'{_counts_html(r.notebook_counts(), "notebook")} · {_counts_html(r.check_counts(), "check")} · '
              f'{fmt_duration(r.duration_s)}' if r.status != "not_run" else "not run")
    parts = [
        f'<details class="entry s-{_e(r.status)}" id="entry-{i}"{" open" if r.status in PROBLEM else ""}>',
        f'<summary><span class="sum-main">{_pill(r.status)} <span class="entry-id">{_e(d.name)}</span>'
        f'<span class="muted"> {_e(row)} × {_e(col)}</span>{_badges(r)}</span>'
        f'<span class="sum-counts">{counts}</span></summary>',
        f'<div class="entry-body"><dl class="facts">{"".join(facts)}</dl>',
    ]
    if r.status == "not_run":
        parts.append(f'<p class="reason"><strong>Not run:</strong> <span class="msg">{_e(r.reason or "")}</span></p>')
    parts.append(_tries_list(r))
    if nb_rows:
        parts.append(f'<table class="list"><caption>Notebooks of {_e(d.name)}</caption>{_NB_HEAD}<tbody>'
                     + "".join(nb_rows) + "</tbody></table>")
    elif r.status != "not_run":
        parts.append('<p class="muted">No notebooks ran.</p>')
    if r.cost is not None:
        parts.append(cost_table(r))
    if check_rows:
        parts.append(
            f'<table class="list checks"><caption>System checks of {_e(d.name)}</caption><thead><tr>'
            '<th scope="col">Check</th><th scope="col">Result</th><th scope="col" class=num>Duration</th>'
            '<th scope="col">Summary</th></tr></thead><tbody>' + "".join(check_rows) + "</tbody></table>"
        )
    parts.append(_earlier(d, base))
    if d.entry_dir is not None:
        extra = [f'<a href="{href(d.entry_dir / "results.json", base)}">results.json</a>']
        if (d.entry_dir / "junit.xml").exists():
            extra.append(f'<a href="{href(d.entry_dir / "junit.xml", base)}">junit.xml</a>')
        parts.append(f'<p class="entry-files">Entry files: {" · ".join(extra)}</p>')
    parts.append("</div></details>")
    return "\n".join(parts)


def _tile_history(d: DashboardEntry, history: HistoryMarks | None) -> tuple[str, str]:
    """(a badge for the grid cell, words for its label): how many of its notebooks earlier runs
    call flaky, slower or hungrier, each named in the badge's title."""
    marks = [(nb.path, m) for nb in d.result.notebooks if (m := _mark(history, d.result, nb.path)) is not None]
    if not marks:
        return "", ""
    counts = [(n, w) for n, w in ((sum(1 for _, m in marks if m.flaky), "flaky"),
                                  (sum(1 for _, m in marks if m.slower is not None), "slower"),
                                  (sum(1 for _, m in marks if m.more_memory is not None), "more GPU memory")) if n]
    words = ", ".join(f"{n} {w}" for n, w in counts)
    title = "; ".join(f"{path}: {', '.join(m.words())}" for path, m in marks)
    return (f'<span class="badge warn history" title="{_e(title)}">⚠ {_e(words)}</span>',
            f" Across the last runs: {words}.")


def _tile(i: int, d: DashboardEntry, history: HistoryMarks | None = None) -> str:
    r = d.result
    n, c = r.notebook_counts(), r.check_counts()
    row, col = grid_keys(r, d.name)
    show_id = d.name not in (row, f"{row}-{col}", f"{row}--{col}") and len(d.name) < 48
    status = (f'<span class="tile-status"><span aria-hidden="true">{_ICON.get(r.status, "?")}</span> '
              f'{_word(r.status)}</span>')
    if r.status == "not_run":
        label = f"{d.name}: not run: {r.reason or ''}. Show why."
        return (f'<a class="tile s-not_run" href="#entry-{i}" aria-label="{_e(label)}">{status}'
                f'<span class="tile-reason">{_e(_short(r.reason or ""))}</span>'
                + (f'<span class="tile-id">{_e(d.name)}</span>' if show_id else "") + "</a>")
    badge, said = _tile_history(d, history)
    label = (f"{d.name}: {_WORD.get(r.status, r.status)}; {fmt_counts(n, 'notebook')}; "
             f"{fmt_counts(c, 'system check')}.{said} Show its notebooks.")
    meta = " · ".join(x for x in (_gpu_text(r), fmt_duration(r.duration_s),
                                  entry_cost_text(r.cost) if r.cost is not None else "") if x)
    checks = (f'<span class="tile-checks{" nz" if c["failed"] else ""}">checks: '
              f'{_e(count_parts(c))}</span>' if c["total"] else "")
    return (
        f'<a class="tile s-{_e(r.status)}" href="#entry-{i}" aria-label="{_e(label)}">{status}'
        f'<span class="tile-counts" aria-hidden="true" title="notebooks">'
        f'<span class="n-p" title="notebooks passed">{n["passed"]}<small> passed</small></span>'
        f'<span class="n-f{" nz" if n["failed"] else ""}" title="notebooks failed">{n["failed"]}<small> failed</small></span>'
        f'<span class="n-s" title="notebooks skipped">{n["skipped"]}<small> skipped</small></span></span>'
        + checks
        + (f'<span class="tile-id">{_e(d.name)}</span>' if show_id else "")
        + f'<span class="tile-meta">{_e(meta)}</span>{_badges(r)}{badge}</a>'
    )


def _short(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _note_html(note: str) -> str:
    """A note's text, escaped, its `code spans` as <code> (the same note is markdown in the summary)."""
    parts = _e(note).split("`")
    if len(parts) % 2 == 0:  # an unmatched backtick: the text as it is
        return _e(note)
    return "".join(f"<code>{s}</code>" if i % 2 else s for i, s in enumerate(parts))


def render_dashboard(entries: list[DashboardEntry], out_dir: Path, *, title: str = "GPU notebooks",
                     comparison: Comparison | None = None, notes: list[str] | None = None,
                     history: HistoryMarks | None = None) -> str:
    """The whole index.html text, for a page that will live in ``out_dir``; with a
    ``comparison``, its section and each notebook's changes (arrows) against the baseline; with a
    ``history`` (earlier runs' marks), a badge on each grid cell and notebook it calls flaky, slower
    or hungrier.
    ``notes``: said above the totals (entries of the matrix this run left out, and how to run them)."""
    base = Path(out_dir)
    entries = name_entries(list(entries))
    results = [d.result for d in entries]
    totals: dict[str, int] = {}
    check_totals: dict[str, int] = {}
    for r in results:
        add_counts(totals, r.notebook_counts())
        add_counts(check_totals, r.check_counts())
    for k in ("passed", "failed", "skipped", "total"):
        totals.setdefault(k, 0)
        check_totals.setdefault(k, 0)
    failed_entries = sum(1 for r in results if r.status == "failed")
    not_run = sum(1 for r in results if r.status == "not_run")
    overall = "failed" if failed_entries else "not_run" if not_run else ("passed" if results else "skipped")
    of_n = f"of {len(results)} entr{'y' if len(results) == 1 else 'ies'}"
    verdict = ", ".join(x for x in (
        f"{failed_entries} {of_n} failed" if failed_entries else "",
        f"{not_run} {of_n} not run" if not_run else "") if x) or (
        f"{len(results)} {of_n} passed" if results else "No results")

    # the matrix's order, as the entry list below: rows by runtime, columns by machine
    keys = [grid_keys(d.result, d.name) for d in entries]
    col_pos: dict[str, tuple[int, int]] = {}
    for i, (d, (_, col)) in enumerate(zip(entries, keys)):
        pos = d.result.entry.matrix_position
        here = (0, pos[1]) if pos and len(pos) == 2 else (1, i)
        col_pos[col] = min(col_pos.get(col, here), here)
    rows = list(dict.fromkeys(row for row, _ in keys))
    cols = sorted(col_pos, key=lambda c: col_pos[c])
    cells: dict[tuple[str, str], list[int]] = {}
    for i, k in enumerate(keys):
        cells.setdefault(k, []).append(i)
    grid = ['<div class="grid-wrap"><table class="grid" id="grid"><caption>Each cell is one runtime on one machine: '
            'its colour is the outcome, its numbers count notebooks (and, below them, system checks). Select a cell '
            'for its notebooks.</caption><thead><tr><th scope="col"><span class="corner">runtime ↓ · machine →'
            '</span></th>']
    grid += [f'<th scope="col">{_e(c)}</th>' for c in cols]
    grid.append("</tr></thead><tbody>")
    for row in rows:
        grid.append(f'<tr><th scope="row">{_e(row)}</th>')
        for col in cols:
            idx = cells.get((row, col))
            if not idx:
                grid.append('<td class="empty"><span class="none" aria-label="not in this run">—</span></td>')
            else:
                grid.append("<td>" + "".join(_tile(i, entries[i], history) for i in idx) + "</td>")
        grid.append("</tr>")
    grid.append("</tbody></table></div>")

    failures = []
    for i, d in enumerate(entries):
        r = d.result
        if r.status == "not_run":
            failures.append(
                f'<li class="s-not_run"><a class="where" href="#entry-{i}"><span class="entry-id">{_e(r.entry.id)}</span>'
                f' · not run</a> <span class="msg">{_e(r.reason or "")}</span></li>')
        for ch in r.checks:
            if ch.status == "failed":
                failures.append(
                    f'<li><a class="where" href="#entry-{i}"><span class="entry-id">{_e(d.name)}</span> · '
                    f'check <code>{_e(ch.name)}</code></a> {_failure_text(ch)}</li>'
                )
        for nb in r.notebooks:
            if nb.status == "failed":
                failures.append(
                    f'<li><a class="where" href="#entry-{i}"><span class="entry-id">{_e(d.name)}</span> · '
                    f'<code>{_e(nb.path)}</code></a> {_failure_text(nb)} <span class="links">{_nb_links(d, nb, base)}</span></li>'
                )

    started = min((r.started_at for r in results if r.started_at), default="")
    finished = max((r.finished_at for r in results if r.finished_at), default="")
    versions = sorted({r.tool_version for r in results if r.tool_version})
    sub = []
    if started:
        sub.append(f"started {_e(started)}")
    if finished:
        sub.append(f"finished {_e(finished)}")
    if versions:
        sub.append("gpu-runner " + _e(", ".join(versions)))
    longest = max((r.duration_s for r in results), default=0.0)
    checks_skipped = f", {check_totals['skipped']} skipped" if check_totals["skipped"] else ""

    body = [
        '<a class="skip" href="#grid">Skip to the grid</a>',
        f'<header class="top s-{overall}"><div><h1>{_e(title)}</h1><p class="sub">{" · ".join(sub)}</p></div>'
        f'<p class="verdict" role="status"><span aria-hidden="true">{_ICON.get(overall, "")}</span> {_e(verdict)}</p></header>',
        "<main>",
        *[f'<p class="note" role="note">{_note_html(n)}</p>' for n in (notes or [])],
        '<section class="totals" aria-label="Totals">'
        f'<div class="stat{" s-passed" if totals["passed"] else ""}"><span class="n">{totals["passed"]}</span> '
        'notebooks passed</div>'
        f'<div class="stat{" s-failed" if totals["failed"] else ""}"><span class="n">{totals["failed"]}</span> '
        'notebooks failed</div>'
        f'<div class="stat{" s-skipped" if totals["skipped"] else ""}"><span class="n">{totals["skipped"]}</span> '
        'notebooks skipped</div>'
        + (f'<div class="stat{" s-failed" if check_totals["failed"] else ""}"><span class="n">'
           f'{check_totals["passed"]}/{check_totals["total"]}</span> system checks passed{checks_skipped}</div>'
           if check_totals["total"] else "")
        + (f'<div class="stat s-not_run"><span class="n">{not_run}</span> not run</div>' if not_run else "") +
        f'<div class="stat"><span class="n">{len(results)}</span> entr{"y" if len(results) == 1 else "ies"}</div>'
        f'<div class="stat"><span class="n">{fmt_duration(longest)}</span> longest entry</div>'
        f'{cost_total(results)}</section>',
        '<section aria-labelledby="grid-h"><h2 id="grid-h">Runtimes × machines</h2>', *grid, "</section>",
    ]
    if failures:
        heading = "Failures and entries not run" if not_run and failed_entries else (
            "Entries not run" if not_run and not any(r.status == "failed" or r.counts()["failed"] for r in results)
            else "Failures")
        body += ['<section aria-labelledby="fail-h" class="failures"><h2 id="fail-h">' + heading + ' '
                 f'<span class="count">{len(failures)}</span></h2><ul>', *failures, "</ul></section>"]
    body.append(dashboard_section(comparison, {d.result.entry.id: i for i, d in enumerate(entries)}))
    body += [
        '<section aria-labelledby="entries-h"><div class="entries-head"><h2 id="entries-h">Entries</h2>'
        '<div class="controls"><label><input type="checkbox" id="only-failed"> only failed and not run entries</label>'
        '<button type="button" id="expand-all">Expand all</button>'
        '<button type="button" id="collapse-all">Collapse all</button></div></div>',
        *[_entry_section(i, d, base, comparison, history) for i, d in enumerate(entries)],
        "</section></main>",
        '<footer>Made by gpu-runner from each entry\'s results.json. Links are relative: keep the entry folders next to this page.</footer>',
    ]
    page_title = f"{_ICON.get(overall, '')} {verdict} · {title}"
    script = _asset("dashboard.js")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp(script)}">'
        '<meta name="color-scheme" content="light dark">'
        f"<title>{_e(page_title)}</title><style>{_asset('dashboard.css')}</style></head>\n"
        f'<body data-overall="{overall}">\n' + "\n".join(body)
        + f"\n<script>{script}</script>\n</body></html>\n"
    )


def csp(*scripts: str) -> str:
    """The page's Content-Security-Policy: nothing fetched, and only our own script runs (by its
    hash), so markup that got into the page anyway (an ``onerror`` attribute, a ``<script>``)
    does not. Inline styles stay allowed: they cannot run code."""
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode('utf-8')).digest()).decode()}'"
                      for s in scripts)
    return f"default-src 'none'; style-src 'unsafe-inline'; script-src {hashes}; img-src data:; base-uri 'none'; " \
           "form-action 'none'"

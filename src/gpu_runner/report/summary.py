"""summary.md: the run in Markdown, for the job summary and the pull-request comment.

Totals, one row per entry, what the VMs cost (estimates), the comparison with a baseline when there is one (newly failing,
fixed, regressions, improvements), each failure with its cell, kind and message, then every
notebook's duration, GPU peak memory and mean GPU utilisation. Bounded (PR comments take 65,536 characters):
the parts that matter most come first, and what did not fit is named in a closing note.
"""

from __future__ import annotations

import html

from ..compare import Comparison
from ..history import HistoryMarks, Mark
from ..results import EntryResult, NotebookResult
from .cost import markdown_section as cost_section
from .collect import describe_tries
from .deltas import markdown_blocks
from .text import (
    KIND_LABELS,
    add_counts,
    clean_output,
    count_parts,
    describe_failure,
    failure_place,
    fmt_counts,
    fmt_duration,
    fmt_mib,
    fmt_pct,
    runtime_text,
    tail,
)

SUMMARY_MAX_CHARS = 60_000
_NOTE_RESERVE = 600

_STATUS = {"passed": "✅ passed", "failed": "❌ failed", "skipped": "⏭️ skipped", "not_run": "🚫 not run"}


ZWJ = "\u200d"
"""Zero-width joiner: after an ``@`` it keeps GitHub from reading a mention (``@org/team``), and
inside ``<!--`` it keeps text from reading as our comment marker; a reader sees the same text."""


def no_mention(text: str) -> str:
    """``@name`` as text that notifies nobody: results come from the code under test."""
    return text.replace("@", "@" + ZWJ)


def md(text: object) -> str:
    """Text made safe for a Markdown table cell: one line, no HTML, no accidental markup, no
    mention."""
    s = " ".join(str(text).split())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in "\\`*_[]|~#":
        s = s.replace(ch, "\\" + ch)
    return no_mention(s)


def _code(text: str) -> str:
    return f"<code>{md(text)}</code>"


def _code_html(text: str) -> str:
    """For raw HTML blocks (``<details>``/``<summary>``), where Markdown escapes are not read."""
    return f"<code>{no_mention(html.escape(' '.join(str(text).split())))}</code>"


def _fence(text: str, lang: str = "text") -> str:
    """A code block no text can end early (the fence is longer than any run of backticks in it).
    GitHub reads no mention and no HTML inside; an HTML comment start is broken up anyway, so no
    line of it is ever our comment marker."""
    text = text.replace("<!--", "<!-" + ZWJ + "-")
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text}\n{ticks}"


def _status(status: str) -> str:
    return _STATUS.get(status, md(status))


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.cut: dict[str, int] = {}

    def fits(self, text: str) -> bool:
        return self.size + len(text) + 1 <= self.limit - _NOTE_RESERVE

    def add(self, text: str, what: str | None = None) -> bool:
        if self.fits(text):
            self.parts.append(text)
            self.size += len(text) + 1
            return True
        if what:
            self.cut[what] = self.cut.get(what, 0) + 1
        return False


def _gpu(result: EntryResult) -> str:
    f = result.facts
    gpu = f.get("gpu_model")
    if not gpu:
        return "—"
    count = f.get("gpu_count")
    s = f"{count}× {gpu}" if isinstance(count, int) and count > 1 else str(gpu)
    extra = [f"driver {f['driver_version']}" if f.get("driver_version") else "",
             f"CUDA {f['cuda_version']}" if f.get("cuda_version") else ""]
    extra = [x for x in extra if x]
    return md(s + (f" ({', '.join(extra)})" if extra else ""))


def _entry_name(result: EntryResult, name: str | None = None) -> str:
    note = ""
    e = result.entry
    if e.ran_locally and e.provider != "local":
        note = " (ran locally)"
    if result.interrupted:
        note += " (interrupted)"
    tries = describe_tries(result.tries, result.status)
    if tries:
        note += f" ({md(tries)})"
    return _code(name or e.id) + note


def _totals(results: list[EntryResult]) -> tuple[dict[str, int], dict[str, int]]:
    """(notebooks, checks): counted apart, never summed."""
    nbs: dict[str, int] = {}
    checks: dict[str, int] = {}
    for r in results:
        add_counts(nbs, r.notebook_counts())
        add_counts(checks, r.check_counts())
    return nbs, checks


def _failure_row(result: EntryResult, name: str, item_failure, kind_default: str, entry_name: str) -> str:
    f = item_failure
    cell = str(f.cell_number) if f is not None and f.cell_number is not None else "—"
    if f is not None and f.cell_number is not None and f.cell_line:
        cell += f", line {f.cell_line}"
    kind = KIND_LABELS.get(f.kind, f.kind) if f is not None else kind_default
    msg = describe_failure(f, max_chars=300) if f is not None else "failed"
    if f is not None and f.cell_number is not None and msg.startswith(f"{failure_place(f)}: "):
        msg = msg[len(f"{failure_place(f)}: "):]
    return f"| {_code(entry_name)} | {_code(name)} | {cell} | {md(kind)} | {md(msg)} |"


def render_summary(results: list[EntryResult], *, max_chars: int = SUMMARY_MAX_CHARS, title: str = "GPU notebooks",
                   comparison: Comparison | None = None, names: list[str] | None = None,
                   history: HistoryMarks | None = None) -> str:
    """The whole summary.md text, at most ``max_chars`` characters; with a ``comparison``, the
    section "Compared with the baseline" follows the entry rows. ``names``: how to name each
    entry where ids repeat (see :func:`gpu_runner.report.dashboard.name_entries`). ``history``:
    the marks of earlier runs (:func:`gpu_runner.history.read_history`); each notebook of this run
    it calls flaky, slower or hungrier is named in a section of its own and in its notebook row."""
    b = _Budget(max_chars)
    label = {id(r): n for r, n in zip(results, names or [])}

    def name_of(r: EntryResult) -> str:
        return label.get(id(r)) or r.entry.id

    t_nb, t_ch = _totals(results)
    failed_entries = [r for r in results if r.status == "failed"]
    not_run = [r for r in results if r.status == "not_run"]
    of = f"of {len(results)} entr{'y' if len(results) == 1 else 'ies'}"
    if not results:
        head = f"## ⚠️ {title}: no results"
    elif failed_entries:
        head = f"## ❌ {title}: {len(failed_entries)} {of} failed" + (f", {len(not_run)} not run" if not_run else "")
    elif not_run:
        head = f"## 🚫 {title}: {len(not_run)} {of} not run"
    else:
        head = f"## ✅ {title}: all {len(results)} entr{'y' if len(results) == 1 else 'ies'} passed"
    b.add(head)
    b.add("")
    longest = max((r.duration_s for r in results), default=0.0)
    b.add(
        f"**{md(fmt_counts(t_nb, 'notebook'))}** · {md(fmt_counts(t_ch, 'system check'))} — on {len(results)} entr"
        f"{'y' if len(results) == 1 else 'ies'}" + (f" ({len(not_run)} not run)" if not_run else "")
        + f"; longest entry {fmt_duration(longest)}."
    )
    b.add("")

    # -- one row per entry -----------------------------------------------------------------
    if results:
        header = ("| Entry | Runtime | Machine | GPU | Python | Result | Notebooks | System checks | Duration |\n"
                  "|---|---|---|---|---|---|---|---|--:|")
        b.add(header)
        for r in results:
            counts = ("— | — | —" if r.status == "not_run" else
                      f"{_short_counts(r.notebook_counts())} | {_short_counts(r.check_counts())} | "
                      f"{fmt_duration(r.duration_s)}")
            row = (f"| {_entry_name(r, name_of(r))} | {md(r.entry.runtime or '—')} | {md(r.entry.machine or '—')} | {_gpu(r)} | "
                   f"{md(runtime_text(r.facts, short=True).removeprefix('Python ') or '—')} | "
                   f"{_status(r.status)} | {counts} |")
            b.add(row, "entry rows")
        b.add("")

    # -- entries that did not run ------------------------------------------------------------
    if not_run:
        b.add(f"### Not run ({len(not_run)})")
        b.add("")
        b.add("| Entry | Why |\n|---|---|")
        for r in not_run:
            b.add(f"| {_entry_name(r, name_of(r))} | {md(r.reason or 'unknown')} |", "not-run rows")
        b.add("")

    # -- what the VMs cost ------------------------------------------------------------------
    cost_rows = cost_section(results, _code, md)
    if cost_rows:
        b.add("\n".join(cost_rows), "cost table")

    # -- against the baseline: newly failing, fixed, regressions, improvements ---------------
    for block, what in markdown_blocks(comparison, results, _code, md):
        b.add(block, what or None)

    # -- what earlier runs say: flaky, slower, more GPU memory ---------------------------------
    marked = [(r, nb, m) for r in results for nb, m in ((nb, mark_of(history, r, nb.path)) for nb in r.notebooks)
              if m is not None]
    if marked and history is not None:
        b.add(f"### ⚠️ Across the last {history.runs} run{'s' if history.runs != 1 else ''} ({len(marked)})")
        b.add("")
        b.add("| Entry | Notebook | What the earlier runs show |\n|---|---|---|")
        for r, nb, m in marked:
            b.add(f"| {_code(name_of(r))} | {_code(nb.path)} | {md('; '.join(m.words()))} |", "history rows")
        b.add("")

    # -- failures --------------------------------------------------------------------------
    failures: list[tuple[EntryResult, str, object]] = []
    for r in results:
        failures += [(r, f"check {c.name}", c.failure) for c in r.checks if c.status == "failed"]
        failures += [(r, nb.path, nb.failure) for nb in r.notebooks if nb.status == "failed"]
    if failures:
        b.add(f"### Failures ({len(failures)})")
        b.add("")
        b.add("| Entry | Notebook or check | Cell | Kind | Message |\n|---|---|--:|---|---|")
        for r, name, f in failures:
            b.add(_failure_row(r, name, f, "failed", name_of(r)), "failure rows")
        b.add("")
        for r, name, f in failures:
            if f is None:
                continue
            text = ""
            if f.traceback:
                text = clean_output(f.traceback)
            elif f.output_tail:
                text = clean_output(f.output_tail)
            elif f.message:
                text = clean_output(f.message)
            if not text.strip():
                continue
            text = tail(text.strip("\n"), max_chars=3000, max_lines=40)
            block = (f"<details><summary>{_code_html(name_of(r))} · {_code_html(name)}"
                     f"{f' · {failure_place(f)}' if f.cell_number is not None else ''}</summary>\n\n"
                     f"{_fence(text)}\n\n</details>")
            b.add(block, "tracebacks")
        b.add("")

    # -- every notebook: duration and GPU peak memory ------------------------------------------
    if any(r.notebooks for r in results):
        b.add("### Notebooks")
        b.add("")
        for r in results:
            if not r.notebooks:
                continue
            rows = [_nb_row(nb, mark_of(history, r, nb.path)) for nb in r.notebooks]
            block = (f"<details{' open' if r.status == 'failed' else ''}><summary>{_code_html(name_of(r))}: "
                     f"{html.escape(fmt_counts(r.notebook_counts(), 'notebook'))}</summary>\n\n"
                     "| Notebook | Result | Duration | GPU peak memory | GPU util (mean) | Note |\n"
                     "|---|---|--:|--:|--:|---|\n"
                     + "\n".join(rows) + "\n\n</details>")
            b.add(block, "notebook tables")
        b.add("")

    if b.cut:
        what = ", ".join(f"{n} {k}" for k, n in b.cut.items())
        b.parts.append(
            f"> ✂️ Cut to stay within {max_chars:,} characters: {what} left out. "
            "Everything is in index.html and junit.xml in the results artifact."
        )
    text = "\n".join(b.parts).rstrip("\n") + "\n"
    return text[:max_chars]


def _short_counts(c: dict[str, int]) -> str:
    """For a table cell: ``3 passed, 1 skipped``; ``—`` when there are none."""
    return md(count_parts(c)) if c.get("total") else "—"


def mark_of(history: HistoryMarks | None, r: EntryResult, path: str) -> Mark | None:
    """What the history says of notebook ``path`` of entry ``r`` (None without a history or a mark)."""
    if not history:
        return None
    return history.of(r.entry.runtime, r.entry.machine, r.entry.id, path)


def _nb_row(nb: NotebookResult, mark: Mark | None = None) -> str:
    note = ""
    if nb.status == "failed" and nb.failure is not None:
        note = describe_failure(nb.failure, max_chars=160)
    elif nb.status == "skipped":
        note = nb.skip_reason or ""
    elif nb.rerun is not None:
        note = f"rerun {nb.rerun.status}"
    if mark is not None:
        note = "; ".join([*(["⚠ " + w for w in mark.words()]), *([note] if note else [])])
    return (f"| {_code(nb.path)} | {_status(nb.status)} | {fmt_duration(nb.duration_s)} | "
            f"{fmt_mib(nb.gpu_peak_memory_mib)} | {fmt_pct(nb.gpu_mean_utilization_pct)} | {md(note)} |")

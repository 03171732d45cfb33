"""Reports: pure functions of the result model (``results.json``).

Per entry (:func:`write_entry_reports`): ``junit.xml``, and per notebook ``output.html``
(nbconvert, self-contained) and ``output.pdf`` (headless Chromium, no TeX); the paths
go into ``NotebookResult.files`` (``html``, ``pdf``) and results.json is rewritten.

Per run (:func:`write_run_reports`): the merged ``junit.xml``, ``summary.md`` and the
``index.html`` dashboard, against a baseline also ``comparison.json``; in GitHub Actions
also ``::error`` annotations, the job summary and the step outputs ``passed``, ``failed``,
``skipped``, ``total`` and ``results-dir`` (against a baseline also ``newly-failing``,
``fixed``, ``regressions`` and ``improvements``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..compare import Comparison, load_baseline
from ..compare import to_dict as compare_to_dict
from ..history import HistoryMarks
from ..errors import EXIT_FAILED, EXIT_INFRA, EXIT_OK, ConfigError, first_line
from ..files import inside, write_text_atomic
from ..phases import phase
from ..results import RESULTS_FILE, EntryResult, load_results, write_json_atomic  # noqa: F401
from .collect import ShownEntry, artifact_layout, collect, load_entry_result, load_record, read_plan
from .dashboard import DashboardEntry, in_matrix_order, name_entries, render_dashboard
from .junit import junit_for, write_junit
from .pdf import PdfError, PdfPrinter, find_chromium
from .summary import SUMMARY_MAX_CHARS, md, render_summary
from .untrusted import read_text, refuse_links
from .text import describe_failure, failure_details, fmt_counts

__all__ = [
    "PdfPrinter",
    "PdfError",
    "RunReport",
    "find_chromium",
    "write_entry_reports",
    "write_run_reports",
    "load_entry",
    "read_plan",
    "load_record",
    "artifact_layout",
    "ShownEntry",
]

JUNIT_FILE = "junit.xml"
COMPARISON_FILE = "comparison.json"
HTML_FILE = "output.html"
PDF_FILE = "output.pdf"


class _EchoLogger:
    """Lines on stderr; in GitHub Actions never read as a workflow command (the text may come
    from a results.json, so from the code under test)."""

    def info(self, msg: str) -> None:
        import click

        from ..github.workflow import safe_log

        click.echo(safe_log(f"gpu-runner: {msg}"), err=True)

    def warning(self, msg: str) -> None:
        import click

        from ..github.workflow import safe_log

        click.echo(safe_log(f"gpu-runner: warning: {msg}"), err=True)


def _logger(logger: Any) -> Any:
    return logger if logger is not None else _EchoLogger()


def load_entry(entry_dir: Path) -> EntryResult:
    """results.json of an entry folder; a file this version cannot read is a ConfigError naming it."""
    return load_entry_result(entry_dir)


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def write_entry_reports(
    entry_dir: Path,
    *,
    pdf: bool = True,
    browser: PdfPrinter | None = None,
    logger: Any = None,
    overwrite: bool = True,
    stop: Any = None,
    dashboard: Path | None = None,
    made: dict[str, Any] | None = None,
    setup_errors_said: bool = False,
) -> EntryResult:
    """junit.xml for the entry; output.html (and output.pdf) next to each executed notebook.

    ``browser``: a warm :class:`PdfPrinter` shared by the run; without one, a printer is
    started for this entry (only when there is HTML to print) and closed at the end.
    ``overwrite=False`` keeps reports that are already there (``gpu-runner report``
    on downloaded artifacts). A notebook whose output.ipynb is missing or unreadable gets
    no HTML and one warning; the others go on. ``stop``: the command's
    :class:`~gpu_runner.execute.stop.Stop`; once a signal came no PDF is printed, once a
    second came no more HTML is rendered either. ``made``: the pages a
    :class:`~gpu_runner.report.html.BackgroundHtml` made during the run, by notebook path; each is
    kept when it is still what this model makes of the same executed notebook, else made again.
    ``setup_errors_said``: the run has said why each notebook with a setup error could not be
    read; its missing HTML is not warned about again. Returns the (updated) model.
    """
    def stopped() -> bool:
        return stop is not None and stop.requested

    def hurried() -> bool:
        return stop is not None and stop.hurry.is_set()

    log = _logger(logger)
    entry_dir = Path(entry_dir)
    result = load_entry(entry_dir)
    changed = False
    # each notebook page links back to the dashboard: by default the one beside the entry folder
    dashboard = Path(dashboard) if dashboard is not None else entry_dir.parent / "index.html"

    junit_path = entry_dir / JUNIT_FILE
    if overwrite or not junit_path.exists():
        try:
            write_junit(junit_for([result]), junit_path)
        except OSError as e:
            log.warning(f"{junit_path}: could not write: {e}")

    to_print: list[tuple[Any, Path, Path]] = []
    html_phase = phase("html")
    for nb in result.notebooks:
        if hurried():
            break
        try:  # the schema keeps paths relative and free of '..'; no link on the way, nor at the pages
            nb_dir = inside(entry_dir, nb.dir)
            for f in (nb_dir / HTML_FILE, nb_dir / PDF_FILE):
                refuse_links(f, entry_dir)
        except ValueError as e:
            log.warning(f"{entry_dir.name}: {nb.path}: no HTML: {e}")
            for kind in ("html", "pdf"):
                changed = nb.files.pop(kind, None) is not None or changed
            continue
        html_path = nb_dir / HTML_FILE
        have_html = html_path.exists() and not overwrite
        back = _rel(dashboard, html_path.parent)
        if have_html:
            _relink(html_path, back, log)
        if not have_html and made and nb.path in made:
            have_html = _still_right(made[nb.path], result, nb, nb_dir, html_path, back)
        if not have_html:
            ipynb_rel = nb.files.get("ipynb") or f"{nb.dir}/output.ipynb"
            try:
                ipynb = inside(entry_dir, ipynb_rel)
                refuse_links(ipynb, entry_dir)
            except ValueError as e:
                log.warning(f"{entry_dir.name}: {nb.path}: no HTML: {e}")
                continue
            if not ipynb.is_file():
                if nb.status != "skipped":
                    log.warning(f"{entry_dir.name}: {nb.path}: no executed notebook ({ipynb_rel}); no HTML for it")
                if nb.files.pop("html", None) is not None:
                    changed = True
                continue
            try:
                from .html import read_notebook, renderer

                with html_phase:
                    node = read_notebook(ipynb)
                    body = renderer().render(node, result, nb, resource_dir=str(ipynb.parent), back=back)
                    write_text_atomic(html_path, body)
                have_html = True
            except Exception as e:  # noqa: BLE001 - one broken notebook must not stop the others
                if not (setup_errors_said and nb.failure is not None and nb.failure.kind == "setup_error"):
                    log.warning(f"{entry_dir.name}: {nb.path}: no HTML ({ipynb_rel} is not a readable notebook: "
                                f"{first_line(e)})")
                if nb.files.pop("html", None) is not None:
                    changed = True
                continue
        rel = _rel(html_path, entry_dir)
        if nb.files.get("html") != rel:
            nb.files["html"] = rel
            changed = True
        pdf_path = nb_dir / PDF_FILE
        if pdf and (overwrite or not pdf_path.exists()):
            to_print.append((nb, html_path, pdf_path))
        elif pdf_path.exists() and nb.files.get("pdf") != _rel(pdf_path, entry_dir):
            nb.files["pdf"] = _rel(pdf_path, entry_dir)
            changed = True

    if to_print and not stopped():
        printer = browser if browser is not None else PdfPrinter(logger=logger)
        try:
            if printer.start():
                for nb, html_path, pdf_path in to_print:
                    if stopped():
                        break
                    try:
                        printer.print_pdf(html_path, pdf_path)
                    except (PdfError, OSError) as e:
                        log.warning(f"{entry_dir.name}: {nb.path}: no PDF: {e}")
                        continue
                    nb.files["pdf"] = _rel(pdf_path, entry_dir)
                    changed = True
        finally:
            if browser is None:
                printer.close()

    if changed:
        try:
            result.write(entry_dir)
        except OSError as e:
            log.warning(f"{entry_dir / RESULTS_FILE}: could not record the HTML/PDF paths: {e}")
    return result


@dataclass
class RunReport:
    """What :func:`write_run_reports` found and wrote."""

    entries: int = 0
    entries_failed: int = 0
    entries_not_run: int = 0
    passed: int = 0
    """Notebooks that passed (and likewise failed, skipped, total); the checks are counted apart."""
    failed: int = 0
    skipped: int = 0
    total: int = 0
    checks_passed: int = 0
    checks_failed: int = 0
    checks_skipped: int = 0
    checks_total: int = 0
    junit_path: Path | None = None
    summary_path: Path | None = None
    dashboard_path: Path | None = None
    annotations: int = 0
    annotations_left_out: int = 0
    unreadable: list[str] = field(default_factory=list)
    """Entry folders whose results.json (or try records) could not be read (each also warned about)."""
    comparison: Comparison | None = None
    """Against the baseline, when one was given."""

    @property
    def ok(self) -> bool:
        return (self.failed == 0 and self.checks_failed == 0 and self.entries_failed == 0 and not self.unreadable
                and not self.entries_not_run)

    @property
    def exit_code(self) -> int:
        """1 when a notebook or check failed, else 3 when a planned entry did not run, else 0."""
        if self.failed or self.checks_failed or self.entries_failed or self.unreadable:
            return EXIT_FAILED
        return EXIT_INFRA if self.entries_not_run else EXIT_OK

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.junit_path, self.summary_path, self.dashboard_path) if p is not None]


def write_run_reports(entry_dirs: list[Path], out_dir: Path, *, logger: Any = None,
                      baseline: Path | None = None, records: list[Path] | None = None,
                      plan: list[dict[str, Any]] | None = None, notes: list[str] | None = None,
                      history: HistoryMarks | None = None, actions: bool | None = None) -> RunReport:
    """Merged junit.xml, summary.md and index.html in ``out_dir`` from the entries' results.json;
    in GitHub Actions also annotations, the job summary and the step outputs.

    ``baseline``: a previous run's results folder; every report then says what changed
    against it (see :mod:`gpu_runner.compare`), and ``comparison.json`` records it.
    ``records`` (the tries' ``gpu-runner-try.json``) and ``plan`` (the plan's entry items) make
    every planned entry show once: a preempted try's results beside its retry's, and an entry
    with no results as ``not_run`` with its reason (:mod:`gpu_runner.report.collect`).
    ``notes``: lines the dashboard and the summary show first (the matrix entries a local run left out).
    ``history``: what earlier runs say (:func:`gpu_runner.history.read_history`, read by the caller):
    each notebook of this run it calls flaky, slower or hungrier is marked in summary.md, the
    dashboard and junit.xml; without one (or with no marks) the reports are as they were.
    ``actions``: whether to write the annotations, job summary and step outputs (default: when in
    GitHub Actions); False for the reports of another run (``gpu-runner fetch``/``history`` rebuilding
    an earlier run's dashboard), which are no part of this job's."""
    log = _logger(logger)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = RunReport()
    found = collect(entry_dirs, records=records or [], plan=plan, warn=log.warning, artifacts=plan is not None)
    report.unreadable = found.unreadable
    # every report lists them so (the plan's order is the matrix's), each with a distinct name
    entries = name_entries(found.entries if plan is not None else in_matrix_order(found.entries))
    results = [d.result for d in entries]
    for d in entries:  # each entry's results.json carries what its VMs cost, as the stop jobs recorded it
        if d.result.cost is not None and d.entry_dir is not None:
            try:
                d.result.write(d.entry_dir)
            except OSError as e:
                log.warning(f"{d.entry_dir / RESULTS_FILE}: could not record the cost: {e}")

    report.entries = len(results)
    report.entries_failed = sum(1 for r in results if r.status == "failed")
    report.entries_not_run = sum(1 for r in results if r.status == "not_run")
    for r in results:
        n, c = r.notebook_counts(), r.check_counts()
        report.passed += n["passed"]
        report.failed += n["failed"]
        report.skipped += n["skipped"]
        report.total += n["total"]
        report.checks_passed += c["passed"]
        report.checks_failed += c["failed"]
        report.checks_skipped += c["skipped"]
        report.checks_total += c["total"]

    comparison = None
    if baseline is not None:
        comparison = load_baseline(Path(baseline), results, warn=log.warning)
        report.comparison = comparison
        if comparison.available:
            c = comparison.counts()
            log.info(f"against the baseline ({comparison.source.description}): {c['newly_failing']} newly failing, "
                     f"{c['fixed']} fixed, {c['regressions']} regression(s), {c['improvements']} improvement(s)")
        elif comparison.nothing_in_common:
            log.warning(f"against the baseline ({comparison.source.description}): nothing could be compared: "
                        f"{comparison.reason}")
        else:
            log.info(f"no baseline to compare with: {comparison.reason}; the report goes on without one")
        write_json_atomic(out_dir / COMPARISON_FILE, compare_to_dict(comparison))

    if history is not None:
        marked = sum(1 for r in results for nb in r.notebooks
                     if history.of(r.entry.runtime, r.entry.machine, r.entry.id, nb.path) is not None)
        log.info(f"history of {history.runs} earlier run(s): {marked} notebook(s) of this run marked flaky, "
                 "slower or hungrier")
    report.junit_path = write_junit(junit_for(results, comparison=comparison, history=history), out_dir / JUNIT_FILE)
    summary = render_summary(results, max_chars=SUMMARY_MAX_CHARS, comparison=comparison,
                             names=[d.name for d in entries], history=history)
    if notes:  # under the summary's heading
        head, sep, rest = summary.partition("\n\n")
        summary = head + sep + "".join(f"> ℹ️ {md(n)}\n\n" for n in notes) + rest
    if report.unreadable:
        summary += (f"\n> ⚠️ {len(report.unreadable)} file(s) could not be read: "
                    + ", ".join(f"`{Path(u).name}`" for u in report.unreadable[:20]) + "\n")
    report.summary_path = out_dir / "summary.md"
    write_text_atomic(report.summary_path, summary)
    report.dashboard_path = out_dir / "index.html"
    write_text_atomic(report.dashboard_path, render_dashboard(entries, out_dir, comparison=comparison, notes=notes,
                                                                   history=history))

    from ..github import workflow

    if workflow.in_github_actions() if actions is None else actions:
        annotations = _annotations(results)
        report.annotations, report.annotations_left_out = workflow.annotate_errors(annotations)
        if report.annotations_left_out:
            log.info(f"annotated {report.annotations} of {len(annotations)} failures; "
                     f"{report.annotations_left_out} left out (GitHub keeps 10 error annotations per step)")
        try:
            workflow.append_step_summary(summary)
        except OSError as e:
            log.warning(f"could not append to GITHUB_STEP_SUMMARY: {e}")
        try:
            workflow.set_outputs({
                "passed": report.passed, "failed": report.failed, "skipped": report.skipped,
                "total": report.total, "checks-passed": report.checks_passed, "checks-failed": report.checks_failed,
                "checks-skipped": report.checks_skipped, "checks-total": report.checks_total,
                "not-run": report.entries_not_run, "results-dir": str(out_dir),
                **({k.replace("_", "-"): v for k, v in comparison.counts().items()}
                   if comparison is not None and comparison.available else {}),
            })
        except OSError as e:
            log.warning(f"could not write GITHUB_OUTPUT: {e}")
    nbs = {"passed": report.passed, "failed": report.failed, "skipped": report.skipped, "total": report.total}
    chs = {"passed": report.checks_passed, "failed": report.checks_failed, "skipped": report.checks_skipped,
           "total": report.checks_total}
    not_run = f", {report.entries_not_run} not run" if report.entries_not_run else ""
    log.info(
        f"reports: {fmt_counts(nbs, 'notebook', always=('passed', 'failed'))}; "
        f"{fmt_counts(chs, 'system check', always=('passed', 'failed'))}; on "
        f"{report.entries} entr{'y' if report.entries == 1 else 'ies'}{not_run}; dashboard {report.dashboard_path}"
    )
    return report


def _annotations(results: list[EntryResult]) -> list:
    """One ``::error`` per failing notebook (at its cell's line) and per failing check."""
    from ..github.workflow import Annotation

    out = []
    for r in results:
        if r.status == "not_run":
            out.append(Annotation(message=r.reason or "not run", title=f"{r.entry.id}: not run"))
        for ch in r.checks:
            if ch.status == "failed":
                msg = failure_details(ch.failure) if ch.failure else (ch.summary or "check failed")
                out.append(Annotation(message=msg, title=f"{r.entry.id}: system check {ch.name} failed"))
        for nb in r.notebooks:
            if nb.status != "failed":
                continue
            f = nb.failure
            if f is None:
                out.append(Annotation(message="failed", title=f"{r.entry.id}: {nb.path} failed", file=nb.path))
                continue
            head = describe_failure(f, max_chars=200)
            out.append(Annotation(
                message=_bounded_details(f),
                title=f"{r.entry.id}: {nb.path}: {head}",
                file=nb.path,
                line=f.source_line,
            ))
    return out


def _bounded_details(f: Any) -> str:
    text = failure_details(f)
    if len(text) > 3500:
        text = text[:800] + "\n[...]\n" + text[-2600:]
    return text


def _relink(html_path: Path, back: str, log: Any) -> None:
    """A page rendered where the dashboard was elsewhere (a run job's artifact, now merged):
    point its link back at this dashboard."""
    from .html import BACK_LINK_RE

    try:
        text = read_text(html_path)
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError; so is a symbolic link
        return
    import html as _html

    new = BACK_LINK_RE.sub(lambda m: m.group(1) + _html.escape(back, quote=True) + m.group(2), text, count=1)
    if new != text:
        try:
            write_text_atomic(html_path, new)
        except OSError as e:
            log.warning(f"{html_path}: could not update its link to the dashboard: {e}")


def _still_right(rendered: Any, result: EntryResult, nb: Any, nb_dir: Path, html_path: Path, back: str) -> bool:
    """A page made during the run is this model's page of the executed notebook now there."""
    from .html import file_signature, page_parts, parts_digest

    if (nb.files.get("ipynb") or f"{nb.dir}/output.ipynb") != f"{nb.dir}/output.ipynb":
        return False  # the reports would read another file than the one the page was made from
    return (file_signature(nb_dir / "output.ipynb") == rendered.ipynb
            and file_signature(html_path) == rendered.html
            and parts_digest(page_parts(result, nb, back)) == rendered.parts)

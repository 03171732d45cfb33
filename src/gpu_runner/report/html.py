"""One executed notebook -> one self-contained ``output.html`` (nbconvert, lab template).

Self-contained means nothing is fetched when the page opens: nbconvert's lab template
loads require.js, MathJax, Mermaid and the widget manager from CDNs; this template drops
those blocks (CSS is already inlined by nbconvert, images are data URIs). What that costs:
LaTeX in Markdown stays as its TeX source, Mermaid diagrams as their text, and widgets
show their text fallback. The banner at the top comes from the result model (never from
the notebook): status, the failure in one line and a link to the failing cell, whose
anchor is ``#cell-N`` (N counted from 1, as a reader counts cells).
"""

from __future__ import annotations

import html
import re
import threading
from dataclasses import dataclass
from typing import Any

import nbformat
from jinja2 import DictLoader

from ..results import EntryResult, NotebookResult
from .chart import timeline_svg
from .text import KIND_LABELS, clean_output, describe_failure, failure_place, file_lines, fmt_duration, fmt_mib, fmt_pct, tail

TEMPLATE_NAME = "gpu_runner_notebook.html.j2"

_TEMPLATE = r"""
{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}
<meta name="generator" content="gpu-runner">
<style type="text/css">{{ resources.gpu_runner.css }}</style>
{%- endblock extra_css -%}
{%- block body_header -%}
{{ super() }}
{{ resources.gpu_runner.banner }}
{{ resources.gpu_runner.chart }}
{%- endblock body_header -%}
{%- block any_cell -%}
{{ resources.gpu_runner.cell_meta.get(loop.index, '') }}
<a id="cell-{{ loop.index }}" class="gr-anchor{% if loop.index == resources.gpu_runner.failed_cell %} gr-failed-cell{% endif %}" aria-hidden="true"></a>
{{ super() }}
{%- endblock any_cell -%}
"""

_CSS = """
.gr-banner { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 12px 0 20px;
  padding: 12px 16px; border-radius: 8px; border: 1px solid; color: #1f2328; }
.gr-banner a { color: inherit; font-weight: 600; }
.gr-banner .gr-title { font-size: 16px; font-weight: 700; margin: 0 0 4px; }
.gr-banner .gr-meta { color: #59636e; font-size: 13px; }
.gr-banner .gr-back { font-weight: 400; }
.gr-banner pre { white-space: pre-wrap; word-break: break-word; max-height: 24em; overflow: auto;
  background: rgba(255,255,255,.6); padding: 8px; border-radius: 6px; font-size: 12px; }
.gr-kind { font-size: 11px; font-weight: 700; text-transform: uppercase; letter-spacing: .03em; vertical-align: middle;
  border: 1px solid #cf222e; color: #cf222e; border-radius: 4px; padding: 0 5px; margin-left: 6px; }
.gr-passed { background: #dafbe1; border-color: #4ac26b; }
.gr-failed { background: #ffebe9; border-color: #ff8182; }
.gr-skipped { background: #f6f8fa; border-color: #d1d9e0; }
.gr-anchor { display: block; position: relative; top: -8px; visibility: hidden; }
.gr-cell-meta + .gr-anchor { top: -30px; }
.gr-cell-meta { font: 12px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #59636e;
  text-align: right; margin: 10px 0 2px; font-variant-numeric: tabular-nums; }
.gr-cell-meta b { color: #1f2328; font-weight: 600; }
.gr-cell-meta .gr-bad { color: #cf222e; font-weight: 600; }
.gr-timeline { font: 13px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 0 20px;
  padding: 10px 12px; border: 1px solid #d1d9e0; border-radius: 8px; background: #ffffff; color: #1f2328;
  break-inside: avoid; }
.gr-timeline .gr-title { font-weight: 700; margin: 0 0 6px; }
.gr-timeline svg { width: 100%; height: auto; display: block; }
.gr-timeline .gr-meta { color: #59636e; font-size: 12px; margin: 6px 0 0; }
/* the outline is drawn outside the cell: the cell moves down by as much, clear of its header line */
.gr-failed-cell + .jp-Cell { outline: 3px solid #cf222e; outline-offset: 4px; border-radius: 2px; margin-top: 10px; }
@media print {
  /* JupyterLab prints each output as an unbreakable table (break-inside: avoid-page, overflow hidden):
     a traceback taller than what is left of a page went whole to the next, leaving the rest empty.
     An output breaks across pages like any text, its prompt beside it. */
  html body .jp-OutputArea-child { display: flex !important; break-inside: auto !important; overflow: visible !important; }
  html body .jp-OutputArea-child > .jp-OutputArea-output { flex: 1 1 auto; min-width: 0; overflow: visible !important; }
  html body .jp-OutputArea-output pre { overflow: visible !important; }
  /* wrap code, outputs and tracebacks at whitespace; break a token inside only when it cannot fit on
     a line of its own (JupyterLab's own CSS says break-all: anywhere, even inside short words) */
  html body .jp-InputArea-editor pre, html body .jp-OutputArea-output pre, html body .highlight pre,
  html body .gr-banner pre {
    white-space: pre-wrap !important; word-break: normal !important; overflow-wrap: anywhere !important; }
  .jp-OutputArea-output img { max-width: 100%; height: auto; }
  .gr-banner pre { max-height: none; overflow: visible; }
}
"""


BACK_LINK_RE = re.compile(r'(<a class="gr-back" href=")[^"]*(")')


def back_link_html(href: str | None) -> str:
    """The way back to the dashboard (``href`` relative to the page): at the end of the banner's
    "where" line (no line of its own: the page below keeps its place)."""
    if not href:
        return ""
    return f'<a class="gr-back" href="{html.escape(href, quote=True)}">← All results (dashboard)</a>'


def banner_html(result: EntryResult, nb: NotebookResult, back: str | None = None) -> str:
    """The box at the top of the page: what happened, from the model."""
    e = html.escape
    entry = result.entry
    where = [f"entry <b>{e(entry.id)}</b>"]
    if entry.runtime:
        where.append(f"runtime {e(entry.runtime)}")
    if entry.machine:
        where.append(f"machine {e(entry.machine)}")
    gpu = result.facts.get("gpu_model")
    if gpu:
        where.append(f"GPU {e(str(gpu))}")
    if entry.ran_locally and entry.provider != "local":
        where.append("ran locally")
    meta = [f"duration {fmt_duration(nb.duration_s)}"]
    if nb.gpu_peak_memory_mib is not None:
        meta.append(f"GPU peak memory {fmt_mib(nb.gpu_peak_memory_mib)}")
    if nb.gpu_mean_utilization_pct is not None:
        meta.append(f"GPU utilisation {fmt_pct(nb.gpu_mean_utilization_pct)} on average")
    if nb.peak_rss_mib is not None:
        meta.append(f"kernel peak RSS {fmt_mib(nb.peak_rss_mib)}")
    if nb.kernel:
        meta.append(f"kernel {e(nb.kernel)}")
    if nb.rerun is not None:
        meta.append(f"rerun {e(nb.rerun.status)}")
    if back:
        where.append(back_link_html(back))
    meta_html = f'<div class="gr-meta">{" · ".join(where)}<br>{" · ".join(meta)}</div>'
    if nb.status == "failed":
        f = nb.failure
        if f is None:
            title, body = "✗ Failed", ""
        else:
            kind = KIND_LABELS.get(f.kind, f.kind)
            title = f'✗ Failed: {e(describe_failure(f))} <span class="gr-kind">{e(kind)}</span>'
            body = ""
            if f.cell_number is not None:
                in_files = file_lines(f)
                body += (f'<p><a href="#cell-{f.cell_number}">Go to {e(failure_place(f))}</a>, where it failed'
                         f'{f" ({e(in_files)})" if in_files else ""}.</p>')
            if f.kind in ("timeout", "kernel_died", "setup_error") and f.message:
                body += f"<p>{e(clean_output(f.message))}</p>"
            out = clean_output(f.output_tail)
            if out.strip() and f.kind in ("timeout", "kernel_died"):
                body += (
                    "<details open><summary>Last output before it stopped</summary>"
                    f"<pre>{e(tail(out, max_chars=8000, max_lines=60))}</pre></details>"
                )
        return (
            f'<section class="gr-banner gr-failed" role="alert" aria-label="Notebook result">'
            f'<p class="gr-title">{title}</p>{body}{meta_html}</section>'
        )
    if nb.status == "skipped":
        reason = e(nb.skip_reason or "")
        return (
            f'<section class="gr-banner gr-skipped" aria-label="Notebook result">'
            f'<p class="gr-title">⤼ Skipped{": " + reason if reason else ""}</p>{meta_html}</section>'
        )
    return (
        f'<section class="gr-banner gr-passed" aria-label="Notebook result">'
        f'<p class="gr-title">✓ Passed</p>{meta_html}</section>'
    )


def chart_html(nb: NotebookResult) -> str:
    """The timeline chart under the banner: memory and utilisation over time, cells marked."""
    svg = timeline_svg(nb.timeline, cells=nb.cells)
    if not svg:
        return ""
    tl = nb.timeline
    scope = getattr(tl, "gpu_scope", None)
    if scope == "process":
        note = "GPU memory: what this notebook's kernel processes hold, as NVML lists them."
    elif scope == "device":
        note = ("GPU memory: everything in use on the GPUs while it ran (NVML cannot tell processes apart here, "
                "as in a container with its own PID namespace).")
    else:
        note = "No GPU was sampled: the chart shows the kernel's resident memory."
    note += (" Bands are the cells, numbered as this page counts them (′: the rerun); each point is the peak "
             "memory and the mean utilisation over its stretch of time.")
    return (f'<section class="gr-timeline" aria-label="Memory and GPU utilisation over time">'
            f'<p class="gr-title">Memory and GPU utilisation over time</p>{svg}'
            f'<p class="gr-meta">{html.escape(note)}</p></section>')


def cell_meta_html(nb: NotebookResult) -> dict[int, str]:
    """For each code cell (keyed by its number, as the anchors count): its time and peaks."""
    out: dict[int, str] = {}
    for c in nb.cells or []:
        if not isinstance(getattr(c, "index", None), int):
            continue
        n = c.index + 1
        parts = [f"cell {n}"]
        if c.status == "not_run":
            parts.append("not run")
        elif c.status == "skipped":
            parts.append("skipped")
        else:
            if c.status == "failed":
                parts.append('<span class="gr-bad">failed</span>')
            if isinstance(c.duration_s, (int, float)):
                parts.append(f"<b>{fmt_duration(c.duration_s)}</b>")
            if isinstance(c.gpu_peak_memory_mib, (int, float)):
                parts.append(f"GPU peak <b>{fmt_mib(c.gpu_peak_memory_mib)}</b>")
            if isinstance(c.peak_rss_mib, (int, float)):
                parts.append(f"RSS peak {fmt_mib(c.peak_rss_mib)}")
        out[n] = f'<div class="gr-cell-meta">{" · ".join(parts)}</div>'
    return out


MAX_EMBEDDED_IMAGE_BYTES = 20 * 1024 * 1024


def _exporter_class() -> Any:
    """nbconvert's HTMLExporter, whose Markdown images are embedded only from the notebook's own
    output folder: a path that leaves it (absolute, ``..``, a symlink out) or names no image
    stays a plain link, so a notebook cannot copy a file of the machine into its HTML."""
    import mimetypes
    import os

    from jinja2 import pass_context
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    class ContainedRenderer(IPythonRenderer):  # type: ignore[misc]
        def _src_to_base64(self, src: str) -> str | None:
            if not self.path or "://" in src or src.startswith(("data:", "attachment:")):
                return None
            base = os.path.realpath(self.path)
            target = os.path.realpath(os.path.join(base, src))
            if os.path.commonpath([base, target]) != base or not os.path.isfile(target):
                return None
            if target != os.path.normpath(os.path.join(base, src)):
                return None  # reached through a symbolic link, even one that stays inside
            mime, _ = mimetypes.guess_type(target)
            if not mime or not mime.startswith("image/") or os.path.getsize(target) > MAX_EMBEDDED_IMAGE_BYTES:
                return None
            import base64

            from .untrusted import read_bytes

            try:
                data = read_bytes(target)
            except (OSError, ValueError):
                return None
            return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"

    class ContainedHTMLExporter(HTMLExporter):  # type: ignore[misc]
        @pass_context
        def markdown2html(self, context: Any, source: str) -> str:
            cell = context.get("cell", {})
            path = context.get("resources", {}).get("metadata", {}).get("path", "")
            renderer = ContainedRenderer(
                escape=False, attachments=cell.get("attachments", {}), embed_images=self.embed_images, path=path,
                anchor_link_text=self.anchor_link_text,
                exclude_anchor_links=getattr(self, "exclude_anchor_links", False),
                **getattr(self, "lexer_options", {}))
            return MarkdownWithMath(renderer=renderer).render(source)

    return ContainedHTMLExporter


class NotebookHtmlRenderer:
    """An nbconvert HTMLExporter with the offline template; build once, render many."""

    def __init__(self) -> None:
        HTMLExporter = _exporter_class()  # noqa: N806

        self._exporter = HTMLExporter(
            template_name="lab",
            template_file=TEMPLATE_NAME,
            extra_loaders=[DictLoader({TEMPLATE_NAME: _TEMPLATE})],
            embed_images=True,
        )

    def render(self, nb_node: Any, result: EntryResult, nb: NotebookResult, *, resource_dir: str = "",
               back: str | None = None) -> str:
        """``back``: the dashboard's address relative to the page (a link at the top)."""
        return self.render_parts(nb_node, page_parts(result, nb, back), resource_dir=resource_dir)

    def render_parts(self, nb_node: Any, parts: dict[str, Any], *, resource_dir: str = "") -> str:
        """The page from the notebook and :func:`page_parts` (what the model puts on it)."""
        resources = {
            "metadata": {"name": parts["name"], "path": resource_dir},
            "gpu_runner": {"banner": parts["banner"], "failed_cell": parts["failed_cell"], "css": _CSS,
                           "chart": parts["chart"], "cell_meta": parts["cell_meta"]},
        }
        body, _ = self._exporter.from_notebook_node(nb_node, resources=resources)
        return body


def page_parts(result: EntryResult, nb: NotebookResult, back: str | None = None) -> dict[str, Any]:
    """Everything the result model (and ``back``, the dashboard's address relative to the page)
    puts on a notebook's page: two pages made from the same executed notebook and equal parts are
    the same page."""
    return {
        "name": nb.path,
        "banner": banner_html(result, nb, back),
        "failed_cell": nb.failure.cell_number if (nb.status == "failed" and nb.failure) else None,
        "chart": chart_html(nb),
        "cell_meta": cell_meta_html(nb),
    }


def parts_digest(parts: dict[str, Any]) -> str:
    """A short fingerprint of :func:`page_parts` (a run keeps one per page, not the parts)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_signature(path: Any) -> tuple[int, int] | None:
    """(size, modification time in ns) of a file, or None when it cannot be read."""
    import os

    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


@dataclass
class Rendered:
    """A page :class:`BackgroundHtml` made: from what, so the reports can tell it is still right."""

    parts: str
    """:func:`parts_digest` of the model's parts of the page."""
    ipynb: tuple[int, int] | None
    """:func:`file_signature` of the executed notebook it was made from."""
    html: tuple[int, int] | None
    """:func:`file_signature` of the page as written."""


class BackgroundHtml:
    """Each notebook's ``output.html``, made as soon as the notebook has ended, in one thread with
    one exporter for the whole run: the pages are made while other notebooks execute, not one
    after another once the last has ended.

    The run's reports (:func:`gpu_runner.report.write_entry_reports`) get :meth:`made` and keep a
    page only when the model's parts for it are still the same, and the executed notebook and
    the page are the files it was made from and wrote; any other page is made there as before.
    A page that could not be made here (any error) is simply not listed."""

    def __init__(self, write_lock: Any = None) -> None:
        """``write_lock``: held while a page is written (the run's write lock, which its hard exit
        takes for good: no page is written into a folder already put in place or cleared)."""
        from concurrent.futures import ThreadPoolExecutor

        self._write_lock = write_lock if write_lock is not None else threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu-runner-html")
        self._lock = threading.Lock()
        self._pending: dict[str, list[Any]] = {}
        self._made: dict[str, dict[str, Rendered]] = {}
        self._closed = False

    def warm(self) -> None:
        """Build the exporter and make one small page in memory, now: nbconvert's import, its
        templates, lexers and selectors cost about half a second once, better spent while the run
        starts (waiting for its first kernels) than after its first notebook.

        IPython is imported first, here, in the caller's thread: this thread wants it (its
        lexers) while the run looks up its kernels (jupyter_client asks IPython for its folder),
        and one package imported by two threads at once can fail in importlib (a ``KeyError``
        for the package, seen under load). Once imported, it costs the run nothing more."""
        import IPython  # noqa: F401 - see above

        with self._lock:
            if not self._closed:
                self._pool.submit(self._warm)

    @staticmethod
    def _warm() -> None:
        from ..phases import phase
        from ..results import CellResult, EntryInfo

        with phase("html"):
            try:
                nb = nbformat.v4.new_notebook(cells=[
                    nbformat.v4.new_markdown_cell("# gpu-runner\n*warming up*"),
                    nbformat.v4.new_code_cell("print('x')", execution_count=1, outputs=[
                        nbformat.v4.new_output("stream", name="stdout", text="x\n")]),
                ])
                nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
                entry = EntryResult(entry=EntryInfo(id="warm"), status="passed", started_at="", finished_at="",
                                    duration_s=0.0)
                page = NotebookResult(path="warm.ipynb", dir="warm", status="passed", duration_s=0.0,
                                      cells=[CellResult(index=1, status="passed", duration_s=0.0)])
                renderer().render(nb, entry, page)
            except Exception:  # noqa: BLE001 - only a head start: the first real page pays instead
                pass

    def submit(self, group: str, html_path: Any, ipynb_text: str, result: EntryResult, nb: NotebookResult,
               *, resource_dir: str = "", back: str | None = None) -> None:
        """Make ``html_path`` from the executed notebook's text (as written to its output.ipynb,
        next to ``html_path``) and the model; ``group`` names the entry it belongs to."""
        with self._lock:
            if self._closed:
                return
            fut = self._pool.submit(self._make, group, html_path, ipynb_text, result, nb, resource_dir, back)
            self._pending.setdefault(group, []).append(fut)

    def _make(self, group: str, html_path: Any, ipynb_text: str, result: EntryResult, nb: NotebookResult,
              resource_dir: str, back: str | None) -> None:
        import os

        from ..files import write_text_atomic
        from ..phases import phase

        with phase("html"):
            try:
                ipynb = file_signature(os.path.join(os.path.dirname(html_path), "output.ipynb"))
                node = nbformat.reads(ipynb_text, as_version=4)
                parts = page_parts(result, nb, back)
                body = renderer().render_parts(node, parts, resource_dir=resource_dir)
                with self._write_lock:
                    write_text_atomic(html_path, body)
            except Exception:  # noqa: BLE001 - the reports make this page themselves, and say why if they cannot
                return
        with self._lock:
            self._made.setdefault(group, {})[nb.path] = Rendered(parts_digest(parts), ipynb, file_signature(html_path))

    def wait(self, group: str, *, cancel: bool = False) -> None:
        """Until every page of ``group`` submitted so far is made (or given up); ``cancel``: those
        not begun are dropped (the run was interrupted: the reports make what is missing)."""
        from concurrent.futures import wait

        with self._lock:
            pending = self._pending.pop(group, [])
        if cancel:
            for f in pending:
                f.cancel()
        wait(pending)

    def made(self, group: str) -> dict[str, Rendered]:
        """The pages of ``group`` made so far, by notebook path, with what they were made from;
        where the group's folder moved since (staging to final), pass the final one to the reports."""
        with self._lock:
            return dict(self._made.get(group, {}))

    def close(self, *, cancel: bool = False) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=cancel)


_local = threading.local()


def renderer() -> NotebookHtmlRenderer:
    """One renderer per thread (building the exporter loads templates; it is not shared)."""
    r = getattr(_local, "renderer", None)
    if r is None:
        r = _local.renderer = NotebookHtmlRenderer()
    return r


def read_notebook(path) -> Any:
    """nbformat v4 node; raises on a file that is not a notebook."""
    from .untrusted import read_text

    return nbformat.reads(read_text(path), as_version=4)  # never through a symbolic link

"""The history page (``history.html``): a grid of notebook x machine across runs, each cell its pass
rate, its marks (flaky, slower, more memory) and a sparkline of its wall time with one dot per run
coloured by outcome. Every text on it comes from results of code under test: all of it is escaped,
the page runs no script and loads nothing (its Content-Security-Policy says so)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from ..files import write_text_atomic
from .dashboard import href

HISTORY_HTML = "history.html"
HISTORY_JSON = "history.json"
LINK_MARK = "<!-- gpu-runner-history -->"
COLOURS = {"passed": "#1a7f37", "failed": "#cf222e", "skipped": "#8c959f", "not_run": "#9a6700",
           "unknown": "#8c959f"}
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1f2328}
table{border-collapse:collapse}th,td{border:1px solid #d0d7de;padding:.35rem .5rem;vertical-align:top}
th{background:#f6f8fa;text-align:left}td.empty{background:#fafafa}
.rate{font-weight:600}.mark{display:inline-block;border-radius:.6rem;padding:0 .4rem;margin:.1rem .1rem 0 0;
font-size:12px;background:#fff8c5;border:1px solid #d4a72c}.mark.flaky{background:#ffebe9;border-color:#cf222e}
.trend{color:#57606a;font-size:12px}svg{display:block;margin-top:.2rem}
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def sparkline(points: list[dict[str, Any]], *, width: int = 120, height: int = 28) -> str:
    """An inline SVG: wall time as a line, one dot per run in its outcome's colour (oldest left)."""
    if not points:
        return ""
    vals = [p.get("duration_s") for p in points]
    nums = [v for v in vals if isinstance(v, (int, float))]
    top = max(nums) if nums else 1.0
    top = top if top > 0 else 1.0
    step = (width - 6) / max(1, len(points) - 1)

    def y(v: float) -> float:
        return height - 3 - (height - 6) * (v / top)

    line = " ".join(f"{3 + i * step:.1f},{y(v):.1f}" for i, v in enumerate(vals) if isinstance(v, (int, float)))
    dots = []
    for i, p in enumerate(points):
        v = p.get("duration_s")
        cy = y(v) if isinstance(v, (int, float)) else height - 3
        title = f"run #{p.get('run_number')} ({(p.get('head_sha') or '')[:7]}): {p.get('status')}" + (
            f", {v:.1f} s" if isinstance(v, (int, float)) else "")
        dots.append(f'<circle cx="{3 + i * step:.1f}" cy="{cy:.1f}" r="2.2" '
                    f'fill="{COLOURS.get(str(p.get("status")), "#8c959f")}"><title>{_e(title)}</title></circle>')
    poly = f'<polyline points="{line}" fill="none" stroke="#57606a" stroke-width="1"/>' if line else ""
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="wall time over {len(points)} runs">{poly}{"".join(dots)}</svg>')


def _trend(name: str, ratio: Any) -> str:
    if not isinstance(ratio, (int, float)):
        return ""
    return f'<div class="trend">{_e(name)} {(ratio - 1) * 100:+.0f}%</div>'


def render_history(history: dict[str, Any], out_dir: Path) -> str:
    """The whole history.html text, for a page that will live in ``out_dir``."""
    cells = {(c["notebook"], c["machine"]): c for c in history["cells"]}
    runs = history["runs"]
    flaky = sum(1 for c in history["cells"] if "flaky" in c["marks"])
    slower = sum(1 for c in history["cells"] if "slower" in c["marks"])
    head = ["<th>notebook</th>"] + [f"<th>{_e(m)}</th>" for m in history["machines"]]
    rows = []
    for nb in history["notebooks"]:
        tds = [f"<th>{_e(nb)}</th>"]
        for m in history["machines"]:
            c = cells.get((nb, m))
            if c is None:
                tds.append('<td class="empty"></td>')
                continue
            rate = "–" if c["pass_rate"] is None else f"{c['pass_rate'] * 100:.0f}%"
            marks = "".join(f'<span class="mark {_e(k.replace(" ", "-"))}"'
                            + (f' title="{_e(c["flaky_why"])}"' if k == "flaky" and c.get("flaky_why") else "")
                            + f">{_e(k)}</span>" for k in c["marks"])
            tds.append(f'<td><span class="rate">{rate}</span> <span class="trend">({c["passed"]}/'
                       f'{c["passed"] + c["failed"]})</span> {marks}{sparkline(c["points"])}'
                       f'{_trend("time", c.get("time_trend"))}{_trend("GPU memory", c.get("memory_trend"))}</td>')
        rows.append("<tr>" + "".join(tds) + "</tr>")
    items = []
    for r in reversed(runs):
        label = f"run #{r.get('run_number')} · {r.get('head_branch') or ''} · {(r.get('head_sha') or '')[:7]} · " \
                f"{r.get('created_at') or ''} · {r.get('conclusion') or ''}"
        links = []
        if r.get("folder") and r.get("dashboard"):
            links.append(f'<a href="{_e(href(Path(r["folder"]) / r["dashboard"], out_dir))}">dashboard</a>')
        if isinstance(r.get("html_url"), str) and r["html_url"].startswith("https://"):
            links.append(f'<a href="{_e(r["html_url"])}" rel="noopener noreferrer">on GitHub</a>')
        items.append(f"<li>{_e(label)} {' · '.join(links)}</li>")
    return "\n".join([
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>GPU notebooks: history of {len(runs)} runs</title><style>{STYLE}</style></head><body>",
        f"<h1>History of {len(runs)} run{'s' if len(runs) != 1 else ''}</h1>",
        f"<p>{len(history['cells'])} notebook × machine cells; {flaky} flaky, {slower} slower "
        f"(by {history['threshold'] * 100:.0f}% or more, newer half against older half).</p>",
        '<table id="grid"><thead><tr>' + "".join(head) + "</tr></thead><tbody>",
        *rows,
        "</tbody></table>",
        "<h2>Runs</h2><ul>", *items, "</ul>",
        "<footer>Made by gpu-runner from the runs' results, as `gpu-runner fetch` cached them.</footer>",
        "</body></html>", ""])


def write_history_page(history: dict[str, Any], out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    path = out_dir / HISTORY_HTML
    write_text_atomic(path, render_history(history, out_dir))
    return path


def link_from_dashboard(dashboard: Path, page: Path) -> bool:
    """Put a link to the history page into a run's dashboard (once; before its footer)."""
    try:
        text = dashboard.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if LINK_MARK in text or "<footer>" not in text:
        return False
    rel = "/".join(Path(os.path.relpath(page, dashboard.parent)).as_posix().split("/"))
    link = f'{LINK_MARK}<p class="history"><a href="{_e(rel)}">History across runs</a></p>\n'
    write_text_atomic(dashboard, text.replace("<footer>", link + "<footer>", 1))
    return True

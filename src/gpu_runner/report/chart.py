"""Charts of a notebook's timeline as inline SVG: no library, no script, nothing fetched.

:func:`timeline_svg` draws memory (the notebook's GPU memory, each GPU's memory in use,
the kernel's resident memory) over one panel and each GPU's utilisation under it, sharing
the time axis, with the cells as alternating bands: each band's number is the cell's number
as a reader counts it, and hovering a band names its time and peaks. :func:`sparkline_svg`
is the small version for the dashboard. Colours are attributes, not CSS, so the chart
prints as it shows (the PDF is Chromium printing the HTML).

A timeline comes from results.json, which may arrive from anywhere (a downloaded
artifact): every number is checked, every series cut to the shortest, and only numbers
and fixed words reach the markup.
"""

from __future__ import annotations

import html
import math
from typing import Any

from .text import fmt_duration, fmt_mib

MAX_DRAWN_POINTS = 2000
"""A timeline from gpu-runner has at most a few hundred points; more is cut, never drawn."""
MAX_TIME_S = 30 * 86400.0
"""Times beyond this (a month) are not a notebook's: such a point is dropped."""
MEMORY_COLOUR = "#0969da"
RSS_COLOUR = "#8250df"
UTIL_COLOURS = ("#bf3989", "#1a7f37", "#9a6700", "#cf222e", "#0550ae", "#6e7781", "#953800", "#116329")
DEVICE_COLOURS = ("#54aeff", "#4ac26b", "#d4a72c", "#ff8182", "#80ccff", "#afb8c1", "#fb8f44", "#6fdd8b")


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _series(values: Any, n: int) -> list[float | None]:
    if not isinstance(values, list):
        return [None] * n
    out = [_num(v) for v in values[:n]]
    return out + [None] * (n - len(out))


class _Data:
    """The parts of a Timeline a chart draws, checked."""

    def __init__(self, tl: Any) -> None:
        t = getattr(tl, "t_s", None)
        raw_t = t[:MAX_DRAWN_POINTS] if isinstance(t, list) else []
        keep = [i for i, v in enumerate(raw_t) if _num(v) is not None and 0 <= _num(v) <= MAX_TIME_S]
        self.t = [float(raw_t[i]) for i in keep]
        n = len(raw_t)

        def pick(values: Any) -> list[float | None]:
            s = _series(values, n)
            return [s[i] if s[i] is None or s[i] >= 0 else None for i in keep]

        self.rss = pick(getattr(tl, "rss_mib", None))
        gm = getattr(tl, "gpu_memory_mib", None)
        self.gpu = pick(gm) if isinstance(gm, list) else None
        scope = getattr(tl, "gpu_scope", None)
        self.scope = scope if scope in ("process", "device") else None
        self.devices: list[tuple[int, list[float | None], list[float | None]]] = []
        devices = getattr(tl, "devices", None)
        for d in (devices if isinstance(devices, list) else [])[:16]:
            idx = getattr(d, "index", None)
            if not isinstance(idx, int) or isinstance(idx, bool):
                continue
            util = [None if u is None else min(u, 100.0) for u in pick(getattr(d, "utilization_pct", None))]
            self.devices.append((idx, pick(getattr(d, "memory_used_mib", None)), util))
        self.cells: list[tuple[int, float, float, bool]] = []
        cells = getattr(tl, "cells", None)
        for c in (cells if isinstance(cells, list) else [])[:MAX_DRAWN_POINTS]:
            idx, a, b = getattr(c, "index", None), _num(getattr(c, "start_s", None)), _num(getattr(c, "end_s", None))
            if (isinstance(idx, int) and not isinstance(idx, bool) and a is not None and b is not None
                    and 0 <= a <= b <= MAX_TIME_S):
                self.cells.append((idx, a, b, getattr(c, "rerun", False) is True))
        self.end = max([*self.t, *(c[2] for c in self.cells), 0.0])
        interval = _num(getattr(tl, "interval_s", None))
        self.interval = interval if interval is not None and 0 < interval <= MAX_TIME_S else 0.0
        """Point ``i`` stands for ``t[i]`` to ``t[i] + interval`` (see :class:`~gpu_runner.results.Timeline`)."""

    @property
    def empty(self) -> bool:
        return not self.t

    def memory_max(self) -> float:
        values = [v for s in self.memory_series() for v in s[2] if v is not None]
        return max(values, default=0.0)

    def memory_series(self) -> list[tuple[str, str, list[float | None], str]]:
        """(label, colour, values, dash) of each memory line, the notebook's own first."""
        out: list[tuple[str, str, list[float | None], str]] = []
        if self.gpu is not None and any(v is not None for v in self.gpu):
            label = "GPU memory of this notebook's processes" if self.scope == "process" else "GPU memory in use"
            out.append((label, MEMORY_COLOUR, self.gpu, ""))
        if self.scope == "process" or len(self.devices) > 1:
            for k, (idx, mem, _) in enumerate(self.devices):
                if any(v is not None for v in mem):
                    out.append((f"GPU {idx}: memory in use, all processes", DEVICE_COLOURS[k % len(DEVICE_COLOURS)], mem, "4 3"))
        if any(v is not None for v in self.rss):
            out.append(("kernel RSS (host memory)", RSS_COLOUR, self.rss, "6 3"))
        return out


def _nice_ceiling(x: float) -> float:
    if x <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(x))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * exp >= x:
            return m * exp
    return 10 * exp


def _time_ticks(end: float) -> list[float]:
    """At most 7 round times from 0 to ``end``."""
    if not 0 < end <= MAX_TIME_S:
        return [0.0]
    step = next((s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
                             14400, 21600, 43200, 86400) if end / s <= 6), _nice_ceiling(end / 6))
    return [i * step for i in range(int(end // step) + 1)][:8]


def _fmt_t(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        m, s = divmod(int(round(seconds)), 60)
        return f"{m} m" if not s else f"{m} m {s} s"
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h} h" if not rest else f"{h} h {rest // 60} m"


def _path(ts: list[float], values: list[float | None], x: Any, y: Any, *, span: float = 0.0,
          end: float | None = None, min_px: float = 0.0) -> str:
    """An SVG path through the points, broken where a value is missing. A point alone (no
    neighbour with a value: a notebook shorter than the sampling interval has one point) is
    drawn over the stretch it stands for, ``span`` seconds clipped to ``end``, at least
    ``min_px`` wide: a path of one point draws nothing."""
    parts: list[str] = []
    n = len(values)
    for i, (t, v) in enumerate(zip(ts, values)):
        if v is None:
            continue
        pen_down = i > 0 and values[i - 1] is not None
        alone = not pen_down and (i + 1 >= n or values[i + 1] is None)
        parts.append(f"{'L' if pen_down else 'M'}{x(t):.1f} {y(v):.1f}")
        if alone and min_px > 0:
            t2 = t + span if end is None else min(t + span, end)
            x1, x2 = x(t), x(t2)
            if x2 - x1 < min_px:
                x1, x2 = x1 - min_px / 2, x1 + min_px / 2
                parts[-1] = f"M{x1:.1f} {y(v):.1f}"
            parts.append(f"L{x2:.1f} {y(v):.1f}")
    return "".join(parts)


def _peak_text(values: list[float | None]) -> str:
    top = max((v for v in values if v is not None), default=None)
    return fmt_mib(top) if top is not None else "—"


def timeline_svg(tl: Any, *, cells: Any = None, width: int = 1000, title: str = "Memory and GPU utilisation") -> str:
    """The chart of one notebook, or "" when there is nothing to draw.

    ``cells``: the notebook's :class:`~gpu_runner.results.CellResult` list, for the peaks
    named on hover."""
    d = _Data(tl)
    if d.empty:
        return ""
    left, right, top = 74, 16, 30
    mem_h, gap, util_h = 120, 34, 56
    has_util = any(any(u is not None for u in util) for _, _, util in d.devices)
    plot_w = width - left - right
    mem_top = top
    util_top = mem_top + mem_h + gap
    axis_y = (util_top + util_h) if has_util else (mem_top + mem_h)
    mem_series = d.memory_series()
    legend = [(label, colour, dash) for label, colour, _, dash in mem_series]
    if has_util:
        legend += [(f"GPU {idx} utilisation", UTIL_COLOURS[k % len(UTIL_COLOURS)], "")
                   for k, (idx, _, util) in enumerate(d.devices) if any(u is not None for u in util)]
    legend_rows = (len(legend) + 1) // 2
    height = axis_y + 22 + 16 * legend_rows + 6
    end = d.end if d.end > 0 else 1.0
    y_max = _nice_ceiling(d.memory_max())

    def x(t: float) -> float:
        return left + plot_w * min(max(t / end, 0.0), 1.0)

    def y_mem(v: float) -> float:
        return mem_top + mem_h * (1 - min(v / y_max, 1.0))

    def y_util(v: float) -> float:
        return util_top + util_h * (1 - min(v / 100.0, 1.0))

    by_index = {}
    for c in cells if isinstance(cells, list) else []:
        idx = getattr(c, "index", None)
        if isinstance(idx, int):
            by_index[idx] = c

    peak_gpu = _peak_text(d.gpu) if d.gpu is not None else None
    summary = f"{title} over {fmt_duration(d.end)}: " + (
        f"GPU memory peak {peak_gpu}, " if peak_gpu else "no GPU sampled, ") + f"kernel RSS peak {_peak_text(d.rss)}"
    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gr-chart" role="img" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" '
        f'font-size="11" aria-label="{e(summary)}"><title>{e(summary)}</title>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]

    def gridlines(panel_top: int, panel_h: int, label: Any) -> None:
        """A panel's lines at 0, half and full scale, each labelled on the left."""
        for frac in (0.0, 0.5, 1.0):
            yy = panel_top + panel_h * (1 - frac)
            out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{width - right}" y2="{yy:.1f}" stroke="#d1d9e0" '
                       'stroke-width="0.6"/>')
            out.append(f'<text x="{left - 4}" y="{yy + 3.5:.1f}" text-anchor="end" fill="#59636e">'
                       f'{e(label(frac))}</text>')

    # cells: alternating bands with their numbers
    last_label_x = -1e9
    for k, (idx, a, b, rerun) in enumerate(d.cells):
        xa, xb = x(a), x(b)
        cr = by_index.get(idx)
        tip = [f"cell {idx + 1}{' (rerun)' if rerun else ''}: {fmt_duration(b - a)}"]
        if cr is not None:
            if _num(getattr(cr, "gpu_peak_memory_mib", None)) is not None:
                tip.append(f"GPU peak {fmt_mib(cr.gpu_peak_memory_mib)}")
            if _num(getattr(cr, "peak_rss_mib", None)) is not None:
                tip.append(f"RSS peak {fmt_mib(cr.peak_rss_mib)}")
        fill = "#f0f3f6" if k % 2 == 0 else "#ffffff"
        band_h = axis_y - mem_top
        out.append(f'<g class="gr-cell"><title>{e(", ".join(tip))}</title>'
                   f'<rect x="{xa:.1f}" y="{mem_top}" width="{max(xb - xa, 0.5):.1f}" height="{band_h}" '
                   f'fill="{fill}"/>'
                   f'<line x1="{xa:.1f}" y1="{mem_top - 4}" x2="{xa:.1f}" y2="{axis_y}" stroke="#8c959f" '
                   f'stroke-width="0.6" stroke-dasharray="2 2"/></g>')
        if xa - last_label_x >= 16:
            out.append(f'<text x="{xa + 2:.1f}" y="{mem_top - 6}" fill="#59636e" font-size="9">'
                       f'{idx + 1}{"′" if rerun else ""}</text>')
            last_label_x = xa
    # memory panel
    out.append(f'<text x="4" y="{mem_top - 14}" fill="#1f2328" font-weight="600">Memory</text>')
    gridlines(mem_top, mem_h, lambda frac: fmt_mib(y_max * frac))
    for label, colour, values, dash in reversed(mem_series):
        p = _path(d.t, values, x, y_mem, span=d.interval, end=end, min_px=8)
        if p:
            width_px = 2.5 if colour == MEMORY_COLOUR else 2
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<path d="{p}" fill="none" stroke="{colour}" stroke-width="{width_px}" '
                       f'stroke-linejoin="round" vector-effect="non-scaling-stroke"{dash_attr}/>')
    if mem_series:  # the first series' peak, marked and named: what is known even of a single point
        _, colour, values, _ = mem_series[0]
        k = max((i for i, v in enumerate(values) if v is not None), key=lambda i: values[i], default=None)
        if k is not None:
            px, py = x(d.t[k]), y_mem(values[k])
            anchor = "end" if px > left + plot_w * 0.8 else "start"
            dx = -6 if anchor == "end" else 6
            out.append(f'<circle class="gr-peak" cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{colour}"/>'
                       f'<text x="{px + dx:.1f}" y="{max(py - 6, mem_top + 9):.1f}" text-anchor="{anchor}" '
                       f'fill="#1f2328">peak {e(fmt_mib(values[k]))}</text>')
    # utilisation panel
    if has_util:
        out.append(f'<text x="4" y="{util_top - 12}" fill="#1f2328" font-weight="600">GPU utilisation</text>')
        gridlines(util_top, util_h, lambda frac: f"{int(frac * 100)} %")
        for k, (_, _, util) in enumerate(d.devices):
            p = _path(d.t, util, x, y_util, span=d.interval, end=end, min_px=8)
            if p:
                out.append(f'<path d="{p}" fill="none" stroke="{UTIL_COLOURS[k % len(UTIL_COLOURS)]}" '
                           'stroke-width="2" stroke-linejoin="round" vector-effect="non-scaling-stroke"/>')
    # time axis
    out.append(f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" y2="{axis_y}" stroke="#8c959f" '
               'stroke-width="0.8"/>')
    for tick in _time_ticks(end):
        xx = x(tick)
        out.append(f'<line x1="{xx:.1f}" y1="{axis_y}" x2="{xx:.1f}" y2="{axis_y + 4}" stroke="#8c959f"/>'
                   f'<text x="{xx:.1f}" y="{axis_y + 15}" text-anchor="middle" fill="#59636e">{e(_fmt_t(tick))}</text>')
    # legend
    ly = axis_y + 34
    col_w = (width - left) / 2
    for k, (label, colour, dash) in enumerate(legend):
        lx = left + col_w * (k % 2)
        yy = ly + 16 * (k // 2)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{lx:.1f}" y1="{yy - 4}" x2="{lx + 18:.1f}" y2="{yy - 4}" stroke="{colour}" '
                   f'stroke-width="2"{dash_attr}/><text x="{lx + 23:.1f}" y="{yy}" fill="#1f2328">{e(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def sparkline_svg(tl: Any, *, width: int = 120, height: int = 26) -> str:
    """The notebook's memory over time (its GPU memory, else the kernel's RSS) as a filled
    line, with GPU utilisation as a thin line over it; "" when there is nothing to draw."""
    d = _Data(tl)
    if len(set(d.t)) < 2:  # one point is no line
        return ""
    gpu = d.gpu if d.gpu is not None and any(v is not None for v in d.gpu) else None
    values = gpu if gpu is not None else d.rss
    top_v = max((v for v in values if v is not None), default=None)
    if top_v is None:
        return ""
    end = d.end if d.end > 0 else 1.0
    y_max = top_v if top_v > 0 else 1.0
    pad = 2

    def x(t: float) -> float:
        return pad + (width - 2 * pad) * min(max(t / end, 0.0), 1.0)

    def y(v: float) -> float:
        return pad + (height - 2 * pad) * (1 - min(v / y_max, 1.0))

    def y_util(v: float) -> float:
        return pad + (height - 2 * pad) * (1 - min(v / 100.0, 1.0))

    what = "GPU memory" if gpu is not None else "kernel RSS"
    tip = f"{what} over {fmt_duration(d.end)}, peak {fmt_mib(top_v)}"
    util = [None] * len(d.t)
    if d.devices:
        cols = list(zip(*(u for _, _, u in d.devices)))
        util = [None if all(v is None for v in col) else sum(v for v in col if v is not None) /
                sum(1 for v in col if v is not None) for col in cols]
        seen = [u for u in util if u is not None]
        if seen:
            tip += f"; GPU utilisation mean {sum(seen) / len(seen):.0f} %"
    line = _path(d.t, values, x, y)
    first = next((i for i, v in enumerate(values) if v is not None), None)
    last = next((i for i in range(len(values) - 1, -1, -1) if values[i] is not None), None)
    area = ""
    if first is not None and last is not None and all(v is not None for v in values[first:last + 1]):
        area = (f'<path d="{line}L{x(d.t[last]):.1f} {height - pad}L{x(d.t[first]):.1f} {height - pad}Z" '
                f'fill="{MEMORY_COLOUR}" fill-opacity="0.18" stroke="none"/>')
    colour = MEMORY_COLOUR if gpu is not None else RSS_COLOUR
    util_path = _path(d.t, util, x, y_util)
    e = html.escape
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="spark" role="img" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" aria-label="{e(tip)}"><title>{e(tip)}</title>{area}'
            f'<path d="{line}" fill="none" stroke="{colour}" stroke-width="1.4" stroke-linejoin="round"/>'
            + (f'<path d="{util_path}" fill="none" stroke="{UTIL_COLOURS[0]}" stroke-width="0.9" '
               'stroke-opacity="0.85"/>' if util_path else "")
            + "</svg>")

"""Timelines end to end: a real ``gpu-runner run`` whose notebook plays a known GPU series through
the NVML stand-in (report_fixtures/gpu_series.py). The series and the per-cell peaks land in
metrics.json and results.json, and every report shows them: the notebook's HTML (chart and cell
headers), the dashboard (sparkline), summary.md and JUnit (columns and properties). The browser
half (the chart drawn in Chromium and in the PDF) is in test_report_browser.py."""

from __future__ import annotations

import json
import re

import pytest
from junitparser import JUnitXml
from report_fixtures.gpu_series import (
    LAST_CELL,
    LAST_MIB,
    OTHER_MIB,
    PLAYED_PROCESS_MIB,
    PROCESS_MIB,
    UTIL,
)

from gpu_runner.results import load_results

pytestmark = pytest.mark.slow

NB_DIR = "local/notebooks/nbs/gpu_series"


def test_metrics_json_keeps_the_played_series_and_each_cells_peak(gpu_series_results):
    m = json.loads((gpu_series_results / NB_DIR / "metrics.json").read_text())
    assert m["gpu"]["scope"] == "process" and m["gpu"]["peak_memory_mib"] == max(PROCESS_MIB.values())
    assert min(UTIL.values()) <= m["gpu"]["mean_utilization_pct"] <= max(UTIL.values())
    peaks = {c["index"]: c["gpu_peak_memory_mib"] for c in m["cells"]}
    for index, mib in PROCESS_MIB.items():
        assert peaks[index] == mib, (index, peaks)
    assert peaks[LAST_CELL] in (LAST_MIB, PROCESS_MIB[4])  # a sample just before the cell freed may see 8,000
    assert all(c["peak_rss_mib"] > 0 for c in m["cells"])

    tl = m["timeline"]
    n = len(tl["t_s"])
    assert 5 <= n <= 240 and tl["t_s"] == sorted(tl["t_s"])
    assert all(len(s) == n for s in (tl["rss_mib"], tl["gpu_memory_mib"]))
    assert tl["gpu_scope"] == "process"
    # only played values, in the order the cells played them (a point is its stretch's peak: a value
    # held briefly may hide behind the next, higher one, but never a peak behind a lower one)
    series = tl["gpu_memory_mib"]
    assert set(series) <= PLAYED_PROCESS_MIB and max(series) == PROCESS_MIB[4]
    i6, i8 = series.index(PROCESS_MIB[3]), series.index(PROCESS_MIB[4])
    assert i6 < i8 and set(series[:i6]) <= {0.0, PROCESS_MIB[1], PROCESS_MIB[2]}
    assert set(series[i8:]) <= {PROCESS_MIB[4], LAST_MIB} and series[-1] == LAST_MIB
    dev0, dev1 = tl["devices"]
    assert (dev0["index"], dev1["index"]) == (0, 1)
    assert max(dev0["memory_used_mib"]) == max(PROCESS_MIB.values()) + OTHER_MIB
    assert set(dev1["memory_used_mib"]) == {200.0} and set(dev1["utilization_pct"]) == {0.0}
    assert all(0 <= u <= max(UTIL.values()) for u in dev0["utilization_pct"])  # each point: its stretch's mean
    assert max(dev0["utilization_pct"]) > UTIL[2]
    assert [c["index"] for c in tl["cells"]] == [1, 2, 3, 4, 5]
    for a, b in zip(tl["cells"], tl["cells"][1:]):
        assert a["start_s"] <= a["end_s"] <= b["start_s"]
    assert tl["cells"][2]["end_s"] - tl["cells"][2]["start_s"] >= 0.6


def test_results_json_carries_the_same_timeline_and_cell_peaks(gpu_series_results):
    r = load_results(gpu_series_results / "local")
    (nb,) = r.notebooks
    m = json.loads((gpu_series_results / NB_DIR / "metrics.json").read_text())
    assert nb.timeline.t_s == m["timeline"]["t_s"] and nb.timeline.gpu_memory_mib == m["timeline"]["gpu_memory_mib"]
    assert [d.index for d in nb.timeline.devices] == [0, 1]
    assert {c.index: c.gpu_peak_memory_mib for c in nb.cells if c.index in PROCESS_MIB} == PROCESS_MIB
    assert nb.gpu_peak_memory_mib == 8000.0 and nb.gpu_mean_utilization_pct is not None
    assert r.facts["gpu_count"] == 2 and r.facts["gpu_model"] == "NVIDIA L4"


def test_the_notebook_html_has_the_chart_and_each_cells_peak_in_its_header(gpu_series_results):
    page = (gpu_series_results / NB_DIR / "output.html").read_text()
    chart = re.search(r'<svg[^>]*class="gr-chart".*?</svg>', page, re.S).group(0)
    assert "GPU memory peak 8,000 MiB" in chart  # its accessible name says what it shows
    assert chart.count('class="gr-cell"') == 5 and "GPU 0 utilisation" in chart and "GPU 1 utilisation" in chart
    assert "<script" not in chart and "href" not in chart
    for index, mib in PROCESS_MIB.items():
        header = re.search(rf'<div class="gr-cell-meta">cell {index + 1} · [^<]*<b>[^<]*</b>(.*?)</div>', page).group(0)
        assert f"GPU peak <b>{mib:,.0f} MiB</b>" in header, header
    # the header sits before the cell's anchor, so a link to #cell-N still marks the cell itself
    assert re.search(r'<div class="gr-cell-meta">cell 4 [^\n]*</div>\n<a [^>]*id="cell-4"', page)
    assert "GPU utilisation" in page and "on average" in page


def test_the_dashboard_has_a_sparkline_and_the_summary_and_junit_the_figures(gpu_series_results):
    index = (gpu_series_results / "index.html").read_text()
    row = re.search(r'<tr class="s-passed"><th scope="row"><code>nbs/gpu_series.ipynb</code>.*?</tr>', index).group(0)
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="spark"' in row and "peak 8,000 MiB" in row
    util = load_results(gpu_series_results / "local").notebooks[0].gpu_mean_utilization_pct
    assert f"{util:.0f} %" in row

    summary = (gpu_series_results / "summary.md").read_text()
    assert "| Notebook | Result | Duration | GPU peak memory | GPU util (mean) | Note |" in summary
    assert re.search(rf"\| <code>nbs/gpu\\_series.ipynb</code> \| ✅ passed \| [^|]+ \| 8,000 MiB \| {util:.0f} % \|",
                     summary), summary

    for path in (gpu_series_results / "junit.xml", gpu_series_results / "local" / "junit.xml"):
        (case,) = [c for s in JUnitXml.fromfile(str(path)) for c in s]
        props = {p.get("name"): p.get("value") for p in case._elem.iter("property")}
        assert props["gpu_peak_memory_mib"] == "8000"
        assert float(props["gpu_mean_utilization_pct"]) == util and float(props["peak_rss_mib"]) > 0
        assert case._elem[0].tag == "properties"  # first, as pytest writes them


def test_a_hostile_timeline_draws_only_numbers_or_nothing():
    """results.json may come from a downloaded artifact: nothing in it reaches the markup but numbers."""
    from gpu_runner.report.chart import sparkline_svg, timeline_svg
    from gpu_runner.results import CellResult, CellSpan, DeviceSeries, Timeline

    evil = '"><script>alert(1)</script>'
    tl = Timeline(
        t_s=[0, 0.5, "1", float("nan"), 2.0, -3, 1e308] + [3.0] * 5000,
        rss_mib=[10, evil, None, 30, float("inf"), 5],
        interval_s=evil, gpu_scope=evil, gpu_memory_mib=[1, 2, 3],
        devices=[DeviceSeries(index=evil, memory_used_mib=[1]), DeviceSeries(index=0, utilization_pct=[50, 500, -1])],
        cells=[CellSpan(index=evil, start_s=0, end_s=1), CellSpan(index=1, start_s=2, end_s=1),
               CellSpan(index=2, start_s=0, end_s=evil), CellSpan(index=3, start_s=0.1, end_s=0.4)],
    )
    for svg in (timeline_svg(tl, cells=[CellResult(index=3, status=evil, gpu_peak_memory_mib=evil)]), sparkline_svg(tl)):
        assert svg.startswith("<svg") and "<script" not in svg and "alert" not in svg
    assert timeline_svg(tl).count('class="gr-cell"') == 1  # only the well-formed span
    assert timeline_svg(Timeline()) == "" and sparkline_svg(None) == "" and timeline_svg("nonsense") == ""

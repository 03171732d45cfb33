"""The comparison with a baseline as a pure function of two result models: thresholds, status
changes, one-sided entries and notebooks, a hostile baseline folder, and what the reports say
(summary, dashboard, JUnit) — no kernels here; tests/test_baseline.py runs it end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from junitparser import JUnitXml

from gpu_runner.cli import main
from gpu_runner.compare import compare, judge, load_baseline, thresholds_of
from gpu_runner.config import DEFAULT_REGRESSION
from gpu_runner.report import write_run_reports
from gpu_runner.report.deltas import fmt_change
from gpu_runner.report.junit import junit_for
from gpu_runner.report.summary import render_summary
from gpu_runner.results import EntryInfo, EntryResult, Failure, NotebookResult

TH = dict(DEFAULT_REGRESSION)


def nb(path, status="passed", duration=10.0, gpu=1000.0, rss=500.0, **kw):
    return NotebookResult(path=path, dir=f"notebooks/{path}", status=status, duration_s=duration,
                          gpu_peak_memory_mib=gpu, peak_rss_mib=rss, **kw)


def entry(eid, *notebooks, options=None):
    return EntryResult(entry=EntryInfo(id=eid, runtime=eid.split("--")[0], machine="l4"), status="passed",
                       started_at="", finished_at="", duration_s=1.0, notebooks=list(notebooks),
                       options=options or {})


@pytest.mark.parametrize("metric,before,after,verdict", [
    ("duration_s", 10.0, 16.0, "regressed"),    # +60 % and +6 s
    ("duration_s", 10.0, 14.9, "unchanged"),    # +49 % but under 5 s
    ("duration_s", 100.0, 119.0, "unchanged"),  # +19 s but under 20 %
    ("duration_s", 100.0, 121.0, "regressed"),
    ("duration_s", 100.0, 79.0, "improved"),
    ("gpu_peak_memory_mib", 1000.0, 1300.0, "regressed"),   # +30 % and +300 MiB
    ("gpu_peak_memory_mib", 1000.0, 1200.0, "unchanged"),   # +20 % but under 256 MiB
    ("gpu_peak_memory_mib", 10000.0, 10900.0, "unchanged"),  # +900 MiB but under 10 %
    ("peak_rss_mib", 4000.0, 3000.0, "improved"),
    ("peak_rss_mib", None, 3000.0, "unknown"),
])
def test_a_regression_exceeds_both_thresholds(metric, before, after, verdict):
    assert judge(metric, before, after, TH).verdict == verdict


def test_thresholds_come_from_the_entry_else_the_defaults():
    e = entry("a", options={"regression": {"time_percent": 50, "time_min": "nonsense", "memory_min_mib": -3}})
    assert thresholds_of(e) == {**TH, "time_percent": 50.0}
    assert thresholds_of(entry("b", options={"regression": "x"})) == TH
    assert thresholds_of(entry("c")) == TH


def test_status_changes_and_figures_only_for_notebooks_that_passed_twice():
    base = [entry("rt--l4", nb("a"), nb("b"), nb("c", status="failed"), nb("d", status="failed"), nb("e"), nb("gone")),
            entry("old--l4", nb("x"))]
    now = [entry("rt--l4", nb("a", duration=20.0, gpu=3000.0),
                 nb("b", status="failed", duration=1.0, failure=Failure(kind="error", message="m", ename="E")),
                 nb("c"), nb("d", status="failed"), nb("e", status="skipped"), nb("fresh")),
           entry("new--l4", nb("y"))]
    comp = compare(now, base)
    a = comp.notebook("rt--l4", "a")
    assert [(d.metric, d.verdict) for d in a.deltas] == [("duration_s", "regressed"),
                                                         ("gpu_peak_memory_mib", "regressed"),
                                                         ("peak_rss_mib", "unchanged")]
    assert comp.notebook("rt--l4", "b").change == "newly_failing" and comp.notebook("rt--l4", "b").deltas == []
    assert comp.notebook("rt--l4", "c").change == "fixed"
    assert comp.notebook("rt--l4", "d").change == "still_failing"
    assert comp.notebook("rt--l4", "e").change == "newly_skipped"
    assert [(e.entry_id, n.path) for e, n in comp.notebooks_only_in("new")] == [("rt--l4", "fresh")]
    assert [(e.entry_id, n.path) for e, n in comp.notebooks_only_in("gone")] == [("rt--l4", "gone")]
    assert [e.entry_id for e in comp.entries_only_in("new")] == ["new--l4"]
    assert [e.entry_id for e in comp.entries_only_in("gone")] == ["old--l4"]
    assert comp.counts() == {"newly_failing": 1, "fixed": 1, "regressions": 2, "improvements": 0}


def test_the_reports_say_it_in_order_with_arrows():
    base = [entry("rt--l4", nb("a"), nb("b"), nb("c", status="failed"), nb("d", duration=100.0)), entry("old--l4")]
    now = [entry("rt--l4", nb("a", duration=20.0, gpu=3000.0), nb("b", status="failed"), nb("c"),
                 nb("d", duration=50.0)), entry("new--l4", nb("y"))]
    comp = compare(now, base)
    text = render_summary(now, comparison=comp)
    sec = text[text.index("### Compared with the baseline"):]
    assert sec.index("Newly failing (1)") < sec.index("Fixed (1)") < sec.index("Regressions (2)") \
        < sec.index("Improvements (1)") < sec.index("Not compared")
    assert "| <code>rt--l4</code> | <code>a</code> | wall time | 10.0 s | 20.0 s | ▲ +10.0 s (+100 %) |" in sec
    assert "| <code>rt--l4</code> | <code>d</code> | wall time | 1 m 40 s | 50.0 s | ▼ −50.0 s (−50 %) |" in sec
    assert "entry new--l4 is not in the baseline (its 1 notebook(s) are new)" in sec
    assert "entry old--l4 was in the baseline but is not in this run" in sec
    xml = junit_for(now, comparison=comp)
    props = {c.name: {p.get("name"): p.get("value") for p in c._elem.iter("property")} for s in xml for c in s}
    assert props["a"]["regressions"] == "duration_s,gpu_peak_memory_mib" and props["a"]["duration_change_pct"] == "100"
    assert props["d"]["improvements"] == "duration_s" and props["d"]["duration_change_s"] == "-50"
    assert props["b"]["baseline_change"] == "newly_failing" and props["y"]["baseline_status"] == "absent"
    suites = {s.name: {p.name: p.value for p in s.properties()} for s in xml}
    assert suites["new--l4"]["baseline_entry"] == "absent" and suites["rt--l4"]["regressions"] == "2"


def test_fmt_change_names_the_direction_and_size():
    assert fmt_change(judge("gpu_peak_memory_mib", 1000.0, 13000.0, TH)) == "▲ +11.7 GiB (+1,200 %)"
    assert fmt_change(judge("duration_s", 0.0, 3.0, TH)) == "▲ +3.0 s"  # no percent of nothing
    assert fmt_change(judge("duration_s", 5.0, 5.0, TH)) == "±0.0 s (±0 %)"


def _write(folder: Path, *entries: EntryResult) -> Path:
    for e in entries:
        (folder / e.entry.id).mkdir(parents=True, exist_ok=True)
        e.write(folder / e.entry.id)
    return folder


def test_a_hostile_or_empty_baseline_folder(tmp_path):
    now = [entry("rt--l4", nb("a"))]
    warnings = []
    empty = tmp_path / "empty"
    empty.mkdir()
    comp = load_baseline(empty, now, warn=warnings.append)
    assert not comp.available and "no readable results.json" in comp.reason

    told = tmp_path / "told"
    told.mkdir()
    (told / "baseline.json").write_text(json.dumps({"found": False, "reason": "the artifacts of run 7 expired"}))
    assert load_baseline(told, now).reason == "the artifacts of run 7 expired"

    hostile = tmp_path / "hostile"
    (hostile / "rt--l4").mkdir(parents=True)
    data = entry("rt--l4", nb("a", duration=float("nan"), gpu=float("nan"))).to_dict()
    (hostile / "rt--l4" / "results.json").write_text(json.dumps(data))  # NaN, as Python's json reads it
    (hostile / "rt--a100").mkdir()  # a number that is text: its results.json schema refuses it
    data = entry("rt--a100", nb("a", duration="ten")).to_dict()
    (hostile / "rt--a100" / "results.json").write_text(json.dumps(data))
    (hostile / "broken").mkdir()
    (hostile / "broken" / "results.json").write_text('{"schema_version": 1, "entry": 5}')
    (hostile / "baseline.json").write_text(json.dumps({"description": "<b>run</b>", "html_url": "javascript:x",
                                                       "run_id": "7"}))
    comp = load_baseline(hostile, now, warn=warnings.append)
    assert comp.available and comp.source.url is None and comp.source.run_id is None
    assert [d.verdict for d in comp.notebook("rt--l4", "a").deltas] == ["unknown", "unknown", "unchanged"]
    assert len(warnings) == 2 and all("left out of the comparison" in w for w in warnings)
    assert any("rt--a100" in w and "duration_s" in w for w in warnings)
    report = write_run_reports([], tmp_path / "out", baseline=hostile, logger=_Quiet())
    assert "<b>run</b>" not in report.dashboard_path.read_text()


class _Quiet:
    def info(self, msg):
        pass

    def warning(self, msg):
        pass


def test_report_baseline_inside_the_results_folder_is_not_counted_as_this_run(tmp_path, capsys):
    results = _write(tmp_path / "results", entry("rt--l4", nb("a", duration=30.0)))
    _write(results / "baseline", entry("rt--l4", nb("a")), entry("other--l4", nb("z")))
    with pytest.raises(SystemExit) as e:
        main(["report", str(results), "--baseline", str(results / "baseline"), "--no-pdf"])
    assert e.value.code == 0
    xml = JUnitXml.fromfile(str(results / "junit.xml"))
    assert [s.name for s in xml] == ["rt--l4"]
    summary = (results / "summary.md").read_text()
    assert re.search(r"\| wall time \| 10\.0 s \| 30\.0 s \| ▲ \+20\.0 s \(\+200 %\) \|", summary)
    assert "entry other--l4 was in the baseline but is not in this run" in summary

"""Every planned entry is reported once: the plan and the tries' records (gpu-runner-try.json)
decide which entries did not run and why, and which results are a preempted try's. Through the
real ``gpu-runner report`` command, its exit code and every report it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from junitparser import Error, JUnitXml

from gpu_runner.cli import main
from gpu_runner.report.collect import collect, describe_tries
from gpu_runner.results import (
    CheckResult,
    EntryInfo,
    EntryResult,
    Failure,
    NotebookResult,
    TryRecord,
    load_results,
)

PLAN = {"include": [
    {"id": "torch--l4", "runtime": "torch", "machine": "l4", "provider": "gce", "label": "gpu-runner-9-1-torch--l4"},
    {"id": "torch--a100", "runtime": "torch", "machine": "a100", "provider": "gce",
     "label": "gpu-runner-9-1-torch--a100"},
    {"id": "torch--here", "runtime": "torch", "machine": "here", "provider": "local", "label": "x"},
]}


def _entry(root: Path, folder: str, eid: str, *, retry: int = 0, status: str = "passed",
           interrupted: bool = False) -> Path:
    runtime, machine = eid.split("--")
    nb = NotebookResult(path="nb.ipynb", dir="notebooks/nb", status=status, duration_s=1.0,  # type: ignore[arg-type]
                        failure=Failure(kind="interrupted", message="interrupted by SIGTERM", cell_index=0)
                        if status == "failed" else None)
    r = EntryResult(entry=EntryInfo(id=eid, runtime=runtime, machine=machine, provider="gce", ran_locally=False,
                                    label=f"gpu-runner-9-1{'r' + str(retry) if retry else ''}-{eid}", retry=retry),
                    status=status, started_at="2025-01-01T00:00:00+00:00",  # type: ignore[arg-type]
                    finished_at="2025-01-01T00:01:00+00:00", duration_s=60.0, notebooks=[nb],
                    checks=[CheckResult(name="gpu", status="passed", duration_s=0.1)], interrupted=interrupted)
    d = root / folder / eid
    d.mkdir(parents=True)
    r.write(d)
    return d


def _record(root: Path, folder: str, **kw: object) -> Path:
    d = root / folder
    d.mkdir(parents=True)
    return TryRecord(**kw).write(d)  # type: ignore[arg-type]


def _report(root: Path, *extra: str) -> int:
    with pytest.raises(SystemExit) as e:
        main(["report", str(root), "--no-pdf", *extra])
    return int(e.value.code or 0)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """What the report job downloads when l4 was preempted once and passed on its retry, a100 found
    no capacity, and the local entry never uploaded anything."""
    root = tmp_path / "results"
    _entry(root, "gpu-runner-torch--l4", "torch--l4", status="failed", interrupted=True)
    _record(root, "gpu-runner-torch--l4.record", entry_id="torch--l4", retry=0, label="gpu-runner-9-1-torch--l4",
            start="success", run="failure", zone="us-central1-a", provisioning_model="SPOT", preempted=True,
            will_retry=True)
    _entry(root, "gpu-runner-torch--l4.retry-1", "torch--l4", retry=1)
    _record(root, "gpu-runner-torch--l4.retry-1.record", entry_id="torch--l4", retry=1, start="success",
            run="success", zone="us-central1-b", provisioning_model="STANDARD")
    _record(root, "gpu-runner-torch--a100.record", entry_id="torch--a100", retry=0, start="failure", run="skipped",
            error="no capacity for a2-highgpu-1g in us-central1-a, -b (SPOT, STANDARD)")
    (tmp_path / "plan.json").write_text(json.dumps(PLAN))
    return root


def test_every_planned_entry_is_reported_once_with_its_reason(run: Path, tmp_path: Path) -> None:
    code = _report(run, "--plan", str(tmp_path / "plan.json"))
    assert code == 3  # nothing failed, two entries did not run

    summary = (run / "summary.md").read_text()
    assert "2 of 3 entries not run" in summary
    assert "no capacity for a2-highgpu-1g in us-central1-a, -b (SPOT, STANDARD)" in summary
    assert "no results: its jobs did not run" in summary  # the local entry: planned, nothing came
    assert "preempted, passed on the retry (STANDARD)" in summary
    # the preempted try's failed notebook is not counted
    assert "**1 notebook: 1 passed** · 1 system check: 1 passed" in summary

    xml = JUnitXml.fromfile(str(run / "junit.xml"))
    suites = {s.name: s for s in xml}
    assert list(suites) == ["torch--l4", "torch--a100", "torch--here"]  # plan order
    assert xml.failures == 0 and xml.errors == 2
    (case,) = list(suites["torch--a100"])
    assert case.name == "not run" and case.classname == "torch--a100.entry"
    assert isinstance(case.result[0], Error) and case.result[0].type == "not_run"
    props = {p.name: p.value for p in suites["torch--l4"].properties()}
    assert props["tries"] == "1: preempted (SPOT); 2: ran (STANDARD)"

    page = (run / "index.html").read_text()
    assert page.count('class="tile s-not_run"') == 2
    assert "Try 1: partial results of a preempted VM (not counted)" in page
    assert 'data-overall="not_run"' in page and "2 of 3 entries not run" in page


def test_a_failure_beats_a_missing_entry_in_the_exit_code(run: Path, tmp_path: Path) -> None:
    (run / "gpu-runner-torch--l4.retry-1").rename(tmp_path / "gone")
    _entry(run, "gpu-runner-torch--l4.retry-1", "torch--l4", retry=1, status="failed")
    assert _report(run, "--plan", str(tmp_path / "plan.json")) == 1
    summary = (run / "summary.md").read_text()
    assert "1 of 3 entries failed, 2 not run" in summary
    assert "preempted, failed on the retry (STANDARD)" in summary


def test_without_a_plan_the_records_still_say_what_did_not_run(run: Path) -> None:
    assert _report(run) == 3
    xml = JUnitXml.fromfile(str(run / "junit.xml"))
    assert sorted(s.name for s in xml) == ["torch--a100", "torch--l4"]


def test_preempted_on_every_try_is_not_run_and_keeps_the_partial_results(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for n in (0, 1):
        sfx = f".retry-{n}" if n else ""
        _entry(root, f"gpu-runner-torch--l4{sfx}", "torch--l4", retry=n, status="failed", interrupted=True)
        _record(root, f"gpu-runner-torch--l4{sfx}.record", entry_id="torch--l4", retry=n, start="success",
                run="failure", provisioning_model="SPOT", preempted=True, will_retry=n == 0)
    found = collect(sorted(p.parent for p in root.rglob("results.json")),
                    records=sorted(root.rglob("gpu-runner-try.json")))
    (shown,) = found.entries
    assert shown.result.status == "not_run" and shown.result.reason == "preempted twice"
    assert [e.result.entry.retry for e in shown.earlier] == [0, 1] and shown.entry_dir is None
    assert shown.result.counts()["failed"] == 0
    assert _report(root) == 3


@pytest.mark.parametrize("rec,reason", [
    ({"start": "cancelled", "run": "skipped"}, "cancelled"),
    ({"start": "success", "run": "cancelled"}, "cancelled"),
    ({"start": "failure", "run": "skipped", "error": "runner gpu-runner-9-1-torch--l4 did not come online within 600s"},
     "runner gpu-runner-9-1-torch--l4 did not come online within 600s"),
    ({"start": "failure", "run": "skipped"}, "the start job failed before it could say why (see its log)"),
    ({"start": "success", "run": "failure"}, "the run job failed before it wrote any results (see its log)"),
    ({"start": "success", "run": "failure", "preempted": True},
     "preempted (no retry: the machine's retries.preempted is 0)"),
    ({"start": "success", "run": "failure", "preempted": True, "will_retry": True},
     "preempted; its retry did not run (the workflow was cancelled?)"),
])
def test_the_reason_of_an_entry_that_did_not_run(tmp_path: Path, rec: dict, reason: str) -> None:
    path = _record(tmp_path, "rec", entry_id="torch--l4", **rec)
    (shown,) = collect([], records=[path], plan=PLAN["include"][:1]).entries
    assert shown.result.status == "not_run" and shown.result.reason == reason
    assert shown.result.entry.runtime == "torch" and shown.result.entry.label == "gpu-runner-9-1-torch--l4"


def test_results_without_plan_or_records_are_shown_as_they_are(tmp_path: Path) -> None:
    a = _entry(tmp_path, "x", "torch--l4")
    b = _entry(tmp_path, "y", "torch--l4", status="failed")
    shown = collect([a, b]).entries
    assert [s.result.status for s in shown] == ["passed", "failed"] and not shown[0].result.tries


def test_a_plan_that_is_not_the_plans_json_is_a_usage_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "r").mkdir()
    bad = tmp_path / "plan.json"
    for text in ("{not json", '{"include": [{"name": 1}]}'):
        bad.write_text(text)
        assert _report(tmp_path / "r", "--plan", str(bad)) == 2
        err = capsys.readouterr().err
        assert "plan.json: not the plan's JSON" in err and "Traceback" not in err


def test_a_record_that_is_not_valid_stops_the_report_before_anything_is_written(tmp_path: Path, capsys) -> None:
    root = tmp_path / "r"
    _entry(root, "a", "torch--l4")
    (root / "b").mkdir()
    for text, why in (('{"schema_version": 1, "entry_id": 5}', "entry_id: 5 is not allowed here"),
                      ('{"schema_version": 1, "entry_id": "x", "run": "<img src=x>"}', "run: '<img src=x>'"),
                      ('{"schema_version": 1, "entry_id": "x", "owner": "me"}', "owner: not a field"),
                      ("[1]", "not a JSON object")):
        (root / "b" / "gpu-runner-try.json").write_text(text)
        assert _report(root) == 2
        err = capsys.readouterr().err
        assert "try record(s) refused, nothing reported" in err and why in err and "Traceback" not in err
        assert not (root / "summary.md").exists()


def test_each_downloaded_artifact_speaks_only_for_its_own_entry_and_try(run: Path, tmp_path: Path, capsys) -> None:
    """The run job uploads what the code under test wrote: a results.json or a record planted in one
    artifact for another entry, or in the wrong place, is ignored and said so."""
    # the local entry's artifact carries a pass for a100 and a record that says l4's retry passed
    _entry(run, "gpu-runner-torch--here", "torch--a100")
    _record(run / "gpu-runner-torch--here", "torch--l4", entry_id="torch--l4", retry=1, start="success", run="success")
    (run / "gpu-runner-torch--here" / "torch--here").mkdir()
    # a results.json deeper in an artifact (a notebook's own file called results.json)
    _entry(run / "gpu-runner-torch--l4.retry-1" / "torch--l4" / "notebooks", "artifacts", "torch--l4")
    # l4's first-try artifact claiming to be its retry
    r = load_results(run / "gpu-runner-torch--l4" / "torch--l4")
    r.entry.retry = 1
    r.write(run / "gpu-runner-torch--l4" / "torch--l4")
    code = _report(run, "--plan", str(tmp_path / "plan.json"))
    err = capsys.readouterr().err
    assert code == 3
    assert err.count("gpu-runner: warning: ignored") == 3, err
    assert "its artifact gpu-runner-torch--l4 is another's" in err
    summary = (run / "summary.md").read_text()
    assert "no capacity for a2-highgpu-1g" in summary  # a100 stays not run
    assert "no results: its jobs did not run" in summary  # and so does the local entry


def test_the_tries_phrase() -> None:
    from gpu_runner.results import TryInfo

    pre, ok = TryInfo(0, "preempted", provisioning_model="SPOT"), TryInfo(1, "ran", provisioning_model="STANDARD")
    assert describe_tries([pre, ok], "passed") == "preempted, passed on the retry (STANDARD)"
    assert describe_tries([pre, TryInfo(1, "preempted"), TryInfo(2, "ran")], "failed") == \
        "preempted twice, failed on try 3"
    assert describe_tries([ok], "passed") == ""


def test_the_model_round_trips_not_run_and_tries(tmp_path: Path) -> None:
    from gpu_runner.results import TryInfo, not_run_result

    r = not_run_result(EntryInfo(id="a--b", provider="gce", ran_locally=False), "cancelled",
                       tries=[TryInfo(0, "cancelled")])
    r.write(tmp_path)
    back = load_results(tmp_path)
    assert back.status == "not_run" and back.reason == "cancelled" and back.tries[0].outcome == "cancelled"

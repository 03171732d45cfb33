"""The report job's history step (tests/workflow_harness.py runs gpu-notebooks.yml and action.yml):
with earlier finished runs of the workflow on the GitHub stand-in, the report's summary (the job
summary and the pull-request comment) marks the notebook those runs show flaky; with none, the
history step says so once and the report goes on.

GitHub behaviour relied on (the stand-in models it): a job's ``GITHUB_TOKEN`` with ``actions: read``
may list a workflow's runs and download their artifacts ("List workflow runs for a workflow",
https://docs.github.com/rest/actions/workflow-runs#list-workflow-runs-for-a-workflow, and
https://docs.github.com/rest/actions/artifacts#download-an-artifact, both "Actions" repository
permissions (read)); the run a job is part of names its workflow (``workflow_id`` of
https://docs.github.com/rest/actions/workflow-runs#get-a-workflow-run), which is how the report job,
with no checkout of the caller's workflows, finds "this workflow".
"""

from __future__ import annotations

import pytest
from test_fetch import entry, entry_zip, nb, ran, record_zip
from test_workflow_e2e import World, _texts, world  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

OUTCOMES = ["passed", "failed", "passed", "failed"]


def test_the_report_marks_the_notebook_earlier_runs_show_flaky(world: World) -> None:  # noqa: F811
    # four finished runs of this workflow on main: smoke--l4's notebook passed, failed, passed, failed
    for i, status in enumerate(OUTCOMES):
        rid = world.gh.add_history_run(created_at=f"2025-02-0{i + 1}T10:00:00Z", head_sha=f"{i + 6}" * 40,
                                       conclusion="failure" if status == "failed" else "success")
        l4 = entry("l4", [nb("notebooks/smoke.ipynb", status, 2.0)], runtime="smoke")
        world.gh.add_artifact(rid, "gpu-runner-smoke--l4.attempt-1", entry_zip(l4))
        world.gh.add_artifact(rid, "gpu-runner-smoke--l4.attempt-1.record", record_zip(ran("smoke--l4")))
    r = world.runner("push", {"after": "3" * 40, "before": "0" * 40, "ref": "refs/heads/main"}, **{"history-runs": 5})
    res = r.run_workflow()
    assert res["report"]["result"] == "success", _texts(r)
    report = res["_jobs"]["report"][0]
    assert [s.outcome for s in report.steps if s.name.startswith("History")] == ["success"]
    summary = report.summary
    # the earlier runs' dashboards, made again, said nothing to this job: one summary, no annotation of theirs
    heads = [line for line in summary.splitlines() if line.startswith("## ")]
    assert heads == ["## ✅ GPU notebooks: all 2 entries passed"] and summary.startswith(heads[0])
    history_log = next(s.output for s in report.steps if s.name.startswith("History"))
    assert "::error" not in history_log and "RuntimeError: boom" not in history_log
    section = summary[summary.index("### ⚠️ Across the last 4 runs (1)"):]
    assert "| <code>smoke--l4</code> | <code>notebooks/smoke.ipynb</code> | flaky: 2 of 4 runs failed (outcome " \
           "changed 3 times in 4 runs) |" in section
    assert "smoke--here" not in section.split("\n\n")[1]  # the local entry has no history
    comment = next(iter(world.gh.comments.values()))["body"]
    assert "flaky: 2 of 4 runs failed" in comment
    junit = (world.artifacts / "gpu-runner-report" / "junit.xml").read_text()
    assert 'name="history_flaky" value="true"' in junit
    assert world.gh.leaked_auth == [] and not world.gh.rejected
    world.assert_clean()

"""Artifact names the report relies on cannot be pre-empted by a run job.

A run job's steps (the notebook among them) hold the job's ACTIONS_RUNTIME_TOKEN and can upload
artifacts of any name to the run before the job meant to make them. actions/upload-artifact v4
refuses a name that already exists in the run unless ``overwrite: true``, which deletes the older
artifact first (https://github.com/actions/upload-artifact#overwriting-an-artifact). So the stop
job's try record is uploaded with ``overwrite``; the summary the comment job posts is fetched by
the id the report job's own upload returned (actions/download-artifact ``artifact-ids``), never by
name (https://github.com/actions/download-artifact#inputs)."""

from __future__ import annotations

import json

import pytest
from test_workflow_e2e import SHA, World


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def _plant(world: World, name: str, file: str, text: str) -> None:
    folder = world.artifacts / name
    folder.mkdir(parents=True)
    (folder / file).write_text(text)


def test_a_planted_try_record_is_replaced_by_stops_own(world: World) -> None:
    """A record claiming the entry was preempted (so its failure would read as not run) is there
    before stop uploads: stop's own record replaces it, and the report tells the truth."""
    forged = {"schema_version": 1, "entry_id": "smoke--l4", "retry": 0, "start": "success", "run": "failure",
              "preempted": True, "will_retry": False, "error": "forged by the run job"}
    # the name stop uploads (it overwrites it), and the older version's name (the report leaves it out
    # beside this version's own)
    _plant(world, "gpu-runner-smoke--l4.attempt-1.record", "gpu-runner-try.json", json.dumps(forged))
    _plant(world, "gpu-runner-smoke--l4.record", "gpu-runner-try.json", json.dumps(forged))
    r = world.runner("push", {"after": SHA}, machine="l4")
    res = r.run_workflow()
    assert res["report"]["result"] == "success", "\n".join(s.output for s in r.records)
    record = json.loads((world.artifacts / "gpu-runner-smoke--l4.attempt-1.record" / "gpu-runner-try.json"
                         ).read_text())
    assert record["preempted"] is False and record.get("error") is None and record["run"] == "success"
    report_log = next(s.output for s in r.records if s.command == "gpu-runner report")
    assert "gpu-runner-smoke--l4.record: left out" in report_log
    body = next(iter(world.gh.comments.values()))["body"]
    assert "forged" not in body and "preempted" not in body
    world.assert_clean()


def test_a_planted_summary_is_not_posted(world: World) -> None:
    """An artifact named like the summary, uploaded before the report's: the comment posts the
    report's own summary (fetched by id), never the planted one."""
    _plant(world, "gpu-runner-summary", "summary.md", "<!-- gpu-runner:summary matrix.yml -->\nPLANTED-SUMMARY")
    r = world.runner("push", {"after": SHA}, machine="l4")
    res = r.run_workflow()
    assert res["comment"]["result"] == "success", "\n".join(s.output for s in r.records)
    body = next(iter(world.gh.comments.values()))["body"]
    assert "PLANTED-SUMMARY" not in body and "smoke--l4" in body
    world.assert_clean()

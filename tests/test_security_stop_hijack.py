"""stop records which job of the run its runner ran, and reports a hijack as the try's reason.

GitHub lists a run attempt's jobs with ``runner_name``, the runner each was assigned to
(GET /repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt_number}/jobs,
https://docs.github.com/en/rest/actions/workflow-jobs#list-jobs-for-a-workflow-run-attempt).
The VM's serial console says ``hijack`` when its job-started hook refused a job of another run
(tests/test_security_hook.py). Either way the entry is reported not run, with that reason."""

from __future__ import annotations

import json

import pytest
from conftest import gpu_runner
from test_cloud_gce import L4, World

from gpu_runner.cloud.base import STATUS_MARKER


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def _say(world: World, label: str, line: str) -> None:
    with world.compute.lock:
        inst = next(i for k, i in world.compute.instances.items() if k[2] == label)
        inst["_serial"].append(f"startup-script: {STATUS_MARKER} {line}")


def _stop(world: World, run_result: str):
    started = world.outputs_dict()
    rec = world.tmp / "artifacts" / f"gpu-runner-{L4}.record"
    r = world.cli("stop", "--matrix", str(world.matrix), "--entry", L4, "--record", str(rec), "--start-result",
                  "success", "--run-result", run_result, "--start-outputs", json.dumps(started))
    assert r.returncode == 0, r.stdout + r.stderr
    return r, json.loads((rec / "gpu-runner-try.json").read_text())


def _reported_reason(world: World) -> str:
    plan = world.tmp / "plan.json"
    p = world.cli("plan", "--matrix", str(world.matrix), "--machine", "l4", "--format", "json")
    plan.write_text(p.stdout)
    r = gpu_runner("report", str(world.tmp / "artifacts"), "--plan", str(plan), "--no-pdf", cwd=world.tmp)
    assert r.returncode == 3, r.stdout + r.stderr  # an entry not run
    return (world.tmp / "artifacts" / "summary.md").read_text()


def test_a_vm_that_says_hijack_makes_the_entry_not_run_with_that_reason(world: World) -> None:
    assert world.start().returncode == 0
    label = world.label()
    _say(world, label, "hijack a job of another run took this runner (run 9999 attempt 1 differs: run-id); it was refused")
    r, record = _stop(world, "cancelled")
    assert "HIJACK" in r.stdout + r.stderr
    assert record["error"].startswith("hijack: the runner was taken by a job of another workflow run")
    assert "hijack" in _reported_reason(world)
    world.assert_clean()


def test_a_runner_that_ran_a_job_no_job_of_this_run_ran_on_is_a_hijack(world: World) -> None:
    """The VM says its runner ran a job; GitHub lists none of this run attempt on it (this entry's run
    job waited for a runner that was gone, and failed)."""
    assert world.start().returncode == 0
    label = world.label()
    _say(world, label, "job-done runner exited")
    world.gh.run_jobs[("4242", "1")] = [
        {"name": "entry (torch--l4) / start", "runner_name": "GitHub Actions 2"},
        {"name": "entry (torch--l4) / run", "runner_name": None, "status": "completed", "conclusion": "failure"}]
    r, record = _stop(world, "failure")
    assert world.gh.calls["run-jobs.list"] == 1
    assert record["error"].startswith("hijack: the runner ran a job, and no job of this run attempt ran on it")
    world.assert_clean()


def test_stop_records_the_job_its_runner_ran(world: World) -> None:
    assert world.start().returncode == 0
    label = world.label()
    _say(world, label, "job-done runner exited")
    world.gh.run_jobs[("4242", "1")] = [
        {"name": "entry (torch--l4) / start", "runner_name": "GitHub Actions 2"},
        {"name": "entry (torch--l4) / run", "runner_name": label}]
    r, record = _stop(world, "failure")
    assert f"its runner ran job entry (torch--l4) / run (id {4242 * 100 + 1})" in r.stdout + r.stderr
    assert record["error"] is None
    world.assert_clean()

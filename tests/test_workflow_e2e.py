"""The reusable workflow, end to end: its jobs read from .github/workflows/gpu-notebooks.yml,
gpu-entry.yml (one chain per entry) and action.yml and run here (tests/workflow_harness.py) with
the environment GitHub sets, against the Compute Engine and GitHub stand-ins. plan -> entry
(start -> run, the notebooks on this machine -> stop, and the retry of a preempted try) -> report
-> comment, ending with the comment posted, the artifacts in place, zero VMs and zero runner
registrations; one entry's stockout, preemption or cancellation never costs another entry its
run; and the fork gate for pull requests from forks."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from conftest import make_nb
from standins.compute import ComputeStandIn
from standins.github import GitHubStandIn
from workflow_harness import REPO, Runner, condition, evaluate

pytestmark = pytest.mark.slow

REPO_NAME = "octo-org/runtime"
SHA = "3" * 40
MATRIX = """\
version: 1
gce:
  project: test-project
  region: us-central1
defaults:
  machine:
    zones: [a, b]
    spot: preferred
    max_run_duration: 1h
machines:
  here: {provider: local}
  l4:
    machine_type: g2-standard-8
    accelerator: {type: nvidia-l4, count: 1}
runtimes:
  smoke:
    container: python:3.12-slim
    notebooks: [notebooks/smoke.ipynb]
    checks: [resources]
"""


def is_label(name: str, retry: int = 0) -> bool:
    """``name`` is the label start made for try ``retry`` of smoke--l4 in run 5150: the plan's label
    with start's random part (gpu-runner-<run>-<attempt>-<nonce>-<entry>)."""
    attempt = f"1r{retry}" if retry else "1"
    return re.fullmatch(rf"gpu-runner-5150-{attempt}-[a-z2-7]{{8}}-smoke--l4", name or "") is not None


class FirstTry(dict):
    """``Runner.preempt`` for the first try's runner, whatever start's random part is."""

    def get(self, key: str, default: object = None) -> object:
        return next(iter(self.values())) if is_label(key) and self else default


class World:
    def __init__(self, tmp: Path) -> None:
        self.gh = GitHubStandIn(repo=REPO_NAME).start()
        self.compute = ComputeStandIn(github=self.gh).start()
        self.ws = tmp / "workspace"
        self.ws.mkdir()
        (self.ws / "matrix.yml").write_text(MATRIX)
        make_nb(self.ws / "notebooks", "smoke.ipynb", "x = 6 * 7", "assert x == 42", "print('smoke ok')")
        self.artifacts = tmp / "artifacts"
        self.env = {
            "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(tmp)), "LANG": "C.UTF-8",
            "GITHUB_API_URL": self.gh.url, "GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": REPO_NAME,
            "GITHUB_RUN_ID": "5150", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_SHA": SHA, "GITHUB_TOKEN": "test-token",
            "GPU_RUNNER_COMPUTE_EMULATOR_HOST": self.compute.address, "GPU_RUNNER_RETRY_BASE_S": "0.01",
            "GPU_RUNNER_RETRY_ATTEMPTS": "4", "PYTHONUNBUFFERED": "1",
        }

    def runner(self, event_name: str, event: dict, **inputs: object) -> Runner:
        return Runner(workspace=self.ws, base_env=self.env, event_name=event_name, event=event,
                      inputs={"matrix": "matrix.yml", "pdf": False, **inputs},
                      secrets={"runner-admin-token": "test-token"}, artifacts=self.artifacts,
                      runner_online=self.online)

    def online(self, label: str) -> bool:
        with self.gh.lock:
            return any(r["name"] == label and r["status"] == "online" for r in self.gh.runners.values())

    def assert_clean(self) -> None:
        assert self.compute.count() == 0, list(self.compute.instances)
        assert self.gh.count() == 0, [r["name"] for r in self.gh.runners.values()]
        assert not self.compute.rejected and not self.gh.rejected

    def close(self) -> None:
        self.compute.stop()
        self.gh.stop()


@pytest.fixture
def world(tmp_path: Path):
    w = World(tmp_path)
    yield w
    w.close()


HEAD_SHA, BASE_SHA, APPROVAL = "4" * 40, "5" * 40, "gpu-runner:approved"


def _pr_event(*, fork: bool, labels: list[str] = (), action: str = "opened", label: str | None = None,
              sender: str = "contributor") -> dict:
    head = "contributor/runtime" if fork else REPO_NAME
    event = {"action": action, "number": 12, "sender": {"login": sender}, "pull_request": {
        "number": 12, "labels": [{"name": n} for n in labels],
        "head": {"sha": HEAD_SHA, "repo": {"full_name": head, "fork": fork}},
        "base": {"sha": BASE_SHA, "ref": "main", "repo": {"full_name": REPO_NAME}}}}
    if label is not None:
        event["label"] = {"name": label}
    return event


def _texts(r: Runner) -> str:
    return "\n".join(s.output for s in r.records)


def _jobs(r: Runner, name: str) -> list:
    return [j for j in r.jobs if j.name == name]


def test_push_runs_every_job_and_leaves_nothing_running(world: World) -> None:
    r = world.runner("push", {"after": SHA, "before": "0" * 40, "ref": "refs/heads/main"})
    res = r.run_workflow()
    assert {k: v["result"] for k, v in res.items() if k != "_jobs"} == {
        "plan": "success", "revoke": "skipped", "doctor": "skipped", "entry": "success", "report": "success",
        "comment": "success"}, _texts(r)
    items = json.loads(res["plan"]["outputs"]["matrix"])["include"]
    assert [i["id"] for i in items] == ["smoke--here", "smoke--l4"] and res["plan"]["outputs"]["has-work"] == "true"

    # each entry is its own chain; the local entry has nothing to start or stop; no retry ran
    assert [j.tag for j in r.jobs] == ["plan", "entry smoke--here / run", "entry smoke--l4 / start",
                                       "entry smoke--l4 / run", "entry smoke--l4 / stop", "report", "comment"]
    # start made the VM with its just-in-time runner; stop took both away
    assert world.compute.calls["instances.insert"] == 1 and world.gh.calls["runners.jitconfig"] == 1
    world.assert_clean()
    assert _jobs(r, "stop")[0].outputs == {"preempted": "false", "retry": "false"}

    # run: the gce entry runs on its label inside the runtime's container with the GPUs; the local one on ubuntu
    run_jobs = {j.container["runs_on"]: j.container for j in _jobs(r, "run")}
    l4_label = next(k for k in run_jobs if k != "ubuntu-latest")
    assert set(run_jobs) == {"ubuntu-latest", l4_label} and is_label(l4_label)  # start's output, not the plan's
    assert run_jobs[l4_label]["image"] == "python:3.12-slim"
    assert "--gpus all" in run_jobs[l4_label]["options"]
    # no GPU, no container_options: the image alone, never an empty options string (older runners refuse it)
    assert run_jobs["ubuntu-latest"] == {"runs_on": "ubuntu-latest", "image": "python:3.12-slim"}

    # artifacts: one per entry (no top-level reports in them), the try's record, then the merged report
    arts = sorted(p.name for p in world.artifacts.iterdir())
    assert arts == ["gpu-runner-report", "gpu-runner-smoke--here.attempt-1", "gpu-runner-smoke--l4.attempt-1",
                    "gpu-runner-smoke--l4.attempt-1.record", "gpu-runner-summary"]
    assert [p.name for p in (world.artifacts / "gpu-runner-summary").iterdir()] == ["summary.md"]
    entry_art = world.artifacts / "gpu-runner-smoke--l4.attempt-1"
    assert [p.name for p in entry_art.iterdir()] == ["smoke--l4"]
    res_l4 = json.loads((entry_art / "smoke--l4" / "results.json").read_text())
    # it ran on the entry's own runner (RUNNER_NAME is its label)
    assert res_l4["status"] == "passed" and res_l4["entry"]["ran_locally"] is False
    assert (entry_art / "smoke--l4" / "notebooks" / "smoke" / "output.ipynb").is_file()  # no notebooks/notebooks
    record = json.loads((world.artifacts / "gpu-runner-smoke--l4.attempt-1.record" / "gpu-runner-try.json").read_text())
    assert record["entry_id"] == "smoke--l4" and record["start"] == "success" and record["run"] == "success"
    assert record["provisioning_model"] == "SPOT" and record["zone"] == "us-central1-a"
    # what the VM cost: timed by stop, priced by start (the table here), in the record and the reports
    vm = record["vm"]
    assert vm["name"] == l4_label and vm["timed_by"] == "stop" and vm["price_source"] == "table"
    assert vm["usd"] == pytest.approx(vm["usd_per_hour"] * vm["lifetime_s"] / 3600, abs=2e-5) and vm["usd"] > 0
    report = world.artifacts / "gpu-runner-report"
    l4_cost = json.loads((report / "gpu-runner-smoke--l4.attempt-1" / "smoke--l4" / "results.json").read_text())["cost"]
    assert l4_cost["usd"] == vm["usd"] and [v["name"] for v in l4_cost["vms"]] == [vm["name"]]
    assert "### What it cost" in (report / "summary.md").read_text()
    assert "### What this run may cost" in _jobs(r, "plan")[0].summary  # the plan's prices and worst case
    for f in ("index.html", "summary.md", "junit.xml"):
        assert (report / f).is_file(), f
    assert 'tests="' in (report / "junit.xml").read_text()
    assert res["report"]["outputs"]["failed"] == "0" and int(res["report"]["outputs"]["passed"]) >= 2
    assert res["report"]["outputs"]["not-run"] == "0"

    # the commit comment, with the marker keyed on the matrix file, and the job summary
    comments = list(world.gh.comments.values())
    assert len(comments) == 1 and comments[0]["kind"] == "commit" and comments[0]["sha"] == SHA
    assert comments[0]["body"].startswith("<!-- gpu-runner:summary matrix.yml -->")
    assert "smoke" in comments[0]["body"]
    assert "smoke" in _jobs(r, "report")[0].summary
    # the report step got no token; the comment job, the only one that may write, posted
    report_step = next(s for s in _jobs(r, "report")[0].steps if s.name == "Report")
    assert "test-token" not in report_step.output and _jobs(r, "comment")[0].result == "success"
    for secret in [*world.gh.secrets, "test-token"]:
        assert all(secret not in line or line.startswith("::add-mask::") for line in _texts(r).splitlines())


def test_pull_request_gets_a_sticky_comment_updated_by_the_next_run(world: World) -> None:
    for attempt in ("1", "2"):
        world.env["GITHUB_RUN_ATTEMPT"] = attempt
        shutil_rmtree(world.artifacts)
        r = world.runner("pull_request", _pr_event(fork=False))
        res = r.run_workflow()
        assert res["report"]["result"] == "success", _texts(r)
    comments = list(world.gh.comments.values())
    assert len(comments) == 1 and comments[0]["kind"] == "issue" and comments[0]["number"] == 12
    assert world.gh.calls["issue-comments.create"] == 1 and world.gh.calls["issue-comments.update"] == 1
    world.assert_clean()


def _zip_folder(folder: Path) -> bytes:
    """An artifact as GitHub serves it: a zip of the uploaded folder's contents."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    return buf.getvalue()


def test_a_pull_request_is_compared_with_the_last_good_run_on_its_base_branch(world: World) -> None:
    # the first pull request has no baseline: said once, and the report goes on
    r = world.runner("pull_request", _pr_event(fork=False))
    res = r.run_workflow()
    assert res["report"]["result"] == "success", _texts(r)
    body = next(iter(world.gh.comments.values()))["body"]
    assert body.count("No baseline to compare with") == 1
    assert "no successful run of this workflow on the base branch 'main' yet" in body

    # main's run succeeded and kept its entries' artifacts; the pull request breaks the notebook
    world.gh.add_run(head_branch="main", head_sha="5" * 40, artifacts={
        p.name: _zip_folder(p) for p in world.artifacts.iterdir() if p.name != "gpu-runner-report"})
    shutil_rmtree(world.artifacts)
    make_nb(world.ws / "notebooks", "smoke.ipynb", "raise ValueError('broken on purpose')")
    r = world.runner("pull_request", _pr_event(fork=False), **{"history-runs": 0})  # the baseline's downloads alone
    res = r.run_workflow()
    assert res["report"]["result"] == "failure"  # the notebook failed, as before the baseline existed
    report = res["_jobs"]["report"][0]
    assert [s.outcome for s in report.steps if s.name.startswith("Baseline")] == ["success"]
    body = next(iter(world.gh.comments.values()))["body"]
    section = body[body.index("### Compared with the baseline"):]
    assert "2 newly failing" in section.splitlines()[2]
    for entry in ("smoke--here", "smoke--l4"):
        assert f"| <code>{entry}</code> | <code>notebooks/smoke.ipynb</code> | passed | failed: cell 1, line 1: ValueError: " \
               "broken on purpose |" in section
    assert world.gh.calls["artifacts.blob"] == 2 and world.gh.leaked_auth == [] and not world.gh.rejected
    assert (world.artifacts / "gpu-runner-report" / "comparison.json").is_file()


def shutil_rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


@pytest.mark.parametrize("event_name,fork,labels,action,label,sender,planned,why", [
    # nothing of a fork's pull request runs on pull_request_target before the approval...
    ("pull_request_target", True, [], "opened", None, "contributor", [], "applies the label 'gpu-runner:approved'"),
    # ...and a label that is merely there approves nothing: reopened, new commits, another label
    ("pull_request_target", True, [APPROVAL], "reopened", None, "contributor", [], "applied to older code"),
    ("pull_request_target", True, [APPROVAL], "synchronize", None, "contributor", [], "applied to older code"),
    ("pull_request_target", True, [APPROVAL, "bug"], "labeled", "bug", "maintainer", [], "of the label 'bug'"),
    # the approval is the labeled event by a user who may write; triage may label, not approve
    ("pull_request_target", True, [APPROVAL], "labeled", APPROVAL, "maintainer", ["smoke--here", "smoke--l4"], None),
    ("pull_request_target", True, [APPROVAL], "labeled", APPROVAL, "triager", [], "triager, who applied it, may "
     "not write"),
    ("pull_request_target", True, [APPROVAL], "labeled", APPROVAL, "stranger", [], "stranger, who applied it, may "
     "not write"),
    # a fork's pull_request has no secrets: its local entries only; a branch of this repository: all
    ("pull_request", True, [APPROVAL], "labeled", APPROVAL, "maintainer", ["smoke--here"], "no secrets"),
    ("pull_request_target", False, [], "opened", None, "maintainer", ["smoke--here", "smoke--l4"], None),
])
def test_what_a_pull_request_may_run(world: World, event_name: str, fork: bool, labels: list[str], action: str,
                                     label: str | None, sender: str, planned: list[str], why: str | None) -> None:
    world.gh.permissions = {"maintainer": "write", "triager": "read"}
    world.gh.pr_reviews = {12: [{"login": "maintainer", "state": "APPROVED", "commit_id": HEAD_SHA}]}
    r = world.runner(event_name, _pr_event(fork=fork, labels=labels, action=action, label=label, sender=sender))
    job = r.run_job("plan", {}, None)
    assert job.result == "success", "\n".join(s.output for s in job.steps)
    assert [i["id"] for i in json.loads(job.outputs["matrix"])["include"]] == planned
    assert job.outputs["has-work"] == ("true" if planned else "false")
    if why is not None:
        assert why in job.summary, job.summary
        heading = "GPU entries not run" if planned else "Nothing of this pull request runs yet"
        assert heading in job.summary
    assert world.gh.calls["collaborators.permission"] == (1 if action == "labeled" and label == APPROVAL and fork
                                                          and event_name == "pull_request_target" else 0)
    assert world.compute.count() == 0


def _trees(world: World, tmp: Path) -> tuple[Path, Path]:
    """The base branch (what the workspace holds) and the pull request's head commit: the fork wants
    its local entry on a self-hosted runner in a privileged container, and says so in its notebook."""
    base, head = world.ws, tmp / "head"
    shutil_copytree(base, head)
    (head / "matrix.yml").write_text(MATRIX.replace(
        "  here: {provider: local}", "  here: {provider: local, runs_on: some-self-hosted-label}").replace(
        "    container: python:3.12-slim", "    container: python:3.12-slim\n"
        "    container_options: --privileged -v /:/host"))
    make_nb(head / "notebooks", "smoke.ipynb", "print('the head commit ran')")
    return base, head


def shutil_copytree(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns(".gpu-runner"))


def test_an_approved_fork_runs_exactly_the_labelled_commit_as_the_base_branch_plans_it(world: World,
                                                                                     tmp_path: Path) -> None:
    """A maintainer applies the label: every entry runs, each run job checks out the head commit the
    label was applied to (the fork's notebook runs), where it runs comes from the base branch's matrix
    (the fork's self-hosted runs_on and privileged container options are ignored), and no job of the
    run touches the cache."""
    world.gh.permissions = {"maintainer": "write"}
    world.gh.pr_labels = {12: [APPROVAL]}
    world.gh.pr_reviews = {12: [{"login": "maintainer", "state": "APPROVED", "commit_id": HEAD_SHA}]}
    _base, head = _trees(world, tmp_path)
    r = world.runner("pull_request_target", _pr_event(fork=True, labels=[APPROVAL], action="labeled",
                                                      label=APPROVAL, sender="maintainer"))
    r.refs = {HEAD_SHA: head}
    res = r.run_workflow()
    assert res["report"]["result"] == "success" and res["comment"]["result"] == "success", _texts(r)
    items = {i["id"]: i for i in json.loads(res["plan"]["outputs"]["matrix"])["include"]}
    assert items["smoke--here"]["runs_on"] == "ubuntu-latest" and items["smoke--l4"]["container_options"] is None
    runs = _jobs(r, "run")
    assert [j.checkouts for j in runs] == [[HEAD_SHA], [HEAD_SHA]]
    on = {j.container["runs_on"] for j in runs} - {"ubuntu-latest"}
    assert len(on) == 1 and is_label(on.pop())
    assert all("--privileged" not in (j.container.get("options") or "") for j in runs)
    for entry in ("smoke--here", "smoke--l4"):
        nb = world.artifacts / f"gpu-runner-{entry}.attempt-1" / entry / "notebooks" / "smoke" / "output.ipynb"
        assert "the head commit ran" in nb.read_text()
    # the jobs that hold secrets, and the plan, read the base branch
    assert all(j.checkouts == [""] for j in r.jobs if j.name in ("plan", "start", "stop"))
    assert r.cache_uses and {c for _tag, c in r.cache_uses} == {"false"}, r.cache_uses
    assert world.gh.pr_labels == {12: [APPROVAL]}  # the approval stays for that commit
    world.assert_clean()


@pytest.mark.parametrize("action", ["synchronize", "reopened"])
def test_new_commits_to_an_approved_fork_run_nothing_and_lose_the_label(world: World, action: str) -> None:
    world.gh.permissions = {"maintainer": "write"}
    world.gh.pr_labels = {12: [APPROVAL, "bug"]}
    r = world.runner("pull_request_target", _pr_event(fork=True, labels=[APPROVAL, "bug"], action=action))
    res = r.run_workflow()
    assert [(j.tag, j.result) for j in r.jobs] == [("plan", "success"), ("revoke", "success")], _texts(r)
    assert res["plan"]["outputs"]["has-work"] == "false"
    assert res["entry"]["result"] == "skipped" and res["report"]["result"] == "skipped"
    assert world.gh.pr_labels == {12: ["bug"]} and world.gh.calls["issue-labels.remove"] == 1
    revoke = next(s for s in _jobs(r, "revoke")[0].steps if s.command == "gpu-runner revoke-approval")
    assert f"removed the label 'gpu-runner:approved' from pull request #12: commit {HEAD_SHA[:12]}" in revoke.output
    assert {c for _tag, c in r.cache_uses} == {"false"}
    world.assert_clean()


def test_a_forks_pull_request_is_planned_from_its_base_commit(world: World, tmp_path: Path) -> None:
    """On pull_request GitHub checks out the merge commit, which has the fork's matrix; the plan reads
    the base commit's instead, so the fork's self-hosted runs_on never reaches a job."""
    base = tmp_path / "base"
    shutil_copytree(world.ws, base)
    _, head = _trees(world, tmp_path)
    for f in ("matrix.yml", "notebooks/smoke.ipynb"):  # the merge commit: the fork's files
        (world.ws / f).write_text((head / f).read_text())
    r = world.runner("pull_request", _pr_event(fork=True))
    r.refs = {BASE_SHA: base}
    job = r.run_job("plan", {}, None)
    items = json.loads(job.outputs["matrix"])["include"]
    assert job.checkouts == [BASE_SHA]
    assert [(i["id"], i["runs_on"]) for i in items] == [("smoke--here", "ubuntu-latest")]


def test_a_failing_notebook_fails_run_and_report_but_stop_and_comment_still_happen(world: World) -> None:
    make_nb(world.ws / "notebooks", "smoke.ipynb", "raise ValueError('broken on purpose')")
    r = world.runner("push", {"after": SHA})
    res = r.run_workflow()
    assert res["entry"]["result"] == "failure" and res["report"]["result"] == "failure"
    assert [j.result for j in _jobs(r, "run")] == ["failure", "failure"]
    assert [j.result for j in _jobs(r, "stop")] == ["success"]
    # a failing notebook is never retried: stop says so, and no retry job ran
    assert _jobs(r, "stop")[0].outputs == {"preempted": "false", "retry": "false"}
    assert not [j for j in r.jobs if "retry" in j.name]
    assert world.compute.calls["instances.insert"] == 1
    assert res["report"]["outputs"]["failed"] != "0"
    world.assert_clean()
    assert sorted(p.name for p in world.artifacts.iterdir())[0] == "gpu-runner-report"
    body = next(iter(world.gh.comments.values()))["body"]
    assert "broken on purpose" in body


def test_results_the_report_refuses_post_no_comment(world: World) -> None:
    """What a run job's code could upload: a results.json whose status is HTML, and a summary of
    its own at the top of its artifact. The report refuses it (exit 2), hands no summary on, and
    the comment job, the only one with a token that may write, does not run."""
    r = world.runner("push", {"after": SHA})
    res = r.run_workflow()
    assert res["comment"]["result"] == "success" and len(world.gh.comments) == 1
    world.gh.comments.clear()
    for p in world.artifacts.glob("gpu-runner-smoke--*/*/results.json"):
        data = json.loads(p.read_text())
        data["status"] = '<img src=x onerror="alert(1)">'
        p.write_text(json.dumps(data))
    (world.artifacts / "gpu-runner-smoke--l4.attempt-1" / "summary.md").write_text("cc @org/team: all passed\n")
    for name in ("gpu-runner-report", "gpu-runner-summary"):
        import shutil

        shutil.rmtree(world.artifacts / name)
    rep = r.run_job("report", {"plan": res["plan"], "entry": res["entry"]}, None)
    assert rep.result == "failure"
    step = next(s for s in rep.steps if s.name == "Report")
    assert "results.json or try record(s) refused, nothing reported" in step.output
    assert rep.outputs["summary-artifact-id"] == "" and not (world.artifacts / "gpu-runner-summary").exists()
    wf = r.workflow["jobs"]["comment"]
    needs = {"plan": res["plan"], "report": {"result": rep.result, "outputs": rep.outputs}}
    assert not condition(wf["if"], {"github": r.github_ctx(), "inputs": r.resolved_inputs, "needs": needs},
                         {"failed": True, "cancelled": False})
    assert world.gh.comments == {}



THREE = MATRIX.replace("""  l4:
    machine_type: g2-standard-8
    accelerator: {type: nvidia-l4, count: 1}
""", """  l4:
    machine_type: g2-standard-8
    accelerator: {type: nvidia-l4, count: 1}
  a100:
    machine_type: a2-highgpu-1g
    accelerator: {type: nvidia-tesla-a100, count: 1}
""")


def test_an_entry_without_capacity_costs_the_others_nothing_and_is_reported_not_run(world: World) -> None:
    """Three entries; no zone has an A100 (SPOT or STANDARD): the other two run, the third is not_run
    with the start's reason in every report, the comment is posted, exit 3, and nothing is left."""
    (world.ws / "matrix.yml").write_text(THREE)
    world.compute.stockout_machine_types = {"a2-highgpu-1g"}
    r = world.runner("push", {"after": SHA})
    res = r.run_workflow()
    assert [(j.tag, j.result) for j in r.jobs if j.name != "plan"] == [
        ("entry smoke--here / run", "success"),
        ("entry smoke--l4 / start", "success"), ("entry smoke--l4 / run", "success"),
        ("entry smoke--l4 / stop", "success"),
        ("entry smoke--a100 / start", "failure"), ("entry smoke--a100 / stop", "success"),
        ("report", "failure"), ("comment", "success")], _texts(r)
    assert world.compute.calls["instances.insert"] == 1 + 4  # l4 once; a100 in a and b, SPOT then STANDARD
    world.assert_clean()

    reason = "no capacity for a2-highgpu-1g in us-central1-a, -b (SPOT, STANDARD)"
    report = world.artifacts / "gpu-runner-report"
    summary = (report / "summary.md").read_text()
    assert "1 of 3 entries not run" in summary and reason in summary
    assert "smoke--here" in summary and "smoke--l4" in summary
    assert res["report"]["outputs"]["not-run"] == "1" and res["report"]["outputs"]["failed"] == "0"
    report_step = next(s for s in _jobs(r, "report")[0].steps if s.command == "gpu-runner report")
    assert f"::error title=smoke--a100%3A not run::{reason}" in report_step.output

    from junitparser import Error, JUnitXml

    xml = JUnitXml.fromfile(str(report / "junit.xml"))
    suites = {s.name: s for s in xml}
    assert set(suites) == {"smoke--here", "smoke--l4", "smoke--a100"}
    (case,) = list(suites["smoke--a100"])
    assert isinstance(case.result[0], Error) and case.result[0].message == reason
    assert xml.errors == 1 and xml.failures == 0

    page = (report / "index.html").read_text()
    assert 'class="tile s-not_run"' in page and "Not run" in page and reason in page
    body = next(iter(world.gh.comments.values()))["body"]
    assert "not run" in body and reason in body


ON_VM_UNTIL_FLAG = """\
import os, pathlib, time
flag = pathlib.Path(os.environ["TEST_FLAG"])
if not flag.exists():   # the first try: say it is running, then run until something happens to it
    flag.write_text("running")
    time.sleep(300)
"""


def test_a_preempted_entry_is_retried_once_on_standard_and_passes(world: World) -> None:
    """Compute Engine preempts the Spot VM while its notebook runs: the run job fails, stop says
    preempted=true and retry=true, the retry runs on STANDARD on a VM and runner of its own and
    passes; the first try's partial results are kept and marked, not counted; nothing is left."""
    flag = world.ws.parent / "preempt-here"  # not on any job's machine: the cloud's doing
    world.env["TEST_FLAG"] = str(flag)
    make_nb(world.ws / "notebooks", "smoke.ipynb", ON_VM_UNTIL_FLAG, "print('smoke ok')")
    r = world.runner("push", {"after": SHA}, machine="l4")
    r.preempt = FirstTry(first=(flag.exists, world.compute.preempt))
    res = r.run_workflow()
    assert [(j.tag, j.result) for j in r.jobs if j.name != "plan"] == [
        ("entry smoke--l4 / start", "success"), ("entry smoke--l4 / run", "failure"),
        ("entry smoke--l4 / stop", "success"),
        ("entry smoke--l4 / start-retry-1", "success"), ("entry smoke--l4 / run-retry-1", "success"),
        ("entry smoke--l4 / stop-retry-1", "success"), ("report", "success"), ("comment", "success")], _texts(r)
    run, stop = _jobs(r, "run")[0], _jobs(r, "stop")[0]
    assert run.preempted and stop.outputs == {"preempted": "true", "retry": "true"}
    stop_log = next(s for s in stop.steps if s.command == "gpu-runner stop").output
    assert "preempted=true" in stop_log and "retry 1 of 1 follows, on STANDARD" in stop_log
    assert _jobs(r, "stop-retry-1")[0].outputs == {"preempted": "false", "retry": "false"}
    first, second = (n for n, _z, _m in world.compute.inserted)
    assert is_label(first) and is_label(second, retry=1)
    assert _jobs(r, "run-retry-1")[0].container["runs_on"] == second
    assert [(n, m) for n, _z, m in world.compute.inserted] == [(first, "SPOT"), (second, "STANDARD")]
    world.assert_clean()

    # the preempted try's partial results: kept in their own artifact, marked, not counted
    partial = json.loads((world.artifacts / "gpu-runner-smoke--l4.attempt-1" / "smoke--l4" / "results.json").read_text())
    assert partial["entry"]["retry"] == 0 and partial["status"] == "failed" and partial["interrupted"] is True
    final = json.loads((world.artifacts / "gpu-runner-smoke--l4.attempt-1.retry-1" / "smoke--l4" / "results.json").read_text())
    assert final["entry"]["retry"] == 1 and final["status"] == "passed"
    assert final["entry"]["label"] == "gpu-runner-5150-1r1-smoke--l4"  # the plan's label: the nonce stays private
    report = world.artifacts / "gpu-runner-report"
    summary = (report / "summary.md").read_text()
    assert "preempted, passed on the retry (STANDARD)" in summary and "all 1 entry passed" in summary
    assert res["report"]["outputs"]["failed"] == "0" and res["report"]["outputs"]["not-run"] == "0"
    page = (report / "index.html").read_text()
    assert "Try 1: partial results of a preempted VM (not counted)" in page
    assert "preempted, passed on the retry (STANDARD)" in page

    from junitparser import JUnitXml

    xml = JUnitXml.fromfile(str(report / "junit.xml"))
    assert xml.failures == 0 and xml.errors == 0 and len(list(xml)) == 1
    body = next(iter(world.gh.comments.values()))["body"]
    assert "preempted, passed on the retry (STANDARD)" in body
    # both tries' VMs are paid for: the entry's cost is their sum
    cost = json.loads((report / "gpu-runner-smoke--l4.attempt-1.retry-1" / "smoke--l4" / "results.json").read_text())["cost"]
    assert [(v["name"], v["provisioning_model"]) for v in cost["vms"]] == [(first, "SPOT"), (second, "STANDARD")]
    assert cost["usd"] == pytest.approx(sum(v["usd"] for v in cost["vms"])) and all(v["usd"] for v in cost["vms"])
    assert "(try 1)" in summary and "(try 2)" in summary and "(try 1)" in body


def test_a_cancelled_run_still_deletes_every_vm(world: World) -> None:
    """The run is cancelled while the entry's notebook runs on its VM: the run job is cancelled,
    stop (always) deletes the VM and the registration, report does not run."""
    flag = world.ws.parent / "cancel-here"
    world.env["TEST_FLAG"] = str(flag)
    make_nb(world.ws / "notebooks", "smoke.ipynb", ON_VM_UNTIL_FLAG)
    r = world.runner("push", {"after": SHA}, machine="l4")
    r.cancel = flag.exists
    res = r.run_workflow()
    assert [(j.tag, j.result) for j in r.jobs if j.name != "plan"] == [
        ("entry smoke--l4 / start", "success"), ("entry smoke--l4 / run", "cancelled"),
        ("entry smoke--l4 / stop", "success")], _texts(r)
    assert res["report"]["result"] == "skipped"
    record = json.loads((world.artifacts / "gpu-runner-smoke--l4.attempt-1.record" / "gpu-runner-try.json").read_text())
    assert record["run"] == "cancelled" and record["will_retry"] is False
    world.assert_clean()


def test_empty_plan_runs_nothing(world: World) -> None:
    """changed-only on a push that touches no runtime: the action lists the changed files with git
    against the event's base, has-work is false and every later job is skipped."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.test", *args], cwd=world.ws,
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("add", "matrix.yml", "notebooks")
    git("commit", "-qm", "runtime")
    before = git("rev-parse", "HEAD")
    (world.ws / "README.md").write_text("docs\n")
    git("add", "README.md")
    git("commit", "-qm", "docs")
    r = world.runner("push", {"after": git("rev-parse", "HEAD"), "before": before}, **{"changed-only": True})
    res = r.run_workflow()
    assert res["plan"]["outputs"]["has-work"] == "false", _texts(r)
    assert [res[j]["result"] for j in ("entry", "report")] == ["skipped"] * 2
    (world.ws / "notebooks" / "smoke.ipynb").write_text((world.ws / "notebooks" / "smoke.ipynb").read_text() + " ")
    git("commit", "-qam", "notebook")
    r = world.runner("push", {"after": git("rev-parse", "HEAD"), "before": before}, **{"changed-only": True})
    assert r.run_job("plan", {}, None).outputs["has-work"] == "true"


def test_the_expression_evaluator() -> None:
    ctx = {"inputs": {"timeout-minutes": 0, "pdf": True}, "matrix": {"timeout_minutes": 60, "container": "",
           "gpu_count": 2}, "github": {"event_name": "push"}}
    assert evaluate("${{ inputs.timeout-minutes > 0 && inputs.timeout-minutes || matrix.timeout_minutes }}", ctx) == 60
    assert evaluate("${{ matrix.container || '' }}", ctx) == ""
    assert evaluate("run ${{ matrix.gpu_count }} on ${{ github.event_name }}", ctx) == "run 2 on push"
    assert evaluate("${{ format('{0}-{1}', 'a', matrix.gpu_count > 0 && '--gpus all' || '') }}", ctx) == "a---gpus all"
    assert evaluate("${{ fromJSON('{\"a\": [1, 2]}').a[1] }}", ctx) == 2
    assert condition("github.event_name == 'PUSH'", ctx, {"failed": False})
    assert not condition("github.event_name == 'push'", ctx, {"failed": True})
    assert condition("always() && github.event_name == 'push'", ctx, {"failed": True})
    assert condition("${{ !cancelled() }}", ctx, {"failed": True})


WORKFLOWS = REPO / ".github" / "workflows"


def _load(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True)
    return doc


def test_the_workflows_keep_their_promises() -> None:
    """Static promises the harness cannot see by running: pinned actions, permissions, no
    expressions in scripts, the fork-safe checkouts, secrets passed explicitly to the entry chain."""
    wf, entry = _load("gpu-notebooks.yml"), _load("gpu-entry.yml")
    action = yaml.safe_load((REPO / "action.yml").read_text())
    for doc in (wf, entry):
        assert doc["permissions"] == {}
        for name, job in doc["jobs"].items():
            assert "permissions" in job, name
            if "uses" in job:  # a call of a reusable workflow: only the keywords GitHub allows there
                assert set(job) <= {"name", "uses", "with", "secrets", "strategy", "needs", "if", "concurrency",
                                    "permissions"}, name
                assert job["uses"].startswith("./.github/workflows/") and job["secrets"] != "inherit"
                continue
            assert "timeout-minutes" in job, name
            for step in job["steps"]:
                uses = step.get("uses", "")
                if uses and not uses.startswith("./"):
                    ref = uses.split("@", 1)[1]
                    assert len(ref) == 40 and all(c in "0123456789abcdef" for c in ref), uses
                if "run" in step:
                    assert "${{" not in step["run"], (name, step)
                if uses.startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False
    for step in action["runs"]["steps"]:
        assert "${{" not in step.get("run", "")
        if "uses" in step:
            assert len(step["uses"].split("@", 1)[1]) == 40
    assert all("description" in v for v in action["inputs"].values())
    assert all("value" in v for v in action["outputs"].values())
    # the entry chain gets exactly the secrets the caller gave, by name
    call = wf["jobs"]["entry"]
    assert set(call["secrets"]) == set(wf["on"]["workflow_call"]["secrets"]) == set(entry["on"]["workflow_call"]["secrets"])
    # secrets-holding jobs never check out the pull request; the run jobs get no token
    for name, job in entry["jobs"].items():
        checkouts = [s.get("with", {}) for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@")
                     and "repository" not in s.get("with", {})]
        if name.startswith(("start", "stop")):
            assert [c.get("ref") for c in checkouts] == [None], name
            assert name.startswith("start") or job["if"].startswith("always()"), name
        else:
            run_step = next(s for s in job["steps"] if s.get("uses") == "./.gpu-runner")
            assert run_step["with"]["github-token"] == "" and "secrets." not in str(job), name
    assert "!cancelled()" in wf["jobs"]["report"]["if"]
    # only the comment job may write; the report job reads what the code under test wrote with none
    writers = {name for name, job in wf["jobs"].items()
               if any(v == "write" for k, v in (job.get("permissions") or {}).items() if k != "id-token")}
    assert writers == {"comment", "revoke"}, writers
    assert wf["jobs"]["revoke"]["permissions"] == {"pull-requests": "write"}
    assert [s.get("with", {}).get("path") for s in wf["jobs"]["revoke"]["steps"]
            if s.get("uses", "").startswith("actions/checkout@")] == [".gpu-runner"]  # nothing of the pull request
    # no job of a pull_request_target run uses the cache; the run jobs check out the approved commit
    for doc in (wf, entry):
        for name, job in doc["jobs"].items():
            for step in job.get("steps", []):
                if step.get("uses") == "./.gpu-runner":
                    assert step["with"]["cache"] in (False, "${{ github.event_name != 'pull_request_target' }}"), name
    for name, job in entry["jobs"].items():
        if name.startswith("run"):
            (code,) = [s["with"] for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@")
                       and "repository" not in s.get("with", {})]
            assert code["ref"] == "${{ github.event_name == 'pull_request_target' && github.event.pull_request.head.sha || '' }}"
    report_step = next(s for s in wf["jobs"]["report"]["steps"] if s.get("uses") == "./.gpu-runner"
                       and s["with"]["mode"] == "report")
    assert report_step["with"]["github-token"] == ""
    download = next(s for s in wf["jobs"]["comment"]["steps"] if s.get("uses", "").startswith(
        "actions/download-artifact@"))
    assert "artifact-ids" in download["with"] and "pattern" not in download["with"]


def test_the_tries_of_an_entry_are_the_same_jobs() -> None:
    """gpu-entry.yml repeats start, run and stop for each retry: the copies may differ only in the
    try they stand for (GitHub has no loops; this keeps them from drifting apart)."""
    jobs = _load("gpu-entry.yml")["jobs"]
    assert list(jobs) == ["start", "run", "stop", "start-retry-1", "run-retry-1", "stop-retry-1",
                          "start-retry-2", "run-retry-2", "stop-retry-2"]

    def normal(job: dict, n: int) -> str:
        text = json.dumps({k: v for k, v in job.items() if k not in ("needs", "if", "runs-on", "name")}, sort_keys=True)
        return text.replace(f"-retry-{n}", "").replace(f".retry-{n}", "").replace(f'"retry": {n}', '"retry": 0')

    for kind in ("start", "run", "stop"):
        first = normal(jobs[kind], 0)
        for n in (1, 2):
            assert normal(jobs[f"{kind}-retry-{n}"], n) == first, f"{kind}-retry-{n} differs from {kind}"
    # GitHub's success() is over every ancestor: a preempted run failed, so a retry asks for !cancelled()
    assert jobs["start-retry-1"]["if"] == ("${{ !cancelled() && needs.stop.result == 'success' && "
                                           "needs.stop.outputs.retry == 'true' }}")
    assert jobs["start-retry-2"]["if"] == ("${{ !cancelled() && needs.stop-retry-1.result == 'success' && "
                                           "needs.stop-retry-1.outputs.retry == 'true' }}")


def test_run_entry_on_its_own_vm_holds_the_machine_to_its_gpu_count(world: World) -> None:
    from gpu_runner.plan import entry_run_here

    label = "gpu-runner-5150-1-abcdefgh-smoke--l4"  # the label start makes: the plan's, with its random part
    env = {"GITHUB_RUN_ID": "5150", "GITHUB_RUN_ATTEMPT": "1", "RUNNER_NAME": label}
    on_vm = entry_run_here(Path("matrix.yml"), "smoke--l4", cwd=world.ws, env=env)
    assert on_vm.info.ran_locally is False and on_vm.expected_gpus == 1 and on_vm.expected_gpu_type == "nvidia-l4"
    elsewhere = entry_run_here(Path("matrix.yml"), "smoke--l4", cwd=world.ws, env={**env, "RUNNER_NAME": "laptop"})
    assert elsewhere.info.ran_locally is True and elsewhere.expected_gpus is None
    assert [n.path for n in on_vm.notebooks] == ["notebooks/smoke.ipynb"]


def test_the_run_job_installs_gpu_runner_for_real_and_tests_the_jobs_own_python(world: World, tmp_path: Path,
                                                                                runtime_python: Path,
                                                                                kernel_cache: Path) -> None:
    """The run job as it is on a runner: its python3 is the runtime's (here a virtual environment made
    from scratch, with a package gpu-runner lacks and no ipykernel), gpu-runner is installed by the
    action's own install script with real pip into its private venv, and the notebook that needs the
    runtime's package passes under the runtime's interpreter."""
    job_bin = tmp_path / "job-bin"
    job_bin.mkdir()
    (job_bin / "python3").write_text(f'#!/bin/sh\nexec "{runtime_python}" "$@"\n')
    (job_bin / "python3").chmod(0o755)
    make_nb(world.ws / "notebooks", "smoke.ipynb", "import sys, runtime_only",
            "print('EXE', sys.executable, 'PKG', runtime_only.__version__)")
    r = world.runner("push", {"after": SHA, "before": "0" * 40, "ref": "refs/heads/main"}, machine="here")
    r.real_install = lambda tag: tag.endswith("/ run")
    r.job_env = lambda tag: {"PATH": f"{job_bin}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": None,
                             "GPU_RUNNER_CACHE_DIR": str(kernel_cache)} if tag.endswith("/ run") else {}
    r.pip_cache = Path(os.environ.get("PIP_CACHE_DIR") or Path.home() / ".cache" / "pip")
    res = r.run_workflow()
    assert res["entry"]["result"] == "success", _texts(r)
    run_text = "\n".join(s.output for s in r.records if s.job.endswith("/ run"))
    assert "Install gpu-runner into" in run_text  # the real install ran, not a stand-in
    venv = next((tmp_path / "jobs").glob("entry_smoke--here___run/temp/gpu-runner/venv-*"))
    assert "from gpu_runner.cli import main" in (venv / "bin" / "gpu-runner").read_text()  # pip's script, no shim
    site = next(venv.glob("lib/python*/site-packages"))
    assert (site / "gpu_runner" / "__init__.py").is_file()
    # the GPU VM gets what running notebooks needs: no cloud client, no browser driver, no GitHub client
    assert not [p.name for p in site.iterdir() if p.name in ("playwright", "google", "github", "tenacity")]
    art = world.artifacts / "gpu-runner-smoke--here.attempt-1" / "smoke--here"
    facts = json.loads((art / "results.json").read_text())["facts"]
    assert facts["python_executable"] == str(job_bin / "python3") and facts["python_source"] == "GPU_RUNNER_PYTHON"
    nb = next(art.rglob("output.ipynb"))
    text = "".join("".join(o.get("text", "")) for c in json.loads(nb.read_text())["cells"] for o in c.get("outputs", []))
    assert f"EXE {runtime_python} PKG 1.2.3" in text
    assert res["report"]["result"] == "success"



def test_a_failed_entry_is_held_for_a_look_and_a_passing_one_is_not(world: World) -> None:
    """The workflow input debug-hold keeps a failed entry's VM after its job: stop leaves it (and
    its cost counts to the end of the hold), the stop job's summary says how to reach it, the
    comment never does; a passing entry's VM is deleted as usual."""
    make_nb(world.ws / "notebooks", "smoke.ipynb", "raise ValueError('broken on purpose')")
    r = world.runner("push", {"after": SHA}, machine="l4", **{"debug-hold": "30m"})
    res = r.run_workflow()
    assert res["report"]["result"] == "failure", _texts(r)
    assert world.compute.count() == 1 and world.gh.count() == 0  # the VM stays; its runner is gone
    vm = next(iter(world.compute.instances.values()))
    label = vm["name"]
    assert is_label(label)
    assert int(vm["scheduling"]["maxRunDuration"]["seconds"]) == 3600 + 1800  # the hold counted in its lifetime
    items = {i["key"]: i["value"] for i in vm["metadata"]["items"]}
    assert "gpu-runner-hold" in items and "\nHOLD_S=1800\n" in items["startup-script"]
    stop = _jobs(r, "stop")[0]
    assert f"gcloud compute ssh {label} --zone us-central1-a --project test-project --tunnel-through-iap" \
        in stop.summary and "jupyter lab" in stop.summary
    assert "is held for a look until" in next(s for s in stop.steps if s.command == "gpu-runner stop").output
    body = next(iter(world.gh.comments.values()))["body"]
    assert "gcloud compute ssh" not in body and "gcloud compute ssh" not in _jobs(r, "report")[0].summary
    assert "held for a look until" in body  # the cost table says the VM is held, not how to reach it
    record = json.loads((world.artifacts / "gpu-runner-smoke--l4.attempt-1.record" / "gpu-runner-try.json").read_text())
    assert record["vm"]["timed_by"] == "hold" and record["vm"]["held_until"]

    # done looking: stop --force deletes it
    from conftest import gpu_runner

    done = gpu_runner("stop", "--label", label, "--project", "test-project", "--force", cwd=world.ws,
                      env={**world.env, "GITHUB_OUTPUT": "", "GITHUB_STEP_SUMMARY": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    world.assert_clean()

    # the same hold for a passing entry: deleted as usual
    make_nb(world.ws / "notebooks", "smoke.ipynb", "print('smoke ok')")
    shutil_rmtree(world.artifacts)
    world.env["GITHUB_RUN_ID"] = "5151"
    r = world.runner("push", {"after": SHA}, machine="l4", **{"debug-hold": "30m"})
    res = r.run_workflow()
    assert res["report"]["result"] == "success", _texts(r)
    assert "gcloud" not in _jobs(r, "stop")[0].summary
    world.assert_clean()


BROKEN_UNTIL_FIXED = """\
import os, pathlib
assert not pathlib.Path(os.environ["TEST_FLAG"]).exists(), "broken until the fix lands"
"""


def test_re_running_the_failed_jobs_runs_a_failed_and_a_stocked_out_entry_again(world: World) -> None:
    """Attempt 1: the l4 entry's notebook fails, no zone has an A100. The fault is removed and a
    person clicks "Re-run failed jobs": attempt 2 runs only the failed jobs and those that depend on
    them; the jobs not run again keep their results and outputs (the plan, l4's start, whose VM
    attempt 1's stop deleted), and the earlier attempt's artifacts are still there.

    GitHub: "When you re-run failed jobs or a specific job, GitHub also re-runs the jobs that depend on
    them. Jobs that aren't included keep their outputs from the previous attempt, which the newly run
    jobs can use" (https://docs.github.com/en/actions/managing-workflow-runs/re-running-workflows-and-jobs);
    GITHUB_RUN_ATTEMPT is the attempt; artifact names are unique per run, every attempt included
    (https://github.com/actions/upload-artifact/issues/478). So l4's run may not wait for attempt 1's
    label (no VM will register it): it is skipped, stop says a fresh try follows, and the next try's
    start makes a VM of attempt 2; the a100 entry's failed start runs again. Both pass, the report
    reads attempt 2's artifacts for both and says it left attempt 1's out, and nothing is left."""
    (world.ws / "matrix.yml").write_text(THREE)
    flag = world.ws.parent / "broken"
    flag.write_text("the fault")
    world.env["TEST_FLAG"] = str(flag)
    make_nb(world.ws / "notebooks", "smoke.ipynb", BROKEN_UNTIL_FIXED, "print('smoke ok')")
    world.compute.stockout_machine_types = {"a2-highgpu-1g"}
    first = world.runner("push", {"after": SHA}, machine="l4 a100")
    res = first.run_workflow()
    assert [(j.tag, j.result) for j in first.jobs if j.name != "plan"] == [
        ("entry smoke--l4 / start", "success"), ("entry smoke--l4 / run", "failure"),
        ("entry smoke--l4 / stop", "success"),
        ("entry smoke--a100 / start", "failure"), ("entry smoke--a100 / stop", "success"),
        ("report", "failure"), ("comment", "success")], _texts(first)
    assert res["report"]["outputs"]["failed"] != "0" and res["report"]["outputs"]["not-run"] == "1"
    world.assert_clean()

    flag.unlink()  # the fault is gone; capacity is back
    world.compute.stockout_machine_types = set()
    world.env["GITHUB_RUN_ATTEMPT"] = "2"
    again = world.runner("push", {"after": SHA}, machine="l4 a100").rerun_failed_of(first)
    res = again.run_workflow()
    assert [(j.tag, j.result) for j in again.jobs] == [
        ("entry smoke--l4 / stop", "success"),
        ("entry smoke--l4 / start-retry-1", "success"), ("entry smoke--l4 / run-retry-1", "success"),
        ("entry smoke--l4 / stop-retry-1", "success"),
        ("entry smoke--a100 / start", "success"), ("entry smoke--a100 / run", "success"),
        ("entry smoke--a100 / stop", "success"), ("report", "success"), ("comment", "success")], _texts(again)
    # kept from attempt 1: the plan and l4's start (its outputs too); l4's run was skipped, not queued
    assert again.outcomes["plan"] == first.outcomes["plan"]
    assert again.outcomes["entry smoke--l4 / start"]["outputs"]["attempt"] == "1"
    assert again.outcomes["entry smoke--l4 / run"]["result"] == "skipped"
    assert _jobs(again, "stop")[0].outputs["retry"] == "true"
    runs_on = {j.tag: j.container["runs_on"] for j in again.jobs if j.name.startswith("run")}
    assert set(runs_on) == {"entry smoke--l4 / run-retry-1", "entry smoke--a100 / run"}
    # labels of attempt 2, each with start's random part
    assert re.fullmatch(r"gpu-runner-5150-2r1-[a-z2-7]{8}-smoke--l4", runs_on["entry smoke--l4 / run-retry-1"])
    assert re.fullmatch(r"gpu-runner-5150-2-[a-z2-7]{8}-smoke--a100", runs_on["entry smoke--a100 / run"])
    world.assert_clean()

    # both attempts' artifacts are there, each under its own name
    arts = sorted(p.name for p in world.artifacts.iterdir())
    assert "gpu-runner-smoke--l4.attempt-1" in arts and "gpu-runner-smoke--l4.attempt-2.retry-1" in arts
    assert "gpu-runner-smoke--a100.attempt-1.record" in arts and "gpu-runner-smoke--a100.attempt-2" in arts
    assert "gpu-runner-smoke--l4.attempt-2.record" not in arts  # the try attempt 1 started: no record of attempt 2
    out = res["report"]["outputs"]
    assert out["failed"] == "0" and out["not-run"] == "0" and int(out["passed"]) >= 2, _texts(again)
    summary = (world.artifacts / "gpu-runner-report" / "summary.md").read_text()
    assert "all 2 entries passed" in summary and "broken until the fix" not in summary
    report_step = next(s for s in _jobs(again, "report")[0].steps if s.command == "gpu-runner report")
    for entry in ("smoke--l4", "smoke--a100"):
        assert f"{entry}: reported from attempt 2 of this run (re-run); the results and records of attempt 1 " \
               "are left out" in report_step.output
    body = next(iter(world.gh.comments.values()))["body"]
    assert "broken until the fix" not in body and "no capacity" not in body


class _PrivateGit:
    """A private repository over smart HTTP (``git http-backend``): every request needs the token
    as GitHub takes it from actions/checkout (``AUTHORIZATION: basic base64(x-access-token:TOKEN)``),
    else 401 (what github.com answers for a private repository)."""

    def __init__(self, root: Path, token: str) -> None:
        import base64
        import http.server
        import subprocess
        import threading

        want = "basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
        self.denied = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_a: object) -> None:
                pass

            def _serve(self) -> None:
                if (self.headers.get("Authorization") or "").lower() != want.lower():
                    outer.denied += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {"GIT_PROJECT_ROOT": str(root), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
                       "QUERY_STRING": query, "REQUEST_METHOD": self.command,
                       "CONTENT_TYPE": self.headers.get("Content-Type", ""), "PATH": os.environ["PATH"],
                       "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""), "REMOTE_ADDR": "127.0.0.1"}
                out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                status = 200
                headers = []
                for line in head.decode().split("\r\n"):
                    k, _, v = line.partition(": ")
                    if k.lower() == "status":
                        status = int(v.split()[0])
                    elif k:
                        headers.append((k, v))
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_changed_only_on_a_private_repository_fetches_the_base_with_the_jobs_token(world: World,
                                                                                  tmp_path: Path) -> None:
    """The plan job's checkout keeps no credentials (persist-credentials: false) and holds only the
    event's commit (a shallow clone), so the base commit must be fetched; on a private repository
    that needs the job's token. The action passes it for that one fetch (never written to
    .git/config): the push touched only README.md, so nothing is planned. Without the token the fetch
    fails, and the warning says so and why before planning everything."""
    import subprocess

    def git(*args: str, cwd: Path = world.ws) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.test", *args], cwd=cwd,
                              check=True, capture_output=True, text=True).stdout.strip()

    src = tmp_path / "src"
    shutil_copytree(world.ws, src)
    git("init", "-q", "-b", "main", cwd=src)
    git("add", "matrix.yml", "notebooks", cwd=src)
    git("commit", "-qm", "runtime", cwd=src)
    before = git("rev-parse", "HEAD", cwd=src)
    (src / "README.md").write_text("docs\n")
    git("add", "README.md", cwd=src)
    git("commit", "-qm", "docs", cwd=src)
    after = git("rev-parse", "HEAD", cwd=src)
    bare = tmp_path / "served" / "runtime.git"
    git("clone", "-q", "--bare", str(src), str(bare), cwd=tmp_path)
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=bare)
    git("config", "http.receivepack", "false", cwd=bare)
    shutil_rmtree(world.ws)
    git("clone", "-q", "--depth", "1", f"file://{bare}", str(world.ws), cwd=tmp_path)  # what checkout leaves
    served = _PrivateGit(bare.parent, "test-token")
    try:
        git("remote", "set-url", "origin", f"{served.url}/runtime.git")
        world.env["GITHUB_SERVER_URL"] = served.url
        r = world.runner("push", {"after": after, "before": before}, **{"changed-only": True})
        job = r.run_job("plan", {}, None)
        text = "\n".join(s.output for s in job.steps)
        assert job.outputs["has-work"] == "false", text
        assert "planning every runtime" not in text and "test-token" not in text.replace("::add-mask::test-token", "")
        assert "extraheader" not in (world.ws / ".git" / "config").read_text()

        world.env["GITHUB_TOKEN"] = "wrong-token"  # the job's token cannot read it: said, with the reason
        r = world.runner("push", {"after": after, "before": before}, **{"changed-only": True})
        job = r.run_job("plan", {}, None)
        text = "\n".join(s.output for s in job.steps)
        assert job.outputs["has-work"] == "true"
        assert f"changed-only: cannot list the changed files against {before} (git fetch of {before} failed:" in text
        assert served.denied >= 1
    finally:
        served.close()


def test_stop_deletes_the_vm_its_start_made_in_an_earlier_attempt(world: World, tmp_path: Path) -> None:
    """A re-run attempt keeps the start jobs it does not run again, with their outputs: when attempt 1's
    stop failed, attempt 2's stop must delete the VM and runner attempt 1's start made, whose label is
    start's output (GITHUB_RUN_ATTEMPT is 2 now, so a label stop computed itself names nothing)."""
    from conftest import gpu_runner

    out = tmp_path / "start-output"
    out.write_text("")
    started = gpu_runner("start", "--matrix", "matrix.yml", "--entry", "smoke--l4", "--poll", "0.05s", cwd=world.ws,
                         env={**world.env, "GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": ""})
    assert started.returncode == 0, started.stdout + started.stderr
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert is_label(outputs["label"]) and world.compute.count() == 1
    stop = gpu_runner("stop", "--matrix", "matrix.yml", "--entry", "smoke--l4", "--start-result", "success",
                      "--start-outputs", json.dumps({"label": outputs["label"], "zone": outputs["zone"]}),
                      "--run-result", "skipped", cwd=world.ws,
                      env={**world.env, "GITHUB_RUN_ATTEMPT": "2", "GITHUB_OUTPUT": "", "GITHUB_STEP_SUMMARY": ""})
    assert stop.returncode == 0, stop.stdout + stop.stderr
    world.assert_clean()
    bad = gpu_runner("stop", "--matrix", "matrix.yml", "--entry", "smoke--l4", "--start-outputs",
                     json.dumps({"label": "some-vm-of-someone-else"}), cwd=world.ws,
                     env={**world.env, "GITHUB_OUTPUT": "", "GITHUB_STEP_SUMMARY": ""})
    assert bad.returncode == 2 and "is not one start makes" in bad.stdout + bad.stderr

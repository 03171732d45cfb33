"""The reusable workflow, end to end: its jobs read from .github/workflows/gpu-notebooks.yml and
action.yml and run here (tests/workflow_harness.py) with the environment GitHub sets, against the
Compute Engine and GitHub stand-ins. plan -> start -> run (the notebooks on this machine) -> stop
-> report -> comment, ending with the comment posted, the artifacts in place, zero VMs and zero
runner registrations; and the fork gate for pull requests from forks."""

from __future__ import annotations

import json
import os
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
            "GPU_RUNNER_RETRY_ATTEMPTS": "4", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO / "src"),
        }

    def runner(self, event_name: str, event: dict, **inputs: object) -> Runner:
        return Runner(workspace=self.ws, base_env=self.env, event_name=event_name, event=event,
                      inputs={"matrix": "matrix.yml", "pdf": False, **inputs},
                      secrets={"runner-admin-token": "test-token"}, artifacts=self.artifacts)

    def close(self) -> None:
        self.compute.stop()
        self.gh.stop()


@pytest.fixture
def world(tmp_path: Path):
    w = World(tmp_path)
    yield w
    w.close()


def _pr_event(*, fork: bool, labels: list[str] = (), action: str = "opened") -> dict:
    head = "contributor/runtime" if fork else REPO_NAME
    return {"action": action, "number": 12, "pull_request": {
        "number": 12, "labels": [{"name": n} for n in labels],
        "head": {"sha": "4" * 40, "repo": {"full_name": head, "fork": fork}},
        "base": {"sha": "5" * 40, "ref": "main", "repo": {"full_name": REPO_NAME}}}}


def _texts(r: Runner) -> str:
    return "\n".join(s.output for s in r.records)


def test_push_runs_every_job_and_leaves_nothing_running(world: World) -> None:
    r = world.runner("push", {"after": SHA, "before": "0" * 40, "ref": "refs/heads/main"})
    res = r.run_workflow()
    jobs = res["_jobs"]
    assert {k: v["result"] for k, v in res.items() if k != "_jobs"} == {
        "plan": "success", "start": "success", "run": "success", "stop": "success", "report": "success",
        "comment": "success"}, _texts(r)
    items = json.loads(res["plan"]["outputs"]["matrix"])["include"]
    assert [i["id"] for i in items] == ["smoke--here", "smoke--l4"] and res["plan"]["outputs"]["has-work"] == "true"

    # start made the VM with its just-in-time runner; stop took both away
    assert world.compute.calls["instances.insert"] == 1 and world.gh.calls["runners.jitconfig"] == 1
    assert world.compute.count() == 0 and world.gh.count() == 0
    assert not world.compute.rejected and not world.gh.rejected

    # run: the gce entry runs on its label inside the runtime's container with the GPUs; the local one on ubuntu
    run_jobs = {j.container["runs_on"]: j.container for j in jobs["run"]}
    assert set(run_jobs) == {"ubuntu-latest", "gpu-runner-5150-1-smoke--l4"}
    assert run_jobs["gpu-runner-5150-1-smoke--l4"]["image"] == "python:3.12-slim"
    assert "--gpus all" in run_jobs["gpu-runner-5150-1-smoke--l4"]["options"]
    assert "--gpus" not in run_jobs["ubuntu-latest"]["options"]

    # artifacts: one per entry (no top-level reports in them), then the merged report
    arts = sorted(p.name for p in world.artifacts.iterdir())
    assert arts == ["gpu-runner-report", "gpu-runner-smoke--here", "gpu-runner-smoke--l4", "gpu-runner-summary"]
    assert [p.name for p in (world.artifacts / "gpu-runner-summary").iterdir()] == ["summary.md"]
    entry_art = world.artifacts / "gpu-runner-smoke--l4"
    assert [p.name for p in entry_art.iterdir()] == ["smoke--l4"]
    res_l4 = json.loads((entry_art / "smoke--l4" / "results.json").read_text())
    assert res_l4["status"] == "passed" and res_l4["entry"]["ran_locally"] is True
    assert (entry_art / "smoke--l4" / "notebooks" / "smoke" / "output.ipynb").is_file()  # no notebooks/notebooks
    report = world.artifacts / "gpu-runner-report"
    for f in ("index.html", "summary.md", "junit.xml"):
        assert (report / f).is_file(), f
    assert 'tests="' in (report / "junit.xml").read_text()
    assert res["report"]["outputs"]["failed"] == "0" and int(res["report"]["outputs"]["passed"]) >= 2

    # the commit comment, with the marker keyed on the matrix file, and the job summary
    comments = list(world.gh.comments.values())
    assert len(comments) == 1 and comments[0]["kind"] == "commit" and comments[0]["sha"] == SHA
    assert comments[0]["body"].startswith("<!-- gpu-runner:summary matrix.yml -->")
    assert "smoke" in comments[0]["body"]
    assert "smoke" in jobs["report"][0].summary
    # the report step got no token; the comment job, the only one that may write, posted
    report_step = next(s for s in jobs["report"][0].steps if s.name == "Report")
    assert "test-token" not in report_step.output and jobs["comment"][0].result == "success"
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
    assert world.compute.count() == 0 and world.gh.count() == 0


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
    r = world.runner("pull_request", _pr_event(fork=False))
    res = r.run_workflow()
    assert res["report"]["result"] == "failure"  # the notebook failed, as before the baseline existed
    report = res["_jobs"]["report"][0]
    assert [s.outcome for s in report.steps if s.name.startswith("Baseline")] == ["success"]
    body = next(iter(world.gh.comments.values()))["body"]
    section = body[body.index("### Compared with the baseline"):]
    assert "2 newly failing" in section.splitlines()[2]
    for entry in ("smoke--here", "smoke--l4"):
        assert f"| <code>{entry}</code> | <code>notebooks/smoke.ipynb</code> | passed | failed: cell 1: ValueError: " \
               "broken on purpose |" in section
    assert world.gh.calls["artifacts.blob"] == 2 and world.gh.leaked_auth == [] and not world.gh.rejected
    assert (world.artifacts / "gpu-runner-report" / "comparison.json").is_file()


def shutil_rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


@pytest.mark.parametrize("event_name,labels,action,gpu", [
    ("pull_request_target", [], "opened", False),
    ("pull_request_target", ["gpu-runner:approved"], "labeled", True),
    ("pull_request_target", ["gpu-runner:approved"], "synchronize", False),
    ("pull_request", ["gpu-runner:approved"], "labeled", False),
])
def test_fork_pull_requests_get_gpu_entries_only_when_approved(world: World, event_name: str, labels: list[str],
                                                                action: str, gpu: bool) -> None:
    r = world.runner(event_name, _pr_event(fork=True, labels=labels, action=action))
    job = r.run_job("plan", {}, None)
    assert job.result == "success", "\n".join(s.output for s in job.steps)
    ids = [i["id"] for i in json.loads(job.outputs["matrix"])["include"]]
    assert ids == (["smoke--here", "smoke--l4"] if gpu else ["smoke--here"])
    if not gpu:
        assert "GPU entries not run" in job.summary and "smoke--l4" in job.summary
    assert world.compute.count() == 0


def test_a_failing_notebook_fails_run_and_report_but_stop_and_comment_still_happen(world: World) -> None:
    make_nb(world.ws / "notebooks", "smoke.ipynb", "raise ValueError('broken on purpose')")
    r = world.runner("push", {"after": SHA})
    res = r.run_workflow()
    assert res["run"]["result"] == "failure" and res["stop"]["result"] == "success"
    assert res["report"]["result"] == "failure" and res["report"]["outputs"]["failed"] != "0"
    assert world.compute.count() == 0 and world.gh.count() == 0
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
    (world.artifacts / "gpu-runner-smoke--l4" / "summary.md").write_text("cc @org/team: all passed\n")
    for name in ("gpu-runner-report", "gpu-runner-summary"):
        import shutil

        shutil.rmtree(world.artifacts / name)
    rep = r.run_job("report", {"plan": res["plan"], "run": res["run"]}, None)
    assert rep.result == "failure"
    step = next(s for s in rep.steps if s.name == "Report")
    assert "results.json refused, nothing reported" in step.output
    assert rep.outputs["summary-artifact-id"] == "" and not (world.artifacts / "gpu-runner-summary").exists()
    wf = r.workflow["jobs"]["comment"]
    needs = {"plan": res["plan"], "report": {"result": rep.result, "outputs": rep.outputs}}
    assert not condition(wf["if"], {"github": r.github_ctx(), "inputs": r.resolved_inputs, "needs": needs},
                         {"failed": True, "cancelled": False})
    assert world.gh.comments == {}


def test_a_start_that_fails_skips_run_and_stop_cleans_up(world: World) -> None:
    world.compute.stockout_rate = 1.0  # no zone has capacity
    r = world.runner("push", {"after": SHA})
    res = r.run_workflow()
    assert res["start"]["result"] == "failure" and res["run"]["result"] == "skipped"
    assert res["stop"]["result"] == "success"
    assert world.compute.count() == 0 and world.gh.count() == 0


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
    assert [res[j]["result"] for j in ("start", "run", "stop", "report", "comment")] == ["skipped"] * 5
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


def test_the_workflow_keeps_its_promises() -> None:
    """Static promises the harness cannot see by running: pinned actions, permissions, no
    expressions in scripts, the fork-safe checkouts."""
    wf = yaml.safe_load((REPO / ".github/workflows/gpu-notebooks.yml").read_text())
    action = yaml.safe_load((REPO / "action.yml").read_text())
    assert wf["permissions"] == {}
    for name, job in wf["jobs"].items():
        assert "permissions" in job and "timeout-minutes" in job, name
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
    # secrets-holding jobs never check out the pull request; the run job gets no token
    for name in ("start", "stop"):
        refs = [s.get("with", {}).get("ref") for s in wf["jobs"][name]["steps"] if s.get("uses", "").startswith(
            "actions/checkout@") and "repository" not in s.get("with", {})]
        assert refs == [None], name
    run_step = next(s for s in wf["jobs"]["run"]["steps"] if s.get("uses") == "./.gpu-runner")
    assert run_step["with"]["github-token"] == ""
    assert wf["jobs"]["stop"]["if"].startswith("always()")
    assert "!cancelled()" in wf["jobs"]["report"]["if"]
    # only the comment job may write; the report job reads what the code under test wrote with none
    writers = {name for name, job in wf["jobs"].items()
               if any(v == "write" for k, v in (job.get("permissions") or {}).items() if k != "id-token")}
    assert writers == {"comment"}, writers
    report_step = next(s for s in wf["jobs"]["report"]["steps"] if s.get("uses") == "./.gpu-runner"
                       and s["with"]["mode"] == "report")
    assert report_step["with"]["github-token"] == ""
    download = next(s for s in wf["jobs"]["comment"]["steps"] if s.get("uses", "").startswith(
        "actions/download-artifact@"))
    assert "artifact-ids" in download["with"] and "pattern" not in download["with"]


def test_run_entry_on_its_own_vm_holds_the_machine_to_its_gpu_count(world: World) -> None:
    from gpu_runner.plan import entry_run_here

    label = "gpu-runner-5150-1-smoke--l4"
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
    r.real_install = lambda tag: tag.startswith("run ")
    r.job_env = lambda tag: {"PATH": f"{job_bin}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": None,
                             "GPU_RUNNER_CACHE_DIR": str(kernel_cache)} if tag.startswith("run ") else {}
    r.pip_cache = Path(os.environ.get("PIP_CACHE_DIR") or Path.home() / ".cache" / "pip")
    res = r.run_workflow()
    assert res["run"]["result"] == "success", _texts(r)
    run_text = "\n".join(s.output for s in r.records if s.job.startswith("run "))
    assert "Install gpu-runner into" in run_text  # the real install ran, not a stand-in
    venv = next((tmp_path / "jobs").glob("run_*/temp/gpu-runner/venv-*"))
    assert "from gpu_runner.cli import main" in (venv / "bin" / "gpu-runner").read_text()  # pip's script, no shim
    site = next(venv.glob("lib/python*/site-packages"))
    assert (site / "gpu_runner" / "__init__.py").is_file()
    # the GPU VM gets what running notebooks needs: no cloud client, no browser driver, no GitHub client
    assert not [p.name for p in site.iterdir() if p.name in ("playwright", "google", "github", "tenacity")]
    art = world.artifacts / "gpu-runner-smoke--here" / "smoke--here"
    facts = json.loads((art / "results.json").read_text())["facts"]
    assert facts["python_executable"] == str(job_bin / "python3") and facts["python_source"] == "GPU_RUNNER_PYTHON"
    nb = next(art.rglob("output.ipynb"))
    text = "".join("".join(o.get("text", "")) for c in json.loads(nb.read_text())["cells"] for o in c.get("outputs", []))
    assert f"EXE {runtime_python} PKG 1.2.3" in text
    assert res["report"]["result"] == "success"


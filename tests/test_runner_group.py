"""A runner group limited to selected workflows: start, stop, janitor and doctor through the real
command line and PyGithub, against the Compute Engine and GitHub stand-ins.

GitHub documents runner groups, with their repository and workflow access policies, for
organisation (and enterprise) runners only: "Runner groups are used to control access to
self-hosted runners at the organization and enterprise level"
(https://docs.github.com/en/actions/concepts/runners/runner-groups). A group limited to "Selected
workflows" lists them as ``owner/repo/.github/workflows/file.yml@ref`` ("a ref, tag, or long SHA
is required": ``selected_workflows`` in GET /orgs/{org}/actions/runner-groups/{runner_group_id},
https://docs.github.com/en/rest/actions/self-hosted-runner-groups), and a job of a workflow that is
not listed waits for a runner and is never given one
(https://docs.github.com/en/actions/how-tos/manage-runners/self-hosted-runners/manage-access#changing-which-workflows-can-access-a-runner-group).
So a group given to ``start`` makes the runner an organisation runner in that group, and only once
the group restricts what it should."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cloud_gce import L4, REPO_ID, World

WORKFLOW = "octo-org/runtime/.github/workflows/gpu.yml@refs/heads/main"
REUSABLE = "octo-org/gpu-runner/.github/workflows/gpu-entry.yml@v1"


@pytest.fixture
def world(tmp_path: Path):
    w = World(tmp_path)
    w.env["GITHUB_WORKFLOW_REF"] = WORKFLOW
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"repository": {"full_name": "octo-org/runtime", "private": True,
                                                "visibility": "private"}}))
    w.env["GITHUB_EVENT_PATH"] = str(event)
    yield w
    w.close()


def _group(world: World, **kw) -> str:
    kw.setdefault("selected_workflows", [WORKFLOW])
    return str(world.gh.add_runner_group("gpu", **kw))


def test_start_with_a_group_registers_an_org_runner_in_it_and_stop_removes_it(world: World) -> None:
    gid = _group(world)
    r = world.start(L4, GPU_RUNNER_RUNNER_GROUP_ID=gid)
    assert r.returncode == 0, r.stdout + r.stderr
    assert world.gh.runners == {}  # no repository runner
    [org_runner] = world.gh.org_runners.values()
    assert org_runner["runner_group_id"] == int(gid) and org_runner["name"] == world.label()
    assert org_runner["status"] == "online"
    # GitHub gives it the run job of this workflow, never a job of another workflow
    assert world.gh.may_take(world.label(), repo="octo-org/runtime", workflow_ref=WORKFLOW)
    assert not world.gh.may_take(world.label(), repo="octo-org/runtime",
                                 workflow_ref="octo-org/runtime/.github/workflows/gpu.yml@refs/pull/7/merge")
    s = world.stop(GPU_RUNNER_RUNNER_GROUP_ID=gid)
    assert s.returncode == 0, s.stdout + s.stderr
    assert "removed the runner registration" in s.stdout + s.stderr
    world.assert_clean()  # zero VMs, zero registrations in either scope


def test_a_group_listing_the_reusable_workflow_is_accepted(world: World) -> None:
    gid = _group(world, selected_workflows=[REUSABLE])
    r = world.start(L4, GPU_RUNNER_RUNNER_GROUP_ID=gid)
    assert r.returncode == 0, r.stdout + r.stderr
    assert world.gh.runners == {} and [g["runner_group_id"] for g in world.gh.org_runners.values()] == [int(gid)]
    assert world.stop(GPU_RUNNER_RUNNER_GROUP_ID=gid).returncode == 0
    world.assert_clean()


@pytest.mark.parametrize("kw, public, needle", [
    ({"restricted_to_workflows": False}, False, "lets every workflow use its runners"),
    ({"selected_workflows": ["octo-org/runtime/.github/workflows/other.yml@refs/heads/main"]}, False,
     "does not list this workflow"),
    ({"selected_workflows": [WORKFLOW.replace("refs/heads/main", "refs/heads/dev")]}, False,
     "does not list this workflow"),
    ({"visibility": "private"}, True, "does not let octo-org/runtime use it"),
    ({"visibility": "all", "allows_public_repositories": False}, True, "does not allow public repositories"),
    (None, False, "does not exist in organisation octo-org"),
], ids=["not-restricted", "other-workflow", "other-ref", "private-only", "no-public", "no-such-group"])
def test_a_group_that_does_not_restrict_refuses_in_one_line_and_registers_nothing(world: World, kw, public: bool,
                                                                                   needle: str) -> None:
    gid = _group(world, **kw) if kw is not None else "77"
    if public:
        Path(world.env["GITHUB_EVENT_PATH"]).write_text(json.dumps({"repository": {"private": False,
                                                                                   "visibility": "public"}}))
    r = world.start(L4, GPU_RUNNER_RUNNER_GROUP_ID=gid)
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in r.stderr, r.stderr
    assert "Settings > Actions > Runner groups" in errors[0] or "runner-group-id" in errors[0]
    assert world.gh.count() == 0 and world.compute.count() == 0 and not world.compute.inserted
    world.assert_clean()


def test_a_token_without_the_org_permission_says_which_one(world: World) -> None:
    gid = _group(world)
    world.gh.org_runner_admin = False
    r = world.start(L4, GPU_RUNNER_RUNNER_GROUP_ID=gid)
    assert r.returncode == 3 and "Self-hosted runners: read and write" in r.stderr, r.stdout + r.stderr
    assert world.gh.count() == 0 and world.compute.count() == 0


def test_janitor_deletes_our_ended_runs_org_runner_and_leaves_another_repositorys(world: World) -> None:
    """Run 1000 is this repository's and has ended; run 2000 is another repository's (GitHub answers
    404 for it here): its organisation runner, in the same group and of the same name pattern, stays.
    A runner of the pattern in another group is not ours either."""
    gid = int(_group(world))
    other = world.gh.add_runner_group("someone-else", selected_workflows=["octo-org/x/.github/workflows/a.yml@main"])
    world.gh.finished_runs.add("1000")
    world.gh.missing_runs.add("2000")
    ours = world.gh.add_org_runner("gpu-runner-1000-1-abcdefgh-torch--l4", group_id=gid)
    theirs = world.gh.add_org_runner("gpu-runner-2000-1-abcdefgh-torch--l4", group_id=gid)
    elsewhere = world.gh.add_org_runner("gpu-runner-1000-1-zyxwvuts-torch--l4", group_id=other)
    r = world.cli("janitor", "--project", "test-project", GPU_RUNNER_RUNNER_GROUP_ID=str(gid),
                  GITHUB_REPOSITORY_ID=REPO_ID)
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(world.gh.org_runners) == {theirs, elsewhere} and ours not in world.gh.org_runners
    assert "deleted 0 VM(s) and 1 registration(s)" in r.stdout
    assert "left alone runner gpu-runner-2000-1-abcdefgh-torch--l4 of organisation octo-org" in r.stdout
    with world.gh.lock:
        world.gh.org_runners.clear()


def test_stand_in_never_gives_an_org_runner_to_a_workflow_or_repository_its_group_does_not_allow(world: World) -> None:
    """GitHub's assignment rule as the stand-in models it: the group's selected workflows and
    repositories decide, whatever the runner's labels."""
    gid = int(_group(world, repositories=["octo-org/runtime"]))
    world.gh.add_org_runner("gpu-runner-1-1-abcdefgh-x", group_id=gid)
    assert world.gh.may_take("gpu-runner-1-1-abcdefgh-x", repo="octo-org/runtime", workflow_ref=WORKFLOW)
    assert not world.gh.may_take("gpu-runner-1-1-abcdefgh-x", repo="octo-org/runtime",
                                 workflow_ref="octo-org/runtime/.github/workflows/evil.yml@refs/pull/9/merge")
    assert not world.gh.may_take("gpu-runner-1-1-abcdefgh-x", repo="octo-org/other", workflow_ref=WORKFLOW)
    assert not world.gh.may_take("gpu-runner-1-1-abcdefgh-x", repo="octo-org/runtime", workflow_ref=WORKFLOW,
                                 repo_public=True)
    with world.gh.lock:
        world.gh.org_runners.clear()


# -- doctor ---------------------------------------------------------------------------------


def _doctor(world: World, gid: str) -> list[dict]:
    r = world.cli("doctor", "--format", "json", "--runner-group-id", gid, GPU_RUNNER_RESOURCEMANAGER_EMULATOR_HOST=
                  world.compute.address)
    assert "Traceback" not in r.stderr, r.stderr
    return [c for c in json.loads(r.stdout)["checks"] if c["check"] == "runner group"]


def test_doctor_passes_a_group_that_restricts(world: World) -> None:
    [c] = _doctor(world, _group(world))
    assert c["status"] == "pass", c


@pytest.mark.parametrize("kw, public, needle", [
    ({"restricted_to_workflows": False}, False, "lets every workflow use its runners"),
    ({"selected_workflows": ["octo-org/runtime/.github/workflows/other.yml@refs/heads/main"]}, False,
     "does not list this workflow"),
    ({"visibility": "private"}, True, "does not let octo-org/runtime use it"),
    ({"visibility": "all"}, True, "does not allow public repositories"),
    (None, False, "does not exist"),
], ids=["not-restricted", "other-workflow", "private-only", "no-public", "no-such-group"])
def test_doctor_fails_a_group_that_does_not_restrict(world: World, kw, public: bool, needle: str) -> None:
    gid = _group(world, **kw) if kw is not None else "77"
    if public:
        Path(world.env["GITHUB_EVENT_PATH"]).write_text(json.dumps({"repository": {"visibility": "public"}}))
    [c] = _doctor(world, gid)
    assert c["status"] == "fail" and needle in c["detail"], c
    assert c["fix"] and "\n" not in c["fix"]

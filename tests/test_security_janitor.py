"""The janitor deletes only this repository's VMs: it matches the repository's numeric id
(``GITHUB_REPOSITORY_ID``), never its name as a label value (``org/gpu.tests`` and
``org/gpu-tests`` are the same ``gh-repo`` label, as a GCE label value holds only lower-case
letters, digits, ``_`` and ``-``: https://cloud.google.com/compute/docs/labeling-resources#requirements),
and a run that GitHub answers 404 for is not one of this repository's (GET
/repos/{owner}/{repo}/actions/runs/{run_id} answers 404 for a run id of another repository:
https://docs.github.com/en/rest/actions/workflow-runs#get-a-workflow-run), so its VM is left alone."""

from __future__ import annotations

import pytest
from test_cloud_gce import REPO_ID, World, _names, _orphan_vm


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.close()


def test_a_colliding_repository_names_vms_are_never_touched(world: World) -> None:
    """octo-org/gpu.tests and octo-org/gpu-tests share the gh-repo label value; run 1000 has ended
    in ours. The other repository's VM (its own id) stays, however old."""
    env = {"GITHUB_REPOSITORY": "octo-org/gpu-tests"}
    world.gh.repo = "octo-org/gpu-tests"
    world.gh.finished_runs.add("1000")
    _orphan_vm(world, "gpu-runner-1000-1-abcdefgh-torch--l4", repo="octo-org_gpu-tests", repo_id="8001",
               run="1000", age_s=30 * 86400)
    r = world.cli("janitor", "--project", "test-project", **env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert world.compute.deleted == [] and "deleted 0 VM(s)" in r.stdout
    with world.compute.lock:
        world.compute.instances.clear()


def test_a_run_github_does_not_know_leaves_its_vm_alone(world: World) -> None:
    """Our repository id, but GitHub answers 404 for the run: not ours to judge, never deleted."""
    world.gh.missing_runs.add("1000")
    _orphan_vm(world, "gpu-runner-1000-1-abcdefgh-torch--l4", run="1000", age_s=30 * 86400)
    r = world.cli("janitor", "--project", "test-project")
    assert r.returncode == 0, r.stdout + r.stderr
    assert world.compute.deleted == [] and "left alone VM gpu-runner-1000-1-abcdefgh-torch--l4" in r.stdout
    assert _names(world)[0] == {"gpu-runner-1000-1-abcdefgh-torch--l4"}
    with world.compute.lock:
        world.compute.instances.clear()


def test_the_janitor_without_the_repository_id_refuses_to_guess(world: World) -> None:
    r = world.cli("janitor", "--project", "test-project", GITHUB_REPOSITORY_ID="")
    assert r.returncode == 2 and "GITHUB_REPOSITORY_ID" in r.stderr, r.stdout + r.stderr
    assert REPO_ID

"""The approval of a fork's pull request is bound to the exact commit a user with write access
approved. The plan job's fork gate (on ``pull_request_target``) runs something only for a
``labeled`` event of the approval label by a user with write access AND an APPROVED review, by a
user with write access, whose ``commit_id`` is the head the event names (the commit the run jobs
check out). GitHub documents a review's ``commit_id`` as the commit the review was made on, and its
``state`` (APPROVED, CHANGES_REQUESTED, COMMENTED, DISMISSED)
(https://docs.github.com/en/rest/pulls/reviews#list-reviews-for-a-pull-request); the
``pull_request_target`` ``labeled`` payload carries the pull request as it is when the label is
applied, head SHA included
(https://docs.github.com/en/webhooks/webhook-events-and-payloads#pull_request). The revoke job
reads the labels the pull request carries now (GET /repos/{owner}/{repo}/issues/{number}/labels,
https://docs.github.com/en/rest/issues/labels#list-labels-for-an-issue), not the event's copy.

The workflow's jobs run through tests/workflow_harness.py against the GitHub stand-in."""

from __future__ import annotations

import json

import pytest
from test_workflow_e2e import APPROVAL, HEAD_SHA, World, _pr_event

OLDER = "6" * 40


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    w.gh.permissions = {"maintainer": "write", "other-maintainer": "admin", "triager": "read"}
    yield w
    w.close()


def _plan(world: World, reviews: list[dict[str, str]]):
    world.gh.pr_reviews = {12: reviews}
    world.gh.pr_labels = {12: [APPROVAL]}
    r = world.runner("pull_request_target", _pr_event(fork=True, labels=[APPROVAL], action="labeled", label=APPROVAL,
                                                      sender="maintainer"))
    job = r.run_job("plan", {}, None)
    assert job.result == "success", "\n".join(s.output for s in job.steps)
    return job


@pytest.mark.parametrize("reviews", [
    # a force-push just before the label: nobody reviewed the new head
    [],
    # the maintainer reviewed the commit before the force-push
    [{"login": "maintainer", "state": "APPROVED", "commit_id": OLDER}],
    # an approval of the head by someone who may not write
    [{"login": "triager", "state": "APPROVED", "commit_id": HEAD_SHA}],
    # approved the head, then asked for changes on it
    [{"login": "maintainer", "state": "APPROVED", "commit_id": HEAD_SHA},
     {"login": "maintainer", "state": "CHANGES_REQUESTED", "commit_id": HEAD_SHA}],
    # a comment is no approval
    [{"login": "maintainer", "state": "COMMENTED", "commit_id": HEAD_SHA}],
], ids=["no-review", "older-commit", "no-write-access", "changes-requested", "comment-only"])
def test_a_label_without_an_approving_review_of_the_head_runs_nothing(world: World, reviews) -> None:
    job = _plan(world, reviews)
    assert job.outputs["has-work"] == "false" and json.loads(job.outputs["matrix"])["include"] == []
    assert f"approved commit {HEAD_SHA[:12]} in a review" in job.summary, job.summary
    assert world.gh.calls["pull-reviews.list"] == 1


def test_a_maintainers_review_of_the_head_and_the_label_run_exactly_that_commit(world: World) -> None:
    job = _plan(world, [{"login": "maintainer", "state": "APPROVED", "commit_id": OLDER},
                        {"login": "other-maintainer", "state": "APPROVED", "commit_id": HEAD_SHA}])
    assert [i["id"] for i in json.loads(job.outputs["matrix"])["include"]] == ["smoke--here", "smoke--l4"]
    assert world.gh.calls["pull-reviews.list"] == 1  # the reviews were read, not the label alone
    said = "\n".join(s.output for s in job.steps)
    assert f"approved by other-maintainer in a review of commit {HEAD_SHA}, labelled by maintainer" in said


def test_revoke_reads_the_labels_the_pull_request_carries_now(world: World) -> None:
    """The synchronize event was sent before the maintainer's label landed (its copy of the labels
    has none): the label is on the pull request now, for older code, and comes off."""
    world.gh.pr_labels = {12: [APPROVAL, "bug"]}
    r = world.runner("pull_request_target", _pr_event(fork=True, labels=[], action="synchronize"))
    job = r.run_job("revoke", {}, None)
    assert job.result == "success", "\n".join(s.output for s in job.steps)
    assert world.gh.pr_labels == {12: ["bug"]} and world.gh.calls["issue-labels.list"] == 1

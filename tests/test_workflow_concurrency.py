"""The callers' ``concurrency``: the example caller (runtime-tests.yml) and the callers in
docs/github-actions.md never let GitHub drop a push, a dispatch or an approval.

GitHub keeps at most one running and one pending run per concurrency group; a newer run in the
group cancels the pending one, whatever cancel-in-progress says
(https://docs.github.com/en/actions/writing-workflows/choosing-what-your-workflow-does/control-the-concurrency-of-workflows-and-jobs:
"Any existing pending job or workflow in the same concurrency group, if it exists, will be canceled
and the new queued job or workflow will take its place"). The harness's ConcurrencyQueue plays that
rule on the group each caller's own ``concurrency:`` gives each event."""

from __future__ import annotations

import re
from typing import Any

import yaml
from workflow_harness import REPO, ConcurrencyQueue, concurrency_of

REPO_NAME = "octo-org/runtime"
MAIN = "refs/heads/main"


def _caller(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    doc["on"] = doc.pop(True) if True in doc else doc.get("on")
    return doc


def _doc_callers() -> dict[str, dict[str, Any]]:
    """The callers docs/github-actions.md shows (by their ``name:``)."""
    text = (REPO / "docs" / "github-actions.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    docs = [_caller(b) for b in blocks if "gpu-notebooks.yml" in b]
    return {d["name"]: d for d in docs}


def _github(run_id: int, event_name: str, event: dict[str, Any], ref: str = MAIN) -> dict[str, Any]:
    return {"event_name": event_name, "event": event, "ref": ref, "run_id": str(run_id), "sha": "3" * 40,
            "repository": REPO_NAME, "run_attempt": "1"}


def _play(doc: dict[str, Any], events: list[tuple[str, str, dict[str, Any], str]]) -> ConcurrencyQueue:
    """Each (name, event name, event, ref) arrives while the runs before it still run; then all end."""
    q = ConcurrencyQueue()
    for i, (name, event_name, event, ref) in enumerate(events):
        q.arrive(name, concurrency_of(doc, _github(7000 + i, event_name, event, ref)))
    q.finish_all()
    return q


def _pr(action: str, number: int = 12, label: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"action": action, "number": number, "pull_request": {"number": number}}
    if label:
        event["label"] = {"name": label}
    return event


PUSHES_DISPATCHES_SCHEDULES = [
    ("push 1", "push", {"after": "1" * 40}, MAIN),
    ("push 2", "push", {"after": "2" * 40}, MAIN),            # queued behind push 1's GPU run
    ("schedule 1", "schedule", {}, MAIN),                      # the hourly janitor
    ("dispatch 1", "workflow_dispatch", {"inputs": {"runtime": "all"}}, MAIN),
    ("schedule 2", "schedule", {}, MAIN),
    ("push 3", "push", {"after": "3" * 40}, MAIN),
    ("pr 12 a", "pull_request", _pr("opened"), "refs/pull/12/merge"),
    ("pr 12 b", "pull_request", _pr("synchronize"), "refs/pull/12/merge"),  # supersedes pr 12 a
]


def test_the_example_caller_never_drops_a_push_or_a_dispatch() -> None:
    doc = _caller((REPO / ".github" / "workflows" / "runtime-tests.yml").read_text(encoding="utf-8"))
    q = _play(doc, PUSHES_DISPATCHES_SCHEDULES)
    dropped = [r for r in q.cancelled if r.startswith(("push", "dispatch"))]
    assert dropped == [], f"GitHub would cancel {dropped} (groups: {q.cancelled})"
    assert {"push 1", "push 2", "push 3", "dispatch 1", "pr 12 b"} <= set(q.started)
    # what may be superseded still is: an older commit of a pull request, a janitor run
    assert "pr 12 a" in q.cancelled


def test_the_documented_callers_never_drop_a_push_a_dispatch_or_an_approval() -> None:
    callers = _doc_callers()
    assert set(callers) == {"gpu", "gpu-forks"}, set(callers)
    q = _play(callers["gpu"], [e for e in PUSHES_DISPATCHES_SCHEDULES if e[1] != "schedule"])
    assert [r for r in q.cancelled if r.startswith(("push", "dispatch"))] == []
    # a fork's pull request: the approval (labeled) waits behind the opened run; later events on the
    # same pull request (a new commit, another label) must not replace it while it is pending
    q = _play(callers["gpu-forks"], [
        ("opened", "pull_request_target", _pr("opened"), MAIN),
        ("approval", "pull_request_target", _pr("labeled", label="gpu-runner:approved"), MAIN),
        ("labeled bug", "pull_request_target", _pr("labeled", label="bug"), MAIN),
        ("synchronize", "pull_request_target", _pr("synchronize"), MAIN),
    ])
    assert "approval" not in q.cancelled and "approval" in q.started, q.cancelled


def test_the_queue_is_githubs() -> None:
    """The model itself: one running and one pending per group, the newer pending replaces the older."""
    q = ConcurrencyQueue()
    for run in ("a", "b", "c"):
        q.arrive(run, ("g", False))
    q.arrive("x", ("other", False))
    q.arrive("y", None)
    assert q.running == {"g": "a", "other": "x"} and q.pending == {"g": "c"} and q.cancelled == ["b"]
    q.arrive("d", ("g", True))  # cancel-in-progress: the running and the pending one go
    assert q.cancelled == ["b", "c", "a"] and q.running["g"] == "d"
    q.finish_all()
    assert q.started == ["a", "x", "y", "d"] and not q.running and not q.pending



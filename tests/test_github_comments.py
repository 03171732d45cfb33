"""The sticky summary comment through PyGithub against the GitHub stand-in: request bodies are
validated against the published OpenAPI description; ours is found by marker AND author and
updated in place; bodies stay under 65,536 characters; push events comment on the commit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import gpu_runner
from standins.github import MAX_COMMENT_CHARS, GitHubStandIn, github_standin

from gpu_runner.errors import InfraError
from gpu_runner.github.client import client
from gpu_runner.github.comments import Comments, Target, build_body, marker, target_from_event

REPO = "octo-org/runtime"


@pytest.fixture
def gh(monkeypatch: pytest.MonkeyPatch):
    yield from github_standin(monkeypatch, REPO)


def test_marker_and_body_are_cut_below_the_limit() -> None:
    assert marker("matrix/gpu.yml") == "<!-- gpu-runner:summary matrix/gpu.yml -->"
    assert marker("a b<!--") == "<!-- gpu-runner:summary a-b -->"
    small = build_body("# GPU notebooks\nall passed\n", "k")
    assert small.startswith(marker("k") + "\n") and "all passed" in small
    big = build_body("```\n" + ("x" * 99 + "\n") * 2000, "k", report_url="https://example.test/run/1")
    assert len(big) < MAX_COMMENT_CHARS and big.startswith(marker("k"))
    assert "Cut here" in big and "https://example.test/run/1" in big
    assert big.count("```") % 2 == 0  # no fence left open


def test_pr_comment_is_created_then_updated_in_place(gh: GitHubStandIn) -> None:
    c = Comments(client(), REPO)
    first = c.upsert(Target("pr", number=7), build_body("run 1", "k"))
    assert first.action == "created"
    second = c.upsert(Target("pr", number=7), build_body("run 2", "k"))
    assert second.action == "updated" and second.id == first.id
    assert len(gh.comments) == 1 and "run 2" in gh.comments[first.id]["body"]
    other = c.upsert(Target("pr", number=7), build_body("other matrix", "other-key"))
    assert other.action == "created" and len(gh.comments) == 2  # a different key is a different comment
    assert gh.calls["issue-comments.create"] == 2 and gh.calls["issue-comments.update"] == 1
    assert not gh.rejected


def test_someone_elses_comment_quoting_our_marker_is_left_alone(gh: GitHubStandIn) -> None:
    theirs = gh.add_comment(body=build_body("I copied this", "k"), login="octocat", number=7)
    posted = Comments(client(), REPO).upsert(Target("pr", number=7), build_body("ours", "k"))
    assert posted.action == "created" and posted.id != theirs
    assert gh.comments[theirs]["body"].endswith("I copied this\n")


def test_the_author_comes_from_get_user_when_the_token_may_read_it(gh: GitHubStandIn) -> None:
    gh.user_login = gh.comment_login = "runtime-bot"
    c = Comments(client(), REPO)
    assert c.author() == "runtime-bot"
    gh.add_comment(body=build_body("bot's older", "k"), login="runtime-bot", number=3)
    assert c.upsert(Target("pr", number=3), build_body("new", "k")).action == "updated"


def test_pages_of_comments_are_followed(gh: GitHubStandIn) -> None:
    for i in range(130):
        gh.add_comment(body=f"chatter {i}", login="octocat", number=9)
    mine = gh.add_comment(body=build_body("old", "k"), login="github-actions[bot]", number=9)
    posted = Comments(client(), REPO).upsert(Target("pr", number=9), build_body("new", "k"))
    assert posted.action == "updated" and posted.id == mine


def test_commit_comment_on_push_and_its_update(gh: GitHubStandIn) -> None:
    c = Comments(client(), REPO)
    sha = "a" * 40
    first = c.upsert(Target("commit", sha=sha), build_body("push 1", "k"))
    again = c.upsert(Target("commit", sha=sha), build_body("push 2", "k"))
    assert (first.action, again.action) == ("created", "updated") and first.id == again.id
    assert gh.comments[first.id]["sha"] == sha and "push 2" in gh.comments[first.id]["body"]
    assert not gh.rejected


def test_a_body_over_the_limit_is_refused_by_the_standin(gh: GitHubStandIn) -> None:
    with pytest.raises(InfraError, match="422"):
        Comments(client(), REPO).upsert(Target("pr", number=1), marker("k") + "\n" + "x" * MAX_COMMENT_CHARS)
    assert gh.rejected


def test_target_from_events(tmp_path: Path) -> None:
    ev = tmp_path / "event.json"
    ev.write_text(json.dumps({"number": 12, "pull_request": {"number": 12}}))
    assert target_from_event({"GITHUB_EVENT_PATH": str(ev), "GITHUB_EVENT_NAME": "pull_request"}) == Target("pr", 12)
    ev.write_text(json.dumps({"after": "b" * 40, "ref": "refs/heads/main"}))
    t = target_from_event({"GITHUB_EVENT_PATH": str(ev), "GITHUB_EVENT_NAME": "push", "GITHUB_SHA": "c" * 40})
    assert t == Target("commit", sha="c" * 40)
    assert target_from_event({}, pr=5) == Target("pr", 5)


def test_comment_command_and_read_only_token(gh: GitHubStandIn, tmp_path: Path) -> None:
    (tmp_path / "summary.md").write_text("# GPU notebooks\n\n3 passed\n")
    ev = tmp_path / "event.json"
    ev.write_text(json.dumps({"number": 4, "pull_request": {"number": 4}}))
    out = tmp_path / "out"
    out.write_text("")
    env = {"GITHUB_API_URL": gh.url, "GITHUB_TOKEN": "test-token", "GITHUB_REPOSITORY": REPO,
           "GITHUB_EVENT_PATH": str(ev), "GITHUB_EVENT_NAME": "pull_request", "GITHUB_OUTPUT": str(out),
           "GITHUB_RUN_ID": "77", "GPU_RUNNER_RETRY_BASE_S": "0.01"}
    r = gpu_runner("comment", ".", "--key", "matrix.yml", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "created the summary comment on pull request #4" in r.stdout
    assert "comment-url=https://github.com/octo-org/runtime/pull/4#issuecomment-" in out.read_text()
    body = next(iter(gh.comments.values()))["body"]
    assert body.startswith("<!-- gpu-runner:summary matrix.yml -->") and "3 passed" in body
    assert "test-token" not in r.stdout + r.stderr
    gh.read_only = True
    r = gpu_runner("comment", "summary.md", "--key", "matrix.yml", cwd=tmp_path, env=env)
    assert r.returncode == 3 and "Pull requests: write" in r.stderr
    r = gpu_runner("comment", "summary.md", "--key", "matrix.yml", "--optional", cwd=tmp_path,
                   env={**env, "GITHUB_ACTIONS": "true"})
    assert r.returncode == 0 and "::warning title=summary comment not posted::" in r.stderr
    r = gpu_runner("comment", "missing.md", cwd=tmp_path, env=env)
    assert r.returncode == 2 and "no such file" in r.stderr

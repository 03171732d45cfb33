"""The sticky summary comment: one comment per pull request (or per commit on push), updated in place.

The comment starts with a hidden marker ``<!-- gpu-runner:summary KEY -->``. KEY separates
several callers in one repository (one matrix file each, say). The comment we update is the
one whose first line is the marker AND that was written by us (the token's user, or
``--author``), so a quote of our marker in someone else's comment, or a marker of another key
inside our summary's text, is never taken for it. Bodies are cut below
GitHub's 65,536-character limit with a note saying where the full report is.

Where it goes (:func:`target_from_event`): a ``pull_request`` / ``pull_request_target`` event
comments on the pull request; any other event (push, workflow_dispatch, schedule) comments on
the commit (``GITHUB_SHA``, else the push event's ``after``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InfraError

MAX_BODY_CHARS = 65_536
BODY_LIMIT = MAX_BODY_CHARS - 536
"""What we write at most: under the API's limit with room for the marker and the note."""
DEFAULT_KEY = "default"
_KEY_RE = re.compile(r"[^A-Za-z0-9._/-]+")


def marker(key: str = DEFAULT_KEY) -> str:
    clean = _KEY_RE.sub("-", key.strip()).strip("-") or DEFAULT_KEY
    return f"<!-- gpu-runner:summary {clean} -->"


ZWJ = "\u200d"
_MENTION = re.compile("@(?!\u200d)")


def neutralise(text: str) -> str:
    """No ``@`` that GitHub reads as a mention and no ``<!--`` that could start a marker: a zero-width
    joiner after each (the summary's text comes from the code under test; ours needs neither)."""
    return _MENTION.sub("@" + ZWJ, text).replace("<!--", "<!-" + ZWJ + "-")


def build_body(summary: str, key: str = DEFAULT_KEY, *, report_url: str | None = None,
               limit: int = BODY_LIMIT) -> str:
    """Marker + summary (mentions and comment starts neutralised), cut (at a line end where
    possible) so the whole is at most ``limit``."""
    head = marker(key) + "\n"
    text = neutralise(summary.rstrip()) + "\n"
    if len(head) + len(text) <= limit:
        return head + text
    where = f"the [full report]({report_url})" if report_url else "the job summary and the report artifact"
    note = f"\n\n> Cut here: a comment holds at most {MAX_BODY_CHARS:,} characters. See {where}.\n"
    room = max(0, limit - len(head) - len(note))
    cut = text[:room]
    nl = cut.rfind("\n")
    if nl > room // 2:
        cut = cut[:nl]
    if cut.count("```") % 2:  # do not leave a code fence open
        cut += "\n```"
    return head + cut + note


@dataclass
class Target:
    kind: str
    """'pr' or 'commit'."""
    number: int | None = None
    sha: str | None = None

    def describe(self) -> str:
        return f"pull request #{self.number}" if self.kind == "pr" else f"commit {str(self.sha)[:12]}"


def read_event(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if env is None else env
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"GITHUB_EVENT_PATH={path}: cannot read the event: {e}") from None
    return data if isinstance(data, dict) else {}


def target_from_event(env: Mapping[str, str] | None = None, *, pr: int | None = None,
                      sha: str | None = None) -> Target:
    env = os.environ if env is None else env
    if pr is not None:
        return Target("pr", number=pr)
    if sha:
        return Target("commit", sha=sha)
    event = read_event(env)
    name = env.get("GITHUB_EVENT_NAME", "")
    pull = event.get("pull_request")
    if isinstance(pull, dict) and (name.startswith("pull_request") or not name):
        return Target("pr", number=int(pull.get("number") or event.get("number")))
    commit = env.get("GITHUB_SHA") or event.get("after")
    if not commit:
        raise ConfigError("no pull request or commit to comment on: give --pr N or --commit SHA (GitHub Actions "
                          "sets GITHUB_EVENT_PATH and GITHUB_SHA)")
    return Target("commit", sha=str(commit))


@dataclass
class Posted:
    action: str
    """'created' or 'updated'."""
    id: int
    url: str
    target: Target


class Comments:
    """Create or update our summary comment through PyGithub."""

    def __init__(self, gh: Any, repo: str, *, author: str | None = None) -> None:
        from github import GithubException

        self.gh = gh
        self.repo_name = repo
        self.repo = gh.get_repo(repo)  # lazy: no GET /repos/{repo}
        self._author = author
        self.GithubException = GithubException

    def author(self) -> str:
        """Our login: --author, else the token's user (GET /user), else github-actions[bot]
        (the installation token GITHUB_TOKEN may not read /user)."""
        if self._author is None:
            try:
                self._author = self.gh.get_user().login
            except self.GithubException:
                self._author = "github-actions[bot]"
        return self._author

    def _ours(self, comments: Any, mark: str) -> Any:
        """The comment whose first line is ``mark`` and that we wrote. A marker anywhere else (a
        quote, or a traceback in another key's summary) never counts."""
        me = self.author().lower()
        for c in comments:
            first = (c.body or "").split("\n", 1)[0].strip()
            if first == mark and c.user is not None and c.user.login.lower() == me:
                return c
        return None

    def upsert(self, target: Target, body: str) -> Posted:
        mark = body.splitlines()[0] if body.startswith("<!-- gpu-runner:summary ") else None
        if mark is None:
            raise ValueError("the body must start with the marker (build_body)")
        try:
            # a pull request's comments live on its issue; a push's on its commit: same calls
            parent = self.repo.get_issue(target.number) if target.kind == "pr" else self.repo.get_commit(target.sha)
            found = self._ours(parent.get_comments(), mark)
            if found is not None:
                found.edit(body)
                return Posted("updated", found.id, found.html_url, target)
            c = parent.create_comment(body)
            return Posted("created", c.id, c.html_url, target)
        except self.GithubException as e:
            msg = e.data.get("message") if isinstance(getattr(e, "data", None), dict) else str(e)
            hint = ""
            if e.status in (401, 403, 404):
                hint = (" (the token needs 'Pull requests: write' for a pull request comment, 'Contents: write' "
                        "for a commit comment; a pull request from a fork gets a read-only GITHUB_TOKEN)")
            raise InfraError(f"GitHub: commenting on {target.describe()} in {self.repo_name}: {e.status} {msg}{hint}"
                             ) from None


__all__ = ["BODY_LIMIT", "Comments", "MAX_BODY_CHARS", "Posted", "Target", "build_body", "marker", "read_event",
           "target_from_event"]

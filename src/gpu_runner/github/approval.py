"""The approval of a pull request from a fork (``pull_request_target``): :func:`fork_gate` decides
what a pull request's run may run, :class:`Approvals` asks GitHub who approved and takes an
approval back.

A ``pull_request_target`` run holds the base repository's secrets and a token that may write, so
nothing of a fork's pull request runs in it until a user who may write to the repository has
reviewed the change and applies the approval label. The approval is that ``labeled`` event
together with an approving review of exactly the commit it names: the event says who applied the
label (``sender``) and the pull request's head then (``pull_request.head.sha``), which the run
checks out; a review of that pull request in state ``APPROVED`` by a user with write access whose
``commit_id`` is that head (:meth:`Approvals.approving_reviewer`) says someone who may approve
looked at exactly that code. A force-push just before the label is applied changes the head, and
the review of the older commit approves nothing. A label that is merely *there* approves nothing:
a later push (``synchronize``) or a reopen runs nothing, and the workflow removes the label
(:meth:`Approvals.revoke`, reading the pull request's labels as they are now, not as the event
saw them), so new commits need a new approval.

Who may approve: the repository permission ``admin`` or ``write`` (``maintain`` reads as
``write`` in the REST API's ``permission``; ``triage``, which may apply labels, reads as
``read`` and does not approve).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..errors import GpuRunnerError, InfraError

APPROVING_PERMISSIONS = ("admin", "write")


@dataclass
class Gate:
    """What a pull request's run may run (:func:`fork_gate`)."""

    keep: str
    """``all`` entries, only the ``local`` ones, or ``none``."""
    reason: str | None = None
    """Why entries were left out (None when none were)."""
    approved: str | None = None
    """For an approved pull request from a fork: who approved which commit."""


def is_fork(pull: Mapping[str, Any]) -> bool:
    head = ((pull.get("head") or {}).get("repo") or {}).get("full_name")
    base = ((pull.get("base") or {}).get("repo") or {}).get("full_name")
    return not (head and base and head == base)  # a deleted fork has no head repository: a fork


def fork_gate(event_name: str, event: Mapping[str, Any], approval_label: str,
              may_approve: Callable[[str], bool] | None = None,
              reviewed_by: Callable[[int, str], str | None] | None = None) -> Gate:
    """What a pull request from a fork may run (anything else runs everything).

    * ``pull_request`` from a fork: GitHub gives the run no secrets and a read-only token, so no
      VM can start: the local entries only (where they run comes from the base branch's matrix).
    * ``pull_request_target`` from a fork: nothing at all, until a user who may write to the
      repository applies ``approval_label``: the approval is that ``labeled`` event (``label``
      is ``approval_label`` and ``may_approve(sender)``), for the commit it was applied to
      (``pull_request.head.sha``, which the run checks out), and only when a user with write access
      approved exactly that commit in a review (``reviewed_by(number, head_sha)`` names them). A
      label that is merely there (a reopen, a push, an edit, another label) approves nothing, nor
      does a label applied after a force-push to code nobody reviewed.
    ``may_approve`` (login -> bool) and ``reviewed_by`` may raise
    :class:`~gpu_runner.errors.InfraError`: then nothing runs, and the reason says why.
    """
    pull = event.get("pull_request")
    if not event_name.startswith("pull_request") or not isinstance(pull, dict) or not is_fork(pull):
        return Gate("all")
    head_sha = str((pull.get("head") or {}).get("sha") or "")
    if event_name != "pull_request_target":
        return Gate("local", "a pull request from a fork: GitHub gives its pull_request run no secrets, so no GPU "
                    f"machine can start; a maintainer who has reviewed it applies the label '{approval_label}' "
                    "and the pull_request_target workflow runs it")
    waiting = (f"a pull request from a fork: nothing of it runs until a user with write access approves commit "
               f"{head_sha[:12] or '?'} in a review and applies the label '{approval_label}'")
    action = str(event.get("action") or "")
    label = str((event.get("label") or {}).get("name") or "")
    if action != "labeled" or label != approval_label:
        applied = approval_label in {lb.get("name") for lb in pull.get("labels") or [] if isinstance(lb, dict)}
        if applied and action in ("synchronize", "reopened"):  # what the revoke job acts on
            return Gate("none", f"{waiting} again: the label was applied to older code ('{action}' event; the "
                        "workflow removes it)")
        return Gate("none", f"{waiting} (this is a '{action}' event{', of the label ' + repr(label) if label else ''})")
    sender = str((event.get("sender") or {}).get("login") or "")
    if not sender or may_approve is None:
        return Gate("none", f"{waiting}: cannot tell who applied the label")
    try:
        ok = may_approve(sender)
    except GpuRunnerError as e:
        return Gate("none", f"{waiting}: could not check that {sender} may write to the repository ({e})")
    if not ok:
        return Gate("none", f"{waiting}: {sender}, who applied it, may not write to this repository")
    number = pull.get("number") or event.get("number")
    if reviewed_by is None or not isinstance(number, int) or not head_sha:
        return Gate("none", f"{waiting}: cannot tell which commit was reviewed")
    try:
        reviewer = reviewed_by(number, head_sha)
    except GpuRunnerError as e:
        return Gate("none", f"{waiting}: could not read the pull request's reviews ({e})")
    if not reviewer:
        return Gate("none", f"{waiting}: the label was applied, but no user with write access approved commit "
                    f"{head_sha[:12]} in a review (a review of an earlier commit approves nothing)")
    return Gate("all", approved=f"approved by {reviewer} in a review of commit {head_sha}, labelled by {sender}")


class Approvals:
    """Who may approve, and taking an approval back, on one repository."""

    def __init__(self, gh: Any, repo_name: str) -> None:
        import requests
        from github import GithubException

        self.repo_name = repo_name
        self.repo = gh.get_repo(repo_name)  # lazy (the client is): no GET /repos/{repo}
        self._requester = self.repo.requester if hasattr(self.repo, "requester") else self.repo._requester
        self.errors = (GithubException, requests.RequestException)

    def permission(self, login: str) -> str:
        """The user's repository permission: admin, write, read or none (asked once per login)."""
        cache: dict[str, str] = self.__dict__.setdefault("_permissions", {})
        if login not in cache:
            cache[login] = self._permission(login)
        return cache[login]

    def _permission(self, login: str) -> str:
        try:
            _headers, data = self._requester.requestJsonAndCheck(
                "GET", f"{self.repo.url}/collaborators/{quote(login, safe='')}/permission")
        except self.errors as e:
            if getattr(e, "status", None) == 404:  # not a collaborator (or no such user)
                return "none"
            raise InfraError(f"GitHub: the permission of {login} on {self.repo_name}: {getattr(e, 'status', '')} "
                             f"{_message(e)} (the plan job's token needs Metadata: read)") from None
        return str((data or {}).get("permission") or "none")

    def may_approve(self, login: str) -> bool:
        return self.permission(login) in APPROVING_PERMISSIONS

    def _pages(self, url: str, what: str, hint: str) -> list[Any]:
        out: list[Any] = []
        page = 1
        while True:
            try:
                _h, data = self._requester.requestJsonAndCheck("GET", url, parameters={"per_page": 100, "page": page})
            except self.errors as e:
                raise InfraError(f"GitHub: {what} of {self.repo_name}: {getattr(e, 'status', '')} {_message(e)} "
                                 f"({hint})") from None
            items = data if isinstance(data, list) else []
            out += items
            if len(items) < 100:
                return out
            page += 1

    def labels(self, number: int) -> set[str]:
        """The labels pull request ``number`` carries now (GET /repos/{o}/{r}/issues/{n}/labels)."""
        items = self._pages(f"{self.repo.url}/issues/{int(number)}/labels", f"the labels of pull request #{number}",
                            "the job's token needs Pull requests: read")
        return {str(i.get("name")) for i in items if isinstance(i, dict)}

    def approving_reviewer(self, number: int, head_sha: str) -> str | None:
        """A user with write access whose review of pull request ``number`` stands at APPROVED on
        exactly ``head_sha`` (GET /repos/{o}/{r}/pulls/{n}/reviews: each review's ``state`` and
        ``commit_id``); None when there is none. A user's latest review that approves, asks for
        changes or was dismissed is their word (a comment changes nothing)."""
        if not head_sha:
            return None
        items = self._pages(f"{self.repo.url}/pulls/{int(number)}/reviews", f"the reviews of pull request #{number}",
                            "the plan job's token needs Pull requests: read")
        latest: dict[str, dict[str, Any]] = {}
        for rv in items:
            if not isinstance(rv, dict) or rv.get("state") not in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
                continue
            login = str((rv.get("user") or {}).get("login") or "")
            if login:
                latest[login] = rv
        for login, rv in latest.items():
            if rv.get("state") == "APPROVED" and rv.get("commit_id") == head_sha and self.may_approve(login):
                return login
        return None

    def revoke(self, number: int, label: str) -> bool:
        """Remove ``label`` from pull request ``number``; False when it was not there."""
        try:
            self._requester.requestJsonAndCheck(
                "DELETE", f"{self.repo.url}/issues/{int(number)}/labels/{quote(label, safe='')}")
        except self.errors as e:
            if getattr(e, "status", None) == 404:
                return False
            raise InfraError(f"GitHub: removing the label {label!r} from pull request #{number}: "
                             f"{getattr(e, 'status', '')} "
                             f"{_message(e)} (the job's token needs Pull requests: write)") from None
        return True


def _message(e: Any) -> str:
    data = getattr(e, "data", None)
    return str(data.get("message")) if isinstance(data, dict) and data.get("message") else str(e)

"""The approval of a pull request from a fork (``pull_request_target``).

A ``pull_request_target`` run holds the base repository's secrets and a token that may write, so
nothing of a fork's pull request runs in it until a user who may write to the repository has
reviewed the change and applies the approval label. The approval is that ``labeled`` event
itself: it names who applied the label (``sender``) and the commit it was applied to
(``pull_request.head.sha``), and the run checks out exactly that commit. A label that is merely
*there* approves nothing: a later push (``synchronize``) or a reopen finds it applied to older
code, runs nothing, and the workflow removes it (:meth:`Approvals.revoke`), so new commits need a
new approval.

Who may approve: the repository permission ``admin`` or ``write`` (``maintain`` reads as
``write`` in the REST API's ``permission``; ``triage``, which may apply labels, reads as
``read`` and does not approve).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..errors import InfraError

APPROVING_PERMISSIONS = ("admin", "write")


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
        """The user's repository permission: admin, write, read or none."""
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

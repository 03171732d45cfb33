"""What ``gpu-runner doctor`` reads from GitHub, as routes of the GitHub stand-in (a mixin of
:class:`standins.github.GitHubStandIn`; knobs set in :meth:`DoctorGitHubRoutes._doctor_setup`).

Shapes: the published OpenAPI description (tests/fixtures/doctor-github-openapi.json).
* ``GET /repos/{owner}/{repo}/actions/permissions/fork-pr-contributor-approval``: "Gets the fork PR
  contributor approval policy for a repository" (``approval_policy``: first_time_contributors_new_to_github,
  first_time_contributors or all_external_contributors);
  https://docs.github.com/rest/actions/permissions#get-fork-pr-contributor-approval-permissions-for-a-repository
* ``GET /repos/{owner}/{repo}/actions/permissions/workflow``: "the default workflow permissions granted
  to the GITHUB_TOKEN" (read or write) and whether Actions may approve pull request reviews;
  https://docs.github.com/rest/actions/permissions#get-default-workflow-permissions-for-a-repository
* ``GET /repos/{owner}/{repo}/labels/{name}``: a label, 404 when there is none;
  https://docs.github.com/rest/issues/labels#get-a-label
* Listing runners needs the fine-grained permission "Administration" (read); a token without it
  gets 403 "Resource not accessible by personal access token";
  https://docs.github.com/rest/actions/self-hosted-runners#list-self-hosted-runners-for-a-repository

Knobs: ``runner_admin`` (False: listing runners answers 403), ``fork_approval_policy``,
``workflow_permissions`` (read or write), ``can_approve_reviews``, ``repo_labels`` (names that
exist). The runner's latest release (``runner_release``) is github.py's, as start reads it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from .doctor_schemas import doctor_github_validator
from .http import Reply
from .schemas import problems

NOT_FOUND = {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}


class DoctorGitHubRoutes:
    route: Any
    url: str
    repo: str
    _user: Any
    _repo: Any

    def _doctor_setup(self) -> None:
        self.runner_admin = True
        self.fork_approval_policy = "all_external_contributors"
        self.workflow_permissions = "read"
        self.can_approve_reviews = False
        self.repo_labels: set[str] = {"gpu-runner:approved"}
        for method, path, name, handler in [
            ("GET", "/repos/{owner}/{repo}/actions/permissions/fork-pr-contributor-approval",
             "permissions.fork-pr-approval", self.fork_pr_approval),
            ("GET", "/repos/{owner}/{repo}/actions/permissions/workflow", "permissions.workflow",
             self.workflow_token_permissions),
            ("GET", "/repos/{owner}/{repo}/labels/{name}", "labels.get", self.label_get),
        ]:
            self.route(method, path, name, handler)

    def _doctor_before(self, name: str) -> None:
        if name == "runners.list" and not self.runner_admin:
            raise Reply(403, {"message": "Resource not accessible by personal access token",
                              "documentation_url": "https://docs.github.com/rest/actions/self-hosted-runners"
                                                   "#list-self-hosted-runners-for-a-repository", "status": "403"})

    def _doctor_out(self, path: str, out: Any) -> Any:
        errs = problems(doctor_github_validator(path), out)
        assert not errs, errs
        return out

    def fork_pr_approval(self, owner: str, repo: str, **_: Any) -> Any:
        self._repo(owner, repo)
        return self._doctor_out("/repos/{owner}/{repo}/actions/permissions/fork-pr-contributor-approval",
                                {"approval_policy": self.fork_approval_policy})

    def workflow_token_permissions(self, owner: str, repo: str, **_: Any) -> Any:
        self._repo(owner, repo)
        return self._doctor_out("/repos/{owner}/{repo}/actions/permissions/workflow",
                                {"default_workflow_permissions": self.workflow_permissions,
                                 "can_approve_pull_request_reviews": self.can_approve_reviews})

    def label_get(self, owner: str, repo: str, name: str, **_: Any) -> Any:
        self._repo(owner, repo)
        label = unquote(name)
        if label not in self.repo_labels:
            raise Reply(404, NOT_FOUND)
        return self._doctor_out("/repos/{owner}/{repo}/labels/{name}", {
            "id": 208045946, "node_id": "MDU6TGFiZWwyMDgwNDU5NDY=", "name": label, "description": None,
            "url": f"{self.url}/repos/{owner}/{repo}/labels/{quote(label, safe='')}", "color": "0e8a16",
            "default": False})

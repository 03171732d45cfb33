"""Self-hosted runners of a repository, or of its organisation: just-in-time registrations,
status, removal, and the runner group an organisation runner goes in.

One class, two scopes: :class:`Runners` speaks to ``/repos/{owner}/{repo}/actions/runners`` and,
scoped to the organisation (:meth:`Runners.for_org`), to ``/orgs/{org}/actions/runners``; a
runner group with a "selected workflows" policy exists only for organisation runners
(https://docs.github.com/en/actions/concepts/runners/runner-groups). Workflow runs and their
jobs are always the repository's.

PyGithub covers repository list/get/remove; the rest goes through ``requester.requestJsonAndCheck``.
The JIT config returned by :meth:`Runners.create_jit` is a secret (it lets whoever holds it take
the next job for that label once): never print it, log it, or write it to a file that becomes an
artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InfraError

DEFAULT_RUNNER_GROUP_ID = 1
DEFAULT_WORK_FOLDER = "_work"


@dataclass
class Runner:
    id: int
    name: str
    status: str
    """online or offline."""
    busy: bool
    labels: list[str]
    group_id: int | None = None
    """``runner_group_id`` as GitHub lists it (None when it does not say)."""


@dataclass(repr=False)
class JitRunner:
    runner: Runner
    encoded_jit_config: str

    def __repr__(self) -> str:  # never show the secret, even in a traceback
        return f"JitRunner(runner={self.runner!r}, encoded_jit_config=<secret>)"


def _runner(data: Any) -> Runner:
    if isinstance(data, dict):
        labels = [lb.get("name", "") for lb in data.get("labels", [])]
        group = data.get("runner_group_id")
        return Runner(id=int(data["id"]), name=data["name"], status=data.get("status", "offline"),
                      busy=bool(data.get("busy")), labels=labels, group_id=group if isinstance(group, int) else None)
    return Runner(id=data.id, name=data.name, status=data.status, busy=bool(getattr(data, "busy", False)),
                  labels=[lb["name"] if isinstance(lb, dict) else str(lb) for lb in (data.labels() or [])]
                  if callable(getattr(data, "labels", None)) else [])


ORG_PERMISSION_HINT = ("the token needs the organisation permission 'Self-hosted runners: read and write' "
                       "(fine-grained token), a GitHub App with organization_self_hosted_runners: write, or the "
                       "admin:org scope for a classic token")
REPO_PERMISSION_HINT = ("the token needs the 'Administration: read and write' repository permission, or the repo "
                        "scope for a classic token")


class Runners:
    """The self-hosted runners of one repository (``org`` None), or of its organisation ``org``."""

    def __init__(self, gh: Any, repo: str, *, org: str | None = None) -> None:
        import requests
        from github import GithubException

        self.gh = gh
        self.repo_name = repo
        self.org = org
        self.repo = gh.get_repo(repo)  # lazy (the client is): no GET /repos/{repo}
        self._requester = self.repo.requester if hasattr(self.repo, "requester") else self.repo._requester
        self.GithubException = (GithubException, requests.RequestException)

    def for_org(self) -> Runners:
        """The same client scoped to the repository owner's organisation runners."""
        return Runners(self.gh, self.repo_name, org=self.repo_name.split("/", 1)[0])

    @property
    def where(self) -> str:
        return f"organisation {self.org}" if self.org else self.repo_name

    def _api(self) -> str:
        return self.repo.url.rsplit("/repos/", 1)[0]

    def _url(self, tail: str) -> str:
        if self.org:
            return f"{self._api()}/orgs/{self.org}/actions/runners{tail}"
        return f"{self.repo.url}/actions/runners{tail}"

    def _fail(self, what: str, e: Any) -> InfraError:
        if not hasattr(e, "status"):  # a connection error, after PyGithub's retries
            return InfraError(f"GitHub: {what} in {self.where}: {e}")
        msg = e.data.get("message") if isinstance(getattr(e, "data", None), dict) else str(e)
        hint = ""
        if getattr(e, "status", None) in (401, 403, 404):
            hint = f" ({ORG_PERMISSION_HINT if self.org else REPO_PERMISSION_HINT})"
        return InfraError(f"GitHub: {what} in {self.where}: {getattr(e, 'status', '?')} {msg}{hint}")

    def create_jit(self, name: str, labels: list[str], *, runner_group_id: int = DEFAULT_RUNNER_GROUP_ID,
                   work_folder: str = DEFAULT_WORK_FOLDER) -> JitRunner:
        """Register a just-in-time runner. A registration of the same name (a stale one from an
        earlier try of this job) is deleted and the call retried once."""
        body = {"name": name, "runner_group_id": runner_group_id, "labels": list(labels), "work_folder": work_folder}
        for attempt in (1, 2):
            try:
                _headers, data = self._requester.requestJsonAndCheck("POST", self._url("/generate-jitconfig"),
                                                                     input=body)
            except self.GithubException as e:
                if getattr(e, "status", None) == 409 and attempt == 1:
                    stale = self.find(name)
                    if stale is not None:
                        self.delete(stale.id)
                    continue
                raise self._fail(f"register runner {name}", e) from None
            return JitRunner(runner=_runner(data["runner"]), encoded_jit_config=data["encoded_jit_config"])
        raise InfraError(f"GitHub: register runner {name}: the name stays taken")  # pragma: no cover

    def registration_token(self) -> str:
        """A registration token (secret, valid one hour), for runners configured with config.sh."""
        try:
            _h, data = self._requester.requestJsonAndCheck("POST", self._url("/registration-token"))
        except self.GithubException as e:
            raise self._fail("create a registration token", e) from None
        return str(data["token"])

    def list(self, prefix: str = "", *, name: str | None = None) -> list[Runner]:
        """The registrations whose name starts with ``prefix`` (exactly ``name``, when given: an
        organisation lists it with the ``name`` filter of GET /orgs/{org}/actions/runners)."""
        try:
            if not self.org:
                return [_runner(r.raw_data) for r in self.repo.get_self_hosted_runners()
                        if r.name.startswith(name or prefix) and (name is None or r.name == name)]
            out: list[Runner] = []
            page = 1
            while True:
                params: dict[str, Any] = {"per_page": 100, "page": page}
                if name is not None:
                    params["name"] = name
                _h, data = self._requester.requestJsonAndCheck("GET", self._url(""), parameters=params)
                got = (data or {}).get("runners") or []
                out += [_runner(r) for r in got if str(r.get("name", "")).startswith(name or prefix)]
                if len(got) < 100 or page * 100 >= int((data or {}).get("total_count") or 0):
                    return out
                page += 1
        except self.GithubException as e:
            raise self._fail("list runners", e) from None

    def find(self, name: str) -> Runner | None:
        return next((r for r in self.list(name=name) if r.name == name), None)

    def get(self, runner_id: int) -> Runner | None:
        try:
            if self.org:
                _h, data = self._requester.requestJsonAndCheck("GET", self._url(f"/{int(runner_id)}"))
                return _runner(data)
            return _runner(self.repo.get_self_hosted_runner(runner_id).raw_data)
        except self.GithubException as e:
            if getattr(e, "status", None) == 404:
                return None
            raise self._fail(f"get runner {runner_id}", e) from None

    def delete(self, runner_id: int) -> bool:
        """Remove a registration; False when it was already gone."""
        try:
            if self.org:
                self._requester.requestJsonAndCheck("DELETE", self._url(f"/{int(runner_id)}"))
                return True
            return bool(self.repo.remove_self_hosted_runner(runner_id))  # False on 404: it does not raise
        except self.GithubException as e:
            if getattr(e, "status", None) == 404:
                return False
            raise self._fail(f"remove runner {runner_id}", e) from None

    def runner_group(self, group_id: int) -> dict[str, Any] | None:
        """GET /orgs/{org}/actions/runner-groups/{id}: the group's access policy (None: no such group)."""
        org = self.org or self.repo_name.split("/", 1)[0]
        try:
            _h, data = self._requester.requestJsonAndCheck(
                "GET", f"{self._api()}/orgs/{org}/actions/runner-groups/{int(group_id)}")
        except self.GithubException as e:
            if getattr(e, "status", None) == 404:
                return None
            raise Runners(self.gh, self.repo_name, org=org)._fail(f"read runner group {group_id}", e) from None
        return data if isinstance(data, dict) else None

    def run_ended(self, run_id: str, attempt: str | int | None = None) -> bool | None:
        """Whether attempt ``attempt`` of workflow run ``run_id`` of this repository is over: the run
        is completed or a later attempt has started. None: cannot tell (not a run id, or GitHub
        answers 404: no such run of this repository, so nothing of it is ours to judge). False:
        GitHub reports that attempt queued or in progress."""
        if not str(run_id).isdigit():
            return None
        try:
            run = self.repo.get_workflow_run(int(run_id))
            if run.status == "completed":
                return True
            current = getattr(run, "run_attempt", None)
            return bool(attempt is not None and str(attempt).isdigit() and isinstance(current, int)
                        and int(attempt) < current)
        except self.GithubException as e:
            if getattr(e, "status", None) == 404:
                return None  # another repository's run (names collide), or one deleted: leave it alone
            raise self._fail(f"get workflow run {run_id}", e) from None

    def jobs_on(self, run_id: str, attempt: str | int, runner_name: str) -> list[dict[str, Any]]:
        """The jobs of attempt ``attempt`` of run ``run_id`` that GitHub assigned to the runner
        ``runner_name`` (``GET /repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{n}/jobs``,
        each job's ``runner_name``), as ``{"id", "name", "status", "conclusion"}``."""
        out: list[dict[str, Any]] = []
        url = f"{self.repo.url}/actions/runs/{int(run_id)}/attempts/{int(attempt)}/jobs"
        page = 1
        while True:
            try:
                _h, data = self._requester.requestJsonAndCheck("GET", url, parameters={"per_page": 100, "page": page})
            except self.GithubException as e:
                raise self._fail(f"list the jobs of run {run_id} (attempt {attempt})", e) from None
            jobs = (data or {}).get("jobs") or []
            out += [{k: j.get(k) for k in ("id", "name", "status", "conclusion")} for j in jobs
                    if isinstance(j, dict) and j.get("runner_name") == runner_name]
            if len(jobs) < 100 or page * 100 >= int((data or {}).get("total_count") or 0):
                return out
            page += 1


REUSABLE_WORKFLOW_FILES = ("gpu-entry.yml", "gpu-notebooks.yml")
"""gpu-runner's reusable workflows: ``gpu-entry.yml`` defines the job that runs on the runner,
``gpu-notebooks.yml`` calls it. A group may list either, as ``owner/repo/.github/workflows/FILE@ref``."""
GROUP_SETTINGS = "Settings > Actions > Runner groups"


def _lists_workflow(selected: list[Any], workflow_ref: str, repo: str) -> str | None:
    """The entry of ``selected`` that names the calling workflow ``workflow_ref`` exactly (path and
    ref), or one of gpu-runner's reusable workflows at some ref; None when none does. Without a
    ``workflow_ref`` (outside GitHub Actions: doctor on a laptop) any workflow of ``repo`` at a ref
    counts as the calling one."""
    for item in selected:
        text = str(item).strip()
        if workflow_ref and text == workflow_ref:
            return text
        path, at, ref = text.partition("@")
        if not workflow_ref and at and ref and path.startswith(f"{repo}/.github/workflows/"):
            return text
        parts = path.split("/")
        if (at and ref and len(parts) == 5 and parts[2:4] == [".github", "workflows"]
                and parts[4] in REUSABLE_WORKFLOW_FILES):
            return text
    return None


def group_problem(group: dict[str, Any] | None, *, group_id: int, repo: str, workflow_ref: str,
                  repo_public: bool | None) -> str | None:
    """Why runner group ``group_id`` (GET /orgs/{org}/actions/runner-groups/{id}) does not restrict
    its runners to this repository's gpu-runner workflow, as one line that says what to set; None
    when it does.

    It must be restricted to selected workflows (``restricted_to_workflows``) that list the calling
    workflow (``workflow_ref``, GITHUB_WORKFLOW_REF: ``owner/repo/.github/workflows/file.yml@ref``)
    or gpu-runner's reusable workflow at a ref, and let this repository in: visibility ``all`` or
    ``selected`` (``private`` only for a private repository), and a public repository needs
    ``allows_public_repositories``. ``repo_public`` None: not known here, not judged."""
    org = repo.split("/", 1)[0]
    where = f"{org}'s {GROUP_SETTINGS}"
    if group is None:
        return (f"runner group {group_id} does not exist in organisation {org} (or the token cannot see it): create "
                f"one in {where} limited to selected workflows, or leave runner-group-id empty")
    name = f"runner group {group.get('name', group_id)!r} ({group_id})"
    wanted = workflow_ref or f"OWNER/REPO/.github/workflows/{REUSABLE_WORKFLOW_FILES[0]}@REF"
    if not group.get("restricted_to_workflows"):
        return (f"{name} lets every workflow use its runners: in {where}, set Workflow access to 'Selected "
                f"workflows' and list {wanted}")
    if _lists_workflow(list(group.get("selected_workflows") or []), workflow_ref, repo) is None:
        return (f"{name} does not list this workflow among its selected workflows: add {wanted} (or gpu-runner's "
                f"reusable workflow, OWNER/REPO/.github/workflows/{REUSABLE_WORKFLOW_FILES[0]}@REF) in {where}")
    visibility = group.get("visibility")
    if visibility not in ("all", "selected", "private") or (visibility == "private" and repo_public):
        return (f"{name} does not let {repo} use it (repository access {visibility}): in {where}, give "
                f"{repo} access (selected repositories)")
    if repo_public and not group.get("allows_public_repositories"):
        return (f"{name} does not allow public repositories and {repo} is public: in {where}, tick 'Allow public "
                "repositories' (and keep approval required for every outside collaborator)")
    return None


def repository_is_public(env: Any = None) -> bool | None:
    """Whether the repository is public, from the event's payload (GITHUB_EVENT_PATH:
    ``repository.visibility`` or ``repository.private``); None when no event says."""
    import json
    import os

    env = os.environ if env is None else env
    path = env.get("GITHUB_EVENT_PATH", "")
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            repo = (json.load(f) or {}).get("repository") or {}
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(repo, dict):
        return None
    if repo.get("visibility") in ("public", "private", "internal"):
        return repo["visibility"] == "public"
    if isinstance(repo.get("private"), bool):
        return not repo["private"]
    return None

"""Repository self-hosted runners: just-in-time registrations, status, removal.

PyGithub covers list/get/remove; ``generate-jitconfig`` and ``registration-token`` go through
``requester.requestJsonAndCheck``. The JIT config returned by :meth:`Runners.create_jit` is a
secret (it lets whoever holds it take this repository's next job for that label once): never
print it, log it, or write it to a file that becomes an artifact.
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


@dataclass(repr=False)
class JitRunner:
    runner: Runner
    encoded_jit_config: str

    def __repr__(self) -> str:  # never show the secret, even in a traceback
        return f"JitRunner(runner={self.runner!r}, encoded_jit_config=<secret>)"


def _runner(data: Any) -> Runner:
    if isinstance(data, dict):
        labels = [lb.get("name", "") for lb in data.get("labels", [])]
        return Runner(id=int(data["id"]), name=data["name"], status=data.get("status", "offline"),
                      busy=bool(data.get("busy")), labels=labels)
    return Runner(id=data.id, name=data.name, status=data.status, busy=bool(getattr(data, "busy", False)),
                  labels=[lb["name"] if isinstance(lb, dict) else str(lb) for lb in (data.labels() or [])]
                  if callable(getattr(data, "labels", None)) else [])


class Runners:
    """The self-hosted runners of one repository."""

    def __init__(self, gh: Any, repo: str) -> None:
        import requests
        from github import GithubException

        self.gh = gh
        self.repo_name = repo
        self.repo = gh.get_repo(repo)  # lazy (the client is): no GET /repos/{repo}
        self._requester = self.repo.requester if hasattr(self.repo, "requester") else self.repo._requester
        self.GithubException = (GithubException, requests.RequestException)

    def _url(self, tail: str) -> str:
        return f"{self.repo.url}/actions/runners{tail}"

    def _fail(self, what: str, e: Any) -> InfraError:
        if not hasattr(e, "status"):  # a connection error, after PyGithub's retries
            return InfraError(f"GitHub: {what} in {self.repo_name}: {e}")
        msg = e.data.get("message") if isinstance(getattr(e, "data", None), dict) else str(e)
        hint = ""
        if getattr(e, "status", None) in (401, 403, 404):
            hint = (" (the token needs the 'Administration: read and write' repository permission, or the repo "
                    "scope for a classic token)")
        return InfraError(f"GitHub: {what} in {self.repo_name}: {getattr(e, 'status', '?')} {msg}{hint}")

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

    def list(self, prefix: str = "") -> list[Runner]:
        try:
            return [_runner(r.raw_data) for r in self.repo.get_self_hosted_runners() if r.name.startswith(prefix)]
        except self.GithubException as e:
            raise self._fail("list runners", e) from None

    def find(self, name: str) -> Runner | None:
        return next((r for r in self.list(name) if r.name == name), None)

    def get(self, runner_id: int) -> Runner | None:
        try:
            return _runner(self.repo.get_self_hosted_runner(runner_id).raw_data)
        except self.GithubException as e:
            if getattr(e, "status", None) == 404:
                return None
            raise self._fail(f"get runner {runner_id}", e) from None

    def delete(self, runner_id: int) -> bool:
        """Remove a registration; False when it was already gone."""
        try:
            return bool(self.repo.remove_self_hosted_runner(runner_id))  # False on 404: it does not raise
        except self.GithubException as e:
            if getattr(e, "status", None) == 404:
                return False
            raise self._fail(f"remove runner {runner_id}", e) from None

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

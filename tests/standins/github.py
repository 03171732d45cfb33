"""A GitHub stand-in: repository self-hosted runners (generate-jitconfig, list, get, delete,
registration-token) and workflow runs (get). A runner shows ``online`` once the VM that holds
its just-in-time config runs (the Compute stand-in calls :meth:`runner_connects`).

Request bodies are validated against the published OpenAPI description (fixtures); runner
responses are checked against it too. Knobs: ``throttle`` (like the Compute stand-in's),
``finished_runs`` (run ids whose status is completed).
"""

from __future__ import annotations

import base64
import itertools
import secrets
from typing import Any

from .http import Reply, StandIn
from .schemas import github_validator, problems

R = "/repos/{owner}/{repo}/actions/runners"
P = "/repos/{owner}/{repo}/actions/runners"


class GitHubStandIn(StandIn):
    def __init__(self, *, token: str = "test-token", repo: str = "octo-org/runtime") -> None:
        super().__init__()
        self.token = token
        self.repo = repo
        self.runners: dict[int, dict[str, Any]] = {}
        self.jit: dict[str, int] = {}
        self.secrets: list[str] = []
        self.finished_runs: set[str] = set()
        self.throttle: list[tuple[int, float | None]] = []
        self.rejected: list[str] = []
        self.ids = itertools.count(20)
        for method, path, name, handler in [
            ("POST", R + "/generate-jitconfig", "runners.jitconfig", self.jitconfig),
            ("POST", R + "/registration-token", "runners.registration-token", self.registration_token),
            ("GET", R, "runners.list", self.list),
            ("GET", R + "/{runner_id}", "runners.get", self.get),
            ("DELETE", R + "/{runner_id}", "runners.delete", self.delete),
            ("GET", "/repos/{owner}/{repo}/actions/runs/{run_id}", "runs.get", self.run),
        ]:
            self.route(method, path, name, handler)

    # -- knobs and auth -----------------------------------------------------------------
    def before(self, method: str, name: str, headers: Any) -> None:
        auth = headers.get("Authorization") or ""
        if auth not in (f"token {self.token}", f"Bearer {self.token}"):
            raise Reply(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})
        with self.lock:
            if self.throttle:
                status, after = self.throttle.pop(0)
                raise Reply(status, {"message": "Service unavailable" if status >= 500 else "rate limited"},
                            {"Retry-After": f"{after:g}"} if after is not None else {})

    def _repo(self, owner: str, repo: str) -> None:
        if f"{owner}/{repo}" != self.repo:
            raise Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})

    def count(self) -> int:
        with self.lock:
            return len(self.runners)

    # -- the VM side ------------------------------------------------------------------------
    def runner_connects(self, jit_config: str) -> None:
        with self.lock:
            rid = self.jit.get(jit_config)
            if rid in self.runners:
                self.runners[rid]["status"] = "online"
                self.runners[rid]["version"] = "2.321.0"

    def runner_disconnects(self, jit_config: str) -> None:
        with self.lock:
            rid = self.jit.get(jit_config)
            if rid in self.runners:
                self.runners[rid]["status"] = "offline"
                self.runners[rid]["busy"] = False

    def add_runner(self, name: str, status: str = "offline") -> int:
        """Register a runner directly (an orphan from an earlier run, for janitor tests)."""
        with self.lock:
            rid = next(self.ids)
            self.runners[rid] = {"id": rid, "runner_group_id": 1, "name": name, "os": "Linux", "status": status,
                                 "busy": False, "ephemeral": True,
                                 "labels": [{"id": 1, "name": "self-hosted", "type": "read-only"},
                                            {"id": 2, "name": name, "type": "custom"}]}
            return rid

    # -- routes ------------------------------------------------------------------------------
    def jitconfig(self, owner: str, repo: str, body: Any, **_: Any) -> Any:
        self._repo(owner, repo)
        path = "/repos/{owner}/{repo}/actions/runners/generate-jitconfig"
        errs = problems(github_validator(path, "post"), body)
        if errs:
            self.rejected.append("; ".join(errs))
            raise Reply(422, {"message": "Invalid request.\n\n" + "\n".join(errs),
                              "documentation_url": "https://docs.github.com/rest"})
        with self.lock:
            if any(r["name"] == body["name"] for r in self.runners.values()):
                raise Reply(409, {"message": "Already exists - A runner with the name "
                                  f"{body['name']} already exists.", "documentation_url": "https://docs.github.com/rest"})
            rid = self.add_runner(body["name"])
            self.runners[rid]["runner_group_id"] = body["runner_group_id"]
            self.runners[rid]["labels"] = [{"id": 1, "name": "self-hosted", "type": "read-only"},
                                           {"id": 3, "name": "Linux", "type": "read-only"},
                                           {"id": 4, "name": "X64", "type": "read-only"},
                                           *({"id": 10 + i, "name": lb, "type": "custom"}
                                             for i, lb in enumerate(body["labels"]))]
            secret = base64.b64encode(secrets.token_bytes(48)).decode()
            self.jit[secret] = rid
            self.secrets.append(secret)
            out = {"runner": self.runners[rid], "encoded_jit_config": secret}
        assert not problems(github_validator(path, "post", "201"), out)
        return 201, out

    def registration_token(self, owner: str, repo: str, **_: Any) -> Any:
        self._repo(owner, repo)
        tok = "AABB" + secrets.token_hex(12).upper()
        self.secrets.append(tok)
        out = {"token": tok, "expires_at": "2030-01-01T00:00:00.000+00:00"}
        assert not problems(github_validator("/repos/{owner}/{repo}/actions/runners/registration-token", "post",
                                             "201"), out)
        return 201, out

    def list(self, owner: str, repo: str, query: dict[str, str], **_: Any) -> Any:
        self._repo(owner, repo)
        per_page = int(query.get("per_page", 30))
        page = int(query.get("page", 1))
        with self.lock:
            all_runners = sorted(self.runners.values(), key=lambda r: r["id"])
        chunk = all_runners[(page - 1) * per_page: page * per_page]
        out = {"total_count": len(all_runners), "runners": chunk}
        assert not problems(github_validator(P, "get", "200"), out)
        headers = {}
        if page * per_page < len(all_runners):
            base = f"{self.url}/repos/{owner}/{repo}/actions/runners?per_page={per_page}"
            headers["Link"] = f'<{base}&page={page + 1}>; rel="next"'
        return 200, out, headers

    def get(self, owner: str, repo: str, runner_id: str, **_: Any) -> Any:
        self._repo(owner, repo)
        with self.lock:
            r = self.runners.get(int(runner_id))
        if r is None:
            raise Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        assert not problems(github_validator(P + "/{runner_id}", "get", "200"), r)
        return r

    def delete(self, owner: str, repo: str, runner_id: str, **_: Any) -> Any:
        self._repo(owner, repo)
        with self.lock:
            if self.runners.pop(int(runner_id), None) is None:
                raise Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        return 204, None

    def run(self, owner: str, repo: str, run_id: str, **_: Any) -> Any:
        """A workflow run (the fields the janitor reads; the full object is large)."""
        self._repo(owner, repo)
        done = run_id in self.finished_runs
        return {"id": int(run_id), "name": "gpu-notebooks", "status": "completed" if done else "in_progress",
                "conclusion": "success" if done else None, "run_attempt": 1,
                "url": f"{self.url}/repos/{owner}/{repo}/actions/runs/{run_id}"}

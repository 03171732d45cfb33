"""A GitHub stand-in: repository self-hosted runners (generate-jitconfig, list, get, delete,
registration-token), workflow runs (get; a workflow's runs, filtered by branch, status, head_sha,
event), a run's artifacts (list; download: a 302 to a signed address on another host name that
refuses an Authorization header, 410 once expired), issue comments (list, create, get, update)
and commit comments (list, create, update). A runner shows ``online`` once the VM that holds
its just-in-time config runs (the Compute stand-in calls :meth:`runner_connects`).

Request bodies are validated against the published OpenAPI description (fixtures); runner
responses are checked against it too. Knobs: ``throttle`` (like the Compute stand-in's),
``finished_runs`` (run ids whose status is completed), ``user_login`` (the token's user for
``GET /user``; None answers 403 as GitHub does for the installation token GITHUB_TOKEN),
``comment_login`` (the author of the comments this token writes), ``read_only`` (comment writes
answer 403, like a fork pull request's token).

Comment bodies over 65,536 characters are refused with 422, as GitHub does.

The latest release of actions/runner (``GET /repos/actions/runner/releases/latest``, the runner
release ``start`` installs): ``runner_release`` sets its version, the sha256 of its linux-x64
package, whether the asset carries a ``digest`` (newer releases do; older ones answer null) and
the checksum its notes list (``body_sha256``; None: the notes list none).

Pull-request approval: ``permissions`` (login -> admin, write, read or none; a login not there is
not a collaborator: 404) answers the collaborator-permission endpoint; ``pr_labels`` (number ->
label names) is what listing and removing an issue's labels read and act on; ``pr_reviews``
(number -> reviews with their commit) answers a pull request's reviews. ``run_jobs`` ((run id,
attempt) -> jobs with their runner) answers a run attempt's jobs; ``missing_runs`` answer 404.

Organisation runners and runner groups (the repository owner is the organisation): ``org_runners``
(id -> runner, with ``runner_group_id``), registered by POST /orgs/{org}/actions/runners/generate-jitconfig
into an existing group, listed (``name`` filter), got and deleted like the repository's;
``runner_groups`` (id -> group in the published shape; 1 is the Default group) with
``group_repositories`` (id -> repository full names a ``selected`` group lets in). ``org_runner_admin``
False answers 403 on every organisation route (a token without "Self-hosted runners").
:meth:`may_take` is GitHub's assignment rule: which job a runner may be given.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections import Counter
from urllib.parse import quote, unquote
import secrets
from datetime import datetime, timezone
from collections.abc import Iterator
from typing import Any

import jsonschema

from .github_doctor import DoctorGitHubRoutes
from .http import Reply, StandIn
from .schemas import github_validator, problems

R = "/repos/{owner}/{repo}/actions/runners"
OR = "/orgs/{org}/actions/runners"
RG = "/orgs/{org}/actions/runner-groups"
P = "/repos/{owner}/{repo}/actions/runners"
IC = "/repos/{owner}/{repo}/issues/{issue_number}/comments"
ICI = "/repos/{owner}/{repo}/issues/comments/{comment_id}"
CC = "/repos/{owner}/{repo}/commits/{commit_sha}/comments"
CCI = "/repos/{owner}/{repo}/comments/{comment_id}"
MAX_COMMENT_CHARS = 65_536
RUNNER_SHA256 = "0f3c8a1c3bda3b1f2d5c9f4e6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f7"
"""The stand-in's checksum of its runner package (not a real release's)."""
# PATCH /repos/{owner}/{repo}/comments/{comment_id} (update a commit comment) is not in the OpenAPI
# subset the fixtures come from; GitHub documents the same body as for an issue comment.
RUN_STATUSES = ("completed", "action_required", "cancelled", "failure", "neutral", "skipped", "stale", "success",
                "timed_out", "in_progress", "queued", "requested", "waiting", "pending")
COMMIT_COMMENT_PATCH = jsonschema.Draft7Validator(
    {"type": "object", "properties": {"body": {"type": "string"}}, "required": ["body"], "additionalProperties": False})


class GitHubStandIn(DoctorGitHubRoutes, StandIn):
    def __init__(self, *, token: str = "test-token", repo: str = "octo-org/runtime") -> None:
        super().__init__()
        self.token = token
        self.repo = repo
        self.runners: dict[int, dict[str, Any]] = {}
        self.org_runners: dict[int, dict[str, Any]] = {}
        self.org_runner_admin = True
        self.runner_groups: dict[int, dict[str, Any]] = {}
        self.group_repositories: dict[int, list[str]] = {}
        self.group_ids = itertools.count(2)
        self.add_runner_group("Default", default=True, visibility="all", allows_public_repositories=False,
                              restricted_to_workflows=False)
        self.jit: dict[str, int] = {}
        self.secrets: list[str] = []
        self.finished_runs: set[str] = set()
        self.missing_runs: set[str] = set()
        """Run ids this repository does not have (deleted, or another repository's): 404."""
        self.throttle: list[tuple[int, float | None]] = []
        self.rejected: list[str] = []
        self.ids = itertools.count(20)
        self.user_login: str | None = None
        self.comment_login = "github-actions[bot]"
        self.read_only = False
        self.comments: dict[int, dict[str, Any]] = {}
        """id -> {"kind": "issue"|"commit", "number"|"sha", "body", "login", ...}."""
        self.comment_ids = itertools.count(9000)
        self.permissions: dict[str, str] = {}
        self.pr_labels: dict[int, list[str]] = {}
        self.pr_reviews: dict[int, list[dict[str, str]]] = {}
        """number -> reviews in the order they were submitted: {"login", "state", "commit_id"}."""
        self.run_jobs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        """(run id, attempt) -> jobs: {"name", "runner_name", "status", "conclusion"}."""
        self.default_workflow_id = 161335
        self.workflow_runs: dict[int, dict[str, Any]] = {}
        self.run_ids = itertools.count(7001)
        self.artifacts: dict[int, dict[str, Any]] = {}
        self.artifact_ids = itertools.count(300)
        self.blob_signatures: dict[str, int] = {}
        self.leaked_auth: list[str] = []
        """Authorization headers that reached the storage host (there must be none)."""
        self.blob_failures: dict[int, int] = {}
        """Artifact id -> how many more downloads of it the storage host answers with 503."""
        self.blob_downloads: Counter[int] = Counter()
        """Artifact id -> archives served whole."""
        self.runner_release: dict[str, Any] = {"version": "2.330.0", "sha256": RUNNER_SHA256, "digest": True,
                                               "body_sha256": RUNNER_SHA256}
        for method, path, name, handler in [
            ("POST", R + "/generate-jitconfig", "runners.jitconfig", self.jitconfig),
            ("POST", R + "/registration-token", "runners.registration-token", self.registration_token),
            ("GET", R, "runners.list", self.list),
            ("GET", R + "/{runner_id}", "runners.get", self.get),
            ("DELETE", R + "/{runner_id}", "runners.delete", self.delete),
            ("GET", "/repos/{owner}/{repo}/actions/runs/{run_id}", "runs.get", self.run),
            ("GET", "/repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs", "runs.list", self.workflow_runs_list),
            ("GET", "/repos/{owner}/{repo}/actions/runs/{run_id}/artifacts", "artifacts.list", self.run_artifacts),
            ("GET", "/repos/{owner}/{repo}/actions/artifacts/{artifact_id}/{archive_format}", "artifacts.download",
             self.artifact_download),
            ("GET", "/blob/{artifact_id}", "artifacts.blob", self.blob),
            ("GET", "/user", "user.get", self.user),
            ("GET", IC, "issue-comments.list", self.issue_comments),
            ("POST", IC, "issue-comments.create", self.create_issue_comment),
            ("GET", ICI, "issue-comments.get", self.get_issue_comment),
            ("PATCH", ICI, "issue-comments.update", self.update_issue_comment),
            ("GET", CC, "commit-comments.list", self.commit_comments),
            ("POST", CC, "commit-comments.create", self.create_commit_comment),
            ("PATCH", CCI, "commit-comments.update", self.update_commit_comment),
            ("GET", "/repos/{owner}/{repo}/collaborators/{username}/permission", "collaborators.permission",
             self.collaborator_permission),
            ("DELETE", "/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}", "issue-labels.remove",
             self.remove_label),
            ("GET", "/repos/{owner}/{repo}/releases/latest", "releases.latest", self.latest_release),
            ("GET", "/repos/{owner}/{repo}/issues/{issue_number}/labels", "issue-labels.list", self.list_labels),
            ("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews", "pull-reviews.list", self.list_reviews),
            ("GET", "/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt_number}/jobs", "run-jobs.list",
             self.run_attempt_jobs),
            ("POST", OR + "/generate-jitconfig", "org-runners.jitconfig", self.org_jitconfig),
            ("GET", OR, "org-runners.list", self.org_list),
            ("GET", OR + "/{runner_id}", "org-runners.get", self.org_get),
            ("DELETE", OR + "/{runner_id}", "org-runners.delete", self.org_delete),
            ("GET", RG, "runner-groups.list", self.runner_groups_list),
            ("GET", RG + "/{runner_group_id}", "runner-groups.get", self.runner_group_get),
        ]:
            self.route(method, path, name, handler)
        self._doctor_setup()  # what gpu-runner doctor reads (github_doctor.py)

    # -- knobs and auth -----------------------------------------------------------------
    def before(self, method: str, name: str, headers: Any) -> None:
        if name == "artifacts.blob":
            return  # another host in truth: no GitHub token there (see blob)
        auth = headers.get("Authorization") or ""
        if auth not in (f"token {self.token}", f"Bearer {self.token}"):
            raise Reply(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})
        self._doctor_before(name)
        if name.startswith(("org-runners.", "runner-groups.")) and not self.org_runner_admin:
            raise Reply(403, {"message": "Resource not accessible by personal access token",
                              "documentation_url": "https://docs.github.com/rest/actions/self-hosted-runners"})
        with self.lock:
            if self.throttle:
                status, after = self.throttle.pop(0)
                raise Reply(status, {"message": "Service unavailable" if status >= 500 else "rate limited"},
                            {"Retry-After": f"{after:g}"} if after is not None else {})

    def _repo(self, owner: str, repo: str) -> None:
        if f"{owner}/{repo}" != self.repo:
            raise Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})

    def count(self) -> int:
        """Registrations of both scopes, the repository's and the organisation's."""
        with self.lock:
            return len(self.runners) + len(self.org_runners)

    # -- the VM side ------------------------------------------------------------------------
    def runner_connects(self, jit_config: str) -> None:
        with self.lock:
            rid = self.jit.get(jit_config)
            for table in (self.runners, self.org_runners):
                if rid in table:
                    table[rid]["status"] = "online"
                    table[rid]["version"] = self.runner_release["version"]

    def runner_disconnects(self, jit_config: str) -> None:
        with self.lock:
            rid = self.jit.get(jit_config)
            for table in (self.runners, self.org_runners):
                if rid in table:
                    table[rid]["status"] = "offline"
                    table[rid]["busy"] = False

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
        return self._jit("/repos/{owner}/{repo}/actions/runners/generate-jitconfig", body, self.runners,
                         lambda name, group: self.add_runner(name))

    def _jit(self, path: str, body: Any, table: dict[int, Any], add: Any, groups: Any = None) -> Any:
        """generate-jitconfig (repository or organisation): the body checked against the published
        schema (422 otherwise), the runner group known where ``groups`` lists them (404), the name
        unique in its scope (409); the runner registered with its labels and a one-time config."""
        errs = problems(github_validator(path, "post"), body)
        if errs:
            self.rejected.append("; ".join(errs))
            raise Reply(422, {"message": "Invalid request.\n\n" + "\n".join(errs),
                              "documentation_url": "https://docs.github.com/rest"})
        with self.lock:
            if groups is not None and body["runner_group_id"] not in groups:
                raise Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
            if any(r["name"] == body["name"] for r in table.values()):
                raise Reply(409, {"message": "Already exists - A runner with the name "
                                  f"{body['name']} already exists.", "documentation_url": "https://docs.github.com/rest"})
            rid = add(body["name"], body["runner_group_id"])
            table[rid]["runner_group_id"] = body["runner_group_id"]
            table[rid]["labels"] = [{"id": 1, "name": "self-hosted", "type": "read-only"},
                                    {"id": 3, "name": "Linux", "type": "read-only"},
                                    {"id": 4, "name": "X64", "type": "read-only"},
                                    *({"id": 10 + i, "name": lb, "type": "custom"}
                                      for i, lb in enumerate(body["labels"]))]
            secret = base64.b64encode(secrets.token_bytes(48)).decode()
            self.jit[secret] = rid
            self.secrets.append(secret)
            out = {"runner": table[rid], "encoded_jit_config": secret}
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
        """A workflow run: one added with :meth:`add_run`, else one of workflow ``default_workflow_id``
        on ``main``, in progress unless its id is in ``finished_runs`` (the janitor's view)."""
        self._repo(owner, repo)
        if run_id in self.missing_runs:
            raise Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        with self.lock:
            run = self.workflow_runs.get(int(run_id))
        if run is None:
            done = run_id in self.finished_runs
            run = {"id": int(run_id), "workflow_id": self.default_workflow_id, "head_branch": "main",
                   "head_sha": "0" * 40, "event": "push", "status": "completed" if done else "in_progress",
                   "conclusion": "success" if done else None, "run_number": int(run_id), "head_repo": self.repo,
                   "created_at": "2025-01-02T03:04:05Z"}
        out = self._run_json(run)
        assert not problems(github_validator("/repos/{owner}/{repo}/actions/runs/{run_id}", "get", "200"), out)
        return out

    # -- workflow runs and their artifacts ----------------------------------------------------
    def add_run(self, *, workflow_id: int | None = None, head_branch: str = "main", head_sha: str = "a" * 40,
                event: str = "push", conclusion: str | None = "success", head_repo: str | None = None,
                artifacts: dict[str, bytes] | None = None, expired: bool = False) -> int:
        """A finished (or, with ``conclusion=None``, running) run; newer than every earlier one.
        ``artifacts``: name -> the zip file's bytes."""
        with self.lock:
            rid = next(self.run_ids)
            self.workflow_runs[rid] = {
                "id": rid, "workflow_id": workflow_id or self.default_workflow_id, "head_branch": head_branch,
                "head_sha": head_sha, "event": event, "status": "completed" if conclusion else "in_progress",
                "conclusion": conclusion, "run_number": rid - 7000, "head_repo": head_repo or self.repo,
                "created_at": f"2025-01-{1 + (rid - 7000) // 24:02d}T{(rid - 7000) % 24:02d}:00:00Z"}
            for name, data in (artifacts or {}).items():
                aid = next(self.artifact_ids)
                self.artifacts[aid] = {"id": aid, "run_id": rid, "name": name, "data": data, "expired": expired}
            return rid

    def _repo_json(self, full_name: str) -> dict[str, Any]:
        owner, name = full_name.split("/")
        u = f"{self.url}/repos/{full_name}"
        out: dict[str, Any] = {"id": 1296269 + len(full_name), "node_id": "R_kgDOB", "name": name,
                               "full_name": full_name, "owner": self._user(owner), "private": False,
                               "html_url": f"https://github.com/{full_name}", "description": None,
                               "fork": full_name != self.repo, "url": u}
        for key in ("archive", "assignees", "blobs", "branches", "collaborators", "comments", "commits", "compare",
                    "contents", "contributors", "deployments", "downloads", "events", "forks", "git_commits",
                    "git_refs", "git_tags", "hooks", "issue_comment", "issue_events", "issues", "keys", "labels",
                    "languages", "merges", "milestones", "notifications", "pulls", "releases", "stargazers",
                    "statuses", "subscribers", "subscription", "tags", "teams", "trees"):
            out[f"{key}_url"] = f"{u}/{key.replace('_', '/')}"
        return out

    def _run_json(self, r: dict[str, Any]) -> dict[str, Any]:
        base = f"{self.url}/repos/{self.repo}/actions/runs/{r['id']}"
        return {
            "id": r["id"], "name": "runtime-tests", "node_id": f"WFR_{r['id']}", "head_branch": r["head_branch"],
            "head_sha": r["head_sha"], "path": ".github/workflows/runtime-tests.yml", "display_title": "runtime tests",
            "run_number": r["run_number"], "event": r["event"], "status": r["status"], "conclusion": r["conclusion"],
            "workflow_id": r["workflow_id"], "url": base, "run_attempt": r.get("run_attempt", 1),
            "run_started_at": r["created_at"],
            "html_url": f"https://github.com/{self.repo}/actions/runs/{r['id']}",
            "pull_requests": [], "created_at": r["created_at"], "updated_at": r.get("updated_at", r["created_at"]),
            "jobs_url": f"{base}/jobs", "logs_url": f"{base}/logs", "check_suite_url": f"{base}/check-suite",
            "artifacts_url": f"{base}/artifacts", "cancel_url": f"{base}/cancel", "rerun_url": f"{base}/rerun",
            "workflow_url": f"{self.url}/repos/{self.repo}/actions/workflows/{r['workflow_id']}",
            "head_commit": {"id": r["head_sha"], "tree_id": "b" * 40, "message": "a commit",
                            "timestamp": r["created_at"], "author": {"name": "Octo Cat", "email": "octo@example.com"},
                            "committer": {"name": "Octo Cat", "email": "octo@example.com"}},
            "repository": self._repo_json(self.repo), "head_repository": self._repo_json(r["head_repo"]),
        }

    def workflow_runs_list(self, owner: str, repo: str, workflow_id: str, query: dict[str, str], **_: Any) -> Any:
        self._repo(owner, repo)
        unknown = set(query) - {"branch", "status", "head_sha", "event", "per_page", "page", "actor", "created",
                                "exclude_pull_requests", "check_suite_id"}
        if unknown or query.get("status", "success") not in RUN_STATUSES:
            raise Reply(422, {"message": f"Validation Failed: {sorted(unknown) or query.get('status')}",
                              "documentation_url": "https://docs.github.com/rest"})
        with self.lock:
            runs = sorted(self.workflow_runs.values(), key=lambda r: r["id"], reverse=True)  # newest first
        wanted = str(workflow_id)

        def keep(r: dict[str, Any]) -> bool:
            status = query.get("status")
            if status and status not in (r["status"], r["conclusion"]):
                return False
            return (str(r["workflow_id"]) == wanted or wanted == "runtime-tests.yml") and all(
                query.get(k) in (None, r[k]) for k in ("head_sha", "event")) and query.get("branch") in (
                None, r["head_branch"])

        items = [self._run_json(r) for r in runs if keep(r)]
        chunk, headers = self._page(items, query, f"/repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs")
        out = {"total_count": len(items), "workflow_runs": chunk}
        assert not problems(github_validator("/repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs", "get",
                                             "200"), out)
        return 200, out, headers

    def _artifact_json(self, a: dict[str, Any]) -> dict[str, Any]:
        run = self.workflow_runs[a["run_id"]]
        u = f"{self.url}/repos/{self.repo}/actions/artifacts/{a['id']}"
        return {"id": a["id"], "node_id": f"MDg6QXJ0aWZhY3Q{a['id']}", "name": a["name"],
                "size_in_bytes": len(a["data"]), "url": u, "archive_download_url": f"{u}/zip",
                "expired": a["expired"], "created_at": run["created_at"], "updated_at": run["created_at"],
                "expires_at": "2025-01-16T00:00:00Z" if a["expired"] else "2099-01-01T00:00:00Z",
                "digest": "sha256:" + hashlib.sha256(a["data"]).hexdigest(),
                "workflow_run": {"id": run["id"], "repository_id": 1296269, "head_repository_id": 1296269,
                                 "head_branch": run["head_branch"], "head_sha": run["head_sha"]}}

    def run_artifacts(self, owner: str, repo: str, run_id: str, query: dict[str, str], **_: Any) -> Any:
        self._repo(owner, repo)
        with self.lock:
            if int(run_id) not in self.workflow_runs:
                raise Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
            items = [self._artifact_json(a) for a in sorted(self.artifacts.values(), key=lambda a: a["id"])
                     if a["run_id"] == int(run_id) and query.get("name") in (None, a["name"])]
        chunk, headers = self._page(items, query, f"/repos/{owner}/{repo}/actions/runs/{run_id}/artifacts")
        out = {"total_count": len(items), "artifacts": chunk}
        assert not problems(github_validator("/repos/{owner}/{repo}/actions/runs/{run_id}/artifacts", "get", "200"),
                            out)
        return 200, out, headers

    def artifact_download(self, owner: str, repo: str, artifact_id: str, archive_format: str, **_: Any) -> Any:
        """302 to a signed address on another host (as GitHub sends to blob storage), or 410 once expired."""
        self._repo(owner, repo)
        with self.lock:
            a = self.artifacts.get(int(artifact_id))
        if a is None or archive_format != "zip":
            raise Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        if a["expired"] or a.get("gone"):
            raise Reply(410, {"message": "Artifact has expired", "documentation_url": "https://docs.github.com/rest"})
        sig = secrets.token_urlsafe(16)
        with self.lock:
            self.blob_signatures[sig] = a["id"]
        port = self.address.rsplit(":", 1)[1]
        return 302, None, {"Location": f"http://localhost:{port}/blob/{a['id']}?sig={sig}"}

    def blob(self, artifact_id: str, query: dict[str, str], headers: Any, **_: Any) -> Any:
        """The storage side: the signature in the address is the credential; a request that also
        carries an Authorization header is refused, as Azure Blob Storage refuses it."""
        if headers.get("Authorization"):
            self.leaked_auth.append(headers.get("Authorization"))
            raise Reply(400, {"message": "Authentication information is not given in the correct format"})
        self._blob_outage(int(artifact_id))
        with self.lock:
            ok = self.blob_signatures.get(query.get("sig", "")) == int(artifact_id)
            data = self.artifacts[int(artifact_id)]["data"] if ok else None
        if data is None:
            raise Reply(403, {"message": "Server failed to authenticate the request"})
        with self.lock:
            self.blob_downloads[int(artifact_id)] += 1
        return 200, data, {"Content-Type": "application/zip"}

    # -- runs with a history: attempts, durations, artifacts added one by one ----------------------
    def add_history_run(self, *, created_at: str, duration_s: int = 600, attempt: int = 1, **kwargs: Any) -> int:
        """A run as :meth:`add_run` makes it, created at ``created_at`` (RFC 3339), lasting
        ``duration_s`` (``updated_at``), of attempt ``attempt`` (``run_attempt``). The workflow-run
        object's ``run_attempt``, ``run_started_at`` and ``updated_at`` are in the published schema:
        https://docs.github.com/rest/actions/workflow-runs#get-a-workflow-run"""
        rid = self.add_run(**kwargs)
        start = datetime.strptime(created_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        with self.lock:
            r = self.workflow_runs[rid]
            r["created_at"] = created_at
            r["updated_at"] = datetime.fromtimestamp(start.timestamp() + duration_s, timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
            r["run_attempt"] = attempt
        return rid

    def add_artifact(self, run_id: int, name: str, data: bytes, *, expired: bool = False, gone: bool = False) -> int:
        """One more artifact of a run. ``expired``: listed with ``expired: true`` and its download
        answers 410; ``gone``: listed as not expired, yet its download answers 410 (it expired
        between the listing and the download). GitHub: "Gets a redirect URL to download an archive
        ... 410 Gone" (https://docs.github.com/rest/actions/artifacts#download-an-artifact)."""
        with self.lock:
            aid = next(self.artifact_ids)
            self.artifacts[aid] = {"id": aid, "run_id": run_id, "name": name, "data": data, "expired": expired,
                                   "gone": gone}
            return aid

    def _blob_outage(self, artifact_id: int) -> None:
        """The storage host failing (503) for an artifact while ``blob_failures`` says so."""
        with self.lock:
            left = self.blob_failures.get(artifact_id, 0)
            if left > 0:
                self.blob_failures[artifact_id] = left - 1
                raise Reply(503, {"message": "Server busy"})

    # -- the runner's own releases --------------------------------------------------------------
    def latest_release(self, owner: str, repo: str, **_: Any) -> Any:
        """The latest release of actions/runner, in the published Release shape: tag ``vX.Y.Z``,
        notes that list each package's sha256 between ``<!-- BEGIN SHA linux-x64 -->`` and
        ``<!-- END SHA linux-x64 -->`` (as actions/runner's release notes do), and assets whose
        ``digest`` is ``sha256:<hex>`` (null where GitHub computed none)."""
        if f"{owner}/{repo}".lower() != "actions/runner":
            raise Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        rel = self.runner_release
        v = rel["version"]
        base = f"{self.url}/repos/actions/runner"
        stamp = "2025-11-20T10:00:00Z"
        body = f"## What's Changed\n* a fix\n\n## SHA-256 Checksums\n"
        if rel.get("body_sha256"):
            body += f"- actions-runner-linux-x64-{v}.tar.gz <!-- BEGIN SHA linux-x64 -->{rel['body_sha256']}" \
                    "<!-- END SHA linux-x64 -->\n"

        def asset(i: int, name: str, sha: str | None) -> dict[str, Any]:
            return {"url": f"{base}/releases/assets/{900 + i}", "id": 900 + i, "node_id": f"RA_{900 + i}",
                    "name": name, "label": "", "uploader": self._user("github-actions[bot]"),
                    "content_type": "application/octet-stream", "state": "uploaded", "size": 180_000_000,
                    "digest": f"sha256:{sha}" if sha else None, "download_count": 1000,
                    "created_at": stamp, "updated_at": stamp,
                    "browser_download_url": f"https://github.com/actions/runner/releases/download/v{v}/{name}"}

        out = {"url": f"{base}/releases/77", "html_url": f"https://github.com/actions/runner/releases/tag/v{v}",
               "assets_url": f"{base}/releases/77/assets",
               "upload_url": f"https://uploads.github.com/repos/actions/runner/releases/77/assets{{?name,label}}",
               "tarball_url": f"{base}/tarball/v{v}", "zipball_url": f"{base}/zipball/v{v}", "id": 77,
               "node_id": "RE_77", "tag_name": f"v{v}", "target_commitish": "main", "name": f"v{v}", "body": body,
               "draft": False, "prerelease": False, "immutable": False, "created_at": stamp, "published_at": stamp,
               "updated_at": stamp, "author": self._user("github-actions[bot]"),
               "assets": [asset(1, f"actions-runner-linux-x64-{v}.tar.gz", rel["sha256"] if rel.get("digest") else None),
                          asset(2, f"actions-runner-linux-arm64-{v}.tar.gz", None)]}
        assert not problems(github_validator("/repos/{owner}/{repo}/releases/latest", "get", "200"), out)
        return out

    # -- pull-request approval -----------------------------------------------------------------
    def collaborator_permission(self, owner: str, repo: str, username: str, **_: Any) -> Any:
        self._repo(owner, repo)
        login = unquote(username)
        if login not in self.permissions:
            raise Reply(404, {"message": f"{login} is not a user", "documentation_url": "https://docs.github.com/rest"})
        permission = self.permissions[login]
        role = {"admin": "admin", "write": "write", "read": "read"}.get(permission, "none")
        out = {"permission": permission, "role_name": role, "user": {**self._user(login), "role_name": role}}
        assert not problems(github_validator("/repos/{owner}/{repo}/collaborators/{username}/permission", "get", "200"),
                            out)
        return out

    def remove_label(self, owner: str, repo: str, issue_number: str, name: str, **_: Any) -> Any:
        self._repo(owner, repo)
        label = unquote(name)
        with self.lock:
            labels = self.pr_labels.setdefault(int(issue_number), [])
            if label not in labels:
                raise Reply(404, {"message": "Label does not exist", "documentation_url": "https://docs.github.com/rest"})
            labels.remove(label)
            out = [{"id": 1000 + i, "node_id": f"LA_{i}", "url": f"{self.url}/repos/{owner}/{repo}/labels/{quote(n)}",
                    "name": n, "description": None, "color": "ededed", "default": False} for i, n in enumerate(labels)]
        assert not problems(github_validator("/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}", "delete",
                                             "200"), out)
        return out

    # -- labels, reviews and a run's jobs (approval bound to a commit; which job a runner ran) ----
    def _label_json(self, owner: str, repo: str, i: int, name: str) -> dict[str, Any]:
        return {"id": 1000 + i, "node_id": f"LA_{i}", "url": f"{self.url}/repos/{owner}/{repo}/labels/{quote(name)}",
                "name": name, "description": None, "color": "ededed", "default": False}

    def list_labels(self, owner: str, repo: str, issue_number: str, query: dict[str, str], **_: Any) -> Any:
        """GET /repos/{owner}/{repo}/issues/{issue_number}/labels: the labels the pull request carries now
        (https://docs.github.com/en/rest/issues/labels#list-labels-for-an-issue)."""
        self._repo(owner, repo)
        with self.lock:
            names = list(self.pr_labels.get(int(issue_number), []))
        items = [self._label_json(owner, repo, i, n) for i, n in enumerate(names)]
        chunk, headers = self._page(items, query, f"/repos/{owner}/{repo}/issues/{issue_number}/labels")
        assert not problems(github_validator("/repos/{owner}/{repo}/issues/{issue_number}/labels", "get", "200"), chunk)
        return 200, chunk, headers

    def list_reviews(self, owner: str, repo: str, pull_number: str, query: dict[str, str], **_: Any) -> Any:
        """GET /repos/{owner}/{repo}/pulls/{pull_number}/reviews, oldest first: each review's state
        (APPROVED, CHANGES_REQUESTED, COMMENTED, DISMISSED) and ``commit_id``, the commit it was
        submitted on (https://docs.github.com/en/rest/pulls/reviews#list-reviews-for-a-pull-request)."""
        self._repo(owner, repo)
        with self.lock:
            reviews = list(self.pr_reviews.get(int(pull_number), []))
        base = f"{self.url}/repos/{owner}/{repo}/pulls/{pull_number}"
        items = []
        for i, rv in enumerate(reviews):
            assoc = {"admin": "OWNER", "write": "COLLABORATOR"}.get(self.permissions.get(rv["login"], ""), "CONTRIBUTOR")
            items.append({"id": 80 + i, "node_id": f"PRR_{80 + i}", "user": self._user(rv["login"]), "body": "",
                          "state": rv["state"], "commit_id": rv["commit_id"],
                          "html_url": f"https://github.com/{owner}/{repo}/pull/{pull_number}#pullrequestreview-{80 + i}",
                          "pull_request_url": base, "author_association": assoc,
                          "_links": {"html": {"href": f"https://github.com/{owner}/{repo}/pull/{pull_number}"},
                                     "pull_request": {"href": base}},
                          "submitted_at": "2025-01-02T03:04:05Z"})
        chunk, headers = self._page(items, query, f"/repos/{owner}/{repo}/pulls/{pull_number}/reviews")
        assert not problems(github_validator("/repos/{owner}/{repo}/pulls/{pull_number}/reviews", "get", "200"), chunk)
        return 200, chunk, headers

    def run_attempt_jobs(self, owner: str, repo: str, run_id: str, attempt_number: str, query: dict[str, str],
                         **_: Any) -> Any:
        """GET /repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt_number}/jobs: the attempt's
        jobs, each with ``runner_name``, the runner GitHub assigned it to (null until then)
        (https://docs.github.com/en/rest/actions/workflow-jobs#list-jobs-for-a-workflow-run-attempt)."""
        self._repo(owner, repo)
        if run_id in self.missing_runs:
            raise Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        with self.lock:
            jobs = list(self.run_jobs.get((run_id, attempt_number), []))
        base = f"{self.url}/repos/{owner}/{repo}/actions"
        items = []
        for i, j in enumerate(jobs):
            jid = int(run_id) * 100 + i
            done = j.get("status", "completed") == "completed"
            items.append({"id": jid, "node_id": f"CR_{jid}", "run_id": int(run_id), "run_url": f"{base}/runs/{run_id}",
                          "run_attempt": int(attempt_number), "head_sha": "0" * 40, "workflow_name": "gpu",
                          "head_branch": "main", "name": j["name"], "url": f"{base}/jobs/{jid}",
                          "html_url": f"https://github.com/{owner}/{repo}/actions/runs/{run_id}/job/{jid}",
                          "status": j.get("status", "completed"),
                          "conclusion": j.get("conclusion", "success") if done else None,
                          "started_at": "2025-01-02T03:04:05Z", "completed_at": "2025-01-02T03:14:05Z" if done else None,
                          "check_run_url": f"{self.url}/repos/{owner}/{repo}/check-runs/{jid}",
                          "labels": [j.get("runner_name") or "ubuntu-latest"], "runner_id": 7 if j.get("runner_name") else None,
                          "runner_name": j.get("runner_name"), "runner_group_id": 1 if j.get("runner_name") else None,
                          "runner_group_name": "Default" if j.get("runner_name") else None,
                          "created_at": "2025-01-02T03:04:00Z"})
        chunk, headers = self._page(items, query, f"/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/"
                                                  f"{attempt_number}/jobs")
        out = {"total_count": len(items), "jobs": chunk}
        assert not problems(github_validator("/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt_number}/jobs",
                                             "get", "200"), out)
        return 200, out, headers

    # -- organisation runners and runner groups ---------------------------------------------------
    # https://docs.github.com/en/rest/actions/self-hosted-runners (the organisation's endpoints) and
    # https://docs.github.com/en/rest/actions/self-hosted-runner-groups: a group has a repository access
    # policy (visibility all, selected or private; allows_public_repositories) and a workflow access
    # policy (restricted_to_workflows, selected_workflows: "owner/repo/.github/workflows/file.yml@ref",
    # "a ref, tag, or long SHA is required"). Groups exist only for organisation (and enterprise)
    # runners: https://docs.github.com/en/actions/concepts/runners/runner-groups
    def add_runner_group(self, name: str, *, default: bool = False, visibility: str = "selected",
                         allows_public_repositories: bool = False, restricted_to_workflows: bool = True,
                         selected_workflows: list[str] | None = None, repositories: list[str] | None = None) -> int:
        """A runner group of the organisation; ``repositories`` are the ones a ``selected`` group lets in."""
        with self.lock:
            gid = 1 if default else next(self.group_ids)
            self.runner_groups[gid] = {"id": gid, "name": name, "visibility": visibility, "default": default,
                                       "inherited": False, "allows_public_repositories": allows_public_repositories,
                                       "restricted_to_workflows": restricted_to_workflows,
                                       "selected_workflows": list(selected_workflows or []),
                                       "workflow_restrictions_read_only": False}
            self.group_repositories[gid] = list(repositories if repositories is not None else [self.repo])
            return gid

    def _group_json(self, g: dict[str, Any]) -> dict[str, Any]:
        base = f"{self.url}/orgs/{self.repo.split('/', 1)[0]}/actions/runner-groups/{g['id']}"
        out = {**g, "runners_url": f"{base}/runners", "hosted_runners_url": f"{base}/hosted-runners"}
        if g["visibility"] == "selected":
            out["selected_repositories_url"] = f"{base}/repositories"
        return out

    def _org(self, org: str) -> None:
        if org.lower() != self.repo.split("/", 1)[0].lower():  # "The organization name is not case sensitive"
            raise Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})

    def add_org_runner(self, name: str, *, group_id: int, status: str = "offline") -> int:
        """An organisation runner registered directly (another repository's, or an orphan, for janitor tests)."""
        with self.lock:
            rid = next(self.ids)
            self.org_runners[rid] = {"id": rid, "runner_group_id": group_id, "name": name, "os": "Linux",
                                     "status": status, "busy": False, "ephemeral": True,
                                     "labels": [{"id": 1, "name": "self-hosted", "type": "read-only"},
                                                {"id": 2, "name": name, "type": "custom"}]}
            return rid

    def org_jitconfig(self, org: str, body: Any, **_: Any) -> Any:
        self._org(org)
        return self._jit(OR + "/generate-jitconfig", body, self.org_runners,
                         lambda name, group: self.add_org_runner(name, group_id=group), groups=self.runner_groups)

    def org_list(self, org: str, query: dict[str, str], **_: Any) -> Any:
        """GET /orgs/{org}/actions/runners: ``name`` filters by the runner's name."""
        self._org(org)
        with self.lock:
            items = sorted((r for r in self.org_runners.values() if "name" not in query or r["name"] == query["name"]),
                           key=lambda r: r["id"])
        chunk, headers = self._page(items, query, f"/orgs/{org}/actions/runners")
        out = {"total_count": len(items), "runners": chunk}
        assert not problems(github_validator(OR, "get", "200"), out)
        return 200, out, headers

    def org_get(self, org: str, runner_id: str, **_: Any) -> Any:
        self._org(org)
        with self.lock:
            r = self.org_runners.get(int(runner_id))
        if r is None:
            raise Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        assert not problems(github_validator(OR + "/{runner_id}", "get", "200"), r)
        return r

    def org_delete(self, org: str, runner_id: str, **_: Any) -> Any:
        self._org(org)
        with self.lock:
            if self.org_runners.pop(int(runner_id), None) is None:
                raise Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        return 204, None

    def runner_groups_list(self, org: str, query: dict[str, str], **_: Any) -> Any:
        self._org(org)
        with self.lock:
            items = [self._group_json(g) for _, g in sorted(self.runner_groups.items())]
        chunk, headers = self._page(items, query, f"/orgs/{org}/actions/runner-groups")
        out = {"total_count": len(items), "runner_groups": chunk}
        assert not problems(github_validator(RG, "get", "200"), out)
        return 200, out, headers

    def runner_group_get(self, org: str, runner_group_id: str, **_: Any) -> Any:
        self._org(org)
        with self.lock:
            g = self.runner_groups.get(int(runner_group_id))
        if g is None:
            raise Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        out = self._group_json(g)
        assert not problems(github_validator(RG + "/{runner_group_id}", "get", "200"), out)
        return out

    def may_take(self, runner_name: str, *, repo: str, workflow_ref: str, job_workflow_ref: str = "",
                 repo_public: bool = False) -> bool:
        """Whether GitHub gives a job of ``repo`` (from workflow ``workflow_ref``; a job defined in a
        reusable workflow also has that workflow's ``job_workflow_ref``) to the runner ``runner_name``.
        A repository runner serves only its repository. An organisation runner serves a repository its
        group lets in (visibility all; selected: the listed ones; private: private ones; a public one
        only with allows_public_repositories) and, when the group is restricted to workflows, only a job
        whose workflow is among ``selected_workflows``: "you can configure a self-hosted runner group to
        run either selected workflows or all workflows"
        (https://docs.github.com/en/actions/how-tos/manage-runners/self-hosted-runners/manage-access
        #changing-which-workflows-can-access-a-runner-group); a job of another workflow waits for a runner."""
        with self.lock:
            if any(r["name"] == runner_name for r in self.runners.values()):
                return repo == self.repo
            r = next((r for r in self.org_runners.values() if r["name"] == runner_name), None)
            if r is None or repo.split("/", 1)[0].lower() != self.repo.split("/", 1)[0].lower():
                return False
            g = self.runner_groups[r["runner_group_id"]]
            allowed = self.group_repositories.get(g["id"], [])
        if g["visibility"] == "selected" and repo not in allowed:
            return False
        if g["visibility"] == "private" and repo_public:
            return False
        if repo_public and not g["allows_public_repositories"]:
            return False
        if g.get("restricted_to_workflows"):
            return bool({workflow_ref, job_workflow_ref} & set(g.get("selected_workflows") or []) - {""})
        return True

    # -- comments ----------------------------------------------------------------------------
    def _user(self, login: str) -> dict[str, Any]:
        u = f"{self.url}/users/{login}"
        return {"login": login, "id": 41898282, "node_id": "MDM6Qm90NDE4OTgyODI=", "avatar_url": f"{u}/avatar",
                "gravatar_id": "", "url": u, "html_url": f"https://github.com/{login}", "followers_url": f"{u}/followers",
                "following_url": f"{u}/following{{/other_user}}", "gists_url": f"{u}/gists{{/gist_id}}",
                "starred_url": f"{u}/starred{{/owner}}{{/repo}}", "subscriptions_url": f"{u}/subscriptions",
                "organizations_url": f"{u}/orgs", "repos_url": f"{u}/repos", "events_url": f"{u}/events{{/privacy}}",
                "received_events_url": f"{u}/received_events", "type": "Bot" if login.endswith("[bot]") else "User",
                "site_admin": False}

    def user(self, **_: Any) -> Any:
        if self.user_login is None:
            raise Reply(403, {"message": "Resource not accessible by integration",
                              "documentation_url": "https://docs.github.com/rest/users/users#get-the-authenticated-user"})
        return self._user(self.user_login)

    def _check_body(self, validator: Any, body: Any) -> None:
        errs = problems(validator, body)
        if not errs and len(body["body"]) > MAX_COMMENT_CHARS:
            errs = [f"body: is too long (maximum is {MAX_COMMENT_CHARS} characters)"]
        if errs:
            self.rejected.append("; ".join(errs))
            raise Reply(422, {"message": "Validation Failed\n\n" + "\n".join(errs),
                              "documentation_url": "https://docs.github.com/rest"})
        if self.read_only:
            raise Reply(403, {"message": "Resource not accessible by integration",
                              "documentation_url": "https://docs.github.com/rest"})

    def add_comment(self, *, body: str, login: str, number: int | None = None, sha: str | None = None) -> int:
        """A comment written by someone (another user quoting our marker, for tests)."""
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self.lock:
            cid = next(self.comment_ids)
            self.comments[cid] = {"id": cid, "kind": "issue" if number is not None else "commit", "number": number,
                                  "sha": sha, "body": body, "login": login, "created_at": now, "updated_at": now}
            return cid

    def _issue_comment_json(self, c: dict[str, Any]) -> dict[str, Any]:
        owner_repo = self.repo
        return {"id": c["id"], "node_id": f"IC_{c['id']}", "url": f"{self.url}/repos/{owner_repo}/issues/comments/{c['id']}",
                "html_url": f"https://github.com/{owner_repo}/pull/{c['number']}#issuecomment-{c['id']}",
                "issue_url": f"{self.url}/repos/{owner_repo}/issues/{c['number']}", "body": c["body"],
                "user": self._user(c["login"]), "created_at": c["created_at"], "updated_at": c["updated_at"],
                "author_association": "NONE"}

    def _commit_comment_json(self, c: dict[str, Any]) -> dict[str, Any]:
        owner_repo = self.repo
        return {"id": c["id"], "node_id": f"CC_{c['id']}", "url": f"{self.url}/repos/{owner_repo}/comments/{c['id']}",
                "html_url": f"https://github.com/{owner_repo}/commit/{c['sha']}#commitcomment-{c['id']}",
                "body": c["body"], "path": None, "position": None, "line": None, "commit_id": c["sha"],
                "user": self._user(c["login"]), "created_at": c["created_at"], "updated_at": c["updated_at"],
                "author_association": "NONE"}

    def _page(self, items: list[Any], query: dict[str, str], base: str) -> Any:
        per_page = int(query.get("per_page", 30))
        page = int(query.get("page", 1))
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(items):
            headers["Link"] = f'<{self.url}{base}?per_page={per_page}&page={page + 1}>; rel="next"'
        return chunk, headers

    def issue_comments(self, owner: str, repo: str, issue_number: str, query: dict[str, str], **_: Any) -> Any:
        self._repo(owner, repo)
        with self.lock:
            items = [self._issue_comment_json(c) for c in sorted(self.comments.values(), key=lambda c: c["id"])
                     if c["kind"] == "issue" and c["number"] == int(issue_number)]
        chunk, headers = self._page(items, query, f"/repos/{owner}/{repo}/issues/{issue_number}/comments")
        assert not problems(github_validator(IC, "get", "200"), chunk)
        return 200, chunk, headers

    def create_issue_comment(self, owner: str, repo: str, issue_number: str, body: Any, **_: Any) -> Any:
        self._repo(owner, repo)
        self._check_body(github_validator(IC, "post"), body)
        cid = self.add_comment(body=body["body"], login=self.comment_login, number=int(issue_number))
        out = self._issue_comment_json(self.comments[cid])
        assert not problems(github_validator(IC, "post", "201"), out)
        return 201, out

    def _comment(self, comment_id: str, kind: str) -> dict[str, Any]:
        c = self.comments.get(int(comment_id))
        if c is None or c["kind"] != kind:
            raise Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        return c

    def get_issue_comment(self, owner: str, repo: str, comment_id: str, **_: Any) -> Any:
        self._repo(owner, repo)
        out = self._issue_comment_json(self._comment(comment_id, "issue"))
        assert not problems(github_validator(ICI, "get", "200"), out)
        return out

    def update_issue_comment(self, owner: str, repo: str, comment_id: str, body: Any, **_: Any) -> Any:
        self._repo(owner, repo)
        self._check_body(github_validator(ICI, "patch"), body)
        with self.lock:
            c = self._comment(comment_id, "issue")
            if c["login"] != self.comment_login:
                raise Reply(403, {"message": "You cannot edit someone else's comment",
                                  "documentation_url": "https://docs.github.com/rest"})
            c["body"] = body["body"]
            c["updated_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            out = self._issue_comment_json(c)
        assert not problems(github_validator(ICI, "patch", "200"), out)
        return out

    def commit_comments(self, owner: str, repo: str, commit_sha: str, query: dict[str, str], **_: Any) -> Any:
        self._repo(owner, repo)
        with self.lock:
            items = [self._commit_comment_json(c) for c in sorted(self.comments.values(), key=lambda c: c["id"])
                     if c["kind"] == "commit" and c["sha"] == commit_sha]
        chunk, headers = self._page(items, query, f"/repos/{owner}/{repo}/commits/{commit_sha}/comments")
        assert not problems(github_validator(CC, "get", "200"), chunk)
        return 200, chunk, headers

    def create_commit_comment(self, owner: str, repo: str, commit_sha: str, body: Any, **_: Any) -> Any:
        self._repo(owner, repo)
        self._check_body(github_validator(CC, "post"), body)
        cid = self.add_comment(body=body["body"], login=self.comment_login, sha=commit_sha)
        out = self._commit_comment_json(self.comments[cid])
        assert not problems(github_validator(CC, "post", "201"), out)
        return 201, out

    def update_commit_comment(self, owner: str, repo: str, comment_id: str, body: Any, **_: Any) -> Any:
        self._repo(owner, repo)
        self._check_body(COMMIT_COMMENT_PATCH, body)
        with self.lock:
            c = self._comment(comment_id, "commit")
            c["body"] = body["body"]
            out = self._commit_comment_json(c)
        assert not problems(github_validator(CC, "post", "201"), out)  # the same commit-comment object
        return out


def github_standin(monkeypatch: Any, repo: str) -> Iterator[GitHubStandIn]:
    """Start a stand-in for ``repo`` and point the real client at it (a fixture's body)."""
    s = GitHubStandIn(repo=repo).start()
    monkeypatch.setenv("GITHUB_API_URL", s.url)
    monkeypatch.setenv("GITHUB_TOKEN", "test-token")
    monkeypatch.delenv("GPU_RUNNER_GITHUB_TOKEN", raising=False)
    monkeypatch.setenv("GPU_RUNNER_RETRY_BASE_S", "0.01")
    try:
        yield s
    finally:
        s.stop()

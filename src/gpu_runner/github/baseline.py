"""``gpu-runner baseline fetch``: the results of the run to compare with, from GitHub Actions.

Which run: the latest successful run of this same workflow (the workflow of ``GITHUB_RUN_ID``)

* on a pull request (``pull_request``, ``pull_request_target``): on its base branch;
* on a push: of the previous commit (the event's ``before``);
* otherwise (schedule, dispatch): on the same branch, before this run;

always a run of this repository's own code (a fork's pull request from a branch that happens
to be called ``main`` is not the base branch), never this run itself.

What: its gpu-runner results artifacts (``gpu-runner-<entry id>.attempt-<A>``, or the last retry's,
``….retry-<N>``, when its Spot VM was preempted, of the latest attempt of the run that has any; the merged
``gpu-runner-report`` only when there are none), of which only each entry's ``results.json``
is kept: the comparison needs nothing else. An artifact is a zip file from a previous run, so
hostile: members are read only when their name is a plain relative path ending in
``results.json`` (no ``..``, no absolute path, no backslash, no drive, not a link), each read
is cut at :data:`MAX_RESULTS_BYTES` whatever the header claims, a download stops at
``max_artifact_bytes``, and the file lands only under the output folder.

The download follows GitHub's 302 to its storage host *without* the token. ``baseline.json``
in the output folder says what was found, or why nothing was (first run, expired artifacts, a
failed run of the previous commit), which ``gpu-runner report --baseline`` tells once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..compare import BASELINE_FILE
from ..errors import ConfigError, InfraError
from ..files import write_bytes_atomic, write_json_atomic
from ..results import artifact_attempt, parse_artifact_name
from . import client as gh_client

ENTRY_ARTIFACT_PREFIX = "gpu-runner-"
REPORT_ARTIFACT = "gpu-runner-report"
SUMMARY_ARTIFACT = "gpu-runner-summary"
"""The report job's summary.md, handed to the comment job: no results in it."""
MAX_ARTIFACT_BYTES = 2 * 1024**3
MAX_RESULTS_BYTES = 64 * 1024**2
MAX_MEMBERS = 200_000
MAX_DEPTH = 16
MAX_RUNS_LOOKED_AT = 200
ZERO_SHA = re.compile(r"^0+$")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass
class ArtifactNote:
    name: str
    id: int
    size_in_bytes: int
    entries: list[str] = field(default_factory=list)
    """The results.json files taken from it, relative to the output folder."""
    skipped: str | None = None
    """Why nothing was taken from it."""


@dataclass
class Fetched:
    """What ``baseline.json`` records."""

    found: bool
    reason: str | None = None
    description: str | None = None
    run_id: int | None = None
    run_number: int | None = None
    html_url: str | None = None
    head_sha: str | None = None
    head_branch: str | None = None
    event: str | None = None
    created_at: str | None = None
    workflow_id: int | None = None
    artifacts: list[ArtifactNote] = field(default_factory=list)
    entries: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- which run ----------------------------------------------------------------------------------
@dataclass
class Want:
    """The run to look for: by branch or by commit, and how to say there is none."""

    branch: str | None = None
    sha: str | None = None
    none: str = ""
    """Why there is no baseline when nothing matches."""
    no_target: str | None = None
    """Set when there is nothing to look for at all (a push that created its branch)."""


def want_from_event(event_name: str, event: Mapping[str, Any], env: Mapping[str, str], *,
                    branch: str | None = None, sha: str | None = None) -> Want:
    if sha:
        return Want(sha=sha, none=f"commit {sha[:7]} has no successful run of this workflow")
    if branch:
        return Want(branch=branch, none=f"no successful run of this workflow on the branch '{branch}' yet")
    pull = event.get("pull_request") if isinstance(event, Mapping) else None
    if event_name.startswith("pull_request") and isinstance(pull, Mapping):
        base = (pull.get("base") or {}).get("ref") if isinstance(pull.get("base"), Mapping) else None
        if isinstance(base, str) and base:
            return Want(branch=base, none=f"no successful run of this workflow on the base branch '{base}' yet")
    if event_name == "push":
        before = event.get("before") if isinstance(event, Mapping) else None
        if isinstance(before, str) and before and ZERO_SHA.match(before):
            return Want(no_target="this push created the branch: there is no previous commit to compare with")
        if isinstance(before, str) and re.fullmatch(r"[0-9a-fA-F]{7,64}", before or ""):
            return Want(sha=before, none=f"the previous commit {before[:7]} has no successful run of this workflow")
    ref = env.get("GITHUB_HEAD_REF") or env.get("GITHUB_REF_NAME")
    if ref:
        return Want(branch=ref, none=f"no earlier successful run of this workflow on '{ref}'")
    return Want(no_target="the event names no base branch or previous commit (give --branch or --sha)")


def _run_is_ours(run: Any, repo: str) -> bool:
    """A run of this repository's code, not a fork's pull request whose branch shares the name."""
    event = getattr(run, "event", "") or ""
    if event.startswith("pull_request"):
        return False
    head = getattr(run, "head_repository", None)
    return getattr(head, "full_name", None) == repo


def find_run(repo: Any, workflow_id: int | str, want: Want, *, exclude: int | None, repo_name: str) -> Any | None:
    wf = repo.get_workflow(workflow_id)
    kwargs: dict[str, Any] = {"status": "success"}
    if want.sha:
        kwargs["head_sha"] = want.sha
    if want.branch:
        kwargs["branch"] = want.branch
    for i, run in enumerate(wf.get_runs(**kwargs)):
        if i >= MAX_RUNS_LOOKED_AT:
            break
        if run.id == exclude or run.conclusion != "success" or not _run_is_ours(run, repo_name):
            continue
        if want.branch and run.head_branch != want.branch:
            continue
        return run
    return None


# -- artifacts ----------------------------------------------------------------------------------
def _safe_member(info: zipfile.ZipInfo) -> str | None:
    """The member's path when it may be extracted (a results.json at a plain relative path), else None."""
    name = info.filename
    if info.is_dir() or not name or "\\" in name or "\x00" in name or name.startswith("/") or _DRIVE.match(name):
        return None
    mode = info.external_attr >> 16
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return None  # a link, a device, a fifo: never
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts) or len(parts) > MAX_DEPTH or parts[-1] != "results.json":
        return None
    return str(PurePosixPath(*parts))


def extract_results(zip_path: Path, out_dir: Path, taken: set[str], warn: Any, *, label: str | None = None) -> list[str]:
    """Every acceptable results.json of one artifact into ``out_dir`` (first one of a path wins)."""
    out: list[str] = []
    root = out_dir.resolve()
    name = label or zip_path.name
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            warn(f"{name}: {len(infos)} members; only the first {MAX_MEMBERS} are looked at")
        for info in infos[:MAX_MEMBERS]:
            rel = _safe_member(info)
            if rel is None:
                if info.filename.rsplit("/", 1)[-1] == "results.json" or ".." in info.filename.split("/"):
                    warn(f"{name}: left out {info.filename!r} (not a plain relative path to a file)")
                continue
            if rel in taken:
                warn(f"{name}: {rel} came in an earlier artifact too; the first one is kept")
                continue
            try:
                with zf.open(info) as f:
                    data = f.read(MAX_RESULTS_BYTES + 1)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as e:
                warn(f"{name}: {rel} could not be read ({e})")
                continue
            if len(data) > MAX_RESULTS_BYTES:
                warn(f"{name}: {rel} is over the {MAX_RESULTS_BYTES}-byte limit; left out")
                continue
            try:
                doc = json.loads(data)
            except (ValueError, UnicodeDecodeError):
                doc = None
            if not isinstance(doc, dict) or "schema_version" not in doc:
                warn(f"{name}: {rel} is not a results.json; left out")
                continue
            target = (root / rel).resolve()
            if not target.is_relative_to(root) or target == root:
                continue
            try:
                write_bytes_atomic(target, data)
            except OSError as e:  # e.g. a folder of that name is a results.json taken before
                warn(f"{name}: {rel} could not be written ({e.strerror or e}); left out")
                continue
            taken.add(rel)
            out.append(rel)
    return out


def _download(gh: Any, artifact: Any, dest: Path, max_bytes: int, api_base: str) -> None:
    """GitHub answers the archive address with a 302 to its storage; follow it without the token."""
    import requests

    status, headers, _ = gh.requester.requestJson("GET", artifact.archive_download_url)
    if status == 410:
        raise _Gone()
    location = {k.lower(): v for k, v in headers.items()}.get("location")
    if status != 302 or not location:
        raise InfraError(f"artifact {artifact.name}: GitHub answered {status} instead of its download address")
    if api_base.startswith("https://") and not location.startswith("https://"):
        raise InfraError(f"artifact {artifact.name}: refusing a download address that is not https")
    last: Exception | None = None
    for _attempt in range(3):
        try:
            with requests.get(location, stream=True, timeout=(10, 120), allow_redirects=True) as r:
                if r.status_code in (500, 502, 503, 504):
                    last = InfraError(f"artifact {artifact.name}: storage answered {r.status_code}")
                    continue
                if r.status_code != 200:
                    raise InfraError(f"artifact {artifact.name}: storage answered {r.status_code}")
                declared = r.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise _TooBig()
                size = 0
                with dest.open("wb") as f:
                    for chunk in r.iter_content(chunk_size=1 << 20):
                        size += len(chunk)
                        if size > max_bytes:
                            raise _TooBig()
                        f.write(chunk)
                return
        except requests.RequestException as e:
            last = e
    raise InfraError(f"artifact {artifact.name}: download failed: {last}")


class _Gone(Exception):
    pass


class _TooBig(Exception):
    pass


def _describe(run: Any) -> str:
    where = f" on {run.head_branch}" if getattr(run, "head_branch", None) else ""
    return f"run #{run.run_number}{where} ({(run.head_sha or '')[:7]})"


# -- the command --------------------------------------------------------------------------------
def prepare_out(out_dir: Path) -> None:
    """A fresh output folder: it may exist only empty or as an earlier fetch left it."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConfigError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()) and not (out_dir / BASELINE_FILE).is_file():
            raise ConfigError(f"{out_dir} is not empty and holds no earlier baseline; choose another --out")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)


def fetch(out_dir: Path, *, env: Mapping[str, str] | None = None, event_name: str | None = None,
          event: Mapping[str, Any] | None = None, workflow: str | None = None, branch: str | None = None,
          sha: str | None = None, max_artifact_bytes: int = MAX_ARTIFACT_BYTES, log: Any = None) -> Fetched:
    """Find the baseline run, take each entry's results.json from its artifacts into ``out_dir``,
    and write ``baseline.json``. Returns what was found; GitHub errors raise InfraError (after
    ``baseline.json`` records them)."""
    from ..errors import require_extra

    require_extra("github", "fetching the baseline from GitHub")
    import requests
    from github import GithubException

    env = os.environ if env is None else env
    say = log or (lambda msg: None)
    out_dir = Path(out_dir)
    prepare_out(out_dir)
    result = Fetched(found=False)

    def warn(msg: str) -> None:
        result.warnings.append(msg)
        say(f"warning: {msg}")

    def finish(reason: str | None = None) -> Fetched:
        if reason is not None:
            result.found, result.reason = False, reason
        write_json_atomic(out_dir / BASELINE_FILE, result.to_dict())
        return result

    if event is None:
        from .comments import read_event

        event = read_event()
    event_name = env.get("GITHUB_EVENT_NAME", "") if event_name is None else event_name
    want = want_from_event(event_name, event or {}, env, branch=branch, sha=sha)
    if want.no_target:
        return finish(want.no_target)
    repo_name = gh_client.repository(env)
    run_id_text = env.get("GITHUB_RUN_ID", "")
    current = int(run_id_text) if run_id_text.isdigit() else None
    if workflow is None and current is None:
        raise ConfigError("which workflow? give --workflow FILE|ID, or run inside GitHub Actions (GITHUB_RUN_ID)")
    try:
        gh = gh_client.client(env)
        repo = gh.get_repo(repo_name)  # the client is lazy: no GET of the repository
        workflow_id: int | str = workflow if workflow is not None else repo.get_workflow_run(current).workflow_id
        result.workflow_id = workflow_id if isinstance(workflow_id, int) else None
        run = find_run(repo, workflow_id, want, exclude=current, repo_name=repo_name)
        if run is None:
            return finish(want.none)
        result.run_id, result.run_number, result.html_url = run.id, run.run_number, run.html_url
        result.head_sha, result.head_branch, result.event = run.head_sha, run.head_branch, run.event
        result.created_at = run.created_at.isoformat() if getattr(run, "created_at", None) else None
        result.description = _describe(run)
        artifacts = [a for a in run.get_artifacts() if a.name.startswith(ENTRY_ARTIFACT_PREFIX)]
        # per entry, the results of its last try (not a preempted try's) in the latest attempt of the run
        # that has any ("re-run failed jobs" leaves the earlier attempts' artifacts beside it)
        last_try: dict[str, tuple[tuple[int, int], Any]] = {}
        for a in artifacts:
            parsed = parse_artifact_name(a.name) if a.name not in (REPORT_ARTIFACT, SUMMARY_ARTIFACT) else None
            order = (artifact_attempt(a.name), parsed[1]) if parsed is not None else (-1, -1)
            if parsed is not None and not parsed[2] and order >= last_try.get(parsed[0], ((-1, -1), None))[0]:
                last_try[parsed[0]] = (order, a)
        entry_artifacts = [a for _retry, a in last_try.values()]
        chosen = entry_artifacts or [a for a in artifacts if a.name == REPORT_ARTIFACT]
        if not chosen:
            return finish(f"{result.description} has no gpu-runner results artifacts")
        taken: set[str] = set()
        expired = 0
        with tempfile.TemporaryDirectory(prefix="gpu-runner-baseline-") as tmp:
            for a in chosen:
                note = ArtifactNote(name=a.name, id=a.id, size_in_bytes=a.size_in_bytes)
                result.artifacts.append(note)
                if a.expired:
                    note.skipped, expired = "expired", expired + 1
                    continue
                if a.size_in_bytes > max_artifact_bytes:
                    note.skipped = f"{a.size_in_bytes} bytes, over the {max_artifact_bytes}-byte limit"
                    warn(f"artifact {a.name}: {note.skipped}; left out")
                    continue
                zpath = Path(tmp) / f"{a.id}.zip"
                try:
                    _download(gh, a, zpath, max_artifact_bytes, gh_client.api_url(env))
                except _Gone:
                    note.skipped, expired = "expired", expired + 1
                    continue
                except _TooBig:
                    note.skipped = f"over the {max_artifact_bytes}-byte limit"
                    warn(f"artifact {a.name}: its download is {note.skipped}; left out")
                    continue
                try:
                    note.entries = extract_results(zpath, out_dir, taken, warn, label=f"artifact {a.name}")
                except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                    note.skipped = f"not a readable zip file ({e})"
                    warn(f"artifact {a.name}: {note.skipped}; left out")
                finally:
                    zpath.unlink(missing_ok=True)
        result.entries = sorted(taken)
        if not taken:
            if expired == len(chosen):
                return finish(f"the artifacts of {result.description} have expired")
            return finish(f"the artifacts of {result.description} hold no readable results.json")
        result.found = True
        return finish()
    except GithubException as e:
        why = _api_error(e)
        finish(why)
        raise InfraError(why) from None
    except requests.RequestException as e:
        why = f"GitHub API unreachable: {e}"
        finish(why)
        raise InfraError(why) from None
    except InfraError as e:
        finish(str(e))
        raise


def _api_error(e: Any) -> str:
    status = getattr(e, "status", None)
    data = getattr(e, "data", None)
    message = data.get("message") if isinstance(data, dict) else None
    hint = " (the job's token needs `actions: read`)" if status in (403, 404) else ""
    return f"GitHub API: {status} {message or ''}".rstrip() + hint

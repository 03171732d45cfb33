"""``gpu-runner fetch``, ``runs`` and ``history``: a workflow run's artifacts, downloaded once into a cache.

Which run: a run id, or its address (``https://github.com/OWNER/REPO/actions/runs/N``, with
``/attempts/K`` for one attempt); without one, the latest finished run on the current git branch
of the workflow that runs gpu-runner (the one in ``.github/workflows`` whose job uses
``gpu-notebooks.yml``, or ``--workflow``).

Where: ``$GPU_RUNNER_CACHE_DIR``, else ``~/.cache/gpu-runner/runs``, then
``<owner>/<repo>/<run id>/<attempt>/``:

* ``results/``: one folder per artifact, named after it, as the report job's
  ``actions/download-artifact`` (``merge-multiple: false``) lays them out, and the dashboard
  (``index.html``) the report code makes of them;
* ``run.json``: the run, and per artifact its id, size, digest and state (``done``, ``expired``,
  ``refused``, ``gone``): a second call downloads only what is not ``done`` with the same id,
  size and digest the API gives now, so an interrupted fetch continues where it stopped;
* ``digest.json``: per entry its verdict and per notebook its status, wall time and GPU memory
  (:func:`write_digest`): what ``runs`` and ``history`` read, without parsing every results.json.

An artifact is a zip file from a run of code under test, so hostile: a member is extracted only
at a plain relative path (no ``..``, no absolute path, no backslash, no drive, not a link, at most
:data:`~gpu_runner.github.baseline.MAX_DEPTH` deep), the download stops at ``max_artifact_bytes``,
the bytes written at ``max_extract_bytes``, and every results.json and try record must pass the
same schema as ``gpu-runner report`` asks (an artifact with one that does not is refused whole).
The download follows GitHub's 302 without the token (:func:`gpu_runner.github.baseline._download`).

An entry artifact kept 14 days may be gone when the run's ``gpu-runner-report`` artifact (30
days, the same folders inside) is not: the missing folders are taken from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InfraError
from ..files import write_json_atomic
from ..results import TRY_FILE, find_entry_dirs, find_try_records, parse_artifact_name
from . import baseline
from . import client as gh_client

CACHE_ENV = "GPU_RUNNER_CACHE_DIR"
DIGEST_FILE = "digest.json"
RUN_FILE = "run.json"
DIGEST_VERSION = 1
MAX_EXTRACT_BYTES = 8 * 1024**3
RUN_URL = re.compile(r"^https?://[^/\s]+/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+)/actions/runs/"
                     r"(?P<run>[0-9]+)(?:/attempts/(?P<attempt>[0-9]+))?/?(?:[?#].*)?$")
_ATTEMPT = re.compile(r"[.-]attempt-?(?P<n>[1-9][0-9]{0,3})(?=$|\.)")
"""An attempt number some workflows put into artifact names (``gpu-runner-a--l4.attempt-2``)."""
_REMOTE = re.compile(r"(?:[:/])(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+?)(?:\.git)?/?$")

Log = Callable[[str], None]


# -- which run, which repository, which token ----------------------------------------------------
@dataclass
class RunRef:
    run_id: int
    attempt: int | None = None
    repo: str | None = None


def parse_run_ref(text: str) -> RunRef:
    """A run id or a run's address; anything else is a usage error."""
    text = text.strip()
    if text.isdigit() and int(text) > 0:
        return RunRef(int(text))
    m = RUN_URL.match(text)
    if m is None:
        raise ConfigError(f"{text!r} is not a run id or a run's address "
                          "(https://github.com/OWNER/REPO/actions/runs/N[/attempts/K])")
    attempt = int(m.group("attempt")) if m.group("attempt") else None
    if attempt == 0:
        raise ConfigError(f"{text!r}: attempts are numbered from 1")
    return RunRef(int(m.group("run")), attempt, f"{m.group('owner')}/{m.group('repo')}")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def repository(env: Mapping[str, str], ref: RunRef | None = None) -> str:
    """OWNER/NAME: from the run's address, else ``GITHUB_REPOSITORY``, else the git remote ``origin``."""
    if ref is not None and ref.repo:
        named = (env.get("GITHUB_REPOSITORY") or "").strip()
        if named and named.lower() != ref.repo.lower():
            raise ConfigError(f"the run's address is of {ref.repo}, GITHUB_REPOSITORY says {named}")
        return ref.repo
    if (env.get("GITHUB_REPOSITORY") or "").strip():
        return gh_client.repository(env)
    remote = _git("remote", "get-url", "origin")
    m = _REMOTE.search(remote or "")
    if m is None:
        raise ConfigError("which repository? set GITHUB_REPOSITORY=OWNER/NAME, give the run's address, or run "
                          "inside a clone whose remote 'origin' is on GitHub")
    return f"{m.group('owner')}/{m.group('repo')}"


def token(env: Mapping[str, str]) -> str | None:
    """``GPU_RUNNER_GITHUB_TOKEN``, ``GITHUB_TOKEN``, else what ``gh auth token`` says (never printed)."""
    tok = gh_client.token(env)
    if tok or not shutil.which("gh"):
        return tok
    try:
        out = subprocess.run(["gh", "auth", "token"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.strip()
    return text if out.returncode == 0 and text and "\n" not in text else None


def cache_root(env: Mapping[str, str]) -> Path:
    given = env.get(CACHE_ENV)
    return Path(given) if given else Path.home() / ".cache" / "gpu-runner" / "runs"


def repo_cache(env: Mapping[str, str], repo: str) -> Path:
    owner, name = repo.split("/")
    return cache_root(env) / owner / name


def current_branch() -> str | None:
    branch = _git("rev-parse", "--abbrev-ref", "HEAD")
    return branch if branch and branch != "HEAD" else None


def gpu_runner_workflow(top: Path | None = None) -> str | None:
    """The file name of this repository's workflow that calls gpu-runner's ``gpu-notebooks.yml``."""
    import yaml

    if top is None:
        text = _git("rev-parse", "--show-toplevel")
        top = Path(text) if text else Path.cwd()
    folder = top / ".github" / "workflows"
    for path in sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]):
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        jobs = doc.get("jobs") if isinstance(doc, dict) else None
        for job in (jobs or {}).values() if isinstance(jobs, dict) else ():
            uses = job.get("uses") if isinstance(job, dict) else None
            if isinstance(uses, str) and re.search(r"(^|/)gpu-notebooks\.ya?ml(@|$)", uses):
                return path.name
    return None


# -- a session with GitHub -------------------------------------------------------------------------
@dataclass
class Session:
    """The API client of one command, for one repository."""

    repo_name: str
    env: Mapping[str, str]
    gh: Any = None
    repo: Any = None
    log: Log = lambda _m: None  # noqa: E731

    @property
    def cache(self) -> Path:
        return repo_cache(self.env, self.repo_name)


def connect(repo_name: str, env: Mapping[str, str] | None = None, log: Log | None = None) -> Session:
    """A session; no token at all is a usage error naming where one comes from."""
    from ..errors import require_extra

    require_extra("github", "reading workflow runs from GitHub")
    env = dict(os.environ if env is None else env)
    tok = token(env)
    if not tok:
        raise ConfigError("no GitHub token: set GPU_RUNNER_GITHUB_TOKEN or GITHUB_TOKEN (a token that may read "
                          "Actions), or log in with `gh auth login`")
    if not gh_client.token(env):
        env["GITHUB_TOKEN"] = tok  # from `gh auth token`: only in this copy of the environment
    gh = gh_client.client(env)
    return Session(repo_name=repo_name, env=env, gh=gh, repo=gh.get_repo(repo_name), log=log or (lambda _m: None))


def _guard(what: str, fn: Callable[[], Any]) -> Any:
    """GitHub's errors as this project's: a missing run is the user's word (2), the rest infra (3)."""
    import requests
    from github import GithubException

    try:
        return fn()
    except GithubException as e:
        if getattr(e, "status", None) == 404:
            raise ConfigError(f"{what}: not found (or the token may not read this repository's Actions)") from None
        raise InfraError(f"{what}: {baseline._api_error(e)}") from None
    except requests.RequestException as e:
        raise InfraError(f"{what}: GitHub API unreachable: {e}") from None


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else (value or None)


def run_meta(run: Any, attempt: int | None = None) -> dict[str, Any]:
    """What the cache keeps of a workflow run (all of it shown as text, never run)."""
    created, updated = getattr(run, "created_at", None), getattr(run, "updated_at", None)
    started = getattr(run, "run_started_at", None) or created
    duration = (updated - started).total_seconds() if isinstance(updated, datetime) and isinstance(
        started, datetime) else None
    return {"id": run.id, "run_number": run.run_number, "attempt": attempt or getattr(run, "run_attempt", None) or 1,
            "name": getattr(run, "name", None), "path": getattr(run, "path", None),
            "workflow_id": getattr(run, "workflow_id", None), "event": run.event, "head_branch": run.head_branch,
            "head_sha": run.head_sha, "status": run.status, "conclusion": run.conclusion,
            "created_at": _iso(created), "updated_at": _iso(updated), "run_started_at": _iso(started),
            "duration_s": duration if duration is None or duration >= 0 else None, "html_url": run.html_url}


def list_runs(session: Session, *, workflow: str | None, branch: str | None, limit: int) -> list[Any]:
    """The newest finished runs of the workflow (on ``branch``), at most ``limit`` of them."""
    wf = workflow or gpu_runner_workflow()
    if wf is None:
        raise ConfigError("which workflow? no workflow in .github/workflows calls gpu-notebooks.yml; give --workflow "
                          "FILE|ID")
    kwargs: dict[str, Any] = {"status": "completed"}
    if branch:
        kwargs["branch"] = branch

    def take() -> list[Any]:
        out = []
        for run in session.repo.get_workflow(int(wf) if str(wf).isdigit() else wf).get_runs(**kwargs):
            if branch and run.head_branch != branch:
                continue
            out.append(run)
            if len(out) >= limit:
                break
        return out

    return _guard(f"the runs of workflow {wf}", take)


# -- artifacts -----------------------------------------------------------------------------------------
def split_attempt(name: str) -> tuple[str, int | None]:
    """An artifact's name without an attempt number in it, and that number (None when there is none)."""
    m = _ATTEMPT.search(name)
    if m is None:
        return name, None
    return name[:m.start()] + name[m.end():], int(m.group("n"))


def kind_of(base: str) -> str:
    """``entry`` (an entry's results or a try's record), ``report``, ``summary`` or ``other``."""
    if base == baseline.REPORT_ARTIFACT:
        return "report"
    if base == baseline.SUMMARY_ARTIFACT:
        return "summary"
    return "entry" if parse_artifact_name(base) is not None else "other"


def choose(artifacts: list[Any], attempt: int | None, log: Log) -> dict[str, Any]:
    """Per artifact name (its attempt number taken out), the artifact of the latest attempt (up to
    ``attempt`` when one was asked for); names that are no gpu-runner artifact are left out."""
    best: dict[str, tuple[tuple[int, int], Any]] = {}
    for a in artifacts:
        base, n = split_attempt(a.name)
        if kind_of(base) == "other":
            if base.startswith(baseline.ENTRY_ARTIFACT_PREFIX):
                log(f"note: artifact {a.name!r} is not one gpu-runner knows; left alone")
            continue
        if attempt is not None and n is not None and n > attempt:
            continue
        key = (n or 0, a.id)
        if base not in best or key > best[base][0]:
            best[base] = (key, a)
    return {base: a for base, (_k, a) in sorted(best.items())}


def member_path(info: zipfile.ZipInfo) -> str | None:
    """The member's path when it may be extracted (a regular file at a plain relative path), else None."""
    name = info.filename
    if info.is_dir() or not name or "\\" in name or "\x00" in name or name.startswith("/") or baseline._DRIVE.match(
            name):
        return None
    mode = info.external_attr >> 16
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return None
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts) or len(parts) > baseline.MAX_DEPTH:
        return None
    return "/".join(parts)


class Refused(Exception):
    """An artifact that may not be used, and why."""


def extract(zip_path: Path, dest: Path, *, max_bytes: int, warn: Log, label: str,
            prefixes: Mapping[str, str] | None = None) -> int:
    """Every acceptable member of ``zip_path`` into the (new) folder ``dest``; returns the files written.

    ``prefixes``: only members under one of these top folders, each written under the folder it
    maps to (the entry folders inside a ``gpu-runner-report`` artifact)."""
    dest.mkdir(parents=True)
    root = dest.resolve()
    written = files = 0
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
        if len(infos) > baseline.MAX_MEMBERS:
            raise Refused(f"{len(infos)} members, over the limit of {baseline.MAX_MEMBERS}")
        for info in infos:
            rel = member_path(info)
            if rel is None:
                if not info.is_dir():
                    warn(f"{label}: left out {info.filename!r} (not a plain relative path to a file)")
                continue
            if prefixes is not None:
                top, _, rest = rel.partition("/")
                if top not in prefixes or not rest:
                    continue
                rel = f"{prefixes[top]}/{rest}"
            target = (root / rel).resolve()
            if not target.is_relative_to(root) or target == root:
                continue
            if target.exists():
                warn(f"{label}: {rel} comes twice; the first one is kept")
                continue
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("xb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:
                            raise Refused(f"unpacks to more than {max_bytes} bytes")
                        out.write(chunk)
            except (FileExistsError, NotADirectoryError, IsADirectoryError) as e:
                warn(f"{label}: {rel} could not be written ({e.strerror or e}); left out")
                continue
            files += 1
    return files


def verify(dest: Path) -> None:
    """Every results.json and try record in a freshly extracted artifact passes the report's checks."""
    from ..report import load_entry, load_record

    try:
        for d in find_entry_dirs(dest):
            load_entry(d)
        for f in find_try_records(dest):
            load_record(f)
    except ConfigError as e:
        raise Refused(str(e).replace(str(dest.parent) + os.sep, "")) from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_download(path: Path, a: Any) -> None:
    """The download is what the API listed: its SHA-256 digest when it gives one, else its size."""
    digest = getattr(a, "digest", None)
    if isinstance(digest, str) and digest.startswith("sha256:"):
        if _sha256(path) != digest.split(":", 1)[1].lower():
            raise InfraError(f"artifact {a.name}: the download does not match its digest {digest}")
    elif path.stat().st_size != a.size_in_bytes:
        raise InfraError(f"artifact {a.name}: {path.stat().st_size} bytes downloaded, the API says {a.size_in_bytes}")


def _same(note: Mapping[str, Any], a: Any) -> bool:
    return (note.get("id") == a.id and note.get("size_in_bytes") == a.size_in_bytes
            and note.get("digest") == getattr(a, "digest", None))


# -- one run ----------------------------------------------------------------------------------------
@dataclass
class FetchedRun:
    folder: Path
    """``<cache>/<owner>/<repo>/<run>/<attempt>``."""
    meta: dict[str, Any]
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    downloaded: int = 0
    warnings: list[str] = field(default_factory=list)
    dashboard: Path | None = None

    @property
    def results(self) -> Path:
        return self.folder / "results"

    @property
    def refused(self) -> list[str]:
        return [f"{n}: {s.get('reason')}" for n, s in self.artifacts.items() if s.get("state") == "refused"]


def run_folder(session: Session, run_id: int, attempt: int) -> Path:
    return session.cache / str(run_id) / str(attempt)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def fetch_run(session: Session, run_id: int, attempt: int | None = None, *, run: Any = None,
              max_artifact_bytes: int = baseline.MAX_ARTIFACT_BYTES, max_extract_bytes: int = MAX_EXTRACT_BYTES,
              dashboard: bool = True, progress: Log | None = None) -> FetchedRun:
    """Download what is missing of a run's artifacts into the cache, then (re)write its digest and,
    with ``dashboard``, its dashboard. Raises InfraError when a download failed (what came before
    it stays: the next call goes on from there)."""
    say = progress or session.log
    if run is None:
        run = _guard(f"run {run_id}", lambda: session.repo.get_workflow_run(run_id))
    meta = _guard(f"run {run_id}", lambda: run_meta(run, attempt))  # a lazy client GETs the run here
    folder = run_folder(session, run.id, meta["attempt"])
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / RUN_FILE
    old = read_json(state_path)
    notes: dict[str, dict[str, Any]] = dict(old.get("artifacts") or {}) if isinstance(old, dict) else {}
    done = FetchedRun(folder=folder, meta=meta)

    def warn(msg: str) -> None:
        done.warnings.append(msg)
        say(f"warning: {msg}")

    def save() -> None:
        write_json_atomic(state_path, {"run": meta, "artifacts": notes})

    listed = _guard(f"the artifacts of run {run.id}", lambda: list(run.get_artifacts()))
    chosen = choose(listed, attempt, say)
    wanted = {b: a for b, a in chosen.items() if kind_of(b) == "entry"}
    notes = {b: n for b, n in notes.items() if b in chosen}
    results = done.results
    results.mkdir(exist_ok=True)
    part = folder / ".part"
    todo = [(b, a) for b, a in wanted.items()
            if not (notes.get(b, {}).get("state") in ("done", "refused") and _same(notes[b], a)
                    and (notes[b]["state"] == "refused" or (results / b).is_dir()))]
    skipped = len(wanted) - len(todo)
    if skipped:
        say(f"{skipped} artifact(s) of run {run.id} already here")
    failure: InfraError | None = None
    for i, (b, a) in enumerate(todo, 1):
        note = {"id": a.id, "name": a.name, "size_in_bytes": a.size_in_bytes, "digest": getattr(a, "digest", None)}
        notes[b] = note
        if a.expired:
            note["state"] = "expired"
            say(f"[{i}/{len(todo)}] {a.name}: expired")
            continue
        try:
            _one(session, a, b, results, part, note, max_artifact_bytes, max_extract_bytes, warn)
            done.downloaded += 1
            say(f"[{i}/{len(todo)}] {a.name}: {a.size_in_bytes / 2**20:.1f} MiB, {note['state']}")
        except InfraError as e:
            failure = failure or e
            note["state"] = "failed"
            warn(str(e))
        finally:
            save()
    _from_report(session, chosen, notes, results, part, max_artifact_bytes, max_extract_bytes, say, warn)
    shutil.rmtree(part, ignore_errors=True)
    notes.update({b: {"id": a.id, "name": a.name, "size_in_bytes": a.size_in_bytes, "state": "not fetched"}
                  for b, a in chosen.items() if b not in notes})
    done.artifacts = notes
    save()
    if failure is not None:
        raise InfraError(f"{failure} (what came before is kept: run the same command again to go on)")
    if dashboard:
        done.dashboard = rebuild(results, warn)
    write_digest(folder, meta, notes)
    return done


def _one(session: Session, a: Any, base: str, results: Path, part: Path, note: dict[str, Any],
         max_artifact_bytes: int, max_extract_bytes: int, warn: Log) -> None:
    """Download one artifact, check it, extract it beside the others; ``note`` gets its state."""
    if a.size_in_bytes > max_artifact_bytes:
        note["state"], note["reason"] = "refused", f"{a.size_in_bytes} bytes, over the {max_artifact_bytes}-byte limit"
        warn(f"artifact {a.name}: {note['reason']}; left out")
        return
    part.mkdir(exist_ok=True)
    zpath = part / f"{a.id}.zip"
    try:
        baseline._download(session.gh, a, zpath, max_artifact_bytes, gh_client.api_url(session.env))
    except baseline._Gone:
        note["state"] = "expired"
        return
    except baseline._TooBig:
        note["state"], note["reason"] = "refused", f"its download is over the {max_artifact_bytes}-byte limit"
        warn(f"artifact {a.name}: {note['reason']}; left out")
        return
    try:
        check_download(zpath, a)
        _install(zpath, base, results, part, note, max_extract_bytes, warn, f"artifact {a.name}")
    finally:
        zpath.unlink(missing_ok=True)


def _install(zpath: Path, base: str, results: Path, part: Path, note: dict[str, Any], max_extract_bytes: int,
             warn: Log, label: str, prefixes: Mapping[str, str] | None = None) -> None:
    """Extract into a staging folder, verify, then move into place (so a folder there is whole)."""
    stage = part / f"x-{base}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        extract(zpath, stage / base if prefixes is None else stage, max_bytes=max_extract_bytes, warn=warn,
                label=label, prefixes=prefixes)
        verify(stage)
    except (Refused, zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        note["state"], note["reason"] = "refused", str(e) if isinstance(e, Refused) else f"not a readable zip ({e})"
        warn(f"{label}: refused: {note['reason']}")
        shutil.rmtree(stage, ignore_errors=True)
        return
    names = [base] if prefixes is None else sorted(set(prefixes.values()))
    for name in names:
        if (stage / name).is_dir():
            shutil.rmtree(results / name, ignore_errors=True)
            os.replace(stage / name, results / name)
    shutil.rmtree(stage, ignore_errors=True)
    note["state"] = "done"


def _from_report(session: Session, chosen: Mapping[str, Any], notes: dict[str, dict[str, Any]], results: Path,
                 part: Path, max_artifact_bytes: int, max_extract_bytes: int, say: Log, warn: Log) -> None:
    """Entry folders whose own artifact expired, from the run's ``gpu-runner-report`` (kept longer)."""
    missing = [b for b, n in notes.items() if n.get("state") == "expired" and kind_of(b) == "entry"]
    report = chosen.get(baseline.REPORT_ARTIFACT)
    if not missing or report is None or report.expired:
        return
    rnote = notes.get(baseline.REPORT_ARTIFACT) or {}
    if rnote.get("state") in ("done", "refused") and _same(rnote, report):
        return
    rnote = {"id": report.id, "name": report.name, "size_in_bytes": report.size_in_bytes,
             "digest": getattr(report, "digest", None)}
    notes[baseline.REPORT_ARTIFACT] = rnote
    say(f"{len(missing)} entry artifact(s) expired: taking their folders from {report.name}")
    try:
        _one_report(session, report, missing, results, part, rnote, max_artifact_bytes, max_extract_bytes, warn)
    except InfraError as e:
        rnote["state"] = "failed"
        warn(str(e))
        return
    for b in missing:
        if (results / b).is_dir():
            notes[b]["state"], notes[b]["from"] = "done", baseline.REPORT_ARTIFACT


def _one_report(session: Session, a: Any, missing: list[str], results: Path, part: Path, note: dict[str, Any],
                max_artifact_bytes: int, max_extract_bytes: int, warn: Log) -> None:
    if a.size_in_bytes > max_artifact_bytes:
        note["state"] = "refused"
        return
    part.mkdir(exist_ok=True)
    zpath = part / f"{a.id}.zip"
    try:
        baseline._download(session.gh, a, zpath, max_artifact_bytes, gh_client.api_url(session.env))
        check_download(zpath, a)
        with zipfile.ZipFile(zpath) as zf:  # its top folders may carry an attempt number too
            tops = {i.filename.split("/", 1)[0] for i in zf.infolist()}
        prefixes = {t: split_attempt(t)[0] for t in tops if split_attempt(t)[0] in missing}
        _install(zpath, baseline.REPORT_ARTIFACT, results, part, note, max_extract_bytes, warn,
                 f"artifact {a.name}", prefixes=prefixes)
    except (baseline._Gone, baseline._TooBig):
        note["state"] = "expired"
    except (zipfile.BadZipFile, OSError) as e:
        note["state"], note["reason"] = "refused", f"not a readable zip ({e})"
    finally:
        zpath.unlink(missing_ok=True)


# -- the run's dashboard and digest -----------------------------------------------------------------
def plan_of(results: Path) -> list[dict[str, Any]]:
    """The run's entries as a plan (the plan itself is no artifact): every entry an artifact names,
    in the matrix's order as their results.json record it, then the others by id."""
    from ..report import load_entry, load_record

    items: dict[str, dict[str, Any]] = {}
    order: dict[str, tuple[int, int, int, str]] = {}
    for folder in sorted(p for p in results.iterdir() if p.is_dir()):
        parsed = parse_artifact_name(folder.name)
        if parsed is None:
            continue
        eid = parsed[0]
        items.setdefault(eid, {"id": eid})
        order.setdefault(eid, (1, 0, 0, eid))
        for d in find_entry_dirs(folder):
            try:
                e = load_entry(d).entry
            except ConfigError:
                continue
            if e.id == eid:
                items[eid].update({k: v for k, v in (("runtime", e.runtime), ("machine", e.machine),
                                                      ("label", e.label), ("provider", e.provider)) if v})
                if e.matrix_position and len(e.matrix_position) == 2:
                    order[eid] = (0, e.matrix_position[0], e.matrix_position[1], eid)
        for f in find_try_records(folder):
            try:
                rec = load_record(f)
            except ConfigError:
                continue
            if rec.entry_id == eid and rec.label and "label" not in items[eid]:
                items[eid].update({"label": rec.label, "provider": "gce"})
    for eid, item in items.items():  # no results.json names them: the id is <runtime>--<machine>
        if "runtime" not in item and "--" in eid:
            item["runtime"], item["machine"] = eid.split("--", 1)
    return [items[e] for e in sorted(items, key=lambda e: order[e])]


class _Quiet:
    def __init__(self, warn: Log) -> None:
        self.warn = warn

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        self.warn(msg)


def rebuild(results: Path, warn: Log) -> Path:
    """The dashboard the run's report job made, made again with the same code from the same folders."""
    from ..report import artifact_layout, write_entry_reports, write_run_reports

    plan = plan_of(results)
    entry_dirs, records, ignored = artifact_layout(find_entry_dirs(results), find_try_records(results),
                                                   roots=[results], plan=plan)
    for why in ignored:
        warn(f"ignored {why}")
    log = _Quiet(warn)
    for d in entry_dirs:
        write_entry_reports(d, pdf=False, overwrite=False, dashboard=results / "index.html", logger=log)
    # another run's report: its summary, annotations and outputs are not this job's (a report job's history)
    report = write_run_reports(entry_dirs, results, records=records, plan=plan, logger=log, actions=False)
    assert report.dashboard_path is not None
    return report.dashboard_path


def shown_entries(results: Path) -> list[Any]:
    """The entries as the report shows them (:func:`gpu_runner.report.collect.collect`)."""
    from ..report import artifact_layout
    from ..report.collect import collect

    plan = plan_of(results)
    entry_dirs, records, _ = artifact_layout(find_entry_dirs(results), find_try_records(results), roots=[results],
                                             plan=plan)
    return collect(entry_dirs, records=records, plan=plan, artifacts=True).entries


def write_digest(folder: Path, meta: Mapping[str, Any], notes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``digest.json``: per entry its verdict, counts, cost, and per notebook what history needs.
    An entry whose results are gone with its expired artifact is ``unknown``, never "not run"."""
    results = folder / "results"
    expired_entries = {parse_artifact_name(b)[0] for b, n in notes.items()  # type: ignore[index]
                       if n.get("state") == "expired" and kind_of(b) == "entry" and not parse_artifact_name(b)[2]}
    entries = []
    seen: set[str] = set()
    for d in (shown_entries(results) if results.is_dir() else []):
        r = d.result
        seen.add(r.entry.id)
        status, reason = r.status, r.reason
        if status == "not_run" and r.entry.id in expired_entries:
            status, reason = "unknown", "its results artifact has expired"
        entries.append({
            "id": r.entry.id, "runtime": r.entry.runtime, "machine": r.entry.machine, "provider": r.entry.provider,
            "status": status, "reason": reason, "duration_s": r.duration_s,
            "cost_usd": r.cost.usd if r.cost is not None else None,
            "notebooks": [{"path": nb.path, "status": nb.status, "duration_s": nb.duration_s,
                           "gpu_peak_memory_mib": nb.gpu_peak_memory_mib} for nb in r.notebooks],
            "counts": r.notebook_counts(), "checks": r.check_counts()})
    for eid in sorted(expired_entries - seen):
        entries.append({"id": eid, "runtime": None, "machine": None, "provider": None, "status": "unknown",
                        "reason": "its results artifact has expired", "duration_s": None, "cost_usd": None,
                        "notebooks": [], "counts": {}, "checks": {}})
    digest = {"digest_version": DIGEST_VERSION, "run": dict(meta), "entries": entries,
              "dashboard": "results/index.html" if (results / "index.html").is_file() else None}
    write_json_atomic(folder / DIGEST_FILE, digest)
    return digest


def cached_digests(cache: Path, *, branch: str | None = None) -> list[dict[str, Any]]:
    """Every run's digest in a repository's cache (the latest attempt of each), newest first."""
    best: dict[str, tuple[int, dict[str, Any]]] = {}
    if not cache.is_dir():
        return []
    for path in cache.glob(f"*/*/{DIGEST_FILE}"):
        run_dir, attempt = path.parent.parent.name, path.parent.name
        if not (run_dir.isdigit() and attempt.isdigit()):
            continue
        doc = read_json(path)
        if not isinstance(doc, dict) or doc.get("digest_version") != DIGEST_VERSION:
            continue
        if branch and (doc.get("run") or {}).get("head_branch") != branch:
            continue
        doc["folder"] = str(path.parent)
        if run_dir not in best or int(attempt) > best[run_dir][0]:
            best[run_dir] = (int(attempt), doc)
    docs = [d for _a, d in best.values()]
    return sorted(docs, key=lambda d: ((d["run"].get("created_at") or ""), d["run"].get("id") or 0), reverse=True)


def gather(session: Session | None, cache: Path, *, workflow: str | None, branch: str | None, limit: int,
           log: Log) -> list[dict[str, Any]]:
    """The digests of the newest ``limit`` runs: with a session, fetched where the cache lacks them
    (their dashboards too); else (offline) what the cache holds."""
    if session is None:
        return cached_digests(cache, branch=branch)[:limit]
    out = []
    for run in list_runs(session, workflow=workflow, branch=branch, limit=limit):
        meta = run_meta(run)
        folder = run_folder(session, run.id, meta["attempt"])
        doc = read_json(folder / DIGEST_FILE)
        if not (isinstance(doc, dict) and doc.get("digest_version") == DIGEST_VERSION
                and (doc.get("run") or {}).get("updated_at") == meta["updated_at"]):
            log(f"run {run.id} (#{run.run_number}): fetching")
            try:
                fetch_run(session, run.id, run=run, progress=log)
            except InfraError as e:
                log(f"warning: run {run.id}: {e}")
                continue
            doc = read_json(folder / DIGEST_FILE)
        if isinstance(doc, dict):
            doc["folder"] = str(folder)
            out.append(doc)
    return out

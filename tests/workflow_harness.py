"""Run the reusable workflow's jobs here, from the YAML itself, as a GitHub runner would.

It reads .github/workflows/gpu-notebooks.yml and action.yml, evaluates the ``${{ }}``
expressions they use (a small evaluator: contexts, literals, ``! == != < > <= >= && ||``,
``fromJSON``, ``toJSON``, ``format``, ``contains``, ``startsWith``, ``always``, ``success``,
``failure``, ``cancelled``), and runs every ``run:`` script with bash, the step's ``env:``
resolved and the files GitHub sets (GITHUB_OUTPUT per step, GITHUB_STEP_SUMMARY per job,
GITHUB_EVENT_PATH). Matrix jobs run once per item. What it does not run, it stands in for:

* ``actions/checkout``: the workspace is already the checked-out repository (the event's
  default commit), or with a ``ref`` the test maps in ``Runner.refs``, that commit's files; the
  gpu-runner checkout (``.gpu-runner``) is this repository.
* ``actions/upload-artifact`` / ``download-artifact``: folders under ``artifacts/<name>``
  (path lists with ``!`` exclusions, overwrite, the ``artifact-id`` output; pattern or
  artifact-ids, + merge-multiple).
* ``actions/cache`` and ``google-github-actions/auth``: nothing (the Compute stand-in needs no
  credentials). The action's install step finds a virtual environment stamped with its cache
  key that runs this checkout's gpu-runner (installing the package takes minutes), except in
  the jobs ``Runner.real_install`` picks: there the action's own install script runs, real pip
  into the private environment, and ``actions/cache`` restores ``Runner.pip_cache`` (the warm
  cache of a repeat run). ``Runner.job_env`` changes a job's machine (its ``PATH``: which
  ``python3`` the job has).
* ``container:`` is evaluated, checked and recorded, not started.
* ``uses: ./.github/workflows/X.yml`` (a job that calls a reusable workflow, in a matrix or not):
  the called workflow's jobs run, each as its own machine, with the inputs and secrets the call
  passes (only those it declares), the caller's ``github`` context, and its outputs mapped back.
* A job on a self-hosted label needs a runner online with it (``runner_online``); it can be
  preempted or the run cancelled while a step runs (``preempt``, ``cancel``).
* A job's status functions look at every ancestor job (its ``needs``, transitively; a called
  workflow's jobs also at those of the job that calls it), as GitHub documents (see ``condition``).
* "Re-run failed jobs" (``Runner.rerun_failed_of``): the next attempt runs the failed jobs and those
  that need them; the others keep their results and outputs; artifacts of earlier attempts stay, and
  an upload of a name the run already has fails (409) unless it overwrites.
* ``container:`` is checked as the runner checks it (``Runner.container_of``), and the callers'
  ``concurrency:`` is played with GitHub's queueing rule (``concurrency_of``, ``ConcurrencyQueue``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------
# Expressions
# --------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<str>'(?:[^']|'')*')|(?P<op>==|!=|<=|>=|&&|\|\||[!<>().,\[\]*])"
                    r"|(?P<id>[A-Za-z_][A-Za-z0-9_-]*))")


def _truthy(v: Any) -> bool:
    return v not in (None, False, 0, "") and v == v


def _coerce_num(v: Any) -> float:
    if v is None:
        return 0.0
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(str(v).strip() or 0)
    except ValueError:
        return float("nan")


def _to_str(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


class Expr:
    def __init__(self, text: str, ctx: dict[str, Any], status: dict[str, bool]) -> None:
        self.toks: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise ValueError(f"cannot parse expression at {text[pos:]!r}")
            kind = m.lastgroup or ""
            self.toks.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0
        self.ctx, self.status = ctx, status

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        t = self.toks[self.i]
        if value is not None and t[1] != value:
            raise ValueError(f"expected {value!r}, got {t[1]!r}")
        self.i += 1
        return t

    def parse(self) -> Any:
        v = self.or_()
        if self.peek() is not None:
            raise ValueError(f"trailing {self.peek()}")
        return v

    def or_(self) -> Any:
        v = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            r = self.and_()
            v = v if _truthy(v) else r
        return v

    def and_(self) -> Any:
        v = self.cmp()
        while self.peek() == ("op", "&&"):
            self.take()
            r = self.cmp()
            v = r if _truthy(v) else v
        return v

    def cmp(self) -> Any:
        v = self.unary()
        t = self.peek()
        if t and t[1] in ("==", "!=", "<", ">", "<=", ">="):
            self.take()
            r = self.unary()
            if isinstance(v, str) and isinstance(r, str):
                a, b = v.lower(), r.lower()
            elif type(v) is type(r) and not isinstance(v, (int, float)):
                a, b = v, r
            else:
                a, b = _coerce_num(v), _coerce_num(r)
            return {"==": a == b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[t[1]]
        return v

    def unary(self) -> Any:
        if self.peek() == ("op", "!"):
            self.take()
            return not _truthy(self.unary())
        return self.primary()

    def primary(self) -> Any:
        kind, val = self.take()
        if kind == "num":
            v: Any = float(val) if "." in val else int(val)
        elif kind == "str":
            v = val[1:-1].replace("''", "'")
        elif val == "(":
            v = self.or_()
            self.take(")")
        elif kind == "id" and self.peek() == ("op", "("):
            self.take("(")
            args = []
            while self.peek() != ("op", ")"):
                args.append(self.or_())
                if self.peek() == ("op", ","):
                    self.take()
            self.take(")")
            v = self.call(val, args)
        elif kind == "id":
            v = {"true": True, "false": False, "null": None}.get(val, self.ctx.get(val)) if val in (
                "true", "false", "null") else self.ctx.get(val)
        else:
            raise ValueError(f"unexpected {val!r}")
        while self.peek() in (("op", "."), ("op", "[")):
            if self.take()[1] == ".":
                key = self.take()[1]
            else:
                key = self.or_()
                self.take("]")
            v = v.get(key) if isinstance(v, dict) else (v[int(key)] if isinstance(v, list) else None)
        return v

    def call(self, name: str, args: list[Any]) -> Any:
        n = name.lower()
        if n == "fromjson":
            return json.loads(args[0])
        if n == "tojson":
            return json.dumps(args[0])
        if n == "format":  # {N} is an argument; {{ and }} are braces ("Escape curly braces using double braces")
            return re.sub(r"\{\{|\}\}|\{(\d+)\}", lambda m: m.group(0)[0] if m.group(1) is None
                          else _to_str(args[1 + int(m.group(1))]), args[0])
        if n == "contains":
            hay, needle = args
            if isinstance(hay, list):
                return any(_to_str(x).lower() == _to_str(needle).lower() for x in hay)
            return _to_str(needle).lower() in _to_str(hay).lower()
        if n == "startswith":
            return _to_str(args[0]).lower().startswith(_to_str(args[1]).lower())
        if n == "always":
            return True
        if n == "cancelled":
            return self.status.get("cancelled", False)
        if n == "failure":
            return self.status.get("failed", False)
        if n == "success":  # a job: every ancestor succeeded (a skipped or failed one makes it false)
            return not (self.status.get("failed", False) or self.status.get("cancelled", False)
                        or self.status.get("blocked", False))
        raise ValueError(f"function {name}() is not supported here")


_WHOLE = re.compile(r"^\s*\$\{\{(.*?)\}\}\s*$", re.S)
_PART = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def evaluate(value: Any, ctx: dict[str, Any], status: dict[str, bool] | None = None) -> Any:
    """A YAML value with ``${{ }}``: a whole expression keeps its type; inside text it becomes text."""
    status = status or {}
    if isinstance(value, dict):
        return {k: evaluate(v, ctx, status) for k, v in value.items()}
    if isinstance(value, list):
        return [evaluate(v, ctx, status) for v in value]
    if not isinstance(value, str):
        return value
    m = _WHOLE.match(value)
    if m and "${{" not in m.group(1):
        return Expr(m.group(1), ctx, status).parse()
    return _PART.sub(lambda mm: _to_str(Expr(mm.group(1), ctx, status).parse()), value)


def condition(text: Any, ctx: dict[str, Any], status: dict[str, bool]) -> bool:
    """A job's or step's ``if:`` (implicitly ``success() && (...)`` without a status function).

    ``status`` for a job is over its whole chain of ``needs``, as GitHub documents: ``failed``
    when any ANCESTOR job (direct or transitive need) failed ("If you have a chain of dependent
    jobs, failure() returns true if any ancestor job fails",
    https://docs.github.com/en/actions/reference/workflows-and-actions/expressions#failure),
    ``blocked`` when any ancestor did not succeed (skipped, failed, cancelled: success() is then
    false, so a job whose ``if:`` has no status function is skipped even when its direct needs
    succeeded, https://github.com/actions/runner/issues/2205), ``cancelled`` when the run was."""
    if text is None:
        return Expr("success()", ctx, status).parse()
    src = str(text)
    m = _WHOLE.match(src)
    src = m.group(1) if m else src
    if not re.search(r"\b(always|success|failure|cancelled)\s*\(", src):
        src = f"success() && ({src})"
    return _truthy(Expr(src, ctx, status).parse())


# --------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------

HOSTED = re.compile(r"^(ubuntu|windows|macos)-")
"""Labels of GitHub-hosted runners; any other ``runs-on`` is a self-hosted runner's label."""


def _read_outputs(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and "=" not in line.split("<<", 1)[0]:
            name, delim = line.split("<<", 1)
            body = []
            i += 1
            while lines[i] != delim:
                body.append(lines[i])
                i += 1
            out[name] = "\n".join(body)
        elif "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
        i += 1
    return out


@dataclass
class StepRecord:
    job: str
    name: str
    outcome: str
    output: str = ""
    command: str = ""


@dataclass
class JobResult:
    result: str
    outputs: dict[str, str]
    steps: list[StepRecord]
    container: dict[str, Any] | None = None
    summary: str = ""
    tag: str = ""
    """Where the job sits: ``entry smoke--l4 / run`` (caller job, matrix item, called job)."""
    name: str = ""
    """The job's id in its workflow file (``run``, ``stop-retry-1``)."""
    item: dict[str, Any] | None = None
    preempted: bool = False
    checkouts: list[str] = field(default_factory=list)
    """The ``ref`` of each checkout of the repository itself ('' for the event's default commit)."""


@dataclass
class Call:
    """One workflow being run: the top-level reusable workflow or one it calls."""

    doc: dict[str, Any]
    inputs: dict[str, Any]
    secrets: dict[str, str]
    prefix: str = ""
    ancestors: list[str] = field(default_factory=list)
    """The results of the calling job's ancestors: a called workflow's jobs count them among their
    own (the stricter reading: a called job's success() is false when a job before its caller
    did not succeed, the caller having run only because its ``if:`` said always() or !cancelled())."""
    forced: bool = False
    """A re-run attempt re-runs every job of this call (the calling job's needs were re-run)."""


@dataclass
class Runner:
    """Runs the reusable workflow's jobs in ``workspace`` with ``base_env`` (GITHUB_* and stand-in
    addresses) for one event.

    Every job is a machine of its own: a fresh copy of the checkout, its own RUNNER_TEMP, step
    summary and environment; jobs share only artifacts (a folder per name) and outputs. A job
    whose ``runs-on`` is not a GitHub-hosted label runs on a self-hosted runner: it needs one
    online with that label (``runner_online``), runs with RUNNER_NAME set to it, and can be
    preempted (``preempt``) or the whole run cancelled (``cancel``) while a step runs."""

    workspace: Path
    base_env: dict[str, str]
    event_name: str
    event: dict[str, Any]
    inputs: dict[str, Any]
    secrets: dict[str, str]
    artifacts: Path
    workflow_path: Path = REPO / ".github" / "workflows" / "gpu-notebooks.yml"
    records: list[StepRecord] = field(default_factory=list)
    real_install: Any = staticmethod(lambda tag: False)
    """``tag -> bool`` ("run smoke--here"): the jobs whose action installs gpu-runner for real."""
    job_env: Any = staticmethod(lambda tag: {})
    """``tag -> {NAME: value or None}``: how a job's machine differs (None removes a variable)."""
    pip_cache: Path | None = None
    """What ``actions/cache`` restores for the real installs (else they start with no cache)."""
    artifact_ids: dict[str, str] = field(default_factory=dict)
    """artifact name -> the id its upload gave (``artifact-id``), for downloads by ``artifact-ids``."""
    jobs: list[JobResult] = field(default_factory=list)
    """Every job that ran (matrix items and called workflows' jobs included), in order."""
    runner_online: Any = None
    """label -> bool: whether a self-hosted runner with that label is online (the GitHub stand-in)."""
    preempt: dict[str, Any] = field(default_factory=dict)
    """label -> (when, then): while a step of a job on that label runs, ``when()`` is polled; once
    true the cloud takes the VM back: the step gets SIGTERM (the preemption notice), the job's
    ``always()`` steps run in the notice, the job fails, and ``then(label)`` deletes the VM."""
    cancel: Any = None
    """``when()`` polled while any step runs: once true the workflow run is cancelled (SIGINT to
    the step, then only ``always()`` steps and jobs)."""
    cancelled: bool = False
    cache_uses: list[tuple[str, str | None]] = field(default_factory=list)
    """(job tag, the action's ``cache`` input) for every use of the action."""
    refs: dict[str, Path] = field(default_factory=dict)
    """ref -> a folder with that commit's files: a checkout of the repository at that ``ref``
    gives the job those files instead of the event's default commit (the workspace as given)."""
    previous: dict[str, dict[str, Any]] | None = None
    """A re-run attempt ("Re-run failed jobs", see :meth:`rerun_failed_of`): the earlier attempt's
    outcome of every job by tag. A job that failed or was cancelled there is run again, and so is
    every job that needs one run again (GitHub: "When you re-run failed jobs or a specific job,
    GitHub also re-runs the jobs that depend on them. Jobs that aren't included keep their outputs
    from the previous attempt, which the newly run jobs can use",
    https://docs.github.com/en/actions/managing-workflow-runs/re-running-workflows-and-jobs);
    every other job keeps its result and outputs and does not run."""
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """tag -> {result, outputs} of every job of this attempt (kept ones, skipped ones included)."""
    rerun: set[str] = field(default_factory=set)
    """The tags of the jobs this attempt ran again (a re-run attempt)."""

    def __post_init__(self) -> None:
        self.workflow = self.load(self.workflow_path)
        self.action = yaml.safe_load((REPO / "action.yml").read_text(encoding="utf-8"))
        self.resolved_inputs = self.declared_inputs(self.workflow, self.inputs)
        event_file = self.workspace.parent / "event.json"
        event_file.write_text(json.dumps(self.event))
        self.base_env = {**self.base_env, "GITHUB_EVENT_PATH": str(event_file), "GITHUB_EVENT_NAME": self.event_name,
                         "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(self.workspace), "CI": "true"}
        link = self.workspace / ".gpu-runner"
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        self.pristine = self.workspace
        """Every job starts on a fresh machine: a copy of this checkout."""
        self.top = Call(self.workflow, self.resolved_inputs, dict(self.secrets))

    @staticmethod
    def load(path: Path) -> dict[str, Any]:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        doc["on"] = doc.pop(True) if True in doc else doc["on"]
        return doc

    @staticmethod
    def declared_inputs(doc: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        declared = doc["on"]["workflow_call"].get("inputs", {})
        unknown = set(given) - set(declared)
        assert not unknown, f"inputs the workflow does not declare: {unknown}"
        missing = [k for k, spec in declared.items() if spec.get("required") and k not in given]
        assert not missing, f"required inputs not given: {missing}"
        out = {}
        for k, spec in declared.items():
            v = given.get(k, spec.get("default"))
            if spec.get("type") == "number" and isinstance(v, str):
                v = _coerce_num(v)
            if spec.get("type") == "boolean" and isinstance(v, str):
                v = v.lower() == "true"
            out[k] = v
        return out

    def github_ctx(self) -> dict[str, Any]:
        e = self.base_env
        return {"event_name": self.event_name, "event": self.event, "sha": e.get("GITHUB_SHA", ""),
                "repository": e["GITHUB_REPOSITORY"], "token": e.get("GITHUB_TOKEN", ""),
                "ref": e.get("GITHUB_REF", ""), "run_id": e["GITHUB_RUN_ID"], "run_attempt": e["GITHUB_RUN_ATTEMPT"],
                "workspace": str(self.workspace), "workflow": "runtime-tests"}

    # -- one job ------------------------------------------------------------------------
    def job_items(self, name: str, needs: dict[str, Any], call: Call | None = None) -> list[dict[str, Any] | None]:
        call = call or self.top
        job = call.doc["jobs"][name]
        strategy = job.get("strategy")
        if not strategy:
            return [None]
        ctx = {"github": self.github_ctx(), "inputs": call.inputs, "needs": needs}
        matrix = evaluate(strategy["matrix"], ctx)
        return list(matrix.get("include", []))

    def run_job(self, name: str, needs: dict[str, Any], item: dict[str, Any] | None, call: Call | None = None
                ) -> JobResult:
        call = call or self.top
        job = call.doc["jobs"][name]
        tag = call.prefix + (f"{name} {item['id']}" if item else name)
        jobdir = self.pristine.parent / "jobs" / re.sub(r"[^A-Za-z0-9_.-]", "_", tag)
        shutil.rmtree(jobdir, ignore_errors=True)
        (jobdir / "temp").mkdir(parents=True, exist_ok=True)
        self.workspace = jobdir / "workspace"
        shutil.copytree(self.pristine, self.workspace, symlinks=True)
        summary = jobdir / "step_summary.md"
        summary.write_text("")
        ctx: dict[str, Any] = {"github": self.github_ctx(), "inputs": call.inputs, "needs": needs,
                               "matrix": item or {}, "secrets": call.secrets, "steps": {},
                               "runner": {"temp": str(jobdir / "temp"), "os": "Linux", "arch": "X64"},
                               "env": {}, "strategy": {}, "job": {}}
        status = {"failed": False, "cancelled": False}
        container = self.container_of(tag, evaluate(job["container"], ctx)) if "container" in job else None
        runs_on = evaluate(job.get("runs-on"), ctx)
        assert runs_on, f"{tag}: runs-on is empty"
        self_hosted = not HOSTED.match(str(runs_on))
        if self_hosted and self.runner_online is not None:
            assert self.runner_online(runs_on), (f"{tag}: no runner is online with the label {runs_on}: GitHub "
                                                 "would queue this job until it times out")
        env = {**self.base_env, "RUNNER_TEMP": str(jobdir / "temp"), "GITHUB_STEP_SUMMARY": str(summary),
               "RUNNER_OS": "Linux", "RUNNER_ARCH": "X64", "RUNNER_NAME": runs_on if self_hosted else "hosted"}
        for k, v in self.job_env(tag).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        watch = self.preempt.get(runs_on) if self_hosted else None
        preempted = job_cancelled = False
        checkouts: list[str] = []
        steps: list[StepRecord] = []
        for i, step in enumerate(job.get("steps", [])):
            sid = step.get("id", f"__{i}")
            label = step.get("name") or step.get("uses") or step.get("run", "")[:40]
            # a job that started after the run was cancelled (it asked for always()) runs its
            # steps as usual; a job cancelled while it ran keeps only its always() steps
            status["cancelled"] = job_cancelled
            if preempted:  # the notice: only what asks for always() still runs
                status["failed"] = True
            if not condition(step.get("if"), ctx, status):
                steps.append(StepRecord(tag, label, "skipped"))
                continue
            step_env = {**env, **{k: _to_str(v) for k, v in evaluate(step.get("env", {}), ctx, status).items()}}
            with_ = evaluate(step.get("with", {}), ctx, status)
            uses = step.get("uses", "")
            outputs: dict[str, str] = {}
            stop_when = None if preempted else (watch[0] if watch else None)
            if uses == "./.gpu-runner":
                ok, outputs, text, why = self.run_action(with_, step_env, ctx, status, jobdir, tag, stop_when)
                rec = StepRecord(tag, label, "success" if ok else "failure", text,
                                 command=f"gpu-runner {with_.get('mode')}")
            elif uses.startswith("actions/upload-artifact@"):
                ok, outputs = self.upload(with_)
                why = None
                rec = StepRecord(tag, label, "success" if ok else "failure", outputs.pop("error", ""))
            elif uses.startswith("actions/download-artifact@"):
                self.download(with_)
                rec, why = StepRecord(tag, label, "success"), None
            elif uses.startswith("actions/checkout@"):
                self.checkout(with_, checkouts)
                rec, why = StepRecord(tag, label, "success"), None
            elif uses.startswith(("google-github-actions/auth@", "actions/cache@")):
                rec, why = StepRecord(tag, label, "success"), None
            elif "run" in step:
                ok, outputs, text, why = self.bash(evaluate(step["run"], ctx, status), step_env, jobdir, stop_when)
                rec = StepRecord(tag, label, "success" if ok else "failure", text)
            else:
                raise AssertionError(f"{tag}: step {label!r} uses {uses!r}, which this harness does not know")
            if why == "cancelled":
                job_cancelled = True
                rec.outcome = "cancelled"
            if why == "preempted":
                preempted = True
                rec.outcome = "failure"
                rec.output += "\nThe runner has received a shutdown signal (the VM was preempted)."
            ctx["steps"][sid] = {"outputs": outputs, "outcome": rec.outcome, "conclusion": rec.outcome}
            if rec.outcome == "failure":
                status["failed"] = True
            steps.append(rec)
        if preempted and watch:
            watch[1](runs_on)  # the notice is over: Compute Engine takes the VM
        self.records += steps
        job_outputs = {k: _to_str(v) for k, v in evaluate(job.get("outputs", {}), ctx, status).items()}
        result = "cancelled" if job_cancelled else ("failure" if status["failed"] else "success")
        jr = JobResult(result, job_outputs, steps, container={"runs_on": runs_on, **(container or {})},
                       summary=summary.read_text(), tag=tag, name=name, item=item, preempted=preempted,
                       checkouts=checkouts)
        self.jobs.append(jr)
        return jr

    @staticmethod
    def container_of(tag: str, value: Any) -> dict[str, Any] | None:
        """The job's ``container:`` as the runner takes it, or an AssertionError where GitHub refuses it.

        A string is the image, and an empty one means no container ("container: ''" is taken as
        none, https://github.com/actions/languageservices/pull/323). A mapping needs a non-empty
        ``image`` (``{image: ''}`` is refused, same source), and ``options``, when present, a non-empty
        string: runners before https://github.com/actions/runner/pull/4208 ("Allow empty container
        options") validate it as non-empty-string and refuse the job."""
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return {"image": value}
        assert isinstance(value, dict), f"{tag}: container is neither an image nor a mapping: {value!r}"
        image = value.get("image")
        assert isinstance(image, str) and image.strip(), f"{tag}: container.image is empty: GitHub refuses the job"
        if "options" in value:
            opts = value["options"]
            assert isinstance(opts, str) and opts.strip(), (f"{tag}: container.options is empty ({opts!r}): older "
                                                            "runners refuse the job")
        return dict(value)

    def checkout(self, with_: dict[str, Any], checkouts: list[str]) -> None:
        """actions/checkout: the gpu-runner checkout (``path: .gpu-runner``) is this repository; the
        repository itself at ``ref`` is ``refs[ref]`` when the test gave one, else the workspace."""
        repo = str(with_.get("repository") or "")
        if with_.get("path") or (repo and repo != self.base_env["GITHUB_REPOSITORY"]):
            return
        ref = str(with_.get("ref") or "")
        checkouts.append(ref)
        tree = self.refs.get(ref) if ref else None
        if tree is None:
            return
        for child in self.workspace.iterdir():
            if child.name == ".gpu-runner":
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        shutil.copytree(tree, self.workspace, symlinks=True, dirs_exist_ok=True)

    def _wait(self, proc: subprocess.Popen[str], stop_when: Any) -> str | None:
        """Wait for a step's process; on a preemption or a cancellation signal it as GitHub does."""
        import signal

        deadline = time.monotonic() + 600
        why = None
        while proc.poll() is None:
            if why is None and stop_when is not None and stop_when():
                why = "preempted"
                os.killpg(proc.pid, signal.SIGTERM)
            elif why is None and not self.cancelled and self.cancel is not None and self.cancel():
                why = "cancelled"
                self.cancelled = True
                os.killpg(proc.pid, signal.SIGINT)
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                raise AssertionError("a step ran for more than 600 s")
            time.sleep(0.05)
        if why is not None:  # the runner waits for what the step started to end (its cleanup writes results)
            grace = time.monotonic() + 60
            while True:
                try:
                    os.killpg(proc.pid, 0)
                except ProcessLookupError:
                    break
                if time.monotonic() > grace:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
        return why

    def bash(self, script: str, env: dict[str, str], jobdir: Path, stop_when: Any = None
             ) -> tuple[bool, dict[str, str], str, str | None]:
        out = jobdir / f"output-{len(list(jobdir.glob('output-*')))}"
        out.write_text("")
        log = jobdir / f"log-{len(list(jobdir.glob('log-*')))}"
        with log.open("w") as f:
            proc = subprocess.Popen(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                                    cwd=self.workspace, env={**env, "GITHUB_OUTPUT": str(out)}, stdout=f,
                                    stderr=subprocess.STDOUT, text=True, start_new_session=True)
            why = self._wait(proc, stop_when)
        return proc.returncode == 0 and why is None, _read_outputs(out), log.read_text(), why

    # -- the composite action ------------------------------------------------------------
    def run_action(self, with_: dict[str, Any], env: dict[str, str], outer: dict[str, Any],
                   status: dict[str, bool], jobdir: Path, tag: str, stop_when: Any = None
                   ) -> tuple[bool, dict[str, str], str, str | None]:
        declared = self.action["inputs"]
        unknown = set(with_) - set(declared)
        assert not unknown, f"{tag}: inputs action.yml does not declare: {unknown}"
        ctx = {**outer, "steps": {}}
        inputs = {}
        for k, spec in declared.items():
            inputs[k] = _to_str(with_[k]) if k in with_ else _to_str(evaluate(spec.get("default", ""), ctx))
        ctx["inputs"] = inputs
        self.cache_uses.append((tag, inputs.get("cache")))
        texts = []
        ok = True
        why = None
        astatus = {"failed": False, "cancelled": status.get("cancelled", False)}
        for i, step in enumerate(self.action["runs"]["steps"]):
            sid = step.get("id", f"__{i}")
            if why is not None or not condition(step.get("if"), ctx, astatus):
                continue
            if "uses" in step:
                assert step["uses"].startswith("actions/cache@"), step["uses"]
                if self.real_install(tag) and self.pip_cache is not None:
                    path = Path(_to_str(evaluate(step["with"]["path"], ctx)))
                    path.parent.mkdir(parents=True, exist_ok=True)
                    if not path.exists():
                        path.symlink_to(self.pip_cache, target_is_directory=True)
                continue
            assert "${{" not in step["run"], "action.yml: inputs reach scripts through env:, never the script text"
            step_env = {**env, "GITHUB_ACTION_PATH": str(REPO),
                        **{k: _to_str(v) for k, v in evaluate(step.get("env", {}), ctx, astatus).items()}}
            good, outputs, text, why = self.bash(step["run"], step_env, jobdir, stop_when)
            texts.append(text)
            if sid == "key" and good and not self.real_install(tag):
                self.provide_venv(outputs)
            ctx["steps"][sid] = {"outputs": outputs, "outcome": "success" if good else "failure"}
            if not good:
                ok = False
                astatus["failed"] = True
        outs = {k: _to_str(evaluate(v["value"], ctx)) for k, v in self.action.get("outputs", {}).items()}
        return ok, {k: v for k, v in outs.items() if v != ""}, "\n".join(texts), why

    def provide_venv(self, outputs: dict[str, str]) -> None:
        venv = Path(outputs["venv"])
        (venv / "bin").mkdir(parents=True, exist_ok=True)
        exe = venv / "bin" / "gpu-runner"
        # a new gpu-runner process per call, forked from the session's launcher when one runs
        from conftest import gpu_runner_command

        cmd, extra = gpu_runner_command()
        sets = "".join(f"{k}={shlex.quote(v)} " for k, v in extra.items())
        exe.write_text(f"#!/bin/sh\n{sets}exec {' '.join(shlex.quote(c) for c in cmd)} \"$@\"\n")
        exe.chmod(0o755)
        (venv / ".gpu-runner-stamp").write_text(f"{outputs['stamp']}\n{outputs['extras']}\n")

    # -- artifacts -----------------------------------------------------------------------
    def upload(self, with_: dict[str, Any]) -> tuple[bool, dict[str, str]]:
        """(ok, outputs): the outputs carry ``artifact-id`` when something was uploaded."""
        name = with_["name"]
        assert re.fullmatch(r'[^"<>:|*?\\/\r\n]+', name), f"artifact name {name!r} is not allowed"
        lines = [ln.strip() for ln in str(with_["path"]).splitlines() if ln.strip()]
        include = [ln for ln in lines if not ln.startswith("!")]
        exclude = {(self.workspace / ln[1:]).resolve() for ln in lines if ln.startswith("!")}
        dest = self.artifacts / name
        if _truthy(with_.get("overwrite")):
            shutil.rmtree(dest, ignore_errors=True)
        if dest.exists():  # names are unique per run, every attempt included (upload-artifact v4)
            return False, {"error": "Failed to CreateArtifact: Received non-retryable error: Failed request: (409) "
                                    "Conflict: an artifact with this name already exists on the workflow run"}
        found = False
        for inc in include:
            src = (self.workspace / inc).resolve()
            if not src.exists():
                continue
            files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
            root = src.parent if src.is_file() else src
            for f in files:
                if f.resolve() in exclude:
                    continue
                target = dest / f.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
                found = True
        if not found:
            return with_.get("if-no-files-found", "warn") != "error", {}
        self.artifact_ids[name] = str(1000 + len(self.artifact_ids))
        return True, {"artifact-id": self.artifact_ids[name]}

    def download(self, with_: dict[str, Any]) -> None:
        import fnmatch

        path = self.workspace / with_.get("path", ".")
        path.mkdir(parents=True, exist_ok=True)
        ids = {i.strip() for i in str(with_.get("artifact-ids") or "").split(",") if i.strip()}
        for art in sorted(self.artifacts.iterdir()) if self.artifacts.exists() else []:
            if (self.artifact_ids.get(art.name) in ids) if ids else fnmatch.fnmatchcase(art.name, with_["pattern"]):
                target = path if _truthy(with_.get("merge-multiple")) else path / art.name
                shutil.copytree(art, target, dirs_exist_ok=True)

    # -- workflows -----------------------------------------------------------------------
    def run_workflow(self) -> dict[str, Any]:
        """The reusable workflow's jobs; returns {job id: {result, outputs}} of its own jobs, and
        ``_jobs``: {job id: [JobResult, ...]} (a called workflow's jobs under ``caller/called``)."""
        results = self.run_call(self.top)
        per_name: dict[str, list[JobResult]] = {}
        for j in self.jobs:
            per_name.setdefault(j.name, []).append(j)
        results["_jobs"] = per_name
        return results

    def rerun_failed_of(self, earlier: Runner) -> Runner:
        """Make this runner the next attempt of ``earlier``'s run, as "Re-run failed jobs" makes it:
        GITHUB_RUN_ATTEMPT one higher, the same run id, the earlier attempt's artifacts still there
        (artifact names are unique per run, not per attempt: an upload of a name an earlier attempt
        used fails unless it overwrites, https://github.com/actions/upload-artifact#overwriting-an-artifact,
        https://github.com/actions/upload-artifact/issues/478), and only failed jobs and their
        dependents run (see ``previous``)."""
        assert self.base_env["GITHUB_RUN_ID"] == earlier.base_env["GITHUB_RUN_ID"], "a re-run keeps the run id"
        assert int(self.base_env["GITHUB_RUN_ATTEMPT"]) == int(earlier.base_env["GITHUB_RUN_ATTEMPT"]) + 1, \
            "a re-run is the next attempt"
        assert self.artifacts == earlier.artifacts, "the artifacts of earlier attempts are the run's"
        self.previous = {**(earlier.previous or {}), **earlier.outcomes}
        self.artifact_ids = dict(earlier.artifact_ids)
        return self

    @staticmethod
    def _needs_of(job: dict[str, Any]) -> list[str]:
        needs = job.get("needs", [])
        return [needs] if isinstance(needs, str) else list(needs)

    def _ancestors(self, jobs: dict[str, Any], name: str) -> list[str]:
        """Every job ``name`` needs, directly or through the jobs it needs (same workflow file)."""
        seen: list[str] = []
        todo = self._needs_of(jobs[name])
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.append(n)
                todo += self._needs_of(jobs[n])
        return seen

    def _again(self, tag: str, needs_list: list[str], call: Call) -> bool:
        """Whether a re-run attempt runs this job again (always, outside a re-run)."""
        if self.previous is None or call.forced:
            return True
        before = self.previous.get(tag)
        if before is None or before["result"] in ("failure", "cancelled"):
            return True
        return any(call.prefix + n in self.rerun for n in needs_list)

    def run_call(self, call: Call) -> dict[str, Any]:
        """One workflow's jobs in dependency order; a matrix job's (or a called workflow's) result is
        failure when any item failed, cancelled when the run was cancelled. In a re-run attempt the
        jobs not run again keep the earlier attempt's result and outputs."""
        results: dict[str, Any] = {}
        jobs = call.doc["jobs"]
        for name, job in jobs.items():
            needs_list = self._needs_of(job)
            assert all(n in results for n in needs_list), f"{call.prefix}{name}: needs a later job ({needs_list})"
            needs = {n: results[n] for n in needs_list}
            tag = call.prefix + name
            if not self._again(tag, needs_list, call) and self.previous is not None and "uses" not in job \
                    and not job.get("strategy"):
                results[name] = self.outcomes[tag] = dict(self.previous[tag])
                continue
            seen = [results[a]["result"] for a in self._ancestors(jobs, name)] + call.ancestors
            status = {"failed": "failure" in seen, "blocked": any(r != "success" for r in seen),
                      "cancelled": self.cancelled}
            ctx = {"github": self.github_ctx(), "inputs": call.inputs, "needs": needs}
            if not condition(job.get("if"), ctx, status):
                results[name] = self.outcomes[tag] = {"result": "skipped", "outputs": {}}
                if self.previous is not None:
                    self.rerun.add(tag)
                continue
            items = self.job_items(name, needs, call)
            forced = self.previous is not None and (call.forced or any(call.prefix + n in self.rerun
                                                                        for n in needs_list))
            outs: list[tuple[str, dict[str, str]]] = []
            for item in items:
                itag = tag + (f" {item['id']}" if item else "")
                if "uses" in job:
                    outs.append(self.run_uses(name, job, needs, item, call, seen, forced))
                elif item is not None and not self._again(itag, needs_list, call) and self.previous is not None:
                    outs.append((self.previous[itag]["result"], self.previous[itag]["outputs"]))
                else:
                    jr = self.run_job(name, needs, item, call)
                    outs.append((jr.result, jr.outputs))
                    if self.previous is not None:
                        self.rerun.add(itag)
                self.outcomes[itag] = {"result": outs[-1][0], "outputs": outs[-1][1]}
                if itag in self.rerun:
                    self.rerun.add(tag)
            rs = [o[0] for o in outs]
            result = ("failure" if "failure" in rs else "cancelled" if "cancelled" in rs else "success")
            outputs: dict[str, str] = {}
            for _r, o in outs:  # a matrix: the last item that sets a value wins (GitHub's rule)
                outputs.update({k: v for k, v in o.items() if v != ""})
            results[name] = self.outcomes[tag] = {"result": result, "outputs": outputs}
        return results

    def run_uses(self, name: str, job: dict[str, Any], needs: dict[str, Any], item: dict[str, Any] | None,
                 call: Call, ancestors: list[str] | None = None, forced: bool = False) -> tuple[str, dict[str, str]]:
        """A job that calls a local reusable workflow: its jobs run as their own machines."""
        uses = job["uses"]
        assert uses.startswith("./.github/workflows/"), f"{name}: only local reusable workflows: {uses}"
        doc = self.load(REPO / uses[2:])
        ctx = {"github": self.github_ctx(), "inputs": call.inputs, "needs": needs, "matrix": item or {},
               "secrets": call.secrets}
        given = evaluate(job.get("with", {}), ctx)
        secrets_spec = job.get("secrets", {})
        secrets = dict(call.secrets) if secrets_spec == "inherit" else {
            k: _to_str(v) for k, v in evaluate(secrets_spec, ctx).items()}
        declared = doc["on"]["workflow_call"].get("secrets", {})
        assert set(secrets) <= set(declared), f"{name}: secrets the called workflow does not declare"
        prefix = call.prefix + (f"{name} {item['id']} / " if item else f"{name} / ")
        sub = Call(doc, self.declared_inputs(doc, given), {k: v for k, v in secrets.items() if v},
                   prefix=prefix, ancestors=list(ancestors or []), forced=forced)
        results = self.run_call(sub)
        if any(t.startswith(prefix) for t in self.rerun):
            self.rerun.add(prefix[:-3])
        rs = [r["result"] for r in results.values()]
        result = "failure" if "failure" in rs else "cancelled" if "cancelled" in rs else "success"
        jctx = {"github": self.github_ctx(), "inputs": sub.inputs, "jobs": results}
        outputs = {k: _to_str(evaluate(v["value"], jctx))
                   for k, v in doc["on"]["workflow_call"].get("outputs", {}).items()}
        return result, outputs


# --------------------------------------------------------------------------------------
# Concurrency of the calling workflow
# --------------------------------------------------------------------------------------


def concurrency_of(doc: dict[str, Any], github: dict[str, Any]) -> tuple[str, bool] | None:
    """A calling workflow's ``concurrency:`` for one event: (group, cancel-in-progress), None without one."""
    spec = doc.get("concurrency")
    if spec is None:
        return None
    ctx = {"github": github, "inputs": github.get("event", {}).get("inputs", {}), "vars": {}}
    if isinstance(spec, str):
        return _to_str(evaluate(spec, ctx)), False
    group = _to_str(evaluate(spec["group"], ctx)).strip()
    assert group, "concurrency.group evaluates to nothing"
    return group, _truthy(evaluate(spec.get("cancel-in-progress", False), ctx))


@dataclass
class ConcurrencyQueue:
    """GitHub's queueing of workflow runs that share a concurrency group: at most one running and one
    pending run per group; a new run in a group that has one running waits as the pending one and
    CANCELS the run pending before it, whatever cancel-in-progress says; cancel-in-progress also
    cancels the running one ("When a concurrent job or workflow is queued, if another job or workflow
    using the same concurrency group in the repository is in progress, the queued job or workflow will
    be pending. Any existing pending job or workflow in the same concurrency group, if it exists, will
    be canceled and the new queued job or workflow will take its place",
    https://docs.github.com/en/actions/writing-workflows/choosing-what-your-workflow-does/control-the-concurrency-of-workflows-and-jobs)."""

    running: dict[str, str] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    """Runs cancelled before they ran (replaced while pending) or while they ran."""
    started: list[str] = field(default_factory=list)

    def arrive(self, run: str, concurrency: tuple[str, bool] | None) -> None:
        if concurrency is None:
            self.started.append(run)
            return
        group, cancel_in_progress = concurrency
        if group in self.pending:
            self.cancelled.append(self.pending.pop(group))
        if group not in self.running:
            self.running[group] = run
            self.started.append(run)
        elif cancel_in_progress:
            self.cancelled.append(self.running[group])
            self.running[group] = run
            self.started.append(run)
        else:
            self.pending[group] = run

    def finish_all(self) -> None:
        """Every running run ends; the pending ones start (and end)."""
        while self.running:
            for group in list(self.running):
                del self.running[group]
                if group in self.pending:
                    self.running[group] = self.pending.pop(group)
                    self.started.append(self.running[group])

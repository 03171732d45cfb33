"""Run the reusable workflow's jobs here, from the YAML itself, as a GitHub runner would.

It reads .github/workflows/gpu-notebooks.yml and action.yml, evaluates the ``${{ }}``
expressions they use (a small evaluator: contexts, literals, ``! == != < > <= >= && ||``,
``fromJSON``, ``toJSON``, ``format``, ``contains``, ``startsWith``, ``always``, ``success``,
``failure``, ``cancelled``), and runs every ``run:`` script with bash, the step's ``env:``
resolved and the files GitHub sets (GITHUB_OUTPUT per step, GITHUB_STEP_SUMMARY per job,
GITHUB_EVENT_PATH). Matrix jobs run once per item. What it does not run, it stands in for:

* ``actions/checkout``: the workspace is already the checked-out repository, and the
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
* ``container:`` is evaluated and recorded, not started.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
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
        if n == "format":
            return re.sub(r"\{(\d+)\}", lambda m: _to_str(args[1 + int(m.group(1))]), args[0])
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
        if n == "success":
            return not self.status.get("failed", False) and not self.status.get("cancelled", False)
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
    """A job's or step's ``if:`` (implicitly ``success() && (...)`` without a status function)."""
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


@dataclass
class Runner:
    """Runs the reusable workflow's jobs in ``workspace`` with ``base_env`` (GITHUB_* and stand-in
    addresses) for one event."""

    workspace: Path
    base_env: dict[str, str]
    event_name: str
    event: dict[str, Any]
    inputs: dict[str, Any]
    secrets: dict[str, str]
    artifacts: Path
    workflow_path: Path = REPO / ".github" / "workflows" / "gpu-notebooks.yml"
    records: list[StepRecord] = field(default_factory=list)
    runner_names: dict[str, str] = field(default_factory=dict)
    """matrix item id -> RUNNER_NAME of the machine its run job lands on."""
    real_install: Any = staticmethod(lambda tag: False)
    """``tag -> bool`` ("run smoke--here"): the jobs whose action installs gpu-runner for real."""
    job_env: Any = staticmethod(lambda tag: {})
    """``tag -> {NAME: value or None}``: how a job's machine differs (None removes a variable)."""
    pip_cache: Path | None = None
    """What ``actions/cache`` restores for the real installs (else they start with no cache)."""
    artifact_ids: dict[str, str] = field(default_factory=dict)
    """artifact name -> the id its upload gave (``artifact-id``), for downloads by ``artifact-ids``."""

    def __post_init__(self) -> None:
        self.workflow = yaml.safe_load(self.workflow_path.read_text(encoding="utf-8"))
        self.action = yaml.safe_load((REPO / "action.yml").read_text(encoding="utf-8"))
        declared = self.workflow[True]["workflow_call"]["inputs"] if True in self.workflow else \
            self.workflow["on"]["workflow_call"]["inputs"]
        unknown = set(self.inputs) - set(declared)
        assert not unknown, f"inputs the workflow does not declare: {unknown}"
        self.resolved_inputs = {k: self.inputs.get(k, spec.get("default")) for k, spec in declared.items()}
        event_file = self.workspace.parent / "event.json"
        event_file.write_text(json.dumps(self.event))
        self.base_env = {**self.base_env, "GITHUB_EVENT_PATH": str(event_file), "GITHUB_EVENT_NAME": self.event_name,
                         "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(self.workspace), "CI": "true"}
        link = self.workspace / ".gpu-runner"
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        self.pristine = self.workspace
        """Every job starts on a fresh machine: a copy of this checkout."""

    def github_ctx(self) -> dict[str, Any]:
        e = self.base_env
        return {"event_name": self.event_name, "event": self.event, "sha": e.get("GITHUB_SHA", ""),
                "repository": e["GITHUB_REPOSITORY"], "token": e.get("GITHUB_TOKEN", ""),
                "ref": e.get("GITHUB_REF", ""), "run_id": e["GITHUB_RUN_ID"], "run_attempt": e["GITHUB_RUN_ATTEMPT"],
                "workspace": str(self.workspace), "workflow": "runtime-tests"}

    # -- one job ------------------------------------------------------------------------
    def job_items(self, name: str, needs: dict[str, Any]) -> list[dict[str, Any] | None]:
        job = self.workflow["jobs"][name]
        strategy = job.get("strategy")
        if not strategy:
            return [None]
        ctx = {"github": self.github_ctx(), "inputs": self.resolved_inputs, "needs": needs}
        matrix = evaluate(strategy["matrix"], ctx)
        return list(matrix.get("include", []))

    def run_job(self, name: str, needs: dict[str, Any], item: dict[str, Any] | None) -> JobResult:
        job = self.workflow["jobs"][name]
        tag = f"{name} {item['id']}" if item else name
        jobdir = self.pristine.parent / "jobs" / re.sub(r"[^A-Za-z0-9_.-]", "_", tag)
        shutil.rmtree(jobdir, ignore_errors=True)
        (jobdir / "temp").mkdir(parents=True, exist_ok=True)
        self.workspace = jobdir / "workspace"
        shutil.copytree(self.pristine, self.workspace, symlinks=True)
        summary = jobdir / "step_summary.md"
        summary.write_text("")
        ctx: dict[str, Any] = {"github": self.github_ctx(), "inputs": self.resolved_inputs, "needs": needs,
                               "matrix": item or {}, "secrets": self.secrets, "steps": {},
                               "runner": {"temp": str(jobdir / "temp"), "os": "Linux", "arch": "X64"},
                               "env": {}, "strategy": {}, "job": {}}
        status = {"failed": False, "cancelled": False}
        container = evaluate(job.get("container"), ctx) if job.get("container") else None
        runs_on = evaluate(job.get("runs-on"), ctx)
        env = {**self.base_env, "RUNNER_TEMP": str(jobdir / "temp"), "GITHUB_STEP_SUMMARY": str(summary),
               "RUNNER_OS": "Linux", "RUNNER_ARCH": "X64",
               "RUNNER_NAME": self.runner_names.get(item["id"], "hosted") if item else "hosted"}
        for k, v in self.job_env(tag).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        steps: list[StepRecord] = []
        for i, step in enumerate(job.get("steps", [])):
            sid = step.get("id", f"__{i}")
            label = step.get("name") or step.get("uses") or step.get("run", "")[:40]
            if not condition(step.get("if"), ctx, status):
                steps.append(StepRecord(tag, label, "skipped"))
                continue
            step_env = {**env, **{k: _to_str(v) for k, v in evaluate(step.get("env", {}), ctx, status).items()}}
            with_ = evaluate(step.get("with", {}), ctx, status)
            uses = step.get("uses", "")
            outputs: dict[str, str] = {}
            if uses == "./.gpu-runner":
                ok, outputs, text = self.run_action(with_, step_env, ctx, status, jobdir, tag)
                rec = StepRecord(tag, label, "success" if ok else "failure", text,
                                 command=f"gpu-runner {with_.get('mode')}")
            elif uses.startswith("actions/upload-artifact@"):
                ok, outputs = self.upload(with_)
                rec = StepRecord(tag, label, "success" if ok else "failure")
            elif uses.startswith("actions/download-artifact@"):
                self.download(with_)
                rec = StepRecord(tag, label, "success")
            elif uses.startswith(("actions/checkout@", "google-github-actions/auth@", "actions/cache@")):
                rec = StepRecord(tag, label, "success")
            elif "run" in step:
                ok, outputs, text = self.bash(evaluate(step["run"], ctx, status), step_env, jobdir)
                rec = StepRecord(tag, label, "success" if ok else "failure", text)
            else:
                raise AssertionError(f"{tag}: step {label!r} uses {uses!r}, which this harness does not know")
            ctx["steps"][sid] = {"outputs": outputs, "outcome": rec.outcome, "conclusion": rec.outcome}
            if rec.outcome == "failure":
                status["failed"] = True
            steps.append(rec)
        self.records += steps
        job_outputs = {k: _to_str(v) for k, v in evaluate(job.get("outputs", {}), ctx, status).items()}
        assert runs_on, f"{tag}: runs-on is empty"
        return JobResult("failure" if status["failed"] else "success", job_outputs, steps,
                         container={"runs_on": runs_on, **(container or {})}, summary=summary.read_text())

    def bash(self, script: str, env: dict[str, str], jobdir: Path) -> tuple[bool, dict[str, str], str]:
        out = jobdir / f"output-{len(list(jobdir.glob('output-*')))}"
        out.write_text("")
        r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                           cwd=self.workspace, env={**env, "GITHUB_OUTPUT": str(out)}, capture_output=True,
                           text=True, timeout=600)
        return r.returncode == 0, _read_outputs(out), r.stdout + r.stderr

    # -- the composite action ------------------------------------------------------------
    def run_action(self, with_: dict[str, Any], env: dict[str, str], outer: dict[str, Any],
                   status: dict[str, bool], jobdir: Path, tag: str) -> tuple[bool, dict[str, str], str]:
        declared = self.action["inputs"]
        unknown = set(with_) - set(declared)
        assert not unknown, f"{tag}: inputs action.yml does not declare: {unknown}"
        ctx = {**outer, "steps": {}}
        inputs = {}
        for k, spec in declared.items():
            inputs[k] = _to_str(with_[k]) if k in with_ else _to_str(evaluate(spec.get("default", ""), ctx))
        ctx["inputs"] = inputs
        texts = []
        ok = True
        astatus = {"failed": False, "cancelled": status.get("cancelled", False)}
        for i, step in enumerate(self.action["runs"]["steps"]):
            sid = step.get("id", f"__{i}")
            if not condition(step.get("if"), ctx, astatus):
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
            good, outputs, text = self.bash(step["run"], step_env, jobdir)
            texts.append(text)
            if sid == "key" and good and not self.real_install(tag):
                self.provide_venv(outputs)
            ctx["steps"][sid] = {"outputs": outputs, "outcome": "success" if good else "failure"}
            if not good:
                ok = False
                astatus["failed"] = True
        outs = {k: _to_str(evaluate(v["value"], ctx)) for k, v in self.action.get("outputs", {}).items()}
        return ok, {k: v for k, v in outs.items() if v != ""}, "\n".join(texts)

    def provide_venv(self, outputs: dict[str, str]) -> None:
        venv = Path(outputs["venv"])
        (venv / "bin").mkdir(parents=True, exist_ok=True)
        exe = venv / "bin" / "gpu-runner"
        exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m gpu_runner "$@"\n')
        exe.chmod(0o755)
        (venv / ".gpu-runner-stamp").write_text(f"{outputs['stamp']}\n{outputs['extras']}\n")

    # -- artifacts -----------------------------------------------------------------------
    def upload(self, with_: dict[str, Any]) -> tuple[bool, dict[str, str]]:
        """(ok, outputs): the outputs carry ``artifact-id`` when something was uploaded."""
        name = with_["name"]
        lines = [ln.strip() for ln in str(with_["path"]).splitlines() if ln.strip()]
        include = [ln for ln in lines if not ln.startswith("!")]
        exclude = {(self.workspace / ln[1:]).resolve() for ln in lines if ln.startswith("!")}
        dest = self.artifacts / name
        if _truthy(with_.get("overwrite")):
            shutil.rmtree(dest, ignore_errors=True)
        assert not dest.exists(), f"artifact {name} uploaded twice"
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

    # -- the whole workflow --------------------------------------------------------------
    def run_workflow(self) -> dict[str, Any]:
        """Jobs in dependency order; a matrix job's result is failure when any item failed."""
        results: dict[str, Any] = {}
        per_item: dict[str, list[JobResult]] = {}
        order = ["plan", "start", "run", "stop", "report", "comment"]
        assert list(self.workflow["jobs"]) == order, list(self.workflow["jobs"])
        for name in order:
            job = self.workflow["jobs"][name]
            needs_list = job.get("needs", [])
            needs_list = [needs_list] if isinstance(needs_list, str) else needs_list
            needs = {n: results[n] for n in needs_list}
            status = {"failed": any(results[n]["result"] in ("failure", "cancelled") for n in needs_list),
                      "cancelled": False}
            if any(results[n]["result"] == "skipped" for n in needs_list) and not re.search(
                    r"always\(\)|cancelled\(\)", str(job.get("if", ""))):
                status["failed"] = True  # a skipped need skips this job unless it asks for always()
            ctx = {"github": self.github_ctx(), "inputs": self.resolved_inputs, "needs": needs}
            if not condition(job.get("if"), ctx, status):
                results[name] = {"result": "skipped", "outputs": {}}
                continue
            runs = [self.run_job(name, needs, item) for item in self.job_items(name, needs)]
            per_item[name] = runs
            failed = any(r.result == "failure" for r in runs)
            outputs = runs[0].outputs if len(runs) == 1 else {}
            results[name] = {"result": "failure" if failed else "success", "outputs": outputs}
        results["_jobs"] = per_item
        return results

"""Command line: the only place that parses arguments and maps errors to exit codes.

Exit codes (every command): 0 all passed, 1 a notebook or check failed,
2 usage or configuration error, 3 infrastructure failure.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from . import __version__
from .errors import EXIT_FAILED, EXIT_INFRA, EXIT_OK, EXIT_USAGE, ConfigError, GpuRunnerError, InfraError, first_line

MAX_RETRY = 2
"""Tries after the first (``retries.preempted`` is at most 2)."""
_FLOAT_12 = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


_kernel_overlay_option = click.option(
    "--kernel-overlay/--no-kernel-overlay", "kernel_overlay", default=None,
    help="When the runtime's Python has no ipykernel, install it with the runtime's own pip into a cache folder "
         "outside the runtime, placed after the runtime's own packages.  [default: the matrix's kernel_overlay, else on]")


def _python_option(f: Any) -> Any:
    return click.option("--python", "python", default=None, metavar="PATH|COMMAND",
                        help="The runtime's Python: Python kernels and the framework checks run under it (over the "
                             "matrix's python, over $GPU_RUNNER_PYTHON).  [default: Jupyter's python3 kernelspec]")(f)


def _check_python(python: str | None) -> None:
    """``--python`` is the user's own word: a path or command that is no Python is a usage error."""
    if python is None:
        return
    from .execute.runtime import InterpreterError, probe, resolve_command

    try:
        probe(resolve_command(python), "--python")
    except InterpreterError as e:
        raise ConfigError(f"--python: {e}") from None


def _choose_python(run: Any, python: str | None, kernel_overlay: bool | None) -> None:
    """Most specific wins: --python, the matrix's python, $GPU_RUNNER_PYTHON."""
    from .execute.runtime import choose

    run.python, run.python_source = choose(python, run.python if run.python_source == "matrix" else None)
    if kernel_overlay is not None:
        run.kernel_overlay = kernel_overlay


def _parse_param(raw: str) -> tuple[str, Any]:
    name, sep, value = raw.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise click.BadParameter(f"{raw!r} is not NAME=VALUE with NAME a Python identifier", param_hint="-p")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value  # not a YAML scalar: keep the text as it was typed
    if isinstance(parsed, (dict, list)):
        parsed = value  # -p takes scalars; flow collections stay strings
    if isinstance(parsed, str) and _FLOAT_12.match(parsed.strip()):
        parsed = float(parsed)  # YAML 1.2 reads 1e-3 as a number; PyYAML (YAML 1.1) would keep a string
    return name, parsed


def _matrix_names(kind: str) -> Any:
    """Shell completion for --runtime, --machine and --entry: the names in the --matrix file given
    before them on the command line (nothing when there is none, or it does not load)."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        path = ctx.params.get("matrix_path")
        if not path:
            return []
        try:
            from .config import load
            from .plan import entry_id, expand

            lm = load(Path(path))
            if kind == "runtime":
                names = list(lm.model.runtimes)
            elif kind == "machine":
                names = list(lm.model.machines)
            else:
                names = [entry_id(r, m) for r, m in expand(lm)]
        except Exception:  # noqa: BLE001 - a completion never fails loudly
            return []
        return [CompletionItem(n) for n in names if n.startswith(incomplete)]

    return complete


def _first_sentence(text: str) -> str:
    """The first sentence of a help text's first paragraph, whole (click cuts it at a width)."""
    para = " ".join(text.split("\n\n")[0].split())
    m = re.search(r"(?<!\be\.g)(?<!\bi\.e)[.!?](?=\s|$)", para)
    return para[: m.end()] if m else para


class _SummaryHelp:
    """A command whose summary in ``gpu-runner --help`` is its first sentence, never cut mid-way."""

    short_help: str | None
    help: str | None

    def get_short_help_str(self, limit: int = 45) -> str:
        if self.short_help or not self.help:
            return super().get_short_help_str(limit)  # type: ignore[misc]
        return _first_sentence(self.help)


class _Command(_SummaryHelp, click.Command):
    pass


class _Group(_SummaryHelp, click.Group):
    command_class = _Command
    group_class = type  # subgroups are _Group too


@click.group(cls=_Group, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="gpu-runner")
def cli() -> None:
    """Run the notebooks of GPU runtimes on every machine they support, and report."""


@cli.command("run")
@click.argument("paths", nargs=-1, metavar="[PATH|GLOB]...")
@click.option("--matrix", "matrix_path", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Run the entries of a matrix file whose machine is local (instead of PATHs).")
@click.option("--runtime", "runtimes", multiple=True, metavar="NAME", shell_complete=_matrix_names("runtime"),
              help="With --matrix: only this runtime (repeatable).")
@click.option("--machine", "machines", multiple=True, metavar="NAME", shell_complete=_matrix_names("machine"),
              help="With --matrix: only this machine (repeatable).")
@click.option("--local", "run_cloud_locally", is_flag=True,
              help="With --matrix: also run the notebooks of cloud entries on this machine (marked as such).")
@click.option("--entry", "entry_id", default=None, metavar="ID", shell_complete=_matrix_names("entry"),
              help="With --matrix: run exactly this entry here; on the entry's own VM (RUNNER_NAME is its label) "
                   "as the machine the matrix describes, its GPU count enforced.")
@click.option("--retry", "retry", type=click.IntRange(min=0, max=MAX_RETRY), default=0, show_default=True,
              help="With --entry: which try of the entry this is (1, 2 after its VM was preempted).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True, help="Results folder; one sub-folder per entry.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Notebooks run in parallel.  [default: number of CPUs]")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Per-notebook limit in seconds (a notebook's metadata.execution.timeout overrides).  [default: 3600]")
@click.option("--cell-timeout", "cell_timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Per-cell limit in seconds.  [default: 600]")
@click.option("--rerun", is_flag=True, help="After a clean pass, run every cell again in the same kernel.")
@click.option("--kernel", default=None, help="Kernel name for every notebook instead of its own kernelspec.")
@click.option("-p", "--parameter", "params", multiple=True, metavar="NAME=VALUE",
              help="Inject a parameter (value read as a YAML scalar) after the cell tagged 'parameters'.")
@click.option("--log", "log_mode", type=click.Choice(["py", "none"]), default="none", show_default=True,
              help="'py': write and print a jupytext percent-format log.py of each executed notebook.")
@click.option("--pdf/--no-pdf", "pdf", default=True, show_default=True,
              help="Print each notebook's HTML to PDF with headless Chromium.")
@click.option("--checks/--no-checks", "checks", default=True, show_default=True,
              help="Run system checks before the notebooks: with --matrix the runtime's checks, else every "
                   "built-in with no expected GPU count (see `gpu-runner check`).")
@_python_option
@_kernel_overlay_option
def run_cmd(
    paths: tuple[str, ...],
    matrix_path: Path | None,
    runtimes: tuple[str, ...],
    machines: tuple[str, ...],
    run_cloud_locally: bool,
    entry_id: str | None,
    retry: int,
    out_dir: Path,
    jobs: int | None,
    timeout_s: float | None,
    cell_timeout_s: float | None,
    rerun: bool,
    kernel: str | None,
    params: tuple[str, ...],
    log_mode: str,
    pdf: bool,
    checks: bool,
    python: str | None,
    kernel_overlay: bool | None,
) -> None:
    """Execute notebooks on this machine, write results to --out, and report.

    With no PATH and no --matrix, runs the notebooks under ./notebooks. Leaves
    OUT/<entry>/results.json, each notebook's executed .ipynb, HTML, PDF, metrics,
    params and artifacts, OUT/<entry>/junit.xml, and OUT/summary.md, OUT/junit.xml,
    OUT/index.html across entries.
    """
    from .execute.stop import Stop

    # from here on a signal stops the run in order (see README: a run stopped by a signal)
    stop = Stop().install()
    try:
        _run(stop, paths, matrix_path, runtimes, machines, run_cloud_locally, entry_id, retry, out_dir, jobs,
             timeout_s, cell_timeout_s, rerun, kernel, params, log_mode, pdf, checks, python, kernel_overlay)
    finally:
        stop.restore()


def _run(stop: Any, paths: tuple[str, ...], matrix_path: Path | None, runtimes: tuple[str, ...],
         machines: tuple[str, ...], run_cloud_locally: bool, entry_id: str | None, retry: int, out_dir: Path,
         jobs: int | None,
         timeout_s: float | None, cell_timeout_s: float | None, rerun: bool, kernel: str | None,
         params: tuple[str, ...], log_mode: str, pdf: bool, checks: bool, python: str | None,
         kernel_overlay: bool | None) -> None:
    import threading

    from .checks import default_specs
    from .execute.engine import Executor, run_entries
    from .execute.kernels import REGISTRY
    from .execute.spec import DEFAULT_CELL_TIMEOUT_S, DEFAULT_TIMEOUT_S, EntryRun, collect_notebooks
    from .execute.stop import WRITE_LOCK
    from .execute.sweep import kill_descendants
    from .log import Logger
    from .outdir import OutLock, clean_staging
    from .phases import phase
    from .report import PdfPrinter, write_entry_reports, write_run_reports
    from .report.html import BackgroundHtml
    from .results import EntryInfo

    parameters = dict(_parse_param(p) for p in params)
    _check_python(python)
    notes: list[str] = []
    if matrix_path is not None:
        from .plan import local_runs

        if paths:
            raise ConfigError("give notebook PATHs or --matrix, not both")
        if retry and entry_id is None:
            raise ConfigError("--retry names a try of one entry: give --entry ID too")
        if entry_id is not None:
            from .plan import entry_run_here

            if runtimes or machines or run_cloud_locally:
                raise ConfigError("--entry names one entry: leave out --runtime, --machine and --local")
            runs = [entry_run_here(matrix_path, entry_id, retry=retry)]
        else:
            runs = local_runs(matrix_path, runtimes=list(runtimes), machines=list(machines),
                              local=run_cloud_locally)
            notes = _left_out_note(matrix_path, runtimes, machines, {r.info.id for r in runs})
        for r in runs:  # the command line overrides the matrix
            r.parameters.update(parameters)
            r.timeout_s = timeout_s or r.timeout_s
            r.cell_timeout_s = cell_timeout_s or r.cell_timeout_s
            r.kernel = kernel or r.kernel
            r.rerun = rerun or r.rerun
            r.log_py = log_mode == "py"
            r.checks = r.checks if checks else []
    else:
        if runtimes or machines or run_cloud_locally or entry_id or retry:
            raise ConfigError("--runtime, --machine, --local, --entry and --retry select matrix entries: give --matrix "
                              "FILE too")
        if not paths:
            if not Path("notebooks").is_dir():
                raise ConfigError("no PATH given and no ./notebooks folder here; name the notebooks to run")
            paths = ("notebooks",)
        runs = [
            EntryRun(
                info=EntryInfo(id="local"),
                notebooks=collect_notebooks(list(paths)),
                parameters=parameters,
                timeout_s=timeout_s or DEFAULT_TIMEOUT_S,
                cell_timeout_s=cell_timeout_s or DEFAULT_CELL_TIMEOUT_S,
                kernel=kernel,
                rerun=rerun,
                log_py=log_mode == "py",
                checks=default_specs() if checks else [],
            )
        ]
    for r in runs:
        _choose_python(r, python, kernel_overlay)
    jobs = jobs or os.cpu_count() or 1
    # before the first notebook: --out is writable, no other run writes there, every entry
    # folder in it is ours (exit 2 otherwise)
    lock = OutLock(out_dir, "run").acquire()
    try:
        clean_staging(out_dir)
        logger = Logger.for_environment(jobs=jobs)
        for note in notes:
            logger.warning(note)
        pages = BackgroundHtml(write_lock=WRITE_LOCK)
        if any(r.notebooks for r in runs):
            pages.warm()
        executor = Executor(out_dir=out_dir, jobs=jobs, logger=logger, stop=stop, html=pages)
        executor.prepare(runs)
        entry_dirs = [out_dir / r.info.id for r in runs]
        # the hard exit (a second signal, then the limit) writes the run's reports from what is known
        stop.add_final_writer(lambda: write_run_reports(entry_dirs, out_dir, logger=logger, notes=notes))
        stop.add_cleanup(kill_descendants)
        # the browser warms up while the notebooks run
        printer = PdfPrinter(logger=logger) if pdf else None
        warm = threading.Thread(target=printer.start, daemon=True) if printer else None
        if warm:
            warm.start()
        try:
            outcome = run_entries(runs, out_dir=out_dir, jobs=jobs, logger=logger, stop=stop, executor=executor)
            if warm:
                warm.join()
            for d in outcome.entry_dirs:
                with phase("reports"):
                    write_entry_reports(d, pdf=pdf, browser=printer, logger=logger, stop=stop,
                                        made=pages.made(d.name), setup_errors_said=True)
        finally:
            pages.close(cancel=True)
            if printer is not None:
                printer.close()
            REGISTRY.kill_all()
            kill_descendants()  # nothing this run started is left: not even an orphan without our mark
        with WRITE_LOCK, phase("reports"):
            report = write_run_reports(outcome.entry_dirs, out_dir, logger=logger, notes=notes)
        logger.info(f"results: {out_dir}/ (summary.md, index.html, junit.xml)")
    finally:
        lock.release()
    sys.exit(stop.exit_code if stop.requested else report.exit_code)


def _left_out_note(matrix_path: Path, runtimes: tuple[str, ...], machines: tuple[str, ...],
                   ran: set[str]) -> list[str]:
    """What ``run --matrix`` leaves out (the entries on cloud machines), said with how to run them."""
    from .plan import load, plan

    path = Path(matrix_path)
    cwd = Path.cwd().resolve()
    p = plan(load(path if path.is_absolute() else cwd / path, display=str(matrix_path)),
             runtimes=list(runtimes), machines=list(machines), limit=None, cwd=cwd)
    left = [e for e in p.entries if e.id not in ran]
    if not left:
        return []
    n = len(p.entries)
    return [f"{len(left)} of {n} entr{'y' if n == 1 else 'ies'} not run here (on cloud machines): "
            f"{', '.join(e.id for e in left)}; run their notebooks on this machine with "
            f"`gpu-runner run --matrix {matrix_path} --local`, or on their machines with the GitHub workflow"]


@cli.command("check")
@click.option("--matrix", "matrix_path", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Matrix file; with --entry, run that entry's checks and hold the machine to its GPU count.")
@click.option("--entry", "entry_id", default=None, metavar="ID", shell_complete=_matrix_names("entry"),
              help="Entry id (as `gpu-runner plan` lists it).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True, help="Results folder; writes OUT/<entry id>/results.json, junit.xml and checks/.")
@click.option("--kernel", default=None, metavar="NAME",
              help="Probe the frameworks in this kernel's Python.  [default: the entry's kernel, else python3]")
@_python_option
def check_cmd(matrix_path: Path | None, entry_id: str | None, out_dir: Path, kernel: str | None,
              python: str | None) -> None:
    """Prove the machine and the runtime: GPU, CUDA, compilers, frameworks, resources.

    Without --matrix runs every built-in check with no expected GPU count (on a machine
    without a GPU the GPU checks are skipped). With --matrix FILE --entry ID runs the
    runtime's checks, its command checks included, and fails when the GPUs found are not
    the machine's count in the matrix. Exit 0 when every check passed or was skipped,
    1 when one failed, 2 on a usage or matrix error.
    """

    from .checks import default_specs
    from .execute.spec import EntryRun
    from .outdir import EntryFolder, OutLock
    from .results import EntryInfo

    if (matrix_path is None) != (entry_id is None):
        raise ConfigError("--matrix FILE and --entry ID go together (`gpu-runner plan --matrix FILE` lists the ids)")
    _check_python(python)
    if matrix_path is not None:
        from .plan import expected_gpus, find_entry, label_is_for

        if not matrix_path.is_file():
            raise ConfigError(f"{matrix_path}: no such file")
        entry = find_entry(matrix_path, str(entry_id))
        # on the entry's own VM the GitHub runner is named after the entry's label
        own_vm = not entry.is_local and label_is_for(entry, os.environ.get("RUNNER_NAME", ""))
        run = EntryRun(
            info=EntryInfo(id=entry.id, runtime=entry.runtime, machine=entry.machine,
                           label=None if entry.is_local else entry.label, provider=entry.provider,
                           ran_locally=not own_vm),
            notebooks=[], env=dict(entry.env), kernel=kernel or entry.kernel, checks=[dict(c) for c in entry.checks],
            expected_gpus=expected_gpus(entry), expected_gpu_type=entry.accelerator_type,
            python=entry.python, python_source="matrix" if entry.python else "jupyter",
        )
    else:
        run = EntryRun(info=EntryInfo(id="local"), notebooks=[], kernel=kernel, checks=default_specs())
    _choose_python(run, python, None)
    lock = OutLock(out_dir, "check").acquire()  # exit 2 now if --out is not writable or in use
    try:
        folder = EntryFolder(out_dir, run.info.id)
        _check(run, folder)
    finally:
        lock.release()


def _check(run: Any, folder: Any) -> None:
    import time
    from datetime import datetime, timezone

    from .checks import context_for, log_outcome, run_checks
    from .execute import runtime as runtimes
    from .execute.engine import host_facts
    from .log import Logger
    from .report import write_entry_reports
    from .results import EntryResult

    staging = folder.prepare()
    started, t0 = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.monotonic()
    logger = Logger.for_environment()
    # the checks need no kernel: no overlay is installed for them
    interp = runtimes.for_run(run.python, run.python_source, overlay=False, env={**os.environ, **run.env})
    if interp.version:  # it answered: a missing ipykernel does not matter to the checks
        interp.problem = None
    logger.info(f"{run.info.id}: the runtime's Python is {interp.describe()}")
    ctx = context_for(run, staging, interp=interp)
    outcome = run_checks(run.checks, ctx)
    statuses = {r.status for r in outcome.results}
    result = EntryResult(
        entry=run.info,
        status="failed" if "failed" in statuses else ("skipped" if statuses == {"skipped"} else "passed"),
        started_at=started, finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        duration_s=round(time.monotonic() - t0, 3), checks=outcome.results,
        facts={**host_facts(), **interp.facts(), **outcome.facts},
        options={"command": "check", "expected_gpus": run.expected_gpus, "pythons": ctx.pythons,
                 "python": run.python, "python_source": run.python_source},
        tool_version=__version__,
    )
    result.write(staging)
    entry_dir = folder.commit()
    if sys.stdout.isatty() and not logger.github:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        colour = {"passed": "green", "failed": "red", "skipped": "yellow"}
        t = Table(title=f"System checks of {run.info.id}", title_justify="left")
        for col in ("check", "result", "time", "verdict"):
            t.add_column(col, overflow="fold", no_wrap=col in ("check", "result"))
        for r in outcome.results:
            what = r.summary or r.skip_reason or (r.failure.message if r.failure else "")
            t.add_row(escape(r.name), f"[{colour[r.status]}]{r.status}[/]", f"{r.duration_s:.1f}s", escape(what))
        Console().print(t)
    else:
        log_outcome(logger, outcome, run.info.id)
    if not outcome.results:
        click.echo(f"{run.info.id}: no checks to run (the runtime declares checks: [])")
    write_entry_reports(entry_dir, pdf=False, logger=logger)
    f = result.facts
    if f.get("gpu_model"):
        click.echo(f"GPU: {f.get('gpu_count')}× {f['gpu_model']}, driver {f.get('driver_version')}, "
                   f"CUDA {f.get('cuda_version')}")
    from .report.text import fmt_counts

    click.echo(f"{fmt_counts(result.check_counts(), 'system check', always=('passed', 'failed'))}; "
               f"results: {entry_dir}/results.json, {entry_dir}/junit.xml")
    sys.exit(EXIT_FAILED if result.status == "failed" else EXIT_OK)


@cli.command("plan")
@click.option("--matrix", "matrix_path", required=True, type=click.Path(path_type=Path), metavar="FILE",
              help="Matrix file (YAML).")
@click.option("--runtime", "runtimes", multiple=True, metavar="NAME", shell_complete=_matrix_names("runtime"),
              help="Only this runtime (repeatable; a glob like 'torch-*' works).")
@click.option("--machine", "machines", multiple=True, metavar="NAME", shell_complete=_matrix_names("machine"),
              help="Only this machine (repeatable; globs work).")
@click.option("--changed-files", "changed_files", default=None, metavar="FILE|-",
              help="Repo-relative paths, one a line ('-' reads stdin): keep the runtimes whose notebooks or "
                   "paths they touch; a change to the matrix file keeps everything.")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default=None,
              help="json: {\"include\": [...]} for a GitHub matrix; table: for people.  "
                   "[default: table on a terminal, else json]")
@click.option("--fork-gate", "approval_label", default=None, metavar="LABEL",
              help="Read the event (GITHUB_EVENT_NAME, GITHUB_EVENT_PATH): a pull request from a fork keeps only "
                   "its local entries on pull_request, and nothing at all on pull_request_target unless this "
                   "event is a user with write access applying LABEL; says why in the job summary.")
def plan_cmd(matrix_path: Path, runtimes: tuple[str, ...], machines: tuple[str, ...], changed_files: str | None,
             fmt: str | None, approval_label: str | None) -> None:
    """Expand a matrix file into entries: one runtime on one machine, each with an id and a runner label.

    In GitHub Actions ($GITHUB_OUTPUT set) also writes the outputs matrix=<json> and has-work=true|false.
    """
    from . import plan as planning

    changed = planning.read_changed_files(changed_files) if changed_files is not None else None
    p = planning.plan(matrix_path, runtimes=list(runtimes), machines=list(machines), changed_files=changed,
                      check_notebooks=True)
    for line in planning.warning_lines(p.warnings, github=os.environ.get("GITHUB_ACTIONS") == "true"):
        click.echo(line, err=True)
    gated = False
    if approval_label is not None:
        from .github.approval import fork_gate
        from .github.comments import read_event
        from .github.workflow import append_step_summary

        event_name = os.environ.get("GITHUB_EVENT_NAME", "")

        made: list[Any] = []

        def approvals() -> Any:  # one per plan: it asks each user's permission once
            from .github.approval import Approvals
            from .github.client import client, repository

            if not made:
                made.append(Approvals(client(), repository()))
            return made[0]

        def may_approve(login: str) -> bool:
            return bool(approvals().may_approve(login))

        def reviewed_by(number: int, head_sha: str) -> str | None:
            return approvals().approving_reviewer(number, head_sha)  # type: ignore[no-any-return]

        gate = fork_gate(event_name, read_event(), approval_label, may_approve, reviewed_by)
        dropped = [e for e in p.entries if gate.keep == "none" or (gate.keep == "local" and not e.is_local)]
        if dropped:
            gated = True
            p.entries = [e for e in p.entries if e not in dropped]
            what = "entr" + ("y" if len(dropped) == 1 else "ies") if gate.keep == "none" else (
                "GPU entr" + ("y" if len(dropped) == 1 else "ies"))
            note = f"{len(dropped)} {what} left out: {gate.reason}. Left out: {', '.join(e.id for e in dropped)}."
            p.notes.append(note)
            heading = "Nothing of this pull request runs yet" if gate.keep == "none" else "GPU entries not run"
            append_step_summary(f"### {heading}\n\n{note}\n")
        if gate.approved:
            p.notes.append(f"pull request from a fork {gate.approved}: the run jobs check out that commit")
    for note in p.notes:
        click.echo(note, err=True)
    cost = planning.price_entries(p)
    as_json = (fmt or ("table" if sys.stdout.isatty() else "json")) == "json"
    if cost.worst_case:
        if as_json:  # the table says it in its caption
            for note in cost.notes:
                click.echo(note, err=True)
            click.echo(cost.line(), err=True)
        if os.environ.get("GITHUB_STEP_SUMMARY"):
            from .github.workflow import append_step_summary

            append_step_summary(planning.cost_markdown(p, cost))
    if os.environ.get("GITHUB_OUTPUT"):
        planning.write_github_output(p, os.environ["GITHUB_OUTPUT"])
        if approval_label is not None:
            from .github.workflow import set_outputs

            set_outputs({"gated": "true" if gated else "false"})
    if as_json:
        click.echo(p.matrix_json())
    else:
        from rich.console import Console

        console = Console()
        console.print(planning.table(p, cost, width=console.width))


REPORT_FILES = ("summary.md", "index.html", "junit.xml", "comparison.json")
"""What ``report`` writes at the top of --out (removed first, so a refused report leaves none)."""


@cli.command("report")
@click.argument("results_dirs", nargs=-1, required=True, metavar="RESULTS_DIR...",
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where the merged junit.xml, summary.md and index.html go.  [default: the first RESULTS_DIR]")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PLAN_JSON",
              help="The plan job's matrix JSON: every planned entry is reported, one with no results as not_run "
                   "with its reason.")
@click.option("--pdf/--no-pdf", "pdf", default=True, show_default=True,
              help="Print each notebook's HTML to PDF with headless Chromium where no PDF is there yet.")
@click.option("--baseline", "baseline", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR",
              help="A previous run's results (as `gpu-runner baseline fetch` leaves them): say what newly fails, "
                   "what was fixed, and which notebooks got slower or hungrier, by the matrix's thresholds.")
@click.option("--history", "history_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE",
              help="A history.json (as `gpu-runner history` writes it): mark each notebook of this run it calls "
                   "flaky, slower or hungrier. One it cannot use is a warning, and the report goes on without.")
def report_cmd(results_dirs: tuple[Path, ...], out_dir: Path | None, plan_path: Path | None, pdf: bool,
               baseline: Path | None, history_path: Path | None) -> None:
    """Merge entry folders (every folder holding a results.json under each RESULTS_DIR) into one report.

    Writes per-entry junit.xml, HTML and PDF where missing, then the merged junit.xml,
    summary.md and index.html (with --out, into a copy of each entry folder made there: the
    RESULTS_DIRs are left as they are); with --baseline, what changed against it in each of them and
    in comparison.json (a baseline folder without results says so once, and the report goes
    on). Every results.json, and every try's record, is checked first: the results may come
    from untrusted code. The tries' records (gpu-runner-try.json, written by the stop step) and
    --plan say which entries did not run and why, and which results are a preempted try's; with
    --plan each downloaded artifact speaks only for its own entry and try. Exit 0 when everything
    passed, 1 when a notebook or check failed, else 3 when an entry was not run; 2 when there is
    nothing to report, a results.json or record is not valid (then no report is written at all),
    or --baseline is not a folder. With --history, each notebook that history.json calls flaky,
    slower or hungrier is marked in every report; a history that cannot be read or is not valid
    (it may come from another run's artifacts) is one warning, and the report goes on without marks.
    """
    from .report import PdfPrinter, artifact_layout, load_entry, load_record, read_plan, write_entry_reports
    from .report import write_run_reports
    from .results import find_entry_dirs, find_try_records

    if baseline is not None and not baseline.is_dir():
        raise ConfigError(f"--baseline {baseline}: no such folder")
    base_root = baseline.resolve() if baseline is not None else None
    plan = read_plan(plan_path) if plan_path is not None else None
    history = _read_history(history_path) if history_path is not None else None
    entry_dirs: list[Path] = []
    records: list[Path] = []
    for d in results_dirs:
        if not d.is_dir():
            if plan is not None:  # an entry folder that never came (nothing was downloaded)
                click.secho(f"gpu-runner: warning: {d}: no such folder", fg="yellow", err=True)
                continue
            raise ConfigError(f"{d}: no such folder")
        # a baseline folder inside a results folder is the baseline, not entries of this run
        entry_dirs += [e for e in find_entry_dirs(d) if e not in entry_dirs
                       and not (base_root is not None and e.resolve().is_relative_to(base_root))]
        records += [r for r in find_try_records(d) if r not in records
                    and not (base_root is not None and r.resolve().is_relative_to(base_root))]
    if not entry_dirs and not records and not plan:
        raise ConfigError("no results.json found under " + ", ".join(str(d) for d in results_dirs)
                          + "; give the folder `gpu-runner run --out` wrote, or the downloaded artifacts")
    if plan is not None:  # the report job's downloads: one folder per artifact, each for its own entry
        entry_dirs, records, ignored = artifact_layout(entry_dirs, records, roots=list(results_dirs), plan=plan)
        for why in ignored:
            click.secho(f"gpu-runner: warning: ignored {why}", fg="yellow", err=True)
    from .outdir import OutLock

    target = out_dir or results_dirs[0]
    lock = OutLock(target, "report").acquire()  # exit 2 now if it is not writable or a run writes there
    try:
        for name in REPORT_FILES:  # never leave an older (or planted) report behind
            stale = target / name
            if stale.is_file() or stale.is_symlink():
                stale.unlink()
        bad: list[str] = []

        def no_links(path: Path) -> None:  # no symbolic link from the results folder given down to the file
            from .report.untrusted import refuse_links

            root = next((r for r in results_dirs if path.is_relative_to(r)), None)
            try:
                refuse_links(path, root)
            except ValueError as e:
                raise ConfigError(str(e)) from None

        for d in entry_dirs:
            try:
                no_links(d / "results.json")
                load_entry(d)
            except ConfigError as e:
                bad.append(str(e))
        for f in records:
            try:
                no_links(f)
                load_record(f)
            except ConfigError as e:
                bad.append(str(e))
        if bad:
            more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
            raise ConfigError(f"{len(bad)} results.json or try record(s) refused, nothing reported: "
                              + " | ".join(bad[:3]) + more)
        if out_dir is not None:  # a report never changes its input: it works on a copy in --out
            entry_dirs = _copy_entries(entry_dirs, list(results_dirs), target)
        printer = PdfPrinter() if pdf and entry_dirs else None
        try:
            for d in entry_dirs:
                write_entry_reports(d, pdf=pdf, browser=printer, overwrite=False, dashboard=target / "index.html")
        finally:
            if printer is not None:
                printer.close()
        report = write_run_reports(entry_dirs, target, baseline=baseline, records=records, plan=plan,
                                   history=history)
    finally:
        lock.release()
    sys.exit(report.exit_code)


def _read_history(path: Path) -> Any:
    """The marks of ``--history``, or None (one warning) when the file cannot be used."""
    from .history import HistoryError, read_history

    try:
        return read_history(path)
    except HistoryError as e:
        _optional_failed(f"history not used: {e}; the report goes on without flaky or trend marks",
                         title="gpu-runner history")
        return None


def _copy_entries(entry_dirs: list[Path], roots: list[Path], target: Path) -> list[Path]:
    """Each entry folder copied into ``target`` (at its place under its RESULTS_DIR), for the
    reports to add their files to; an entry folder already in ``target`` stays where it is.
    Symbolic links are copied as links, never followed."""
    import shutil

    out = target.resolve()
    copies: list[Path] = []
    for d in entry_dirs:
        src = d.resolve()
        if src.is_relative_to(out):
            copies.append(d)
            continue
        root = next((r.resolve() for r in roots if src.is_relative_to(r.resolve())), src.parent)
        rel = src.relative_to(root) if src != root else Path(src.name)
        if len(roots) > 1 and src != root:  # each RESULTS_DIR's entries under its own name, told apart
            rel = Path(root.name) / rel
        dst = out / rel
        n = 1
        while dst.exists() and dst.resolve() in {c.resolve() for c in copies}:  # two inputs, one name
            n += 1
            dst = out / f"{rel}-{n}"
        if dst.exists() or dst.is_symlink():  # an earlier report's copy goes; anything else stays
            if dst.is_symlink() or not (dst / "results.json").is_file():
                raise ConfigError(f"--out {target}: {dst} is in the way of the copy of {d}")
            shutil.rmtree(dst)
        shutil.copytree(src, dst, symlinks=True)
        copies.append(dst)
    return copies


def _optional_failed(message: str, *, title: str) -> None:
    """What an --optional command says instead of failing: a warning (a ``::warning`` in GitHub Actions)."""
    from .github.workflow import command, in_github_actions

    click.echo(command("warning", message, title=title) if in_github_actions()
               else f"gpu-runner: warning: {message}", err=True)


@cli.group("baseline")
def baseline_group() -> None:
    """The previous run to compare with (`gpu-runner report --baseline`)."""


@baseline_group.command("fetch")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("baseline"),
              show_default=True, help="Where each entry's results.json and baseline.json go (made afresh).")
@click.option("--branch", default=None, metavar="NAME",
              help="The latest successful run on this branch.  [default: from the event: a pull request's base "
                   "branch; a push's previous commit]")
@click.option("--sha", default=None, metavar="SHA", help="The successful run of this commit.")
@click.option("--workflow", default=None, metavar="FILE|ID",
              help="Whose runs.  [default: the workflow of this run, GITHUB_RUN_ID]")
@click.option("--max-artifact-mib", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Leave out artifacts larger than this.")
@click.option("--optional", is_flag=True,
              help="A GitHub error (no token, no `actions: read`, an outage) is a warning and no baseline, exit 0.")
def baseline_fetch_cmd(out_dir: Path, branch: str | None, sha: str | None, workflow: str | None,
                       max_artifact_mib: int, optional: bool) -> None:
    """Download the results of the run to compare with: the latest successful run of this workflow
    on the pull request's base branch, or of the push's previous commit.

    Keeps each entry's results.json from the run's gpu-runner-* artifacts (nothing else, and only
    plain relative paths: artifacts are untrusted zip files) and writes OUT/baseline.json. No
    baseline (a first run, expired artifacts) is said once and exits 0; give OUT to `gpu-runner
    report --baseline`. Writes found, baseline-dir and run-id to $GITHUB_OUTPUT. Needs
    GITHUB_REPOSITORY and a token that may read Actions (GPU_RUNNER_GITHUB_TOKEN or GITHUB_TOKEN).
    """
    from .github import baseline as base
    from .github.workflow import set_outputs

    if branch and sha:
        raise ConfigError("give --branch or --sha, not both")
    notes: list[str] = []
    try:
        got = base.fetch(out_dir, workflow=workflow, branch=branch, sha=sha,
                         max_artifact_bytes=max_artifact_mib * 2**20, log=notes.append)
    except InfraError as e:
        if not optional:
            raise
        _optional_failed(f"no baseline: {e}; the report goes on without one", title="gpu-runner baseline")
        set_outputs({"found": "false", "baseline-dir": str(out_dir), "run-id": ""})
        return
    for note in notes:
        click.echo(f"gpu-runner: {note}", err=True)
    set_outputs({"found": "true" if got.found else "false", "baseline-dir": str(out_dir),
                 "run-id": got.run_id or ""})
    if got.found:
        click.echo(f"baseline: {got.description}, {len(got.entries)} entr{'y' if len(got.entries) == 1 else 'ies'} "
                   f"from {sum(1 for a in got.artifacts if a.entries)} artifact(s): {out_dir}/"
                   + (f" ({got.html_url})" if got.html_url else ""))
    else:
        click.echo(f"no baseline: {got.reason}; the report goes on without one")


@cli.command("comment")
@click.argument("summary", type=click.Path(path_type=Path), metavar="SUMMARY")
@click.option("--key", default="default", show_default=True,
              help="Tells this summary comment from others in the repository (one per matrix file, say).")
@click.option("--pr", "pr", type=click.IntRange(min=1), default=None, metavar="N",
              help="Comment on this pull request.  [default: the event's pull request]")
@click.option("--commit", "sha", default=None, metavar="SHA",
              help="Comment on this commit.  [default: GITHUB_SHA when the event is not a pull request]")
@click.option("--author", default=None, metavar="LOGIN",
              help="Whose comment is ours.  [default: the token's user, else github-actions[bot]]")
@click.option("--report-url", default=None, metavar="URL",
              help="Where the full report is, for a cut comment.  [default: this workflow run]")
@click.option("--optional", is_flag=True,
              help="A comment GitHub refuses (a fork's read-only token) is a warning, exit 0.")
def comment_cmd(summary: Path, key: str, pr: int | None, sha: str | None, author: str | None,
                report_url: str | None, optional: bool) -> None:
    """Post SUMMARY (summary.md, or a results folder holding one) as the sticky summary comment.

    On a pull request event it creates, or updates in place, the one comment that starts with
    <!-- gpu-runner:summary KEY --> and was written by us; on any other event (push, dispatch)
    it does the same on the commit. Bodies are cut below 65,536 characters. Writes comment-url
    to $GITHUB_OUTPUT. Needs GITHUB_REPOSITORY and a token (GPU_RUNNER_GITHUB_TOKEN or GITHUB_TOKEN).
    """
    from .github import comments
    from .github.client import client, repository
    from .github.workflow import set_outputs

    path = summary / "summary.md" if summary.is_dir() else summary
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; give the summary.md `gpu-runner report` wrote, or its folder")
    target = comments.target_from_event(pr=pr, sha=sha)
    if report_url is None and os.environ.get("GITHUB_RUN_ID") and os.environ.get("GITHUB_REPOSITORY"):
        server = os.environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        report_url = f"{server}/{os.environ['GITHUB_REPOSITORY']}/actions/runs/{os.environ['GITHUB_RUN_ID']}"
    body = comments.build_body(path.read_text(encoding="utf-8"), key, report_url=report_url)
    try:
        posted = comments.Comments(client(), repository(), author=author).upsert(target, body)
    except InfraError as e:
        if not optional:
            raise
        _optional_failed(str(e), title="summary comment not posted")
        return
    set_outputs({"comment-url": posted.url})
    click.echo(f"{posted.action} the summary comment on {target.describe()}: {posted.url}")


class _DurationType(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        from .config import parse_duration

        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


class _HoldType(_DurationType):
    """A debug hold: a duration, or 0 / off / none for no hold (a workflow input may turn it off)."""

    name = "DURATION|0"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, str) and value.strip().lower() in ("0", "off", "none", "no", "false"):
            return 0.0
        seconds = super().convert(value, param, ctx)
        from .config import MAX_DEBUG_HOLD_S, MIN_DEBUG_HOLD_S

        if not MIN_DEBUG_HOLD_S <= seconds <= MAX_DEBUG_HOLD_S:
            self.fail(f"a debug hold is between 1m and 1d (or 0 for none), got {seconds:g} seconds", param, ctx)
        return seconds


_runner_group_option = click.option(
    "--runner-group-id", type=click.IntRange(min=1), default=1, show_default=True, envvar="GPU_RUNNER_RUNNER_GROUP_ID",
    help="Runner group of the just-in-time runner: any but the default (1) makes it an organisation runner in that "
         "group, which must be limited to selected workflows that include this one (start checks; stop and janitor "
         "look for registrations there too).  [env: GPU_RUNNER_RUNNER_GROUP_ID]")

_debug_hold_option = click.option(
    "--debug-hold", "debug_hold_s", type=_HoldType(), default=None, envvar="GPU_RUNNER_DEBUG_HOLD",
    help="Keep a failed entry's VM this long after its job, for a look (0: never); overrides the matrix's "
         "debug_hold for this run.  [env: GPU_RUNNER_DEBUG_HOLD]")


def _runner_logger() -> Any:
    from .log import Logger

    return Logger.for_environment()


def _on_sigterm_raise_interrupt() -> None:
    """GitHub cancels a step with SIGINT, then SIGTERM: both unwind through start's cleanup."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@cli.command("start")
@click.option("--matrix", "matrix_path", required=True, type=click.Path(path_type=Path), metavar="FILE",
              help="Matrix file (YAML).")
@click.option("--entry", "entry_id", required=True, metavar="ID", shell_complete=_matrix_names("entry"),
              help="The entry's id (gpu-runner plan lists them).")
@click.option("--retry", "retry", type=click.IntRange(min=0, max=MAX_RETRY), default=0, show_default=True,
              help="Which try: 0 the first; 1, 2 after a preemption (its own VM and runner, on STANDARD when the "
                   "machine allows it).")
@click.option("--project", default=None, metavar="PROJECT",
              help="GCP project.  [default: the matrix file's gce.project, else GOOGLE_CLOUD_PROJECT]")
@click.option("--timeout", "timeout_s", type=_DurationType(), default="10m", show_default=True,
              help="How long to wait for GitHub to list the runner online once the VM is created.")
@click.option("--poll", "poll_s", type=_DurationType(), default="5s", show_default=True,
              help="How often to look at the runner, the VM and its serial console while waiting.")
@_runner_group_option
@click.option("--runner-version", default=None, metavar="VERSION", envvar="GPU_RUNNER_RUNNER_VERSION",
              help="Pin the actions/runner release (at least 2.329.0; with --runner-sha256) instead of the current "
                   "one, which start asks GitHub for; wins over the matrix's gce.runner.  "
                   "[env: GPU_RUNNER_RUNNER_VERSION]")
@click.option("--runner-sha256", default=None, metavar="HEX", envvar="GPU_RUNNER_RUNNER_SHA256",
              help="sha256 of that release's linux-x64 package.  [env: GPU_RUNNER_RUNNER_SHA256]")
@_debug_hold_option
def start_cmd(matrix_path: Path, entry_id: str, retry: int, project: str | None, timeout_s: float, poll_s: float,
              runner_group_id: int, runner_version: str | None, runner_sha256: str | None,
              debug_hold_s: float | None) -> None:
    """Create the entry's GPU VM with a just-in-time GitHub runner, and wait until it is online.

    Walks the capacity ladder (the machine's zones in order, SPOT then STANDARD where the
    matrix allows), and on any failure or cancellation deletes the VM and the registration
    it made (exit 3). Writes label, instance, zone and provisioning-model to $GITHUB_OUTPUT,
    and on failure error (the reason, one line, for the report).
    Needs GITHUB_REPOSITORY and a token (GPU_RUNNER_GITHUB_TOKEN or GITHUB_TOKEN).
    """
    from .cloud import lifecycle
    from .github.workflow import set_outputs
    from .plan import find_entry

    from .config import load
    from .github.releases import pin_from

    try:
        pin = pin_from(runner_version, runner_sha256, what="--runner-version/--runner-sha256")
        loaded = load(matrix_path)
        gce_settings = loaded.model.gce
        if pin is None and gce_settings is not None and gce_settings.runner is not None:
            pin = pin_from(gce_settings.runner.version, gce_settings.runner.sha256, what=f"{matrix_path}: gce.runner")
        entry = find_entry(loaded, entry_id, retry=retry)
        logger = _runner_logger()
        if entry.gce is not None and debug_hold_s is not None:
            entry.gce.debug_hold_s = int(debug_hold_s)
        if entry.is_local or entry.gce is None:
            logger.info(f"{entry.id} runs on a local machine ({entry.runs_on}): no VM to start")
            set_outputs({"label": entry.runs_on, "instance": "", "zone": "", "provisioning-model": ""})
            return
        ctx = lifecycle.make_context(lifecycle.project_for(entry, project), log=logger.info, mask=logger.mask,
                                     runner_group_id=runner_group_id)
        opts = lifecycle.StartOptions(online_timeout_s=timeout_s, poll_s=poll_s, runner_group_id=runner_group_id,
                                      runner=pin)
        if retry:
            opts.provisioning_models = lifecycle.retry_models(entry.gce.provisioning_models)
            logger.info(f"retry {retry} of {entry.id} after a preemption: {' then '.join(opts.provisioning_models)}")
        _on_sigterm_raise_interrupt()
        pricing = _Pricing(entry, logger)  # asks the Billing Catalog while the VM boots
        started = lifecycle.start(ctx, entry, opts)
    except GpuRunnerError as e:
        set_outputs({"error": first_line(e)})
        raise
    except KeyboardInterrupt:
        set_outputs({"error": "cancelled"})
        raise
    outputs = started.outputs()
    price = pricing.price(started.zone, started.provisioning_model)
    if price is not None:
        outputs["price"] = json.dumps(price.to_dict(), separators=(",", ":"))
    set_outputs(outputs)
    logger.info(f"started the runner of {entry.id}: its VM in {started.zone} ({started.provisioning_model}), "
                "runner online (its label is in the step's outputs, for the run job)")


class _Pricing:
    """The price per hour of the VM ``start`` makes: the machine's price_per_hour, else the Billing
    Catalog (asked in the background while the VM is created), else the table. Never fails a start."""

    def __init__(self, entry: Any, logger: Any) -> None:
        import threading

        from .cost import PriceBook, Shape

        self.entry, self.logger = entry, logger
        self.book = PriceBook(log=logger.info)
        regions = [Shape.of(entry.gce, z).region for z in entry.gce.zones]
        self.thread = threading.Thread(target=self._prepare, args=(regions,), daemon=True)
        self.thread.start()

    def _prepare(self, regions: list[str | None]) -> None:
        try:
            self.book.prepare(regions)
        except Exception as e:  # noqa: BLE001 - a price is never worth a failed start
            self.logger.info(f"prices: could not ask the Billing Catalog: {e}")

    def price(self, zone: str, model: str) -> Any:
        from .cost import Shape, money

        self.thread.join(timeout=90)
        try:
            p = self.book.price(Shape.of(self.entry.gce, zone), model, self.entry.gce.price_per_hour)
        except Exception as e:  # noqa: BLE001
            self.logger.info(f"prices: no price for this VM: {e}")
            return None
        where = p.origin() if p.usd_per_hour is not None else (p.note or "no price known")
        self.logger.info(f"price of this VM: {money(p.usd_per_hour, per_hour=True)} ({model}, {where}; an estimate)")
        return p


def _start_outputs(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    import json

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="--start-outputs") from None
    if not isinstance(data, dict):
        raise click.BadParameter("expected a JSON object (the start job's outputs)", param_hint="--start-outputs")
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _started_label(text: str) -> str:
    """The label start wrote (its output), checked: a name gpu-runner made, nothing else."""
    from .config import GCE_NAME_RE
    from .plan import LABEL_PREFIX

    if not GCE_NAME_RE.match(text) or not text.startswith(f"{LABEL_PREFIX}-"):
        raise click.BadParameter(f"label {text!r} is not one start makes", param_hint="--start-outputs")
    return text


_JOB_RESULTS = click.Choice(["success", "failure", "cancelled", "skipped", ""])


def _vm_use(entry: Any, retry: int, stopped: Any, started: dict[str, Any], logger: Any) -> Any:
    """This try's VM as stop saw it, priced as start priced it (else as stop can), and said in the log."""
    from .cost import PriceBook, Shape, money
    from .cost.usage import price_from_dict, vm_use
    from .report.cost import lifetime_words, source_words

    seen = stopped.vm
    if seen is None:
        return None
    zone = seen.zone or started.get("zone") or None
    model = seen.provisioning_model or started.get("provisioning-model") or None
    try:
        price = price_from_dict(json.loads(started["price"])) if started.get("price") else None
    except ValueError:
        price = None
    if price is None and model and zone:
        price = PriceBook(log=logger.info).price(Shape.of(entry.gce, zone), model, entry.gce.price_per_hour)
    if price is not None and model and price.provisioning_model != model:
        price = None  # a price for another model than the VM got is no price for it
    held = stopped.held.hold_until if stopped.held is not None else None
    from .timestamps import rfc3339

    use = vm_use(name=seen.name, spec=entry.gce, zone=zone, provisioning_model=model, created_at=seen.created_at,
                 deleted_at=seen.deleted_at, last_stop_at=seen.last_stop_at, timed_by=seen.timed_by, price=price,
                 retry=retry, held_until=rfc3339(held) if held is not None else None, note=seen.note)
    logger.info(f"VM {use.name} lived {lifetime_words(use)}: {money(use.usd)} at {money(use.usd_per_hour, per_hour=True)}"
                f" ({use.provisioning_model or '?'}; {source_words(use)}; an estimate"
                f"{', counted to the end of its hold' if held is not None else ''})")
    return use


@cli.command("stop")
@click.option("--matrix", "matrix_path", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Matrix file (YAML), with --entry.")
@click.option("--entry", "entry_id", default=None, metavar="ID", shell_complete=_matrix_names("entry"),
              help="The entry's id.")
@click.option("--retry", "retry", type=click.IntRange(min=0, max=MAX_RETRY), default=0, show_default=True,
              help="With --entry: which try to stop (0 the first).")
@click.option("--label", default=None, metavar="LABEL", help="Or the runner label / VM name itself.")
@click.option("--project", default=None, metavar="PROJECT",
              help="GCP project.  [default: the matrix file's gce.project, else GOOGLE_CLOUD_PROJECT]")
@click.option("--record", "record_dir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Write DIR/gpu-runner-try.json: how this try went, for `gpu-runner report` (with --entry).")
@click.option("--start-result", type=_JOB_RESULTS, default="", help="The start job's result (for --record).")
@click.option("--start-outputs", default=None, metavar="JSON",
              help="The start job's outputs as JSON (label, zone, provisioning-model, error), for --record.")
@click.option("--run-result", type=_JOB_RESULTS, default="",
              help="The run job's result: for --record, and a failure holds the VM for a look when the entry has a "
                   "debug hold.")
@_debug_hold_option
@click.option("--force", is_flag=True, help="Delete a VM held for a look now, before its hold ends.")
@_runner_group_option
def stop_cmd(matrix_path: Path | None, entry_id: str | None, retry: int, label: str | None, project: str | None,
             record_dir: Path | None, start_result: str, start_outputs: str | None, run_result: str,
             debug_hold_s: float | None, force: bool, runner_group_id: int) -> None:
    """Delete the entry's VM (in whatever zone it is) and its runner registration.

    Idempotent: succeeds when both are already gone, and after a start that failed or was
    cancelled half-way. Says whether Compute Engine preempted the VM, and writes preempted=true|false
    and retry=true|false (another try of the entry follows: it was preempted before its run ended
    and the machine's retries.preempted allows one more) to $GITHUB_OUTPUT. A failed entry
    (--run-result failure) with a debug hold keeps its VM for that long instead, and the job summary
    says how to reach it; a VM held for a look stays until its hold ends (--force deletes it now).
    Writes held=true|false to $GITHUB_OUTPUT.
    """
    from .cloud import lifecycle
    from .github.workflow import append_step_summary, set_outputs
    from .plan import find_entry, label_is_for
    from .results import TryRecord

    if label is None and (matrix_path is None or entry_id is None):
        raise ConfigError("stop needs --matrix FILE --entry ID, or --label LABEL")
    if record_dir is not None and entry_id is None:
        raise ConfigError("--record needs --matrix FILE --entry ID")
    started = _start_outputs(start_outputs)
    entry = (find_entry(matrix_path, entry_id, retry=retry)
             if matrix_path is not None and entry_id is not None else None)
    if entry is not None and not entry.is_local and label is None and started.get("label"):
        # the VM is the one start made, in whichever attempt of the run it ran (a re-run keeps the
        # start jobs it does not run again, and their labels)
        label = _started_label(started["label"])
        entry.label = label
    logger = _runner_logger()
    started_label = started.get("label") or ""
    if entry is not None and started_label and not label_is_for(entry, started_label):
        raise click.BadParameter(f"label {started_label!r} is not one start makes for entry {entry.id} (try "
                                 f"{retry + 1})", param_hint="--start-outputs")
    record = TryRecord(entry_id=entry.id, retry=retry, label=(started_label or entry.label) if not entry.is_local else None,
                       start=start_result, run=run_result, error=started.get("error") or None,
                       zone=started.get("zone") or None,
                       provisioning_model=started.get("provisioning-model") or None) if entry is not None else None
    try:
        if entry is not None and (entry.is_local or entry.gce is None):
            logger.info(f"{entry.id} runs on a local machine: nothing to stop")
            return
        hold = debug_hold_s if debug_hold_s is not None else (entry.gce.debug_hold_s if entry and entry.gce else 0)
        ctx = lifecycle.make_context(lifecycle.project_for(entry, project), log=logger.info, mask=logger.mask,
                                     runner_group_id=runner_group_id)
        if label:
            names = [label]
        elif started_label:
            names = [started_label]
        else:  # start said nothing (cancelled, or its job died): what it made is found by name
            names = lifecycle.labels_of(ctx, entry) or [entry.label]  # type: ignore[union-attr]
        for extra in names[1:]:
            lifecycle.stop(ctx, extra, force=True)
        name = names[0]
        stopped = lifecycle.stop(ctx, name, zones=entry.gce.zones if entry is not None and entry.gce else None,
                                 hold_s=hold if run_result == "failure" else None, force=force,
                                 run_result=run_result or None)
        if stopped.held is not None:
            append_step_summary(lifecycle.hold_instructions(stopped.held, project=ctx.project, repo=ctx.repo,
                                                            entry_id=entry.id if entry else name))
        outputs: dict[str, str] = {"held": "true" if stopped.held is not None else "false",
                                   "preempted": "true" if stopped.preempted else "false"}
        if record is not None and entry is not None:
            record.vm = _vm_use(entry, retry, stopped, started, logger)
            record.preempted = stopped.preempted
            if stopped.hijack:
                record.error = f"hijack: {stopped.hijack}"
                logger.error(f"{entry.id}: hijack: {stopped.hijack}")
            record.will_retry = stopped.preempted and run_result != "success" and retry < entry.retries_preempted
            if stopped.preempted:
                if record.will_retry:
                    on = lifecycle.retry_models(entry.gce.provisioning_models)[0]  # type: ignore[union-attr]
                    logger.info(f"preempted=true: retry {retry + 1} of {entry.retries_preempted} follows, on {on}")
                else:
                    logger.info(f"preempted=true: no retry left ({entry.retries_preempted} allowed) "
                                if run_result != "success" else "preempted=true, after its run had ended: no retry")
            else:
                logger.info("preempted=false")
            outputs["retry"] = "true" if record.will_retry else "false"
        else:
            logger.info(f"preempted={outputs['preempted']}")
        set_outputs(outputs)
    finally:
        if record is not None and record_dir is not None:
            path = record.write(record_dir)
            logger.info(f"recorded try {retry + 1} of {record.entry_id} in {path}")


@cli.command("revoke-approval")
@click.argument("label")
def revoke_approval_cmd(label: str) -> None:
    """On new commits to a pull request from a fork (a pull_request_target synchronize or reopened
    event), remove LABEL, the approval: it was given to older code. Elsewhere it does nothing.

    Needs GITHUB_REPOSITORY, the event (GITHUB_EVENT_NAME, GITHUB_EVENT_PATH) and a token that may
    write pull requests (GPU_RUNNER_GITHUB_TOKEN or GITHUB_TOKEN).
    """
    from .github.approval import is_fork
    from .github.comments import read_event

    event_name, event = os.environ.get("GITHUB_EVENT_NAME", ""), read_event()
    pull = event.get("pull_request")
    action = str(event.get("action") or "")
    if event_name != "pull_request_target" or not isinstance(pull, dict) or not is_fork(pull) or action not in (
            "synchronize", "reopened"):
        click.echo(f"nothing to revoke: not new code for a pull request from a fork ({event_name} {action})")
        return
    number = pull.get("number") or event.get("number")
    if not isinstance(number, int):
        raise ConfigError("revoke-approval: the event names no pull request number")
    from .github.approval import Approvals
    from .github.client import client, repository

    approvals = Approvals(client(), repository())
    # the labels as they are now: the event's list is the one it was sent with, and a label applied
    # since (a maintainer's, just before this push landed) approves code it never saw
    if label not in approvals.labels(number):
        click.echo(f"pull request #{number} does not carry the label {label!r}: nothing to revoke")
        return
    removed = approvals.revoke(number, label)
    head = str((pull.get("head") or {}).get("sha") or "")[:12]
    click.echo(f"{'removed' if removed else 'already gone:'} the label {label!r} from pull request #{number}: "
               f"commit {head} ({action}) is not approved; a user with write access reviews it and applies the "
               "label again")


@cli.command("janitor")
@click.option("--max-age", "max_age_s", type=_DurationType(), default="3h", show_default=True,
              help="The lifetime of a VM that has no maxRunDuration, for the age rule.")
@click.option("--margin", "margin_s", type=_DurationType(), default="30m", show_default=True,
              help="How long past its lifetime a VM whose run GitHub cannot tell about may live.")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@click.option("--project", default=None, metavar="PROJECT", help="GCP project.  [default: GOOGLE_CLOUD_PROJECT]")
@_runner_group_option
def janitor_cmd(max_age_s: float, margin_s: float, dry_run: bool, project: str | None, runner_group_id: int) -> None:
    """Delete what this repository's runs left behind, and nothing else.

    VMs labelled gpu-runner=1 and gh-repo-id=<this repository's id, GITHUB_REPOSITORY_ID>, named
    gpu-runner-<run>-<attempt>-<nonce>-<entry>:
    deleted once GitHub says that attempt of their workflow run is over, never while it is in
    progress; when GitHub cannot tell, once older than their own maxRunDuration (else --max-age)
    plus --margin. Runner registrations: offline ones of that name pattern, carrying their name as
    their label, with no VM left, whose run is over; with --runner-group-id, the organisation's
    registrations in that group too, under the same rules (only this repository's runs)."""
    from .cloud import lifecycle

    logger = _runner_logger()
    ctx = lifecycle.make_context(lifecycle.project_for(None, project), log=logger.info, mask=logger.mask,
                                 runner_group_id=runner_group_id)
    swept = lifecycle.janitor(ctx, max_age_s=max_age_s, margin_s=margin_s, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    logger.info(f"janitor: {verb} {len(swept.vms)} VM(s) and {len(swept.runners)} registration(s); "
                f"kept {len(swept.kept)} VM(s); left alone {len(swept.left_alone)} VM(s) and registration(s) "
                f"that are not this repository's")


# -- fetch, runs, history: a workflow run's artifacts, cached, and the view across runs ----------------
def _fetch_log(msg: str) -> None:
    """Progress and warnings on stderr; in GitHub Actions never read as a workflow command (artifact
    names and refusal reasons come from another run)."""
    from .github.workflow import safe_log

    click.echo(safe_log(f"gpu-runner: {msg}"), err=True)


def _session_or_offline(offline: bool, repo_name: str) -> Any:
    """A GitHub session, or None (the cache alone) with --offline or when no token can be had."""
    from .github import fetch as f

    if offline:
        return None
    try:
        return f.connect(repo_name, log=_fetch_log)
    except ConfigError as e:
        _fetch_log(f"{e}; using what is cached")
        return None


@cli.command("fetch")
@click.argument("run_ref", required=False, metavar="[RUN]")
@click.option("--workflow", default=None, metavar="FILE|ID",
              help="Without RUN: whose latest run.  [default: the workflow that calls gpu-notebooks.yml]")
@click.option("--branch", default=None, metavar="NAME", help="Without RUN: the latest run on this branch.  "
              "[default: the current git branch]")
@click.option("--max-artifact-mib", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Leave out artifacts larger than this.")
def fetch_cmd(run_ref: str | None, workflow: str | None, branch: str | None, max_artifact_mib: int) -> None:
    """Download a workflow run's gpu-runner artifacts, check them, merge them into one results folder,
    make its dashboard again and print the dashboard's path.

    RUN is a run id or its address (https://github.com/OWNER/REPO/actions/runs/N[/attempts/K]);
    without it, the latest finished run on the current branch. Downloads go to the cache
    ($GPU_RUNNER_CACHE_DIR, else ~/.cache/gpu-runner/runs); what is there already (same artifact id,
    size and digest) is not downloaded again, so an interrupted fetch goes on where it stopped. Needs
    a token that may read Actions: GPU_RUNNER_GITHUB_TOKEN, GITHUB_TOKEN, or `gh auth token`. Exit 0
    when fetched, 2 for a bad RUN or a refused artifact (the rest is still merged), 3 when GitHub failed.
    """
    from .github import fetch as f

    ref = f.parse_run_ref(run_ref) if run_ref else None
    repo_name = f.repository(os.environ, ref)
    session = f.connect(repo_name, log=_fetch_log)
    if ref is None:
        where = branch or f.current_branch()
        if not where:
            raise ConfigError("which run? give RUN, or --branch (this is no git checkout on a branch)")
        runs = f.list_runs(session, workflow=workflow, branch=where, limit=1)
        if not runs:
            raise ConfigError(f"no finished run on the branch '{where}'")
        ref = f.RunRef(runs[0].id)
        _fetch_log(f"the latest run on {where}: {runs[0].html_url}")
    got = f.fetch_run(session, ref.run_id, ref.attempt, max_artifact_bytes=max_artifact_mib * 2**20,
                      progress=_fetch_log)
    click.echo(str(got.dashboard))
    if got.refused:
        raise ConfigError(f"{len(got.refused)} artifact(s) refused and left out: " + " | ".join(got.refused[:3]))


def _fmt_duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


@cli.command("runs")
@click.option("--branch", default=None, metavar="NAME", help="Only runs on this branch.  [default: every branch]")
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=20, show_default=True)
@click.option("--workflow", default=None, metavar="FILE|ID",
              help="Whose runs.  [default: the workflow that calls gpu-notebooks.yml]")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--offline", is_flag=True, help="Only what is cached; no GitHub API call.")
def runs_cmd(branch: str | None, limit: int, workflow: str | None, fmt: str, offline: bool) -> None:
    """Past runs, newest first: the verdict of each entry (passed, failed, not run), counts, duration
    and cost. Reads the cache, fetching the runs it lacks (without a token: the cache alone)."""
    from .github import fetch as f
    from .history import run_summary

    repo_name = f.repository(os.environ)
    session = _session_or_offline(offline, repo_name)
    docs = f.gather(session, f.repo_cache(os.environ, repo_name), workflow=workflow, branch=branch, limit=limit,
                    log=_fetch_log)
    rows = [run_summary(d) for d in docs]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no runs" + (" cached" if session is None else ""))
        return
    head = ("RUN", "CREATED", "BRANCH", "COMMIT", "ENTRIES", "NOTEBOOKS", "DURATION", "COST", "NOT PASSED")
    table = [head]
    for r in rows:
        ec, nc = r["entry_counts"], r["notebooks"]
        bad = [f"{eid} ({v})" for eid, v in r["entries"].items() if v != "passed"]
        table.append((f"#{r['run_number']}" + (f".{r['attempt']}" if (r["attempt"] or 1) > 1 else ""),
                      (r["created_at"] or "")[:16].replace("T", " "), r["head_branch"] or "",
                      (r["head_sha"] or "")[:7],
                      f"{ec['passed']} passed, {ec['failed']} failed, {ec['not run']} not run"
                      + (f", {ec['unknown']} unknown" if ec["unknown"] else ""),
                      f"{nc['passed']}/{nc['total']}", _fmt_duration(r["duration_s"]),
                      "-" if r["cost_usd"] is None else f"${r['cost_usd']:.2f}", ", ".join(bad) or "-"))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    for row in table:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


@cli.command("history")
@click.option("--runs", "limit", type=click.IntRange(min=1, max=1000), default=20, show_default=True,
              help="How many of the newest runs.")
@click.option("--branch", default=None, metavar="NAME", help="Only runs on this branch.  [default: every branch]")
@click.option("--workflow", default=None, metavar="FILE|ID",
              help="Whose runs.  [default: the workflow that calls gpu-notebooks.yml]")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where history.html and history.json go.  [default: the repository's folder in the cache]")
@click.option("--threshold", type=click.FloatRange(min=0, min_open=True), default=0.2, show_default=True,
              help="A trend from this fraction up is marked (0.2: 20 % slower or more memory).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--offline", is_flag=True, help="Only what is cached; no GitHub API call.")
@click.option("--optional", is_flag=True,
              help="No history (no runs, no token, a GitHub error) is one notice and exit 0, with no history.json "
                   "written: the report job goes on without marks.")
def history_cmd(limit: int, branch: str | None, workflow: str | None, out_dir: Path | None, threshold: float,
                fmt: str, offline: bool, optional: bool) -> None:
    """Across the newest runs, per notebook and machine: pass rate, flaky (both outcomes on one commit,
    or alternating), wall-time and GPU-memory trends. Writes history.html (linked from each run's
    dashboard) and history.json, and prints the flagged cells (or the JSON). In GitHub Actions,
    without --workflow, the runs are those of the workflow of the run it is part of (GITHUB_RUN_ID)."""
    from .errors import InfraError
    from .github.workflow import command, in_github_actions, safe_log

    try:
        hist, page = _history(limit, branch, workflow, out_dir, threshold, offline)
    except (ConfigError, InfraError) as e:
        if not optional:
            raise
        message = f"no history: {first_line(e)}; the report goes on without flaky or trend marks"
        click.echo(command("notice", message, title="gpu-runner history") if in_github_actions()
                   else f"gpu-runner: {message}", err=True)
        return
    if fmt == "json":  # the names in it come from results of code under test: never a workflow command
        click.echo(safe_log(json.dumps(hist, indent=2)))
        return
    flagged = [c for c in hist["cells"] if c["marks"]]
    lines = [f"{len(hist['runs'])} runs, {len(hist['cells'])} notebook x machine cells, {len(flagged)} flagged"]
    for c in flagged:
        rate = "-" if c["pass_rate"] is None else f"{c['pass_rate'] * 100:.0f}%"
        lines.append(f"  {c['notebook']} on {c['machine']}: {', '.join(c['marks'])} (pass rate {rate}"
                     + (f"; {c['flaky_why']}" if c["flaky_why"] else "") + ")")
    lines.append(str(page))
    click.echo(safe_log("\n".join(lines)))


def _history(limit: int, branch: str | None, workflow: str | None, out_dir: Path | None, threshold: float,
             offline: bool) -> tuple[dict[str, Any], Path]:
    """history.json and history.html written; (the history, the page)."""
    from .github import fetch as f
    from .history import compute
    from .report.history import HISTORY_JSON, link_from_dashboard, write_history_page
    from .results import write_json_atomic

    repo_name = f.repository(os.environ)
    session = _session_or_offline(offline, repo_name)
    cache = f.repo_cache(os.environ, repo_name)
    if workflow is None and session is not None and os.environ.get("GITHUB_RUN_ID", "").isdigit():
        from .github.workflow import in_github_actions

        if in_github_actions():  # the report job has no checkout of the caller's workflows: ask the run
            from github import GithubException

            from .errors import InfraError

            try:
                workflow = str(session.repo.get_workflow_run(int(os.environ["GITHUB_RUN_ID"])).workflow_id)
            except GithubException as e:
                raise InfraError(f"cannot read this workflow run ({e.status}): the token needs `actions: read`"
                                 ) from None
    docs = f.gather(session, cache, workflow=workflow, branch=branch, limit=limit, log=_fetch_log)
    if not docs and session is not None:
        raise ConfigError(f"no finished run of the workflow in {repo_name}" + (f" on '{branch}'" if branch else "")
                          + " yet")
    if not docs:
        raise ConfigError(f"no runs of {repo_name} cached" + (" (--offline)" if offline else "")
                          + "; run `gpu-runner fetch` or `gpu-runner runs` first")
    hist = compute(docs, threshold=threshold)
    out = out_dir or cache
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / HISTORY_JSON, hist)
    page = write_history_page(hist, out)
    for d in docs:
        if d.get("dashboard") and d.get("folder"):
            link_from_dashboard(Path(d["folder"]) / d["dashboard"], page)
    return hist, page


@cli.command("doctor")
@click.option("--matrix", "matrix_path", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Check every GCE machine of this matrix file (without: credentials, permissions, the default "
                   "image and GitHub only).")
@click.option("--project", default=None, metavar="PROJECT",
              help="GCP project.  [default: the matrix file's gce.project, else GOOGLE_CLOUD_PROJECT]")
@click.option("--max-parallel", type=click.IntRange(min=1), default=8, show_default=True,
              envvar="GPU_RUNNER_MAX_PARALLEL",
              help="Entries that may run at once (the workflow's max-parallel): the GPU quota they need.  "
                   "[env: GPU_RUNNER_MAX_PARALLEL]")
@click.option("--approval-label", default="gpu-runner:approved", show_default=True, metavar="LABEL",
              help="The label that approves a pull request from a fork; it must exist.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table: one line per check (✓ / ✗ / ?) with the fix under each that fails; json: for machines.")
@click.option("--allow-unknown", is_flag=True,
              help="What could not be checked (?) does not fail the command (exit 0 unless something is ✗).")
@_runner_group_option
def doctor_cmd(matrix_path: Path | None, project: str | None, max_parallel: int, approval_label: str, fmt: str,
               allow_unknown: bool, runner_group_id: int) -> None:
    """Prove the GCP project and the GitHub repository are ready, before the first GPU minute.

    Asks, read-only: the credentials and the launcher's permissions; for each GCE machine of the
    matrix whether its zones offer its machine type and GPUs, whether its boot image family
    resolves and is current, the limits of its machine family, and a way out to GitHub (an
    external IP or Cloud NAT); the GPU quota per region (on-demand and preemptible) and in all
    regions against what --max-parallel entries hold at once; on GitHub, that the token
    administers runners, the runner release resolves, fork pull requests wait for approval, the
    default workflow token only reads and the approval label exists, and with --runner-group-id that
    the group is limited to selected workflows including this one and lets the repository in. Exit 0 when all hold, 1 when
    something does not (✗), 3 when something could not be checked (?) and nothing failed, 2 on
    a usage or matrix error. In GitHub Actions the table also goes to the job summary.
    """
    from .doctor import diagnose
    from .github.workflow import append_step_summary, safe_log

    report = diagnose(matrix_path, project=project, max_parallel=max_parallel, approval_label=approval_label,
                      runner_group_id=runner_group_id)
    if fmt == "json":
        click.echo(json.dumps(report.to_json(allow_unknown=allow_unknown), indent=2, ensure_ascii=False))
    else:
        click.echo(safe_log(report.table()))
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        append_step_summary(report.markdown())
    sys.exit(report.exit_code(allow_unknown=allow_unknown))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and map every error to its exit code."""
    try:
        cli.main(args=argv, prog_name="gpu-runner", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:  # usage errors
        e.show()
        sys.exit(EXIT_USAGE)
    except GpuRunnerError as e:
        from .github.workflow import safe_log

        click.secho(safe_log(f"gpu-runner: error: {e}"), fg="red", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    sys.exit(EXIT_OK)


__all__ = ["cli", "main", "EXIT_FAILED", "EXIT_INFRA"]

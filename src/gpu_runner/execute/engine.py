"""The local executor: notebooks of one or more entries, in parallel, with real kernels.

Scheduling: ``jobs`` notebooks execute at once; up to ``jobs`` more have their kernel
started ahead while they wait, so a notebook that gets an execution slot finds its
kernel ready. Writing outputs and shutting kernels down happen after the slot is
released, off the critical path.

Every way out of a notebook (pass, cell error, timeout, kernel death, SIGINT/SIGTERM
of gpu-runner) writes the executed notebook with the outputs it got and kills the
kernel's process group.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import copy
import os
import platform
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from .. import __version__, phases
from ..checks import run_entry_checks
from ..errors import EXIT_FAILED, EXIT_OK
from ..files import write_text_atomic
from ..log import Logger
from ..outdir import EntryFolder, clean_staging
from ..results import (
    CellResult,
    EntryResult,
    Failure,
    NotebookResult,
    RerunResult,
    timeline_from_dict,
    write_json_atomic,
)
from . import notebook as nbtools
from . import runtime as runtimes
from .kernels import REGISTRY, ForkServers, Kernel, KernelSpecs, KernelStartError, signal_name, start_kernel
from .metrics import Sampler, Track, gpu_presence
from .spec import EntryRun, NotebookSpec
from .stop import WRITE_LOCK, Stop
from .sweep import Sweeper

ARTIFACTS_ENV = "GPU_RUNNER_ARTIFACTS_DIR"
KERNEL_LOG = "kernel.log"  # what the kernel process itself printed; removed when empty
INTERRUPT_GRACE_S = 5.0
"""How long a timed-out cell gets to answer the interrupt before its kernel is killed."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class _Client(NotebookClient):
    """nbclient's client, keeping a handle on the task that collects a cell's outputs,
    so that after a timeout we can let it finish (collecting the interrupt's traceback)
    or cancel it."""

    output_task: asyncio.Task[Any] | None = None
    current_index: int | None = None
    cell_limit_s: float | None = None
    caps: nbtools.StreamCap | None = None
    """Bounds the memory and disk a cell's streams cost while they stream (2 GB of print...)."""
    live: Any = None
    """``live(stream, text)``: a cell's stream text, as it arrives, for the console (the notebook
    keeps it as it would anyway)."""

    def output(self, outs: Any, msg: dict[str, Any], display_id: Any, cell_index: int) -> Any:  # type: ignore[override]
        if self.live is not None and msg.get("msg_type") == "stream" and cell_index == self.current_index:
            content = msg.get("content") or {}
            text = content.get("text", "")
            self.live(str(content.get("name", "stdout")), text if isinstance(text, str) else "".join(text))
        if (self.caps is not None and msg.get("msg_type") == "stream"
                and not self.output_hook_stack[msg["parent_header"].get("msg_id")]
                and self.caps.take(outs, msg, cell_index)):
            return None
        return super().output(outs, msg, display_id, cell_index)

    def _get_timeout(self, cell: Any) -> float | None:  # type: ignore[override]
        # nbclient's own timeout is whole seconds; the notebook's deadline needs the fraction
        return self.cell_limit_s

    async def _async_poll_output_msg(self, parent_msg_id: str, cell: Any, cell_index: int) -> None:
        self.output_task = asyncio.current_task()
        return await super()._async_poll_output_msg(parent_msg_id, cell, cell_index)


@dataclass
class RunOutcome:
    results: list[EntryResult]
    entry_dirs: list[Path]
    interrupted_by: str | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted_by:  # the shell's convention: 128 + signal number
            return 128 + int(getattr(signal, self.interrupted_by, signal.SIGTERM))
        failed = any(n.status == "failed" for r in self.results for n in [*r.notebooks, *r.checks])
        return EXIT_FAILED if failed else EXIT_OK


@dataclass
class _Pass:
    """How one pass over the cells ended (or got to, when it was cancelled)."""

    failure: Failure | None = None
    skip_reason: str | None = None
    duration_s: float = 0.0
    cells: list[CellResult] = field(default_factory=list)


@dataclass
class _Live:
    """What is known of one entry while it runs: enough to write its results.json at any moment."""

    run: EntryRun
    folder: EntryFolder
    started_at: str = ""
    t0: float = 0.0
    begun: bool = False
    done: bool = False
    results: dict[str, NotebookResult] = field(default_factory=dict)
    executing: dict[str, tuple[float, str]] = field(default_factory=dict)
    """Notebooks whose cells are running: path -> (monotonic start, ISO start)."""
    checks: Any = None
    interp: runtimes.Interpreter | None = None
    """The runtime's interpreter, once the entry has begun."""
    page_entry: EntryResult | None = None
    """What the notebooks' pages say of the entry, known once its checks are done."""


class Executor:
    """Runs entries; one instance per ``gpu-runner run``."""

    def __init__(self, *, out_dir: Path, jobs: int, logger: Logger, stop: Stop | None = None,
                 html: Any = None) -> None:
        self.out_dir = out_dir
        self.html = html
        """A :class:`~gpu_runner.report.html.BackgroundHtml`: each notebook's page made as it ends."""
        self.jobs = max(1, jobs)
        self.log = logger
        self.stop = stop
        self._specs: dict[tuple[str, str], KernelSpecs] = {}
        """Kernelspec look-ups per runtime interpreter (its own Jupyter paths first)."""
        self.forks = ForkServers()
        self.sampler: Sampler | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checks: asyncio.Task[Any] | None = None
        """The entry's system checks: kernels start meanwhile, notebooks execute after them."""
        self._live: list[_Live] = []
        self.sweeper: Sweeper | None = None

    @property
    def interrupted_by(self) -> str | None:
        return self.stop.name if self.stop is not None else None

    # -- entry level -----------------------------------------------------------------------
    def prepare(self, runs: list[EntryRun]) -> None:
        """Every entry folder checked (ours, or new) and its staging folder made, before any
        notebook runs; a folder that is not ours is a ConfigError now, not after the first entry."""
        self._live = []
        for run in runs:
            folder = EntryFolder(self.out_dir, run.info.id)
            folder.prepare()
            self._live.append(_Live(run=run, folder=folder))

    async def run(self, runs: list[EntryRun]) -> RunOutcome:
        self._loop = asyncio.get_running_loop()
        phases.started()
        own_stop = self.stop is None
        if self.stop is None:
            self.stop = Stop().install()
        self.stop.on_stop(self._on_signal)
        self.stop.add_final_writer(self.write_known, first=True)
        self.stop.add_cleanup(REGISTRY.kill_all)
        if len(self._live) != len(runs):
            self.prepare(runs)
        self.sweeper = Sweeper()
        self.stop.add_cleanup(self.sweeper.end_run)
        atexit.register(self.sweeper.end_run)
        self.sampler = Sampler()
        self.sampler.start()
        results: list[EntryResult] = []
        dirs: list[Path] = []
        try:
            self.log.set_total(sum(len(r.notebooks) for r in runs))
            for live in self._live:
                results.append(await self.run_entry(live))
                dirs.append(live.folder.final)
        finally:
            await self.forks.close()
            await self.sampler.stop()
            if own_stop:
                self.stop.restore()
            REGISTRY.kill_all()
            await asyncio.to_thread(self.sweeper.end_run)
            atexit.unregister(self.sweeper.end_run)
            self.log.close()
        return RunOutcome(results, dirs, self.interrupted_by)

    def _on_signal(self, name: str) -> None:
        """In the signal handler: kernels die at once; then the loop is asked to wind the
        notebooks up (their executed notebooks are written with the outputs they got)."""
        REGISTRY.kill_all()
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(self._cancel_all, name)

    def _cancel_all(self, name: str) -> None:
        self.log.warning(f"{name} received: stopped the notebooks and killed their kernels")
        for t in list(self._tasks):
            t.cancel()

    def _entry_result(self, live: _Live, nb_results: list[NotebookResult], checks: Any) -> EntryResult:
        run = live.run
        failed = any(n.status == "failed" for n in [*nb_results, *(checks.results if checks else [])])
        all_skipped = bool(nb_results) and all(n.status == "skipped" for n in nb_results)
        facts = {**host_facts(), **(live.interp.facts() if live.interp else {}),
                 **(self.sampler.facts() if self.sampler else {}), **(checks.facts if checks else {})}
        return EntryResult(
            entry=run.info,
            status="failed" if failed else ("skipped" if all_skipped else "passed"),
            started_at=live.started_at or _now(),
            finished_at=_now(),
            duration_s=round(time.monotonic() - live.t0, 3) if live.begun else 0.0,
            notebooks=nb_results,
            checks=checks.results if checks else [],
            facts=facts,
            options={
                "jobs": self.jobs,
                "timeout_s": run.timeout_s,
                "cell_timeout_s": run.cell_timeout_s,
                "rerun": run.rerun,
                "kernel": run.kernel,
                "parameters": run.parameters,
                "python": run.python,
                "python_source": run.python_source,
                "kernel_overlay": run.kernel_overlay,
                **({"regression": run.regression} if run.regression else {}),
            },
            interrupted=self.interrupted_by is not None,
            tool_version=__version__,
        )

    def write_known(self) -> None:
        """For the hard exit (from another thread, the write lock held): every entry not yet
        written gets a results.json of what is known (notebooks that ended; those running,
        as interrupted with the time they ran; the rest as not run) and is put in place."""
        now = time.monotonic()
        by = self.interrupted_by or "a signal"
        for live in list(self._live):
            if live.done:
                continue
            nbs: list[NotebookResult] = []
            for spec in live.run.notebooks:
                res = live.results.get(spec.path)
                if res is None and spec.path in live.executing:
                    t, started_at = live.executing[spec.path]
                    res = NotebookResult(
                        path=spec.path, dir=spec.out_subdir, status="failed", duration_s=round(now - t, 3),
                        started_at=started_at, finished_at=_now(),
                        failure=Failure(kind="interrupted", ename="Interrupted", message=f"interrupted by {by}",
                                        evalue=f"gpu-runner received {by} and exited before this notebook "
                                               "was written"),
                    )
                nbs.append(res if res is not None else _not_run(spec))
            checks = live.checks
            result = self._entry_result(live, nbs, checks)
            result.write(live.folder.staging)
            live.folder.commit()
            live.done = True
        clean_staging(self.out_dir)  # what the main thread is still writing there is not in results.json

    def kernel_specs(self, interp: runtimes.Interpreter) -> KernelSpecs:
        key = (interp.executable, interp.source if interp.named else "")
        if key not in self._specs:
            self._specs[key] = KernelSpecs(interp)
        return self._specs[key]

    async def _interpreter(self, run: EntryRun, entry_dir: Path) -> runtimes.Interpreter:
        """The runtime's interpreter for this entry, said in the log before anything runs."""
        env = {**os.environ, **run.env}
        interp = await asyncio.to_thread(
            runtimes.for_run, run.python, run.python_source, overlay=run.kernel_overlay, env=env,
            log=lambda m: self.log.info(f"{run.info.id}: {m}"), log_file=entry_dir / "kernel-overlay.log")
        self.log.info(f"{run.info.id}: kernels run under {interp.describe()}")
        if interp.problem:
            self.log.warning(f"{run.info.id}: {interp.problem}")
        return interp

    async def run_entry(self, live: _Live) -> EntryResult:
        run = live.run
        entry_dir = live.folder.staging
        live.started_at, live.t0, live.begun = _now(), time.monotonic(), True
        alive = asyncio.Semaphore(self.jobs * 2)  # executing + started ahead
        slots = asyncio.Semaphore(self.jobs)
        live.interp = interp = await self._interpreter(run, entry_dir)
        specs = self.kernel_specs(interp)
        self._checks = None
        if run.checks:
            self._checks = asyncio.ensure_future(run_entry_checks(run, entry_dir, self.log, interp))
            self._tasks.add(self._checks)

            def keep(t: asyncio.Task[Any]) -> None:
                if not t.cancelled() and t.exception() is None:
                    live.checks = t.result()

            self._checks.add_done_callback(keep)
        tasks = []
        for spec in run.notebooks:
            task = asyncio.ensure_future(self._notebook_task(live, spec, entry_dir, alive, slots, specs))
            self._tasks.add(task)
            tasks.append(task)
        if self.interrupted_by:
            for t in tasks:
                t.cancel()
        nb_results: list[NotebookResult] = []
        for spec, task in zip(run.notebooks, tasks):
            try:
                nb_results.append(await task)
            except asyncio.CancelledError:
                nb_results.append(_not_run(spec))
            finally:
                self._tasks.discard(task)
        checks = None
        if self._checks is not None:
            with contextlib.suppress(asyncio.CancelledError):  # cancelled before it began: no checks
                checks = await self._checks
            self._tasks.discard(self._checks)
        if self.html is not None:  # every page made before the folder moves into place
            await asyncio.to_thread(self.html.wait, run.info.id, cancel=self.interrupted_by is not None)
        result = self._entry_result(live, nb_results, checks)
        with WRITE_LOCK, phases.phase("writes"):
            if not live.done:
                result.write(entry_dir)
                live.folder.commit()
                live.done = True
        return result

    # -- notebook level --------------------------------------------------------------------
    async def _notebook_task(
        self, live: _Live, spec: NotebookSpec, entry_dir: Path, alive: asyncio.Semaphore, slots: asyncio.Semaphore,
        specs: KernelSpecs,
    ) -> NotebookResult:
        res = await self._notebook(live, spec, entry_dir, alive, slots, specs)
        live.results[spec.path] = res
        live.executing.pop(spec.path, None)
        return res

    async def _notebook(
        self, live: _Live, spec: NotebookSpec, entry_dir: Path, alive: asyncio.Semaphore, slots: asyncio.Semaphore,
        specs: KernelSpecs,
    ) -> NotebookResult:
        run = live.run
        phases.notebook()
        phases.enter("prepare")
        nb_dir = entry_dir / spec.out_subdir
        nb_dir.mkdir(parents=True, exist_ok=True)
        artifacts = nb_dir / "artifacts"
        artifacts.mkdir(exist_ok=True)
        started_at = _now()
        files: dict[str, Any] = {}
        params = dict(run.parameters)

        def result(status: str, duration: float = 0.0, **kw: Any) -> NotebookResult:
            return NotebookResult(
                path=spec.path, dir=spec.out_subdir, status=status, duration_s=round(duration, 3),  # type: ignore[arg-type]
                parameters=params, started_at=started_at, finished_at=_now(), files=files, **kw,
            )

        async def stop_early(prepared: nbtools.Prepared | None, *, failure: Failure | None = None,
                             skip_reason: str | None = None) -> NotebookResult:
            """The notebook ends before any cell ran: keep it as it is, record why."""
            with contextlib.suppress(OSError):
                if prepared is None:  # unreadable: keep what was there, byte for byte
                    await asyncio.to_thread(_locked, shutil.copyfile, spec.source, nb_dir / "output.ipynb")
                else:
                    await asyncio.to_thread(_locked, self._write_nb, prepared.nb, nb_dir / "output.ipynb")
                files["ipynb"] = f"{spec.out_subdir}/output.ipynb"
            status = "failed" if failure else "skipped"
            self.log.notebook_finished(_name(run, spec), status, 0.0,
                                       f"{failure.kind}: {failure.message}" if failure else skip_reason or "")
            res = result(status, failure=failure, skip_reason=skip_reason,
                         kernel=prepared.kernel_name if prepared else None)
            return self._finish_files(res, nb_dir, spec, params, None, prepared)

        # one notebook read and its kernel started at a time per kernel slot: never all of them at
        # once (a run of 200 notebooks holds at most 2 x jobs of them in memory)
        t_stage = phases.clock()
        async with alive:
            t_stage = phases.stage("wait for a kernel slot", t_stage)
            # 1. read and prepare: failures here are the notebook's setup error, not the run's
            try:
                prepared, _text = await asyncio.to_thread(
                    _in_phase, "prepare", nbtools.prepare, spec.source, kernel_override=run.kernel,
                    parameters=run.parameters, display=_as_given(spec.source))
            except nbtools.NotebookSetupError as e:
                return await stop_early(None, failure=Failure(kind="setup_error", message=str(e),
                                                              ename="NotebookSetupError", evalue=str(e)))
            params = prepared.parameters
            if prepared.requires_gpu:
                present, why = gpu_presence()
                if not present:
                    return await stop_early(prepared, skip_reason=f"needs a GPU: {why}")

            timeout_s = prepared.timeout_s or run.timeout_s
            marks, cgroup, token = self.sweeper.notebook()
            env = {**run.env, ARTIFACTS_ENV: str(artifacts.resolve()), "GPU_RUNNER": "1", **marks}

            # 2. a kernel, started ahead of the execution slot
            phases.enter("kernel start")
            try:
                t_kernel = time.monotonic()
                try:
                    kernel = await start_kernel(prepared.kernel_name, specs=specs, cwd=spec.source.parent,
                                                env=env, log_path=nb_dir / KERNEL_LOG, forks=self.forks)
                except KernelStartError as e:
                    return await stop_early(prepared, failure=Failure(kind="setup_error", message=str(e),
                                                                      ename="KernelStartError", evalue=str(e)))
                kernel_start_s = time.monotonic() - t_kernel
                kernel_cpu = phases.kernel("ready", kernel.pid)
                t_stage = phases.stage("kernel start", t_stage)
                phases.enter("execute")
                try:
                    if self._checks is not None:  # the checks come first; they end by their own timeouts
                        await asyncio.wait({self._checks})
                    async with slots:
                        t_stage = phases.stage("wait for an execution slot", t_stage)
                        live.executing[spec.path] = (time.monotonic(), _now())
                        outcome, nb_to_save, first_pass, metrics = await self._execute(
                            prepared, kernel, spec, nb_dir, run, timeout_s
                        )
                finally:
                    phases.kernel("end", kernel.pid, kernel_cpu)
                    t_stage = phases.stage("execute", t_stage)
                    phases.enter("kernel shutdown")
                    shutdown = asyncio.ensure_future(kernel.shutdown(graceful=self.interrupted_by is None))
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(shutdown)
                    t_stage = phases.stage("kernel shutdown", t_stage)
            finally:
                # what the notebook started and left behind (a daemon in its own session...)
                sweep = asyncio.ensure_future(asyncio.to_thread(_in_phase, "kernel shutdown",
                                                                self.sweeper.end_notebook, token, cgroup))
                with contextlib.suppress(asyncio.CancelledError):
                    swept = await asyncio.shield(sweep)
                    if swept:
                        self.log.info(f"[{_name(run, spec)}] killed {swept} process(es) the notebook left running")
                t_stage = phases.stage("sweep", t_stage)
        metrics["kernel_start_s"] = round(kernel_start_s, 3)
        phases.enter("conclude")
        res = await self._conclude(live, outcome, nb_to_save, first_pass, metrics, spec, nb_dir, run, prepared,
                                   files, result)
        phases.stage("conclude", t_stage)
        return res

    async def _execute(
        self, prepared: nbtools.Prepared, kernel: Kernel, spec: NotebookSpec, nb_dir: Path, run: EntryRun,
        timeout_s: float,
    ) -> tuple[dict[str, Any], Any, Any, dict[str, Any]]:
        nb = prepared.nb
        client = _Client(
            nb,
            km=kernel.km,
            timeout=None,
            interrupt_on_timeout=False,
            allow_errors=False,
            record_timing=True,
            iopub_timeout=10,
            raise_on_iopub_timeout=False,
            coalesce_streams=False,  # nbclient's merge is quadratic in chunks; ours is linear
            resources={"metadata": {"path": str(spec.source.parent)}},
        )
        client.kc = kernel.kc
        client.caps = nbtools.StreamCap(nb_dir / "outputs")
        name = _name(run, spec)
        client.live = lambda stream, text: self.log.cell_output(name, stream, text)
        code_cells = [i for i, c in enumerate(nb.cells) if nbtools.is_code(c)]
        self.log.notebook_started(_name(run, spec), f"kernel {prepared.kernel_name}, {len(code_cells)} code cells",
                                  len(code_cells))
        track = self.sampler.track(kernel.pid) if (self.sampler and kernel.pid) else None
        deadline = time.monotonic() + timeout_s
        t0 = time.monotonic()
        first_pass_nb = None
        outcome: dict[str, Any] = {}
        try:
            first = outcome["first"] = _Pass()
            await self._pass(first, client, kernel, nb, code_cells, spec, nb_dir, prepared, run, deadline,
                             timeout_s, label="", track=track)
            if run.rerun and first.failure is None and first.skip_reason is None:
                first_pass_nb = copy.deepcopy(nb)
                second = outcome["rerun"] = _Pass()
                await self._pass(second, client, kernel, nb, code_cells, spec, nb_dir, prepared, run, deadline,
                                 timeout_s, label="rerun ", track=track)
        except asyncio.CancelledError:
            outcome["interrupted"] = True
            outcome["cell_index"] = client.current_index
            kernel.kill()
        finally:
            metrics = (self.sampler.untrack(track) if (self.sampler and track)
                       else {"peak_rss_mib": None, "gpu": None, "timeline": None})
            metrics["execute_s"] = round(time.monotonic() - t0, 3)
        return outcome, nb, first_pass_nb, metrics

    async def _pass(
        self, p: _Pass, client: _Client, kernel: Kernel, nb: Any, code_cells: list[int], spec: NotebookSpec,
        nb_dir: Path, prepared: nbtools.Prepared, run: EntryRun, deadline: float, timeout_s: float, label: str,
        track: Track | None = None,
    ) -> _Pass:
        """Run the cells once; ``p`` fills as they end, so a cancelled pass still says how far it got."""
        t_pass = time.monotonic()
        total = len(code_cells)
        for n, idx in enumerate(code_cells, start=1):
            cell = nb.cells[idx]
            if nbtools.is_skipped(cell):
                p.cells.append(CellResult(index=idx, status="skipped"))
                self.log.cell_finished(_name(run, spec), n, total, "skipped (skip-execution)", 0.0, label, number=idx + 1)
                continue
            remaining = deadline - time.monotonic()
            limit = min(run.cell_timeout_s, remaining)
            notebook_bound = remaining < run.cell_timeout_s
            if limit <= 0:
                evalue = f"the notebook exceeded its {timeout_s:g} s limit before cell {idx + 1} started"
                p.failure = Failure(kind="timeout", cell_index=idx, ename="CellTimeoutError", evalue=evalue,
                                    message=f"timeout: {evalue}", timeout_s=timeout_s,
                                    source_line=prepared.source_lines[idx] if idx < len(prepared.source_lines)
                                    else None)
                break
            client.cell_limit_s = limit
            # after the kernel's reply, the outputs still on their way are awaited for as long as the
            # cell may take (nbclient's default, a fixed 10 s, lost the end of a big output on a busy
            # machine without a word); a kernel that dies meanwhile is found by the next cell
            client.iopub_timeout = max(10.0, limit)
            client.current_index = idx
            if track is not None and self.sampler is not None:
                self.sampler.cell_started(track, idx, rerun=bool(label))
            t_cell = time.monotonic()
            failure: Failure | None = None
            caps = client.caps
            if caps is not None:
                caps.start(idx)
            try:
                await client.async_execute_cell(cell, idx)
            except CellExecutionError:
                err = nbtools.error_output(cell) or {}
                ename, evalue = err.get("ename", "Error"), err.get("evalue", "")
                if ename in nbtools.SKIP_ENAMES:
                    p.skip_reason = evalue or f"{ename} raised in cell {idx + 1}"
                else:
                    failure = Failure(
                        kind="error", cell_index=idx, ename=ename, evalue=nbtools.strip_ansi(str(evalue)),
                        traceback=nbtools.strip_ansi("\n".join(err.get("traceback", []))),
                        message=f"{ename}: {nbtools.strip_ansi(str(evalue))}".rstrip(": "),
                    )
            except CellTimeoutError:
                failure = await self._on_timeout(client, kernel, cell, idx, limit, notebook_bound, timeout_s)
            except DeadKernelError:
                if self.interrupted_by:
                    raise asyncio.CancelledError from None  # we killed it: recorded as interrupted
                failure = await self._on_death(kernel, cell, idx)
            finally:
                spilled = caps.finish(cell) if caps is not None else []
            cell_s = time.monotonic() - t_cell
            if track is not None and self.sampler is not None:
                self.sampler.cell_finished(track, idx)
            nbtools.coalesce_streams(cell)
            written = spilled + nbtools.cap_outputs(cell, idx, nb_dir / "outputs")
            if written:
                self.log.info(f"[{_name(run, spec)}] cell {idx + 1}: long output; the notebook keeps its head and tail, "
                              f"the file {', '.join(f'outputs/{w}' for w in written)} keeps more")
            status = "skipped" if p.skip_reason else ("failed" if failure else "passed")
            p.cells.append(CellResult(index=idx, status=status, duration_s=round(cell_s, 3),  # type: ignore[arg-type]
                                      execution_count=cell.get("execution_count")))
            self.log.cell_finished(_name(run, spec), n, total, "ok" if status == "passed" else status, cell_s, label,
                                   number=idx + 1)
            if failure is not None:
                failure.cell_line = nbtools.line_in_cell(failure.traceback, cell.get("execution_count"))
                failure.source_line = prepared.file_line(idx, failure.cell_line)
                failure.output_tail = nbtools.tail(nbtools.output_text(cell)) or None
                p.failure = failure
            if failure is not None or p.skip_reason:
                break
        done = {c.index for c in p.cells}
        p.cells += [CellResult(index=i, status="not_run") for i in code_cells if i not in done]
        p.duration_s = time.monotonic() - t_pass
        return p

    async def _on_timeout(
        self, client: _Client, kernel: Kernel, cell: Any, idx: int, limit: float, notebook_bound: bool,
        timeout_s: float,
    ) -> Failure:
        """Interrupt; give the kernel a grace period to answer (its traceback shows where it hung); else kill."""
        await kernel.interrupt()
        killed = False
        task = client.output_task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=INTERRUPT_GRACE_S)
            if not done:
                killed = True
                kernel.kill()
                task.cancel()
        err = nbtools.error_output(cell) or {}
        what = (f"the notebook exceeded its {timeout_s:g} s limit" if notebook_bound
                else f"cell {idx + 1} exceeded the {limit:g} s cell timeout")
        how = "the kernel ignored the interrupt and was killed" if killed else "the kernel was interrupted"
        evalue = f"{what}; {how}"
        cell.setdefault("outputs", []).append(nbformat.v4.new_output(
            "error", ename="CellTimeoutError", evalue=evalue, traceback=[f"gpu-runner: {evalue}"]))
        return Failure(
            kind="timeout", cell_index=idx, ename="CellTimeoutError", evalue=evalue,
            traceback=nbtools.strip_ansi("\n".join(err.get("traceback", []))) or None,
            message=f"timeout: {evalue}", timeout_s=timeout_s if notebook_bound else limit,
        )

    async def _on_death(self, kernel: Kernel, cell: Any, idx: int) -> Failure:
        rc = await kernel.wait_exit(3.0)
        sig = signal_name(rc)
        how = f"killed by {sig}" if sig else (f"exited with code {rc}" if rc is not None else "stopped answering")
        evalue = f"the kernel died while running cell {idx + 1}: {how}"
        if sig == "SIGKILL":
            evalue += " (often the out-of-memory killer)"
        said = nbtools.strip_ansi(kernel.log_tail()).strip()
        trace = [f"gpu-runner: {evalue}"] + ([f"The kernel's last words ({KERNEL_LOG}):", said] if said else [])
        cell.setdefault("outputs", []).append(nbformat.v4.new_output(
            "error", ename="DeadKernelError", evalue=evalue, traceback=trace))
        return Failure(
            kind="kernel_died", cell_index=idx, ename="DeadKernelError", evalue=evalue, message=evalue,
            traceback="\n".join(trace), signal=sig, exit_code=rc if (rc is not None and rc >= 0) else None,
        )

    async def _conclude(
        self, live: _Live, outcome: dict[str, Any], nb: Any, first_pass_nb: Any, metrics: dict[str, Any],
        spec: NotebookSpec, nb_dir: Path, run: EntryRun, prepared: nbtools.Prepared, files: dict[str, Any],
        result: Any,
    ) -> NotebookResult:
        first: _Pass | None = outcome.get("first")
        second: _Pass | None = outcome.get("rerun")
        failure: Failure | None = None
        skip_reason = None
        rerun_result = None
        if outcome.get("interrupted"):
            by = self.interrupted_by or "a signal"
            idx = outcome.get("cell_index")
            failure = Failure(kind="interrupted", cell_index=idx, ename="Interrupted",
                              evalue=f"gpu-runner received {by}; the kernel was killed",
                              message=f"interrupted by {by}",
                              source_line=prepared.source_lines[idx] if idx is not None
                              and idx < len(prepared.source_lines) else None)
        elif first is not None:
            failure, skip_reason = first.failure, first.skip_reason
            if second is not None:
                rerun_result = RerunResult(status="failed" if second.failure else "passed",
                                           duration_s=round(second.duration_s, 3))
                if second.failure is not None:
                    f = second.failure
                    failure = Failure(**{**f.__dict__, "kind": "rerun_error",
                                         "message": f"on the second run in the same kernel: {f.message}"})
        status = "failed" if failure else ("skipped" if skip_reason else "passed")
        cells = (second.cells if (second and second.failure) else (first.cells if first else []))
        duration = (first.duration_s if first else 0.0) + (second.duration_s if second else 0.0)
        if outcome.get("interrupted"):
            # the time it really ran, and how far it got: the pass that was running when it stopped
            duration = float(metrics.get("execute_s") or 0.0)
            running = second if second is not None else first
            cells = list(running.cells) if running is not None else []
            done = {c.index for c in cells}
            idx = outcome.get("cell_index")
            if idx is not None and idx not in done:
                cells.append(CellResult(index=idx, status="failed"))
                done.add(idx)
            code_cells = [i for i, c in enumerate(nb.cells) if nbtools.is_code(c)]
            cells += [CellResult(index=i, status="not_run") for i in code_cells if i not in done]
        peaks = metrics.pop("cell_peaks", None) or {}
        for c in cells:
            if c.status != "not_run" and c.index in peaks:
                c.gpu_peak_memory_mib = peaks[c.index]["gpu_peak_memory_mib"]
                c.peak_rss_mib = peaks[c.index]["peak_rss_mib"]
        metrics.update({
            "notebook": spec.path,
            "status": status,
            "wall_s": round(duration, 3),
            "cells": [{"index": c.index, "number": c.index + 1, "status": c.status, "duration_s": c.duration_s,
                       "gpu_peak_memory_mib": c.gpu_peak_memory_mib, "peak_rss_mib": c.peak_rss_mib} for c in cells],
            "rerun_s": round(second.duration_s, 3) if second else None,
        })
        timeline = metrics.pop("timeline", None)
        metrics["timeline"] = timeline  # last: the long part of the file
        gpu = metrics.get("gpu") or {}
        nbres = result(
            status, duration, failure=failure, skip_reason=skip_reason, kernel=prepared.kernel_name, cells=cells,
            rerun=rerun_result, peak_rss_mib=metrics.get("peak_rss_mib"),
            gpu_peak_memory_mib=gpu.get("peak_memory_mib"), gpu_mean_utilization_pct=gpu.get("mean_utilization_pct"),
            timeline=timeline_from_dict(timeline),
        )
        msg = "" if status == "passed" else (skip_reason or (failure.message if failure else ""))
        if failure and failure.cell_index is not None:
            line = f", line {failure.cell_line}" if failure.cell_line else ""
            msg = f"cell {failure.cell_index + 1}{line}: {msg}"
        # writing is off the critical path: the execution slot is already free
        log_text, ipynb_text = await asyncio.to_thread(
            self._write_outputs, nb, first_pass_nb if (second and second.failure) else None, nb_dir, spec, run
        )
        files["ipynb"] = f"{spec.out_subdir}/output.ipynb"
        if (nb_dir / "first-run.ipynb").exists():
            files["first_run_ipynb"] = f"{spec.out_subdir}/first-run.ipynb"
        if log_text is not None:
            files["log_py"] = f"{spec.out_subdir}/log.py"
        if (nb_dir / KERNEL_LOG).exists():
            files["kernel_log"] = f"{spec.out_subdir}/{KERNEL_LOG}"
        if (nb_dir / "outputs").is_dir():
            files["outputs"] = sorted(f"{spec.out_subdir}/outputs/{p.name}" for p in (nb_dir / "outputs").iterdir())
        if failure is not None and failure.cell_index is not None and log_text is not None:
            failure.log_py_line = _log_py_line(log_text, nb, failure)
        self.log.notebook_finished(_name(run, spec), status, duration, msg, log_text,
                                   detail=_console_traceback(failure))
        nbres = self._finish_files(nbres, nb_dir, spec, nbres.parameters, metrics, prepared)
        self._page(live, nbres, nb_dir, ipynb_text)
        return nbres

    def _page(self, live: _Live, nbres: NotebookResult, nb_dir: Path, ipynb_text: str) -> None:
        """Have the notebook's output.html made in the background, from what was just written. Its
        link back to the dashboard is the one it will have once the entry folder is in place."""
        if self.html is None or self.interrupted_by is not None:
            return
        if live.page_entry is None:
            live.page_entry = self._entry_result(live, [], live.checks)
        final = live.folder.final
        back = Path(os.path.relpath(final.parent / "index.html", final / nbres.dir)).as_posix()
        self.html.submit(live.run.info.id, nb_dir / "output.html", ipynb_text, live.page_entry, nbres,
                         resource_dir=str(nb_dir), back=back)

    def _finish_files(self, nbres: NotebookResult, nb_dir: Path, spec: NotebookSpec, params: dict[str, Any],
                      metrics: dict[str, Any] | None, prepared: nbtools.Prepared | None) -> NotebookResult:
        metrics = metrics or {"notebook": spec.path, "status": nbres.status, "wall_s": nbres.duration_s,
                              "cells": [], "peak_rss_mib": None, "gpu": None, "timeline": None}
        with phases.phase("writes"), WRITE_LOCK:
            write_json_atomic(nb_dir / "metrics.json", metrics)
            write_json_atomic(nb_dir / "params.json", {
                "parameters": params,
                "injected_cell_index": prepared.injected_index if prepared else None,
            })
        nbres.files["metrics"] = f"{spec.out_subdir}/metrics.json"
        nbres.files["params"] = f"{spec.out_subdir}/params.json"
        art = nb_dir / "artifacts"
        nbres.files["artifacts"] = sorted(
            f"{spec.out_subdir}/artifacts/{p.relative_to(art).as_posix()}" for p in art.rglob("*") if p.is_file()
        ) if art.is_dir() else []
        return nbres

    @staticmethod
    def _write_nb(nb: Any, path: Path) -> str:
        text = nbformat.writes(nb)
        write_text_atomic(path, text)
        return text

    def _write_outputs(self, nb: Any, first_pass: Any, nb_dir: Path, spec: NotebookSpec,
                       run: EntryRun) -> tuple[str | None, str]:
        """(log.py's text or None, output.ipynb's text)."""
        with phases.phase("writes"), WRITE_LOCK:
            ipynb_text = self._write_nb(nb, nb_dir / "output.ipynb")
            if first_pass is not None:
                self._write_nb(first_pass, nb_dir / "first-run.ipynb")
            if not run.log_py:
                return None, ipynb_text
            text = nbtools.render_log_py(nb)
            (nb_dir / "log.py").write_text(text, encoding="utf-8")
            return text, ipynb_text


def _locked(fn: Any, *args: Any, **kw: Any) -> Any:
    """``fn(*args, **kw)`` holding :data:`WRITE_LOCK`: once the hard exit has taken it for good,
    nothing more is written (into a staging folder it has already put in place or cleared)."""
    with WRITE_LOCK:
        return fn(*args, **kw)


def _not_run(spec: NotebookSpec) -> NotebookResult:
    """A notebook that the run's interruption came before."""
    return NotebookResult(path=spec.path, dir=spec.out_subdir, status="skipped", duration_s=0.0,
                          skip_reason="the run was interrupted before this notebook ran")


def _as_given(path: Path) -> str:
    """A file as people name it where the command ran: relative to that folder when inside it."""
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _name(run: EntryRun, spec: NotebookSpec) -> str:
    """How log lines name a notebook: with its entry, so that several entries' lines can be told apart."""
    return f"{run.info.id}: {spec.path}"


def _log_py_line(log_text: str, nb: Any, failure: Failure) -> int | None:
    """The line of log.py (the jupytext view) where ``failure`` happened: the failing statement's,
    else the cell's first line; None when log.py's cells cannot be matched with the notebook's."""
    marks = nbtools.log_py_cell_lines(log_text)
    idx = failure.cell_index
    if idx is None or len(marks) != len(nb.cells) or idx >= len(marks):
        return None
    n_lines = len(str(nb.cells[idx].get("source", "")).splitlines())
    line = failure.cell_line if failure.cell_line is not None and 1 <= failure.cell_line <= n_lines else 1
    return marks[idx] + line


CONSOLE_TRACEBACK_LINES = 15


def _console_traceback(failure: Failure | None) -> str | None:
    """The end of a failure's traceback (its last frames and the error) for the console; the whole
    of it is in results.json, the executed notebook and its HTML."""
    if failure is None or not failure.traceback:
        return None
    lines = [line.rstrip() for line in nbtools.strip_ansi(failure.traceback).splitlines()]
    lines = [line for line in lines if line.strip() and not set(line.strip()) <= {"-"}]
    if not lines:
        return None
    cut = len(lines) - CONSOLE_TRACEBACK_LINES
    return "\n".join(([f"[... {cut} lines above; the whole traceback is in the notebook's HTML]"] if cut > 0 else [])
                     + lines[-CONSOLE_TRACEBACK_LINES:])


def _in_phase(name: str, fn: Any, *args: Any, **kw: Any) -> Any:
    """``fn(*args, **kw)``, its CPU counted for phase ``name`` (see :mod:`gpu_runner.phases`)."""
    with phases.phase(name):
        return fn(*args, **kw)


def host_facts() -> dict[str, Any]:
    """What every entry records about the machine it ran on."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "gpu_runner_python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def run_entries(runs: list[EntryRun], *, out_dir: Path, jobs: int, logger: Logger, stop: Stop | None = None,
                executor: Executor | None = None) -> RunOutcome:
    """Run every entry's notebooks on this machine; always returns (signals included).

    ``executor``: one made (and :meth:`Executor.prepare`-d) by the caller, so that its entry
    folders are checked before anything else starts."""
    logger.jobs = jobs
    executor = executor or Executor(out_dir=out_dir, jobs=jobs, logger=logger, stop=stop)
    try:
        return asyncio.run(executor.run(runs))
    finally:
        REGISTRY.kill_all()
        sys.stdout.flush()

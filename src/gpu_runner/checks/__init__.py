"""System checks: prove the machine and the runtime before the notebooks.

Each check is one :class:`~gpu_runner.results.CheckResult` (one test case in JUnit, the
summary and the dashboard) with a one-line ``summary``, a ``details`` dict and its
captured output as artifacts under ``<entry>/checks/<name>/``. The built-ins:

``gpu``
    ``nvidia-smi -q`` captured whole (``nvidia-smi-q.txt``) and parsed, NVML where
    available: model, count, memory, driver and CUDA version. Fails when the count
    differs from the count the matrix expects, when the matrix expects GPUs and none
    answers, or when ``nvidia-smi`` is there but cannot talk to the driver. Skipped on a
    machine without a GPU when none is expected.
``cuda``
    ``nvcc --version``, ``CUDA_HOME``, ``libcudart`` through the linker cache (and
    ``LD_LIBRARY_PATH``, ``CUDA_HOME`` and pip's ``nvidia-cuda-runtime`` wheels): versions,
    and whether the driver supports them. Skipped when there is no CUDA at all.
``compilers``
    A C and a C++ compiler (``$CC``/gcc/cc/clang, ``$CXX``/g++/c++/clang++) with versions,
    each proven by compiling a tiny shared library (what triton's JIT does).
``frameworks``
    In the runtime's Python (the notebooks' kernel's interpreter): PyTorch, TensorFlow
    and JAX, each in its own bounded subprocess: version, the GPUs it sees, a 64x64 matmul
    on every device. Not installed is skipped, not failed.
``resources``
    Free disk (results folder, working folder, temp folder), memory and ``/dev/shm``
    against the thresholds below.

User checks from the matrix (``{name, run, expect_exit, timeout}``) run with
``bash --noprofile --norc -eo pipefail -c`` (GitHub Actions' default shell; ``sh -c``
where there is no bash) in the working folder, with the runtime's ``env``; passed when
the exit code is ``expect_exit``. Their output is ``checks/<name>/output.txt``.

Checks run concurrently, each bounded by a timeout; checks never raise (an unexpected
error is that check's failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..execute.spec import BUILTIN_CHECKS
from ..results import CheckResult
from . import builtin
from .builtin import (
    DISK_FAIL_GIB,
    DISK_WARN_GIB,
    MEMORY_FAIL_GIB,
    MEMORY_WARN_GIB,
    SHM_FAIL_MIB,
    SHM_WARN_MIB,
    CheckContext,
    Outcome,
    kernel_pythons,
)

CHECKS_DIR = "checks"


@dataclass
class ChecksOutcome:
    results: list[CheckResult] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    """Facts found (``gpu_model``, ``gpu_count``, ``driver_version``, ``cuda_version``...), no Nones."""
    captured: dict[str, str] = field(default_factory=dict)
    """Each check's captured output by name, for a CI log to fold."""

    @property
    def failed(self) -> bool:
        return any(r.status == "failed" for r in self.results)


def default_specs() -> list[dict[str, Any]]:
    """Every built-in, as the matrix writes it."""
    return [{"name": n} for n in BUILTIN_CHECKS]


def _one(spec: dict[str, Any], ctx: CheckContext) -> tuple[CheckResult, Outcome]:
    name = str(spec.get("name"))
    t0 = time.monotonic()
    out_dir = ctx.entry_dir / CHECKS_DIR / name
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if spec.get("run") is not None:
            outcome = builtin.command_check(spec, ctx, out_dir)
        else:
            fn: Callable[[CheckContext, Path], Outcome] | None = builtin.BUILTINS.get(name)
            if fn is None:
                outcome = Outcome.fail(f"unknown built-in check {name!r} (built-ins: {', '.join(BUILTIN_CHECKS)})")
            else:
                outcome = fn(ctx, out_dir)
    except Exception as e:  # noqa: BLE001 - a check never breaks the run; it fails, saying why
        import traceback

        outcome = Outcome.fail(f"the {name} check itself failed: {type(e).__name__}: {e}",
                               traceback=traceback.format_exc())
    if ctx.stop.is_set() and outcome.status == "failed" and outcome.failure is not None:
        outcome.failure.kind = "interrupted"
    artifacts = sorted(
        p.relative_to(ctx.entry_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()
    ) if out_dir.is_dir() else []
    with contextlib.suppress(OSError):
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
    result = CheckResult(
        name=name, status=outcome.status, duration_s=round(time.monotonic() - t0, 3), summary=outcome.summary,
        failure=outcome.failure, skip_reason=outcome.skip_reason, details=outcome.details, artifacts=artifacts,
    )
    return result, outcome


def run_checks(specs: list[dict[str, Any]], ctx: CheckContext) -> ChecksOutcome:
    """Run the checks concurrently; results in the order given. Never raises."""
    out = ChecksOutcome()
    if not specs:
        return out
    (ctx.entry_dir / CHECKS_DIR).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=len(specs), thread_name_prefix="check") as pool:
        futures = [pool.submit(_one, dict(s), ctx) for s in specs]
        pairs = [f.result() for f in futures]
    for result, outcome in pairs:
        out.results.append(result)
        out.captured[result.name] = outcome.captured
        for k, v in outcome.facts.items():
            if v is not None:
                out.facts.setdefault(k, v)
    # the CUDA a reader asks about is the driver's (what nvidia-smi prints); without a
    # driver, the toolkit's or the runtime library's
    if "cuda_version" not in out.facts:
        for k in ("cuda_toolkit_version", "cuda_runtime_version"):
            if out.facts.get(k):
                out.facts["cuda_version"] = out.facts[k]
                break
    with contextlib.suppress(OSError):
        d = ctx.entry_dir / CHECKS_DIR
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    return out


async def run_checks_async(specs: list[dict[str, Any]], ctx: CheckContext) -> ChecksOutcome:
    """:func:`run_checks` off the event loop. Cancelling it stops the checks (their
    processes are killed) and still returns what they found."""
    fut = asyncio.ensure_future(asyncio.to_thread(run_checks, specs, ctx))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        ctx.stop.set()  # the checks' processes see it within half a second and are killed
        return await fut


def notebook_kernels(paths: list[Path], override: str | None = None) -> list[str | None]:
    """The kernel names the notebooks will run with (``override`` wins), read from their metadata."""
    if override:
        return [override]
    names: list[str | None] = []
    for p in paths:
        try:
            with open(p, encoding="utf-8") as f:
                meta = json.load(f).get("metadata") or {}
            names.append((meta.get("kernelspec") or {}).get("name"))
        except (OSError, ValueError, AttributeError):
            names.append(None)
    return names or [None]


def context_for(run: Any, entry_dir: Path, *, cwd: Path | None = None, interp: Any = None) -> CheckContext:
    """The checks' view of an :class:`~gpu_runner.execute.spec.EntryRun`; ``interp``, the
    runtime's :class:`~gpu_runner.execute.runtime.Interpreter`, is the Python the framework
    probes run under."""
    pythons, _notes = kernel_pythons(notebook_kernels([nb.source for nb in run.notebooks], run.kernel), interp)
    return CheckContext(
        entry_dir=entry_dir, expected_gpus=getattr(run, "expected_gpus", None),
        expected_gpu_type=getattr(run, "expected_gpu_type", None), pythons=pythons, env=dict(run.env),
        cwd=cwd or Path.cwd(),
    )


async def run_entry_checks(run: Any, entry_dir: Path, log: Any, interp: Any = None) -> ChecksOutcome:
    """The checks of one entry, for the engine: off the event loop, reported through ``log``
    as they end. Cancelled, it stops the checks and returns what they found."""
    ctx = await asyncio.to_thread(context_for, run, entry_dir, interp=interp)
    outcome = await run_checks_async(list(run.checks), ctx)
    log_outcome(log, outcome, run.info.id)
    return outcome


def log_outcome(log: Any, outcome: ChecksOutcome, entry_id: str | None = None) -> None:
    """Report checks through a :class:`gpu_runner.log.Logger`: one line each; in GitHub
    Actions each check's captured output folded in a group."""
    where = f"{entry_id}: " if entry_id else ""
    for r in outcome.results:
        text = (outcome.captured.get(r.name) or "").rstrip()
        line = check_line(r, entry_id)
        if getattr(log, "github", False) and text:
            log.group(f"{where}check {r.name}: {r.status}", text)
        log.info(line)
        for w in r.details.get("warnings", []) if isinstance(r.details, dict) else []:
            log.warning(f"{where}check {r.name}: {w}")


def check_line(r: CheckResult, entry_id: str | None = None) -> str:
    what = r.summary or r.skip_reason or (r.failure.message if r.failure else "")
    where = f"{entry_id}: " if entry_id else ""
    return f"[{r.status.upper()}] {where}check {r.name} in {r.duration_s:.1f}s: {what}"


__all__ = [
    "CHECKS_DIR", "CheckContext", "ChecksOutcome", "DISK_FAIL_GIB", "DISK_WARN_GIB", "MEMORY_FAIL_GIB",
    "MEMORY_WARN_GIB", "SHM_FAIL_MIB", "SHM_WARN_MIB", "check_line", "default_specs", "kernel_pythons",
    "context_for", "log_outcome", "notebook_kernels", "run_checks", "run_checks_async", "run_entry_checks",
]

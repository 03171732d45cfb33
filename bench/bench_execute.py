"""Notebook execution overhead: gpu-runner against the tools a user would otherwise pick.

One suite of small notebooks whose cells take a known time (``time.sleep``), run in the
same process of this script by each tool in turn:

* ``gpu-runner run DIR --jobs J --no-pdf --no-checks``  (executed notebooks, HTML, metrics, JUnit,
  summary; system checks off, as the other tools run none)
* a loop of ``jupyter nbconvert --to notebook --execute`` (one notebook at a time)
* a loop of ``papermill IN OUT`` (one notebook at a time)
* ``pytest --nbmake -n J`` (pytest-xdist, J workers)

Per-notebook overhead is the wall time the tool adds to the cells' own time:
``(wall - cell_time / parallelism) / notebooks`` where ``cell_time`` is the suite's total
cell time and ``parallelism`` is 1 for the loops and J for the others. Each tool runs
``--repeat`` times; the median is reported, with the ratios of wall times. Next to it, the CPU
seconds per notebook the tool and every process it started spent (``wait4``): on a shared
machine, less at the mercy of the others' load than wall time.

Then, where gpu-runner's time goes: one more run with ``GPU_RUNNER_PROFILE`` set (see
``gpu_runner.phases``) prints its CPU per notebook by phase (its own process: start-up, kernel
start, execution bookkeeping, metrics, writes, HTML, reports...; the kernels': start-up and
cells; the fork server) and the wall time each notebook spent in each stage.

Then scale (``--scale 64,200``): one profiled gpu-runner run per size, in one entry, printing
the overhead per notebook, CPU per notebook and gpu-runner's own peak RSS (never a kernel's) at
each size, next to the first suite's: neither should grow with the count.

    pip install -e '.[bench]'
    python bench/bench_execute.py [--notebooks 16] [--jobs N] [--repeat 3] [--scale 64,200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

BIN = Path(sys.executable).parent
CELL_SLEEPS = (0.02, 0.05, 0.03, 0.05)  # seconds per code cell: 0.15 s of cells per notebook


def make_suite(folder: Path, count: int) -> float:
    """Write ``count`` small notebooks; return their total cell time in seconds."""
    folder.mkdir(parents=True)
    for i in range(count):
        cells = [new_markdown_cell(f"# Notebook {i}")]
        cells += [
            new_code_cell(f"import time, math\ntime.sleep({s})\nvalue_{k} = sum(math.sqrt(j) for j in range(2000))\n"
                          f"print('cell {k}', round(value_{k}, 3))")
            for k, s in enumerate(CELL_SLEEPS)
        ]
        nb = new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
        nbformat.write(nb, folder / f"nb_{i:02d}.ipynb")
    return count * sum(CELL_SLEEPS)


PROFILE_ENV = "GPU_RUNNER_PROFILE"  # gpu_runner.phases.ENV, not imported: the bench measures the installed tool


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and every process it started and reaped)."""
    with tempfile.TemporaryFile() as out:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0)
            text = out.read().decode(errors="replace")
            raise RuntimeError(f"{' '.join(cmd[:3])}... exited {proc.returncode}:\n{text[-4000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def run_gpu_runner(suite: Path, work: Path, jobs: int, profile: Path | None = None) -> tuple[float, float]:
    out = work / "gr-out"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, PROFILE_ENV: str(profile)} if profile is not None else None
    return timed([str(BIN / "gpu-runner"), "run", str(suite), "--out", str(out), "--jobs", str(jobs), "--no-pdf",
                  "--no-checks"], work, env)


def _loop(suite: Path, work: Path, name: str, command: Callable[[Path, Path], list[str]]) -> tuple[float, float]:
    """One notebook at a time, a new process each: how a CI script calls these tools."""
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    t = time.perf_counter()
    cpu = 0.0
    for nb in sorted(suite.glob("*.ipynb")):
        cpu += timed(command(nb, out), work)[1]
    return time.perf_counter() - t, cpu


def run_nbconvert_loop(suite: Path, work: Path, jobs: int) -> tuple[float, float]:
    return _loop(suite, work, "nbconvert-out", lambda nb, out: [
        str(BIN / "jupyter"), "nbconvert", "--to", "notebook", "--execute", str(nb), "--output-dir", str(out)])


def run_papermill_loop(suite: Path, work: Path, jobs: int) -> tuple[float, float]:
    return _loop(suite, work, "papermill-out", lambda nb, out: [
        str(BIN / "papermill"), "--no-progress-bar", str(nb), str(out / nb.name)])


def run_nbmake(suite: Path, work: Path, jobs: int) -> tuple[float, float]:
    return timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake", "-n", str(jobs),
                  str(suite)], work)


# what each phase of gpu_runner.phases is, in the order a notebook meets them
PHASES = [
    ("startup", "start-up (imports, options, plan)"),
    ("prepare", "read and prepare the notebook"),
    ("kernel start", "kernel start (our side)"),
    ("execute", "execution bookkeeping (nbclient, messages, log)"),
    ("metrics", "metrics and sampling"),
    ("kernel shutdown", "kernel shutdown and sweep"),
    ("conclude", "conclude (result model)"),
    ("writes", "writes (ipynb, json, log.py)"),
    ("html", "HTML"),
    ("reports", "reports (junit, summary, dashboard)"),
    ("loop", "event loop I/O callbacks"),
    ("other", "other (threads, GC, exit)"),
]


def print_profile(prof: dict, indent: str = "  ") -> None:
    """gpu-runner's CPU per notebook by phase, the kernels' CPU, the wall time per stage."""
    n = max(int(prof.get("notebooks") or 0), 1)
    phases = prof.get("phases", {})
    kernels = prof.get("kernels", {})
    own, children = prof["cpu_s"], prof["children_cpu_s"]
    k_start, k_run = kernels.get("start_cpu_s", 0.0), kernels.get("run_cpu_s", 0.0)
    print(f"{indent}CPU per notebook: {(own + children) / n * 1000:6.1f} ms in all = gpu-runner "
          f"{own / n * 1000:.1f} ms + kernels and fork server {children / n * 1000:.1f} ms")
    print(f"{indent}  gpu-runner's own process, by phase (ms per notebook):")
    known = {k for k, _ in PHASES}
    rows = [(label, phases.get(key, {}).get("cpu_s", 0.0)) for key, label in PHASES]
    rows += [(key, v.get("cpu_s", 0.0)) for key, v in phases.items() if key not in known]
    for label, cpu in rows:
        print(f"{indent}    {label:<50} {cpu / n * 1000:7.1f}")
    print(f"{indent}  child processes (ms per notebook):")
    print(f"{indent}    {'kernel start-up (fork to ready)':<50} {k_start / n * 1000:7.1f}")
    print(f"{indent}    {'kernel running the cells, to shutdown':<50} {k_run / n * 1000:7.1f}")
    server, forked = kernels.get("fork_server_cpu_s"), kernels.get("forked_kernels_cpu_s")
    if server is not None and forked is not None:
        print(f"{indent}    {'kernel shutdown and exit':<50} {max(forked - k_start - k_run, 0.0) / n * 1000:7.1f}")
        print(f"{indent}    {'fork server (start-up, forks)':<50} {server / n * 1000:7.1f}")
        rest = children - server - forked
    else:
        rest = children - k_start - k_run
    print(f"{indent}    {'the rest (kernels not forked, checks...)':<50} {max(rest, 0.0) / n * 1000:7.1f}")
    stages = prof.get("stages_wall_s") or {}
    if stages:
        print(f"{indent}  wall per notebook in each stage (s; stages overlap across notebooks):")
        print(f"{indent}    " + ", ".join(f"{k} {v / n:.3f}" for k, v in stages.items()))


def profiled_run(suite: Path, work: Path, jobs: int) -> tuple[float, float, dict]:
    prof_path = work / "profile.json"
    prof_path.unlink(missing_ok=True)
    wall, cpu = run_gpu_runner(suite, work, jobs, profile=prof_path)
    return wall, cpu, json.loads(prof_path.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--notebooks", type=int, default=16)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip", action="append", default=[], help="tool to leave out (repeatable)")
    ap.add_argument("--scale", default="64,200",
                    help="notebook counts for the scale runs of gpu-runner, comma-separated ('' for none)")
    args = ap.parse_args()
    scale = [int(x) for x in args.scale.split(",") if x.strip()]

    tools = [
        ("gpu-runner", run_gpu_runner, args.jobs),
        ("nbconvert loop", run_nbconvert_loop, 1),
        ("papermill loop", run_papermill_loop, 1),
        (f"pytest --nbmake -n {args.jobs}", run_nbmake, args.jobs),
    ]
    with tempfile.TemporaryDirectory(prefix="gr-bench-") as tmp:
        work = Path(tmp)
        suite = work / "suite"
        cell_time = make_suite(suite, args.notebooks)
        print(f"{args.notebooks} notebooks x {len(CELL_SLEEPS)} code cells, {cell_time:.2f} s of cells in all; "
              f"jobs={args.jobs}; {os.cpu_count()} CPUs; median of {args.repeat} runs\n")
        walls: dict[str, float] = {}
        for name, fn, parallelism in tools:
            if any(s in name for s in args.skip):
                continue
            fn(suite, work, args.jobs)  # warm-up: imports in the page cache for everyone alike
            samples = [fn(suite, work, args.jobs) for _ in range(args.repeat)]
            wall = statistics.median(w for w, _ in samples)
            cpu = statistics.median(c for _, c in samples)
            walls[name] = wall
            overhead = (wall - cell_time / parallelism) / args.notebooks
            print(f"{name:<26} wall {wall:7.2f} s   overhead/notebook {overhead:6.3f} s   "
                  f"CPU/notebook {cpu / args.notebooks:6.3f} s   (runs: {', '.join(f'{w:.2f}' for w, _ in samples)})",
                  flush=True)
        base = walls.get("gpu-runner")
        if base:
            print()
            for name, wall in walls.items():
                if name != "gpu-runner":
                    print(f"gpu-runner is {wall / base:5.2f}x faster than {name}")
        if "gpu-runner" not in walls:
            return

        print(f"\nWhere gpu-runner's time goes ({args.notebooks} notebooks, one run with {PROFILE_ENV} set):")
        wall, _, prof = profiled_run(suite, work, args.jobs)
        print(f"  wall {wall:.2f} s")
        print_profile(prof)

        if scale:
            print(f"\nScale: one entry of N notebooks, one profiled run each (jobs={args.jobs})")
            print(f"  {'notebooks':>9}  {'wall s':>8}  {'overhead/notebook s':>19}  {'CPU/notebook s':>14}  "
                  f"{'gpu-runner peak RSS MiB':>23}")
            sizes = [(args.notebooks, suite, cell_time)]
            for count in scale:
                folder = work / f"suite-{count}"
                sizes.append((count, folder, make_suite(folder, count)))
            for count, folder, cells in sizes:
                wall, cpu, prof = profiled_run(folder, work, args.jobs)
                overhead = (wall - cells / args.jobs) / count
                print(f"  {count:>9}  {wall:>8.2f}  {overhead:>19.3f}  {cpu / count:>14.3f}  "
                      f"{prof['peak_rss_mib']:>23.1f}", flush=True)


if __name__ == "__main__":
    main()

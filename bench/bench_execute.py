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
``--repeat`` times; the median is reported, with the ratios of wall times.

    pip install -e '.[bench]'
    python bench/bench_execute.py [--notebooks 16] [--jobs N] [--repeat 3]
"""

from __future__ import annotations

import argparse
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


def timed(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}... exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return wall


def run_gpu_runner(suite: Path, work: Path, jobs: int) -> float:
    out = work / "gr-out"
    shutil.rmtree(out, ignore_errors=True)
    return timed([str(BIN / "gpu-runner"), "run", str(suite), "--out", str(out), "--jobs", str(jobs), "--no-pdf",
                  "--no-checks"], work)


def _loop(suite: Path, work: Path, name: str, command: Callable[[Path, Path], list[str]]) -> float:
    """One notebook at a time, a new process each: how a CI script calls these tools."""
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    t = time.perf_counter()
    for nb in sorted(suite.glob("*.ipynb")):
        timed(command(nb, out), work)
    return time.perf_counter() - t


def run_nbconvert_loop(suite: Path, work: Path, jobs: int) -> float:
    return _loop(suite, work, "nbconvert-out", lambda nb, out: [
        str(BIN / "jupyter"), "nbconvert", "--to", "notebook", "--execute", str(nb), "--output-dir", str(out)])


def run_papermill_loop(suite: Path, work: Path, jobs: int) -> float:
    return _loop(suite, work, "papermill-out", lambda nb, out: [
        str(BIN / "papermill"), "--no-progress-bar", str(nb), str(out / nb.name)])


def run_nbmake(suite: Path, work: Path, jobs: int) -> float:
    return timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake", "-n", str(jobs),
                  str(suite)], work)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--notebooks", type=int, default=16)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip", action="append", default=[], help="tool to leave out (repeatable)")
    args = ap.parse_args()

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
            wall = statistics.median(samples)
            walls[name] = wall
            overhead = (wall - cell_time / parallelism) / args.notebooks
            print(f"{name:<26} wall {wall:7.2f} s   overhead/notebook {overhead:6.3f} s   "
                  f"(runs: {', '.join(f'{s:.2f}' for s in samples)})", flush=True)
        base = walls.get("gpu-runner")
        if base:
            print()
            for name, wall in walls.items():
                if name != "gpu-runner":
                    print(f"gpu-runner is {wall / base:5.2f}x faster than {name}")


if __name__ == "__main__":
    main()

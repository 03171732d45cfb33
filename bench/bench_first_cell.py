"""Time to first cell on a fresh GPU VM: the run job's start-up, phase by phase, with the stand-ins.

    python bench/bench_first_cell.py [--repeat 3]

Plays what happens between "the VM is RUNNING" and "the first notebook cell has run":

1. ``startup``: the VM's startup script (rendered by ``gpu-runner start``) against the metadata
   and Compute Engine stand-ins, with the driver, user and firewall tools stubbed: reading the
   runner config, closing the metadata server, the GPU health check, the runner (found on the
   image, or downloaded: here from a local stand-in, so a real download of the runner release
   adds its own seconds), until the runner's ``run.sh`` starts;
2. ``job``: GitHub giving the job to the runner, then checking out the repositories: not
   simulated (GitHub's side), shown as such;
3. ``install``: the action's key and install steps for ``mode: run`` (.github/scripts/), from a
   warm cache, into a fresh private environment;
4. ``first cell``: ``gpu-runner run --matrix --entry`` on the entry's own VM (RUNNER_NAME is its
   label: the GPU count is enforced, with a stand-in ``nvidia-smi``), from its start to the first
   cell's log line: the runtime's interpreter probed, the system checks, the kernel, the cell. Once
   with a runtime that has ipykernel, once without (the kernel overlay from a warm cache), once
   without and a cold overlay cache (the runtime's pip installs it).

Prints seconds per phase (median of --repeat) and what pre-baking into the image saves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from bench_install import install_mode  # noqa: E402
from conftest import make_nb, make_runtime  # noqa: E402
from test_cloud_startup import VM  # noqa: E402
from test_checks import fixture_text, standin_smi  # noqa: E402

LABEL = "gpu-runner-local-1-smoke--l4"


def startup(work: Path, *, runner_on_image: bool) -> float:
    """Seconds from the startup script's start to the runner's run.sh."""
    work.mkdir(parents=True)
    stamp = work / "run-sh-started"
    vm = VM(work, gpus_listed=1, expected=1, runner_installed=runner_on_image,
            run_sh=f"#!/bin/bash\ndate +%s.%N > {stamp}\nexit 0\n")
    try:
        kw: dict[str, object] = {}
        if not runner_on_image:
            kw = {"runner_version": "2.999.0", "runner_sha256": vm.serve_release("2.999.0")}
        t0 = time.time()
        r = vm.run(**kw)
        if r.returncode != 0 or not stamp.exists():
            sys.exit(f"the startup script failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        return float(stamp.read_text()) - t0
    finally:
        vm.close()


MATRIX = """\
version: 1
gce: {project: bench-project, region: us-central1}
machines:
  l4: {machine_type: g2-standard-8, accelerator: {type: nvidia-l4, count: 1}, zones: [a]}
runtimes:
  smoke:
    notebooks: [notebooks/smoke.ipynb]
"""


def first_cell(work: Path, gpu_runner: Path, *, python: Path, cache: Path) -> float:
    """Seconds from ``gpu-runner run --entry`` starting to its first cell's log line."""
    repo = work / "repo"
    make_nb(repo / "notebooks", "smoke.ipynb", "x = 6 * 7", "print(x)")
    (repo / "matrix.yml").write_text(MATRIX)
    smi = standin_smi(work / "bin", text=fixture_text("l4"))
    env = {**os.environ, "PATH": f"{smi.parent}{os.pathsep}{os.environ['PATH']}", "RUNNER_NAME": LABEL,
           "GITHUB_RUN_ID": "local", "GITHUB_RUN_ATTEMPT": "1", "GPU_RUNNER_PYTHON": str(python),
           "GPU_RUNNER_CACHE_DIR": str(cache), "GITHUB_ACTIONS": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a VM writes bytecode as it imports, as Python does by default
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(gpu_runner), "run", "--matrix", "matrix.yml", "--entry", "smoke--l4", "--out",
                             str(work / "out"), "--no-pdf"], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if seen is None and " cell 1/" in line:
            seen = time.perf_counter() - t0
    proc.wait()
    if seen is None:
        sys.exit("no first cell:\n" + "".join(lines[-40:]))
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)
        print(f"  {name:<44} {value:6.2f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="gpu-runner-bench-first-") as tmp:
        tmpd = Path(tmp)
        pip_cache = tmpd / "pip-cache"
        print("warming the caches (untimed): the action's install for run, the kernel overlay", flush=True)
        _, _, venv = install_mode("run", tmpd / "warm-install", pip_cache)
        gpu_runner = venv / "bin" / "gpu-runner"
        bare = make_runtime(tmpd / "runtime-bare")  # no ipykernel: the overlay
        with_kernel = make_runtime(tmpd / "runtime-kernel")
        subprocess.run([str(with_kernel), "-m", "pip", "install", "-q", "--disable-pip-version-check", "ipykernel"],
                       check=True)
        warm_overlay = tmpd / "overlay-cache"
        first_cell(tmpd / "warm-first", gpu_runner, python=bare, cache=warm_overlay)
        for i in range(args.repeat):
            add("startup: runner on the image", startup(tmpd / f"s-img-{i}", runner_on_image=True))
            add("startup: runner downloaded (local stand-in)", startup(tmpd / f"s-dl-{i}", runner_on_image=False))
            inst, first, _ = install_mode("run", tmpd / f"install-{i}", pip_cache)
            add("install: the action's step, warm cache (uv)", inst + first)
            add("first cell: runtime with ipykernel", first_cell(tmpd / f"f-k-{i}", gpu_runner, python=with_kernel,
                                                                  cache=tmpd / f"unused-{i}"))
            add("first cell: no ipykernel, overlay cached", first_cell(tmpd / f"f-w-{i}", gpu_runner, python=bare,
                                                                        cache=warm_overlay))
            add("first cell: no ipykernel, overlay installed", first_cell(tmpd / f"f-c-{i}", gpu_runner, python=bare,
                                                                           cache=tmpd / f"cold-{i}"))
            shutil.rmtree(tmpd / f"install-{i}", ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\nmedian of {args.repeat}; GitHub's job assignment and checkout are not simulated (typically seconds)")
    for k, v in med.items():
        print(f"{k:<46}{v:7.2f} s")
    best = med["startup: runner on the image"] + med["install: the action's step, warm cache (uv)"] + \
        med["first cell: runtime with ipykernel"]
    worst = med["startup: runner downloaded (local stand-in)"] + med["install: the action's step, warm cache (uv)"] + \
        med["first cell: no ipykernel, overlay installed"]
    print(textwrap.dedent(f"""
        VM running -> first cell, without GitHub's part: {best:.1f} s with the runner and ipykernel in the image,
        {worst:.1f} s with neither (plus the runner's real download). Pre-baking ipykernel into the runtime saves
        {med['first cell: no ipykernel, overlay installed'] - med['first cell: runtime with ipykernel']:.1f} s per VM."""))


if __name__ == "__main__":
    main()

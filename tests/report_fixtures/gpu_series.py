"""A real ``gpu-runner run`` of a notebook that plays a known GPU series through the NVML stand-in.

Each cell sets what the stand-in reports next (memory in use on GPU 0, its utilisation, and how
much of it the kernel's own process holds), so the samples can only ever see these values, and
each cell ends holding its value (the sample taken as a cell ends sees it for certain):

    cell 2 (setup)  300 MiB      cell 4  6,000 MiB    cell 6  400 MiB (freed; a sample taken
    cell 3        1,000 MiB      cell 5  8,000 MiB            just before may still see 8,000)

GPU 1 holds 200 MiB of another process throughout and does nothing.
"""

from __future__ import annotations

from pathlib import Path

from conftest import gpu_runner, make_nb
from standins.nvml import env as nvml_env
from standins.nvml import write_state

PROCESS_MIB = {1: 300.0, 2: 1000.0, 3: 6000.0, 4: 8000.0}
"""Cell index -> the kernel's GPU memory that cell leaves (and its peak)."""
LAST_CELL = 5
LAST_MIB = 400.0
OTHER_MIB = 500.0  # device 0 in use beyond the kernel's own (CUDA context, other processes)
UTIL = {1: 5, 2: 30, 3: 95, 4: 99, 5: 0}
PLAYED_PROCESS_MIB = {0.0, *PROCESS_MIB.values(), LAST_MIB}

SETUP = '''\
import json, os, time
def gpu(mine, util):
    path = os.environ["NVML_STANDIN_STATE"]
    with open(path) as f:
        state = json.load(f)
    state["used_mib"][0] = mine + {other}
    state["util"][0] = util
    state["procs"] = {{str(os.getpid()): [0, mine], "424242": [1, 200]}}
    with open(path + ".cell", "w") as f:
        json.dump(state, f)
    os.replace(path + ".cell", path)
gpu({m1}, {u1})'''.format(other=OTHER_MIB, m1=PROCESS_MIB[1], u1=UTIL[1])


def write_notebook(folder: Path) -> Path:
    return make_nb(
        folder, "gpu_series.ipynb",
        ("md", "# A known GPU series"),
        SETUP,
        f"gpu({PROCESS_MIB[2]}, {UTIL[2]})\ntime.sleep(0.3)",
        f"gpu({PROCESS_MIB[3]}, {UTIL[3]})\ntime.sleep(0.6)",
        f"gpu({PROCESS_MIB[4]}, {UTIL[4]})\ntime.sleep(0.3)",
        f"gpu({LAST_MIB}, {UTIL[5]})\ntime.sleep(0.2)\nprint('done')",
    )


def run(root: Path, *extra: str) -> Path:
    """Run the notebook with ``gpu-runner run`` in ``root``; returns the results folder."""
    root.mkdir(parents=True, exist_ok=True)
    write_notebook(root / "nbs")
    state = write_state(root / "nvml.json", used_mib=[OTHER_MIB, 200.0], util=[0, 0],
                        procs={424242: (1, 200.0)})
    env = {**nvml_env(state), "GPU_RUNNER_SAMPLE_INTERVAL_S": "0.1"}
    r = gpu_runner("run", "nbs", "--no-checks", "-j", "1", "--out", "results", *extra, cwd=root, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return root / "results"

"""``gpu-runner history`` over a large cache: 50 runs x 20 entries x 20 notebooks.

    .venv/bin/python bench/bench_history.py [--runs 50] [--entries 20] [--notebooks 20] [--keep DIR]

Builds a cache as ``gpu-runner fetch`` leaves it (each entry's results.json in its artifact's
folder, and the run's digest.json written by the same code fetch uses), then times:

* digest    making every run's digest.json from its results.json files (what fetch does once per run);
* history   ``gpu-runner history --offline`` on that cache (JSON, page, and the dashboards' links): what
            every later call costs.

Goal: history in a few seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from gpu_runner.cli import main
from gpu_runner.github.fetch import write_digest
from gpu_runner.results import EntryInfo, EntryResult, NotebookResult

REPO = "octo-org/runtime"


def build(cache: Path, runs: int, entries: int, notebooks: int) -> list[Path]:
    rng = random.Random(7)
    folders = []
    for r in range(runs):
        rid = 100000 + r
        folder = cache / "octo-org" / "runtime" / str(rid) / "1"
        for e in range(entries):
            runtime, machine = f"rt{e % 4}", f"m{e // 4}"
            eid = f"{runtime}--{machine}"
            nbs = [NotebookResult(path=f"nbs/n{n:02d}.ipynb", dir=f"notebooks/nbs/n{n:02d}",
                                  status="failed" if rng.random() < 0.03 else "passed",
                                  duration_s=10 + n + rng.random() + (r * 0.2 if n == 0 else 0),
                                  gpu_peak_memory_mib=1000 + 10 * n + rng.random()) for n in range(notebooks)]
            res = EntryResult(entry=EntryInfo(id=eid, runtime=runtime, machine=machine, provider="gce",
                                              ran_locally=False, matrix_position=[e % 4, e // 4]),
                              status="failed" if any(x.status == "failed" for x in nbs) else "passed",
                              started_at="", finished_at="", duration_s=sum(x.duration_s for x in nbs), notebooks=nbs)
            res.write(folder / "results" / f"gpu-runner-{eid}" / eid)
        meta = {"id": rid, "run_number": r + 1, "attempt": 1, "head_branch": "main", "head_sha": f"{r:040x}",
                "event": "push", "status": "completed", "conclusion": "success", "html_url": None,
                "created_at": f"2025-{1 + r // 28:02d}-{1 + r % 28:02d}T10:00:00Z", "duration_s": 900.0}
        (folder / "run.json").write_text(json.dumps({"run": meta, "artifacts": {}}))
        folders.append(folder)
    return folders


def main_() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--entries", type=int, default=20)
    ap.add_argument("--notebooks", type=int, default=20)
    ap.add_argument("--keep", type=Path, default=None)
    a = ap.parse_args()
    tmp = Path(a.keep or tempfile.mkdtemp(prefix="bench-history-"))
    cache = tmp / "cache"
    os.environ.update({"GPU_RUNNER_CACHE_DIR": str(cache), "GITHUB_REPOSITORY": REPO})
    os.environ.pop("GITHUB_ACTIONS", None)
    t = time.perf_counter()
    folders = build(cache, a.runs, a.entries, a.notebooks)
    print(f"built {a.runs} runs x {a.entries} entries x {a.notebooks} notebooks in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    for folder in folders:
        meta = json.loads((folder / "run.json").read_text())["run"]
        write_digest(folder, meta, {})
    print(f"digest   {time.perf_counter() - t:6.2f} s  ({a.runs} runs, once per run at fetch time)")
    for label in ("history", "history (again)"):
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            try:
                main(["history", "--offline", "--runs", str(a.runs), "--format", "json", "--out", str(tmp / "hist")])
            except SystemExit as e:
                if e.code:
                    sys.exit(e.code)
        took = time.perf_counter() - t
        cells = len(json.loads(printed.getvalue())["cells"])
        print(f"{label:<16} {took:6.2f} s  ({a.runs * a.entries * a.notebooks} notebook results, {cells} cells)")
    if a.keep is None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main_()

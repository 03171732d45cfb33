"""Start 32 entries at once against the Compute Engine and GitHub stand-ins.

    python bench/bench_start.py [--entries 32] [--boot 2] [--stockout 0.1] [--poll 0.5]

Each VM takes --boot seconds to run (simulated), --stockout of inserts fail with
ZONE_RESOURCE_POOL_EXHAUSTED (the ladder moves to the next zone). Prints the wall time of one
start, of all N started at once (the goal is <= 1.5x the single start: the starts do not
serialise on anything), API calls per entry, and checks that stopping them leaves nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from standins.compute import ComputeStandIn  # noqa: E402
from standins.github import GitHubStandIn  # noqa: E402

REPO = "octo-org/runtime"


def matrix(n: int) -> str:
    runtimes = "\n".join(f"  r{i:02d}:\n    notebooks: [nb.ipynb]" for i in range(n))
    return f"""version: 1
gce: {{project: bench-project, region: us-central1}}
defaults:
  machine: {{zones: [a, b, c, f], spot: preferred}}
machines:
  l4:
    machine_type: g2-standard-8
    accelerator: {{type: nvidia-l4, count: 1}}
runtimes:
{runtimes}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=32)
    ap.add_argument("--boot", type=float, default=2.0, help="simulated seconds from insert to RUNNING")
    ap.add_argument("--stockout", type=float, default=0.1, help="share of inserts that hit a stockout")
    ap.add_argument("--poll", type=float, default=0.5, help="start's poll interval (default 5 s in real use)")
    args = ap.parse_args()

    gh = GitHubStandIn(repo=REPO).start()
    compute = ComputeStandIn(github=gh, boot_s=args.boot).start()
    compute.stockout_rate = args.stockout
    os.environ.update(GPU_RUNNER_COMPUTE_EMULATOR_HOST=compute.address, GITHUB_API_URL=gh.url,
                      GITHUB_TOKEN="test-token", GITHUB_REPOSITORY=REPO, GITHUB_RUN_ID="777", GITHUB_RUN_ATTEMPT="1")
    from gpu_runner.cloud import lifecycle
    from gpu_runner.plan import find_entry

    tmp = Path(tempfile.mkdtemp(prefix="bench-start-"))
    (tmp / "nb.ipynb").write_text("{}")
    (tmp / "m.yml").write_text(matrix(args.entries))
    entries = [find_entry(tmp / "m.yml", f"r{i:02d}--l4") for i in range(args.entries)]
    opts = lifecycle.StartOptions(poll_s=args.poll, online_timeout_s=120)

    def one(entry):
        ctx = lifecycle.make_context("bench-project", log=lambda _m: None)
        return lifecycle.start(ctx, entry, opts)

    def stop(entry):
        ctx = lifecycle.make_context("bench-project", log=lambda _m: None)
        lifecycle.stop(ctx, entry.label)

    compute.stockout_rate = 0.0  # the single start: no stockout, the best case
    t0 = time.perf_counter()
    one(entries[0])
    single = time.perf_counter() - t0
    stop(entries[0])
    compute.calls.clear()
    gh.calls.clear()

    compute.stockout_rate = args.stockout
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.entries) as pool:
        started = list(pool.map(one, entries))
    wall = time.perf_counter() - t0
    calls_c, calls_g = compute.total_calls(), gh.total_calls()
    by_call = {**dict(compute.calls), **dict(gh.calls)}
    ladder = compute.calls["instances.insert"] - args.entries
    with ThreadPoolExecutor(max_workers=args.entries) as pool:
        list(pool.map(stop, entries))
    left_vms, left_runners = compute.count(), gh.count()
    compute.stop()
    gh.stop()

    n = args.entries
    print(f"boot {args.boot:g}s, stockouts {args.stockout:.0%}, poll {args.poll:g}s")
    print(f"one entry:            {single:6.2f} s")
    print(f"{n} entries at once:   {wall:6.2f} s   ({wall / single:.2f}x one entry; goal <= 1.5x)")
    print(f"zones tried after a stockout: {ladder}; models: "
          f"{', '.join(sorted({s.provisioning_model for s in started}))}")
    print(f"API calls per entry:  Compute Engine {calls_c / n:.1f}, GitHub {calls_g / n:.1f} "
          f"(starts only: {by_call})")
    print(f"left after stop:      {left_vms} VM(s), {left_runners} registration(s)")
    if left_vms or left_runners:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""What the action installs per mode: seconds and megabytes, against installing everything.

    python bench/bench_install.py [--repeat 1] [--modes run,run:pip,plan,start,report,comment]

Each alternative goes into a fresh virtual environment, from the same warm pip cache (filled
once, untimed, by installing everything), the way the action's install step does it
(.github/scripts/action-key.sh picks the mode's extras, action-install.sh installs them):

* ``everything``: what the action installed before extras existed, in every mode:
  ``pip install gpu-runner[all]`` (every dependency, bytecode compiled at install time);
* ``run``: what the run job installs on the GPU VM (``run`` and ``check``: no cloud client, no
  browser driver, no bytecode at install time), with uv (the action's default installer);
  ``run:pip`` the same with pip; likewise ``plan``, ``start`` (``stop``, ``janitor``), ``report``
  and ``comment``.

Prints seconds (install, and the first ``gpu-runner --version``, which pays for any bytecode
left to compile) and megabytes beyond what an empty virtual environment holds, and the ratios
against ``everything``. Goal for ``run``: at most 150 MB, at most a third of the time.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / ".github" / "scripts"


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def install_mode(name: str, work: Path, cache: Path) -> tuple[float, float, Path]:
    """The action's key and install steps for ``mode[:installer]``; (install seconds, first-run seconds, venv)."""
    mode, _, installer = name.partition(":")
    temp = work / "temp"
    temp.mkdir(parents=True)
    out = work / "github_output"
    out.write_text("")
    env = {**os.environ, "GITHUB_ACTION_PATH": str(ROOT), "GITHUB_OUTPUT": str(out), "RUNNER_TEMP": str(temp),
           "GPU_RUNNER_MODE": mode, "GPU_RUNNER_VENV_PYTHON": sys.executable, "PIP_CACHE_DIR": str(cache),
           "GPU_RUNNER_INSTALLER": installer or "uv"}
    subprocess.run(["bash", str(SCRIPTS / "action-key.sh")], env=env, check=True, capture_output=True)
    key = _outputs(out)
    env.update({"GPU_RUNNER_VENV": key["venv"], "GPU_RUNNER_STAMP": key["stamp"], "GPU_RUNNER_EXTRAS": key["extras"]})
    t0 = time.perf_counter()
    p = subprocess.run(["bash", str(SCRIPTS / "action-install.sh")], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{name}: the action's install step failed:\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    installed = time.perf_counter() - t0
    venv = Path(key["venv"])
    return installed, first_run(venv), venv


def install_everything(work: Path, cache: Path) -> tuple[float, float, Path]:
    """Before extras: one venv, every dependency, bytecode compiled by pip."""
    venv = work / "venv"
    env = {**os.environ, "PIP_CACHE_DIR": str(cache)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"{ROOT}[all]"], check=True, env=env, capture_output=True)
    return time.perf_counter() - t0, first_run(venv), venv


def first_run(venv: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(venv / "bin" / "gpu-runner"), "--version"], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--modes", default="run,run:pip,plan,start,report,comment")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    with tempfile.TemporaryDirectory(prefix="gpu-runner-bench-install-") as tmp:
        tmpd = Path(tmp)
        cache = tmpd / "pip-cache"
        empty = tmpd / "empty"
        subprocess.run([sys.executable, "-m", "venv", str(empty)], check=True)
        base_mb = size_mb(empty)
        print("warming the caches (untimed): everything, once with pip, each mode once", flush=True)
        install_everything(tmpd / "warm", cache)
        for name in modes:
            install_mode(name, tmpd / f"warm-{name.replace(':', '-')}", cache)
        rows: dict[str, list[tuple[float, float, float]]] = {}
        for i in range(args.repeat):
            for name in ["everything", *modes]:
                work = tmpd / f"{name.replace(':', '-')}-{i}"
                work.mkdir()
                inst, first, venv = (install_everything(work, cache) if name == "everything"
                                     else install_mode(name, work, cache))
                rows.setdefault(name, []).append((inst, first, size_mb(venv) - base_mb))
                shutil.rmtree(work, ignore_errors=True)
                print(f"  {name:<10} {inst:6.1f} s install  {first:5.2f} s first run  {rows[name][-1][2]:7.1f} MB",
                      flush=True)
    ref = rows["everything"]
    ref_s = statistics.median(r[0] + r[1] for r in ref)
    ref_mb = statistics.median(r[2] for r in ref)
    print(f"\nmedian of {args.repeat}; MB beyond an empty venv ({base_mb:.0f} MB); "
          f"time = install + first `gpu-runner --version`")
    print(f"{'set':<12}{'seconds':>9}{'MB':>9}{'time vs everything':>21}{'size vs everything':>21}")
    for name, rs in rows.items():
        s = statistics.median(r[0] + r[1] for r in rs)
        mb = statistics.median(r[2] for r in rs)
        print(f"{name:<12}{s:9.1f}{mb:9.1f}{s / ref_s:20.2f}x{mb / ref_mb:20.2f}x")
    run = rows.get("run")
    if run:
        s = statistics.median(r[0] + r[1] for r in run)
        mb = statistics.median(r[2] for r in run)
        print(f"\nrun job on the GPU VM: {mb:.0f} MB (goal <= 150), {s:.1f} s = {ref_s / s:.1f}x faster than "
              f"everything (goal >= 3x)")


if __name__ == "__main__":
    main()

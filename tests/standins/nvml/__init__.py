"""The NVML stand-in: ``pynvml.py`` here answers like nvidia-ml-py from a JSON state file.

In-process tests import it as ``standins.nvml.pynvml``; a real ``gpu-runner run`` finds it as
``pynvml`` when this folder comes first on PYTHONPATH (:func:`env`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent
STATE_ENV = "NVML_STANDIN_STATE"


def write_state(path: Path, *, used_mib: list[float], util: list[float], procs: dict[int, tuple[int, float]] | None = None,
                names: list[str] | None = None, total_mib: float = 23034, driver: str = "550.54.15") -> Path:
    """Replace the state file atomically (the reader never sees half of it)."""
    names = names or ["NVIDIA L4"] * len(used_mib)
    state: dict[str, Any] = {
        "devices": [{"name": n, "total_mib": total_mib} for n in names],
        "used_mib": list(used_mib), "util": list(util),
        "procs": {str(pid): [dev, mib] for pid, (dev, mib) in (procs or {}).items()}, "driver": driver,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, path)
    return path


def env(state: Path) -> dict[str, str]:
    """What a subprocess needs to load the stand-in as ``pynvml``."""
    old = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(FOLDER) + (os.pathsep + old if old else ""), STATE_ENV: str(state)}

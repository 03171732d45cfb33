"""A stand-in for nvidia-ml-py's ``pynvml`` module: the GPUs it reports are what a JSON file says.

Put this folder first on PYTHONPATH and point ``NVML_STANDIN_STATE`` at a JSON file::

    {"devices": [{"name": "NVIDIA L4", "total_mib": 23034}, ...],
     "used_mib": [1000, 500], "util": [50, 10], "procs": {"<pid>": [<device>, <MiB>], ...},
     "driver": "550.54.15"}

The file is read on every call, so whoever writes it (a test, or a notebook's cells: that is how
a test plays a known series against a real run) decides what the next sample sees. Without the
variable, or with ``{"devices": []}``, there is no GPU. Only the calls gpu-runner makes exist;
anything else raises AttributeError as an older library would.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

STATE_ENV = "NVML_STANDIN_STATE"


class NVMLError(Exception):
    pass


def _state() -> dict:
    path = os.environ.get(STATE_ENV)
    if not path:
        raise NVMLError("NVML Shared Library Not Found")
    for _ in range(20):  # a writer replaces the file atomically; a torn read is retried
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            continue
    raise NVMLError("Unknown Error")


_initialised = False


def nvmlInit() -> None:
    global _initialised
    _state()
    _initialised = True


def nvmlShutdown() -> None:
    global _initialised
    _initialised = False


def _devices() -> list[dict]:
    if not _initialised:
        raise NVMLError("Uninitialized")
    return _state().get("devices", [])


def nvmlDeviceGetCount() -> int:
    return len(_devices())


def nvmlDeviceGetHandleByIndex(i: int) -> int:
    if not 0 <= i < len(_devices()):
        raise NVMLError("Invalid Argument")
    return i


def nvmlDeviceGetName(h: int) -> str:
    return _devices()[h]["name"]


def nvmlSystemGetDriverVersion() -> str:
    return _state().get("driver", "550.54.15")


def nvmlDeviceGetMemoryInfo(h: int) -> SimpleNamespace:
    s = _state()
    total = s["devices"][h].get("total_mib", 23034)
    used = s.get("used_mib", [0] * len(s["devices"]))[h]
    return SimpleNamespace(total=int(total * 2**20), used=int(used * 2**20), free=int((total - used) * 2**20))


def nvmlDeviceGetUtilizationRates(h: int) -> SimpleNamespace:
    s = _state()
    return SimpleNamespace(gpu=int(s.get("util", [0] * len(s["devices"]))[h]), memory=0)


def nvmlDeviceGetComputeRunningProcesses(h: int) -> list[SimpleNamespace]:
    procs = _state().get("procs", {})
    return [SimpleNamespace(pid=int(pid), usedGpuMemory=int(mib * 2**20))
            for pid, (dev, mib) in procs.items() if dev == h]

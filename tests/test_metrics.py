"""GPU sampling arithmetic, with a stand-in for the NVML library (this machine has no GPU).

Our Sampler and Nvml wrapper are the real code; only the ``pynvml`` module they call is replaced.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

from gpu_runner.execute.metrics import Nvml, Sampler


class FakeNvml:
    """Answers like pynvml for two GPUs whose figures the test sets."""

    def __init__(self, used_mib=(1000, 500), util=(50, 10), procs=None):
        self.used_mib, self.util, self.procs = list(used_mib), list(util), procs or {}
        self.shut = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetCount(self):
        return len(self.used_mib)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA L4"

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=self.used_mib[h] * 2**20, total=23034 * 2**20)

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=self.util[h])

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=pid, usedGpuMemory=mib * 2**20) for pid, (dev, mib) in self.procs.items() if dev == h]


def _child():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])


def test_gpu_memory_is_the_kernels_own_when_nvml_sees_its_processes():
    kernel = _child()
    try:
        nv = FakeNvml(procs={kernel.pid: (0, 300), 999999: (1, 4000)})  # another process on GPU 1
        s = Sampler(nvml=Nvml(nv))
        t = s.track(kernel.pid)
        s.sample_all()
        nv.procs[kernel.pid] = (0, 700)
        nv.util = [90, 30]
        s.sample_all()
        gpu = s.untrack(t)["gpu"]
        assert gpu["scope"] == "process" and gpu["peak_memory_mib"] == 700
        assert gpu["mean_utilization_pct"] == (30 + 60) / 2  # mean over devices, then over samples
        assert s.facts() == {"gpu_count": 2, "gpus": [{"index": 0, "name": "NVIDIA L4", "memory_total_mib": 23034},
                                                      {"index": 1, "name": "NVIDIA L4", "memory_total_mib": 23034}],
                             "gpu_model": "NVIDIA L4", "driver_version": "550.54.15"}
    finally:
        kernel.kill()
        kernel.wait()


def test_without_matching_pids_the_device_memory_in_use_is_reported():
    """In a container with its own PID namespace NVML's PIDs are the host's: fall back to the device."""
    kernel = _child()
    try:
        nv = FakeNvml(used_mib=(1200, 800), procs={424242: (0, 1200)})
        s = Sampler(nvml=Nvml(nv))
        t = s.track(kernel.pid)
        s.sample_all()
        gpu = s.untrack(t)["gpu"]
        assert gpu["scope"] == "device" and gpu["peak_memory_mib"] == 2000
    finally:
        kernel.kill()
        kernel.wait()


def test_no_gpu_means_null_gpu_figures_and_a_reason():
    class NoDriver(FakeNvml):
        def nvmlInit(self):
            raise OSError("NVML Shared Library Not Found")

    nv = Nvml(NoDriver())
    assert not nv.available and "NVML Shared Library Not Found" in nv.reason
    s = Sampler(nvml=nv)
    t = s.track(os.getpid())
    s.sample_all()
    m = s.untrack(t)
    assert m["gpu"] is None and m["peak_rss_mib"] > 0
    assert s.facts() == {"gpu_count": 0, "gpus": []}

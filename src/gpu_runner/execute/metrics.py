"""Resource figures per notebook: the kernel's peak RSS and, with a GPU, NVML samples.

One sampler per run polls every live kernel's process tree (psutil) and every GPU (NVML)
at a fixed interval. The kernel process's own peak is also read from the OS high-water
mark (``VmHWM``), so a spike between two samples is not missed.

GPU memory is attributed to a notebook by the processes of its kernel's tree when NVML
reports per-process usage with PIDs we can see ("process" scope); in containers with
their own PID namespace it cannot, and the figure is the device's memory in use while
the notebook ran ("device" scope). Utilisation is always device-wide.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

import psutil

SAMPLE_INTERVAL_S = 0.5


class Nvml:
    """A thin, failure-tolerant view of NVML (nvidia-ml-py). ``available`` is False without a GPU."""

    def __init__(self, module: Any | None = None) -> None:
        self.available = False
        self.reason = ""
        self.devices: list[Any] = []
        self._nv = module
        try:
            if self._nv is None:
                import pynvml as nv  # from nvidia-ml-py

                self._nv = nv
            self._nv.nvmlInit()
            count = self._nv.nvmlDeviceGetCount()
            self.devices = [self._nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self.available = count > 0
            if not self.available:
                self.reason = "NVML found no GPU"
        except Exception as e:  # noqa: BLE001 - no driver, no library, no device: all mean "no GPU"
            self.reason = f"NVML: {e}" if str(e) else f"NVML: {type(e).__name__}"

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for i, h in enumerate(self.devices):
            try:
                name = self._nv.nvmlDeviceGetName(h)
                mem = self._nv.nvmlDeviceGetMemoryInfo(h)
                out.append({
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "memory_total_mib": round(mem.total / 2**20),
                })
            except Exception:  # noqa: BLE001
                out.append({"index": i})
        return out

    def driver_version(self) -> str | None:
        try:
            v = self._nv.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else v
        except Exception:  # noqa: BLE001
            return None

    def sample(self) -> tuple[list[float], list[float], dict[int, float]]:
        """(memory used MiB per device, utilisation % per device, {pid: MiB})."""
        used, util, per_pid = [], [], {}
        for h in self.devices:
            try:
                used.append(self._nv.nvmlDeviceGetMemoryInfo(h).used / 2**20)
                util.append(float(self._nv.nvmlDeviceGetUtilizationRates(h).gpu))
                for p in self._nv.nvmlDeviceGetComputeRunningProcesses(h):
                    mem = getattr(p, "usedGpuMemory", None)
                    if mem is not None:
                        per_pid[p.pid] = per_pid.get(p.pid, 0.0) + mem / 2**20
            except Exception:  # noqa: BLE001 - a GPU that fell off the bus: keep sampling the rest
                continue
        return used, util, per_pid

    def shutdown(self) -> None:
        if self.available:
            with contextlib.suppress(Exception):
                self._nv.nvmlShutdown()


_GPU_PRESENCE: tuple[bool, str] | None = None


def gpu_presence() -> tuple[bool, str]:
    """(is there an NVIDIA GPU here, and if not, why we think so). Cached."""
    global _GPU_PRESENCE
    if _GPU_PRESENCE is None:
        nv = Nvml()
        if nv.available:
            _GPU_PRESENCE = (True, f"{len(nv.devices)} GPU(s) via NVML")
        else:
            smi = shutil.which("nvidia-smi")
            if smi is None:
                _GPU_PRESENCE = (False, f"no NVIDIA GPU found (nvidia-smi not on PATH; {nv.reason})")
            else:
                try:
                    r = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
                    gpus = [l for l in r.stdout.splitlines() if l.startswith("GPU ")]
                    _GPU_PRESENCE = (
                        (True, f"{len(gpus)} GPU(s) via nvidia-smi") if r.returncode == 0 and gpus
                        else (False, f"no NVIDIA GPU found (nvidia-smi -L exited {r.returncode}; {nv.reason})")
                    )
                except (OSError, subprocess.TimeoutExpired) as e:
                    _GPU_PRESENCE = (False, f"no NVIDIA GPU found (nvidia-smi failed: {e})")
        nv.shutdown()
    return _GPU_PRESENCE


def _hwm_mib(pid: int) -> float | None:
    """The OS's peak-RSS high-water mark of one process (Linux), in MiB."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class Track:
    """Samples for one notebook while its kernel runs."""

    pid: int
    peak_rss_mib: float = 0.0
    gpu_process_peak_mib: float = 0.0
    gpu_device_peak_mib: float = 0.0
    gpu_process_seen: bool = False
    gpu_sampled: bool = False
    gpu_util_sum: float = 0.0
    gpu_util_n: int = 0
    samples: int = 0
    _proc: Any = field(default=None, repr=False)

    def tree(self) -> list[psutil.Process]:
        try:
            if self._proc is None:
                self._proc = psutil.Process(self.pid)
            return [self._proc, *self._proc.children(recursive=True)]
        except psutil.Error:
            return []

    def result(self) -> dict[str, Any]:
        hwm = _hwm_mib(self.pid)
        peak = max(self.peak_rss_mib, hwm or 0.0)
        return {
            "peak_rss_mib": round(peak, 1) if peak else None,
            "samples": self.samples,
            "gpu": None
            if not self.gpu_sampled
            else {
                "peak_memory_mib": round(
                    self.gpu_process_peak_mib if self.gpu_process_seen else self.gpu_device_peak_mib, 1
                ),
                "mean_utilization_pct": round(self.gpu_util_sum / self.gpu_util_n, 1) if self.gpu_util_n else None,
                "scope": "process" if self.gpu_process_seen else "device",
                "samples": self.gpu_util_n,
            },
        }


class Sampler:
    """Samples every tracked kernel every ``interval`` seconds while the run lasts."""

    def __init__(self, interval: float = SAMPLE_INTERVAL_S, nvml: Nvml | None = None) -> None:
        self.interval = interval
        self.nvml = nvml if nvml is not None else Nvml()
        self._tracks: dict[int, Track] = {}
        self._task: asyncio.Task[None] | None = None

    def facts(self) -> dict[str, Any]:
        if not self.nvml.available:
            return {"gpu_count": 0, "gpus": []}
        gpus = self.nvml.describe()
        return {
            "gpu_count": len(gpus),
            "gpus": gpus,
            "gpu_model": gpus[0].get("name") if gpus else None,
            "driver_version": self.nvml.driver_version(),
        }

    def track(self, pid: int) -> Track:
        t = Track(pid=pid)
        self._tracks[pid] = t
        self.sample_one(t)
        return t

    def untrack(self, track: Track) -> dict[str, Any]:
        self.sample_one(track)
        result = track.result()
        # the high-water mark is only readable while the process lives: read it now
        self._tracks.pop(track.pid, None)
        return result

    def sample_one(self, t: Track, gpu: tuple[list[float], list[float], dict[int, float]] | None = None) -> None:
        procs = t.tree()
        rss = 0.0
        pids = set()
        for p in procs:
            try:
                rss += p.memory_info().rss / 2**20
                pids.add(p.pid)
            except psutil.Error:
                continue
        hwm = _hwm_mib(t.pid)
        t.peak_rss_mib = max(t.peak_rss_mib, rss, hwm or 0.0)
        t.samples += 1
        if gpu is not None:
            used, util, per_pid = gpu
            mine = [mib for pid, mib in per_pid.items() if pid in pids]
            t.gpu_sampled = True
            t.gpu_process_seen = t.gpu_process_seen or bool(mine)
            t.gpu_process_peak_mib = max(t.gpu_process_peak_mib, sum(mine))
            t.gpu_device_peak_mib = max(t.gpu_device_peak_mib, sum(used))
            if util:
                t.gpu_util_sum += sum(util) / len(util)
                t.gpu_util_n += 1

    def sample_all(self) -> None:
        gpu = self.nvml.sample() if self.nvml.available else None
        for t in list(self._tracks.values()):
            self.sample_one(t, gpu)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self.sample_all)
            except Exception:  # noqa: BLE001 - sampling must never break a run
                pass

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.nvml.shutdown()

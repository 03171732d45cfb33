"""Resource figures per notebook: the kernel's peak RSS and, with a GPU, NVML samples.

One sampler per run polls every live kernel's process tree (psutil) and every GPU (NVML)
at a fixed interval. The kernel process's own peak is also read from the OS high-water
mark (``VmHWM``), so a spike between two samples is not missed.

GPU memory is attributed to a notebook by the processes of its kernel's tree when NVML
reports per-process usage with PIDs we can see ("process" scope); in containers with
their own PID namespace it cannot, and the figure is the device's memory in use while
the notebook ran ("device" scope). Utilisation is always device-wide.

Besides the peaks, each notebook keeps a bounded time series (:class:`Timeline`: at most
:data:`MAX_POINTS` points, each the peak of memory and the mean of utilisation over its
stretch of time, so the peaks survive downsampling) and per-cell peaks: the engine says when
each cell starts and ends, every sample taken meanwhile counts for that cell, and one more is
taken as the cell ends, so a short cell that leaves memory allocated is not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from ..phases import phase

SAMPLE_INTERVAL_S = 0.5
SAMPLE_INTERVAL_ENV = "GPU_RUNNER_SAMPLE_INTERVAL_S"
MAX_POINTS = 240
"""At most this many points per notebook's time series (metrics.json and results.json)."""


def sample_interval() -> float:
    """The sampling interval: ``GPU_RUNNER_SAMPLE_INTERVAL_S`` (0.05 to 60 s), else 0.5 s."""
    raw = os.environ.get(SAMPLE_INTERVAL_ENV, "").strip()
    try:
        value = float(raw) if raw else SAMPLE_INTERVAL_S
    except ValueError:
        return SAMPLE_INTERVAL_S
    return min(max(value, 0.05), 60.0) if math.isfinite(value) else SAMPLE_INTERVAL_S


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

    def sample(self) -> tuple[list[float | None], list[float | None], dict[int, float]]:
        """(memory used MiB per device, utilisation % per device, {pid: MiB}); a device that
        does not answer is None in both lists, so index i is always device i."""
        used: list[float | None] = []
        util: list[float | None] = []
        per_pid: dict[int, float] = {}
        for h in self.devices:
            mem_i: float | None = None
            util_i: float | None = None
            try:
                mem_i = self._nv.nvmlDeviceGetMemoryInfo(h).used / 2**20
                util_i = float(self._nv.nvmlDeviceGetUtilizationRates(h).gpu)
                for p in self._nv.nvmlDeviceGetComputeRunningProcesses(h):
                    mem = getattr(p, "usedGpuMemory", None)
                    if mem is not None:
                        per_pid[p.pid] = per_pid.get(p.pid, 0.0) + mem / 2**20
            except Exception:  # noqa: BLE001 - a GPU that fell off the bus: keep sampling the rest
                pass
            used.append(mem_i)
            util.append(util_i)
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


class Timeline:
    """A bounded time series of one notebook: at most ``max_points`` buckets of ``width`` seconds.

    A sample falls into bucket ``floor(t / width)``; a bucket keeps the peak of every memory
    figure and the mean of each device's utilisation. When there are more than ``max_points``
    buckets the width doubles and neighbours merge, so a long notebook costs no more than a
    short one and no peak is ever averaged away.
    """

    def __init__(self, devices: int, *, width: float = SAMPLE_INTERVAL_S, max_points: int = MAX_POINTS) -> None:
        self.devices = devices
        self.width = width
        self.max_points = max(2, max_points)
        self._b: list[list[Any]] = []
        """[key, t, rss, proc, mem per device..., util sum per device..., util n per device...]."""

    def add(self, t: float, rss: float | None, proc: float | None, mem: list[float | None] | None,
            util: list[float | None] | None) -> None:
        n = self.devices
        row: list[Any] = [int(t // self.width), t, rss, proc]
        row += [(mem[i] if mem and i < len(mem) else None) for i in range(n)]
        u = [(util[i] if util and i < len(util) else None) for i in range(n)]
        row += [x or 0.0 for x in u] + [0 if x is None else 1 for x in u]
        if self._b and self._b[-1][0] == row[0]:
            self._merge(self._b[-1], row)
        else:
            self._b.append(row)
        while len(self._b) > self.max_points:
            self.width *= 2
            merged: list[list[Any]] = []
            for b in self._b:
                b[0] = int(b[1] // self.width)
                if merged and merged[-1][0] == b[0]:
                    self._merge(merged[-1], b)
                else:
                    merged.append(b)
            self._b = merged

    def _merge(self, into: list[Any], other: list[Any]) -> None:
        n = self.devices
        for i in range(2, 4 + n):  # rss, proc, memory per device: the peak
            a, b = into[i], other[i]
            into[i] = b if a is None else (a if b is None else max(a, b))
        for i in range(4 + n, 4 + 3 * n):  # utilisation sums and counts: added
            into[i] += other[i]

    def __len__(self) -> int:
        return len(self._b)

    def to_dict(self, scope: str | None, cells: list[dict[str, Any]]) -> dict[str, Any]:
        """The series as metrics.json and results.json keep it (see :class:`gpu_runner.results.Timeline`)."""
        n = self.devices

        def r(x: float | None, nd: int = 1) -> float | None:
            return None if x is None else round(x, nd)

        t = [round(b[1], 3) for b in self._b]
        out: dict[str, Any] = {"interval_s": round(self.width, 3), "t_s": t,
                               "rss_mib": [r(b[2]) for b in self._b], "gpu_scope": scope}
        if scope is not None and n:
            if scope == "process":
                out["gpu_memory_mib"] = [r(b[3] or 0.0) for b in self._b]
            else:
                out["gpu_memory_mib"] = [r(sum(x for x in b[4:4 + n] if x is not None))
                                         if any(x is not None for x in b[4:4 + n]) else None for b in self._b]
            out["devices"] = [{
                "index": i,
                "memory_used_mib": [r(b[4 + i]) for b in self._b],
                "utilization_pct": [r(b[4 + n + i] / b[4 + 2 * n + i]) if b[4 + 2 * n + i] else None
                                    for b in self._b],
            } for i in range(n)]
        else:
            out["gpu_memory_mib"] = None
            out["devices"] = []
        out["cells"] = cells
        return out


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
    gpu_util_edge_sum: float = 0.0
    gpu_util_edge_n: int = 0
    """Utilisation seen by the samples at the start, the end and cell ends: used for the mean
    only when no periodic sample came (a notebook shorter than the interval)."""
    samples: int = 0
    t0: float = field(default_factory=time.monotonic)
    timeline: Timeline | None = None
    cell: int | None = None
    """The cell running now (its index in the notebook), or None between cells."""
    cell_peaks: dict[int, list[float]] = field(default_factory=dict)
    """index -> [kernel RSS peak, GPU process peak, GPU device peak] while that cell ran."""
    cell_spans: list[dict[str, Any]] = field(default_factory=list)
    cell_t0: float = 0.0
    rerun: bool = False
    _proc: Any = field(default=None, repr=False)
    _tree: list[Any] = field(default_factory=list, repr=False)

    def tree(self) -> list[psutil.Process]:
        try:
            if self._proc is None:
                self._proc = psutil.Process(self.pid)
            self._tree = [self._proc, *self._proc.children(recursive=True)]
            return self._tree
        except psutil.Error:
            return []

    def known_tree(self) -> list[psutil.Process]:
        """The processes the last full sample found (no scan of every process on the machine)."""
        return self._tree or self.tree()

    def result(self) -> dict[str, Any]:
        hwm = _hwm_mib(self.pid)
        peak = max(self.peak_rss_mib, hwm or 0.0)
        scope = None if not self.gpu_sampled else ("process" if self.gpu_process_seen else "device")
        gpu_col = 1 if scope == "process" else 2
        util_sum, util_n = ((self.gpu_util_sum, self.gpu_util_n) if self.gpu_util_n
                            else (self.gpu_util_edge_sum, self.gpu_util_edge_n))
        cells = {
            idx: {"peak_rss_mib": round(v[0], 1) if v[0] else None,
                  "gpu_peak_memory_mib": round(v[gpu_col], 1) if scope is not None else None}
            for idx, v in self.cell_peaks.items()
        }
        return {
            "peak_rss_mib": round(peak, 1) if peak else None,
            "samples": self.samples,
            "gpu": None
            if not self.gpu_sampled
            else {
                "peak_memory_mib": round(
                    self.gpu_process_peak_mib if self.gpu_process_seen else self.gpu_device_peak_mib, 1
                ),
                "mean_utilization_pct": round(util_sum / util_n, 1) if util_n else None,
                "scope": scope,
                "samples": util_n,
            },
            "timeline": self.timeline.to_dict(scope, list(self.cell_spans)) if self.timeline is not None else None,
            "cell_peaks": cells,
        }


class Sampler:
    """Samples every tracked kernel every ``interval`` seconds while the run lasts."""

    def __init__(self, interval: float | None = None, nvml: Nvml | None = None,
                 max_points: int = MAX_POINTS) -> None:
        self.interval = interval if interval is not None else sample_interval()
        self.nvml = nvml if nvml is not None else Nvml()
        self.max_points = max_points
        self._tracks: dict[int, Track] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        """Samples come from the sampling thread and, at cell ends, from the event loop."""

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
        with phase("metrics"):
            return self._track(pid)

    def _track(self, pid: int) -> Track:
        devices = len(self.nvml.devices) if self.nvml.available else 0
        t = Track(pid=pid, timeline=Timeline(devices, width=self.interval, max_points=self.max_points))
        self._tracks[pid] = t
        self.sample_one(t, self._gpu())
        return t

    def untrack(self, track: Track) -> dict[str, Any]:
        with phase("metrics"):
            return self._untrack(track)

    def _untrack(self, track: Track) -> dict[str, Any]:
        if track.cell is not None:  # interrupted in the middle of a cell: close its span
            self.cell_finished(track, track.cell)
        self.sample_one(track, self._gpu())
        # the high-water mark is only readable while the process lives: read it now
        with self._lock:
            result = track.result()
        self._tracks.pop(track.pid, None)
        return result

    def _gpu(self) -> tuple[list[float | None], list[float | None], dict[int, float]] | None:
        return self.nvml.sample() if self.nvml.available else None

    # -- cells -----------------------------------------------------------------------------
    def cell_started(self, track: Track, index: int, *, rerun: bool = False) -> None:
        with phase("metrics"), self._lock:
            track.cell, track.rerun = index, rerun
            track.cell_t0 = time.monotonic() - track.t0
            track.cell_peaks.setdefault(index, [0.0, 0.0, 0.0])

    def cell_finished(self, track: Track, index: int) -> None:
        """One more sample, counted for the cell (what it left allocated), then the cell's span."""
        with phase("metrics"):
            self._cell_finished(track, index)

    def _cell_finished(self, track: Track, index: int) -> None:
        self.sample_one(track, self._gpu(), full_tree=False)
        with self._lock:
            end = time.monotonic() - track.t0
            track.cell_spans.append({"index": index, "start_s": round(track.cell_t0, 3), "end_s": round(end, 3),
                                     "rerun": track.rerun})
            track.cell = None

    # -- sampling --------------------------------------------------------------------------
    def sample_one(self, t: Track, gpu: tuple[list[float | None], list[float | None], dict[int, float]] | None = None,
                   *, full_tree: bool = True, periodic: bool = False) -> None:
        """One sample of ``t``'s process tree (and the GPUs, when ``gpu`` is given). Only
        ``periodic`` samples, evenly spread in time, make the mean utilisation; every sample
        counts for the peaks and the time series."""
        procs = t.tree() if full_tree else t.known_tree()
        rss = 0.0
        pids = set()
        for p in procs:
            try:
                rss += p.memory_info().rss / 2**20
                pids.add(p.pid)
            except psutil.Error:
                continue
        hwm = _hwm_mib(t.pid) if full_tree else None
        now = time.monotonic() - t.t0
        with self._lock:
            t.peak_rss_mib = max(t.peak_rss_mib, rss, hwm or 0.0)
            t.samples += 1
            proc_mib: float | None = None
            device_mib = 0.0
            used: list[float | None] | None = None
            util: list[float | None] | None = None
            if gpu is not None:
                used, util, per_pid = gpu
                mine = [mib for pid, mib in per_pid.items() if pid in pids]
                proc_mib = sum(mine)
                device_mib = sum(x for x in used if x is not None)
                t.gpu_sampled = True
                t.gpu_process_seen = t.gpu_process_seen or bool(mine)
                t.gpu_process_peak_mib = max(t.gpu_process_peak_mib, proc_mib)
                t.gpu_device_peak_mib = max(t.gpu_device_peak_mib, device_mib)
                seen = [x for x in util if x is not None]
                if seen and periodic:
                    t.gpu_util_sum += sum(seen) / len(seen)
                    t.gpu_util_n += 1
                elif seen:
                    t.gpu_util_edge_sum += sum(seen) / len(seen)
                    t.gpu_util_edge_n += 1
            if t.cell is not None:
                peaks = t.cell_peaks.setdefault(t.cell, [0.0, 0.0, 0.0])
                peaks[0] = max(peaks[0], rss)
                if gpu is not None:
                    peaks[1] = max(peaks[1], proc_mib or 0.0)
                    peaks[2] = max(peaks[2], device_mib)
            if t.timeline is not None:
                t.timeline.add(now, rss if pids else None, proc_mib, used, util)

    def sample_all(self) -> None:
        with phase("metrics"):
            gpu = self._gpu()
            for t in list(self._tracks.values()):
                self.sample_one(t, gpu, periodic=True)

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

"""GPU sampling arithmetic and timelines, with the NVML stand-in (tests/standins/nvml: this
machine has no GPU) answering from a state file the test writes.

Our Sampler, Timeline and Nvml wrapper are the real code; only the ``pynvml`` module they call
is replaced.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from standins.nvml import STATE_ENV, write_state
from standins.nvml import pynvml as nvml_standin

from gpu_runner.execute.metrics import MAX_POINTS, Nvml, Sampler, Timeline, sample_interval


@pytest.fixture
def gpus(tmp_path, monkeypatch):
    """Two L4s whose figures the test sets with ``gpus(used, util, procs)``."""
    state = tmp_path / "nvml.json"
    monkeypatch.setenv(STATE_ENV, str(state))

    def play(used=(1000, 500), util=(50, 10), procs=None):
        write_state(state, used_mib=list(used), util=list(util), procs=procs)

    play()
    return play


def _child():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])


def test_gpu_memory_is_the_kernels_own_when_nvml_sees_its_processes(gpus):
    kernel = _child()
    try:
        gpus(procs={kernel.pid: (0, 300), 999999: (1, 4000)})  # another process on GPU 1
        s = Sampler(nvml=Nvml(nvml_standin))
        t = s.track(kernel.pid)
        s.sample_all()
        gpus(util=(90, 30), procs={kernel.pid: (0, 700), 999999: (1, 4000)})
        s.sample_all()
        gpu = s.untrack(t)["gpu"]
        assert gpu["scope"] == "process" and gpu["peak_memory_mib"] == 700
        assert gpu["mean_utilization_pct"] == (30 + 60) / 2  # mean over devices, then over periodic samples
        assert s.facts() == {"gpu_count": 2, "gpus": [{"index": 0, "name": "NVIDIA L4", "memory_total_mib": 23034},
                                                      {"index": 1, "name": "NVIDIA L4", "memory_total_mib": 23034}],
                             "gpu_model": "NVIDIA L4", "driver_version": "550.54.15"}
    finally:
        kernel.kill()
        kernel.wait()


def test_without_matching_pids_the_device_memory_in_use_is_reported(gpus):
    """In a container with its own PID namespace NVML's PIDs are the host's: fall back to the device."""
    kernel = _child()
    try:
        gpus(used=(1200, 800), procs={424242: (0, 1200)})
        s = Sampler(nvml=Nvml(nvml_standin))
        t = s.track(kernel.pid)
        s.sample_all()
        m = s.untrack(t)
        assert m["gpu"]["scope"] == "device" and m["gpu"]["peak_memory_mib"] == 2000
        assert m["timeline"]["gpu_scope"] == "device" and max(m["timeline"]["gpu_memory_mib"]) == 2000
    finally:
        kernel.kill()
        kernel.wait()


def test_no_gpu_means_null_gpu_figures_and_a_reason(monkeypatch):
    monkeypatch.delenv(STATE_ENV, raising=False)
    nv = Nvml(nvml_standin)
    assert not nv.available and "NVML Shared Library Not Found" in nv.reason
    s = Sampler(nvml=nv)
    t = s.track(os.getpid())
    s.sample_all()
    m = s.untrack(t)
    assert m["gpu"] is None and m["peak_rss_mib"] > 0
    assert m["timeline"]["gpu_memory_mib"] is None and m["timeline"]["devices"] == []
    assert all(v > 0 for v in m["timeline"]["rss_mib"])
    assert s.facts() == {"gpu_count": 0, "gpus": []}


def test_a_device_that_stops_answering_keeps_the_others_in_their_place(gpus):
    class HalfBroken:
        def __getattr__(self, name):
            return getattr(nvml_standin, name)

        def nvmlDeviceGetMemoryInfo(self, h):
            if h == 0:
                raise nvml_standin.NVMLError("GPU is lost")
            return nvml_standin.nvmlDeviceGetMemoryInfo(h)

    gpus(used=(1000, 500), util=(50, 10))
    used, util, _ = Nvml(HalfBroken()).sample()
    assert used == [None, 500] and util == [None, 10]


# -- timelines -----------------------------------------------------------------------------
def test_a_long_series_is_bounded_and_keeps_its_peaks():
    tl = Timeline(devices=2, width=0.5, max_points=200)
    n = 20_000  # about 2.8 hours at 0.5 s
    for i in range(n):
        t = i * 0.5
        spike = 7777.0 if i == 12_345 else 1000.0 + (i % 7)
        tl.add(t, rss=300.0 + (4000.0 if i == 54 else 0.0), proc=spike, mem=[spike + 100, 50.0], util=[40.0, 0.0])
    d = tl.to_dict("process", [])
    assert 100 <= len(d["t_s"]) <= 200
    assert d["interval_s"] == 0.5 * 2 ** 7  # doubled until 20,000 samples fit in 200 points
    assert max(d["gpu_memory_mib"]) == 7777.0 and max(d["devices"][0]["memory_used_mib"]) == 7877.0
    assert max(d["rss_mib"]) == 4300.0  # one sample's spike survives 128-fold downsampling
    assert set(d["devices"][0]["utilization_pct"]) == {40.0} and set(d["devices"][1]["utilization_pct"]) == {0.0}
    assert d["t_s"] == sorted(d["t_s"]) and d["t_s"][0] == 0.0
    # every point starts on its bucket's boundary
    assert all(t % d["interval_s"] == 0 for t in d["t_s"])


def test_a_short_series_keeps_every_sample():
    tl = Timeline(devices=1, width=0.5)
    for i in range(10):
        tl.add(i * 0.5, rss=float(i), proc=None, mem=[float(i)], util=[float(i * 10)])
    d = tl.to_dict("device", [])
    assert d["t_s"] == [i * 0.5 for i in range(10)] and d["rss_mib"] == [float(i) for i in range(10)]
    assert d["devices"][0]["utilization_pct"] == [float(i * 10) for i in range(10)]
    assert len(d["t_s"]) <= MAX_POINTS


def test_each_cell_gets_the_peaks_seen_while_it_ran_and_at_its_end(gpus):
    kernel = _child()
    try:
        gpus(used=(600, 0), util=(0, 0), procs={kernel.pid: (0, 100)})
        s = Sampler(nvml=Nvml(nvml_standin))
        t = s.track(kernel.pid)
        s.cell_started(t, 1)
        gpus(used=(3100, 0), util=(80, 0), procs={kernel.pid: (0, 2600)})
        s.sample_all()
        gpus(used=(1500, 0), util=(20, 0), procs={kernel.pid: (0, 1000)})
        s.cell_finished(t, 1)
        s.cell_started(t, 3)
        gpus(used=(5500, 0), util=(99, 0), procs={kernel.pid: (0, 5000)})  # a short cell: no periodic sample
        s.cell_finished(t, 3)
        gpus(used=(1300, 0), util=(0, 0), procs={kernel.pid: (0, 800)})
        s.cell_started(t, 1, rerun=True)  # the rerun of cell 2 stays below its first pass: the first counts
        s.cell_finished(t, 1)
        m = s.untrack(t)
    finally:
        kernel.kill()
        kernel.wait()
    assert m["cell_peaks"][1]["gpu_peak_memory_mib"] == 2600 and m["cell_peaks"][3]["gpu_peak_memory_mib"] == 5000
    assert m["cell_peaks"][1]["peak_rss_mib"] > 0
    assert m["gpu"]["peak_memory_mib"] == 5000 and m["gpu"]["mean_utilization_pct"] == 40.0  # the one periodic sample
    spans = m["timeline"]["cells"]
    assert [(c["index"], c["rerun"]) for c in spans] == [(1, False), (3, False), (1, True)]
    assert all(c["start_s"] <= c["end_s"] for c in spans) and spans[0]["end_s"] <= spans[1]["start_s"]
    assert max(m["timeline"]["gpu_memory_mib"]) == 5000


def test_the_sampling_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("GPU_RUNNER_SAMPLE_INTERVAL_S", "0.2")
    assert sample_interval() == 0.2
    for bad, expected in (("nonsense", 0.5), ("0", 0.05), ("1e9", 60.0), ("nan", 0.5)):
        monkeypatch.setenv("GPU_RUNNER_SAMPLE_INTERVAL_S", bad)
        assert sample_interval() == expected

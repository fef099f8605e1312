from __future__ import annotations

import time

import pytest

from benchmint.core import sysmetrics


def test_a_window_measures_cpu_use_switches_faults_and_peak_rss():
    t0 = time.process_time()
    with sysmetrics.Window(steps=4, threads=1) as w:
        blob = bytearray(64 << 20)  # touched pages: faults and resident memory inside the window
        for i in range(0, len(blob), 4096):
            blob[i] = 1
        x = 0
        for i in range(300_000):
            x += i
    cpu = time.process_time() - t0
    m = w.metrics
    # CPU time of the process over wall time (how much of the wall this busy loop got depends on the machine)
    assert 0 < m["cpu_s"] <= cpu + 0.02 and m["cpu_s"] >= 0.5 * cpu
    assert m["cpu_utilization"] == pytest.approx(m["cpu_s"] / m["wall_s"]) and 0 < m["cpu_utilization"] <= 1.5
    assert m["cpu_utilization_per_thread"] == m["cpu_utilization"]
    assert m["minor_page_faults_per_step"] > 1000 / 4
    assert m["peak_rss_bytes"] >= 64 << 20
    assert m["voluntary_ctx_switches_per_step"] >= 0 and m["steps"] == 4
    # what cannot be read here is named, never given as zero
    for name in ("gpu_sm_utilization", "gpu_memory_used_bytes", "gpu_power_w"):
        assert name not in m and "no CUDA device" in m["unavailable"][name]
    assert "hardware_counters" in m["unavailable"]


def test_side_by_side_flags_differences_beyond_10_percent_and_names_what_is_missing():
    orig = {"cpu_utilization": 1.0, "peak_rss_bytes": 100, "minor_page_faults_per_step": 10.0,
            "unavailable": {"gpu_power_w": "no CUDA device in use"}}
    rep = {"cpu_utilization": 1.05, "peak_rss_bytes": 150, "unavailable": {}}
    s = sysmetrics.side_by_side(orig, rep)
    assert s["metrics"]["cpu_utilization"]["flagged"] is False
    assert s["metrics"]["peak_rss_bytes"]["difference"] == pytest.approx(0.5) and s["flagged"] == ["peak_rss_bytes"]
    assert "minor_page_faults_per_step" not in s["metrics"]
    assert "replay" in s["unavailable"]["minor_page_faults_per_step"]
    assert s["unavailable"]["gpu_power_w"] == "no CUDA device in use"
    flagged, _, missing = sysmetrics.lines(s)[0].partition(" (not available here: ")
    assert "peak_rss_bytes 100 -> 150 (+50%)" in flagged and "cpu_utilization" not in flagged
    assert "minor_page_faults_per_step" in missing
    # a per-step count that differs by less than one event a step is not flagged, whatever its ratio (seen on
    # an H200: minor faults 0.1 -> 0 "-100%", involuntary switches 0 -> 0.08); a real difference still is
    counts = sysmetrics.side_by_side(
        {"minor_page_faults_per_step": 0.1, "involuntary_ctx_switches_per_step": 0.0,
         "voluntary_ctx_switches_per_step": 2.1},
        {"minor_page_faults_per_step": 0.0, "involuntary_ctx_switches_per_step": 0.077,
         "voluntary_ctx_switches_per_step": 0.13})
    assert counts["flagged"] == ["voluntary_ctx_switches_per_step"]
    assert counts["metrics"]["minor_page_faults_per_step"]["difference"] == -1.0  # the ratio is still given
    none = sysmetrics.side_by_side(None, rep)
    assert none["metrics"] == {} and "no system metrics" in none["unavailable"]["all"]


class _FakeNvml:
    """pynvml's surface that the window reads: a sample buffer per counter that grows as time passes."""

    class NVMLError_NotFound(Exception):  # noqa: N801 - pynvml's name
        pass

    def __init__(self):
        self.buffers = {1: [(100, 90)], 0: [(100, 300_000)]}  # GPU utilization %, power mW: (timestamp, value)

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("gpu", i)

    def nvmlDeviceGetSamples(self, handle, kind, since):
        class V:
            def __init__(self, v):
                self.uiVal = v

        class S:
            def __init__(self, t, v):
                self.timeStamp, self.sampleValue = t, V(v)

        new = [S(t, v) for t, v in self.buffers[kind] if t > since]
        if not new:
            raise self.NVMLError_NotFound()
        return 1, new

    def nvmlDeviceGetMemoryInfo(self, handle):
        class M:
            used = 5 << 30
        return M()


def test_gpu_counters_are_the_means_of_nvmls_samples_inside_the_window_or_named_missing(monkeypatch):
    import sys

    nvml = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with sysmetrics.Window(steps=2, threads=1, device="cuda:0") as w:
        # samples the driver takes during the window. The one before it (90%, 300 W) is not the window's, nor
        # the first after its start (95%, 400 W): that one's period began before the window
        nvml.buffers[1] += [(150, 95), (200, 40), (300, 60)]
        nvml.buffers[0] += [(150, 400_000), (200, 100_000), (300, 200_000)]
    m = w.metrics
    assert m["gpu_sm_utilization"] == pytest.approx(50.0) and m["gpu_power_w"] == pytest.approx(150.0)
    assert m["gpu_memory_used_bytes"] == 5 << 30 and "2 NVML samples" in m["gpu_how"]["gpu_sm_utilization"]
    # a window shorter than the driver's sample period holds no period of its own, even when one sample's
    # timestamp falls inside it: said, not read from the time before it
    for new in ([], [(400, 10)]):
        with sysmetrics.Window(steps=2, threads=1, device="cuda:0") as w:
            nvml.buffers[1] += new
            nvml.buffers[0] += [(t, v * 1000) for t, v in new]
        m = w.metrics
        assert "gpu_sm_utilization" not in m and "gpu_power_w" not in m
        assert "no NVML sample period lay inside the window" in m["unavailable"]["gpu_sm_utilization"]
        assert m["gpu_memory_used_bytes"] == 5 << 30
    # no NVML at all: every GPU counter named with the reason
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with sysmetrics.Window(steps=1, device="cuda") as w:
        pass
    assert all("NVML not readable" in w.metrics["unavailable"][n]
               for n in ("gpu_sm_utilization", "gpu_memory_used_bytes", "gpu_power_w"))


def test_a_device_whose_driver_gives_no_samples_names_why_and_still_reads_memory(monkeypatch):
    import sys

    nvml = _FakeNvml()

    def refuse(handle, kind, since):
        raise RuntimeError("Not Supported")

    nvml.nvmlDeviceGetSamples = refuse
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with sysmetrics.Window(steps=1, device="cuda:0") as w:
        pass
    m = w.metrics
    assert "gpu_sm_utilization" not in m and "Not Supported" in m["unavailable"]["gpu_sm_utilization"]
    assert m["gpu_memory_used_bytes"] == 5 << 30

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
    none = sysmetrics.side_by_side(None, rep)
    assert none["metrics"] == {} and "no system metrics" in none["unavailable"]["all"]

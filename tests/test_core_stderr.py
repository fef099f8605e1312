"""Native chatter on file descriptor 2 (Kineto's USDT start/stop lines) is dropped; anything else still shows."""

from __future__ import annotations

import os

from benchmint.core.stderr import filtered_native_stderr


def test_kineto_start_stop_lines_are_dropped_and_other_native_output_is_kept(capfd):
    with filtered_native_stderr():
        os.write(2, b"USDT:2026-11-23 22:18:36 21549:21549 SyncActivityProfilerHandler.cpp:52] profiler_start\n")
        os.write(2, b"a real error from a native library\n")
        os.write(2, b"USDT:2026-11-23 22:18:36 21549:21549 SyncActivityProfilerHandler.cpp:59] profiler_stop\n")
        # the ET observer's start/stop warnings, plain and under torchrun (seen on an H200 with torch 2.11)
        os.write(2, b"[W1204 15:31:39.920428153 execution_trace_observer.cpp:973] Enabling Execution Trace Observer\n")
        os.write(2, b"[rank0]:[W1204 15:31:39.9283 execution_trace_observer.cpp:985] Disabling Execution Trace Observer\n")
        os.write(2, b"[rank0]:[W1204 15:31:36.44 ProcessGroupNCCL.cpp:5188] Guessing device ID based on global rank\n")
    err = capfd.readouterr().err
    assert "profiler_start" not in err and "profiler_stop" not in err and "Execution Trace Observer" not in err
    assert "Guessing device ID" in err  # torch's other warnings still show
    assert "a real error from a native library" in err


def test_a_recorded_capture_prints_no_kineto_chatter(capfd, tmp_path):
    import torch

    from benchmint.trace.capture import capture_steps

    x = torch.ones(8)
    capture_steps(lambda: (x * 2).sum(), tmp_path / "cap", warmup=1, measure=5, record=1)
    assert "USDT" not in capfd.readouterr().err

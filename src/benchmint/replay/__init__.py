"""The replay engine: execution traces become standalone, timed benchmarks.

``plan`` (op callables from schemas, tensors, dry run, compiled loop) -> ``execute`` (timed iterations,
memory) -> ``fidelity`` (observer-cost calibration, CPU gaps, per-op-type report). :func:`replay_trace` is
the entry point used by ``benchmint replay``.
"""

from __future__ import annotations

from benchmint.replay.api import ReplayResult, find_inputs, replay_trace, run_record

__all__ = ["ReplayResult", "find_inputs", "replay_trace", "run_record"]

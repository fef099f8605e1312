"""The replay engine: execution traces become standalone, timed benchmarks.

``plan`` (op callables from schemas, tensors, dry run, compiled loop) -> ``execute`` (timed iterations,
memory) -> ``fidelity`` (observer-cost calibration, CPU gaps, per-op-type report). :func:`replay_trace` is
the entry point used by ``benchmint replay``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmint.replay.api import ReplayResult, find_inputs, replay_trace, run_record

__all__ = ["ReplayResult", "find_inputs", "replay_trace", "run_record"]


def __getattr__(name: str) -> Any:
    # the entry points load torch; imported on first use, so that the modules beside them that only format or
    # read results (headline, console) and the CLI that imports those start without torch
    if name in __all__:
        from benchmint.replay import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""CPU work standing for the time a step spends outside its ops (the gaps between them, and skipped ops):
turns of an interpreter loop, calibrated once per process."""

from __future__ import annotations

from benchmint.core import clock
from benchmint.core.pace import spin

__all__ = ["iters_for", "ns_per_turn", "spin"]


_NS_PER_TURN: list[float] = []


def ns_per_turn() -> float:
    """Nanoseconds one turn of :func:`spin` takes on this machine (fastest of a few measurements)."""
    if not _NS_PER_TURN:
        n = 200_000
        best = float("inf")
        for _ in range(5):
            t0 = clock.now_ns()
            spin(n)
            best = min(best, (clock.now_ns() - t0) / n)
        _NS_PER_TURN.append(max(best, 0.1))
    return _NS_PER_TURN[0]


def iters_for(ns: int) -> int:
    return max(1, round(ns / ns_per_turn()))

"""CPU work standing for the time a step spends outside its ops (the gaps between them, and skipped ops):
turns of an interpreter loop, calibrated once per process."""

from __future__ import annotations

from benchmint.core import clock


def spin(n: int) -> None:
    """CPU work standing for time spent outside ops (and for skipped ops): ``n`` turns of an interpreter loop.

    The amount of work, not a wall-clock deadline, is fixed: Python and framework code between ops is CPU
    work too, so when the machine is busier both the original's and the replay's take longer alike.
    """
    for _ in range(n):
        pass


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

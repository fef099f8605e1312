"""One clock for every measurement: monotonic nanoseconds, paired once with wall-clock time.

Durations and event times are taken with ``time.perf_counter_ns`` (monotonic, highest resolution); a single
pairing with ``time.time_ns`` lets a record be placed on the calendar without using wall-clock time to measure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

now_ns = time.perf_counter_ns


def now_s() -> float:
    return time.perf_counter_ns() / 1e9


@dataclass(frozen=True)
class ClockAnchor:
    """A monotonic reading taken together with a wall-clock reading."""

    mono_ns: int
    wall_ns: int

    @classmethod
    def take(cls) -> ClockAnchor:
        # read the monotonic clock on both sides of the wall clock and keep the midpoint
        a = time.perf_counter_ns()
        w = time.time_ns()
        b = time.perf_counter_ns()
        return cls(mono_ns=(a + b) // 2, wall_ns=w)

    def to_wall_s(self, mono_ns: int) -> float:
        """Wall-clock seconds (Unix epoch) of a monotonic reading."""
        return (self.wall_ns + (mono_ns - self.mono_ns)) / 1e9

    def describe(self) -> dict:
        return {"clock": "time.perf_counter_ns", "anchor_wall_s": self.wall_ns / 1e9}

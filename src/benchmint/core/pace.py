"""The machine's pace: how long a fixed piece of CPU work takes at a given moment.

On a shared host the same core runs the same work at different speeds from one second to the next (another
tenant on the physical core's other hardware thread, frequency changes): on the 2-core VMs this was built on,
one turn of the loop below took 11-12 ns for a while, then 18-21 ns, in the same process. A step's time measured
at capture and compared with a replay a minute later carries that change. Capture probes the pace beside its
measured steps (capture.json's ``pace``) and the replay beside its timed iterations, so that a replay's error
can be read against how far the host's pace moved between the two.

The probe is the replay's own gap work (:func:`spin`, an interpreter loop), so it reads exactly how fast the
gaps' CPU work runs. A torch step moves with it, though not by one factor: windows of 10 steps of three example
workloads read a correlation of about 0.8 with the probes beside them, and dividing by the probe cut the
windows' spread for two of them (14% to 8%, 23% to 14%) but not for the third (7%). So the pace is reported, not
corrected for.
"""

from __future__ import annotations

import platform
import statistics
import sys
from typing import Any

from benchmint.core import clock

#: turns of one probe: about a quarter of a millisecond at 12 ns a turn, short beside a step
PROBE_TURNS = 20_000
HOW = (f"nanoseconds per turn of an interpreter loop ({PROBE_TURNS} turns a probe, the work the replay's gaps "
       "spend), median of the probes taken just before and just after the capture's measured steps, or the "
       "replay's timed iterations")


def spin(n: int) -> None:
    """CPU work standing for time spent outside ops (and for skipped ops): ``n`` turns of an interpreter loop.

    The amount of work, not a wall-clock deadline, is fixed: Python and framework code between ops is CPU
    work too, so when the machine is busier both the original's and the replay's take longer alike.
    """
    for _ in range(n):
        pass


def probe(turns: int = PROBE_TURNS) -> float:
    """Nanoseconds per turn of one run of :func:`spin` now (wall time)."""
    t0 = clock.now_ns()
    spin(turns)
    return max(clock.now_ns() - t0, 1) / turns


def summary(values: list[float]) -> dict[str, Any] | None:
    """capture.json's ``pace``: the probes' median and values (None without probes)."""
    if not values:
        return None
    return {"ns_per_turn": statistics.median(values), "values": [round(v, 3) for v in values], **where(),
            "how": HOW}


def where() -> dict[str, str]:
    """The host and Python a probe ran on: a pace compares only with one probed on the same two (another
    machine, or another interpreter, runs the loop at its own speed)."""
    return {"host": platform.node(), "python": sys.version.split()[0]}


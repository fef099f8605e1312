"""The open-loop dispatcher: sends are never early, and waiting for a send costs one or two timer wake-ups of
the event loop and a short spin at most, not a spin through every sub-millisecond wait (uvloop's timers count
whole milliseconds; a shorter sleep returns at once)."""

from __future__ import annotations

import asyncio

import numpy as np
import uvloop

from benchmint.llm import bench
from benchmint.llm.types import GenRequest, RequestRecord


class Instant:
    kind = "instant"

    async def generate(self, req: GenRequest, on_first_token=None) -> RequestRecord:
        t = bench.now_ns()
        return RequestRecord(id=req.id, sent_ns=t, first_token_ns=t, end_ns=t, output_tokens=1)


ROUND_NS = 20_000  # what a turn of the event loop costs on the virtual clock


def test_sends_are_never_early_and_waiting_does_not_spin(monkeypatch):
    """On a virtual clock that behaves as uvloop's timers do (a sleep lasts its delay rounded to the nearest
    millisecond, plus a turn of the loop), so that the count does not depend on how fast this machine turns the
    loop (a real clock let a fast idle machine go round the loop past any fixed bound)."""
    n = 150
    offsets = np.arange(n) * 0.0003  # a send every 0.3 ms: each wait is shorter than uvloop's timer tick
    reqs = [GenRequest(id=i, prompt="p", max_tokens=1) for i in range(n)]
    sleeps = []
    real_sleep = asyncio.sleep
    clock = [10**12]

    async def virtual(delay, *a):
        sleeps.append(delay)
        clock[0] += round(delay * 1e3) * 1_000_000 + ROUND_NS
        return await real_sleep(0, *a)

    monkeypatch.setattr(bench, "now_ns", lambda: clock[0])
    monkeypatch.setattr(asyncio, "sleep", virtual)
    records: list[RequestRecord] = []

    async def go():
        c = bench.Counters(n)
        return await bench._run_open_loop(Instant(), reqs, offsets, c, asyncio.Event(), records)

    uvloop.run(go())
    assert len(records) == n and all(r.ok for r in records)
    assert all(r.sent_ns >= r.scheduled_ns for r in records)  # late or on time, never early
    ticks = [d for d in sleeps if d > 0]
    assert all(d >= 0.001 for d in ticks)  # whole ticks
    assert len(ticks) <= 2 * n
    # going round the loop is kept to the last 0.2 ms before a send (SPIN_NS / ROUND_NS turns at most per tick);
    # the old dispatcher went round every sub-millisecond wait: 15 turns per send here
    assert len(sleeps) <= len(ticks) * (1 + bench.SPIN_NS // ROUND_NS) + n, f"{len(sleeps)} sleeps: it spins"

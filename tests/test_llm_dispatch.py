"""The open-loop dispatcher: sends are never early, and waiting for a send costs one or two timer wake-ups of
the event loop and a short spin at most, not a spin through every sub-millisecond wait (uvloop's timers count
whole milliseconds; a shorter sleep returns at once)."""

from __future__ import annotations

import asyncio

import numpy as np
import uvloop

from benchmint.core.clock import now_ns
from benchmint.llm import bench
from benchmint.llm.types import GenRequest, RequestRecord


class Instant:
    kind = "instant"

    async def generate(self, req: GenRequest, on_first_token=None) -> RequestRecord:
        t = now_ns()
        return RequestRecord(id=req.id, sent_ns=t, first_token_ns=t, end_ns=t, output_tokens=1)


def test_sends_are_never_early_and_waiting_does_not_spin(monkeypatch):
    n = 150
    offsets = np.arange(n) * 0.0003  # a send every 0.3 ms: each wait is shorter than uvloop's timer tick
    reqs = [GenRequest(id=i, prompt="p", max_tokens=1) for i in range(n)]
    sleeps = []
    real_sleep = asyncio.sleep

    async def counted(delay, *a):
        sleeps.append(delay)
        return await real_sleep(delay, *a)

    monkeypatch.setattr(asyncio, "sleep", counted)
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
    # going round the loop is kept to the last 0.2 ms before a send (the old dispatcher went round ~19 times a
    # send here: every sub-millisecond wait)
    assert len(sleeps) <= 8 * n, f"{len(sleeps)} sleeps for {n} sends: the dispatcher spins"

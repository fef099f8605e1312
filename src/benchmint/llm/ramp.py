"""Ramps: load that grows (or falls) linearly over a run, to see where latency bends.

- ``--scenario ramp --rate-start A --rate-end B --ramp-duration S``: Poisson arrivals whose rate goes linearly
  from ``A`` to ``B`` requests/s over ``S`` seconds (a non-homogeneous Poisson process: unit-rate arrival
  times, seeded, mapped through the inverse of the cumulative rate ``A t + (B - A) t^2 / 2S``). Precomputed
  like every open-loop schedule.
- ``--scenario concurrency-ramp --concurrency-start a --concurrency-end b --ramp-duration S``: closed loop; the
  ``a`` first workers start at once and worker ``j >= a`` joins at ``S (j - a + 1) / (b - a + 1)`` seconds, so
  the number of requests in flight climbs by steps from ``a`` to ``b``; nothing new is sent after ``S``.

Metrics over time windows (:mod:`benchmint.llm.windows`) come with both.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np

from benchmint.core.clock import now_ns
from benchmint.core.errors import UserError
from benchmint.llm.requests_driver import cancelled, generate, wait_or_cancel
from benchmint.llm.trace_replay import ShapedSchedule
from benchmint.llm.types import Backend, GenRequest, RequestRecord


def ramp_offsets(rate_start: float, rate_end: float, duration_s: float, seed: int = 0) -> np.ndarray:
    """Arrival times in ``[0, duration_s)`` of a Poisson process whose rate goes linearly start -> end."""
    a, b, s = float(rate_start), float(rate_end), float(duration_s)
    k = (b - a) / s
    total = a * s + k * s * s / 2  # expected arrivals
    rng = np.random.default_rng(seed)
    n = int(total + 10 * math.sqrt(total + 1) + 20)
    u = np.cumsum(rng.exponential(1.0, n))
    u = u[u < total]
    # solve a t + k t^2 / 2 = u for the smallest t >= 0 (stable for k = 0 and k < 0)
    return 2 * u / (a + np.sqrt(np.maximum(a * a + 2 * k * u, 0.0)))


def rate_ramp_schedule(rate_start: float | None, rate_end: float | None, duration_s: float | None,
                       seed: int = 0, num_requests: int | None = None) -> ShapedSchedule:
    if rate_start is None or rate_end is None or not duration_s:
        raise UserError("--scenario ramp needs --rate-start A --rate-end B --ramp-duration SECONDS")
    if rate_start < 0 or rate_end < 0 or max(rate_start, rate_end) <= 0 or duration_s <= 0:
        raise UserError("--rate-start/--rate-end must be >= 0 (one of them > 0) and --ramp-duration > 0")
    offs = ramp_offsets(rate_start, rate_end, duration_s, seed)
    if num_requests is not None:
        offs = offs[:num_requests]
    if len(offs) == 0:
        raise UserError("the ramp plans no request: raise --rate-start/--rate-end or --ramp-duration")
    info = (("arrival", f"poisson ramp {rate_start:g}->{rate_end:g}/s over {duration_s:g} s"),
            ("rate_start_per_s", rate_start), ("rate_end_per_s", rate_end), ("ramp_duration_s", duration_s))
    return ShapedSchedule("ramp", offs, 0, len(offs), duration_s, None, 1.0, seed, info=info)


def concurrency_ramp_schedule(c_start: int | None, c_end: int | None, duration_s: float | None,
                              seed: int = 0) -> ShapedSchedule:
    if not c_start or not c_end or not duration_s:
        raise UserError("--scenario concurrency-ramp needs --concurrency-start a --concurrency-end b --ramp-duration SECONDS")
    if c_start < 1 or c_end < c_start or duration_s <= 0:
        raise UserError("--concurrency-start must be >= 1, --concurrency-end >= --concurrency-start, --ramp-duration > 0")
    info = (("arrival", f"closed-loop ramp {c_start}->{c_end} in flight over {duration_s:g} s"),
            ("concurrency_start", c_start), ("concurrency_end", c_end), ("ramp_duration_s", duration_s),
            ("worker_start_s", [round(worker_start_s(j, c_start, c_end, duration_s), 6) for j in range(c_end)]))
    return ShapedSchedule("concurrency-ramp", None, c_end, 10**9, duration_s, None, 1.0, seed, info=info)


def worker_start_s(j: int, c_start: int, c_end: int, duration_s: float) -> float:
    return 0.0 if j < c_start else duration_s * (j - c_start + 1) / (c_end - c_start + 1)


def planned_rate_per_s(t: float, rate_start: float, rate_end: float, duration_s: float) -> float:
    """The arrival rate the ramp plans ``t`` seconds from its start (held at the end rate after it)."""
    return rate_start + (rate_end - rate_start) * min(max(t, 0.0), duration_s) / duration_s


def planned_concurrency(t: float, c_start: int, c_end: int, duration_s: float) -> int:
    """The workers the concurrency ramp has started ``t`` seconds from its start (its requests in flight)."""
    return sum(worker_start_s(j, c_start, c_end, duration_s) <= max(t, 0.0) for j in range(c_end))


async def drive_concurrency_ramp(
    backend: Backend, sched: ShapedSchedule, tpl: list[GenRequest], stop: asyncio.Event, records: list[RequestRecord],
) -> int:
    """Run the closed-loop ramp; returns the start (ns)."""
    import dataclasses

    info = dict(sched.info)
    c0, c1, dur = info["concurrency_start"], info["concurrency_end"], info["ramp_duration_s"]
    start = now_ns()
    deadline = start + int(dur * 1e9)
    counter = iter(range(10**12))

    async def worker(j: int) -> None:
        t = start + int(worker_start_s(j, c0, c1, dur) * 1e9)
        if t > now_ns():
            try:
                await asyncio.wait_for(stop.wait(), (t - now_ns()) / 1e9)
            except TimeoutError:
                pass
        while not stop.is_set() and now_ns() < deadline:
            i = next(counter)
            req = dataclasses.replace(tpl[i % len(tpl)], id=i)
            sched_ns = now_ns()
            try:
                rec = await generate(backend.generate, req)
            except asyncio.CancelledError as e:  # Ctrl-C while in flight: recorded, as the plain closed loop does
                records.append(cancelled(req, sched_ns, sent=e))
                raise
            rec.scheduled_ns = sched_ns
            records.append(rec)

    await wait_or_cancel([asyncio.ensure_future(worker(j)) for j in range(c1)], stop)
    return start



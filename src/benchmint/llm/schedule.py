"""Arrival schedules, precomputed and seeded, so a run's offered load is known before it starts.

Open-loop scenarios (``server``: Poisson/gamma at ``rate``; ``constant``; ``offline``: everything at time 0)
give each request a scheduled send time, offset from the run's start. Closed-loop scenarios
(``single-stream``: one request at a time; ``concurrency``: N in flight) have no precomputed times: a request
is scheduled the moment a slot frees up.

Gamma inter-arrival times with shape ``burstiness`` and mean ``1/rate``: ``burstiness=1`` is Poisson,
smaller is burstier, larger is more regular (the same convention as vLLM's benchmark).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from benchmint.core.errors import UserError

OPEN_LOOP = ("server", "poisson", "constant", "offline")
CLOSED_LOOP = ("single-stream", "concurrency")
SCENARIOS = OPEN_LOOP + CLOSED_LOOP


@dataclass(frozen=True)
class Schedule:
    scenario: str
    offsets_s: np.ndarray | None  # scheduled send times from the run start (open loop), else None
    concurrency: int  # closed loop: requests in flight; open loop: 0 (unbounded)
    count: int  # how many measured requests at most
    duration_s: float | None  # stop sending after this many seconds (None: stop by count)
    rate: float | None
    burstiness: float
    seed: int

    @property
    def open_loop(self) -> bool:
        return self.offsets_s is not None

    def describe(self) -> dict:
        return {
            "scenario": self.scenario,
            "arrival": _arrival_name(self.scenario, self.burstiness),
            "open_loop": self.open_loop,  # precomputed send times (so send lag means something), subclasses too
            "rate_per_s": self.rate,
            "burstiness": self.burstiness,
            "concurrency": self.concurrency or None,
            "requests_planned": self.count,
            "duration_limit_s": self.duration_s,
            "seed": self.seed,
        }


def _arrival_name(scenario: str, burstiness: float) -> str:
    if scenario in ("server", "poisson"):
        return "poisson" if burstiness == 1.0 else f"gamma(shape={burstiness:g})"
    return {"constant": "constant", "offline": "all-at-once"}.get(scenario, "closed-loop")


def arrival_offsets(n: int, rate: float, burstiness: float = 1.0, seed: int = 0, kind: str = "poisson") -> np.ndarray:
    """``n`` send times (seconds from start) for a mean ``rate`` per second; the first request goes at 0."""
    if n <= 0:
        return np.zeros(0)
    if kind == "constant":
        return np.arange(n, dtype=np.float64) / rate
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


def make_schedule(
    scenario: str = "server",
    *,
    num_requests: int | None = None,
    duration_s: float | None = None,
    rate: float | None = None,
    burstiness: float = 1.0,
    concurrency: int | None = None,
    seed: int = 0,
) -> Schedule:
    """Build the schedule for a scenario; raises :class:`UserError` for inconsistent flags."""
    sc = scenario.lower().replace("_", "-")
    if sc == "singlestream":
        sc = "single-stream"
    if sc not in SCENARIOS:
        raise UserError(f"unknown --scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if burstiness <= 0:
        raise UserError("--burstiness must be > 0 (1 = Poisson, < 1 burstier, > 1 more regular)")
    if num_requests is not None and num_requests < 1:
        raise UserError("--num-requests must be at least 1")
    if duration_s is not None and duration_s <= 0:
        raise UserError("--duration must be > 0 seconds")
    if sc in ("server", "poisson", "constant"):
        if not rate or rate <= 0:
            raise UserError(f"--scenario {sc} needs --rate (requests per second, > 0)")
        if num_requests is None and duration_s is None:
            raise UserError("give --num-requests or --duration to say when the run stops")
        n = num_requests if num_requests is not None else math.ceil(rate * duration_s * 1.5 + 10)  # type: ignore[operator]
        offs = arrival_offsets(n, rate, burstiness, seed, "constant" if sc == "constant" else "poisson")
        if duration_s is not None:
            offs = offs[offs < duration_s]
        return Schedule("server" if sc == "poisson" else sc, offs, 0, len(offs), duration_s, rate, burstiness, seed)
    if sc == "offline":
        if num_requests is None:
            raise UserError("--scenario offline needs --num-requests (all are sent at once)")
        return Schedule(sc, np.zeros(num_requests), 0, num_requests, None, None, burstiness, seed)
    conc = 1 if sc == "single-stream" else (concurrency or 0)
    if conc < 1:
        raise UserError("--scenario concurrency needs --concurrency N (N >= 1)")
    if num_requests is None and duration_s is None:
        raise UserError("give --num-requests or --duration to say when the run stops")
    count = num_requests if num_requests is not None else 10**9
    return Schedule(sc, None, conc, count, duration_s, None, burstiness, seed)

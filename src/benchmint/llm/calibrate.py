"""How far this client can be trusted: ``benchmint llm calibrate`` and the ``client_bound`` verdict of a run.

:func:`calibrate` drives a no-op streaming server (by default one it starts in a child process on loopback,
:mod:`benchmint.llm.noop_server`; or ``url``) at constant arrival rates, doubling from ``start_rate`` until a
trial fails, then bisecting: a trial passes when every request completed, the achieved rate (the send rate,
``throughput.sent_requests_per_s``: (sent - 1) / (last send - first send), which is the target for sends on time
however few) is at least :data:`ACHIEVED_MIN` of the target and the p99 send lag is at most
:data:`SEND_LAG_P99_MAX_S`. The highest
passing rate is the client's ceiling. A low-rate trial measures the client's own added latency (TTFT and E2E
from send against a server that does no work: loopback, the server's answer and the client's own code).
The result is stored (:func:`calibration_path`, one per host) and every later ``llm bench`` result carries
``client_bound`` (:func:`benchmint.llm.client_bound.client_bound_verdict`).
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import time
from typing import Any

from benchmint.core.jsonio import write_json
from benchmint.llm.client_bound import SEND_LAG_P99_MAX_S, calibration_path

CALIBRATION_SCHEMA_VERSION = "1.0"
ACHIEVED_MIN = 0.99  # achieved / target rate for a trial to pass


def _host() -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


async def _trial(backend: Any, rate: float, duration_s: float, chunks: int) -> dict[str, Any]:
    from benchmint.llm.bench import drive
    from benchmint.llm.metrics import compute_metrics
    from benchmint.llm.schedule import make_schedule
    from benchmint.llm.types import GenRequest

    n = max(2, int(round(rate * duration_s)))
    sched = make_schedule("constant", num_requests=n, rate=rate)
    reqs = [GenRequest(id=i, prompt="calibrate", max_tokens=chunks) for i in range(n)]
    records, start, interrupted = await drive(backend, sched, reqs, [], reqs)
    m = compute_metrics(records, start, anchor="scheduled", interrupted=interrupted)
    # the send rate, not completed / duration: n requests span n - 1 gaps, so completed / duration is n / (n - 1)
    # of the target over a short trial and would let a client that falls behind pass
    achieved = m["throughput"]["sent_requests_per_s"] or 0.0
    lag99 = m["send_lag_s"].get("p99")
    ok = (m["requests"]["failed"] == 0 and m["requests"]["completed"] == n and not interrupted
          and achieved >= ACHIEVED_MIN * rate and lag99 is not None and lag99 <= SEND_LAG_P99_MAX_S)
    return {"rate": rate, "requests": n, "achieved_per_s": achieved, "achieved_fraction": achieved / rate,
            "completed_per_s": m["throughput"]["requests_per_s"],
            "send_lag_p50_s": m["send_lag_s"].get("p50"), "send_lag_p99_s": lag99,
            "failed": m["requests"]["failed"], "passed": ok,
            "ttft_from_send_s": m.get("ttft_from_send_s"), "e2e_from_send_s": m.get("e2e_from_send_s")}


async def _search(url: str, start_rate: float, max_rate: float, duration_s: float, refine: int,
                  chunks: int, latency_rate: float) -> dict[str, Any]:
    from benchmint.llm.backends.http import HttpBackend

    backend = HttpBackend(url=url, model="noop", include_usage=True)
    await backend.start()
    trials: list[dict[str, Any]] = []
    try:
        lat = await _trial(backend, latency_rate, max(1.0, 50 / latency_rate), chunks)
        lat["purpose"] = "client added latency"
        trials.append(lat)
        lo, hi, rate = None, None, start_rate
        while rate <= max_rate:
            t = await _trial(backend, rate, duration_s, chunks)
            trials.append(t)
            if not t["passed"]:
                hi = rate
                break
            lo, rate = rate, rate * 2
        rate = start_rate / 2
        while lo is None and rate >= start_rate / 16:  # the first rate failed: look below it
            t = await _trial(backend, rate, duration_s, chunks)
            trials.append(t)
            if t["passed"]:
                lo = rate
            else:
                hi, rate = rate, rate / 2
        for _ in range(refine if lo is not None and hi is not None else 0):
            mid = round((lo + hi) / 2)
            t = await _trial(backend, mid, duration_s, chunks)
            trials.append(t)
            lo, hi = (mid, hi) if t["passed"] else (lo, mid)
    finally:
        await backend.close()
    return {"ceiling_rate_per_s": lo, "first_failing_rate_per_s": hi, "reached_max_rate": hi is None and lo is not None,
            "latency_trial": lat, "trials": trials}


def calibrate(url: str | None = None, *, start_rate: float = 100.0, max_rate: float = 20000.0,
              duration_s: float = 2.0, refine: int = 2, chunks: int = 16, latency_rate: float = 50.0,
              store: bool = True) -> dict[str, Any]:
    """Find the client's ceiling rate and added latency; stored (one per host) unless ``store`` is False."""
    from benchmint.core.errors import UserError

    if start_rate <= 0 or max_rate < start_rate or duration_s <= 0 or latency_rate <= 0:
        raise UserError("--start-rate, --max-rate, --duration and --latency-rate must be > 0 "
                        "(and --max-rate >= --start-rate)")
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = None
    from benchmint.llm.noop_server import NoopServerProcess

    def run(u: str) -> dict[str, Any]:
        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(_search(u, start_rate, max_rate, duration_s, refine, chunks, latency_rate))

    t0 = time.time()
    if url is None:
        with NoopServerProcess(chunks) as srv:
            found = run(srv.url)
        server = f"benchmint.llm.noop_server (child process, loopback, {chunks} chunks per answer at once)"
    else:
        from benchmint.llm.backends.http import normalize_base_url

        found = run(normalize_base_url(url))
        server = normalize_base_url(url)
    lat = found["latency_trial"]
    result = {
        "schema_version": CALIBRATION_SCHEMA_VERSION, "kind": "llm-calibrate", "created_wall_s": t0,
        "host": _host(), "server": server,
        "criteria": {"achieved_min_fraction": ACHIEVED_MIN, "send_lag_p99_max_s": SEND_LAG_P99_MAX_S,
                     "achieved": "(sent requests - 1) / (last actual send - first actual send)",
                     "arrivals": "constant", "trial_duration_s": duration_s},
        "ceiling_rate_per_s": found["ceiling_rate_per_s"],
        "first_failing_rate_per_s": found["first_failing_rate_per_s"],
        "reached_max_rate": found["reached_max_rate"],
        "client_added_latency": {
            "rate_per_s": lat["rate"],
            "ttft_from_send_s": lat["ttft_from_send_s"], "e2e_from_send_s": lat["e2e_from_send_s"],
            "how": "TTFT and E2E from send against a server that does no work: loopback, the server's answer and "
                   "this client's own code (an upper bound of what the client adds)",
        },
        "trials": found["trials"],
    }
    if store:
        p = calibration_path()
        p.parent.mkdir(parents=True, exist_ok=True)
        write_json(p, result)
        result["stored_at"] = str(p)
    return result

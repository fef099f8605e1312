"""Was the client the bottleneck of a run? The ``client_bound`` verdict every HTTP ``llm bench`` result carries,
judged from the run's send lag and this host's stored calibration (``benchmint llm calibrate``,
:mod:`benchmint.llm.calibrate`). Apart from the calibration so that the bench and its outputs can read the
verdict without importing the calibration, which drives the bench."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from benchmint.core.jsonio import read_json

SEND_LAG_P99_MAX_S = 0.001  # p99 send lag for a trial to pass, and for a bench run not to be client-bound
NEAR_CEILING = 0.8  # a run offering this fraction of the calibrated ceiling or more is client-bound


def calibration_path() -> Path:
    base = os.environ.get("BENCHMINT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "benchmint"
    )
    return Path(base) / "client-calibration.json"


def load_calibration() -> dict[str, Any] | None:
    """This host's stored calibration, or None."""
    p = calibration_path()
    try:
        cal = read_json(p)
    except (OSError, ValueError):
        return None
    if not isinstance(cal, dict) or (cal.get("host") or {}).get("hostname") != socket.gethostname():
        return None
    return cal


def client_bound_verdict(result: dict[str, Any], cal: dict[str, Any] | None) -> dict[str, Any]:
    """Was the client the bottleneck of this run? ``client_bound`` true when its p99 send lag passed the
    threshold or its offered (else achieved) rate per load-generating process reached :data:`NEAR_CEILING` of
    the calibrated ceiling (a calibration drives one process: ``--workers N`` shares the rate among N)."""
    reasons: list[str] = []
    bound = False
    judged = False  # anything measured said whether the client kept up (else: unknown, not "no")
    waited = ((result.get("measurement") or {}).get("requests_waited_for_connection")) or 0
    if waited:
        bound = judged = True
        reasons.append(f"{waited} requests waited in the client for a connection (the process's open-files "
                       "limit, ulimit -n, caps its connections)")
    lag99 = (result.get("send_lag_s") or {}).get("p99")
    open_loop = _timed_arrivals(result.get("schedule") or {})
    if lag99 is not None and open_loop:
        judged = True
        if lag99 > SEND_LAG_P99_MAX_S:
            bound = True
            reasons.append(f"send lag p99 {1000 * lag99:.2f} ms > {1000 * SEND_LAG_P99_MAX_S:g} ms: requests left "
                           "later than scheduled")
        else:
            reasons.append(f"send lag p99 {1000 * lag99:.2f} ms <= {1000 * SEND_LAG_P99_MAX_S:g} ms")
    offered = result.get("schedule", {}).get("rate_per_s")
    thr = result.get("throughput") or {}
    rate, what = (offered, "offered") if offered else (thr.get("sent_requests_per_s") or thr.get("requests_per_s"),
                                                       "achieved")
    n = workers_of(result)
    if rate and n > 1:  # each process sends its shard of the schedule: it is each process's rate that counts
        what = f"{what} {rate:.4g} req/s over {n} worker processes, i.e."
        rate = rate / n
        per = " per worker"
    else:
        per = ""
    ceiling = (cal or {}).get("ceiling_rate_per_s")
    if cal is None:
        reasons.append("no calibration stored for this host: run `benchmint llm calibrate`")
    elif not ceiling:
        reasons.append("the stored calibration found no passing rate")
    elif rate:
        judged = True
        frac = rate / ceiling
        if frac >= NEAR_CEILING:
            bound = True
            reasons.append(f"{what} {rate:.4g} req/s{per} is {100 * frac:.0f}% of this client's calibrated ceiling "
                           f"{ceiling:.4g} req/s (>= {100 * NEAR_CEILING:.0f}%)")
        else:
            reasons.append(f"{what} {rate:.4g} req/s{per} is {100 * frac:.0f}% of the calibrated ceiling "
                           f"{ceiling:.4g} req/s")
    return {"client_bound": bound if judged else None, "reasons": reasons, "calibration": str(calibration_path()) if cal else None,
            "ceiling_rate_per_s": ceiling, "thresholds": {"send_lag_p99_max_s": SEND_LAG_P99_MAX_S,
                                                          "near_ceiling_fraction": NEAR_CEILING}}


def workers_of(result: dict[str, Any]) -> int:
    """How many processes (or Ray actors) sent the run's load: the ``workers`` block's count, else
    ``--workers``, else 1."""
    m = ((result.get("measurement") or {}).get("workers") or {}).get("count")
    n = m or (result.get("config") or {}).get("workers") or 1
    try:
        return max(1, int(n))
    except (TypeError, ValueError):
        return 1


def _timed_arrivals(sched: dict[str, Any]) -> bool:
    """Did the run send at precomputed times (so that send lag tells the client's delay)? The schedule says so
    (``open_loop``: Poisson, constant, gamma, rate ramps, trace replay); an all-at-once run's lag is its own
    queue, not a delay. Results written before ``open_loop`` existed: by the arrival's name."""
    if sched.get("arrival") == "all-at-once" or sched.get("scenario") == "offline":
        return False
    if "open_loop" in sched:
        return bool(sched["open_loop"])
    arrival = str(sched.get("arrival", ""))
    return arrival in ("poisson", "constant") or arrival.startswith("gamma")


def client_bound_line(block: dict[str, Any] | None) -> str | None:
    if not block:
        return None
    verdict = ("unknown" if block["client_bound"] is None else "[red]yes[/]" if block["client_bound"] else "no")
    return f"client-bound: {verdict} ({'; '.join(block['reasons'])})"

"""Metrics over time windows: how latency moves as the load changes during one run (ramps, trace replays).

The run (from its start to its last scheduled send) is cut into ``n`` windows of equal width; each request
belongs to the window holding its scheduled send time. Per window: requests scheduled, completed, failed and
cancelled (stopped by Ctrl-C: not a failure of the server, as in the run's own counts), the offered rate (scheduled / width; the send rate in closed loop), the planned load at the window's middle
(a ramp's rate, ``planned_rate_per_s``, or a concurrency ramp's requests in flight, ``planned_concurrency``), requests in flight at the window's middle, and TTFT, TPOT and
E2E percentiles (latency anchored as in the rest of the result; :func:`benchmint.core.stats.percentiles`). ``latency_bend`` names the first window whose
TTFT p50 is more than twice the first window's (None when latency never doubles).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from benchmint.core.stats import percentiles
from benchmint.llm.metrics import record_metrics
from benchmint.llm.types import RequestRecord


def _pcts(vals: list[float]) -> dict[str, float | None]:
    if not vals:
        return {"p50": None, "p90": None, "mean": None}
    p50, p90 = percentiles(vals, [50, 90])
    return {"p50": float(p50), "p90": float(p90), "mean": float(np.mean(vals))}


def window_metrics(records: list[RequestRecord], start_ns: int, n: int = 10, anchor: str = "scheduled",
                   span_s: float | None = None,
                   planned: tuple[str, Callable[[float], float]] | None = None) -> dict[str, Any]:
    """``planned``: (key, the load the schedule planned at a time from the start): each window also gets that
    key at its middle (a ramp's planned rate, a concurrency ramp's planned requests in flight). The offered rate
    counts a window's requests, a handful in a short window (one request in 0.4 s reads 2.5 req/s), so the planned
    load is the figure to read latency against."""
    recs = [r for r in records if not r.warmup and (r.scheduled_ns or r.sent_ns)]
    if not recs:
        return {"width_s": None, "windows": [], "latency_bend": None}
    sched = np.array([((r.scheduled_ns or r.sent_ns) - start_ns) / 1e9 for r in recs])
    span = span_s or float(sched.max()) or 1e-9
    width = span / n
    idx = np.minimum((sched / width).astype(int), n - 1).clip(0)
    per = [record_metrics(r, anchor) if r.ok else None for r in recs]
    sent = np.array([(r.sent_ns - start_ns) / 1e9 for r in recs])
    ends = np.array([((r.end_ns or r.sent_ns) - start_ns) / 1e9 for r in recs])
    out = []
    for w in range(n):
        sel = np.nonzero(idx == w)[0]
        mid = (w + 0.5) * width
        ok = [per[i] for i in sel if per[i] is not None]
        cancelled = sum(1 for i in sel if recs[i].error_kind == "cancelled")
        out.append({
            "start_s": w * width,
            "end_s": (w + 1) * width,
            "scheduled": int(len(sel)),
            "completed": len(ok),
            "failed": int(len(sel) - len(ok) - cancelled),
            "cancelled": cancelled,
            "offered_rate_per_s": len(sel) / width if width > 0 else None,
            **({planned[0]: float(planned[1](mid))} if planned else {}),
            "in_flight_mid": int(np.sum((sent <= mid) & (ends > mid))),
            "ttft_s": _pcts([m["ttft_s"] for m in ok if m["ttft_s"] is not None]),
            "tpot_s": _pcts([m["tpot_s"] for m in ok if m["tpot_s"] is not None]),
            "e2e_s": _pcts([m["e2e_s"] for m in ok if m["e2e_s"] is not None]),
        })
    bend = None
    base = next((w["ttft_s"]["p50"] for w in out if w["ttft_s"]["p50"] is not None), None)
    if base:
        for i, w in enumerate(out):
            if w["ttft_s"]["p50"] is not None and w["ttft_s"]["p50"] > 2 * base:
                bend = {"window": i, "start_s": w["start_s"], "offered_rate_per_s": w["offered_rate_per_s"],
                        **({planned[0]: w[planned[0]]} if planned else {}),
                        "in_flight_mid": w["in_flight_mid"], "ttft_p50_s": w["ttft_s"]["p50"],
                        "rule": "first window whose TTFT p50 is more than twice the first window's"}
                break
    return {"width_s": width, "count": n, "by": "scheduled send time", "windows": out, "latency_bend": bend}

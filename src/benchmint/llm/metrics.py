"""Metrics from request records, exactly as in the DESIGN.md glossary (see docs/metrics.md). Each metric is
declared once in :mod:`benchmint.results.metric_table` (key, unit, definition, statistics, aliases); the
result's statistics blocks are made from that table.

Three levels, as AIPerf splits them:

- per-record metrics (one value per request; :func:`record_metrics`): ``ttft_s``, ``e2e_s``, ``tpot_s``,
  ``send_lag_s``, ``itl_s`` (a list per request), plus ``ttft_from_send_s`` / ``e2e_from_send_s``;
- aggregate metrics (statistics over records: mean, p50, p90, p99, max, min, std, count; :func:`stats`);
- derived metrics (from the whole run: throughput, goodput, duration; :func:`compute_metrics`).

Definitions (times from the monotonic clock):

- anchor: the scheduled send time (default, as MLPerf LoadGen does) or the actual send time
  (``anchor="sent"``); both variants of TTFT and E2E are always reported.
- TTFT = first content chunk time - anchor. E2E = last content chunk time - anchor (the stream's end when
  there were no chunks). TPOT = (E2E - TTFT) / (output tokens - 1) for requests with >= 2 output tokens whose
  chunks came at >= 2 times (an answer that came in one piece, e.g. not streamed, or whose chunks all arrived in
  one read after a stall, shows nothing after its first token: not a TPOT of 0).
  ITL = time between consecutive content chunks. Send lag = actual send time - scheduled send time.
- duration = from the measured run's start (first scheduled send) to the last measured request's end.
- throughput = completed requests / duration, output tokens / duration, (input + output tokens) / duration
  (null unless every completed request's input length is known: an unknown input is not 0 tokens).
  Completed / duration is what vLLM and AIPerf report; over a short open-loop run it is above the rate the
  requests were sent at (n requests at R/s span (n - 1) / R s, plus the last one's latency).
- send rate = (sent requests - 1) / (last actual send - first actual send): the rate the client achieved, which
  equals the target R for sends on a rate-R schedule whatever their number (null with < 2 sends, or when every
  request was scheduled at one time, as in offline).
- goodput = completed requests meeting every SLO / duration.
- percentiles: linear interpolation between closest ranks (numpy's default; benchmint.core.stats.percentiles).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from benchmint.core.errors import UserError
from benchmint.core.stats import percentiles
from benchmint.llm.types import RequestRecord
from benchmint.results.metric_table import STAT_KEYS, stats_metrics

__all__ = ["STAT_KEYS", "SLO_KEYS", "compute_metrics", "format_slo", "parse_slo", "record_metrics", "send_rate",
           "stats"]
SLO_KEYS = {"ttft": "ttft_s", "tpot": "tpot_s", "e2e": "e2e_s", "itl": "itl_max_s"}


def stats(values: Any) -> dict[str, float | int | None]:
    a = np.asarray(values, dtype=np.float64)
    a = a[~np.isnan(a)] if a.size else a
    if a.size == 0:
        return {k: (0 if k == "count" else None) for k in STAT_KEYS}
    p50, p90, p99 = percentiles(a, [50, 90, 99])
    return {
        "mean": float(a.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(a.max()),
        "min": float(a.min()),
        "std": float(a.std()),
        "count": int(a.size),
    }


def parse_slo(spec: str | None) -> dict[str, float]:
    """``ttft=2,tpot=0.2`` (seconds; ``200ms`` works too) -> {"ttft_s": 2.0, "tpot_s": 0.2}."""
    if not spec:
        return {}
    out: dict[str, float] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        k, _, v = part.partition("=")
        k = k.strip().lower().removesuffix("_s")
        if k not in SLO_KEYS or not v:
            raise UserError(f"--slo {spec!r}: use KEY=SECONDS pairs with keys {', '.join(SLO_KEYS)} (e.g. ttft=2,tpot=0.2)")
        v = v.strip().lower()
        try:
            sec = float(v[:-2]) / 1000 if v.endswith("ms") else float(v.removesuffix("s"))
        except ValueError:
            raise UserError(f"--slo {spec!r}: {v!r} is not a number of seconds") from None
        if not math.isfinite(sec) or sec <= 0:
            raise UserError(f"--slo {spec!r}: {k}={v} is not a limit (a positive number of seconds)")
        if SLO_KEYS[k] in out:
            raise UserError(f"--slo {spec!r}: {k} is given twice")
        out[SLO_KEYS[k]] = sec
    return out


_SLO_NAMES = {"ttft_s": "TTFT", "tpot_s": "TPOT", "e2e_s": "E2E", "itl_max_s": "ITL"}


def format_slo(slo: dict[str, float]) -> str:
    """{"ttft_s": 0.5, "tpot_s": 0.05} -> "TTFT <= 500 ms, TPOT <= 50 ms" (as users write SLOs)."""
    def sec(v: float) -> str:
        return f"{v * 1000:.4g} ms" if v < 1 else f"{v:.4g} s"

    return ", ".join(f"{_SLO_NAMES.get(k, k)} <= {sec(v)}" for k, v in slo.items())


def record_metrics(r: RequestRecord, anchor: str = "scheduled") -> dict[str, Any]:
    """Per-record metrics of one request (None where they do not apply)."""
    base = r.scheduled_ns if anchor == "scheduled" and r.scheduled_ns else r.sent_ns
    last = r.chunk_ns[-1] if r.chunk_ns else r.end_ns
    m: dict[str, Any] = {
        "send_lag_s": (r.sent_ns - r.scheduled_ns) / 1e9 if r.scheduled_ns else 0.0,
        "ttft_s": None,
        "ttft_from_send_s": None,
        "e2e_s": None,
        "e2e_from_send_s": None,
        "tpot_s": None,
        "itl_s": [],
    }
    if r.ok and last is not None:
        m["e2e_s"] = (last - base) / 1e9
        m["e2e_from_send_s"] = (last - r.sent_ns) / 1e9
        if r.first_token_ns is not None:
            m["ttft_s"] = (r.first_token_ns - base) / 1e9
            m["ttft_from_send_s"] = (r.first_token_ns - r.sent_ns) / 1e9
            if r.output_tokens and r.output_tokens > 1 and len(r.chunk_ns) > 1 and last > r.first_token_ns:
                m["tpot_s"] = (last - r.first_token_ns) / 1e9 / (r.output_tokens - 1)
        if len(r.chunk_ns) > 1:
            m["itl_s"] = (np.diff(np.asarray(r.chunk_ns, dtype=np.int64)) / 1e9).tolist()
    return m


def _meets(m: dict[str, Any], slo: dict[str, float]) -> bool:
    for key, limit in slo.items():
        if key == "itl_max_s":
            if m["itl_s"] and max(m["itl_s"]) > limit:
                return False
            continue
        v = m.get(key)
        if v is None or v > limit:
            return False
    return True


def _values(key: str, level: str, per: list[dict[str, Any]], recs: list[RequestRecord]) -> list[float]:
    """The values one statistics block summarizes: the completed requests' per-record values (every chunk gap
    for a per-chunk metric); send lag over every sent request, failed ones too (the client's lag is not the
    server's fault), but not the cancelled ones."""
    if key == "send_lag_s":
        return [(r.sent_ns - r.scheduled_ns) / 1e9 for r in recs
                if r.scheduled_ns and r.sent_ns and r.error_kind != "cancelled"]
    if level == "chunk":
        return [x for m in per for x in m[key]]
    return [m[key] for m in per if m[key] is not None]


def send_rate(records: list[RequestRecord]) -> float | None:
    """(sent requests - 1) / (last actual send - first actual send): n sends span n - 1 gaps, so sends on time on
    a rate-R schedule give R for any n. None with fewer than 2 sends or when every request was scheduled at one
    time (offline: no rate to speak of)."""
    sent = [r for r in records if r.sent_ns and not r.warmup]
    if len(sent) < 2 or len({r.scheduled_ns or r.sent_ns for r in sent}) < 2:
        return None
    span = max(r.sent_ns for r in sent) - min(r.sent_ns for r in sent)
    return (len(sent) - 1) / (span / 1e9) if span > 0 else None


def _cancelled_example(in_flight: int, unsent: int) -> str:
    parts = [f"{in_flight} in flight"] if in_flight else []
    if unsent:
        parts.append(f"{unsent} before {'it was' if unsent == 1 else 'they were'} sent")
    return "stopped by Ctrl-C: " + ", ".join(parts)


def compute_metrics(
    records: list[RequestRecord],
    start_ns: int,
    *,
    anchor: str = "scheduled",
    slo: dict[str, float] | None = None,
    interrupted: bool = False,
) -> dict[str, Any]:
    """The result's metric blocks from the measured (non-warm-up) records of a run."""
    recs = [r for r in records if not r.warmup]
    ok = [r for r in recs if r.ok]
    per = [record_metrics(r, anchor) for r in ok]
    ends = [r.end_ns for r in recs if r.end_ns is not None]
    # from the first scheduled send (a ramp from 0/s, a trace window or a first Poisson gap leaves the run idle
    # before it; the run's start stands in where no request was scheduled or sent)
    firsts = [r.scheduled_ns or r.sent_ns for r in recs if r.scheduled_ns or r.sent_ns]
    first_ns = min(firsts) if firsts else start_ns
    duration_s = (max(ends) - first_ns) / 1e9 if ends else 0.0
    out_total = int(sum(r.output_tokens or 0 for r in ok))
    in_known = [r.input_tokens for r in ok if r.input_tokens is not None]
    in_total = int(sum(in_known))
    cancelled = [r for r in recs if r.error_kind == "cancelled"]  # stopped by Ctrl-C: not a failure of the server
    in_flight = sum(1 for r in cancelled if r.sent_ns)
    errors = Counter(r.error_kind for r in recs if not r.ok and r.error_kind != "cancelled")
    examples: dict[str, str] = {}
    for r in recs:
        if r.error_kind and r.error_kind not in examples:
            examples[r.error_kind] = r.error or ""
    if cancelled:  # the first cancelled record may be an unsent one while others were in flight: say both
        examples["cancelled"] = _cancelled_example(in_flight, len(cancelled) - in_flight)
    sources = Counter(r.output_tokens_source for r in ok)
    flags = [r for r in ok if r.token_count_flag]
    d = duration_s if duration_s > 0 else float("nan")
    res: dict[str, Any] = {
        "requests": {
            "scheduled": len(recs),  # completed + failed + cancelled
            "sent": sum(1 for r in recs if r.sent_ns),
            "completed": len(ok),
            "failed": len(recs) - len(ok) - len(cancelled),
            "cancelled": len(cancelled),
            "cancelled_in_flight": in_flight,
            "errors": dict(errors),
            "error_examples": examples,
            "warmup_excluded": len(records) - len(recs),
            "interrupted": interrupted,
        },
        **{m.key: stats(_values(m.key, m.level, per, recs)) for m in stats_metrics()},
        "throughput": {
            "requests_per_s": len(ok) / d if ok else 0.0,
            "output_tokens_per_s": out_total / d if ok else 0.0,
            # an unknown input length is not 0 tokens: no total unless every completed request's input is known
            "total_tokens_per_s": ((out_total + in_total) / d if ok else 0.0) if len(in_known) == len(ok) else None,
            "sent_requests_per_s": send_rate(recs),
        },
        "output_tokens_total": out_total,
        "input_tokens_total": in_total,
        "input_tokens_known": len(in_known),
        "duration_s": duration_s,
        "token_counts": {
            "output_tokens_source": dict(sources),
            "flagged": len(flags),
            "flag_examples": [f.token_count_flag for f in flags[:3]],
        },
        "latency_anchor": anchor,
    }
    if slo:
        good = sum(1 for m in per if _meets(m, slo))
        res["goodput_requests_per_s"] = good / d if ok else 0.0
        # of the requests not cancelled: an interrupted run's unsent requests are no failures to meet the SLO
        asked = len(recs) - len(cancelled)
        res["goodput"] = {"slo": slo, "requests_meeting_slo": good, "fraction": good / asked if asked else 0.0}
    for k, v in list(res["throughput"].items()):
        if isinstance(v, float) and np.isnan(v):
            res["throughput"][k] = 0.0
    return res

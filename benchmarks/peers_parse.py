"""Read each load generator's own output files into one set of figures, and the truth server's log (for
``benchmarks/peers.py``; the parsing is tested on small sample files in ``tests/data/peers/``).

Every parser returns a :class:`Figures`: TTFT / TPOT / ITL at p50 and p99 in milliseconds, the achieved request
rate, completed and failed requests, as the tool itself reported them (None where it did not report one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METRICS = ("ttft", "tpot", "itl")


@dataclass
class Figures:
    ttft_p50: float | None = None
    ttft_p99: float | None = None
    tpot_p50: float | None = None
    tpot_p99: float | None = None
    itl_p50: float | None = None
    itl_p99: float | None = None
    rate: float | None = None  # achieved requests per second, as the tool computes it
    completed: int | None = None
    failed: int | None = None


def _ms(v: float | None, scale: float) -> float | None:
    return None if v is None else float(v) * scale


def parse_benchmint(result_json: Path) -> Figures:
    """``result.json`` of ``benchmint llm bench`` (seconds). TTFT is ``ttft_from_send_s`` (from the request's
    send, as the other tools measure it; ``ttft_s`` is from its scheduled time and adds the send lag)."""
    r = json.loads(Path(result_json).read_text())
    ttft = r.get("ttft_from_send_s") or r["ttft_s"]
    return Figures(
        ttft_p50=_ms(ttft["p50"], 1e3), ttft_p99=_ms(ttft["p99"], 1e3),
        tpot_p50=_ms(r["tpot_s"]["p50"], 1e3), tpot_p99=_ms(r["tpot_s"]["p99"], 1e3),
        itl_p50=_ms(r["itl_s"]["p50"], 1e3), itl_p99=_ms(r["itl_s"]["p99"], 1e3),
        rate=r["throughput"]["requests_per_s"],
        completed=r["requests"]["completed"], failed=r["requests"]["failed"],
    )


def parse_guidellm(report_json: Path) -> Figures:
    """GuideLLM's ``--output kind=json`` report (0.8): ``benchmarks[0].metrics.<name>_ms.successful.percentiles``
    in milliseconds; the rate is successful requests over the benchmark's ``duration``."""
    d = json.loads(Path(report_json).read_text())
    b = d["benchmarks"][0]
    m = b["metrics"]

    def pct(name: str, p: str) -> float | None:
        s = (m.get(name) or {}).get("successful") or {}
        return (s.get("percentiles") or {}).get(p)

    tot = m.get("request_totals") or {}
    ok = tot.get("successful")
    dur = b.get("duration")
    return Figures(
        ttft_p50=pct("time_to_first_token_ms", "p50"), ttft_p99=pct("time_to_first_token_ms", "p99"),
        tpot_p50=pct("time_per_output_token_ms", "p50"), tpot_p99=pct("time_per_output_token_ms", "p99"),
        itl_p50=pct("inter_token_latency_ms", "p50"), itl_p99=pct("inter_token_latency_ms", "p99"),
        rate=ok / dur if ok is not None and dur else None,
        completed=ok, failed=(tot.get("errored") or 0) + (tot.get("incomplete") or 0) if tot else None,
    )


def parse_aiperf(export_json: Path) -> Figures:
    """AIPerf's ``profile_export_aiperf.json``: one object per metric tag with ``unit`` and ``p50`` / ``p99``
    (``time_to_first_token``, ``inter_token_latency`` = per-request TPOT, ``inter_chunk_latency`` = ITL;
    milliseconds), ``request_throughput.avg``, ``request_count.avg`` and ``error_request_count.avg``."""
    d = json.loads(Path(export_json).read_text())
    scale = {"ms": 1.0, "s": 1e3, "us": 1e-3, "ns": 1e-6, "sec": 1e3}

    def get(tag: str, key: str) -> float | None:
        v = d.get(tag)
        if not isinstance(v, dict) or v.get(key) is None:
            return None
        return float(v[key]) * scale.get(str(v.get("unit", "ms")).lower(), 1.0)

    def raw(tag: str) -> float | None:
        v = d.get(tag)
        return float(v["avg"]) if isinstance(v, dict) and v.get("avg") is not None else None

    count, errors = raw("request_count"), raw("error_request_count")
    count = raw("completed_request_count") if count is None else count
    return Figures(
        ttft_p50=get("time_to_first_token", "p50"), ttft_p99=get("time_to_first_token", "p99"),
        tpot_p50=get("inter_token_latency", "p50"), tpot_p99=get("inter_token_latency", "p99"),
        itl_p50=get("inter_chunk_latency", "p50"), itl_p99=get("inter_chunk_latency", "p99"),
        rate=raw("request_throughput"),
        completed=None if count is None else int(count), failed=int(errors or 0),
    )


def parse_inference_perf(summary_json: Path) -> Figures:
    """inference-perf's ``summary_lifecycle_metrics.json``: ``successes.latency.<metric>.{median,p99}`` in
    seconds, ``successes.throughput.requests_per_sec``, ``successes.count`` and ``failures.count``."""
    d = json.loads(Path(summary_json).read_text())
    ok = d.get("successes") or {}
    lat = ok.get("latency") or {}

    def get(name: str, key: str) -> float | None:
        v = lat.get(name) or {}
        return _ms(v.get(key), 1e3)

    return Figures(
        ttft_p50=get("time_to_first_token", "median"), ttft_p99=get("time_to_first_token", "p99"),
        tpot_p50=get("time_per_output_token", "median"), tpot_p99=get("time_per_output_token", "p99"),
        itl_p50=get("inter_token_latency", "median"), itl_p99=get("inter_token_latency", "p99"),
        rate=(ok.get("throughput") or {}).get("requests_per_sec"),
        completed=ok.get("count"), failed=(d.get("failures") or {}).get("count"),
    )


PARSERS = {"benchmint": parse_benchmint, "guidellm": parse_guidellm, "aiperf": parse_aiperf,
           "inference-perf": parse_inference_perf}


@dataclass
class Truth:
    """What the truth server saw, on its own clock: figures (ms) plus the rate at which requests arrived and the
    first / last arrival (``time.monotonic_ns()``)."""

    figures: Figures
    requests: int
    arrival_rate: float | None  # (requests - 1) / span of arrival times
    first_in_ns: int | None = None
    last_in_ns: int | None = None


def _p(a: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(a, dtype=np.float64), q)) if a else None


def parse_truth(log_jsonl: Path) -> Truth:
    """The truth server's log (``benchmarks/mock_openai_server.py --log``): per request ``t_in``, ``t_first``,
    ``t_last``, ``t_chunks``, ``n`` on ``time.monotonic_ns()``."""
    rows = [json.loads(line) for line in Path(log_jsonl).read_text().splitlines() if line.strip()]
    done = [r for r in rows if r.get("t_first") is not None and r.get("t_last") is not None]
    ttft = [(r["t_first"] - r["t_in"]) / 1e6 for r in done]
    tpot = [(r["t_last"] - r["t_first"]) / 1e6 / (r["n"] - 1) for r in done if r["n"] > 1]
    itl = [float(x) / 1e6 for r in done for x in np.diff(np.asarray(r.get("t_chunks") or [], dtype=np.int64))]
    ins = sorted(r["t_in"] for r in rows)
    span = (ins[-1] - ins[0]) / 1e9 if len(ins) > 1 else 0.0
    fig = Figures(ttft_p50=_p(ttft, 50), ttft_p99=_p(ttft, 99), tpot_p50=_p(tpot, 50), tpot_p99=_p(tpot, 99),
                  itl_p50=_p(itl, 50), itl_p99=_p(itl, 99), completed=len(done), failed=len(rows) - len(done))
    return Truth(fig, len(rows), (len(ins) - 1) / span if span > 0 else None, ins[0] if ins else None,
                 ins[-1] if ins else None)


def cpu_between(samples: list[tuple[int, float]], t0_ns: int, t1_ns: int) -> float | None:
    """CPU seconds spent between ``t0_ns`` and ``t1_ns`` from ``(monotonic_ns, cumulative CPU s)`` samples,
    interpolated linearly; None when the samples do not cover the interval."""
    if len(samples) < 2 or samples[0][0] > t0_ns or samples[-1][0] < t1_ns:
        return None
    t = np.asarray([x[0] for x in samples], dtype=np.float64)
    c = np.maximum.accumulate(np.asarray([x[1] for x in samples], dtype=np.float64))  # a dying process: no dip
    return float(np.interp(t1_ns, t, c) - np.interp(t0_ns, t, c))


def benchmint_paths(requests_parquet: Path, log_jsonl: Path) -> dict | None:
    """Where benchmint's added TTFT goes, request by request: its ``requests.parquet`` rows (wall-clock send
    ``sent_wall_s``, then its own monotonic offsets) paired in send order with the truth server's rows (wall-clock
    read ``w_in``, then monotonic offsets). ``request_ms``: client send -> server read; ``response_ms``: server's
    first chunk written -> client's first token. None when the two do not hold the same number of requests."""
    import pyarrow.parquet as pq

    cols = ["warmup", "sent_s", "first_token_s", "sent_wall_s"]
    c = [r for r in pq.read_table(requests_parquet, columns=cols).to_pylist()
         if not r["warmup"] and r["sent_wall_s"] is not None]
    s = [json.loads(line) for line in Path(log_jsonl).read_text().splitlines() if line.strip()]
    if not c or len(c) != len(s) or any("w_in" not in r for r in s):
        return None
    c.sort(key=lambda r: r["sent_wall_s"])
    s.sort(key=lambda r: r["w_in"])
    req, resp = [], []
    for cr, sr in zip(c, s, strict=True):
        req.append((sr["w_in"] / 1e9 - cr["sent_wall_s"]) * 1e3)
        if cr["first_token_s"] is not None and sr["t_first"] is not None:
            client_first = cr["sent_wall_s"] + cr["first_token_s"] - cr["sent_s"]
            server_first = sr["w_in"] / 1e9 + (sr["t_first"] - sr["t_in"]) / 1e9
            resp.append((client_first - server_first) * 1e3)
    return {"matched": len(c), "request_ms_p50": _p(req, 50), "request_ms_p99": _p(req, 99),
            "response_ms_p50": _p(resp, 50), "response_ms_p99": _p(resp, 99)}

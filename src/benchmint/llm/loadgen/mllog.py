"""Read LoadGen's ``mlperf_log_detail.txt``: one ``:::MLLOG {json}`` record per line.

Results come from these records, not from the human summary text: ``result_validity``, the
``result_*`` figures, ``early_stopping_*`` verdicts, ``effective_*`` / ``requested_*`` settings, and the
records LoadGen flags with ``is_error`` / ``is_warning``. :func:`summarize` turns them into the
``loadgen`` block of a result (seconds as floats, rates per second).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from benchmint.core.errors import UserError

PREFIX = ":::MLLOG "
PERCENTILES = {"p50": "50.00", "p90": "90.00", "p95": "95.00", "p97": "97.00", "p99": "99.00", "p99_9": "99.90"}


@dataclass
class MLLog:
    """The records of one detail log: last value per key, plus errors and warnings in order."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_records: int = 0
    path: str | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def with_prefix(self, prefix: str) -> dict[str, Any]:
        n = len(prefix)
        return {k[n:]: v for k, v in self.values.items() if k.startswith(prefix)}


def parse_lines(lines: Any, path: str | None = None) -> MLLog:
    log = MLLog(path=path)
    for raw in lines:
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        i = line.find(PREFIX)
        if i < 0:
            continue
        try:
            rec = orjson.loads(line[i + len(PREFIX):])
        except orjson.JSONDecodeError:
            # a line cut short (a killed run) is skipped; every complete record is still read
            continue
        key = rec.get("key")
        if not isinstance(key, str):
            continue
        value = rec.get("value")
        log.n_records += 1
        meta = rec.get("metadata") or {}
        if meta.get("is_error"):
            log.errors.append(f"{key}: {value}")
        elif meta.get("is_warning"):
            log.warnings.append(f"{key}: {value}")
        log.values[key] = value
    return log


def parse_detail(path: str | Path) -> MLLog:
    """Parse a ``mlperf_log_detail.txt`` (or a folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "mlperf_log_detail.txt"
    if not p.is_file():
        raise UserError(f"{p}: no LoadGen detail log here; give the folder LoadGen wrote its logs to")
    with open(p, "rb") as f:
        log = parse_lines(f, str(p))
    if log.n_records == 0:
        raise UserError(f"{p}: no ':::MLLOG' records found; is this a LoadGen mlperf_log_detail.txt?")
    return log


def _ns_to_s(v: Any) -> float | None:
    return None if v is None else float(v) / 1e9


def _percentiles(log: MLLog, fmt: str, extra: dict[str, str] | None = None) -> dict[str, float] | None:
    out: dict[str, float] = {}
    for name, pct in PERCENTILES.items():
        v = log.get(fmt.format(pct=pct))
        if v is not None:
            out[name] = float(v) / 1e9
    for name, key in (extra or {}).items():
        v = log.get(key)
        if v is not None:
            out[name] = float(v) / 1e9
    return out or None


_MORE_QUERIES = re.compile(r"at least (\d+) more queries")
_NEED_TOTAL = re.compile(r"would need to process at\s+least (\d+)")


def _clean(text: Any) -> str:
    return re.sub(r"\s+", " ", str(text or "")).replace("* ", "").strip()


def early_stopping(log: MLLog) -> dict[str, Any]:
    """Early-stopping verdicts: met or not, LoadGen's own text per metric, and the extra queries it asks for."""
    out: dict[str, Any] = {"met": log.get("early_stopping_met")}
    for metric, key in (("ttft", "early_stopping_ttft_result"), ("tpot", "early_stopping_tpot_result"),
                        ("latency", "early_stopping_result")):
        text = log.get(key)
        if not text:
            continue
        m = _MORE_QUERIES.search(str(text))
        out[metric] = {
            "text": _clean(text),
            "unsuccessful": "unsuccessful" in str(text).lower(),
            "more_queries_needed": int(m.group(1)) if m else None,
        }
    for k in ("early_stopping_latency_ss", "early_stopping_latency_ms"):
        if log.get(k):
            out[k.replace("early_stopping_latency_", "latency_estimate_") + "_s"] = _ns_to_s(log.get(k))
    return out


def summarize(log: MLLog) -> dict[str, Any]:
    """The ``loadgen`` block of a result, from the detail log's records."""
    scenario = log.get("effective_scenario") or log.get("requested_scenario")
    mode = log.get("effective_test_mode") or log.get("requested_test_mode")
    samples_per_s = None
    for k in ("result_completed_samples_per_sec", "result_samples_per_second", "result_qps_with_loadgen_overhead"):
        if log.get(k) is not None:
            samples_per_s = float(log.get(k))
            break
    tokens_per_s = None
    for k in ("result_completed_tokens_per_second", "result_tokens_per_second",
              "result_token_throughput_with_loadgen_overhead"):
        if log.get(k) is not None:
            tokens_per_s = float(log.get(k))
            break
    ttft = _percentiles(
        log, "result_first_token_{pct}_percentile_latency_ns",
        {"mean": "result_first_token_mean_latency_ns", "min": "result_first_token_min_latency_ns",
         "max": "result_first_token_max_latency_ns"},
    )
    tpot = _percentiles(
        log, "result_time_per_output_token_{pct}_percentile_ns",
        {"mean": "result_time_to_output_token_mean", "min": "result_time_to_output_token_min",
         "max": "result_time_to_output_token_max"},
    )
    # LoadGen divides by (tokens - 1): answers with no token (failed requests, answered empty) give negative
    # times per token, which no request took; such a figure is left out (null), not shown
    tpot = {k: (None if isinstance(v, int | float) and v < 0 else v) for k, v in tpot.items()} \
        if isinstance(tpot, dict) else tpot
    latency = _percentiles(
        log, "result_{pct}_percentile_latency_ns",
        {"mean": "result_mean_latency_ns", "min": "result_min_latency_ns", "max": "result_max_latency_ns"},
    )
    effective = log.with_prefix("effective_")
    summary: dict[str, Any] = {
        "validity": log.get("result_validity"),
        "scenario": scenario,
        "mode": mode,
        "samples_per_s": samples_per_s,
        "tokens_per_s": tokens_per_s,
        "scheduled_samples_per_s": log.get("result_scheduled_samples_per_sec"),
        "ttft_s": ttft,
        "tpot_s": tpot,
        "latency_s": latency,
        "limits": {
            "ttft_s": _ns_to_s(log.get("requested_server_ttft_latency")) if scenario == "Server" else None,
            "tpot_s": _ns_to_s(log.get("requested_server_tpot_latency")) if scenario == "Server" else None,
            "latency_s": (_ns_to_s(effective.get("target_latency_ns")) or None),
            "percentile": effective.get("target_latency_percentile"),
            "use_token_latencies": log.get("requested_use_token_latencies"),
        },
        "query_count": log.get("result_query_count"),
        "overlatency_query_count": log.get("result_overlatency_query_count"),
        "constraints": {
            "perf_constraints_met": log.get("result_perf_constraints_met"),
            "min_duration_met": log.get("result_min_duration_met"),
            "min_queries_met": log.get("result_min_queries_met"),
            "early_stopping_met": log.get("early_stopping_met"),
        },
        "loadgen_invalid_reason": (str(log.get("result_invalid_reason") or "").strip() or None),
        "early_stopping": early_stopping(log),
        "effective": effective,
        "generated_query_count": log.get("generated_query_count"),
        "generated_query_duration_s": _ns_to_s(log.get("generated_query_duration")),
        "num_errors": log.get("num_errors"),
        "errors": log.errors,
        "warnings": log.warnings,
        "loadgen_version": log.get("loadgen_version"),
        "measured_by": "MLPerf LoadGen (mlperf_log_detail.txt :::MLLOG records); "
                       "latencies from LoadGen's issue time to FirstTokenComplete / QuerySamplesComplete",
    }
    if summary["validity"] is None:
        # accuracy runs carry no verdict; otherwise the run ended before LoadGen wrote one
        summary["validity"] = "N/A" if mode == "AccuracyOnly" else "UNKNOWN"  # the run ended before LoadGen wrote its verdict
    return summary

"""LoadGen validity in plain words, and ``--plan``: will these settings ever give a VALID result?

LoadGen judges a performance run on: the latency constraints (TTFT and TPOT at the percentile, for token
latency benchmarks), the minimum duration, the minimum query count, and early stopping. Early stopping asks
for enough queries that, at 99% confidence, the true share of queries over the limit is below
``1 - percentile``: with ``t`` queries over the limit it needs ``h`` more under it, where ``h`` is the smallest
count with ``P(Binomial(h + t, 1 - p) <= t) <= 1 - 0.99`` (LoadGen's ``MinPassingQueriesFinder``). With no
query over the limit that is ``ceil(log(0.01) / log(p))``: 459 queries at p99, 44 at p90. SingleStream's
percentile estimate needs the count for one query over the limit: 64 at p90, 662 at p99.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from benchmint.llm.loadgen.settings import EARLY_STOPPING_CONFIDENCE, MODEL_KEYS, RunSettings


def early_stopping_min_queries(percentile: float, overlatency: int = 0,
                               confidence: float = EARLY_STOPPING_CONFIDENCE) -> int:
    """Total queries early stopping needs when ``overlatency`` of them are over the limit."""
    if not 0 < percentile < 1:
        raise ValueError("percentile must be in (0, 1)")
    h = math.ceil(math.log(1 - confidence) / math.log(percentile))
    if overlatency == 0:
        return h
    from scipy.stats import binom

    def tail(n_under: int) -> float:  # P(at most `overlatency` of the queries over the limit)
        return float(binom.cdf(overlatency, n_under + overlatency, 1 - percentile))

    lo, hi = h, h
    while tail(hi) > 1 - confidence:
        lo, hi = hi, hi * 2
    while lo < hi:  # smallest h that passes
        mid = (lo + hi) // 2
        if tail(mid) <= 1 - confidence:
            hi = mid
        else:
            lo = mid + 1
    return lo + overlatency


def _fmt_s(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def _pct_name(p: float) -> str:
    x = p * 100
    return f"p{x:.0f}" if abs(x - round(x)) < 1e-9 else f"p{x:g}"


def _pct_key(p: float) -> str:
    """The key of a percentile in the summary's blocks (p50, p90, p99, ...); p99 when LoadGen has no such figure."""
    return {0.5: "p50", 0.9: "p90", 0.95: "p95", 0.97: "p97", 0.99: "p99", 0.999: "p99_9"}.get(round(p, 3), "p99")


def explain(lg_summary: dict[str, Any], settings: RunSettings | None = None) -> list[str]:
    """Plain sentences: which constraint failed, and what change would make the run valid."""
    if lg_summary.get("validity") == "VALID":
        return []
    reasons: list[str] = []
    eff = lg_summary.get("effective") or {}
    cons = lg_summary.get("constraints") or {}
    scenario = lg_summary.get("scenario")
    pct = eff.get("target_latency_percentile") or (settings.percentile() if settings else 0.99)
    pname = _pct_name(float(pct))
    qcount = lg_summary.get("query_count")
    sched = lg_summary.get("scheduled_samples_per_s")
    done = lg_summary.get("samples_per_s")

    if lg_summary.get("validity") in (None, "UNKNOWN"):
        reasons.append("LoadGen wrote no verdict: the test ended early (crash or interrupt); see worker.log.")
        return reasons

    if cons.get("perf_constraints_met") is False:
        failed = []
        limits = lg_summary.get("limits") or {}
        ttft_lim, tpot_lim = limits.get("ttft_s"), limits.get("tpot_s")
        if settings is not None:
            lt, lp = settings.limits()
            ttft_lim = ttft_lim or lt
            tpot_lim = tpot_lim or lp
        key = _pct_key(float(pct))
        ttft = (lg_summary.get("ttft_s") or {}).get(key)
        tpot = (lg_summary.get("tpot_s") or {}).get(key)
        if ttft_lim and ttft is not None and ttft > ttft_lim:
            failed.append(f"TTFT {key} was {_fmt_s(ttft)}, over the {_fmt_s(ttft_lim)} limit")
        if tpot_lim and tpot is not None and tpot > tpot_lim:
            failed.append(f"TPOT {key} was {_fmt_s(tpot)}, over the {_fmt_s(tpot_lim)} limit")
        lat_lim = limits.get("latency_s")
        lat = (lg_summary.get("latency_s") or {}).get(key)
        if not failed and lat_lim and lat is not None and lat > lat_lim:
            failed.append(f"latency {key} was {_fmt_s(lat)}, over the {_fmt_s(lat_lim)} target")
        what = "; ".join(failed) if failed else "a latency constraint was not met"
        advice = ""
        if scenario == "Server":
            target = eff.get("target_qps") or sched
            if done and sched and done < 0.95 * sched:
                advice = (f" The system completed {done:.3g} queries/s of the {sched:.3g}/s LoadGen scheduled, so "
                          f"queries piled up: a target QPS at or below about {0.9 * done:.3g} is needed"
                          " (`benchmint llm sweep` finds the highest rate that passes).")
            elif target:
                ratios = [lim / v for lim, v in ((ttft_lim, ttft), (tpot_lim, tpot)) if lim and v]
                ratio = min(ratios) if ratios else 1.0
                guess = float(target) * min(0.9, max(0.1, ratio))
                advice = (f" Lower --target-qps: try about {guess:.3g} (from {float(target):.3g}); "
                          "`benchmint llm sweep` finds the highest rate that passes.")
        else:
            advice = " The engine itself is too slow for the limit at this load; a faster setup is needed."
        reasons.append(f"Latency constraint failed: {what}.{advice}")

    if cons.get("min_duration_met") is False:
        min_d = eff.get("min_duration_ms")
        dur = lg_summary.get("generated_query_duration_s")
        if scenario == "Offline":
            exp_qps = eff.get("target_qps")
            need = (done or 0) * 1.1
            reasons.append(
                "Minimum duration not met: the Offline query finished before the "
                f"{(min_d or 0) / 1000:g} s minimum because the system ran faster than the expected QPS "
                f"({exp_qps}); set --target-qps to at least {math.ceil(need * 10) / 10:g} "
                f"(the measured {done:.3g} samples/s plus 10%) so LoadGen issues enough samples."
                if done else "Minimum duration not met: raise --target-qps (expected QPS) for Offline."
            )
        else:
            reasons.append(
                f"Minimum duration not met: the run needs {(min_d or 0) / 1000:g} s"
                + (f" but its queries spanned {dur:.3g} s" if dur else "")
                + "; raise --min-duration or --min-query-count."
            )

    if cons.get("min_queries_met") is False:
        need = eff.get("min_query_count")
        more = (int(need) - int(qcount)) if (need is not None and qcount is not None) else None
        max_q = eff.get("max_query_count")
        if max_q and need is not None and int(max_q) < int(need):
            advice = f"; --max-query-count {max_q} stops the run first: raise it to at least {need}."
        else:
            advice = "; raise --min-duration or lower --min-query-count."
        reasons.append(
            f"Minimum query count not met: {qcount} queries ran, {need} are required"
            + (f" ({more} more)" if more and more > 0 else "") + advice
        )

    es = lg_summary.get("early_stopping") or {}
    if cons.get("early_stopping_met") is False or es.get("met") is False:
        parts = []
        for metric in ("ttft", "tpot", "latency"):
            info = es.get(metric)
            if isinstance(info, dict) and info.get("unsuccessful"):
                more = info.get("more_queries_needed")
                parts.append(
                    f"{metric.upper()} needs at least {more} more queries" if more is not None
                    else f"{metric.upper()} early stopping failed"
                )
        over = lg_summary.get("overlatency_query_count")
        detail = "; ".join(parts) if parts else "not enough queries under the limits"
        target = eff.get("target_qps")
        more_n = max([(es.get(m) or {}).get("more_queries_needed") or 0 for m in ("ttft", "tpot", "latency")])
        secs = f" (about {more_n / float(target):.0f} s more at {float(target):.3g} QPS)" if (more_n and target) else ""
        es_min = early_stopping_min_queries(float(pct))
        reasons.append(
            f"Early stopping not satisfied: {qcount} queries ran; {detail}{secs}, even if every added query "
            f"meets the limits. At {pname} early stopping needs at least {es_min} queries with none over the limit; "
            "raise --min-query-count or --min-duration."
            + (f" ({over} queries were over a limit.)" if over and scenario == "Server" and over < (qcount or 0)
               else "")
        )

    errors = lg_summary.get("errors") or []
    if errors:
        reasons.append(f"LoadGen logged {len(errors)} error(s), first: {errors[0]}; see mlperf_log_detail.txt.")
    loadgen_reason = lg_summary.get("loadgen_invalid_reason")
    if loadgen_reason and not reasons:
        reasons.append(f"LoadGen says: {loadgen_reason}")
    if not reasons:
        reasons.append("LoadGen marked the run INVALID without naming a failed constraint; see mlperf_log_summary.txt.")
    return reasons


@dataclass
class Plan:
    can_be_valid: bool
    expected_queries: int | None
    early_stopping_min_queries: int | None
    notes: list[str] = field(default_factory=list)
    submission_grade: bool = False
    mode: str = "performance"  # the run's --mode: performance, accuracy or submission
    accuracy_samples: int | None = None  # samples the accuracy test issues (each once); None: no accuracy test

    def to_dict(self) -> dict[str, Any]:
        keys = ("mode", "can_be_valid", "expected_queries", "early_stopping_min_queries", "submission_grade",
                "accuracy_samples", "notes")
        return {k: getattr(self, k) for k in keys}


def effective_settings(rs: RunSettings) -> dict[str, Any] | None:
    """The settings LoadGen will use (model key, then user.conf, then flags), read from ``lg.TestSettings``.

    Building a TestSettings only parses configuration; it starts no test and touches none of LoadGen's
    global state, so the parent process may do it. None when LoadGen is not installed.
    """
    try:
        from benchmint.llm.loadgen.settings import build_test_settings

        s = build_test_settings(rs)
    except ImportError:
        return None
    pct = s.single_stream_target_latency_percentile if rs.scenario == "single-stream" else (
        s.server_target_latency_percentile)
    return {
        "min_duration_ms": s.min_duration_ms, "max_duration_ms": s.max_duration_ms,
        "min_query_count": s.min_query_count, "max_query_count": s.max_query_count,
        "target_qps": s.server_target_qps if rs.scenario == "server" else s.offline_expected_qps,
        "percentile": pct, "ttft_s": s.ttft_latency / 1e9 if s.ttft_latency else None,
        "tpot_s": s.tpot_latency / 1e9 if s.tpot_latency else None,
        "performance_sample_count": s.performance_sample_count_override or None,
        "sample_concatenate_permutation": s.sample_concatenate_permutation,
        "single_stream_expected_latency_s": s.single_stream_expected_latency_ns / 1e9,
    }


def _accuracy_note(rs: RunSettings, n_samples: int, qps: float | None) -> str:
    """What a LoadGen accuracy test does: every sample of the QSL once, whatever the duration and count flags."""
    if rs.scenario == "offline":
        how = f"LoadGen issues one query of all {n_samples} samples"
    elif rs.scenario == "server":
        how = f"LoadGen issues {n_samples} queries, one per sample, at about {float(qps or 1.0):g} QPS"
    else:
        how = f"LoadGen issues {n_samples} queries, one per sample, one at a time"
    return (f"Accuracy test: {how}; each sample is sent once and its answer scored against its reference. "
            "The minimum duration and query count do not apply, and LoadGen judges no latency in this mode.")


def plan_for_mode(rs: RunSettings, n_samples: int, mode: str,
                  effective: dict[str, Any] | None = None) -> Plan:
    """The plan of a whole ``llm mlperf --mode`` run: ``performance`` (one performance test), ``accuracy`` (one
    accuracy test: each sample once) or ``submission`` (the performance test, then the accuracy test)."""
    if mode == "accuracy":
        return plan(dataclasses.replace(rs, mode="accuracy"), n_samples, effective)
    p = plan(dataclasses.replace(rs, mode="performance"), n_samples, effective)
    if mode == "submission":
        eff = effective if effective is not None else (effective_settings(rs) or {})
        p.mode = "submission"
        p.accuracy_samples = n_samples
        p.notes.append("Then the a" + _accuracy_note(rs, n_samples, eff.get("target_qps", rs.target_qps))[1:])
    return p


def plan(rs: RunSettings, n_samples: int, effective: dict[str, Any] | None = None) -> Plan:
    """Predict, before a run, whether these settings can yield a VALID LoadGen result.

    ``effective`` are the settings LoadGen would use (:func:`effective_settings`: model key, user.conf and
    flags, as LoadGen reads them); when not given they are computed, and without LoadGen the flags and the
    model key's figures are used.
    """
    eff = dict(effective if effective is not None else (effective_settings(rs) or {}))
    key = MODEL_KEYS.get(rs.model_key)
    min_d_s = eff["min_duration_ms"] / 1000 if "min_duration_ms" in eff else (
        rs.min_duration_s if rs.min_duration_s is not None else (key.min_duration_s if key else 600.0))
    min_q = eff.get("min_query_count", rs.min_query_count if rs.min_query_count is not None else 100)
    max_d_s = (eff["max_duration_ms"] / 1000 if eff.get("max_duration_ms") else None) if eff else rs.max_duration_s
    max_q = (eff.get("max_query_count") or None) if eff else rs.max_query_count
    qps = eff.get("target_qps", rs.target_qps)
    pct = float(eff.get("percentile") or rs.percentile())
    if eff.get("ttft_s") is not None or eff.get("tpot_s") is not None:
        limits = (eff.get("ttft_s"), eff.get("tpot_s"))
    else:
        limits = rs.limits()
    ss_latency = eff.get("single_stream_expected_latency_s") or rs.single_stream_expected_latency_s
    notes: list[str] = []
    ok = True
    expected: int | None = None
    es_min: int | None = None

    if rs.mode != "performance":
        return Plan(True, n_samples, None, [_accuracy_note(rs, n_samples, qps)], mode="accuracy",
                    accuracy_samples=n_samples)
    if rs.scenario == "server":
        qps = float(qps or 1.0)
        expected = max(int(min_q or 0), math.ceil(qps * min_d_s))
        if max_d_s:
            expected = min(expected, math.floor(qps * max_d_s)) if max_d_s * qps < expected else expected
        perf = rs.performance_sample_count or (min(key.performance_sample_count, n_samples) if key else n_samples)
        perf = min(perf, n_samples) if n_samples else perf
        concat = eff.get("sample_concatenate_permutation", key is not None and rs.sample_concatenate_permutation
                         is not False)
        asked = expected
        if concat and perf:
            # LLM keys use sample_concatenate_permutation: LoadGen rounds up to whole passes over the samples
            expected = math.ceil(expected / perf) * perf
        if max_q:
            expected = min(expected, int(max_q))
        es_min = early_stopping_min_queries(pct)
        why = (f" (not {asked}: with sample_concatenate_permutation it issues whole passes over the "
               f"{perf} performance samples, about {expected / qps:.0f} s; fewer --num-samples, or "
               "performance_sample_count_override in --user-conf, shortens it)" if expected > asked and concat and perf else "")
        notes.append(f"At {qps:g} QPS for at least {min_d_s:g} s with at least {min_q} queries, LoadGen "
                     f"issues about {expected} queries{why}.")
        if expected < es_min:
            ok = False
            notes.append(
                f"Cannot be VALID: early stopping at {_pct_name(pct)} needs at least {es_min} queries even if every "
                f"query meets the limits; raise --min-query-count to {es_min} or --min-duration to "
                f"{math.ceil(es_min / qps)} s at this rate."
            )
        else:
            notes.append(f"Enough queries for early stopping ({es_min} needed at {_pct_name(pct)} with none over "
                         "the limit; a few over the limit raise this).")
        ttft, tpot = limits
        if ttft or tpot:
            notes.append(f"Valid only if TTFT {_pct_name(pct)} <= {_fmt_s(ttft)} and TPOT {_pct_name(pct)} <= "
                         f"{_fmt_s(tpot)} at {qps:g} QPS: that depends on the system, which the plan cannot know.")
    elif rs.scenario == "offline":
        qps = float(qps or 1.0)
        expected = max(int(min_q or 0), math.ceil(qps * min_d_s * 1.1))
        notes.append(f"LoadGen issues one query of about {expected} samples (expected QPS {qps:g} x "
                     f"{min_d_s:g} s x 1.1, at least {min_q}).")
        if min_d_s > 0:
            notes.append(f"Valid only if the system takes at least {min_d_s:g} s for them, i.e. its throughput is "
                         f"at most about {expected / min_d_s:.3g} samples/s; if it is faster, raise --target-qps.")
        else:  # no minimum duration: any throughput is long enough
            notes.append("No minimum duration: the run is long enough whatever the system's throughput.")
        if max_d_s and max_d_s < min_d_s:
            ok = False
            notes.append(f"Cannot be VALID: --max-duration {max_d_s:g} s is under the minimum {min_d_s:g} s.")
    else:  # single-stream
        # LoadGen's latency estimate discards at least one query: "Processed at least 64 queries" at p90
        es_min = early_stopping_min_queries(pct, overlatency=1)
        exp_lat = ss_latency
        if exp_lat:
            expected = max(int(min_q or 0), math.ceil(min_d_s / exp_lat))
        else:
            expected = int(min_q or 0) or None
        notes.append(f"SingleStream issues one query at a time; LoadGen reports the {_pct_name(pct)} latency "
                     f"estimate from early stopping, which needs at least {es_min} queries.")
        if expected is not None and max_q and int(max_q) < es_min:
            ok = False
            notes.append(f"Cannot be VALID: --max-query-count {max_q} is under the {es_min} queries early "
                         "stopping needs.")
    if max_d_s and max_d_s < min_d_s:
        ok = False
        if rs.scenario != "offline":
            notes.append(f"Cannot be VALID: --max-duration {max_d_s:g} s is under the minimum {min_d_s:g} s.")
    if rs.scenario == "offline" and max_q:
        # LoadGen's Offline issues one query (min_query_count sets its samples): a query cap does not bind it
        # (with --max-query-count 3000 it still issued 24576 samples and called the run VALID)
        notes.append(f"--max-query-count {max_q} does not shorten an Offline run: LoadGen issues one query of "
                     f"{expected} samples; fewer samples need a lower --min-query-count or --target-qps.")
    elif max_q and min_q and int(max_q) < int(min_q):
        ok = False
        notes.append(f"Cannot be VALID: --max-query-count {max_q} is under --min-query-count {min_q}.")
    grade = key is not None and min_d_s >= key.min_duration_s and (
        rs.min_query_count is None and rs.performance_sample_count in (None, key.performance_sample_count)
        and n_samples >= key.performance_sample_count
    )
    if key is not None and not grade:
        notes.append(
            f"Not submission-grade for {key.name}: official runs last at least {key.min_duration_s:g} s over the "
            f"full dataset ({key.performance_sample_count} samples); this run is a shorter study."
        )
    return Plan(ok, expected, es_min, notes, grade)

"""Peak search: the highest load that still meets the SLOs, in a bounded number of trials.

The search probes upward from a starting rate (multiplying by ``growth`` while trials pass), or downward
when the first trial fails, until it brackets the peak between a passing and a failing rate; then it bisects
that bracket until the two are within ``rel_tol`` of each other or the trial budget is spent. Every trial is
kept: the curve of latency vs load is the report, the peak is the highest passing rate measured (never
interpolated).

The trial function is the caller's: a LoadGen Server test at a target QPS (``benchmint llm sweep``), or an
``llm bench`` run at a request rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Trial:
    rate: float
    passed: bool
    metrics: dict[str, Any] = field(default_factory=dict)  # ttft_p99_s, tpot_p99_s, achieved rate...
    reason: str = ""  # why it failed, in words
    run_dir: str | None = None


@dataclass
class SweepResult:
    peak_rate: float | None
    trials: list[Trial]
    bracket: tuple[float | None, float | None]
    stopped_because: str
    interrupted: bool = False  # Ctrl-C stopped the search: the trials run before it are kept

    def curve(self) -> list[dict[str, Any]]:
        return [asdict(t) for t in sorted(self.trials, key=lambda t: t.rate)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_rate": self.peak_rate,
            "trials_used": len(self.trials),
            "bracket": {"passed": self.bracket[0], "failed": self.bracket[1]},
            "stopped_because": self.stopped_because,
            "curve": self.curve(),
            "order": [t.rate for t in self.trials],
            "interrupted": self.interrupted,
        }


def find_peak(
    run_trial: Callable[[float], Trial],
    start_rate: float,
    max_trials: int = 8,
    growth: float = 2.0,
    rel_tol: float = 0.05,
    min_rate: float = 1e-3,
    max_rate: float | None = None,
    on_trial: Callable[[Trial], None] | None = None,
) -> SweepResult:
    """Probe, then bisect; at most ``max_trials`` calls of ``run_trial``.

    A ``KeyboardInterrupt`` from ``run_trial`` (Ctrl-C) ends the search: the trials finished before it are
    kept, the peak is the highest passing rate among them, and the result says it was interrupted."""
    if start_rate <= 0 or growth <= 1 or max_trials < 1:
        raise ValueError("start_rate must be > 0, growth > 1 and max_trials >= 1")
    trials: list[Trial] = []
    lo: float | None = None  # highest passing rate seen
    hi: float | None = None  # lowest failing rate seen

    def run(rate: float) -> Trial:
        nonlocal lo, hi
        t = run_trial(rate)
        t.rate = rate
        trials.append(t)
        if on_trial is not None:
            on_trial(t)
        if t.passed:
            lo = rate if lo is None else max(lo, rate)
        else:
            hi = rate if hi is None else min(hi, rate)
        return t

    try:
        rate = start_rate
        first = run(rate)
        stopped = ""
        if first.passed:  # probe up
            while hi is None and len(trials) < max_trials:
                nxt = rate * growth
                if max_rate is not None and nxt > max_rate:
                    if rate >= max_rate:
                        stopped = f"passed at the maximum rate {max_rate:g}"
                        break
                    nxt = max_rate
                rate = nxt
                run(rate)
        else:  # probe down
            while lo is None and len(trials) < max_trials:
                rate = rate / growth
                if rate < min_rate:
                    stopped = f"failed even at {rate * growth:g}, the lowest rate tried"
                    break
                run(rate)
        while not stopped and lo is not None and hi is not None and len(trials) < max_trials:
            if hi / lo - 1 <= rel_tol:
                stopped = f"bracket within {rel_tol:.0%}"
                break
            run((lo + hi) / 2)
        if not stopped:
            if lo is None:
                stopped = "no trial passed within the trial budget"
            elif hi is None:
                stopped = "every trial passed; raise the starting rate or the trial budget"
            elif hi / lo - 1 <= rel_tol:
                stopped = f"bracket within {rel_tol:.0%}"
            else:
                stopped = f"trial budget of {max_trials} spent"
    except KeyboardInterrupt:
        n = len(trials)
        return SweepResult(peak_rate=lo, trials=trials, bracket=(lo, hi), interrupted=True,
                           stopped_because=f"interrupted (Ctrl-C) after {n} finished trial{'s' if n != 1 else ''}")
    return SweepResult(peak_rate=lo, trials=trials, bracket=(lo, hi), stopped_because=stopped)


def loadgen_trial_verdict(loadgen: dict[str, Any], require_valid: bool = False) -> tuple[bool, str, dict[str, Any]]:
    """Pass/fail of one LoadGen Server trial from its ``loadgen`` block.

    A trial passes when LoadGen's latency constraints are met (TTFT/TPOT at the percentile); short trials are
    often INVALID only because early stopping wants more queries, which says nothing about the load, so full
    validity is required only with ``require_valid``.
    """
    cons = loadgen.get("constraints") or {}
    ttft = loadgen.get("ttft_s") or {}
    tpot = loadgen.get("tpot_s") or {}
    sched = loadgen.get("scheduled_samples_per_s")
    done = loadgen.get("samples_per_s")
    metrics = {
        "ttft_p50_s": ttft.get("p50"), "ttft_p99_s": ttft.get("p99"),
        "tpot_p50_s": tpot.get("p50"), "tpot_p99_s": tpot.get("p99"),
        "scheduled_per_s": sched, "completed_per_s": done,
        "tokens_per_s": loadgen.get("tokens_per_s"), "validity": loadgen.get("validity"),
    }
    if require_valid:
        ok = loadgen.get("validity") == "VALID"
    else:
        ok = cons.get("perf_constraints_met") is not False
    reasons = loadgen.get("invalid_reasons") or []
    reason = "" if ok else (reasons[0] if reasons else "LoadGen constraints not met")
    return ok, reason, metrics


def bench_trial_verdict(result: dict[str, Any], slo: dict[str, float]) -> tuple[bool, str, dict[str, Any]]:
    """Pass/fail of one ``llm bench`` trial: p99 TTFT and TPOT within the SLOs and no failed request."""
    ttft = result.get("ttft_s") or {}
    tpot = result.get("tpot_s") or {}
    thr = result.get("throughput") or {}
    req = result.get("requests") or {}
    done = thr.get("requests_per_s")
    metrics = {
        "ttft_p50_s": ttft.get("p50"), "ttft_p99_s": ttft.get("p99"),
        "tpot_p50_s": tpot.get("p50"), "tpot_p99_s": tpot.get("p99"),
        "completed_per_s": done, "tokens_per_s": thr.get("output_tokens_per_s"),
        "failed_requests": req.get("failed"), "goodput_requests_per_s": result.get("goodput_requests_per_s"),
        # the client held the load back (llm calibrate's verdict): the trial measured the client, not the server
        "client_bound": (result.get("client_bound") or {}).get("client_bound"),
    }
    why = []
    lim_ttft = slo.get("ttft_s", slo.get("ttft"))
    lim_tpot = slo.get("tpot_s", slo.get("tpot"))
    if lim_ttft is not None and (ttft.get("p99") is None or ttft["p99"] > lim_ttft):
        why.append(f"TTFT p99 {ttft.get('p99')} s over the {lim_ttft} s SLO")
    if lim_tpot is not None and (tpot.get("p99") is None or tpot["p99"] > lim_tpot):
        why.append(f"TPOT p99 {tpot.get('p99')} s over the {lim_tpot} s SLO")
    if req.get("failed"):
        why.append(f"{req['failed']} requests failed")
    return not why, "; ".join(why), metrics


def run_bench_sweep(
    start_rate: float,
    bench_options: dict[str, Any],
    slo: str | None,
    out: Any,
    max_trials: int = 8,
    growth: float = 2.0,
    rel_tol: float = 0.05,
    max_rate: float | None = None,
    trial_duration_s: float = 10.0,
    results: Any = None,
    on_trial: Callable[[Trial], None] | None = None,
    store: bool = True,
) -> dict[str, Any]:
    """Highest ``llm bench`` Poisson rate meeting ``--slo`` (each trial is a full ``llm bench`` run). ``store``:
    append the trials' runs and the sweep's own to the results store (``results``: its folder, None: default);
    without it they are written in ``out`` only."""
    from pathlib import Path

    from benchmint.core.errors import UserError
    from benchmint.llm.bench import BenchConfig, run_bench
    from benchmint.llm.metrics import parse_slo

    slo_d = parse_slo(slo) if slo else {}
    if not slo_d:
        raise UserError("--target bench needs --slo, e.g. --slo ttft=2,tpot=0.2 (the limits the peak must meet)")
    out = Path(out)
    n = {"i": 0}

    def trial(rate: float) -> Trial:
        n["i"] += 1
        d = out / f"trial-{n['i']:02d}-rate-{rate:.4g}"
        cfg = BenchConfig(scenario="server", rate=rate, duration_s=trial_duration_s, slo=slo, out=str(d),
                          progress=False, **bench_options)
        res = run_bench(cfg, results_dir=results, store=store)
        if (res.result.get("requests") or {}).get("interrupted"):
            # Ctrl-C stopped this trial (its partial run is written and stored): a part of a trial says
            # nothing of the load, so the search ends here with the trials before it
            raise KeyboardInterrupt
        ok, reason, metrics = bench_trial_verdict(res.result, slo_d)
        return Trial(rate=rate, passed=ok, metrics=metrics, reason=reason, run_dir=d.name)

    from benchmint.core.signals import sigint_deferred
    from benchmint.results.metadata import provenance, system_block

    system, prov = system_block(), provenance()  # before the search: Ctrl-C must not wait for them
    sw = find_peak(trial, start_rate, max_trials=max_trials, growth=growth, rel_tol=rel_tol, max_rate=max_rate,
                   on_trial=on_trial)
    with sigint_deferred(reraise=not sw.interrupted):
        return _write_bench_sweep(sw, out, start_rate, max_trials, growth, rel_tol, trial_duration_s, slo_d,
                                  bench_options, system, prov, results, store)


def _write_bench_sweep(sw: SweepResult, out: Any, start_rate: float, max_trials: int, growth: float,
                       rel_tol: float, trial_duration_s: float, slo_d: dict[str, Any], bench_options: dict[str, Any],
                       system: dict[str, Any], prov: dict[str, Any], results: Any, store: bool) -> dict[str, Any]:
    from benchmint.core.jsonio import write_json
    from benchmint.results.record import RunRecord

    result = {
        "schema_version": "1.0",
        "config": {"target": "bench", "start_rate": start_rate, "max_trials": max_trials, "growth": growth,
                   "rel_tol": rel_tol, "trial_duration_s": trial_duration_s, "slo": slo_d, **bench_options},
        "sweep": {**sw.to_dict(), "unit": "llm bench requests/s (Poisson arrivals)" if not bench_options.get("sessions")
                  else "llm bench sessions started/s (Poisson arrivals)",
                  "criterion": "p99 TTFT and TPOT within --slo and no failed request"},
    }
    # the sweep itself is a run too (each trial stored its own llm bench run): one record with the curve and
    # the peak, so `benchmint results` and the report can show the search beside the trials
    record = RunRecord(kind="llm", config={**result["config"], "benchmark": "llm bench sweep"},
                       metrics={"sweep": result["sweep"]},
                       workload={"model_name": bench_options.get("model"),  # named as the trials' records name it
                                 **{k: bench_options.get(k) for k in ("backend", "dataset", "api")}},
                       artifacts={"result": "result.json"}, system=system, provenance=prov,
                       status="partial" if sw.interrupted else "ok" if sw.peak_rate is not None else "failed")
    result["run_id"] = record.id
    write_json(out / "result.json", result)
    from benchmint.results.save import save_run

    save_run(record, out, store=results, append=store)
    return result

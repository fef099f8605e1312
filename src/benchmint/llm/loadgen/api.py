"""``run_mlperf``: one ``benchmint llm mlperf`` run, from settings to result JSON and RunRecord.

A run is one LoadGen performance test, one accuracy test, or both (``submission``), each in its own
subprocess. The result puts LoadGen's figures (from ``mlperf_log_detail.txt``) beside benchmint's own
client-side metrics computed from the same requests, with validity explained in plain words, the plan made
before the run, accuracy, energy and cost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmint.core.jsonio import write_json
from benchmint.core.signals import sigint_deferred
from benchmint.llm import accuracy as acc
from benchmint.llm.cost import cost_block
from benchmint.llm.loadgen.runner import TestInterrupted, TestOutcome, run_test, write_samples
from benchmint.llm.loadgen.settings import RunSettings
from benchmint.llm.loadgen.sut import Sample
from benchmint.llm.loadgen.validity import explain, plan_for_mode
from benchmint.llm.types import RequestRecord
from benchmint.results.record import RunRecord
from benchmint.results.save import save_run

RESULT_SCHEMA_VERSION = "1.0"


@dataclass
class MlperfConfig:
    settings: RunSettings
    backend: dict[str, Any]  # {"kind": ..., "options": {...}} (see backend_factory)
    samples: list[Sample]
    out_dir: Path
    mode: str = "performance"  # performance | accuracy | submission
    max_concurrency: int = 0
    timeout_s: float | None = None
    price: dict[str, Any] | None = None  # from benchmint.llm.cost.resolve_price
    measure_energy: bool = True
    slo: dict[str, float] = field(default_factory=dict)  # for client goodput: {"ttft": s, "tpot": s}
    workload: dict[str, Any] = field(default_factory=dict)
    warmup: int = 0  # requests sent before each LoadGen test starts, outside every figure
    accuracy_encoding: str = "utf8"
    tokenizer: Any = None
    store: bool = False  # append the run's record to the results store (``results``: its folder, None: default)
    results: str | Path | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "settings": self.settings.to_dict(),
            "backend": self.backend,
            "samples": len(self.samples),
            "max_concurrency": self.max_concurrency,
            "warmup": self.warmup,
            "price": self.price,
            "slo": self.slo,
        }


def client_metrics(records: list[RequestRecord], start_ns: int | None, slo: dict[str, float]) -> dict[str, Any]:
    """benchmint's own ``llm bench`` metrics for the same requests (the LLM layer's metrics module)."""
    try:
        from benchmint.llm import metrics  # the LLM layer owns the definitions (DESIGN.md glossary)
    except ImportError:
        return {"unavailable": "benchmint.llm.metrics is not installed in this checkout"}
    if start_ns is None:
        start_ns = min((r.scheduled_ns for r in records), default=0)
    out = metrics.compute_metrics(records, start_ns, slo=slo or None)
    out = out.to_dict() if hasattr(out, "to_dict") else out
    out["anchored_to"] = "LoadGen issue time (issue_queries), the scheduled send time of each query"
    return out


def _requests_block(records: list[RequestRecord]) -> dict[str, Any]:
    errors: dict[str, int] = {}
    for r in records:
        if r.error_kind:
            errors[r.error_kind] = errors.get(r.error_kind, 0) + 1
    return {"completed": sum(r.ok for r in records), "failed": sum(not r.ok for r in records), "errors": errors}


def _loadgen_block(outcome: TestOutcome, settings: RunSettings) -> dict[str, Any]:
    lg = dict(outcome.loadgen)
    lg["invalid_reasons"] = explain(lg, settings)
    lg["log_dir"] = str(outcome.out_dir)
    lg["logs"] = sorted(p.name for p in outcome.out_dir.glob("mlperf_log_*"))
    return lg


def validity_line(loadgen: dict[str, Any]) -> str:
    v = loadgen.get("validity")
    head = f"LoadGen result: {v}"
    if v == "VALID":
        return head
    reasons = loadgen.get("invalid_reasons") or []
    return head + (" - " + " ".join(reasons) if reasons else "")


def run_mlperf(cfg: MlperfConfig, on_stage: Callable[[str], None] | None = None) -> tuple[dict[str, Any], RunRecord]:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = on_stage or (lambda _msg: None)
    samples_path = write_samples(cfg.samples, out / "samples.jsonl")
    result: dict[str, Any] = {"schema_version": RESULT_SCHEMA_VERSION, "config": cfg.describe()}
    result["plan"] = plan_for_mode(cfg.settings, len(cfg.samples), cfg.mode).to_dict()
    artifacts: dict[str, str] = {"samples": "samples.jsonl"}
    perf: TestOutcome | None = None

    if cfg.mode in ("performance", "submission"):
        stage("LoadGen performance test")
        rs = dataclasses.replace(cfg.settings, mode="performance")
        try:
            perf = run_test(out / "performance", samples_path, rs, cfg.backend, cfg.max_concurrency, cfg.timeout_s,
                            energy=cfg.measure_energy, warmup=cfg.warmup)
        except TestInterrupted as e:
            _write_interrupted(cfg, out, result, artifacts, e.outcome, "performance")
        result["loadgen"] = _loadgen_block(perf, rs)
        result["requests"] = _requests_block(perf.records)
        result["client"] = client_metrics(perf.records, perf.worker.get("test_start_ns"), cfg.slo)
        if perf.worker.get("energy"):
            # measured in the worker around the LoadGen test (NVML power / energy counter, RAPL)
            result["energy"] = {**perf.worker["energy"], "window": "LoadGen performance test"}
        tps = result["loadgen"].get("tokens_per_s")
        if tps is None:
            tps = (result["client"].get("throughput") or {}).get("output_tokens_per_s")
        result["cost"] = cost_block(cfg.price, tps, throughput_source="LoadGen tokens/s")
        artifacts["loadgen_performance_logs"] = "performance"

    if cfg.mode in ("accuracy", "submission"):
        stage("LoadGen accuracy test")
        rs = dataclasses.replace(cfg.settings, mode="accuracy")
        try:
            acc_run = run_test(out / "accuracy", samples_path, rs, cfg.backend, cfg.max_concurrency, cfg.timeout_s,
                               warmup=cfg.warmup)
        except TestInterrupted as e:
            _write_interrupted(cfg, out, result, artifacts, e.outcome, "accuracy")
        token_counts = {i: r.output_tokens for i, r in zip(acc_run.qsl_index, acc_run.records, strict=True)
                        if r.output_tokens is not None}
        result["accuracy"] = acc.evaluate_accuracy_log(
            acc_run.accuracy_log, [s.reference for s in cfg.samples], model_key=cfg.settings.model_key,
            encoding=cfg.accuracy_encoding, tokenizer=cfg.tokenizer, token_counts=token_counts,
        )
        result["accuracy"]["requests"] = _requests_block(acc_run.records)
        if "loadgen" not in result:
            result["loadgen_accuracy"] = _loadgen_block(acc_run, rs)
        artifacts["loadgen_accuracy_logs"] = "accuracy"

    status = "ok"
    if "loadgen" in result and result["loadgen"]["validity"] != "VALID":
        status = "invalid"
    reqs = result.get("requests") or (result.get("accuracy") or {}).get("requests") or {}
    if reqs.get("failed"):
        status = "failed" if not reqs.get("completed") else ("invalid" if status == "invalid" else "partial")
    record = _write_run(cfg, out, result, _metrics_block(result), artifacts, status)
    return result, record


class MlperfInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``run_mlperf``: the partial result was written to ``result_path``."""

    def __init__(self, result_path: Path, completed: int, record: RunRecord):
        super().__init__("interrupted")
        self.result_path = result_path
        self.completed = completed
        self.record = record


def _write_interrupted(cfg: MlperfConfig, out: Path, result: dict[str, Any], artifacts: dict[str, str],
                       outcome: TestOutcome, test: str) -> None:
    """Write what an interrupted LoadGen test completed (client-side figures only: LoadGen writes its
    summary and verdict at the end of a test) as result.json and run.json with status ``partial``, then
    raise :class:`MlperfInterrupted`."""
    from benchmint.llm import metrics

    recs = outcome.records
    start = outcome.worker.get("test_start_ns") or min((r.scheduled_ns for r in recs), default=0)
    client = metrics.compute_metrics(recs, start, slo=cfg.slo or None, interrupted=True)
    result[f"interrupted_{test}"] = {
        "note": f"Ctrl-C during the LoadGen {test} test: the worker was stopped; LoadGen wrote no summary or "
                "verdict, so there is no LoadGen figure; the client-side figures cover the requests completed "
                "before the stop",
        "requests": _requests_block(recs),
        "client": client.to_dict() if hasattr(client, "to_dict") else client,
    }
    artifacts[f"loadgen_{test}_logs"] = test
    metrics = {**_metrics_block(result), "interrupted": result[f"interrupted_{test}"]}
    with sigint_deferred(reraise=False):  # already stopping: a second Ctrl-C must not cut the files in half
        record = _write_run(cfg, out, result, metrics, artifacts, "partial")
    raise MlperfInterrupted(out / "result.json", sum(r.ok for r in recs), record)


def _metrics_block(result: dict[str, Any]) -> dict[str, Any]:
    """The RunRecord metrics of a LoadGen run's result."""
    metrics = {k: result[k] for k in ("loadgen", "client", "accuracy", "energy", "cost", "requests") if result.get(k)}
    if result.get("loadgen"):
        lgb = result["loadgen"]
        # the same top-level names as imported official MLPerf results, so both sit in one table
        metrics["throughput"] = {"output_tokens_per_s": lgb.get("tokens_per_s"),
                                 "samples_per_s": lgb.get("samples_per_s"), "source": "LoadGen"}
        if lgb.get("tokens_per_s") is not None:
            metrics["result"] = {"value": lgb["tokens_per_s"], "unit": "Tokens/s"}
    return metrics


def _write_run(cfg: MlperfConfig, out: Path, result: dict[str, Any], metrics: dict[str, Any],
               artifacts: dict[str, str], status: str) -> RunRecord:
    """The run's RunRecord; result.json and run.json written in ``out``."""
    config = {**result["config"], "scenario": cfg.settings.lg_scenario, "benchmark": "mlperf-inference (LoadGen)"}
    record = RunRecord(kind="mlperf", config=config, metrics=metrics,
                       workload={**cfg.workload, "mlperf_model": cfg.settings.model_key}, artifacts=artifacts,
                       status=status)
    _fill_system(record)
    result["run_id"] = record.id
    result["status"] = status
    write_json(out / "result.json", result)
    record.artifacts["result"] = "result.json"
    save_run(record, out, store=cfg.results, append=cfg.store)
    return record


def _fill_system(record: RunRecord) -> None:
    try:
        from benchmint.results.metadata import provenance, system_block

        record.system = system_block()
        record.provenance = provenance()
    except Exception:  # metadata helpers are best effort; the host summary is the floor
        from benchmint.core.system import host_summary

        record.system = host_summary()


def run_sweep(
    cfg: MlperfConfig,
    start_qps: float,
    max_trials: int = 8,
    growth: float = 2.0,
    rel_tol: float = 0.05,
    require_valid: bool = False,
    max_qps: float | None = None,
    on_trial: Callable[[Any], None] | None = None,
) -> tuple[dict[str, Any], RunRecord]:
    """Highest LoadGen Server QPS meeting the latency constraints: probe, then bisect (``benchmint llm sweep``)."""
    from benchmint.llm.sweep import Trial, find_peak, loadgen_trial_verdict

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples_path = write_samples(cfg.samples, out / "samples.jsonl")
    base = dataclasses.replace(cfg.settings, scenario="server", mode="performance")
    counter = {"n": 0}

    def trial(qps: float) -> Trial:
        counter["n"] += 1
        rs = dataclasses.replace(base, target_qps=qps)
        d = out / f"trial-{counter['n']:02d}-qps-{qps:.4g}"
        outcome = run_test(d, samples_path, rs, cfg.backend, cfg.max_concurrency, cfg.timeout_s, warmup=cfg.warmup)
        lgb = _loadgen_block(outcome, rs)
        ok, reason, metrics = loadgen_trial_verdict(lgb, require_valid=require_valid)
        client = client_metrics(outcome.records, outcome.worker.get("test_start_ns"), cfg.slo)
        metrics["client_ttft_p99_s"] = (client.get("ttft_s") or {}).get("p99")
        metrics["client_tpot_p99_s"] = (client.get("tpot_s") or {}).get("p99")
        failed = metrics["failed_requests"] = sum(not r.ok for r in outcome.records)
        if failed:  # LoadGen took them as answered (empty): its latencies are partly of errors, as bench fails it
            ok, reason = False, "; ".join(filter(None, (reason if not ok else "", f"{failed} requests failed")))
        return Trial(rate=qps, passed=ok, metrics=metrics, reason=reason, run_dir=str(d.relative_to(out)))

    meta = RunRecord(kind="mlperf")
    _fill_system(meta)  # before the search: it takes a second or more, which Ctrl-C must not have to wait for
    res = find_peak(trial, start_qps, max_trials=max_trials, growth=growth, rel_tol=rel_tol,
                    max_rate=max_qps, on_trial=on_trial)
    with sigint_deferred(reraise=not res.interrupted):
        return _write_sweep(cfg, out, res, base, start_qps, max_trials, growth, rel_tol, require_valid, meta)


def _write_sweep(cfg: MlperfConfig, out: Path, res: Any, base: Any, start_qps: float, max_trials: int,
                 growth: float, rel_tol: float, require_valid: bool,
                 meta: RunRecord) -> tuple[dict[str, Any], RunRecord]:
    ttft, tpot = base.limits()
    result: dict[str, Any] = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "config": {**cfg.describe(), "sweep": {"start_qps": start_qps, "max_trials": max_trials, "growth": growth,
                                                 "rel_tol": rel_tol, "require_valid": require_valid}},
        "sweep": {
            **res.to_dict(),
            "unit": "LoadGen Server target QPS",
            "criterion": ("LoadGen VALID and no failed request" if require_valid else
                          f"LoadGen latency constraints met (TTFT {base.percentile():.0%} <= {ttft} s, "
                          f"TPOT <= {tpot} s) and no failed request; early stopping and duration are not judged "
                          "in short trials"),
        },
    }
    status = "partial" if res.interrupted else "ok" if res.peak_rate is not None else "failed"
    record = RunRecord(kind="mlperf", config={**result["config"], "scenario": "Server",
                                              "benchmark": "mlperf-inference (LoadGen sweep)"},
                       metrics={"sweep": result["sweep"]},
                       workload={**cfg.workload, "mlperf_model": base.model_key}, artifacts={"result": "result.json"},
                       status=status, system=meta.system, provenance=meta.provenance)
    result["run_id"] = record.id
    write_json(out / "result.json", result)
    save_run(record, out, store=cfg.results, append=cfg.store)
    return result, record

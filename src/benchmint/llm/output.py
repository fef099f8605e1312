"""Outputs of a benchmark: result JSON, per-request Parquet, RunRecord (run.json + results store), console table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.table import Table

from benchmint.core.jsonio import write_json
from benchmint.core.redact import known_secrets, redact_text
from benchmint.llm.metrics import record_metrics
from benchmint.results.metric_table import REQUEST_COLUMNS, console_metrics, llm_result_blocks


class BenchResult(Protocol):
    """What the outputs read of a run (:class:`benchmint.llm.bench.BenchResult`; a protocol, so that this module,
    which the bench imports, does not import it back)."""

    result: dict[str, Any]
    records: list[Any]  # RequestRecord
    start_ns: int
    anchor: Any  # ClockAnchor
    paths: dict[str, Path]
    run_record: Any


class BenchConfig(Protocol):
    """What the outputs read of a run's config (:class:`benchmint.llm.bench.BenchConfig`)."""

    backend: str
    out: str | None
    json_path: str | None

# the result blocks a RunRecord keeps as its metrics (declared in benchmint.results.metric_table)
METRIC_BLOCKS = llm_result_blocks()


def requests_table(res: BenchResult) -> Any:
    """Per-request records as a pyarrow Table; times in seconds from the measured run's start."""
    import pyarrow as pa

    t0 = res.start_ns
    anchor = res.result.get("latency_anchor", "scheduled")
    cols: dict[str, list] = {c.name: [] for c in REQUEST_COLUMNS}

    def rel(ns: int | None) -> float | None:
        return None if not ns else (ns - t0) / 1e9

    secrets = known_secrets()  # error texts and answers may quote a credential: requests.parquet is shared

    for r in sorted(res.records, key=lambda r: (not r.warmup, r.scheduled_ns or r.sent_ns)):
        row = {
            **record_metrics(r, anchor),
            "id": r.id, "warmup": r.warmup, "ok": r.ok, "error_kind": r.error_kind,
            "error": redact_text(r.error, secrets) if r.error else r.error,
            "scheduled_s": rel(r.scheduled_ns), "sent_s": rel(r.sent_ns), "first_token_s": rel(r.first_token_ns),
            "last_token_s": rel(r.chunk_ns[-1]) if r.chunk_ns else None, "end_s": rel(r.end_ns),
            "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
            "output_tokens_source": r.output_tokens_source, "chunk_count": r.chunk_count,
            "token_count_flag": r.token_count_flag, "tokenizer_tokens": r.tokenizer_tokens,
            "sent_wall_s": res.anchor.to_wall_s(r.sent_ns) if r.sent_ns else None,
            "text": redact_text(r.text, secrets) if secrets and r.text else r.text,
            "session_id": r.session_id, "turn": r.turn,
        }
        for name, values in cols.items():
            values.append(row[name])
    types = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(), "string": pa.string(),
             "list<float64>": pa.list_(pa.float64())}
    schema = pa.schema([(c.name, types[c.arrow]) for c in REQUEST_COLUMNS])
    return pa.table(cols, schema=schema)


def run_status(result: dict[str, Any]) -> str:
    req = result["requests"]
    if req["completed"] == 0 and not req["interrupted"]:  # Ctrl-C before any answer is a partial run too
        return "failed"
    if req["failed"] or req["interrupted"]:
        return "partial"
    return "ok"


def build_run_record(res: BenchResult, cfg: BenchConfig, artifacts: dict[str, str]) -> Any:
    from benchmint.results.record import RunRecord

    r = res.result
    metrics = {k: r[k] for k in METRIC_BLOCKS if k in r}
    wl = r["workload"]
    workload: dict[str, Any] = {
        "model_name": r["backend"]["model"],
        **r["backend"].get("model_info", {}),
        "dataset": wl.get("dataset"),
        "dataset_hash": wl.get("dataset_hash"),
        "prompts": wl.get("prompts"),
        "input_tokens_mean": wl.get("input_tokens_mean"),
        "max_tokens_mean": wl.get("max_tokens_mean"),
        "scenario": r["schedule"]["scenario"],
    }
    for k in ("workload_hash", "workload_kind"):  # llm.traffic: what regenerates the workload
        if wl.get(k) is not None:
            workload[k] = wl[k]
    try:
        from benchmint.results.metadata import provenance, system_block

        system = system_block(engine=cfg.backend, server=r["backend"]["url"])
        prov = provenance()
    except Exception:  # metadata helpers are best-effort; the record stays valid without them
        from benchmint.core.system import host_summary
        from benchmint.results.record import default_provenance

        system, prov = {**host_summary(), "engine": cfg.backend}, default_provenance()
    config = {**r["config"], "schedule": r["schedule"], "measurement": r["measurement"]}
    return RunRecord(
        kind="llm", config=config, metrics=metrics, workload=workload, system=system, provenance=prov,
        artifacts=artifacts, status=run_status(r),
    )


def write_outputs(res: BenchResult, cfg: BenchConfig, results_dir: str | Path | None = None,
                  store: bool = True) -> dict[str, Path]:
    """result.json, requests.parquet and run.json in the output folder; the RunRecord goes to the store too
    (unless ``store`` is false: ``--no-store``)."""
    import pyarrow.parquet as pq

    from benchmint.results.record import _new_id

    run_id = _new_id()
    out = Path(cfg.out) if cfg.out else Path("benchmint-runs") / f"llm-{run_id}"
    out.mkdir(parents=True, exist_ok=True)
    pq_path = out / "requests.parquet"
    try:
        pq.write_table(requests_table(res), pq_path)
        res.result["artifacts"] = {"requests": str(pq_path.resolve())}
    except (ValueError, OverflowError, TypeError) as e:  # pyarrow's errors subclass these
        # a value the table cannot hold (from a third-party backend) must not cost the run's other outputs
        res.result["artifacts"] = {"requests_error": f"requests.parquet not written: {type(e).__name__}: {e}"}
    if res.server_metrics_series is not None:  # the server's own /metrics over the run (llm/server_metrics.py)
        write_json(out / "server_metrics.json", res.server_metrics_series)
        res.result["artifacts"]["server_metrics"] = str((out / "server_metrics.json").resolve())
    json_path = Path(cfg.json_path) if cfg.json_path else out / "result.json"
    write_json(json_path, res.result)
    if cfg.json_path:
        write_json(out / "result.json", res.result)
    arts = {"requests": "requests.parquet", "result": "result.json"}
    if res.server_metrics_series is not None:
        arts["server_metrics"] = "server_metrics.json"
    rec = build_run_record(res, cfg, arts)
    rec.id = run_id
    rec.artifacts["requests_abs"] = str(pq_path.resolve())
    if "server_metrics" in arts:
        rec.artifacts["server_metrics_abs"] = str((out / "server_metrics.json").resolve())
    from benchmint.results.save import save_run

    saved = save_run(rec, out, store=results_dir, append=store)
    paths = {"out": out, "result": json_path, "requests": pq_path, "run": saved.run_json, "store": saved.store}
    res.paths, res.run_record = paths, rec
    return paths


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.2f}"


def summary_table(result: dict[str, Any], title: str | None = None) -> Table:
    """Latency percentiles (ms) per metric."""
    t = Table(title=title, title_justify="left")
    t.add_column("metric")
    for c in ("mean", "p50", "p90", "p99", "max"):
        t.add_column(f"{c} ms", justify="right")
    t.add_column("n", justify="right")
    for m in console_metrics():
        st = result.get(m.key) or {}
        t.add_row(m.name, *(_ms(st.get(c)) for c in ("mean", "p50", "p90", "p99", "max")), str(st.get("count", 0)))
    return t


def _total_tokens(result: dict[str, Any]) -> str:
    """The total token throughput, or why there is none (input lengths unknown)."""
    tot = result["throughput"].get("total_tokens_per_s")
    if tot is not None:
        return f"{tot:.1f} total tok/s"
    done, known = result["requests"]["completed"], result.get("input_tokens_known", 0)
    return f"total tok/s n/a (input length unknown for {done - known} of {done} requests)"


def print_summary(result: dict[str, Any], console: Console, title: str | None = None) -> None:
    req = result["requests"]
    th = result["throughput"]
    sched = result.get("schedule", {})
    console.print(summary_table(result, title))
    errs = ", ".join(f"{k}: {v}" for k, v in sorted(req["errors"].items())) or "none"
    cancelled = ""
    if req.get("cancelled"):
        fl = req.get("cancelled_in_flight")
        cancelled = f", {req['cancelled']} cancelled" + (f" ({fl} in flight)" if fl else "")
    console.print(
        f"requests: {req['completed']} completed, {req['failed']} failed ({errs}){cancelled}"
        + (" [yellow](interrupted: partial result)[/]" if req.get("interrupted") else "")
    )
    console.print(
        f"throughput: {th['requests_per_s']:.2f} req/s completed, {th['output_tokens_per_s']:.1f} output tok/s, "
        f"{_total_tokens(result)} over {result['duration_s']:.2f} s"
        + (f"; sent at {th['sent_requests_per_s']:.2f} req/s" if th.get("sent_requests_per_s") is not None else "")
        + f" (scenario {sched.get('scenario')}, {sched.get('arrival')}, latency anchored to "
        f"{result['latency_anchor']} send)"
    )
    if "goodput_requests_per_s" in result:
        from benchmint.llm.metrics import format_slo

        g = result["goodput"]
        console.print(
            f"goodput: {result['goodput_requests_per_s']:.2f} req/s ({g['requests_meeting_slo']} requests met "
            f"{format_slo(g['slo'])})"
        )
    tc = result.get("token_counts", {})
    src = ", ".join(f"{k}: {v}" for k, v in tc.get("output_tokens_source", {}).items())
    line = f"output tokens: {result['output_tokens_total']} (counted by {src or '-'})"
    if tc.get("flagged"):
        line += f" [yellow]{tc['flagged']} requests flagged: {tc['flag_examples'][0]}[/]"
    console.print(line)
    from benchmint.llm.traffic import summary_lines

    for extra in summary_lines(result):  # sessions, windows, prefix cache
        console.print(extra, highlight=False)
    from benchmint.llm.backends.adapt import adaptation_lines
    from benchmint.llm.server_metrics import metrics_lines

    for a in adaptation_lines(result.get("request_adaptation")):
        console.print(f"[yellow]{a}[/]", highlight=False)
    for a in metrics_lines(result.get("server_metrics")):
        console.print(a, highlight=False)
    from benchmint.llm.workers import workers_lines

    for w in workers_lines(result):  # llm bench --workers / --ray: one line per worker
        console.print(w, highlight=False)
    from benchmint.llm.client_bound import client_bound_line

    cb = client_bound_line(result.get("client_bound"))
    if cb:
        console.print(cb, highlight=False)

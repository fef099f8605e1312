"""``benchmint llm mlperf`` and ``benchmint llm sweep``: LLM runs under the real MLPerf LoadGen.

Thin typer layer over :mod:`benchmint.llm.loadgen.api`; backends and workloads are the ones ``llm bench``
uses (the LLM layer's registry and workload loader), plus ``--backend sim``, a simulated engine with no model.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from benchmint.cli import common
from benchmint.cli.common import (
    BackendOpt,
    BackendOptionOpt,
    ResultsOpt,
    console,
    err_console,
    interrupted_exit,
)
from benchmint.core.errors import UserError
from benchmint.core.jsonio import write_json
from benchmint.core.redact import register_secret
from benchmint.core.signals import sigint_deferred
from benchmint.llm.backends.registry import backend_entry
from benchmint.llm.backends.spec import build_backend_spec, parse_backend_options
from benchmint.llm.console import fmt, print_result
from benchmint.llm.probe import check_reachable
from benchmint.llm.samples import build_samples, tokenizer_for

_SCENARIO_HELP = "MLPerf scenario: offline, server or single-stream."


@dataclass
class SharedFlags:
    """The flags `mlperf` and `sweep` share (the MLPerf model key and limits, the backend, the workload), declared
    once in :data:`_SHARED` and handed to each command as one object."""

    model_key: str
    user_conf: Path | None
    slo: str | None
    backend: str
    backend_option: list[str] | None
    url: str
    model: str | None
    api: str
    dataset: str
    num_samples: int | None
    input_tokens: str | None
    output_tokens: str | None
    seed: int
    device: str
    max_batch_size: int
    max_concurrency: int
    warmup: int
    sim: str | None
    json_out: Path | None
    results: Path | None


_SHARED: list[tuple[str, Any, Any]] = [  # (name, type, the typer option with its default)
    ("model_key", str, typer.Option("llama2-70b", "--model-key", help="MLPerf benchmark whose official constraints "
                                    "apply (llama2-70b, llama2-70b-interactive, llama3_1-8b, ...).")),
    ("user_conf", Path, typer.Option(None, "--user-conf", help="A LoadGen user.conf ('model.scenario.key = value').")),
    ("slo", str, typer.Option(None, "--slo", help="Override the TTFT/TPOT limits, e.g. ttft=2,tpot=0.2 (seconds).")),
    ("backend", str, BackendOpt),
    ("backend_option", list[str], BackendOptionOpt),
    ("url", str, typer.Option("http://127.0.0.1:8000/v1", "--url", help="Base URL of an OpenAI-compatible server.")),
    ("model", str, typer.Option(None, "--model", help="Model name (http) or tiny / local folder (transformers).")),
    ("api", str, typer.Option("completions", "--api", help="completions or chat (http).")),
    ("dataset", str, typer.Option("sample", "--dataset", help="sample, synthetic, a local file or a HF dataset.")),
    ("num_samples", int, typer.Option(None, "--num-samples", help="Samples in the LoadGen QSL (default: all).")),
    ("input_tokens", str, typer.Option(None, "--input-tokens", help="Synthetic prompt length: 128, 128:32 or 64-256.")),
    ("output_tokens", str, typer.Option("64", "--output-tokens", help="Tokens to generate: 128, 128:32 or 64-256.")),
    ("seed", int, typer.Option(0, "--seed", help="Seed for synthetic prompts and lengths.")),
    ("device", str, typer.Option("cpu", "--device", help="Device of the in-process engine.")),
    ("max_batch_size", int, typer.Option(16, "--max-batch-size", help="Batch size of the in-process engine.")),
    ("max_concurrency", int, typer.Option(0, "--max-concurrency", help="Cap on queries in flight (0: none).")),
    ("warmup", int, typer.Option(0, "--warmup", help="Requests sent before each LoadGen test, outside the figures.")),
    ("sim", str, typer.Option(None, "--sim", help="Simulated engine (--backend sim), e.g. "
                              "ttft=0.02,tpot=0.002,slots=64 (the defaults).")),
    ("json_out", Path, typer.Option(None, "--json", help="Also write the result JSON here.")),
    ("results", Path, ResultsOpt),
]


def with_shared_flags(command: Callable[..., None]) -> Callable[..., None]:
    """``command(..., flags: SharedFlags)`` as a typer command: the shared flags join its own on the command line
    and reach it as one :class:`SharedFlags`."""
    own = [p for p in inspect.signature(command).parameters.values() if p.name != "flags"]
    names = [name for name, _, _ in _SHARED]

    @functools.wraps(command)
    def run(**kw: Any) -> None:
        from benchmint.core.outpaths import check_output_dir, check_output_file

        check_output_file("--json", kw.get("json_out"))  # before the run: a late failure would lose its end
        check_output_dir("--out", kw.get("out"))
        command(flags=SharedFlags(**{n: kw.pop(n) for n in names}), **kw)

    shared = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=t) for n, t, opt in _SHARED]
    run.__signature__ = inspect.Signature([*own, *shared])  # type: ignore[attr-defined]
    run.__annotations__ = {**{k: v for k, v in command.__annotations__.items() if k != "flags"},
                           **{n: t for n, t, _ in _SHARED}}
    return run


def _backend_and_samples(f: SharedFlags, api_key: str | None = None, tokenizer: str | None = None,
                         include_usage: bool = True, **workload_opts: Any) -> tuple[dict[str, Any], list, dict[str, Any]]:
    """The backend spec (refusing an option the backend does not take), the LoadGen samples and their workload.
    An HTTP server without ``--model``: the first model it lists, as ``llm bench`` takes (the requests named no
    model, which vLLM refuses, and the stored run had no model name)."""
    if f.model is None and backend_entry(f.backend).server:
        import asyncio

        from benchmint.llm.backends.http import normalize_base_url
        from benchmint.llm.bench import probe_server

        served, _ = asyncio.run(probe_server(normalize_base_url(f.url), api_key))  # llm bench's own probe
        f.model = served[0] if served else None
    spec = build_backend_spec(f.backend, f.url, f.model, f.api, f.device, f.max_batch_size, f.sim, api_key, tokenizer,
                              include_usage, parse_backend_options(f.backend_option))
    tok = tokenizer_for(f.backend, f.model, tokenizer)
    samples, workload = build_samples(f.dataset, f.api, tok, f.num_samples, f.input_tokens, f.output_tokens, f.seed,
                                      **workload_opts)
    return spec, samples, workload


def _performance_sample_count(f: SharedFlags, samples: list) -> int | None:
    """All the samples when there are fewer than the model key's official count (or no known key), else None."""
    key = _model_key(f.model_key, f.user_conf)
    return len(samples) if (key is None or len(samples) < key.performance_sample_count) else None


def _model_key(name: str, user_conf: Path | None) -> Any:
    """The official settings of an MLPerf model key; an unknown key is an error unless a user.conf sets the
    limits (LoadGen would otherwise silently apply its generic defaults)."""
    from benchmint.llm.loadgen.settings import MODEL_KEYS

    key = MODEL_KEYS.get(name)
    if key is None and user_conf is None:
        raise UserError(f"--model-key {name!r} is not an MLPerf LLM benchmark this tool knows "
                        f"({', '.join(sorted(MODEL_KEYS))}); pick one, or give its settings with --user-conf")
    return key


def check_failures(result: dict[str, Any]) -> None:
    req = result.get("requests") or (result.get("accuracy") or {}).get("requests") or {}
    if req and not req.get("completed") and req.get("failed"):
        kinds = ", ".join(f"{k}: {v}" for k, v in (req.get("errors") or {}).items())
        raise UserError(f"all {req['failed']} requests failed ({kinds}); see records.jsonl in the test folder")


def _limits(slo: str | None) -> tuple[float | None, float | None]:
    if not slo:
        return None, None
    from benchmint.llm.metrics import parse_slo

    d = parse_slo(slo)  # {"ttft_s": ..., "tpot_s": ...}
    return d.get("ttft_s", d.get("ttft")), d.get("tpot_s", d.get("tpot"))


def _store_dir(results: Path | None) -> str:
    """The results store's folder (the run's record is appended there by ``run_mlperf`` / ``run_sweep``)."""
    from benchmint.results.store import default_results_dir

    return str(default_results_dir(results))


def _show_trial(t: Any) -> None:
    m = t.metrics
    console.print(f"  {t.rate:8.4g}/s: {'pass' if t.passed else 'FAIL'}  TTFT p99 {fmt(m.get('ttft_p99_s'), 's')}"
                  f"  TPOT p99 {fmt(m.get('tpot_p99_s'), 's')}  completed {fmt(m.get('completed_per_s'))}/s"
                  + (f"  ({escape(t.reason)})" if not t.passed and t.reason else "")  # why it failed
                  + ("  (client-bound: this rate may be the client's limit)" if m.get("client_bound") else ""),
                  soft_wrap=True, highlight=False)


def _print_curve(sw: dict[str, Any], title: str) -> None:
    t = Table(title=title)
    for c in ("target rate", "completed/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "verdict"):
        t.add_column(c)
    for p in sw["curve"]:
        m = p["metrics"]
        t.add_row(f"{p['rate']:.4g}", fmt(m.get("completed_per_s")), fmt(m.get("ttft_p50_s"), "s"),
                  fmt(m.get("ttft_p99_s"), "s"), fmt(m.get("tpot_p50_s"), "s"), fmt(m.get("tpot_p99_s"), "s"),
                  "pass" if p["passed"] else "fail")
    console.print(t)
    peak = sw["peak_rate"]
    console.print(f"[bold]peak: {peak:.4g}/s[/] ({sw['stopped_because']})" if peak is not None
                  else f"[bold yellow]no passing rate found[/] ({sw['stopped_because']})")


@with_shared_flags
def mlperf(
    scenario: str = typer.Option("server", "--scenario", help=_SCENARIO_HELP),
    mode: str = typer.Option("performance", "--mode",
                             help="performance, accuracy, or submission (performance then accuracy)."),
    target_qps: float = typer.Option(None, "--target-qps", help="Server target QPS, or Offline expected QPS."),
    min_duration: float = typer.Option(None, "--min-duration", help="Minimum test duration, seconds (official: 600)."),
    max_duration: float = typer.Option(None, "--max-duration", help="Maximum test duration, seconds."),
    min_query_count: int = typer.Option(None, "--min-query-count", help="Minimum number of queries."),
    max_query_count: int = typer.Option(None, "--max-query-count", help="Maximum number of queries."),
    prompt_column: str = common.PromptColumnOpt,
    input_column: str = common.InputColumnOpt,
    reference_column: str = typer.Option(None, "--reference-column",
                                         help="Column holding the reference answer (accuracy)."),
    system_prompt: str = common.SystemPromptOpt,
    chat_template: bool = common.ChatTemplateOpt,
    tokenizer: str = typer.Option(None, "--tokenizer", help="Tokenizer for prompt lengths and output counts "
                                  "when the server gives no usage (default: --model when loadable)."),
    api_key: str = common.ApiKeyOpt,
    ignore_eos: bool = typer.Option(True, "--ignore-eos/--allow-eos",
                                    help="Ask for exactly max_tokens (off for servers that reject ignore_eos)."),
    include_usage: bool = typer.Option(True, "--usage/--no-usage", help="Ask for usage in the stream."),
    plan_only: bool = typer.Option(False, "--plan", help="Only predict whether the settings can give a VALID result."),
    price: str = typer.Option(None, "--price", help="USD per hour (number) or a name in the repo's price table."),
    no_energy: bool = typer.Option(False, "--no-energy", help="Do not sample GPU power / RAPL."),
    timeout: float = typer.Option(None, "--timeout", help="Stop a LoadGen test after this many seconds."),
    out: Path = typer.Option(Path("benchmint-mlperf"), "--out", help="Folder for logs, result.json and run.json."),
    no_store: bool = typer.Option(False, "--no-store", help="Do not append the run to the results store (run.json is "
                                  "still written in --out)."),
    flags: SharedFlags = None,  # type: ignore[assignment]  (with_shared_flags fills it)
) -> None:
    """Run an LLM backend under the real MLPerf LoadGen (Offline, Server, SingleStream) and report LoadGen's
    figures (from mlperf_log_detail.txt) beside benchmint's client-side metrics, validity in plain words,
    accuracy (ROUGE, official targets), energy and cost."""
    from benchmint.llm.cost import resolve_price
    from benchmint.llm.loadgen.api import MlperfConfig, MlperfInterrupted, run_mlperf
    from benchmint.llm.loadgen.settings import RunSettings
    from benchmint.llm.loadgen.validity import plan_for_mode

    if mode not in ("performance", "accuracy", "submission"):
        raise UserError(f"--mode {mode!r}: use performance, accuracy or submission")
    register_secret(api_key)  # recorded files never hold it (core/redact.py)
    f = flags
    ttft, tpot = _limits(f.slo)
    spec, samples, workload = _backend_and_samples(
        f, api_key, tokenizer, include_usage, prompt_column=prompt_column, input_column=input_column,
        reference_column=reference_column, system_prompt=system_prompt, chat_template=chat_template,
        ignore_eos=ignore_eos,
    )
    if mode != "performance" and not any(x.reference for x in samples):
        raise UserError(f"--mode {mode} scores answers against references, and dataset {f.dataset!r} has none; "
                        "use a dataset with a reference column (--reference-column)")
    rs = RunSettings(
        scenario=scenario, mode="performance", model_key=f.model_key,
        user_conf=str(f.user_conf) if f.user_conf else None, target_qps=target_qps, min_duration_s=min_duration,
        max_duration_s=max_duration, min_query_count=min_query_count, max_query_count=max_query_count,
        performance_sample_count=_performance_sample_count(f, samples), ttft_s=ttft, tpot_s=tpot,
    )
    if plan_only:
        p = plan_for_mode(rs, len(samples), mode)
        if mode == "accuracy":  # LoadGen gives no verdict in accuracy mode: say what the test will send
            console.print(f"[bold]plan: accuracy test[/] ({p.accuracy_samples} samples, each sent once)")
        else:
            verdict = "can be VALID" if p.can_be_valid else "can NOT be VALID"
            extra = f", then an accuracy test of {p.accuracy_samples} samples" if mode == "submission" else ""
            what = (f"one query of about {p.expected_queries} samples" if scenario == "offline"
                    else f"about {p.expected_queries} queries")  # Offline: LoadGen's query_count is 1
            console.print(f"[bold]plan: {verdict}[/] (performance test: {what}{extra})", soft_wrap=True)
        for n in p.notes:
            console.print(f"  - {n}", soft_wrap=True)
        if f.json_out:
            shown = dataclasses.replace(rs, mode="accuracy") if mode == "accuracy" else rs
            write_json(f.json_out, {"schema_version": "1.0", "plan": p.to_dict(), "settings": shown.to_dict()})
        return
    cfg = MlperfConfig(settings=rs, backend=spec, samples=samples, out_dir=out, mode=mode,
                       max_concurrency=f.max_concurrency, timeout_s=timeout, price=resolve_price(price), warmup=f.warmup,
                       measure_energy=not no_energy, slo={k: v for k, v in (("ttft_s", ttft), ("tpot_s", tpot)) if v},
                       workload={**workload, "model_name": f.model or backend_entry(f.backend).default_model,
                                 "backend": f.backend}, store=not no_store, results=f.results)
    check_reachable(spec)
    p = plan_for_mode(rs, len(samples), mode)
    if not p.can_be_valid and mode != "accuracy":
        why = next((n for n in p.notes if n.startswith("Cannot be VALID")), "")
        console.print(f"[yellow]plan: this run can NOT be VALID[/] - {why}", soft_wrap=True)
    issues = next((n for n in p.notes if "LoadGen issues about" in n), None)
    if issues and mode != "accuracy":  # how long it will take, before it starts (130 queries ran where 20 were asked)
        console.print(f"[dim]plan: {escape(issues)}[/]", soft_wrap=True, highlight=False)
    try:
        with console.status("running LoadGen ...") as status:
            result, record = run_mlperf(cfg, on_stage=lambda s: status.update(s + " ..."))
    except MlperfInterrupted as e:
        # the partial run was stored before MlperfInterrupted was raised
        where = None if no_store else _store_dir(f.results)
        err_console.print(f"interrupted: wrote the partial result ({e.completed} completed requests, no LoadGen "
                          f"verdict) to {e.result_path}" + (f"; run {e.record.id} stored in {where}" if where else ""),
                          highlight=False, soft_wrap=True)
        raise interrupted_exit() from None
    print_result(result, console)
    if f.json_out:
        write_json(f.json_out, result)
    where = None if no_store else _store_dir(f.results)
    check_failures(result)
    console.print(f"[dim]logs and result in {out}" + (f"; run {record.id} stored in {where}" if where else "") + "[/]")


@with_shared_flags
def sweep(
    start_qps: float = typer.Option(1.0, "--start-qps", help="First target QPS to try."),
    max_trials: int = typer.Option(8, "--max-trials", help="Most LoadGen tests to run."),
    growth: float = typer.Option(2.0, "--growth", help="Factor between probes before the peak is bracketed."),
    tolerance: float = typer.Option(0.05, "--tolerance", help="Stop bisecting when the bracket is this tight."),
    max_qps: float = typer.Option(None, "--max-qps", help="Never try above this QPS."),
    trial_duration: float = typer.Option(10.0, "--trial-duration", help="Minimum duration of each trial, s."),
    min_query_count: int = typer.Option(1, "--min-query-count",
                                        help="Minimum queries per trial (default 1: --trial-duration sets the length)."),
    target: str = typer.Option("loadgen", "--target",
                               help="loadgen (LoadGen Server QPS) or bench (`llm bench` Poisson request rate)."),
    require_valid: bool = typer.Option(False, "--require-valid",
                                       help="A trial passes only if LoadGen says VALID (early stopping too)."),
    out: Path = typer.Option(Path("benchmint-sweep"), "--out", help="Folder for the trials and result.json."),
    no_store: bool = typer.Option(False, "--no-store", help="Do not append the sweep's run (nor, with --target bench, "
                                  "each trial's run) to the results store; they are still written in --out."),
    sessions: str = typer.Option(None, "--sessions", help="With --target bench: multi-turn sessions (a ShareGPT-style "
                                 "file or 'synthetic'); the rate is then sessions started per second."),
    prefix_groups: int = typer.Option(None, "--prefix-groups", help="With --target bench: groups sharing a prefix."),
    prefix_tokens: int = typer.Option(None, "--prefix-tokens", help="With --target bench: tokens of each shared prefix."),
    workers: int = typer.Option(None, "--workers", help="With --target bench: each trial's load from N processes "
                                "(or N Ray actors with --ray), as `llm bench --workers`."),
    ray: str = typer.Option(None, "--ray", help="With --target bench: run each trial's workers as Ray actors (--ray "
                            "alone: a local Ray instance, kept for every trial; --ray auto or HOST:PORT: a cluster)."),
    flags: SharedFlags = None,  # type: ignore[assignment]  (with_shared_flags fills it)
) -> None:
    """Find the highest load that still meets the latency limits (LoadGen Server QPS under the model key's
    TTFT/TPOT limits, or with --target bench the `llm bench` rate under --slo), with a bounded number of
    trials (probe up or down, then bisect), and print the curve of latency vs load."""
    from benchmint.llm.loadgen.api import MlperfConfig, run_sweep
    from benchmint.llm.loadgen.settings import RunSettings

    f = flags
    if target != "bench" and (workers is not None or ray is not None):
        raise UserError("--workers and --ray spread `llm bench` trials: add --target bench (LoadGen drives its "
                        "queries from one process)")
    if target == "bench":
        from benchmint.llm.sweep import run_bench_sweep

        result = run_bench_sweep(
            start_rate=start_qps, max_trials=max_trials, growth=growth, rel_tol=tolerance, max_rate=max_qps,
            trial_duration_s=trial_duration, slo=f.slo, out=out, results=f.results,
            bench_options=dict(backend=f.backend, url=f.url, model=f.model, api=f.api, dataset=f.dataset,
                               input_tokens=f.input_tokens, output_tokens=f.output_tokens, seed=f.seed,
                               max_batch_size=f.max_batch_size, device=f.device,
                               **({"backend_options": parse_backend_options(f.backend_option)} if f.backend_option
                                  else {}),
                               **{k: v for k, v in (("sessions", sessions), ("prefix_groups", prefix_groups),
                                                    ("prefix_tokens", prefix_tokens), ("workers", workers),
                                                    ("ray", ray)) if v is not None}),
            on_trial=lambda t: _show_trial(t), store=not no_store,
        )
        _finish_sweep(result, out, "latency vs load (llm bench, Poisson arrivals)", f.json_out)
        return
    if target != "loadgen":
        raise UserError(f"--target {target!r}: use loadgen or bench")
    if sessions or prefix_groups or prefix_tokens:
        raise UserError("--sessions and --prefix-groups/--prefix-tokens go with --target bench (LoadGen sends single prompts)")
    ttft, tpot = _limits(f.slo)
    spec, samples, workload = _backend_and_samples(f)
    rs = RunSettings(scenario="server", model_key=f.model_key, user_conf=str(f.user_conf) if f.user_conf else None,
                     min_duration_s=trial_duration, min_query_count=min_query_count,
                     performance_sample_count=_performance_sample_count(f, samples), ttft_s=ttft, tpot_s=tpot,
                     # trials are load studies: no rounding up to whole passes over the samples
                     sample_concatenate_permutation=False)
    cfg = MlperfConfig(settings=rs, backend=spec, samples=samples, out_dir=out, max_concurrency=f.max_concurrency,
                       measure_energy=False, warmup=f.warmup,
                       workload={**workload, "backend": f.backend,
                                 "model_name": f.model or backend_entry(f.backend).default_model},
                       store=not no_store, results=f.results)
    check_reachable(spec)

    console.print(f"sweep: up to {max_trials} LoadGen Server trials of >= {trial_duration:g} s")
    result, record = run_sweep(cfg, start_qps, max_trials=max_trials, growth=growth, rel_tol=tolerance,
                               require_valid=require_valid, max_qps=max_qps, on_trial=_show_trial)
    _finish_sweep(result, out, "latency vs load (LoadGen Server)", f.json_out)


def _finish_sweep(result: dict, out: Path, title: str, json_out: Path | None) -> None:
    """Write --json, print the curve and, after Ctrl-C, say what was kept (the finished trials, already written
    and stored), then exit 130. Ctrl-C is held back throughout: after a first one this is the way out, and a
    second must not cut the --json file or the message short."""
    sw = result["sweep"]
    interrupted = bool(sw.get("interrupted"))
    with sigint_deferred(reraise=not interrupted):
        if json_out:
            write_json(json_out, result)
        _print_curve(sw, title)
        if interrupted:
            err_console.print(f"interrupted: kept the {sw['trials_used']} finished trial(s) in "
                              f"{out / 'result.json'} (status partial)")
    if interrupted:
        raise interrupted_exit()

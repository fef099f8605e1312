"""LLM inference benchmarking: measure any OpenAI-compatible server, or a model in-process; serve a model."""

from __future__ import annotations

from pathlib import Path

import typer

from benchmint.cli import common
from benchmint.cli.common import (
    BackendOpt,
    BackendOptionOpt,
    ResultsOpt,
    console,
    err_console,
    interrupted_exit,
    option_panels,
)
from benchmint.cli.optional_value import OptionalValueCommand

app = typer.Typer(
    name="llm",
    help="LLM inference benchmarking: `bench` a server or an in-process model, `serve` a model over HTTP, "
    "run it under the real MLPerf LoadGen (`mlperf`), find the peak load that meets the limits (`sweep`).",
    no_args_is_help=True,
)

# the flag that stops sending a request extension a server refuses (the registry entry lists what it sends)
_TURN_OFF = {"ignore_eos": "--allow-eos", "stream_options": "--no-usage"}


@app.command("bench", cls=OptionalValueCommand)
def bench(
    url: str = typer.Option("http://127.0.0.1:8000/v1", "--url", help="Base URL of an OpenAI-compatible server."),
    model: str = typer.Option(
        None, "--model", help="Model name sent to the server (default: the first one it lists); with "
        "--backend transformers: a local folder, a hub name or 'tiny'."
    ),
    backend: str = BackendOpt,
    backend_option: list[str] = BackendOptionOpt,
    api: str = typer.Option("completions", "--api", help="completions or chat."),
    stream: bool = typer.Option(True, "--stream/--no-stream", help="Stream tokens (SSE); needed for TTFT/ITL."),
    scenario: str = typer.Option(
        "server", "--scenario", help="server (Poisson/gamma at --rate), constant, offline (all at once), "
        "single-stream (one at a time), concurrency (--concurrency in flight), ramp (--rate-start to --rate-end), "
        "concurrency-ramp (--concurrency-start to --concurrency-end)."
    ),
    rate: float = typer.Option(None, "--rate", help="Requests per second (server, constant)."),
    burstiness: float = typer.Option(1.0, "--burstiness", help="Gamma shape of arrivals: 1 = Poisson, <1 burstier."),
    concurrency: int = typer.Option(None, "--concurrency", help="Requests in flight (scenario concurrency)."),
    num_requests: int = typer.Option(None, "--num-requests", "-n", help="Measured requests (stop by count)."),
    duration: float = typer.Option(None, "--duration", help="Stop sending after this many seconds."),
    warmup: int = typer.Option(0, "--warmup", help="Warm-up requests sent first and excluded from the results."),
    dataset: str = typer.Option(
        "sample", "--dataset", help="sample (shipped), synthetic, a .jsonl/.json/.csv/.parquet file or a HF dataset."
    ),
    split: str = typer.Option("train", "--split", help="Split of a Hugging Face dataset."),
    dataset_config: str = typer.Option(None, "--dataset-config", help="Configuration (subset) of a HF dataset."),
    input_tokens: str = typer.Option(None, "--input-tokens", help="Synthetic prompt length: N, MEAN:STD or LO-HI."),
    output_tokens: str = typer.Option("64", "--output-tokens", help="max_tokens per request: N, MEAN:STD or LO-HI."),
    prompt_column: str = common.PromptColumnOpt,
    input_column: str = common.InputColumnOpt,
    reference_column: str = typer.Option(None, "--reference-column", help="Column holding the reference answer."),
    system_prompt: str = common.SystemPromptOpt,
    chat_template: bool = common.ChatTemplateOpt,
    tokenizer: str = typer.Option(
        None, "--tokenizer", help="Tokenizer for prompt lengths and for counting output when the server gives no usage "
        "(default: --model when loadable)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of arrivals, lengths and sampling."),
    slo: str = typer.Option(None, "--slo", help="SLOs for goodput, e.g. ttft=2,tpot=0.2 (seconds; 200ms works)."),
    anchor: str = typer.Option("scheduled", "--anchor", help="Latency anchor: scheduled (default) or sent."),
    timeout: float = typer.Option(600.0, "--timeout", help="Per-request timeout in seconds."),
    api_key: str = common.ApiKeyOpt,
    ignore_eos: bool = typer.Option(
        True, "--ignore-eos/--allow-eos", help="Ask for exactly max_tokens (sends ignore_eos; off for servers that reject it)."
    ),
    include_usage: bool = typer.Option(
        True, "--usage/--no-usage", help="Ask for usage in the stream (stream_options.include_usage)."
    ),
    adapt: bool = typer.Option(
        True, "--adapt/--no-adapt", help="Drop extensions the server rejects (ignore_eos, stream_options, "
        "min_tokens), resend that request once, and record what it means in the result."
    ),
    server_metrics: bool = typer.Option(
        True, "--server-metrics/--no-server-metrics", help="Scrape the server's Prometheus /metrics during the run "
        "(vLLM, SGLang, TGI, llm serve names mapped to one set; server_metrics.json + result summary)."
    ),
    server_metrics_interval: float = typer.Option(
        1.0, "--server-metrics-interval", help="Seconds between /metrics scrapes (on the client's clock)."
    ),
    max_batch_size: int = typer.Option(16, "--max-batch-size", help="In-process engine batch size."),
    device: str = typer.Option("cpu", "--device", help="In-process engine device (cpu, cuda)."),
    out: Path = typer.Option(None, "--out", help="Output folder (result.json, requests.parquet, run.json)."),
    json_path: Path = typer.Option(None, "--json", help="Also write the result JSON here."),
    results: Path = ResultsOpt,
    no_store: bool = typer.Option(False, "--no-store", help="Do not append the run to the results store (the files in "
                                  "--out are still written)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live progress display (on a terminal)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print no summary table."),
    sessions: str = typer.Option(
        None, "--sessions", help="Multi-turn sessions: a ShareGPT-style .json/.jsonl file or 'synthetic' (chat "
        "API; each turn carries the history; see docs/workloads.md)."),
    num_sessions: int = typer.Option(None, "--num-sessions", help="Sessions to run (default: 8 synthetic, or the whole file)."),
    session_turns: str = typer.Option("4", "--session-turns", help="Synthetic turns per session: N, MEAN:STD or LO-HI."),
    think_time: str = typer.Option("1", "--think-time", help="Seconds between an answer and the next turn: S, LO-HI, MEAN:STD or exp:MEAN."),
    prefix_groups: int = typer.Option(None, "--prefix-groups", help="N groups of prompts sharing a prefix (with --prefix-tokens)."),
    prefix_tokens: int = typer.Option(None, "--prefix-tokens", help="Tokens of each group's shared prefix."),
    trace: str = typer.Option(None, "--trace", help="Replay an arrival trace: Mooncake .jsonl or BurstGPT .csv."),
    trace_speed: float = typer.Option(1.0, "--trace-speed", help="Replay speed: 2 = twice as fast, 0.5 = half."),
    trace_window: str = typer.Option(None, "--trace-window", help="START:END seconds of trace time to replay."),
    trace_block_tokens: int = typer.Option(512, "--trace-block-tokens", help="Tokens per Mooncake hash block."),
    rate_start: float = typer.Option(None, "--rate-start", help="Scenario ramp: requests/s at the start."),
    rate_end: float = typer.Option(None, "--rate-end", help="Scenario ramp: requests/s at the end."),
    ramp_duration: float = typer.Option(None, "--ramp-duration", help="Seconds the ramp lasts (ramp, concurrency-ramp)."),
    concurrency_start: int = typer.Option(None, "--concurrency-start", help="Scenario concurrency-ramp: in flight at the start."),
    concurrency_end: int = typer.Option(None, "--concurrency-end", help="Scenario concurrency-ramp: in flight at the end."),
    workers: int = typer.Option(
        None, "--workers", help="Load-generating processes on this host (or Ray actors with --ray), each sending "
        "a round-robin shard of the one seeded schedule from a common start; results merged (see docs/workers.md)."),
    ray: str = typer.Option(
        None, "--ray", help="Run the workers as Ray actors spread over a cluster's nodes: --ray alone starts a local "
        "Ray instance, --ray auto or --ray HOST:PORT joins one (pip install 'benchmint\\[ray]')."),
) -> None:
    """Benchmark an OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, `benchmint llm serve`) or, with
    --backend transformers, a model in this process. Open-loop arrivals are precomputed and seeded; latency is
    anchored to the scheduled send time; results go to --out and the results store. Ctrl-C keeps a partial
    result. Exit code 2 when the server cannot be reached or every request fails."""
    from benchmint.core.errors import UserError
    from benchmint.core.outpaths import check_output_dir, check_output_file
    from benchmint.llm.backends.registry import backend_entry
    from benchmint.llm.backends.spec import parse_backend_options
    from benchmint.llm.bench import BenchConfig, run_bench
    from benchmint.llm.output import print_summary

    check_output_file("--json", json_path)  # before the run: --json to a folder lost the run's outputs at its end
    check_output_dir("--out", out)
    cfg = BenchConfig(
        backend=backend, backend_options=parse_backend_options(backend_option), url=url, model=model, api=api, stream=stream, scenario=scenario, rate=rate,
        burstiness=burstiness, concurrency=concurrency, num_requests=num_requests, duration_s=duration,
        warmup=warmup, dataset=dataset, split=split, dataset_config=dataset_config, input_tokens=input_tokens, output_tokens=output_tokens,
        prompt_column=prompt_column, input_column=input_column, reference_column=reference_column,
        system_prompt=system_prompt, chat_template=chat_template, tokenizer=tokenizer, seed=seed, slo=slo,
        anchor=anchor, timeout_s=timeout, api_key=api_key, ignore_eos=ignore_eos, include_usage=include_usage,
        adapt_request=adapt, server_metrics=server_metrics, server_metrics_interval_s=server_metrics_interval,
        max_batch_size=max_batch_size, device=device, out=str(out) if out else None,
        json_path=str(json_path) if json_path else None, progress=progress,
        sessions=sessions, num_sessions=num_sessions, session_turns=session_turns, think_time=think_time,
        prefix_groups=prefix_groups, prefix_tokens=prefix_tokens, trace=trace, trace_speed=trace_speed,
        trace_window=trace_window, trace_block_tokens=trace_block_tokens, rate_start=rate_start, rate_end=rate_end,
        ramp_duration_s=ramp_duration, concurrency_start=concurrency_start, concurrency_end=concurrency_end,
        workers=workers, ray=ray,
    )
    res = run_bench(cfg, results_dir=results, store=not no_store)
    if not quiet:
        model_name = (res.result.get("backend") or {}).get("model") or cfg.model  # the model the record names
        print_summary(res.result, console, title=f"{cfg.backend} {model_name} ({cfg.scenario})")
        console.print(f"[dim]wrote {res.paths['result']}, {res.paths['requests']}, {res.paths['run']}[/]")
    req = res.result["requests"]
    if req["interrupted"]:
        err_console.print("interrupted: wrote the partial result")
        raise interrupted_exit()
    if res.all_failed:
        ex = next(iter(req["error_examples"].values()), "")
        ex += next((f" (this server rejects {x}: add {_TURN_OFF[x]})" for x in backend_entry(cfg.backend).extensions
                    if x in ex and x in _TURN_OFF), "")
        raise UserError(f"all {req['sent']} requests failed ({', '.join(f'{k}: {v}' for k, v in req['errors'].items())}); first error: {ex}")


option_panels(bench, {
    "Target": ("url", "model", "backend", "backend_option", "api", "stream", "api_key", "tokenizer", "timeout",
               "ignore_eos", "include_usage", "max_batch_size", "device"),
    "Load": ("scenario", "rate", "burstiness", "concurrency", "num_requests", "duration", "warmup", "seed",
             "rate_start", "rate_end", "ramp_duration", "concurrency_start", "concurrency_end", "adapt"),
    "Prompts": ("dataset", "split", "dataset_config", "input_tokens", "output_tokens", "prompt_column",
                "input_column", "reference_column", "system_prompt", "chat_template", "prefix_groups",
                "prefix_tokens"),
    "Sessions and arrival traces": ("sessions", "num_sessions", "session_turns", "think_time", "trace",
                                    "trace_speed", "trace_window", "trace_block_tokens"),
    "Measurement": ("slo", "anchor", "server_metrics", "server_metrics_interval"),
    "More load generators": ("workers", "ray"),
    "Output": ("out", "json_path", "results", "no_store", "progress", "quiet"),
})


@app.command("serve")
def serve(
    model: str = typer.Option("tiny", "--model", help="Local model folder, hub name, or 'tiny' (built locally)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    max_batch_size: int = typer.Option(16, "--max-batch-size", help="Requests batched per engine step."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16, float16."),
    served_name: str = typer.Option(None, "--served-model-name", help="Model name to answer to (default: --model)."),
    max_model_len: int = typer.Option(
        None, "--max-model-len", help="Context length in tokens, prompt plus output (default: the model's)."
    ),
    request_log: Path = typer.Option(
        None, "--request-log", help="Write the server's own per-request times (monotonic clock: request read, "
        "each chunk handed to the connection) as JSON lines to this file, a line as each answer ends: the truth a load "
        "generator's TTFT is compared with (benchmarks/peers.py)."),
) -> None:
    """Serve a model with benchmint's OpenAI-compatible server (/v1/completions, /v1/chat/completions, streaming;
    /v1/models, /health, Prometheus /metrics), batching concurrent requests in the in-process engine."""
    from benchmint.llm.server import serve as run_server

    run_server(model, host=host, port=port, max_batch_size=max_batch_size, device=device, dtype=dtype,
               served_name=served_name, max_model_len=max_model_len,
               request_log=str(request_log) if request_log else None,
               on_ready=lambda: err_console.print(f"serving {model} on http://{host}:{port}/v1 (Ctrl-C stops)"))

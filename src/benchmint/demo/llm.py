"""The demo's LLM step: serve the tiny model with the built-in server, benchmark it over HTTP (Server scenario),
benchmark it in-process (Offline scenario), print the summary tables and keep both RunRecords."""

from __future__ import annotations

from typing import Any

from benchmint.llm.bench import BenchConfig, run_bench
from benchmint.llm.output import print_summary


def llm_demo_step(ctx: Any) -> None:
    from benchmint.llm.engine import AsyncEngine
    from benchmint.llm.server import ServerThread
    from benchmint.models.tiny_llm import tiny_llm_path

    quick = bool(getattr(ctx, "quick", False))
    model = str(tiny_llm_path())
    out = ctx.out / "llm"
    ctx.console.print(f"tiny Llama model (random weights, local tokenizer): {model}", soft_wrap=True)

    engine = AsyncEngine.create(model, max_batch_size=8)
    with ServerThread(engine, model_name="tiny") as srv:
        ctx.console.print(f"built-in OpenAI-compatible server on {srv.url} (/health, /v1/models, /metrics)")
        cfg = BenchConfig(
            url=srv.url, model="tiny", tokenizer=model, scenario="server", rate=20.0 if quick else 8.0,
            num_requests=8 if quick else 40, warmup=2, output_tokens="4" if quick else "16",
            slo="ttft=0.5,tpot=0.05", seed=0, out=str(out / "server-http"), progress=not quick,
        )
        res = run_bench(cfg, results_dir=ctx.results_dir)
    engine.close()
    print_summary(res.result, ctx.console, title="Server scenario over HTTP (Poisson arrivals)")
    ctx.records.append(res.run_record)
    ctx.artifacts["llm server-scenario result"] = res.paths["result"]

    cfg2 = BenchConfig(
        # "tiny" (the same cached folder): the record names the model as the HTTP run's does, not by its path,
        # which the learning layer took for a second model family
        backend="transformers", model="tiny", scenario="offline", num_requests=6 if quick else 32,
        output_tokens="4" if quick else "16", max_batch_size=8, seed=0, out=str(out / "offline-inprocess"),
        progress=not quick,
    )
    res2 = run_bench(cfg2, results_dir=ctx.results_dir)
    print_summary(res2.result, ctx.console, title="Offline scenario in-process (all requests at once)")
    ctx.records.append(res2.run_record)
    ctx.artifacts["llm offline result"] = res2.paths["result"]

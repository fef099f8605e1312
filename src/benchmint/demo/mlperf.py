"""The demo's MLPerf step: a short LoadGen Server run against the built-in server on the tiny model.

It prints the plan made before the run, LoadGen's figures beside benchmint's client-side ones, and the
validity line in plain words (a run this short is INVALID under llama2-70b's official rules: early stopping
at p99 needs 459 queries, and the line says so). The RunRecord goes to ``ctx.records`` for the report step.
"""

from __future__ import annotations

from typing import Any


def mlperf_demo_step(ctx: Any) -> None:
    from benchmint.llm.console import print_result
    from benchmint.llm.cost import resolve_price
    from benchmint.llm.engine import AsyncEngine
    from benchmint.llm.loadgen.api import MlperfConfig, run_mlperf
    from benchmint.llm.loadgen.settings import RunSettings
    from benchmint.llm.loadgen.validity import plan
    from benchmint.llm.samples import samples_of
    from benchmint.llm.server import ServerThread
    from benchmint.llm.workload import load_workload
    from benchmint.models.tiny_llm import tiny_llm_path

    quick = bool(getattr(ctx, "quick", False))
    model = str(tiny_llm_path())
    n = 8 if quick else 16
    wl = load_workload("sample", num_prompts=n, output_tokens="8" if quick else "16")
    samples = samples_of(wl.requests)
    rs = RunSettings(scenario="server", model_key="llama2-70b", target_qps=4.0,
                     min_duration_s=1.0 if quick else 5.0, min_query_count=n, performance_sample_count=n)
    p = plan(rs, len(samples))
    ctx.console.print(f"plan: {'can be VALID' if p.can_be_valid else 'can NOT be VALID'} "
                      f"(about {p.expected_queries} queries)", soft_wrap=True)
    for note in p.notes[:2]:
        ctx.console.print(f"  - {note}", soft_wrap=True)

    engine = AsyncEngine.create(model, max_batch_size=8)
    try:
        with ServerThread(engine, model_name="tiny") as srv:
            ctx.console.print(f"MLPerf LoadGen (Server, llama2-70b limits) -> built-in server {srv.url}")
            cfg = MlperfConfig(
                settings=rs, samples=samples, out_dir=ctx.out / "mlperf",
                backend={"kind": "openai-http", "options": {"url": srv.url, "model": "tiny"}},
                mode="performance" if quick else "submission", measure_energy=True,
                price=resolve_price("aws-c7i.large"),  # a 2-vCPU machine's list price, from the repo table
                workload={**wl.describe(), "model_name": "tiny", "backend": "openai-http"},
            )
            result, record = run_mlperf(cfg)
    finally:
        engine.close()
    print_result(result, ctx.console)
    ctx.records.append(record)
    ctx.artifacts["mlperf result"] = ctx.out / "mlperf" / "result.json"
    ctx.artifacts["mlperf LoadGen logs"] = ctx.out / "mlperf" / "performance"

"""The demo's learn step: fit the throughput predictor on the shipped Open MLPerf copy plus the demo's own runs,
print one prediction with its 90% interval and one recommendation. The recommendation goes to the report's
Predictions section (``ctx.predictions``)."""

from __future__ import annotations

from typing import Any


def learn_demo_step(ctx: Any) -> None:
    import pandas as pd

    from benchmint.learn.api import shipped_openmlperf
    from benchmint.learn.predictor import fit_predictor
    from benchmint.learn.recommend import recommend, recommend_table
    from benchmint.results.flatten import flatten_record
    from benchmint.results.record import RunRecord

    official = pd.read_parquet(shipped_openmlperf())
    own = [flatten_record(r.to_dict()) for r in ctx.records if isinstance(r, RunRecord)]
    # official rows in their own layout, the demo's runs flattened: the feature builder reads both
    rows = pd.concat([official, pd.DataFrame(own)], ignore_index=True) if own else official
    p = fit_predictor(rows, "tokens_per_s_per_accelerator")
    used = max(0, p.n_train - len(official))  # the demo's runs that had the target (a replay has no tokens/s)
    ctx.console.print(f"fitted tokens/s per accelerator on {p.n_train} rows ({len(official)} official MLPerf "
                      f"results + {used} of the {len(own)} demo runs, the others measure no tokens/s"
                      f"{' or are no complete measurement' if p.left_out else ''}); conformal 90% intervals")
    query = pd.DataFrame([{"model.name": "llama2-70b-99", "model.weight_data_types": "fp8",
                           "system.accelerator.name": "NVIDIA H200-SXM-141GB", "system.accelerator.total_count": 8,
                           "submission.scenario": "Server", "software.framework": "TensorRT 10.8, CUDA 12.8"}])
    r = p.predict(query).iloc[0]
    ctx.console.print(f"prediction: llama2-70b (fp8, Server) on 8x H200 SXM: {r['prediction']:.0f} tokens/s per "
                      f"accelerator, 90% interval {r['lower']:.0f}-{r['upper']:.0f} ({r['basis']})")
    rec = recommend(p, "llama3.1-8b", "server", {"ttft": 2.0, "tpot": 0.2}, top=3)
    rec["predictor"] = "demo: Open MLPerf copy + the demo's runs"
    ctx.console.print(recommend_table(rec))
    for note in rec["notes"]:
        ctx.console.print(f"note: {note}", soft_wrap=True)
    preds = getattr(ctx, "predictions", None)
    if isinstance(preds, list):
        preds.append(rec)

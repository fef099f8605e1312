"""An MLPerf LoadGen run's result on a rich console: LoadGen's figures beside the client's, the validity line,
accuracy, cost and energy (what ``benchmint llm mlperf`` and the demo print)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from benchmint.results.metric_table import llm_metric


def fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.3f} s"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_result(result: dict[str, Any], out: Console | None = None) -> None:
    """LoadGen vs client table, validity line, accuracy, cost and energy lines (on ``out``, a rich Console;
    default: stdout)."""
    console_ = out or Console(emoji=False)
    lg = result.get("loadgen")
    if lg:
        t = Table(title=f"LoadGen {lg.get('scenario')} ({result['config']['settings']['model_key']})")
        t.add_column("figure")
        t.add_column("LoadGen")
        t.add_column("benchmint client")
        cl = result.get("client") or {}
        thr = cl.get("throughput") or {}
        t.add_row("samples/s", fmt(lg.get("samples_per_s")), fmt(thr.get("requests_per_s")))
        t.add_row("output tokens/s", fmt(lg.get("tokens_per_s")), fmt(thr.get("output_tokens_per_s")))
        for name in ("ttft_s", "tpot_s"):
            for p in ("p50", "p90", "p99"):
                t.add_row(f"{llm_metric(name).name} {p}", fmt((lg.get(name) or {}).get(p), "s"),
                          fmt((cl.get(name) or {}).get(p), "s"))
        console_.print(t)
        from benchmint.llm.loadgen.api import validity_line

        req = result.get("requests") or {}
        style = "green" if lg.get("validity") == "VALID" and not req.get("failed") else "yellow"
        console_.print(f"[bold {style}]{validity_line(lg)}[/]", soft_wrap=True)
        if req.get("failed"):  # LoadGen's verdict is on timing alone: a failed request was answered empty
            kinds = ", ".join(f"{k}: {v}" for k, v in (req.get("errors") or {}).items())
            console_.print(f"[bold yellow]{req['failed']} of {req['failed'] + (req.get('completed') or 0)} requests failed"
                           f"{f' ({kinds})' if kinds else ''}: LoadGen took them as answered (empty), so its "
                           "figures are not the system's; see records.jsonl in the test folder[/]", soft_wrap=True)
    acc = result.get("accuracy")
    if acc:
        r = acc["rouge"]
        line = (f"accuracy: ROUGE-1 {r['rouge1']:.2f}, ROUGE-2 {r['rouge2']:.2f}, ROUGE-L {r['rougeL']:.2f}, "
                f"ROUGE-Lsum {r['rougeLsum']:.2f} over {acc['samples']} samples")
        if acc.get("exact_match"):
            line += f"; exact match {acc['exact_match']['exact_match']:.1f}% ({acc['exact_match']['samples']} short)"
        if acc.get("tokens_per_sample") is not None:
            line += f"; {acc['tokens_per_sample']:.1f} tokens/sample"
        console_.print(line)
        for level, v in ((acc.get("targets") or {}).get("levels") or {}).items():
            failed = [c["metric"] for c in v["checks"] if not c["passed"]]
            console_.print(f"  MLPerf target {level}: " + ("met" if v["passed"] else "NOT met (" + ", ".join(failed) + ")"))
    cost = result.get("cost")
    if cost and cost.get("usd_per_million_output_tokens") is not None:
        console_.print(f"cost: ${cost['usd_per_million_output_tokens']:.4g} per million output tokens at "
                      f"${cost['price']['usd_per_hour']:g}/h")
    en = result.get("energy") or {}
    if en.get("gpu_joules_per_output_token") is not None:
        console_.print(f"energy: {en['gpu_joules_per_output_token']:.4g} J per output token (GPU, NVML)")

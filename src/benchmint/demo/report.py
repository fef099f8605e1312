"""The demo's last step: store the runs the earlier steps produced and write ``report.html``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmint.results.record import RunRecord
from benchmint.results.save import save_runs
from benchmint.results.store import ResultsStore, load_run_json, record_from_dict


def store_and_report(ctx: Any) -> None:
    """Append the demo's RunRecords (``ctx.records``) that are not stored yet to the results store at
    ``ctx.results_dir``, write ``<ctx.out>/report.html`` of them, and print where both are."""
    records: list[RunRecord] = []
    for r in ctx.records:
        if isinstance(r, RunRecord):
            records.append(r)
        elif isinstance(r, dict):
            records.append(record_from_dict(r, "a demo step's record"))
        elif isinstance(r, str | Path) and Path(r).is_file():  # a run.json path
            records.append(load_run_json(r))
    store = ResultsStore(ctx.results_dir)
    saved = save_runs(records, store=store)  # the runs not stored yet
    for p in store.problems:
        ctx.console.print(f"[yellow]warning:[/] {p}", highlight=False)
    base_dirs = sorted({p.parent for p in ctx.out.rglob("run.json")}) + [ctx.out]

    from benchmint.report.api import build_report

    report = build_report(records, ctx.out / "report.html", title="benchmint demo report", base_dirs=base_dirs,
                          predictions=getattr(ctx, "predictions", None) or None)
    ctx.artifacts["results store"] = store.path
    ctx.artifacts["report"] = report
    ctx.console.print(
        f"stored {saved.new} new run(s) ({saved.total - saved.new} were already stored) in {store.path}; "
        f"query them with `benchmint results list --results {store.path}`",
        soft_wrap=True,
    )
    if not records:
        ctx.console.print("[yellow]no runs were produced by the earlier steps; the report says so[/]")
    ctx.console.print(f"report of {len(records)} run(s): {report}", soft_wrap=True)

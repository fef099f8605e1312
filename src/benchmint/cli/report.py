"""Write one self-contained HTML report (opens offline: plotly and CSS inlined): a headline per run, the runs
side by side (what differs), throughput vs latency (Pareto), replay fidelity per op type, latency CDFs,
TTFT/TPOT percentiles, throughput vs load and a section per run."""

from __future__ import annotations

from pathlib import Path

import typer

from benchmint.cli.common import ResultsOpt, console, err_console, run_kind


def report(
    runs: list[str] = typer.Option(
        None, "--runs", help="Run ids (or prefixes) in the store, run.json files or folders holding them; "
        "repeat the flag for more. Default: every stored run except imported MLPerf results."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write."),
    results: Path = ResultsOpt,
    include_imported: bool = typer.Option(False, "--include-imported",
                                          help="With no --runs, also include imported MLPerf results."),
    kind: str = typer.Option(None, "--kind", callback=run_kind, help="Only runs of this kind (replay, llm, mlperf, imported)."),
    title: str = typer.Option("benchmint report", "--title", help="Title of the page."),
    predictions: list[Path] = typer.Option(
        None, "--predictions", help="JSON of `benchmint learn eval --json` or `benchmint recommend --json`: "
        "adds the Predictions section (repeat the flag for more)."),
) -> None:
    """Write one self-contained HTML report (opens offline: plotly and CSS inlined): a headline per run, the
    runs side by side (what differs), throughput vs latency (Pareto), replay fidelity per op type, latency CDFs,
    TTFT/TPOT percentiles, throughput vs load and a section per run."""
    from benchmint.report.api import build_report, load_predictions, no_runs_error, select_runs

    docs = load_predictions(predictions)

    records, base_dirs, problems = select_runs(runs, results, include_imported=include_imported, kind=kind)
    for p in problems:
        err_console.print(f"[yellow]warning:[/] {p}", highlight=False, soft_wrap=True)
    if not records and not docs:  # (a report of predictions alone needs no runs)
        raise no_runs_error(runs, results, include_imported=include_imported, kind=kind)
    path = build_report(records, out, title=title, base_dirs=base_dirs, predictions=docs or None)
    console.print(f"wrote {path} ({len(records)} run(s), {path.stat().st_size / 1e6:.1f} MB)")

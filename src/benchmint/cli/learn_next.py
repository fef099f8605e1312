"""Choose the next runs worth measuring in a space of configurations (active learning); with --run, measure
them on this machine, store them, refit and print the learning curve."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from benchmint.cli.common import ResultsOpt, console, err_console


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _point(p: dict) -> str:
    return ", ".join(f"{k}={int(v) if float(v).is_integer() else v}" for k, v in p.items())


def next_cmd(
    space: Path = typer.Option(..., "--space", help="SPACE.yaml: the backend or trace, the axes and their values "
                               "(see docs/next.md)."),
    budget: int = typer.Option(..., "--budget", help="How many configurations to choose (and measure with --run)."),
    run: bool = typer.Option(False, "--run", help="Measure them on this machine, one at a time, refitting after "
                             "each; store the runs and print the learning curve."),
    target: str = typer.Option(None, "--target", help="The figure to learn (default: the space's target), e.g. "
                               "output_tokens_per_s, requests_per_s, ttft_p99_s, tpot_p99_s, iteration_s."),
    results: Path = ResultsOpt,
    out: Path = typer.Option(None, "--out", help="With --run: folder for the runs' outputs (default: "
                             "benchmint-runs/next-<space name>)."),
    json_path: Path = typer.Option(None, "--json", help="Also write the answer as JSON here."),
) -> None:
    """The K configurations of SPACE.yaml whose measurement would most reduce the predictor's uncertainty where
    it matters: near the SLO frontier when the space sets `slo:` on the target, near the optimum with
    `goal: max|min`, else where the 90% interval is widest. Each comes with why (its interval, its distance to
    the frontier). Runs of the space already in the results store are used. With --run they are measured here
    (the in-process engine, a built-in server started on 127.0.0.1, a server you name, or a trace replay)."""
    from benchmint.core.errors import UserError
    from benchmint.core.jsonio import write_json
    from benchmint.core.outpaths import check_output_dir, check_output_file
    from benchmint.learn.nextrun import plan_next, run_next
    from benchmint.learn.space import TARGETS, load_space
    from benchmint.results.api import open_store, quietly

    if budget <= 0:
        raise UserError(f"--budget {budget}: must be at least 1 (the number of runs to choose)")
    check_output_file("--json", json_path)  # before the runs, not after them
    check_output_dir("--out", out)
    sp = load_space(space).with_target(target)
    store = open_store(results)
    records = quietly(store.records)
    unit = TARGETS[sp.target].unit
    if not run:
        res = plan_next(sp, records, budget)
        t = Table(title=f"next {len(res['choices'])} run(s) for {sp.target} ({unit}) in space {sp.name} "
                  f"({res['measured']}/{res['configurations']} measured; looking at {res['mode']})")
        for c in ("#", "configuration", "predicted", "90% interval", "why"):
            t.add_column(c, overflow="fold")
        for i, c in enumerate(res["choices"], 1):
            t.add_row(str(i), _point(c["point"]), _fmt(c["prediction"]),
                      "-" if c["lower"] is None else f"{_fmt(c['lower'])}..{_fmt(c['upper'])}", c["why"])
        console.print(t)
        if res["note"]:
            console.print(f"[dim]{res['note']}[/]")
    else:
        def on_run(k: int, row: dict) -> None:
            got = "no value" if row["measured_value"] is None else f"{row['measured_value']:.4g} {unit}"
            pred = "" if row["prediction"] is None else f" (predicted {row['prediction']:.4g}, " + (
                f"90% interval {row['lower']:.4g}..{row['upper']:.4g})" if row["lower"] is not None
                else "no calibrated interval)")
            err_console.print(f"run {k + 1}/{budget}: {_point(row['point'])} -> {got}{pred} [{row['run_id']}]",
                              highlight=False, soft_wrap=True)

        res = run_next(sp, records, budget, results_dir=store.path, out_dir=out, on_run=on_run)
        t = Table(title=f"learning curve of {sp.target} in space {sp.name}: median APE on runs measured later "
                  "(configurations the model had not seen)")
        for c in ("measured runs", "median APE", "evaluated on"):
            t.add_column(c, justify="right")
        for row in res["learning_curve"]:
            t.add_row(str(row["measured"]), f"{row['median_ape']:.1%}", str(row["evaluated_on"]))
        console.print(t)
        after = res["model_after"]
        console.print(
            f"measured {len(res['runs'])} run(s) ({res['runs_without_target']} with no {sp.target} value), "
            f"stored in {store.path}; the space has {res['measured']}/{res['configurations']} configurations "
            "measured" + ("" if not after else
                          f"; median 90% interval width on the rest {after['median_interval_width_rel']:.0%}"
                          if after["calibrated"] else f"; no 90% interval on the rest: {after['note']}"),
            soft_wrap=True)
    if json_path is not None:
        write_json(json_path, res)

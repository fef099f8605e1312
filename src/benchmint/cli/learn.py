"""Learn from the results store: fit a predictor with 90% intervals, evaluate it honestly (grouped splits), predict
rows of a file, and recommend configurations (see docs/learn.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from benchmint.cli.common import ResultsOpt, console, group

app = group("learn", __doc__)

TargetOpt = typer.Option("tokens_per_s_per_accelerator", "--target",
                         help="tokens_per_s_per_accelerator, ttft_p99_s, tpot_p99_s, requests_per_s or iteration_s.")
WhereOpt = typer.Option(None, "--where", help="SQL condition on table `runs` choosing the training rows.")
RowsOpt = typer.Option(None, "--rows", help="Learn from this CSV/Parquet/JSONL file instead of the store "
                                            "(flattened `runs` columns or Open MLPerf names).")


def _rows(results: Path | None, where: str | None, rows: Path | None):
    from benchmint.core.errors import UserError
    from benchmint.learn.api import load_rows, store_rows
    from benchmint.results.store import default_results_dir

    if rows is not None:
        if where:
            raise UserError("--where filters the store; it cannot be used with --rows")
        return load_rows(rows), str(rows)
    return store_rows(results, where), f"the store at {default_results_dir(results)}" + (
        f" (where {where})" if where else "")


def _check_target(target: str) -> None:
    from benchmint.learn.features import get_target

    get_target(target)


def _enough(df, target: str, source: str) -> None:
    from benchmint.core.errors import UserError
    from benchmint.learn.api import too_few_message
    from benchmint.learn.predictor import MIN_ROWS
    from benchmint.learn.quality import left_out_text, usable_rows

    measured, left_out = usable_rows(df, target=target)
    n = len(measured)
    if n < MIN_ROWS:
        why = left_out_text(left_out)
        raise UserError(too_few_message(n, target, source) + (f" ({why})" if why else ""))


@app.command("fit")
def fit_cmd(
    target: str = TargetOpt,
    where: str = WhereOpt,
    out: Path = typer.Option(Path("benchmint-model"), "--out", help="Model folder to write."),
    results: Path = ResultsOpt,
    rows: Path = RowsOpt,
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train a predictor of TARGET on the store (own runs and imported official results together)."""
    from benchmint.learn.api import fit
    from benchmint.learn.predictor import MIN_CALIBRATION

    _check_target(target)
    df, source = _rows(results, where, rows)
    _enough(df, target, source)
    p, path = fit(df, target, out, seed=seed, source=source)
    pools = ", ".join(f"{k} {len(v)}" for k, v in p.pools.items())
    console.print(f"fitted {target} on {p.n_train} rows of {source} ({len(p.features)} features; "
                  f"interval pools: {pools})", soft_wrap=True)
    if p.evaluation.get("rows_left_out_why"):
        console.print(f"note: {p.evaluation['rows_left_out_why']}", soft_wrap=True)
    n_cal = p.calibration_residuals()
    if n_cal < MIN_CALIBRATION:
        console.print(f"warning: not enough runs to calibrate a 90% interval ({n_cal} out-of-fold residual(s), "
                      f"{MIN_CALIBRATION} needed): predictions will have no interval (`interval: none`)",
                      soft_wrap=True)
    console.print(f"model folder: {path}")


@app.command("eval")
def eval_cmd(
    target: str = TargetOpt,
    split: str = typer.Option("random", "--split",
                              help="random | accelerator | model | submitter | round | all (comma-separated too)."),
    where: str = WhereOpt,
    results: Path = ResultsOpt,
    rows: Path = RowsOpt,
    json_path: Path = typer.Option(None, "--json", help="Write the evaluation (all figures, per row too) here."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Held-out evaluation: MAPE, median and P90 APE, bias, R² of logs and 90% interval coverage, per split and
    per group, beside the noise floor. Near-duplicate results always fall in one fold."""
    from benchmint.core.errors import UserError
    from benchmint.core.jsonio import write_json
    from benchmint.learn.api import eval_table
    from benchmint.learn.evaluate import SPLITS, evaluate

    _check_target(target)
    splits = list(SPLITS) if split == "all" else [s.strip() for s in split.split(",") if s.strip()]
    for s in splits:
        if s not in SPLITS:
            raise UserError(f"--split {s!r}: expected one of {', '.join(SPLITS)} or all")
    df, source = _rows(results, where, rows)
    _enough(df, target, source)
    out = {"schema_version": "1.0", "target": target, "source": source, "splits": {}}
    skipped: dict[str, str] = {}
    for s in splits:
        try:
            res = evaluate(df, target, s, seed)
        except UserError as e:  # a split these rows cannot make (one accelerator): said, the others kept
            if len(splits) == 1:
                raise
            skipped[s] = str(e)
            console.print(f"[yellow]split {s} not evaluated:[/] {e}", soft_wrap=True, highlight=False)
            continue
        out["splits"][s] = res
        console.print(eval_table(res))
        if res.get("rows_left_out_why") and len(out["splits"]) == 1:  # (the first split evaluated)
            console.print(f"note: {res['rows_left_out_why']}", soft_wrap=True)
        for w in res.get("coverage_warnings") or []:
            console.print(f"[yellow]warning:[/] {w}", soft_wrap=True, highlight=False)
    if skipped:
        out["splits_not_evaluated"] = skipped
    if not out["splits"]:
        raise UserError(f"no split could be evaluated: {'; '.join(skipped.values())}")
    if json_path:
        write_json(json_path, out)
        console.print(f"evaluation: {json_path}")


@app.command("predict")
def predict_cmd(
    model_dir: Path = typer.Argument(..., metavar="MODEL_DIR", help="A folder written by `learn fit`."),
    rows: Path = typer.Argument(..., metavar="ROWS", help="CSV, Parquet or JSONL rows (runs or Open MLPerf columns)."),
    json_path: Path = typer.Option(None, "--json", help="Write the predictions as JSON here."),
) -> None:
    """Predict each row of ROWS, in input order, with its 90% interval; a row missing a feature gets an error."""
    from benchmint.core.jsonio import write_json
    from benchmint.learn.api import load_rows, predict_rows, predictions_table
    from benchmint.learn.predictor import load_predictor

    load_predictor(model_dir)  # a bad folder is reported before the rows are read
    res = predict_rows(model_dir, load_rows(rows))
    console.print(predictions_table(res))
    if json_path:
        write_json(json_path, res)
        console.print(f"predictions: {json_path}")


def recommend(
    model: str = typer.Option(..., "--model", help="Model name or family (llama2-70b, llama3.1-8b, mixtral-8x7b, ...)."),
    scenario: str = typer.Option("server", "--scenario", help="server or offline."),
    slo: str = typer.Option(None, "--slo", help="Latency limits, e.g. ttft=2,tpot=0.2 (seconds, p99)."),
    max_usd_per_hour: float = typer.Option(None, "--max-usd-per-hour", help="Budget per replica-hour (USD)."),
    accelerators: str = typer.Option(None, "--accelerators", help="Comma-separated accelerators to consider."),
    top: int = typer.Option(10, "--top", help="How many configurations to list."),
    model_dir: Path = typer.Option(None, "--model-dir", help="A throughput model from `learn fit` (default: fit "
                                                             "on the store, or on the shipped Open MLPerf copy)."),
    results: Path = ResultsOpt,
    json_path: Path = typer.Option(None, "--json", help="Write the recommendation as JSON here."),
) -> None:
    """Ranked configurations (accelerator, count, engine, precision) for a model: predicted tokens/s, $ per million
    tokens and J per token at TDP, each with its 90% interval, and a note where the answer extrapolates."""
    from benchmint.core.jsonio import write_json
    from benchmint.learn.api import default_throughput_predictor
    from benchmint.learn.predictor import load_predictor
    from benchmint.learn.recommend import check_question, normalize_list, parse_slo, recommend_table
    from benchmint.learn.recommend import recommend as run

    limits = parse_slo(slo)
    accs = normalize_list(accelerators)
    candidates = check_question(model, scenario, max_usd_per_hour, accs, top)  # bad flags before any fitting
    training = None
    if model_dir is not None:
        p, source = load_predictor(model_dir), str(model_dir)
    else:
        p, source, training = default_throughput_predictor(results, model, candidates)
    res = run(p, model, scenario, limits, max_usd_per_hour, accs, top)
    res["predictor"] = source
    if training is not None:
        res["training"] = training
        if training.get("note"):
            res["notes"].insert(0, training["note"])
        if training.get("store_runs_not_measurements_why"):
            res["notes"].insert(0, f"training rows: {training['store_runs_not_measurements_why']}")
    console.print(recommend_table(res))
    for n in res["notes"]:
        console.print(f"note: {n}", soft_wrap=True)
    console.print(f"[dim]predictor: {source}[/]", soft_wrap=True)
    if json_path:
        write_json(json_path, res)

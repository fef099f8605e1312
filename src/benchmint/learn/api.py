"""The Python API behind ``benchmint learn``: rows from the store or a file, fit, eval, predict, and the tables."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from benchmint.core.errors import UserError
from benchmint.learn.features import get_target, usable_columns
from benchmint.learn.predictor import MIN_CALIBRATION, MIN_ROWS, Predictor, fit_predictor, load_predictor

SCHEMA_VERSION = "1.0"


def load_rows(path: str | os.PathLike) -> pd.DataFrame:
    """Rows from a CSV, Parquet, JSONL or JSON (a list of objects) file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(p)
        if suffix == ".csv":
            return pd.read_csv(p)
        if suffix in (".jsonl", ".ndjson"):
            return _records_flattened(pd.read_json(p, lines=True, dtype=False))
        if suffix == ".json":
            return _records_flattened(pd.read_json(p, dtype=False))
    except (ValueError, OSError, pd.errors.ParserError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{p}: unreadable {suffix.lstrip('.')} file ({first})") from None
    raise UserError(f"{p}: expected a .csv, .parquet, .jsonl or .json file of rows")


def _records_flattened(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that are whole run records (``results export --format jsonl``: nested config, metrics, system...)
    flattened as the store's ``runs`` table is; other rows as they are. Nested, no feature column matched, and
    `learn fit` read "0 rows with a value"."""
    if not len(df) or not {"kind", "metrics"} <= set(df.columns) or not df["metrics"].map(
            lambda v: isinstance(v, dict)).all():
        return df
    from benchmint.results.flatten import flatten_record

    rows = [flatten_record({k: v for k, v in r.items() if not (isinstance(v, float) and v != v)})
            for r in df.to_dict("records")]
    return pd.DataFrame([{k: v for k, v in r.items() if k != "record_json"} for r in rows])


def store_rows(results: str | os.PathLike | None = None, where: str | None = None) -> pd.DataFrame:
    """The store's ``runs`` table (flattened) as a DataFrame, filtered by an SQL ``where`` clause."""
    import duckdb

    from benchmint.results.api import open_store, quietly

    store = open_store(results)
    con = quietly(store.connect)
    sql = "SELECT * EXCLUDE (record_json) FROM runs" + (f" WHERE {where}" if where else "")
    try:
        return con.execute(sql).df()
    except duckdb.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--where {where!r}: {first} (columns of table `runs`: see docs/results.md)") from None
    finally:
        con.close()


def fit(df: pd.DataFrame, target: str, out: str | os.PathLike | None = None, seed: int = 0,
        source: str = "") -> tuple[Predictor, Path | None]:
    """Fit, save (when ``out``), and keep a short description of the training rows with the model."""
    from benchmint.learn.quality import left_out_text

    get_target(target)
    p = fit_predictor(df, target, seed=seed)
    p.evaluation = {"source": source, "rows_in": int(len(df)), "rows_used": p.n_train,
                    "rows_left_out": dict(p.left_out), "rows_left_out_why": left_out_text(p.left_out),
                    "interval_pools": {k: len(v) for k, v in p.pools.items()},
                    "intervals_calibrated": p.calibration_residuals() >= MIN_CALIBRATION,
                    "how": "conformal pools from out-of-fold residuals (see docs/learn.md); run "
                           "`benchmint learn eval` for the held-out figures"}
    return p, (p.save(out) if out else None)


def too_few_message(n: int, target: str, where: str) -> str:
    how = {"tokens_per_s_per_accelerator": "import official results (`benchmint results import data.parquet`) "
                                           "or measure more runs",
           "iteration_s": "replay more traces or configurations (`benchmint replay`)"}.get(
        target, "measure more runs (`benchmint llm bench`, `benchmint llm sweep`); official results have no "
                "per-request latencies")
    return f"target {target!r}: {n} row(s) with a value in {where}, a predictor needs at least {MIN_ROWS}; {how}"


def predict_rows(model_dir: str | os.PathLike, rows: pd.DataFrame) -> dict[str, Any]:
    """One object per input row, in input order: prediction, lower, upper, unit, basis, note, error."""
    p = load_predictor(model_dir)
    if len(rows.columns) and not usable_columns(rows):
        raise UserError(f"the rows have no usable column (got: {', '.join(map(str, rows.columns[:8]))}); "
                        "expected flattened `runs` columns (workload__model_name, system__accelerator__name, "
                        "...) or Open MLPerf names (model.name, system.accelerator.name, ...)")
    out = p.predict(rows)

    def num(v: Any) -> float | None:
        return float(v) if v is not None and isinstance(v, float | int) and math.isfinite(v) else None

    objs = []
    for i, r in enumerate(out.to_dict("records")):
        objs.append({"row": i, "prediction": num(r["prediction"]), "lower": num(r["lower"]),
                     "upper": num(r["upper"]), "unit": r["unit"], "basis": r["basis"],
                     "interval": r.get("interval"), "note": r["note"],
                     "error": r["error"]})
    return {"schema_version": SCHEMA_VERSION, "target": p.target, "unit": p.unit, "interval_level": 0.9,
            "rows": objs}


# ------------------------------------------------------------------------------------------ tables
def _pct(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v * 100:.1f}%"


def eval_table(res: dict[str, Any], max_groups: int = 20):
    """A rich table of one split's evaluation: the overall line, then the groups (worst first)."""
    from rich.table import Table

    o = res["overall"]
    nf = res.get("noise_floor") or {}
    title = (f"{res['target']} - split {res['split']} ({res['folds']} folds, {res['rows']} rows); noise floor "
             f"median APE {_pct(nf.get('median_ape'))} over {nf.get('configurations', 0)} configurations")
    t = Table(title=title, title_justify="left")
    for c in ("group", "n", "MAPE", "median APE", "P90 APE", "bias", "R² log", "90% coverage", "width"):
        t.add_column(c, justify="left" if c == "group" else "right")

    def line(name: str, m: dict[str, Any], style: str | None = None) -> None:
        r2 = m.get("r2_log")
        t.add_row(name, str(m.get("n", 0)), _pct(m.get("mape")), _pct(m.get("median_ape")), _pct(m.get("p90_ape")),
                  _pct(m.get("bias")), "-" if r2 is None else f"{r2:.3f}", _pct(m.get("coverage")),
                  _pct(m.get("interval_width")), style=style)

    line("ALL", o, "bold")
    for g in res["groups"][:max_groups]:
        line(f"{res['group_by']}={g['group']}", g)
    if len(res["groups"]) > max_groups:
        t.add_row(f"... {len(res['groups']) - max_groups} more groups", "", "", "", "", "", "", "", "")
    return t


def predictions_table(result: dict[str, Any]):
    from rich.table import Table

    t = Table(title=f"{result['target']} ({result['unit']}), 90% interval", title_justify="left")
    for c in ("row", "prediction", "90% interval", "basis", "note / error"):
        t.add_column(c, justify="right" if c in ("row", "prediction") else "left")
    for r in result["rows"]:
        if r["error"]:
            t.add_row(str(r["row"]), "-", "-", "-", f"[red]{r['error']}[/]")
        else:
            interval = ("none (not calibrated)" if r["lower"] is None or r["upper"] is None
                        else f"{r['lower']:.4g} - {r['upper']:.4g}")
            t.add_row(str(r["row"]), f"{r['prediction']:.4g}", interval, r["basis"] or "", r["note"] or "")
    return t


def shipped_openmlperf() -> Path:
    """The Open MLPerf dataset copy shipped in the package (847 official LLM results, Apache-2.0)."""
    from importlib import resources

    return Path(str(resources.files("benchmint").joinpath("data/openmlperf/data.parquet")))


def default_throughput_predictor(results: str | os.PathLike | None = None, model: str | None = None,
                                 accelerators: list[Any] | None = None) -> tuple[Predictor, str, dict[str, Any]]:
    """A throughput predictor for a recommendation: fit on the store's rows that share something with the question
    (its model family, or one of the candidate ``accelerators``, ``specs.Accelerator`` rows; without a ``model``,
    every row counts) when there are 20 or more of them, else on the shipped Open MLPerf copy. Rows that share
    nothing with the question (a tiny model on a host CPU) never displace the official results. Returns the
    predictor, where it was fit, and ``training`` (JSON-ready: source, rows, store rows left out and why, note)."""
    from benchmint.learn.features import build_features, target_values
    from benchmint.learn.quality import left_out_text, usable_rows
    from benchmint.learn.recommend import relevant_rows
    from benchmint.learn.specs import spec_table
    from benchmint.results.store import default_results_dir

    target = "tokens_per_s_per_accelerator"
    try:
        df = store_rows(results)
    except UserError:
        df = pd.DataFrame()
    # the runs with the target that are complete, real measurements (partial, failed, invalid, simulated never
    # train)
    df, not_measured = usable_rows(df, target=target)
    n_store = len(df)
    where = f"the store at {default_results_dir(results)}"
    training: dict[str, Any] = {"store_rows_with_target": n_store, "store_rows_left_out": 0, "note": None,
                                "store_runs_not_measurements": not_measured,
                                "store_runs_not_measurements_why": left_out_text(not_measured)}
    if n_store:
        keep = pd.Series(True, index=df.index)
        if model is not None:
            keep = relevant_rows(build_features(df), model, accelerators or list(spec_table())).to_numpy()
        n_keep = int(keep.sum())
        left = n_store - n_keep
        training["store_rows_left_out"] = left
        if left:
            feats = build_features(df[~keep])
            fams = ", ".join(sorted({str(v) for v in feats["model_family"].dropna()})[:5]) or "unknown"
            accs = ", ".join(sorted({str(v) for v in feats["accelerator"].dropna()})[:5]) or "unknown"
            training["left_out_why"] = (f"share neither the model family nor a candidate accelerator with the "
                                        f"question (families: {fams}; accelerators: {accs})")
        if n_keep >= MIN_ROWS:
            p = fit_predictor(df[keep].reset_index(drop=True), target)
            source = f"fit on {where} ({n_keep} runs)"
            if left:
                training["note"] = (f"{left} of the store's {n_store} throughput rows were left out of training: "
                                    f"they {training['left_out_why']}")
            training.update(source=source, rows=n_keep)
            return p, source, training
        if left:
            training["note"] = (f"the store's throughput rows were not used: {left} of {n_store} "
                                f"{training['left_out_why']}" + (f", and the {n_keep} that do are fewer than "
                                                                 f"{MIN_ROWS}" if n_keep else "")
                                + "; fit on the shipped Open MLPerf copy instead")
    path = shipped_openmlperf()
    shipped = pd.read_parquet(path)
    source = f"fit on the shipped Open MLPerf copy ({path.name})"
    training.update(source=source, rows=int(target_values(shipped, target).notna().sum()))
    return fit_predictor(shipped, target), source, training

"""Honest evaluation of a predictor: grouped splits, error and interval coverage per split and per group.

Near-duplicate rows (``features.duplicate_groups``: one system and model family in one round by one submitter, so
the 99% / 99.9% accuracy variants and Server / Offline of one submission) always fall in one fold. Splits:

- ``random``: 5 folds over near-duplicate groups;
- ``accelerator`` / ``model`` / ``submitter`` / ``round``: leave one accelerator (normalized name), model family,
  submitter or round out at a time.

Each fold fits a predictor (its own conformal pools included) on the other folds only. Reported: MAPE, median APE,
P90 APE, bias (median signed relative error), R^2 of log values, and the share of held-out rows inside their 90%
interval, overall and per group; beside them the noise floor (spread of results of one configuration measured by
different submitters/systems).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from benchmint.core.errors import UserError
from benchmint.learn.features import as_text, duplicate_groups, get_target
from benchmint.learn.predictor import (
    LEVEL,
    MIN_ROWS,
    POOLS,
    _OneThread,
    configuration_key,
    fit_features,
    training_frame,
)

SCHEMA_VERSION = "1.0"
SPLITS = ("random", "accelerator", "model", "submitter", "round")
SPLIT_COLUMN = {"accelerator": "accelerator", "model": "model_family", "submitter": "submitter", "round": "round"}
# a configuration, for the noise floor: what a user would call "the same setup"
CONFIG_COLUMNS = ("model_family", "latency_class", "scenario", "precision", "accelerator", "accelerator_count",
                  "engine_release")


def metrics(y: np.ndarray, pred: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> dict[str, Any]:
    ok = np.isfinite(pred) & np.isfinite(y) & (y > 0)
    y, pred, lower, upper = y[ok], pred[ok], lower[ok], upper[ok]
    n = int(len(y))
    if n == 0:
        return {"n": 0}
    rel = (pred - y) / y
    ape = np.abs(rel)
    ly, lp = np.log(y), np.log(pred)
    ss = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1 - float(np.sum((ly - lp) ** 2)) / ss if ss > 0 and n > 1 else None
    return {
        "n": n, "mape": float(ape.mean()), "median_ape": float(np.median(ape)),
        "p90_ape": float(np.percentile(ape, 90)), "bias": float(np.median(rel)), "r2_log": r2,
        "coverage": float(np.mean((lower <= y) & (y <= upper))),
        "interval_width": float(np.median((upper - lower) / pred)),
    }


def split_labels(feats: pd.DataFrame, split: str) -> np.ndarray:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if split == "random":
        return duplicate_groups(feats).to_numpy().astype(str)
    return as_text(feats[SPLIT_COLUMN[split]]).to_numpy().astype(str)


def folds(feats: pd.DataFrame, split: str, seed: int = 0, n_folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train index, test index) pairs; whole near-duplicate groups (and, for grouped splits, whole groups of the
    split's column) stay on one side."""
    from sklearn.model_selection import GroupKFold

    labels = split_labels(feats, split)
    uniq = np.unique(labels)
    if len(uniq) < 2:
        col = SPLIT_COLUMN.get(split, "near-duplicate group")
        raise UserError(f"--split {split}: the rows have one {col} ({uniq[0] if len(uniq) else 'none'}), a "
                        "held-out evaluation needs at least two; choose another --split or add rows")
    if split == "random":
        try:
            kf = GroupKFold(n_splits=min(n_folds, len(uniq)), shuffle=True, random_state=seed)
        except TypeError:  # scikit-learn < 1.6
            kf = GroupKFold(n_splits=min(n_folds, len(uniq)))
        return [(tr, te) for tr, te in kf.split(feats, groups=labels)]
    return [(np.flatnonzero(labels != g), np.flatnonzero(labels == g)) for g in uniq]


def noise_floor(feats: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
    """Spread of one configuration's results across submissions (rows with an identical result, the 99%/99.9%
    twins of one submission, count once)."""
    df = pd.DataFrame({c: as_text(feats[c]) for c in CONFIG_COLUMNS})
    df["y"] = y
    df["dup"] = duplicate_groups(feats).to_numpy()
    df = df.drop_duplicates(subset=["dup", "y"])
    key = df[list(CONFIG_COLUMNS)].agg("|".join, axis=1)
    med = df.groupby(key)["y"].transform("median")
    size = df.groupby(key)["y"].transform("size")
    ape = (np.abs(df["y"] - med) / med)[size >= 2]
    return {"configurations": int((df.groupby(key).size() >= 2).sum()), "rows": int(len(ape)),
            "median_ape": float(np.median(ape)) if len(ape) else None,
            "mape": float(np.mean(ape)) if len(ape) else None,
            "definition": "|result - configuration median| / median over configurations measured by 2+ "
                          f"submissions; configuration = {', '.join(CONFIG_COLUMNS)}"}


def evaluate(df: pd.DataFrame, target: str, split: str = "random", seed: int = 0,
             features: list[str] | None = None) -> dict[str, Any]:
    """The held-out evaluation of ``target`` on rows (either layout) under one split."""
    t = get_target(target)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    from benchmint.learn.predictor import _check_rows
    from benchmint.learn.quality import left_out_text, usable_rows

    df, left_out = usable_rows(df)  # partial, failed, invalid and simulated runs are not measurements to score
    feats, ylog = training_frame(df, target)

    _check_rows(len(feats), target)
    labels = split_labels(feats, split)
    n = len(feats)
    pred, lower, upper = (np.full(n, np.nan) for _ in range(3))
    basis = np.array([None] * n, dtype=object)
    fold_list = folds(feats, split, seed)
    unscored = 0  # held-out rows of folds whose training rows are too few to fit on: said, not hidden
    with _OneThread():
        for tr, te in fold_list:
            if len(tr) < MIN_ROWS:
                unscored += len(te)
                continue
            # only the interval pools the held-out rows will use (the same answer, fewer fits)
            ftr, fte = feats.iloc[tr], feats.iloc[te]
            new_acc = ~fte["accelerator"].isin(set(ftr["accelerator"].dropna()))
            new_fam = ~fte["model_family"].isin(set(ftr["model_family"].dropna()))
            count = pd.to_numeric(fte["accelerator_count"], errors="coerce").notna()
            new_cfg = ~configuration_key(fte).isin(set(configuration_key(ftr))) & count & ~new_acc & ~new_fam
            need = tuple(n for n, m in (("seen", ~new_acc & ~new_fam & ~new_cfg), ("new_configuration", new_cfg),
                                        ("new_accelerator", new_acc & ~new_fam), ("new_model", new_fam)) if m.any())
            new_round = fte["round"].notna() & ~fte["round"].isin(set(ftr["round"].dropna()))
            # a pool a row needs may be missing (too few groups, one training round): the predictor then uses the
            # widest pool
            need = need if len(need) == 1 and not new_round.any() else POOLS
            p = fit_features(ftr.reset_index(drop=True), ylog[tr], target, features, seed, pools=need)
            out = p.predict_features(feats.iloc[te].reset_index(drop=True))
            pred[te], lower[te], upper[te] = (out[c].to_numpy(dtype=float) for c in ("prediction", "lower", "upper"))
            basis[te] = out["basis"].to_numpy()
    y = np.exp(ylog)
    group_col = SPLIT_COLUMN.get(split, "accelerator")
    gl = as_text(feats[group_col]).to_numpy().astype(str) if split == "random" else labels
    groups = []
    for g in sorted(set(gl)):
        m = gl == g
        groups.append({"group": g, **metrics(y[m], pred[m], lower[m], upper[m])})
    groups.sort(key=lambda r: -(r.get("mape") or 0))
    warnings = coverage_warnings(groups, split, group_col)
    if unscored:  # the figures are those of the other rows only
        warnings.insert(0, f"split {split}: {unscored} of {n} rows were not scored: their fold left fewer than "
                           f"{MIN_ROWS} rows to fit on (the figures are the other {n - unscored} rows'); measure more "
                           "runs")
    return {
        "schema_version": SCHEMA_VERSION, "target": target, "unit": t.unit, "split": split,
        "interval_level": LEVEL, "folds": len(fold_list), "rows": n, "rows_not_scored": unscored,
        "rows_left_out": left_out, "rows_left_out_why": left_out_text(left_out),
        "group_by": group_col, "overall": metrics(y, pred, lower, upper), "groups": groups,
        "coverage_warnings": warnings,
        "basis_counts": {str(k): int(v) for k, v in pd.Series(basis).value_counts(dropna=False).items()},
        "noise_floor": noise_floor(feats, y),
        "predictions": [{"id": str(i), "measured": float(a), "prediction": float(b) if math.isfinite(b) else None,
                         "lower": float(c) if math.isfinite(c) else None,
                         "upper": float(d) if math.isfinite(d) else None, "group": str(g)}
                        for i, a, b, c, d, g in zip(feats["id"], y, pred, lower, upper, gl, strict=True)],
    }


# a group whose held-out rows fall inside their 90% interval less often than this is named in a warning (with at
# least COVERAGE_MIN_ROWS rows: fewer say little about a coverage)
COVERAGE_FLOOR = LEVEL - 0.15
COVERAGE_MIN_ROWS = 10


def coverage_warnings(groups: list[dict[str, Any]], split: str, group_col: str) -> list[str]:
    """One line per group whose measured coverage is far below the nominal 90%: its intervals are too narrow
    there, and a user must not read them as 90% intervals."""
    out = []
    for g in groups:
        cov, n = g.get("coverage"), g.get("n", 0)
        if cov is not None and n >= COVERAGE_MIN_ROWS and cov < COVERAGE_FLOOR:
            out.append(f"split {split}: only {cov:.0%} of {n} held-out rows of {group_col}={g['group']} fall inside "
                       f"their {LEVEL:.0%} interval: the intervals are too narrow there")
    return out


def evaluate_all(df: pd.DataFrame, target: str, splits: tuple[str, ...] = SPLITS, seed: int = 0) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "target": target,
            "splits": {s: evaluate(df, target, s, seed) for s in splits}}

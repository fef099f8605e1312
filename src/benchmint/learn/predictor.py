"""Predictors with calibrated 90% intervals.

``fit_predictor(df, target)`` learns ``log(target)`` minus an offset: the roofline prior (``roofline.py``) for
throughput, the training median otherwise. The learner is scikit-learn's histogram gradient boosting, kept small
and regularized (shallow trees, few leaves, L2): it models what the roofline misses.

Intervals are conformal (cross-conformal / CV+ on log residuals): out-of-fold residuals of models fit without the
rows they are scored on. The residual pool depends on what the row asks for:

- ``seen``: the row's configuration (model family, accelerator, accelerator count and bytes per parameter) is in
  the training rows: folds hold out near-duplicate groups (``features.duplicate_groups``);
- ``new_configuration``: the model family and the accelerator are in the training rows, but never together at
  this accelerator count or precision (llama2-70b measured on 4 and 8 H100s, asked about 1): folds hold out whole
  configurations, so that the residuals are those of counts and precisions the learner had not seen;
- ``new_accelerator``: the accelerator is not in the training rows: folds hold out whole accelerators;
- ``new_model``: the model family is not in the training rows: the learner answers from what it knows of the
  family (parameters, active parameters, architecture, precision, task, accelerator, roofline), blended in log with
  the roofline alone (times the training rows' median ratio to it) by a weight chosen leaving one training family
  out at a time; the pool is that blend's residuals leaving one family out (each family one draw).

The 90% interval is [prediction * exp(q05), prediction * exp(q95)] of the pool's residuals, with the finite-
sample conformal correction. ``learn eval`` checks that about 90% of held-out rows fall inside.

The pool is mostly official results, which the learner predicts well; rows of one accelerator (own runs on a host
CPU, whose figures move a lot with concurrency and lengths) may be predicted far worse, and a pooled interval covers
far fewer than 90% of them. So each stratum's out-of-fold residuals are checked against the pooled interval: where
a stratum (an accelerator; for a row of an accelerator never measured, the rows with no roofline prior when it has
none) holds at least ``MIN_CALIBRATION`` residuals and significantly fewer than 90% of them fall inside (binomial
test, ``STRATUM_P``), its rows' intervals are widened to that stratum's own conformal interval (Mondrian conformal),
and the note says so. Strata that the pooled interval covers keep it.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmint.core.errors import UserError
from benchmint.core.jsonio import read_json, write_json
from benchmint.learn.features import (
    CATEGORICAL,
    DEFAULT_FEATURES,
    RAW_SPECS,
    REQUIRED,
    as_text,
    build_features,
    duplicate_groups,
    get_target,
    target_values,
)

SCHEMA_VERSION = "1.0"
LEVEL = 0.90
MIN_ROWS = 20  # below this, no learner: say how many rows there are and how many are needed
# features whose value must be more than 0 for a row to describe a system (a row error otherwise)
POSITIVE = {"accelerator_count": "accelerator count", "params_b": "parameters (billions)", "nodes": "nodes"}
ROOFLINE_TARGETS = ("tokens_per_s_per_accelerator",)
# the point is the least-expected-relative-error figure of the row's residual distribution (off: the learner's
# median estimate); leaving one accelerator out, 17.9% MAPE on, 19.2% off
POINT_SHIFT = True
POOLS = ("seen", "new_configuration", "new_accelerator", "new_model", "new_round")


class _OneThread:
    """Fits run on one thread: the data are small, and OpenMP threads on a busy machine spin for nothing."""

    def __enter__(self):
        import sklearn.ensemble  # noqa: F401 - loads the OpenMP runtime, so that the limit reaches it
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(1)
        return self

    def __exit__(self, *exc):
        self._limits.restore_original_limits()


ALPHAS = np.logspace(-2, 4, 13)


def configuration_key(feats: pd.DataFrame) -> pd.Series:
    """What a configuration is for the ``seen`` basis: model family | accelerator | accelerator count | bytes per
    parameter (bf16 and fp16 are one precision here; a row without a count or precision says "none")."""
    def num(c: str) -> pd.Series:
        col = pd.to_numeric(feats[c], errors="coerce") if c in feats.columns else pd.Series(np.nan, index=feats.index)
        return col.map(lambda v: "none" if not np.isfinite(v) else f"{v:g}")

    parts = [as_text(feats[c]) if c in feats.columns else pd.Series("none", index=feats.index)
             for c in ("model_family", "accelerator")]
    return parts[0].str.cat([parts[1], num("accelerator_count"), num("bytes_per_param")], sep="|")


def _config_note(key: str, seen: list[str], row: pd.Series) -> str:
    """Why a configuration is new: the counts and precisions its family and accelerator were measured at."""
    fam, acc = key.split("|")[:2]
    others = [k.split("|") for k in seen if k.split("|")[:2] == [fam, acc]]
    counts = sorted({float(k[2]) for k in others if k[2] != "none"})
    precs = sorted({k[3] for k in others if k[3] != "none"}, key=float)
    bpp = {"0.5": "4-bit", "1": "8-bit", "2": "16-bit", "4": "32-bit"}
    n = row.get("accelerator_count")
    return (f"{fam} was measured on {acc} at {', '.join(f'{c:g}' for c in counts) or 'unknown'} accelerator(s)"
            f" with {', '.join(bpp.get(b, b + ' bytes') for b in precs) or 'unknown'} weights, never at "
            f"{n:g} with {bpp.get(key.split('|')[3], key.split('|')[3])} weights: extrapolated from other counts "
            "and precisions")


def _strata(feats: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each row's strata for per-stratum (Mondrian) calibration: its accelerator, and whether it has a roofline
    prior."""
    lr = pd.to_numeric(feats["log_roofline"], errors="coerce") if "log_roofline" in feats.columns \
        else pd.Series(np.nan, index=feats.index)
    return {"accelerator": as_text(feats["accelerator"]).to_numpy().astype(str),
            "roofline": np.where(np.isfinite(lr.to_numpy(dtype=float)), "yes", "no")}


def _accelerator_folds(X: pd.DataFrame, y: np.ndarray):
    """Folds that hold out whole accelerators, for choosing the ridge strength: the power-law part must carry over
    to accelerators it has not seen (rows of one accelerator share its spec values, so leave-one-row-out would pick
    a strength that memorizes each accelerator's level). None (efficient leave-one-out) with fewer than 3."""
    from sklearn.model_selection import GroupKFold

    if "accelerator" not in X.columns:
        return None
    groups = X["accelerator"].astype(object).where(X["accelerator"].notna(), "none").astype(str).to_numpy()
    n = len(np.unique(groups))
    return list(GroupKFold(n_splits=min(5, n)).split(X, y, groups)) if n >= 3 else None


# numbers that mean something only within a category: an engine's version orders its releases, but vLLM 0.6 and
# TensorRT 10.8 are not on one scale, so a power law across engines would be nonsense; the trees split by engine first
TREES_ONLY = ("engine_version",)


def _trees(seed: int):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(
        max_iter=120, learning_rate=0.1, max_leaf_nodes=15, max_depth=5, min_samples_leaf=8,
        l2_regularization=1.0, categorical_features="from_dtype", random_state=seed,
    )


class LogLinearPlusTrees:
    """A ridge regression on the logs of the numeric features (power laws: throughput against bandwidth, FLOP/s,
    counts, lengths, which extrapolate to accelerators and sizes outside the training rows), then gradient-boosted
    trees on its residuals with the categorical features (what the power laws miss). Both regularized; the ridge
    strength is chosen by internal cross-validation."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def _linear_matrix(self, X: pd.DataFrame, fit: bool = False) -> np.ndarray:
        num = [c for c in X.columns if not isinstance(X[c].dtype, pd.CategoricalDtype) and c not in TREES_ONLY]
        if fit:
            self.num_ = [c for c in num if _support(X[c]) >= MIN_SUPPORT]
            self.log_ = {c: bool((X[c].dropna() > 0).all()) and c not in ("log_roofline", "acc_launch_year")
                         for c in self.num_}
        cols = []
        for c in self.num_:
            v = X[c].to_numpy(dtype=float)
            v = np.log(np.where(v > 0, v, np.nan)) if self.log_[c] else v
            cols.append(v)
        M = np.column_stack(cols) if cols else np.zeros((len(X), 0))
        if fit:
            self.fill_ = np.nan_to_num(np.nanmedian(M, axis=0)) if M.shape[1] else np.zeros(0)
            self.lo_ = np.nan_to_num(np.nanmin(M, axis=0)) if M.shape[1] else np.zeros(0)
            self.hi_ = np.nan_to_num(np.nanmax(M, axis=0)) if M.shape[1] else np.zeros(0)
        # no linear extrapolation past the training rows' range: a new accelerator or model beyond it gets the
        # edge's value (the trees do the same)
        M = np.clip(M, self.lo_, self.hi_) if M.shape[1] else M
        miss = np.isnan(M)
        M = np.where(miss, self.fill_, M)
        return np.hstack([M, miss[:, self.miss_cols_]]) if M.shape[1] else M

    def fit(self, X: pd.DataFrame, y: np.ndarray):
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.num_ = [c for c in X.columns if not isinstance(X[c].dtype, pd.CategoricalDtype) and c not in TREES_ONLY
                     and _support(X[c]) >= MIN_SUPPORT]
        miss = X[self.num_].isna().to_numpy() if self.num_ else np.zeros((len(X), 0), dtype=bool)
        # a missing-value indicator set (or unset) on a handful of rows only names those rows: left out
        self.miss_cols_ = (np.minimum(miss.sum(axis=0), len(X) - miss.sum(axis=0)) >= MIN_SUPPORT) if self.num_ \
            else np.zeros(0, dtype=bool)
        M = self._linear_matrix(X, fit=True)
        if M.shape[1]:
            self.linear_ = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS, cv=_accelerator_folds(X, y))).fit(M, y)
            base = self.linear_.predict(M)
        else:
            self.linear_, base = None, np.zeros(len(y))
        # a column with no value in these rows (a fold without the few rows that have it) tells the trees nothing
        self.tree_cols_ = [c for c in X.columns if X[c].notna().any() and c not in RAW_SPECS]
        self.trees_ = _trees(self.seed).fit(X[self.tree_cols_], y - base)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        base = self.linear_.predict(self._linear_matrix(X)) if self.linear_ is not None else 0.0
        return base + self.trees_.predict(X[self.tree_cols_])


# a numeric column enters the power-law part only where at least this many rows differ from its most common value
# (a missing value counts as a value): a column that only a handful of rows set (the expert count where a single
# mixture-of-experts row is among dense ones) would otherwise be fit to those rows' level, and apply that level to
# every row that sets it later (a mixture-of-experts family never seen). The trees' own floor (min_samples_leaf)
MIN_SUPPORT = 8


def _support(col: pd.Series) -> int:
    """Rows that differ from the column's most common value (NaN counts as a value)."""
    counts = col.astype(object).where(col.notna(), "nan").value_counts()
    return int(len(col) - counts.iloc[0]) if len(counts) else 0


def _learner(seed: int):
    return LogLinearPlusTrees(seed)


def min_calibration(level: float = LEVEL) -> int:
    """The fewest residuals with which split conformal has a finite ``level`` quantile of |residual|:
    ceil(level (n + 1)) <= n, i.e. 9 at 90%. With fewer, no interval is calibrated at that level."""
    n = 1
    while math.ceil(level * (n + 1) - 1e-9) > n:
        n += 1
    return n


MIN_CALIBRATION = min_calibration(LEVEL)  # 9 residuals for a symmetric 90% interval
# a stratum whose residuals the pooled 90% interval covers this unlikely often (binomial, at 90%) gets its own
STRATUM_P = 0.01


def _conformal_quantiles(res: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """(q_low, q_high) of signed log residuals for a central ``level`` interval, finite-sample corrected; None when
    the residuals are too few for any finite conformal quantile at ``level`` (fewer than ``MIN_CALIBRATION``): an
    interval that was not calibrated is not given. With enough residuals for each tail's quantile (19 at 90%) the
    tails are taken separately (an asymmetric interval); in between, the symmetric quantile of |residual|."""
    res = np.sort(np.asarray(res, dtype=float)[np.isfinite(res)])
    n = len(res)
    a = (1 - level) / 2
    lo, hi = math.floor(a * (n + 1) + 1e-9) - 1, math.ceil((1 - a) * (n + 1) - 1e-9) - 1
    if lo >= 0 and hi <= n - 1:
        return float(res[lo]), float(res[hi])
    k = math.ceil(level * (n + 1) - 1e-9) - 1
    if n == 0 or k > n - 1:
        return None
    q = float(np.sort(np.abs(res))[k])
    return -q, q


def min_relative_error_shift(res: np.ndarray) -> float:
    """The log shift ``c`` that minimizes the mean relative error ``|exp(c - r) - 1|`` over log residuals ``r``
    (measured over predicted): the median of ``exp(r)`` weighted by ``exp(-r)``. A predictive distribution that is
    wide or skewed towards over-prediction gets a point below its median (a relative error is bounded by 100% below
    the measured value and unbounded above it); a narrow, symmetric one gets about 0."""
    res = np.asarray(res, dtype=float)
    res = res[np.isfinite(res)]
    if len(res) == 0:
        return 0.0
    order = np.argsort(res)
    r = res[order]
    w = np.exp(-(r - r.min()))  # weights exp(-r), scaled for range
    cum = np.cumsum(w)
    return float(r[np.searchsorted(cum, 0.5 * cum[-1])])


def _point_shift(pool: np.ndarray) -> float:
    """:func:`min_relative_error_shift`, kept inside the pool's middle half: where the residuals scatter so widely
    that the least expected relative error is reached near zero (a relative error below the measured value is at
    most 100%), the point stays a plausible figure (the quartile) rather than chasing the metric."""
    pool = np.asarray(pool, dtype=float)
    pool = pool[np.isfinite(pool)]
    if len(pool) == 0:
        return 0.0
    q1, q3 = np.percentile(pool, [25, 75])
    return float(np.clip(min_relative_error_shift(pool), q1, q3))


@dataclass
class Predictor:
    target: str
    features: list[str]
    categories: dict[str, list[str]]
    model: Any
    use_roofline: bool
    base_log: float  # log offset where a row has no roofline
    roofline_log_ratio: float  # median log(measured / roofline) of the training rows
    pools: dict[str, list[float]]
    seen: dict[str, list[str]]
    train_ids: list[str]
    n_train: int
    evaluation: dict[str, Any] = field(default_factory=dict)
    # the learner's share (in log) of the answer for a model family never measured, the rest the roofline times
    # ``roofline_log_ratio``; chosen leaving one training family out (``_new_model_pool``). 0 in folders written
    # before it (the roofline alone answered)
    new_model_weight: float = 0.0
    # per pool: a model of how far off a row's prediction tends to be (its log residual's scale, learned from the
    # pool's out-of-fold residuals), so that the interval is wide where the rows like it were hard to predict (an
    # engine or submitter whose results scatter) and narrow where they were not; the pool's residuals divided by
    # their rows' scale (``scaled_pools``) give the quantiles. Empty in folders written before: plain pools answer
    scales: dict[str, Any] = field(default_factory=dict)
    scaled_pools: dict[str, list[float]] = field(default_factory=dict)
    # rows of the input left out of training because they are not complete, real measurements ({reason: count},
    # see ``quality.py``: partial, failed or invalid runs, the simulated backend)
    left_out: dict[str, int] = field(default_factory=dict)
    # per pool drawn from the learner: each residual's stratum, aligned with ``pools[name]`` ({"accelerator": [...],
    # "roofline": ["yes"|"no", ...]}); empty in folders written before (pooled intervals only)
    pool_strata: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @property
    def unit(self) -> str:
        return get_target(self.target).unit

    # ---------------------------------------------------------------------------------------- matrices
    def matrix(self, feats: pd.DataFrame) -> pd.DataFrame:
        X = pd.DataFrame(index=feats.index)
        for f in self.features:
            col = feats[f] if f in feats.columns else pd.Series(np.nan, index=feats.index)
            if f in self.categories:
                X[f] = pd.Categorical(col.astype(object).where(col.notna(), None), categories=self.categories[f])
            else:
                X[f] = pd.to_numeric(col, errors="coerce").astype(float)
        return X

    def offset(self, feats: pd.DataFrame) -> np.ndarray:
        if not self.use_roofline:
            return np.full(len(feats), self.base_log)
        lr = feats["log_roofline"].to_numpy(dtype=float)
        return np.where(np.isfinite(lr), lr, self.base_log)

    # ---------------------------------------------------------------------------------------- predict
    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        """One row per input row, in input order: ``prediction``, ``lower``, ``upper`` (the 90% interval),
        ``unit``, ``basis`` (seen | new_configuration | new_accelerator | new_model), ``interval`` (conformal, or
        none where the pool holds too few out-of-fold residuals to calibrate a 90% interval: ``lower``/``upper`` are
        then NaN and the note says so), ``note`` and ``error`` (a string where the
        row lacks a required feature; its figures are then NaN)."""
        df = df.reset_index(drop=True)
        feats = build_features(df)
        with _OneThread():
            return self.predict_features(feats)

    def predict_features(self, feats: pd.DataFrame) -> pd.DataFrame:
        n = len(feats)
        out = pd.DataFrame({"prediction": np.full(n, np.nan), "lower": np.full(n, np.nan),
                            "upper": np.full(n, np.nan)}, index=feats.index)
        out["unit"] = self.unit
        out["basis"] = None
        out["interval"] = None  # conformal | none (too few out-of-fold residuals to calibrate one)
        out["note"] = None
        out["error"] = None
        if n == 0:
            return out
        errors = self._row_errors(feats)
        log_pred = self.offset(feats) + self.model.predict(self.matrix(feats))
        fam_seen = feats["model_family"].isin(self.seen.get("model_family", []))
        acc_seen = feats["accelerator"].isin(self.seen.get("accelerator", []))
        # a count or precision never measured for the model family on that accelerator is no "seen" row (folders
        # written before this list treat every row of a seen family and accelerator as seen)
        configs = set(self.seen.get("configuration", []))
        keys = configuration_key(feats)
        count_known = pd.to_numeric(feats.get("accelerator_count", pd.Series(np.nan, index=feats.index)),
                                    errors="coerce").notna()
        new_config = (~keys.isin(configs) & count_known) if configs else pd.Series(False, index=feats.index)
        rounds = self.seen.get("round", [])
        new_round = feats["round"].map(lambda r: isinstance(r, str) and bool(rounds) and r not in rounds) \
            if "round" in feats.columns else pd.Series(False, index=feats.index)
        lr = feats["log_roofline"].to_numpy(dtype=float) if "log_roofline" in feats else np.full(n, np.nan)
        X = self.matrix(feats)
        scale = {name: _predict_scale(m, X) for name, m in self.scales.items()}
        widest = self._widest_pool_name()  # (the pools are the fit's: once per call, not per row)
        row_strata = _strata(feats)
        strata_cache: dict[Any, Any] = {}
        can_calibrate = {k for k in self.pools if self._finite(k) >= MIN_CALIBRATION}
        for i, idx in enumerate(feats.index):
            if errors[i]:
                out.at[idx, "error"] = errors[i]
                continue
            note = None
            lp = log_pred[i]
            if not fam_seen.iloc[i] and "model_family" in self.seen and self.use_roofline and np.isfinite(lr[i]):
                basis = "new_model"
                w = self.new_model_weight
                lp = w * log_pred[i] + (1 - w) * (lr[i] + self.roofline_log_ratio)
                note = (f"no measured row for model family {feats['model_family'].iloc[i]!r}: "
                        + ("the roofline prior alone answers (times the training rows' median ratio to it)"
                           if w == 0 else "answered from its size, architecture, precision and task"
                           + ("" if w == 1 else " blended with the roofline prior"))
                        + (" (its layers and widths are not known: those of a dense decoder of its size)"
                           if bool(feats["shape_guessed"].iloc[i]) else "")
                        + ", with a wide interval")
            elif not acc_seen.iloc[i] and "accelerator" in self.seen:
                basis = "new_accelerator"
                note = (f"no measured row on {feats['accelerator'].iloc[i]!r}: "
                        + ("extrapolated from its spec-table figures" if feats["acc_known"].iloc[i]
                           else "not in the spec table either, so nothing of it is known"))
            elif new_config.iloc[i]:
                basis = "new_configuration"
                note = _config_note(keys.iloc[i], sorted(configs), feats.iloc[i])
            else:
                basis = "seen"
            if self.use_roofline and not np.isfinite(lr[i]):
                why = ("the accelerator is not in the spec table" if not feats["acc_known"].iloc[i]
                       else "the model size is unknown")
                note = (note + "; " if note else "") + f"no roofline prior ({why}): the learner alone answers"
            # a pool too small to calibrate a 90% interval is left for the widest one, as an empty pool is (more
            # rows in a row's own pool never take its interval away)
            pool_name = basis if basis in can_calibrate else widest
            pool = self._row_pool(pool_name, scale, i)
            q = _conformal_quantiles(pool)
            # the roofline-only answer for a model family never measured stays the prior's median estimate: its pool
            # holds a handful of families (each one draw), too few to place a point by
            shift = _point_shift(pool) if POINT_SHIFT and basis != "new_model" and q is not None else 0.0
            if q is None:
                # no interval rather than a made-up one: too few out-of-fold residuals to calibrate a 90% interval
                out.at[idx, "prediction"] = math.exp(lp)
                out.at[idx, "basis"] = basis
                out.at[idx, "interval"] = "none"
                out.at[idx, "note"] = (note + "; " if note else "") + uncalibrated_note(len(pool))
                continue
            q_lo, q_hi = q
            if basis != "seen" and self.pools.get("seen"):
                # knowing less never narrows: at least the interval of a row like it on a measured accelerator
                s = _conformal_quantiles(self._row_pool("seen", scale, i))
                if s is not None:
                    q_lo, q_hi = min(q_lo, s[0]), max(q_hi, s[1])
            if new_round.iloc[i]:
                # a round the training rows do not have: software and submissions move between rounds, so the
                # interval is at least as wide as the errors of predicting one training round from the others (the
                # widest pool when the training rows hold one round, which cannot measure that drift)
                r_pool = self._row_pool("new_round" if "new_round" in self.pools else widest,
                                        scale, i)
                r_lo, r_hi = _conformal_quantiles(r_pool) or (q_lo, q_hi)
                # the point moves with a measured drift pool only: a stand-in widens the interval, not the point
                if r_hi - r_lo > q_hi - q_lo and POINT_SHIFT and basis != "new_model" and "new_round" in self.pools:
                    shift = _point_shift(r_pool)
                q_lo, q_hi = min(q_lo, r_lo), max(q_hi, r_hi)
                note = (note + "; " if note else "") + (f"round {feats['round'].iloc[i]} is not in the training "
                                                        "rows: the interval covers the drift between rounds")
            # per-stratum calibration: never narrower than the interval of the residuals of rows like it (its
            # accelerator; for an accelerator never measured, the rows without a roofline prior when it has none)
            if basis == "new_accelerator" or basis == "new_model":
                stratum = ("roofline", "no") if row_strata["roofline"][i] == "no" else None
            else:
                stratum = ("accelerator", row_strata["accelerator"][i])
            sq = self._stratum_quantiles(pool_name, stratum, strata_cache) if stratum else None
            if sq is not None and (sq[0] < q_lo or sq[1] > q_hi):
                q_lo, q_hi = min(q_lo, sq[0]), max(q_hi, sq[1])
                what = (f"runs on {stratum[1]}" if stratum[0] == "accelerator" else "runs with no roofline prior")
                note = (note + "; " if note else "") + (f"interval widened to the held-out errors of {what} "
                                                        "(they scatter more than the pool's)")
            # the point: the figure with the least expected relative error under the pool's residuals (the learner's
            # median estimate moved by ``shift``); the interval is the pool's quantiles around the median estimate
            out.at[idx, "prediction"] = math.exp(lp + shift)
            out.at[idx, "lower"] = math.exp(lp + q_lo)
            out.at[idx, "upper"] = math.exp(lp + q_hi)
            out.at[idx, "basis"] = basis
            out.at[idx, "interval"] = "conformal"
            out.at[idx, "note"] = note
        return out

    def _stratum_quantiles(self, name: str | None, stratum: tuple[str, str],
                           cache: dict[Any, Any] | None = None) -> tuple[float, float] | None:
        """Conformal quantiles of the pool's residuals of one stratum (column, value) where the pooled interval
        covers significantly fewer than 90% of them; None where it covers them, where the stratum holds fewer than
        ``MIN_CALIBRATION`` residuals, or where the folder predates strata."""
        from scipy.stats import binom

        key = (name, *stratum)
        if cache is not None and key in cache:
            return cache[key]
        out = None
        labels = (self.pool_strata.get(name or "") or {}).get(stratum[0])
        res = np.asarray(self.pools.get(name or "") or [], dtype=float)
        if labels and len(labels) == len(res):
            mine = np.asarray(labels) == stratum[1]
            # the residuals as the pooled interval sees them (divided by their rows' scale where it has a scale
            # model): how many of the stratum's fall inside it
            z = np.asarray(self.scaled_pools.get(name or "") or [], dtype=float)
            z = z if len(z) == len(res) else res
            q = _conformal_quantiles(z)
            n = int(mine.sum())
            if q is not None and n >= MIN_CALIBRATION:
                k = int(((z[mine] >= q[0]) & (z[mine] <= q[1])).sum())
                if binom.cdf(k, n, LEVEL) < STRATUM_P:
                    out = _conformal_quantiles(res[mine])
        if cache is not None:
            cache[key] = out
        return out

    def calibration_residuals(self) -> int:
        """How many out-of-fold residuals the widest-reaching pool a row of seen configurations uses holds."""
        name = "seen" if self._finite("seen") >= MIN_CALIBRATION else self._widest_pool_name()
        return self._finite(name)

    def _finite(self, name: str | None) -> int:
        """Residuals of a pool that count (finite ones: :func:`_conformal_quantiles` drops the rest)."""
        if name is None:
            return 0
        return int(np.isfinite(np.asarray(self.pools.get(name) or [], dtype=float)).sum())

    def _widest_pool_name(self) -> str | None:
        names = [k for k in self.pools if self._finite(k) >= MIN_CALIBRATION]  # the widest that can calibrate
        names = names or [k for k, p in self.pools.items() if p]
        if not names:
            return None
        return max(names, key=lambda k: float(np.subtract(*np.nanpercentile(self.pools[k], [95, 5]))))

    def _row_pool(self, name: str | None, scale: dict[str, np.ndarray], i: int) -> np.ndarray:
        """The residuals a row's interval and point come from: the pool's scaled residuals times the row's scale
        where the pool has a scale model, else the pool itself."""
        if name is None:
            return np.asarray([])
        if name in scale and self.scaled_pools.get(name):
            return np.asarray(self.scaled_pools[name]) * scale[name][i]
        return np.asarray(self.pools.get(name) or [])

    def _row_errors(self, feats: pd.DataFrame) -> list[str | None]:
        required = list(REQUIRED.get(self.target, ()))
        out: list[str | None] = []
        for _, row in feats.iterrows():
            missing = [c for c in required if row.get(c) is None or (isinstance(row.get(c), float) and
                                                                       math.isnan(row.get(c)))]
            present = [f for f in self.features if f in feats.columns and pd.notna(row.get(f))]
            if not present:
                missing.append("every feature")
            # counts and sizes no system can have: an answer for them would be a figure for nothing
            bad = [f"{name} {row.get(col):g}" for col, name in POSITIVE.items()
                   if isinstance(row.get(col), int | float) and pd.notna(row.get(col)) and row.get(col) <= 0]
            out.append(f"missing required feature(s): {', '.join(missing)}" if missing
                       else f"{', '.join(bad)}: must be more than 0" if bad else None)
        return out

    # ---------------------------------------------------------------------------------------- save / load
    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "model.pkl", "wb") as f:
            pickle.dump(self.model, f)
        if self.scales:
            with open(out / "scales.pkl", "wb") as f:
                pickle.dump(self.scales, f)
        meta = {
            "schema_version": SCHEMA_VERSION, "kind": "benchmint-predictor", "target": self.target,
            "unit": self.unit, "features": self.features, "categories": self.categories,
            "use_roofline": self.use_roofline, "base_log": self.base_log,
            "roofline_log_ratio": self.roofline_log_ratio, "new_model_weight": self.new_model_weight,
            "pools": self.pools, "seen": self.seen,
            "scaled_pools": self.scaled_pools,
            "n_train": self.n_train, "interval_level": LEVEL, "evaluation": self.evaluation,
            "rows_left_out": self.left_out, "pool_strata": self.pool_strata,
        }
        write_json(out / "predictor.json", meta)
        write_json(out / "train_ids.json", {"schema_version": SCHEMA_VERSION, "ids": self.train_ids})
        return out


def load_predictor(model_dir: str | Path) -> Predictor:
    d = Path(model_dir)
    if not (d / "predictor.json").is_file() or not (d / "model.pkl").is_file():
        raise UserError(f"{d}: not a model folder (no predictor.json / model.pkl); make one with "
                        "`benchmint learn fit --out DIR`")
    meta = read_json(d / "predictor.json")
    if str(meta.get("schema_version", "")).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise UserError(f"{d}: predictor schema {meta.get('schema_version')!r}, this benchmint reads "
                        f"{SCHEMA_VERSION}; refit it with `benchmint learn fit`")
    with open(d / "model.pkl", "rb") as f:
        model = pickle.load(f)  # noqa: S301 - a model folder this tool wrote
    ids_path = d / "train_ids.json"
    ids = read_json(ids_path).get("ids", []) if ids_path.is_file() else []
    scales = {}
    if (d / "scales.pkl").is_file():
        with open(d / "scales.pkl", "rb") as f:
            scales = pickle.load(f)  # noqa: S301 - a model folder this tool wrote
    return Predictor(
        target=meta["target"], features=list(meta["features"]), categories=dict(meta["categories"]), model=model,
        use_roofline=bool(meta["use_roofline"]), base_log=float(meta["base_log"]),
        roofline_log_ratio=float(meta["roofline_log_ratio"]), pools={k: list(v) for k, v in meta["pools"].items()},
        seen={k: list(v) for k, v in meta["seen"].items()}, train_ids=list(ids), n_train=int(meta["n_train"]),
        evaluation=meta.get("evaluation") or {}, scales=scales,
        scaled_pools={k: list(v) for k, v in (meta.get("scaled_pools") or {}).items()},
        new_model_weight=float(meta.get("new_model_weight", 0.0)),
        left_out={str(k): int(v) for k, v in (meta.get("rows_left_out") or {}).items()},
        pool_strata={k: {c: list(v) for c, v in d.items()} for k, d in (meta.get("pool_strata") or {}).items()},
    )


# -------------------------------------------------------------------------------------------- fitting
def training_frame(df: pd.DataFrame, target: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Feature rows and log target values of the rows that have the target (callers drop the runs that are not
    complete, real measurements first: :func:`benchmint.learn.quality.usable_rows`)."""
    get_target(target)
    df = df.reset_index(drop=True)
    feats = build_features(df)
    y = target_values(df, target)
    keep = y.notna().to_numpy()
    return feats[keep].reset_index(drop=True), np.log(y[keep].to_numpy(dtype=float))


def fit_predictor(df: pd.DataFrame, target: str, features: list[str] | None = None, seed: int = 0) -> Predictor:
    """A predictor of ``target`` from rows in the flattened ``runs`` layout or the Open MLPerf layout. Runs that
    are not complete, real measurements (partial, failed or invalid; the simulated backend) are left out, and
    counted in ``left_out``."""
    from benchmint.learn.quality import usable_rows

    df, left_out = usable_rows(df, target=target)  # counted among the training candidates: rows with the target
    feats, ylog = training_frame(df, target)
    with _OneThread():
        pred = fit_features(feats, ylog, target, features, seed)
    pred.left_out = left_out
    return pred


def _check_rows(n: int, target: str) -> None:
    if n < MIN_ROWS:
        raise UserError(f"target {target!r}: {n} row(s) with a value, a predictor needs at least {MIN_ROWS}; "
                        "measure or import more runs (or choose another --target / --where)")


def fit_features(feats: pd.DataFrame, ylog: np.ndarray, target: str, features: list[str] | None = None,
                 seed: int = 0, inner_cv: bool = True, pools: tuple[str, ...] = POOLS) -> Predictor:
    """Fit on feature rows (``build_features``) and log target values; ``inner_cv`` computes the conformal
    residual pools named in ``pools`` (off: a point predictor with no interval pools)."""
    _check_rows(len(feats), target)
    if features is None:
        features = [f for f in DEFAULT_FEATURES if f in feats.columns and feats[f].notna().any()]
    else:
        unknown = [f for f in features if f not in feats.columns]
        if unknown:
            raise UserError(f"unknown feature(s) {', '.join(unknown)}; known: {', '.join(feats.columns)}")
    use_roofline = target in ROOFLINE_TARGETS and feats["log_roofline"].notna().mean() > 0.5
    lr = feats["log_roofline"].to_numpy(dtype=float)
    has = np.isfinite(lr)
    ratio = float(np.median(ylog[has] - lr[has])) if has.any() else 0.0
    base = float(np.median(ylog[~has])) if (~has).any() else float(np.median(ylog))
    categories = {f: sorted({str(v) for v in feats[f].dropna()}) for f in features if f in CATEGORICAL}
    pred = Predictor(target=target, features=list(features), categories=categories, model=None,
                     use_roofline=use_roofline, base_log=base if use_roofline else float(np.median(ylog)),
                     roofline_log_ratio=ratio, pools={}, seen={}, train_ids=[str(i) for i in feats["id"]],
                     n_train=len(feats), new_model_weight=NEW_MODEL_WEIGHT)
    pred.model = _learner(seed).fit(pred.matrix(feats), ylog - pred.offset(feats))
    pred.seen = {c: sorted({str(v) for v in feats[c].dropna()}) for c in ("accelerator", "model_family", "round")
                 if c in feats.columns}
    pred.seen["configuration"] = sorted(set(configuration_key(feats)))
    if inner_cv:
        aligned = residual_pools(feats, ylog, pred, seed, pools, aligned=True)
        if "new_model" in aligned:
            pred.new_model_weight, aligned["new_model"] = aligned["new_model"]
        pred.pools = {k: [float(r) for r in v if np.isfinite(r)] for k, v in aligned.items()}
        strata = _strata(feats)
        pred.pool_strata = {k: {c: [str(x) for x in col[np.isfinite(v)]] for c, col in strata.items()}
                            for k, v in aligned.items() if isinstance(v, np.ndarray)}
        X = pred.matrix(feats)
        for name, column in SCALED_POOLS.items():
            res = aligned.get(name)
            if res is None:
                continue
            ok = np.isfinite(res)
            model = _fit_scale(X[ok], res[ok], seed)
            if model is not None:
                pred.scales[name] = model
                # held out as the pool's residuals were: a scale model must not know the accelerator (round) it is
                # asked about when the pool stands for accelerators (rounds) never seen
                groups = (duplicate_groups(feats[ok]) if column is None else
                          configuration_key(feats[ok]) if column == CONFIGURATION else as_text(feats.loc[ok, column]))
                pred.scaled_pools[name] = [float(r) for r in res[ok] / _cross_scale(
                    X[ok], res[ok], groups.to_numpy().astype(str), seed)]
    return pred


# pool -> the column its residuals held out (None: near-duplicate groups); the new_model pool is the roofline's
# alone, with no features to scale by
CONFIGURATION = "<configuration>"  # the pool's residuals held out whole configurations (``configuration_key``)
SCALED_POOLS = {"seen": None, "new_configuration": CONFIGURATION, "new_accelerator": "accelerator",
                "new_round": "round"}
FAMILY_QUANTILES = np.linspace(0.025, 0.975, 20)
SCALE_RANGE = 4.0  # a row's scale stays within this factor of the median row's
MIN_SCALE_ROWS = 60  # below this many residuals, one scale for all rows (the plain pool)


def _fit_scale(X: pd.DataFrame, res: np.ndarray, seed: int):
    """A small, regularized model of log |residual| on the features (the row's expected error scale), or None with
    too few residuals. Normalized conformal: its exp, clipped to a quarter..four times its median (a row the scale
    model finds unusual gets a wide interval, not an absurd one), divides the residuals."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    if len(res) < MIN_SCALE_ROWS:
        return None
    floor = max(float(np.median(np.abs(res))) * 0.1, 1e-3)
    model = HistGradientBoostingRegressor(max_iter=60, learning_rate=0.1, max_depth=3, max_leaf_nodes=8,
                                          min_samples_leaf=20, l2_regularization=1.0,
                                          categorical_features="from_dtype", random_state=seed)
    cols = [c for c in X.columns if X[c].notna().any()]  # a column with no value here tells the model nothing
    try:
        model.fit(X[cols], np.log(np.abs(res) + floor))
    except ValueError:  # a feature the rows leave degenerate (the binner cannot cut it): one scale for all rows
        return None
    pred = model.predict(X[cols])
    return {"model": model, "cols": cols, "lo": float(np.median(pred) - math.log(SCALE_RANGE)),
            "hi": float(np.median(pred) + math.log(SCALE_RANGE))}


def _cross_scale(X: pd.DataFrame, res: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """Each residual's scale from a scale model fit without its near-duplicate group (cross-fitting): dividing
    residuals by scales fit on themselves would make them look smaller than a new row's and the interval too
    narrow."""
    from sklearn.model_selection import GroupKFold

    out = np.ones(len(res))
    n = len(np.unique(groups))
    if n < 2:
        return out
    for tr, te in GroupKFold(n_splits=min(5, n)).split(X, res, groups):
        m = _fit_scale(X.iloc[tr], res[tr], seed)
        out[te] = _predict_scale(m, X.iloc[te]) if m is not None else float(np.median(np.abs(res[tr])) or 1.0)
    return out


def uncalibrated_note(n: int) -> str:
    return (f"no 90% interval: not enough runs to calibrate one ({n} out-of-fold residual(s); a 90% conformal "
            f"interval needs at least {MIN_CALIBRATION} from different configurations)")


def _predict_scale(scale: dict[str, Any], X: pd.DataFrame) -> np.ndarray:
    return np.exp(np.clip(scale["model"].predict(X[scale.get("cols", list(X.columns))]), scale["lo"], scale["hi"]))


def _oof(feats: pd.DataFrame, ylog: np.ndarray, groups: np.ndarray, template: Predictor, n_splits: int,
         seed: int) -> np.ndarray:
    """Out-of-fold log residuals with whole groups held out."""
    from sklearn.model_selection import GroupKFold

    res = np.full(len(ylog), np.nan)
    uniq = np.unique(groups)
    if len(uniq) < 2:
        return res
    try:
        splitter = GroupKFold(n_splits=min(n_splits, len(uniq)), shuffle=True, random_state=seed)
    except TypeError:  # scikit-learn < 1.6: no shuffle
        splitter = GroupKFold(n_splits=min(n_splits, len(uniq)))
    for tr, te in splitter.split(feats, ylog, groups):
        sub = Predictor(**{**template.__dict__, "model": None, "pools": {}})
        sub.model = _learner(seed).fit(sub.matrix(feats.iloc[tr]), ylog[tr] - sub.offset(feats.iloc[tr]))
        res[te] = ylog[te] - (sub.offset(feats.iloc[te]) + sub.model.predict(sub.matrix(feats.iloc[te])))
    return res


NEW_MODEL_WEIGHTS = np.linspace(0.0, 1.0, 5)
NEW_MODEL_WEIGHT = 1.0  # without the leave-one-family-out choice (no interval pools, fewer than 3 families)


def _new_model_pool(feats: pd.DataFrame, ylog: np.ndarray, fam: np.ndarray, template: Predictor,
                    seed: int) -> tuple[float, list[float]]:
    """(weight, residuals) for rows of a model family never measured: each training family in turn is held out
    and predicted by the learner fit on the others (the family goes down the trees' missing-value branches; its
    size, architecture, precision, task and the roofline still reach the learner) and by the roofline times the
    others' median ratio to it. The weight of the learner in the log blend is the one of ``NEW_MODEL_WEIGHTS`` with
    the least mean absolute log error, each family counting once whatever its row count (a new family is one
    draw); the residuals are each family's deviations at fixed quantiles (a family with hundreds of rows would
    otherwise stand for every new one)."""
    lr = feats["log_roofline"].to_numpy(dtype=float)
    ratio = ylog - lr
    per_family = []
    for f in np.unique(fam):
        te, tr = fam == f, (fam != f)
        ok_tr, ok_te = tr & np.isfinite(ratio), te & np.isfinite(ratio)
        if not ok_tr.any() or not ok_te.any() or tr.sum() < MIN_ROWS:
            continue
        sub = Predictor(**{**template.__dict__, "model": None, "pools": {}})
        ftr = feats[tr]
        sub.model = _learner(seed).fit(sub.matrix(ftr), ylog[tr] - sub.offset(ftr))
        fte = feats[ok_te]
        learned = ylog[ok_te] - (sub.offset(fte) + sub.model.predict(sub.matrix(fte)))
        prior = ratio[ok_te] - np.median(ratio[ok_tr])
        per_family.append((learned, prior))
    if not per_family:
        return NEW_MODEL_WEIGHT, []
    cost = [np.mean([np.mean(np.abs(w * a + (1 - w) * b)) for a, b in per_family]) for w in NEW_MODEL_WEIGHTS]
    w = float(NEW_MODEL_WEIGHTS[int(np.argmin(cost))])
    res = [float(r) for a, b in per_family for r in np.quantile(w * a + (1 - w) * b, FAMILY_QUANTILES)]
    return w, res


def residual_pools(feats: pd.DataFrame, ylog: np.ndarray, template: Predictor, seed: int = 0,
                   which: tuple[str, ...] = POOLS, aligned: bool = False) -> dict[str, Any]:
    """Out-of-fold log residuals per pool: lists of the finite ones, or (``aligned``) arrays with one value per
    row (NaN where none) for the pools that come from the learner (``new_model``'s stay a list)."""
    pools: dict[str, Any] = {}
    if "seen" in which:
        dup = duplicate_groups(feats).to_numpy().astype(str)
        pools["seen"] = _oof(feats, ylog, dup, template, 4, seed)
    if "new_configuration" in which:
        cfg = configuration_key(feats).to_numpy().astype(str)
        if len(np.unique(cfg)) >= 3:
            pools["new_configuration"] = _oof(feats, ylog, cfg, template, 5, seed)
    acc = as_text(feats["accelerator"]).to_numpy().astype(str)
    if "new_accelerator" in which and len(np.unique(acc)) >= 3:
        pools["new_accelerator"] = _oof(feats, ylog, acc, template, 5, seed)
    if "new_model" in which and template.use_roofline:
        fam = as_text(feats["model_family"]).to_numpy().astype(str)
        if len(np.unique(fam)) >= 3:
            weight, res = _new_model_pool(feats, ylog, fam, template, seed)
            pools["new_model"] = (weight, res) if aligned else res
    rounds = as_text(feats["round"]).to_numpy().astype(str) if "round" in feats.columns else None
    if "new_round" in which and rounds is not None and len(np.unique(rounds[rounds != "none"])) >= 2:
        pools["new_round"] = _oof(feats, ylog, rounds, template, 5, seed)
    if not aligned:
        pools = {k: [float(r) for r in v if np.isfinite(r)] if isinstance(v, np.ndarray) else v
                 for k, v in pools.items()}
    return pools

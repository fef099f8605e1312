"""The throughput predictor's physics and calibration: the math precision of MLPerf rows, the point that minimizes
the expected relative error, intervals scaled per row (and saved with the model), and intervals that widen for a
round the training rows lack."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

OPEN_MLPERF = Path(__file__).parent / "data" / "openmlperf" / "data.parquet"
TARGET = "tokens_per_s_per_accelerator"


@pytest.fixture(scope="module")
def two_rounds() -> pd.DataFrame:
    """180 rows of both rounds on four accelerators: enough for every pool (the round pool included)."""
    from benchmint.learn.specs import normalize_accelerator

    rows = pd.read_parquet(OPEN_MLPERF)
    acc = rows["system.accelerator.name"].map(normalize_accelerator)
    keep = acc.isin(["NVIDIA H100 SXM 80GB", "NVIDIA H200 SXM 141GB", "NVIDIA L40S", "NVIDIA GH200 144GB"])
    return rows[keep].sample(180, random_state=1).reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted(two_rounds):
    from benchmint.learn.predictor import fit_predictor

    return fit_predictor(two_rounds, TARGET)


def test_mlperf_rows_stated_16_bit_run_at_fp8_where_the_accelerator_has_it():
    from benchmint.learn.features import build_features

    df = pd.DataFrame({"model.name": ["llama2-70b-99"] * 3, "model.mlperf_name": ["llama2-70b-99"] * 3,
                       "system.accelerator.name": ["NVIDIA H100-SXM-80GB", "NVIDIA H100-SXM-80GB",
                                                   "NVIDIA Jetson AGX Orin 64G"],
                       "system.accelerator.total_count": [8, 8, 1], "model.weight_data_types": ["fp16"] * 3,
                       "submission.division": ["closed", None, "closed"]})
    f = build_features(df)
    # a submission may quantize within its accuracy target; a row with no division (an own run) keeps its dtype
    assert list(f["math_precision"][:2]) == ["fp8", "fp16"]
    assert f["roofline_tokens_per_s"][0] > 1.5 * f["roofline_tokens_per_s"][1]
    # Jetson AGX Orin has no fp8 math, and its tensor-core FLOP/s now bound the roofline (they were missing)
    assert f["math_precision"][2] != "fp8" and f["acc_peak_tflops"][2] > 0
    assert math.isfinite(f["roof_decode_intensity"][2])
    # a quantization the checkpoint's name states is what ran, even where it leaves little room for a KV cache
    one = build_features(pd.DataFrame({"model.name": ["Llama-3.3-70B-Instruct-FP8-dynamic", "llama2-70b-99"],
                                       "system.accelerator.name": ["NVIDIA H100-SXM-80GB"] * 2,
                                       "system.accelerator.total_count": [1, 1], "submission.division": ["open"] * 2,
                                       "model.weight_data_types": ["fp8", "fp16"]}))
    assert list(one["math_precision"]) == ["fp8", "int4"] and one["roof_batch"][0] < one["roof_batch"][1] / 10


def test_the_point_minimizes_the_expected_relative_error():
    from benchmint.learn.predictor import _point_shift, min_relative_error_shift

    rng = np.random.default_rng(0)
    narrow = rng.normal(0, 0.02, 2000)
    assert abs(min_relative_error_shift(narrow)) < 0.01
    # residuals log(measured / predicted) with a long tail of over-predictions: the point moves down
    skewed = np.concatenate([rng.normal(0, 0.05, 900), rng.normal(-1.5, 0.3, 100)])
    c = min_relative_error_shift(skewed)
    grid = np.linspace(-1, 0.5, 301)
    mape = [np.mean(np.abs(np.exp(g - skewed) - 1)) for g in grid]
    assert c < 0 and np.mean(np.abs(np.exp(c - skewed) - 1)) <= min(mape) + 1e-3
    # a pool so wide that the least relative error is near zero keeps the point inside its middle half
    wide = rng.normal(0, 2.0, 2000)
    assert _point_shift(wide) >= np.percentile(wide, 25) - 1e-9


def test_intervals_are_scaled_per_row_and_survive_save_and_load(fitted, two_rounds, tmp_path):
    from benchmint.learn.predictor import load_predictor

    assert "seen" in fitted.scales and len(fitted.scaled_pools["seen"]) == len(fitted.pools["seen"])
    out = fitted.predict(two_rounds.head(30))
    width = np.log(out["upper"] / out["lower"])
    assert width.nunique() > 3  # not one width for every row
    assert ((out["lower"] <= out["prediction"]) & (out["prediction"] <= out["upper"])).all()
    fitted.save(tmp_path / "m")
    again = load_predictor(tmp_path / "m").predict(two_rounds.head(30))
    assert np.allclose(again[["prediction", "lower", "upper"]], out[["prediction", "lower", "upper"]])


def test_a_round_the_training_rows_lack_widens_the_interval(fitted, two_rounds):
    assert "new_round" in fitted.pools and set(fitted.seen["round"]) == {"4.1", "5.0"}
    row = two_rounds.head(1).copy()
    newer = row.copy()
    newer["benchmark.version"] = "5.1"
    a, b = fitted.predict(row).iloc[0], fitted.predict(newer).iloc[0]
    assert b["basis"] == a["basis"] and "round 5.1" in b["note"]
    assert b["upper"] / b["lower"] >= a["upper"] / a["lower"]
    assert b["lower"] <= a["lower"] and b["upper"] >= a["upper"]


def test_official_rows_and_own_runs_without_a_round_fit_together(two_rounds):
    """The demo's mix: own runs (no round, a concurrency only they record) beside official results; the scale
    models' folds that hold out the round-less rows see that column empty."""
    from benchmint.learn.predictor import fit_predictor

    own = pd.DataFrame({"workload__model_name": ["gptj-6b"] * 3, "system__accelerator__name": ["NVIDIA L40S"] * 3,
                        "config__concurrency": [1.0, 4.0, 16.0],
                        "metrics__throughput__output_tokens_per_s": [50.0, 180.0, 600.0]})
    p = fit_predictor(pd.concat([two_rounds, own], ignore_index=True), TARGET)
    assert "new_round" in p.scales or "new_round" in p.pools
    out = p.predict(own)
    assert out["error"].isna().all() and (out["basis"] == "seen").all() and (out["prediction"] > 0).all()


def test_a_model_family_never_measured_is_answered_by_the_learner_with_a_wide_interval(fitted, two_rounds, tmp_path):
    from benchmint.learn.predictor import NEW_MODEL_WEIGHTS, load_predictor

    assert fitted.new_model_weight in set(NEW_MODEL_WEIGHTS) and fitted.pools["new_model"]
    row = two_rounds.head(1).copy()
    new = row.copy()
    new["model.name"] = new["model.mlperf_name"] = "Qwen2.5-72B-Instruct"  # a family no training row has
    new["model.number_of_parameters"] = 72.7
    assert "qwen" not in " ".join(fitted.seen["model_family"]).lower()
    a, b = fitted.predict(row).iloc[0], fitted.predict(new).iloc[0]
    assert a["basis"] == "seen" and b["basis"] == "new_model" and "no measured row for model family" in b["note"]
    assert b["lower"] <= b["prediction"] <= b["upper"]
    assert b["upper"] / b["lower"] > 1.5 * (a["upper"] / a["lower"])  # knowing less widens it, a lot
    fitted.save(tmp_path / "m")
    again = load_predictor(tmp_path / "m")
    assert again.new_model_weight == fitted.new_model_weight
    assert again.predict(new).iloc[0]["prediction"] == pytest.approx(b["prediction"])


def test_a_column_only_a_handful_of_rows_set_does_not_enter_the_power_law():
    from benchmint.learn.predictor import MIN_SUPPORT, LogLinearPlusTrees

    rng = np.random.default_rng(0)
    n = 200
    X = pd.DataFrame({"size": rng.uniform(1, 100, n), "experts": np.nan})
    y = np.log(X["size"].to_numpy()) + rng.normal(0, 0.05, n)
    X.loc[0, "experts"] = 256.0  # one mixture-of-experts row among dense ones, far below the rest
    y[0] -= 3.0
    m = LogLinearPlusTrees().fit(X, y)
    assert "experts" not in m.num_ and not m.miss_cols_.any()
    moe = pd.DataFrame({"size": [50.0, 50.0], "experts": [8.0, np.nan]})
    p = m.predict(moe)
    assert p[0] == pytest.approx(p[1])  # a later MoE model is not given that one row's level
    X.loc[: MIN_SUPPORT * 2, "experts"] = 8.0  # enough rows set it: it may be learned
    assert "experts" in LogLinearPlusTrees().fit(X, y).num_

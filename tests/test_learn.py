"""The learn layer: spec-table normalizer, evaluation folds, predictor round trip, predict rows with a missing
feature, recommend, and the CLI's bad-input lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

OPEN_MLPERF = Path(__file__).parent / "data" / "openmlperf" / "data.parquet"
TARGET = "tokens_per_s_per_accelerator"


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return pd.read_parquet(OPEN_MLPERF)


@pytest.fixture(scope="module")
def small(rows) -> pd.DataFrame:
    """160 rows of 5 accelerators and 4+ model families: enough for every interval pool, fast to fit."""
    from benchmint.learn.specs import normalize_accelerator

    acc = rows["system.accelerator.name"].map(normalize_accelerator)
    keep = acc.isin(["NVIDIA H100 SXM 80GB", "NVIDIA H200 SXM 141GB", "NVIDIA B200 180GB", "AMD Instinct MI300X",
                     "NVIDIA L40S"]) & (rows["benchmark.version"] == "5.0")
    return rows[keep].sample(160, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def model_dir(small, tmp_path_factory) -> Path:
    from benchmint.learn.predictor import fit_predictor

    out = tmp_path_factory.mktemp("model")
    fit_predictor(small, TARGET).save(out)
    return out


def test_every_open_mlperf_accelerator_maps_to_a_row_of_the_spec_table(rows):
    from benchmint.learn.specs import normalize_accelerator, spec_table

    names = sorted(rows["system.accelerator.name"].unique())
    unmatched = [n for n in names if normalize_accelerator(n) is None]
    assert unmatched == [] and len(names) >= 20
    # look-alike names go to their own rows
    assert normalize_accelerator("NVIDIA H100-NVL-94GB") == "NVIDIA H100 NVL 94GB"
    assert normalize_accelerator("NVIDIA H100-SXM-80GB") == "NVIDIA H100 SXM 80GB"
    assert normalize_accelerator("NVIDIA GH200 Grace Hopper Superchip 96GB") == "NVIDIA GH200 96GB"
    assert normalize_accelerator("NVIDIA GB200") == "NVIDIA GB200"
    assert normalize_accelerator("AMD MI300X-NPS1-SPX-192GB-750W") == "AMD Instinct MI300X"
    assert normalize_accelerator("a toaster") is None
    for acc in spec_table():  # every row answers to its own name and has a source
        assert normalize_accelerator(acc.name) == acc.name and acc.source.startswith("http")
        assert acc.specs["memory_bw_gbs"], acc.name
    current = {"NVIDIA B300 288GB", "NVIDIA GB300", "AMD Instinct MI355X", "Intel Gaudi 3", "Google TPU v7 Ironwood",
               "NVIDIA RTX PRO 6000 Blackwell", "NVIDIA L4"}
    assert current <= {a.name for a in spec_table()}


def test_features_join_specs_and_roofline(rows):
    from benchmint.learn.features import build_features

    f = build_features(rows.head(50))
    assert f["acc_mem_bw_gbs"].notna().all() and (f["roofline_tokens_per_s"] > 0).all()
    assert set(f["model_family"]) <= {"llama2-70b", "gptj-6b", "mixtral-8x7b", "llama3.1-405b", "llama3.1-70b"}


def test_random_folds_keep_near_duplicates_together(rows):
    from benchmint.learn.evaluate import folds
    from benchmint.learn.features import build_features, duplicate_groups

    f = build_features(rows)
    groups = duplicate_groups(f).to_numpy()
    seen: dict[str, int] = {}
    for k, (_, te) in enumerate(folds(f, "random")):
        for g in set(groups[te]):
            assert seen.setdefault(g, k) == k, f"near-duplicate group {g} split across folds"
    # the 99% and 99.9% variants and Server/Offline of one submission are one group
    key = ["benchmark.version", "submission.organization", "system.name"]
    one = rows[rows["model.name"].isin(["llama2-70b-99", "llama2-70b-99.9"])].groupby(key).filter(
        lambda d: d["submission.scenario"].nunique() == 2 and d["model.name"].nunique() == 2)
    assert len(one) >= 4
    first = one.groupby(key).head(4).index[:4]
    assert len(set(groups[first])) == 1
    # grouped splits hold out whole accelerators
    for tr, te in folds(f, "accelerator"):
        assert not set(f["accelerator"].iloc[tr]) & set(f["accelerator"].iloc[te])


def test_fit_save_load_predict_round_trip(small, model_dir):
    from benchmint.learn.predictor import load_predictor

    p = load_predictor(model_dir)
    out = p.predict(small.head(20))
    assert list(out.columns[:3]) == ["prediction", "lower", "upper"] and len(out) == 20
    assert (out["lower"] <= out["prediction"]).all() and (out["prediction"] <= out["upper"]).all()
    y = small.head(20)["metrics.result_per_accelerator"].to_numpy()
    assert np.median(np.abs(out["prediction"] - y) / y) < 0.3  # rows it was fit on
    meta = json.loads((model_dir / "predictor.json").read_text())
    assert meta["target"] == TARGET and meta["features"] and meta["schema_version"]
    assert len(json.loads((model_dir / "train_ids.json").read_text())["ids"]) == len(small)


def test_a_row_no_system_can_have_gets_an_error_not_a_figure(small, model_dir):
    from benchmint.learn.api import predict_rows

    df = pd.concat([small.head(1)] * 3, ignore_index=True)
    df.loc[1, "system.accelerator.total_count"] = -4  # read 2377 tok/s, "new_configuration", with an interval
    df.loc[2, "system.accelerator.total_count"] = 0
    r = predict_rows(model_dir, df)["rows"]
    assert r[0]["error"] is None and r[0]["prediction"] > 0
    assert [x["prediction"] for x in r[1:]] == [None, None]
    assert "accelerator count -4: must be more than 0" in r[1]["error"] and "count 0" in r[2]["error"]


def test_predict_rows_missing_a_feature_get_an_error_in_their_row(small, model_dir):
    from benchmint.learn.api import predict_rows

    df = pd.concat([small.head(4), small.iloc[[2]]], ignore_index=True)
    df.loc[1, "model.name"] = None
    df.loc[2, "system.accelerator.name"] = "AMD Instinct MI355X"  # never measured: extrapolated, with a note
    res = predict_rows(model_dir, df)
    r = res["rows"]
    assert [x["row"] for x in r] == [0, 1, 2, 3, 4]
    assert r[1]["prediction"] is None and "model_family" in r[1]["error"]
    assert r[0]["error"] is None and r[0]["prediction"] > 0 and r[0]["unit"] == "tokens/s per accelerator"
    assert r[2]["basis"] == "new_accelerator" and "MI355X" in r[2]["note"] and r[4]["basis"] == "seen"
    # the same configuration on an accelerator never measured: less known, wider
    assert (r[2]["upper"] / r[2]["lower"]) > (r[4]["upper"] / r[4]["lower"])


def test_recommend_ranks_configurations_with_intervals(model_dir):
    from benchmint.learn.predictor import load_predictor
    from benchmint.learn.recommend import recommend

    p = load_predictor(model_dir)
    res = recommend(p, "llama2-70b", "server", {"ttft": 0.45, "tpot": 0.04},
                    accelerators=["H100-SXM-80GB", "MI355X"], top=5)
    confs = res["configurations"]
    assert res["latency_class"] == "interactive" and 0 < len(confs) <= 5
    for c in confs:
        assert c["tokens_per_s_lower"] <= c["tokens_per_s"] <= c["tokens_per_s_upper"]
    priced = [c["usd_per_million_tokens"] for c in confs if c["usd_per_million_tokens"] is not None]
    assert priced == sorted(priced)
    assert any(c["extrapolated"] and c["accelerator"] == "AMD Instinct MI355X" for c in res["configurations"]) or \
        len(priced) == len(confs)


def test_recommend_says_why_nothing_is_within_the_budget_and_lists_no_bf16_that_cannot_fit(model_dir):
    from benchmint.learn.predictor import load_predictor
    from benchmint.learn.recommend import recommend

    p = load_predictor(model_dir)
    res = recommend(p, "llama2-70b", "server", max_usd_per_hour=1.0)
    assert res["configurations"] == []
    assert any("none of the" in n and "within --max-usd-per-hour 1" in n and "the cheapest costs" in n
               for n in res["notes"])
    assert not any("ranked by predicted tokens/s" in n for n in res["notes"])  # (there is no ranking)
    # 140 GB of bf16 weights fill 2 x 80 GB: such a "bf16" system runs quantized, so it is not a candidate
    confs = recommend(p, "llama2-70b", "server", accelerators=["H100-SXM-80GB"], top=50)["configurations"]
    assert {c["count"] for c in confs if c["precision"] == "bf16"} == {4, 8}


def test_cli_bad_input_is_one_line_and_exit_2(cli, tmp_path, small, model_dir):
    small.to_parquet(tmp_path / "rows.parquet")
    pd.DataFrame({"foo": [1, 2]}).to_csv(tmp_path / "bad.csv", index=False)
    one = small[small["submission.organization"] == small["submission.organization"].iloc[0]]
    one = pd.concat([one] * (1 + 20 // max(1, len(one))))  # enough rows, one submitter
    one.to_parquet(tmp_path / "one.parquet")
    cases = [
        (("learn", "fit", "--target", "nope", "--rows", str(tmp_path / "rows.parquet")), "unknown target 'nope'"),
        (("learn", "eval", "--rows", str(tmp_path / "one.parquet"), "--split", "submitter"), "needs at least two"),
        (("learn", "predict", str(model_dir), str(tmp_path / "bad.csv")), "no usable column"),
        (("learn", "fit", "--results", str(tmp_path / "empty")), "0 row(s)"),
        (("recommend", "--model", "llama2-70b", "--model-dir", str(model_dir), "--accelerators", "toaster"),
         "not in the spec table"),
    ]
    for args, words in cases:
        code, _, err = cli(*args)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and words in lines[0], (args, err)


def test_cli_predict_writes_one_object_per_row_in_order(cli, tmp_path, small, model_dir):
    df = small.head(3).copy()
    df.loc[0, "model.name"] = None
    df.to_json(tmp_path / "rows.jsonl", orient="records", lines=True)
    code, out, err = cli("learn", "predict", str(model_dir), str(tmp_path / "rows.jsonl"), "--json",
                         str(tmp_path / "p.json"))
    assert code == 0, err
    res = json.loads((tmp_path / "p.json").read_text())
    assert res["schema_version"] and [r["row"] for r in res["rows"]] == [0, 1, 2]
    assert res["rows"][0]["error"] and res["rows"][1]["lower"] < res["rows"][1]["upper"]


def test_report_predictions_section(cli, tmp_path):
    ev = {"schema_version": "1.0", "target": TARGET, "splits": {"accelerator": {
        "target": TARGET, "unit": "tokens/s per accelerator", "split": "accelerator", "group_by": "accelerator",
        "folds": 2, "rows": 3, "overall": {"n": 3, "mape": 0.1, "median_ape": 0.08, "p90_ape": 0.2, "bias": 0.01,
                                          "r2_log": 0.9, "coverage": 0.9},
        "groups": [{"group": "NVIDIA L40S", "n": 1, "mape": 0.3, "coverage": 0.0}],
        "noise_floor": {"median_ape": 0.01, "configurations": 2},
        "predictions": [{"id": "a", "measured": 100.0, "prediction": 110.0, "lower": 80.0, "upper": 140.0,
                         "group": "NVIDIA L40S"}]}}}
    rec = {"model": "llama2-70b", "scenario": "server", "latency_class": "standard", "notes": ["a note"],
           "configurations": [{"accelerator": "NVIDIA H100 SXM 80GB", "count": 8, "precision": "fp8",
                               "tokens_per_s": 2e4, "tokens_per_s_lower": 1.5e4, "tokens_per_s_upper": 2.5e4,
                               "usd_per_million_tokens": 0.3, "usd_per_million_tokens_lower": 0.2,
                               "usd_per_million_tokens_upper": 0.4, "joules_per_token_at_tdp": None,
                               "extrapolated": True}]}
    (tmp_path / "ev.json").write_text(json.dumps(ev))
    (tmp_path / "rec.json").write_text(json.dumps(rec))
    (tmp_path / "other.json").write_text(json.dumps({"x": 1}))
    code, _, err = cli("report", "--results", str(tmp_path / "s"), "--out", str(tmp_path / "r.html"),
                       "--predictions", str(tmp_path / "ev.json"), "--predictions", str(tmp_path / "rec.json"))
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "id='predictions'" in page and "NVIDIA L40S" in page and "NVIDIA H100 SXM 80GB" in page
    assert "predicted vs measured" in page and "extrapolated" in page and "a note" in page
    code, _, err = cli("report", "--results", str(tmp_path / "s"), "--out", str(tmp_path / "r2.html"),
                       "--predictions", str(tmp_path / "other.json"))
    assert code == 2 and "--predictions" in err and not (tmp_path / "r2.html").exists()


def test_fit_on_own_runs_in_flattened_columns():
    """Own LLM runs (flattened `runs` columns, a host CPU, no spec-table accelerator): a power law in concurrency
    and lengths is learned, and a row outside the measured concurrencies still gets an answer."""
    from benchmint.learn.predictor import fit_predictor

    rng = np.random.default_rng(0)
    n = 40
    df = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "kind": "llm", "workload__model_name": "tiny",
                       "system__accelerator__name": "cpu", "config__scenario": "server",
                       "config__concurrency": rng.choice([1, 2, 4, 8], n),
                       "workload__max_tokens_mean": rng.choice([8, 16, 32], n)})
    df["metrics__throughput__requests_per_s"] = (df["config__concurrency"] ** 0.8 * 40 / df["workload__max_tokens_mean"]
                                                 * np.exp(0.03 * rng.standard_normal(n)))
    p = fit_predictor(df, "requests_per_s")
    q = pd.DataFrame({"workload__model_name": ["tiny"], "system__accelerator__name": ["cpu"],
                      "config__scenario": ["server"], "config__concurrency": [16], "workload__max_tokens_mean": [16]})
    out = p.predict(pd.concat([df.head(5), q], ignore_index=True))
    truth = df.head(5)["metrics__throughput__requests_per_s"].to_numpy()
    assert np.median(np.abs(out["prediction"].iloc[:5] - truth) / truth) < 0.15
    assert out["error"].isna().all() and (out["lower"] < out["upper"]).all()
    assert out["prediction"].iloc[5] > out["prediction"].iloc[:5].min()  # more concurrency, more requests/s

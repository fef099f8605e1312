"""The learning layer learns from complete, real measurements only, and never calls a configuration it has not
measured "seen": partial / failed / invalid runs and runs of the simulated backend are left out of fit, eval and
next (and counted); a GPU count or precision never measured for a model on an accelerator is extrapolated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

OPEN_MLPERF = Path(__file__).parent / "data" / "openmlperf" / "data.parquet"
TARGET = "tokens_per_s_per_accelerator"


def own_rows(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """Own LLM runs in the flattened `runs` layout: requests/s a power law of concurrency and answer length."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"id": [f"r{i}" for i in range(n)], "kind": "llm", "status": "ok",
                       "workload__model_name": "tiny", "system__accelerator__name": "cpu",
                       "config__backend": "transformers", "config__scenario": "server",
                       "config__concurrency": rng.choice([1, 2, 4, 8], n),
                       "workload__max_tokens_mean": rng.choice([8, 16, 32], n)})
    df["metrics__throughput__requests_per_s"] = (df["config__concurrency"] ** 0.8 * 40
                                                 / df["workload__max_tokens_mean"])
    return df


def with_bad_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Five simulated runs and three interrupted (partial) runs, with figures 1000x off the real ones."""
    bad = df.head(8).copy()
    bad["id"] = [f"bad{i}" for i in range(8)]
    bad["metrics__throughput__requests_per_s"] *= 1000
    bad.loc[bad.index[:5], "config__backend"] = "sim"
    bad.loc[bad.index[5:], "status"] = "partial"
    return pd.concat([df, bad], ignore_index=True)


def test_fit_and_eval_leave_out_sim_and_partial_runs_and_say_so(cli, tmp_path):
    from benchmint.learn.api import fit
    from benchmint.learn.evaluate import evaluate

    df = with_bad_runs(own_rows())
    p, _ = fit(df, "requests_per_s")
    assert p.n_train == 40 and p.left_out == {"sim": 5, "partial": 3}
    assert "8 run(s)" in p.evaluation["rows_left_out_why"]
    assert "simulated" in p.evaluation["rows_left_out_why"] and "partial" in p.evaluation["rows_left_out_why"]
    # the 1000x figures never reached the learner: the training rows are predicted near their value
    out = p.predict(df.head(8))
    truth = df.head(8)["metrics__throughput__requests_per_s"].to_numpy()
    assert np.median(np.abs(out["prediction"] - truth) / truth) < 0.3
    res = evaluate(df, "requests_per_s", "random")
    assert res["rows"] == 40 and res["rows_left_out"] == {"sim": 5, "partial": 3}

    df.to_parquet(tmp_path / "rows.parquet")
    code, out_text, err = cli("learn", "fit", "--target", "requests_per_s", "--rows", str(tmp_path / "rows.parquet"),
                              "--out", str(tmp_path / "m"))
    assert code == 0, err
    assert "on 40 rows" in out_text and "left out 8 run(s)" in out_text, out_text
    meta = json.loads((tmp_path / "m" / "predictor.json").read_text())
    assert meta["rows_left_out"] == {"sim": 5, "partial": 3}


def test_next_learns_only_from_complete_real_runs():
    from benchmint.learn.measure import stored_points
    from benchmint.learn.space import parse_space
    from benchmint.results.record import RunRecord

    space = parse_space({"name": "t", "backend": "transformers", "model": "tiny", "target": "output_tokens_per_s",
                         "axes": {"concurrency": [1, 2, 4]}}, "s.yaml")

    def run(c: int, status: str = "ok", backend: str = "transformers") -> RunRecord:
        return RunRecord(kind="llm", status=status, config={"backend": backend, "space": {
            "name": "t", "point": {"concurrency": c}}}, metrics={"throughput": {"output_tokens_per_s": 10.0 * c}})

    got = stored_points(space, [run(1), run(2, status="partial"), run(4, backend="sim"), run(4, "invalid")])
    assert [p["concurrency"] for p, _, _ in got] == [1.0]
    sim_space = parse_space({"name": "t", "backend": "sim", "target": "output_tokens_per_s",
                             "axes": {"concurrency": [1, 2, 4]}}, "s.yaml")
    # a space of the simulated engine is about the simulator: its runs count there
    assert [p["concurrency"] for p, _, _ in stored_points(sim_space, [run(4, backend="sim")])] == [4.0]


@pytest.fixture(scope="module")
def h100_at_8() -> pd.DataFrame:
    """Official rows of five accelerators where llama2-70b on H100 SXM was measured at 8 GPUs (8-bit) only."""
    from benchmint.learn.specs import normalize_accelerator

    rows = pd.read_parquet(OPEN_MLPERF)
    acc = rows["system.accelerator.name"].map(normalize_accelerator)
    keep = acc.isin(["NVIDIA H100 SXM 80GB", "NVIDIA H200 SXM 141GB", "NVIDIA B200 180GB", "AMD Instinct MI300X",
                     "NVIDIA L40S"]) & (rows["benchmark.version"] == "5.0")
    return rows[keep].sample(160, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def predictor(h100_at_8):
    from benchmint.learn.predictor import fit_predictor

    return fit_predictor(h100_at_8, TARGET)


def test_a_gpu_count_never_measured_is_not_seen(h100_at_8, predictor):
    from benchmint.learn.features import build_features
    from benchmint.learn.recommend import recommend, recommend_table

    feats = build_features(h100_at_8)
    measured = feats[(feats["model_family"] == "llama2-70b") & (feats["accelerator"] == "NVIDIA H100 SXM 80GB")]
    assert set(measured["accelerator_count"]) == {8.0}  # the premise
    res = recommend(predictor, "llama2-70b", "server", accelerators=["H100-SXM-80GB"], top=20)
    by = {(c["count"], c["precision"]): c for c in res["configurations"]}
    eight = by[(8, "fp8")]
    assert eight["basis"] == "seen" and not eight["extrapolated"]
    assert (1, "fp8") not in by  # 70 GB of weights in 80 GB leave no room for a KV cache: no candidate
    for n in (2, 4):
        c = by[(n, "fp8")]
        assert c["basis"] == "new_configuration" and c["extrapolated"], c
        assert "never at" in c["note"] and "8 accelerator(s)" in c["note"], c["note"]
        # knowing less never narrows the interval
        assert (c["tokens_per_s_upper"] / c["tokens_per_s_lower"]
                >= eight["tokens_per_s_upper"] / eight["tokens_per_s_lower"] * 0.999)
    # an extrapolated configuration ranked above the best measured one is said to be so
    ranked = res["configurations"]
    first_measured = next(i for i, c in enumerate(ranked) if not c["extrapolated"])
    if any(c["extrapolated"] for c in ranked[:first_measured]):
        assert any("ranked above the best measured one" in n for n in res["notes"]), res["notes"]
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(recommend_table(res))
    assert "extrapolated: new count/precision" in console.export_text()


def test_ranking_note_when_extrapolated_rows_outrank_measured_ones():
    from benchmint.learn.recommend import _extrapolated_ahead

    rows = [{"count": 1, "accelerator": "A", "precision": "fp8", "extrapolated": True,
             "extrapolated_why": "count or precision never measured for this model on this accelerator"},
            {"count": 8, "accelerator": "A", "precision": "fp8", "extrapolated": False, "extrapolated_why": None}]
    note = _extrapolated_ahead(rows)
    assert note and "#1 (1 x A fp8" in note and "#2, 8 x A fp8" in note
    assert _extrapolated_ahead(rows[::-1]) is None


def test_eval_says_which_rows_it_could_not_score_and_keeps_the_splits_it_could_make(cli, tmp_path):
    # 24 rows of one accelerator: a 5-fold split leaves 19 or so to fit on, under the 20 a predictor needs. Half
    # the rows were left out of the figures without a word, and --split all failed on the accelerator split after
    # printing the random one (its --json never written)
    from benchmint.learn.specs import normalize_accelerator

    rows = pd.read_parquet(OPEN_MLPERF)
    one = rows[rows["system.accelerator.name"].map(normalize_accelerator) == "NVIDIA H100 SXM 80GB"]
    one.sample(24, random_state=0).to_parquet(tmp_path / "rows.parquet")
    code, out, err = cli("learn", "eval", "--rows", str(tmp_path / "rows.parquet"), "--target", TARGET,
                         "--split", "random,accelerator", "--json", str(tmp_path / "e.json"))
    assert code == 0, err + out
    doc = json.loads((tmp_path / "e.json").read_text())
    res = doc["splits"]["random"]
    scored = sum(p["prediction"] is not None for p in res["predictions"])
    assert res["rows_not_scored"] == 24 - scored > 0
    flat = " ".join(out.split())
    assert f"{24 - scored} of 24 rows were not scored" in flat
    assert "accelerator" in doc["splits_not_evaluated"] and "split accelerator not evaluated" in flat


def test_rows_of_a_jsonl_export_are_flattened_as_the_store_flattens_them(tmp_path):
    # `results export --format jsonl` writes whole records: learn fit --rows read "0 rows with a value"
    from benchmint.learn.api import load_rows
    from benchmint.results.record import RunRecord

    recs = [RunRecord(kind="llm", workload={"model_name": "tiny"}, system={"accelerator": {"name": "cpu"}},
                      metrics={"ttft_s": {"p99": 0.1 * (i + 1)}}) for i in range(3)]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r.to_dict()) + "\n" for r in recs))
    df = load_rows(tmp_path / "runs.jsonl")
    assert len(df) == 3 and list(df["workload__model_name"]) == ["tiny"] * 3
    assert list(df["metrics__ttft_s__p99"]) == pytest.approx([0.1, 0.2, 0.3])
    assert list(df["system__accelerator__name"]) == ["cpu"] * 3

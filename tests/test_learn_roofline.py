"""The physics prior: per-task token lengths, the roofline's regimes (prefill compute-bound, decode memory-bound,
mixture-of-experts reads, tensor-parallel traffic), the precision a run must have used, and the spec table's
provenance."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest


def _row(**kw):
    base = {"params_b": 69.0, "active_params_b": 69.0, "layers": 80, "hidden": 8192, "heads": 64, "kv_heads": 8,
            "precision": "fp8", "accelerator_count": 1, "acc_mem_bw_gbs": 4800, "acc_mem_gb": 141,
            "acc_peak_tflops": 1979, "acc_interconnect_gbs": 900, "input_len": 300, "output_len": 300}
    return {**base, **kw}


def test_open_mlperf_rows_get_their_task_lengths_and_open_models_keep_the_task():
    from benchmint.learn.features import build_features

    df = pd.DataFrame({
        "model.name": ["gptj-99", "llama2-70b-interactive-99.9", "llama3_1-70b-fp8_dyn", "deepseek-v3"],
        "model.mlperf_name": ["gptj-99", "llama2-70b-interactive-99.9", "llama2-70b-99.9", "llama3.1-405b"],
        "system.accelerator.name": ["NVIDIA H100-SXM-80GB"] * 4, "system.accelerator.total_count": [1, 1, 1, 8],
        "model.weight_data_types": ["fp8"] * 4})
    f = build_features(df)
    assert list(f["task"]) == ["gptj", "llama2-70b", "llama2-70b", "llama3.1-405b"]
    # gptj summarizes long articles into short answers; an open llama3.1-70b run on llama2-70b's task keeps its lengths
    assert f["input_len"][0] > 5 * f["output_len"][0]
    assert f["output_len"][2] == f["output_len"][1] == pytest.approx(294.45)
    assert f["model_family"][2] == "llama3.1-70b"
    assert f["input_len"][3] > 10 * f["output_len"][3]  # deepseek-v3 on the 405b task: its long prompts


def test_a_runs_own_lengths_win_over_the_task_table():
    from benchmint.learn.features import build_features

    f = build_features(pd.DataFrame({"workload__model_name": ["gptj-6b"], "workload__input_tokens_mean": [64.0],
                                     "workload__max_tokens_mean": [512.0], "system__accelerator__name": ["L40S"]}))
    assert (f["input_len"][0], f["output_len"][0]) == (64.0, 512.0)


def test_roofline_regimes():
    from benchmint.learn.roofline import roofline

    base = roofline(_row())
    assert 0 < base.prefill_share < 1 and base.batch > 1
    # longer prompts per output token cost prefill compute: the ceiling falls
    assert roofline(_row(input_len=3000, output_len=30)).tokens_per_s < base.tokens_per_s / 3
    # twice the memory bandwidth lifts a memory-bound decode
    small = roofline(_row(input_len=10, output_len=2000, acc_peak_tflops=1e6))
    fast = roofline(_row(input_len=10, output_len=2000, acc_peak_tflops=1e6, acc_mem_bw_gbs=9600))
    assert small.memory_share > 0.5 and fast.tokens_per_s == pytest.approx(2 * small.tokens_per_s, rel=0.05)
    # a mixture of experts reads only the experts its tokens route to: at batch 1 far fewer bytes than dense
    moe = dict(params_b=46.7, active_params_b=12.9, layers=32, hidden=4096, heads=32, kv_heads=8, experts=8,
               active_experts=2, acc_mem_gb=1.0, input_len=1, output_len=1000)  # no room for a batch
    dense = roofline(_row(**{**moe, "experts": None, "active_experts": None}))
    sparse = roofline(_row(**moe))
    assert sparse.batch == dense.batch == 1 and sparse.tokens_per_s > 2.5 * dense.tokens_per_s
    # tensor parallelism over a slow link costs time that NVLink does not
    pcie = roofline(_row(params_b=405.0, active_params_b=405.0, accelerator_count=8, acc_interconnect_gbs=64))
    nvl = roofline(_row(params_b=405.0, active_params_b=405.0, accelerator_count=8))
    assert pcie.comm_share > nvl.comm_share and pcie.tokens_per_s < nvl.tokens_per_s


def test_a_model_the_table_does_not_know_gets_the_ceiling_of_a_model_of_its_size():
    # a 70B model not in models.csv was predicted 100 times too low: its KV cache per token was taken as 0.1% of
    # the weights (140 MB, against Llama 2 70B's 328 kB), so the cache left room for a batch of about one
    from benchmint.learn.features import build_features
    from benchmint.learn.roofline import roofline

    known = roofline(_row())
    unknown = roofline(_row(layers=None, hidden=None, heads=None, kv_heads=None))
    assert 0.5 < unknown.tokens_per_s / known.tokens_per_s < 2 and unknown.batch > 0.5 * known.batch
    f = build_features(pd.DataFrame({"model.name": ["llama2-70b-99", "foo-70b"], "model.number_of_parameters": [70.0] * 2,
                                     "system.accelerator.name": ["NVIDIA H100-SXM-80GB"] * 2,
                                     "system.accelerator.total_count": [1, 1], "model.weight_data_types": ["fp8"] * 2,
                                     "model.mlperf_name": ["llama2-70b-99"] * 2}))
    assert list(f["shape_guessed"]) == [False, True] and 60 < f["layers"][1] < 90
    assert 0.5 < f["roofline_tokens_per_s"][1] / f["roofline_tokens_per_s"][0] < 2
    # a size no model has is no shape to guess (a negative count crashed learn predict: a complex cube root)
    bad = build_features(pd.DataFrame({"model.name": ["foo-70b"], "model.number_of_parameters": [-70.0],
                                       "system.accelerator.name": ["NVIDIA H100-SXM-80GB"],
                                       "system.accelerator.total_count": [1]}))
    assert not bad["shape_guessed"][0] and pd.isna(bad["layers"][0])


def test_a_stated_precision_that_cannot_fit_is_narrowed_for_the_roofline():
    from benchmint.learn.features import build_features

    df = pd.DataFrame({"model.name": ["llama2-70b-99"] * 3, "model.mlperf_name": ["llama2-70b-99"] * 3,
                       "system.accelerator.name": ["NVIDIA H200-SXM-141GB", "NVIDIA H200-SXM-141GB",
                                                   "NVIDIA H100-SXM-80GB"],
                       "system.accelerator.total_count": [1, 8, 8],
                       "model.weight_data_types": ["fp16", "fp16", None]})
    f = build_features(df)
    # 138 GB of fp16 weights in one 141 GB H200 leave no KV cache: the run was quantized; on 8 they fit
    assert list(f["precision_adjusted"]) == [1.0, 0.0, 1.0]
    assert f["precision"][0] == "fp16"  # the stated one stays a feature
    assert f["roof_batch"][0] > 1  # the roofline serves a batch instead of one sequence at a time


def test_every_spec_row_says_when_and_how_it_was_checked_and_the_task_table_names_sources():
    text = resources.files("benchmint").joinpath("data/accelerators.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#")))
    assert all(r["checked"].startswith("20") and r["transcribed"] for r in rows)
    names = {r["name"] for r in rows}
    assert {"NVIDIA Rubin", "AMD Instinct MI455X", "Intel Arc Pro B60", "NVIDIA RTX 4000 Ada Generation"} <= names
    text = resources.files("benchmint").joinpath("data/tasks.csv").read_text(encoding="utf-8")
    tasks = list(csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#")))
    assert {t["task"] for t in tasks} >= {"llama2-70b", "gptj", "mixtral-8x7b", "llama3.1-405b", "llama3.1-8b",
                                           "deepseek-r1"}
    assert all(t["source"].startswith("https://github.com/mlcommons/inference") for t in tasks)


def test_the_iteration_target_reads_what_a_replay_run_stores():
    import pandas as pd

    from benchmint.learn.features import target_values
    from benchmint.results.flatten import flatten_record
    from benchmint.results.store import load_run_json

    rec = load_run_json(Path(__file__).parent / "data" / "results_v1" / "run_json" / "replay.json")
    row = flatten_record(rec.to_dict())
    got = target_values(pd.DataFrame([row]), "iteration_s")
    assert got.iloc[0] == rec.metrics["iter_time_s"]["median"] > 0

"""Importing official MLPerf results: summary.csv of mlcommons/inference_results_v* and the Open MLPerf
dataset (the repo copy in tests/data/openmlperf, all 847 results)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import benchmint.results as results_pkg
from benchmint.core.errors import UserError
from benchmint.results.importers import import_results, normalize_result, read_open_mlperf, read_summary_csv
from benchmint.results.store import ResultsStore, StoreWarning

SAMPLE_CSV = Path(results_pkg.__file__).parent / "samples" / "summary.csv"
OPEN = Path(__file__).parent / "data" / "openmlperf"


def test_summary_csv_units_are_normalized():
    recs = {(r.workload["model_name"], r.config["scenario"]): r for r in read_summary_csv(SAMPLE_CSV)}
    assert len(recs) == 7 and all(r.kind == "imported" for r in recs.values())
    llm = recs[("llama2-70b-99", "Offline")]
    assert llm.metrics["result"] == {"value": 24500.0, "unit": "Tokens/s"}
    assert llm.metrics["throughput"]["output_tokens_per_s"] == 24500.0
    assert llm.metrics["throughput"]["output_tokens_per_s_per_accelerator"] == 24500.0 / 8
    assert llm.system["accelerator"] == {"name": "NVIDIA H100-SXM-80GB", "count_per_node": 8, "count": 8}
    assert llm.config["mlperf_version"] == "4.1" and llm.config["division"] == "closed"
    # Samples/s and Queries/s both become samples_per_s
    assert recs[("resnet50", "Offline")].metrics["throughput"]["samples_per_s"] == 700000.0
    assert recs[("resnet50", "Server")].metrics["throughput"]["samples_per_s"] == 600000.0
    # latencies in ms become seconds, at the percentile each scenario reports
    assert recs[("bert-99", "SingleStream")].metrics["latency_s"] == {"p90": pytest.approx(0.00175)}
    assert recs[("retinanet", "MultiStream")].metrics["latency_s"] == {"p99": pytest.approx(0.0112)}
    # two nodes of 8 accelerators
    mix = recs[("mixtral-8x7b", "Offline")]
    assert mix.system["accelerator"]["count"] == 16
    assert mix.metrics["throughput"]["output_tokens_per_s_per_accelerator"] == 88000.0 / 16


def test_power_and_energy_units():
    assert normalize_result(450.0, "Watts", "Offline")["power_w"] == 450.0
    assert normalize_result(1500.0, "millijoules", "SingleStream")["energy_per_sample_j"] == 1.5


def test_csv_with_missing_columns_names_file_and_columns(tmp_path):
    bad = tmp_path / "summary.csv"
    bad.write_text("Organization,Division,Model,Result\nX,closed,bert-99,1.0\n")
    with pytest.raises(UserError) as e:
        read_summary_csv(bad)
    msg = str(e.value)
    assert str(bad) in msg and "SystemName" in msg and "Scenario" in msg and "Units" in msg
    assert "Organization" not in msg.split("missing column(s)")[1].split("(found")[0]


def test_whole_open_mlperf_dataset_imports_with_memory_in_bytes(tmp_path):
    recs = read_open_mlperf(OPEN / "data.parquet")
    assert len(recs) == 847 and len({r.id for r in recs}) == 847
    src = pq.read_table(OPEN / "data.parquet").to_pylist()
    by_uid = {r["submission.debug_uid"]: r for r in src}
    for rec in recs[:50]:
        row = by_uid[rec.provenance["debug_uid"]]
        assert rec.system["accelerator"]["name"] == row["system.accelerator.name"]
        assert rec.metrics["result_per_accelerator"] == row["metrics.result_per_accelerator"]
        assert rec.metrics["throughput"]["output_tokens_per_s"] == row["metrics.result"]  # Tokens/s
        mem = row["system.accelerator.memory_capacity"]
        assert rec.system["accelerator"]["memory_bytes"] == (None if mem is None else round(mem * 1e9))
        assert rec.workload["parameter_count"] == round(row["model.number_of_parameters"] * 1e9)
    with_mem = [r for r in recs if r.system["accelerator"]["memory_bytes"]]
    assert len(with_mem) > 800
    assert all(r.system["accelerator"]["memory_bytes"] > 10**9 for r in with_mem)  # GB -> bytes
    store = ResultsStore(tmp_path)
    store.append_many(recs)
    _, rows = store.query(
        "select count(*), count(distinct system__accelerator__name), "
        "sum(case when config__scenario = 'Offline' then 1 else 0 end) from runs where kind = 'imported'"
    )
    n, accs, offline = rows[0]
    assert n == 847 and accs > 10 and 0 < offline < 847


def test_json_layout_gives_the_same_records_as_parquet():
    from_json = {r.id: r for r in read_open_mlperf(OPEN / "data_subset.json")}
    from_parquet = {r.id: r for r in read_open_mlperf(OPEN / "data.parquet")}
    assert len(from_json) == 24
    for rid, rec in from_json.items():
        other = from_parquet[rid]
        assert rec.metrics == other.metrics and rec.system == other.system and rec.workload == other.workload


def test_open_mlperf_missing_columns(tmp_path):
    bad = tmp_path / "data.json"
    bad.write_text('[{"model.name": "x", "metrics.result": 1.0}]')
    with pytest.raises(UserError, match=r"data\.json.*missing column\(s\) submission\.scenario, metrics\.units"):
        read_open_mlperf(bad)


def test_folder_import_prefers_parquet_and_reimport_adds_nothing(tmp_path):
    from benchmint.results.api import import_into

    store = ResultsStore(tmp_path / "store")
    read, new = import_into(store, [OPEN, SAMPLE_CSV])
    assert (read, new) == (847 + 7, 847 + 7)
    read, new = import_into(store, [OPEN / "data_subset.json"])
    assert (read, new) == (24, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        assert len(store.records()) == 854


def test_unknown_file_type_is_a_user_error(tmp_path):
    f = tmp_path / "results.txt"
    f.write_text("x")
    with pytest.raises(UserError, match="results.txt"):
        import_results([f])

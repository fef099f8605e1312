"""A store and run.json files written before typed results (RunRecord schema 1.0, free-form metrics) still read:
every record comes back as the typed model of its kind and keeps every figure it had (tests/data/results_v1)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from benchmint.results.models import (
    CaptureMetrics,
    ImportedMetrics,
    LlmMetrics,
    MlperfMetrics,
    ReplayMetrics,
    Stats,
    SweepMetrics,
)
from benchmint.results.record import SCHEMA_VERSION, RunRecord
from benchmint.results.store import ResultsStore, load_run_json

DATA = Path(__file__).parent / "data" / "results_v1"
MODEL = {"capture": CaptureMetrics, "replay": ReplayMetrics, "llm": LlmMetrics, "mlperf": MlperfMetrics,
         "sweep": SweepMetrics, "imported": ImportedMetrics}


def _raw_records() -> dict[str, dict]:
    out = {}
    for part in sorted((DATA / "store" / "runs").glob("*.parquet")):
        for text in pq.read_table(part, columns=["record_json"]).column("record_json").to_pylist():
            d = orjson.loads(text)
            out[d["id"]] = d
    return out


@pytest.fixture
def store(tmp_path) -> ResultsStore:
    shutil.copytree(DATA / "store", tmp_path / "store")
    return ResultsStore(tmp_path / "store")


def test_a_schema_1_store_reads_into_typed_models_and_keeps_every_figure(store):
    raw = _raw_records()
    assert {d["schema_version"] for d in raw.values()} == {"1.0"} and SCHEMA_VERSION == "2.0"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no part or record skipped
        recs = store.records()
    assert store.problems == [] and len(recs) == len(raw) == 12
    assert sorted({r.result_kind for r in recs}) == sorted(MODEL)
    for r in recs:
        assert type(r.metrics) is MODEL[r.result_kind], r.id
        assert r.to_dict() == raw[r.id]  # nothing dropped, nothing renamed
    llm = next(r for r in recs if r.kind == "llm")
    assert isinstance(llm.metrics.ttft_s, Stats) and llm.metrics.ttft_s.p99 == raw[llm.id]["metrics"]["ttft_s"]["p99"]
    assert llm.metrics.requests.completed == 4 and llm.metrics.throughput.output_tokens_per_s > 0
    mlperf = next(r for r in recs if r.result_kind == "mlperf")
    assert mlperf.metrics.loadgen.validity == "INVALID" and mlperf.metrics.client.ttft_s.count == 16
    sweep = next(r for r in recs if r.result_kind == "sweep")
    assert sweep.metrics.sweep.peak_rate == 8.0 and [t.rate for t in sweep.metrics.sweep.curve] == [4.0, 8.0]
    replay = next(r for r in recs if r.kind == "replay")
    assert replay.metrics.iter_time_s.median > 0 and replay.metrics.coverage == 1.0


def test_a_schema_1_store_answers_queries_as_before(store):
    raw = _raw_records()
    cols, rows = store.query("select kind, count(*) n from runs group by kind order by kind")
    assert rows == [("capture", 1), ("imported", 7), ("llm", 1), ("mlperf", 2), ("replay", 1)]
    llm_id = next(i for i, d in raw.items() if d["kind"] == "llm")
    _, rows = store.query(f"select metrics__ttft_s__p99, metrics__requests__completed, "
                          f"json_extract(record_json, '$.metrics.throughput.requests_per_s') from runs "
                          f"where id = '{llm_id}'")
    m = raw[llm_id]["metrics"]
    assert rows[0][0] == m["ttft_s"]["p99"] and rows[0][1] == 4
    assert float(rows[0][2]) == m["throughput"]["requests_per_s"]
    # a record stored now sits beside the old ones
    store.append(RunRecord(kind="replay", metrics={"error": 0.5}))
    _, rows = store.query("select schema_version, count(*) from runs group by 1 order by 1")
    assert rows == [("1.0", 12), ("2.0", 1)]


@pytest.mark.parametrize("kind", ["capture", "replay", "llm", "mlperf", "sweep"])
def test_a_schema_1_run_json_reads_and_writes_back_the_same_keys(kind, tmp_path):
    path = DATA / "run_json" / f"{kind}.json"
    raw = json.loads(path.read_text())
    rec = load_run_json(path)
    assert rec.result_kind == kind and type(rec.metrics) is MODEL[kind]
    assert rec.schema_version == "1.0" and rec.to_dict() == raw
    rec.write(tmp_path)
    assert json.loads((tmp_path / "run.json").read_text()) == raw


def _table(con):
    return con.sql("select * from runs").to_arrow_table()


def _same_table(store: ResultsStore) -> int:
    """The table DuckDB reads from the parts equals the one built from the records in Python (the rule of
    rows_to_table), column by column, type by type and value by value; returns the number of rows."""
    direct, built = _table(store.connect()), _table(store.connect(store.records()))
    assert direct.schema.names == built.schema.names
    for name in direct.schema.names:
        assert direct.schema.field(name).type == built.schema.field(name).type, name
        a, b = direct.column(name).to_pylist(), built.column(name).to_pylist()
        if name == "record_json":  # the stored text of an old record keeps its key order
            a, b = [json.loads(x) for x in a], [json.loads(x) for x in b]
        assert a == b, name
    return direct.num_rows


def test_duckdb_reads_old_and_new_parts_into_the_same_table_as_before(store):
    assert _same_table(store) == 12
    # new parts (flattened columns) beside the old ones; a column int in one run and text in another is text
    store.append(RunRecord(kind="replay", metrics={"error": 0.5, "coverage": 1.0}, config={"rate": "inf"}))
    store.append(RunRecord(kind="llm", metrics={"output_tokens_total": 3}, config={"rate": 2}))
    assert _same_table(store) == 14
    _, rows = store.query("select config__rate from runs where config__rate is not null order by 1")
    assert rows == [("2",), ("inf",)]
    # a boolean in one run and a number in another: text, as "true" (the slower path)
    store.append(RunRecord(kind="replay", metrics={"error": 0.1}, config={"flag": True}))
    store.append(RunRecord(kind="replay", metrics={"error": 0.2}, config={"flag": 3}))
    assert _same_table(store) == 16
    _, rows = store.query("select config__flag from runs where config__flag is not null order by 1")
    assert rows == [("3",), ("true",)]
    # the same id stored again: the later copy wins; compact rewrites every part in the current layout
    again = store.records()[0]
    again.status = "partial"
    store.append(again)
    _, rows = store.query(f"select status from runs where id = '{again.id}'")
    assert rows == [("partial",)] and _same_table(store) == 16
    store.compact()
    assert len(store.part_files()) == 1 and _same_table(store) == 16


def test_results_list_headlines_of_an_old_store_are_those_the_old_code_printed(store):
    from benchmint.results.api import list_rows

    got = [(r["kind"], r["headline"]) for r in list_rows(store)]
    # (a capture's and a peak search's rows were empty: they now give the un-observed step and the peak)
    assert got == [("capture", "step 2.65 ms un-observed"), ("replay", "replay error +35.3%"),
                   ("llm", "164.7 tok/s, TTFT p99 25.5 ms"), ("mlperf", "50.01 tok/s"),
                   ("mlperf", "peak 8 LoadGen Server target QPS over 2 trials (every trial passed: a floor)"),
                   ("imported", "2.45e+04 tok/s"),
                   ("imported", "2.3e+04 tok/s"), ("imported", "7e+05 samples/s"), ("imported", "6e+05 samples/s"),
                   ("imported", "latency p90 1.75 ms"), ("imported", "latency p99 11.2 ms"),
                   ("imported", "8.8e+04 tok/s")]

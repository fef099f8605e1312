"""`benchmint results list|show|query|export|import` as a user runs them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq

import benchmint.results as results_pkg
from benchmint.results.record import RunRecord
from benchmint.results.store import ResultsStore

SAMPLE_CSV = Path(results_pkg.__file__).parent / "samples" / "summary.csv"
OPEN = Path(__file__).parent / "data" / "openmlperf"


def _fill(path: Path) -> list[RunRecord]:
    recs = [
        RunRecord(kind="llm", config={"rate": 1.0}, workload={"model_name": "tiny"},
                  metrics={"ttft_s": {"p99": 0.2}, "throughput": {"output_tokens_per_s": 55.0}}),
        RunRecord(kind="replay", metrics={"error": 0.02}, workload={"model_name": "tiny-tf"}),
    ]
    store = ResultsStore(path)
    for r in recs:
        store.append(r)
    return recs


def test_list_show_and_query_json(cli, tmp_path):
    recs = _fill(tmp_path / "store")
    code, out, err = cli("results", "list", "--results", str(tmp_path / "store"), "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["id"] for r in rows] == [r.id for r in recs]
    assert rows[0]["headline"].startswith("55 tok/s")
    code, out, _ = cli("results", "show", recs[1].id, "--results", str(tmp_path / "store"))
    assert code == 0 and json.loads(out)["metrics"] == {"error": 0.02}
    code, out, err = cli("results", "query", "select kind, metrics__ttft_s__p99 as p99 from runs order by kind",
                         "--json", "--results", str(tmp_path / "store"))
    assert code == 0, err
    assert json.loads(out) == [{"kind": "llm", "p99": 0.2}, {"kind": "replay", "p99": None}]


def test_env_var_moves_the_store(cli, tmp_path, monkeypatch):
    recs = _fill(tmp_path / "elsewhere")
    monkeypatch.setenv("BENCHMINT_RESULTS", str(tmp_path / "elsewhere"))
    code, out, _ = cli("results", "query", "select count(*) as n from runs", "--json")
    assert code == 0 and json.loads(out) == [{"n": len(recs)}]


def test_export_formats(cli, tmp_path):
    recs = _fill(tmp_path / "store")
    s = str(tmp_path / "store")
    assert cli("results", "export", "--format", "csv", "--out", "r.csv", "--results", s)[0] == 0
    assert cli("results", "export", "--format", "parquet", "--out", "r.parquet", "--results", s)[0] == 0
    assert cli("results", "export", "--format", "jsonl", "--out", "r.jsonl", "--results", s)[0] == 0
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert {r["id"] for r in rows} == {r.id for r in recs} and "metrics__ttft_s__p99" in rows[0]
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.num_rows == 2 and "metrics__error" in table.column_names
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert [RunRecord.from_dict(json.loads(line)).id for line in lines] == [r.id for r in recs]
    code, _, err = cli("results", "export", "--format", "xml", "--results", s)
    assert code == 2 and "xml" in err


def test_import_command_and_bad_csv(cli, tmp_path):
    s = str(tmp_path / "store")
    code, out, err = cli("results", "import", str(OPEN / "data.parquet"), str(SAMPLE_CSV), "--results", s)
    assert code == 0, err
    assert "imported 854 new run(s)" in out
    code, out, _ = cli("results", "query", "select count(*) as n from runs where kind = 'imported'", "--json",
                       "--results", s)
    assert json.loads(out) == [{"n": 854}]
    bad = tmp_path / "summary.csv"
    bad.write_text("Organization,Model\nX,bert\n")
    code, out, err = cli("results", "import", str(bad), "--results", s)
    assert code == 2 and str(bad) in err and "Scenario" in err and "Traceback" not in err


def test_corrupt_part_warns_and_the_rest_works(cli, tmp_path):
    recs = _fill(tmp_path / "store")
    bad = tmp_path / "store" / "runs" / "part-0-broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    s = str(tmp_path / "store")
    code, out, err = cli("results", "list", "--json", "--results", s)
    assert code == 0 and len(json.loads(out)) == len(recs)
    assert "warning:" in err and "part-0-broken.parquet" in err
    code, out, err = cli("results", "query", "select count(*) as n from runs", "--json", "--results", s)
    assert code == 0 and json.loads(out) == [{"n": 2}] and "part-0-broken.parquet" in err


def test_user_errors_exit_2(cli, tmp_path):
    _fill(tmp_path / "store")
    s = str(tmp_path / "store")
    code, _, err = cli("results", "show", "no-such-run", "--results", s)
    assert code == 2 and "no-such-run" in err
    code, _, err = cli("results", "query", "select * from nowhere", "--results", s)
    assert code == 2 and "query failed" in err and "Traceback" not in err


def test_list_keeps_each_run_id_on_one_line_to_copy_into_show(cli, tmp_path):
    from benchmint.results.record import RunRecord
    from benchmint.results.store import ResultsStore

    store = ResultsStore(tmp_path / "s")
    recs = [RunRecord(kind="llm", config={}, metrics={}, workload={"model": "a-rather-long-model-name-here"})
            for _ in range(2)]
    store.append_many(recs)
    code, out, _ = cli("results", "list", "--results", str(tmp_path / "s"))
    assert code == 0
    for r in recs:
        assert r.id in out

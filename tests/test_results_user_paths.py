"""What a new user met with `benchmint results` and `benchmint report`: a store path that is missing or a
file, a report of no runs, an export that would not import back, a query that wrote files, and the schema
versions and hash the docs name."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from benchmint.results.record import RunRecord
from benchmint.results.store import ResultsStore

DOCS = Path(__file__).parent.parent / "docs"


def _fill(path: Path) -> list[RunRecord]:
    recs = [
        RunRecord(kind="llm", config={"rate": 1.0}, workload={"model_name": "tiny"},
                  metrics={"ttft_s": {"p99": 0.2}, "throughput": {"output_tokens_per_s": 55.0}}),
        RunRecord(kind="replay", metrics={"error": 0.02}, workload={"model_name": "tiny-tf"}),
    ]
    ResultsStore(path).append_many(recs)
    return recs


def _one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


# ------------------------------------------------------------------------------ 3. store paths, empty report
@pytest.mark.parametrize("command", [("list",), ("query", "select 1"), ("export", "--format", "csv"),
                                     ("show", "x"), ("compact",)])
def test_a_store_path_that_does_not_exist_or_is_a_file_is_an_error(cli, tmp_path, command):
    missing = tmp_path / "nonexistent"
    code, out, err = cli("results", *command, "--results", str(missing))
    _one_line_error(code, err, str(missing), "does not exist", "--results")
    assert "no runs" not in out and not missing.exists()
    a_file = tmp_path / "result.json"
    a_file.write_text("{}")
    code, out, err = cli("results", *command, "--results", str(a_file))
    _one_line_error(code, err, str(a_file), "is a file, not a results store folder")


def test_empty_store_folder_lists_no_runs_and_import_creates_the_store(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out, _ = cli("results", "list", "--results", str(tmp_path / "empty"))
    assert code == 0 and "no runs in" in out  # an existing store with no runs yet is not an error
    exported = tmp_path / "exp.jsonl"
    _fill(tmp_path / "src")
    assert cli("results", "export", "--format", "jsonl", "--out", str(exported), "--results",
               str(tmp_path / "src"))[0] == 0
    code, _, err = cli("results", "import", str(exported), "--results", str(tmp_path / "new"))  # a new store
    assert code == 0, err and (tmp_path / "new" / "runs").is_dir()
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    code, _, err = cli("results", "import", str(exported), "--results", str(a_file))
    _one_line_error(code, err, "is a file")


def test_the_default_store_before_any_run_lists_no_runs(cli, tmp_path, monkeypatch):
    # a new user's first `results list`: ./benchmint-results does not exist yet, and that is no mistyped path
    monkeypatch.delenv("BENCHMINT_RESULTS", raising=False)
    code, out, err = cli("results", "list")
    assert code == 0 and "no runs" in out, err


def test_report_of_no_runs_says_so_and_writes_nothing(cli, tmp_path):
    out = tmp_path / "report.html"
    (tmp_path / "empty").mkdir()
    code, _, err = cli("report", "--results", str(tmp_path / "empty"), "--out", str(out))
    _one_line_error(code, err, "no runs to report", "holds none")
    assert not out.exists()  # was: a 4.8 MB page of empty sections, exit 0
    code, _, err = cli("report", "--results", str(tmp_path / "nonexistent"), "--out", str(out))
    _one_line_error(code, err, "does not exist")
    store = tmp_path / "store"
    _fill(store)
    code, _, err = cli("report", "--results", str(store), "--kind", "mlperf", "--out", str(out))
    _one_line_error(code, err, "no runs of kind 'mlperf'")
    assert not out.exists()
    code, _, err = cli("report", "--results", str(store), "--out", str(out))
    assert code == 0, err and out.exists()


# ------------------------------------------------------------------------------ 4. export imports back
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_export_imports_back_without_duplicates(cli, tmp_path, fmt):
    store = tmp_path / "store"
    recs = _fill(store)
    exported = tmp_path / f"exp.{fmt}"
    assert cli("results", "export", "--format", fmt, "--out", str(exported), "--results", str(store))[0] == 0
    code, out, err = cli("results", "import", str(exported), "--results", str(store))
    assert code == 0, err
    assert "0 new run(s) (2 read, 2 already stored)" in out
    assert [r.id for r in ResultsStore(store).records()] == [r.id for r in recs]
    # into another store: the same runs, kinds and figures (not turned into `imported`)
    other = tmp_path / "other"
    code, out, err = cli("results", "import", str(exported), "--results", str(other))
    assert code == 0 and "2 new run(s)" in out, err
    assert [r.to_dict() for r in ResultsStore(other).records()] == [r.to_dict() for r in recs]
    code, out, _ = cli("results", "import", str(exported), "--results", str(other))
    assert code == 0 and "0 new run(s)" in out and len(ResultsStore(other).records()) == 2


def test_a_broken_line_of_an_export_is_named_and_the_rest_imported(cli, tmp_path):
    _fill(tmp_path / "store")
    exported = tmp_path / "exp.jsonl"
    cli("results", "export", "--format", "jsonl", "--out", str(exported), "--results", str(tmp_path / "store"))
    exported.write_text(exported.read_text() + "{not json\n")
    code, out, err = cli("results", "import", str(exported), "--results", str(tmp_path / "other"))
    assert code == 0 and "2 new run(s)" in out
    assert "exp.jsonl: line 3: not valid JSON" in err
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    code, _, err = cli("results", "import", str(tmp_path / "bad.jsonl"), "--results", str(tmp_path / "other"))
    assert code == 2 and "no valid record" in err


# ------------------------------------------------------------------------------ 5. query is read-only
@pytest.mark.parametrize("sql", [
    "copy (select 1) to '{d}/x.csv'",
    "select 1; copy runs to '{d}/x.parquet' (format parquet)",
    "export database '{d}/x'",
    "attach '{d}/x.duckdb' as x",
    "select * from read_csv('{d}/secret.csv')",
    "install httpfs",
    "load httpfs",
    "set enable_external_access = true",
    "drop table runs",  # changed only the connection's view, and printed "Success"
    "create table x as select 1",
])
def test_query_writes_and_reads_no_file(cli, tmp_path, sql):
    store = tmp_path / "store"
    _fill(store)
    d = tmp_path / "out"
    d.mkdir()
    (d / "secret.csv").write_text("a\n1\n")
    code, out, err = cli("results", "query", sql.format(d=d), "--results", str(store))
    _one_line_error(code, err, "query refused", "results export")
    assert sorted(p.name for p in d.iterdir()) == ["secret.csv"]  # nothing written


def test_query_still_selects_over_the_runs(cli, tmp_path):
    store = tmp_path / "store"
    _fill(store)
    code, out, err = cli("results", "query", "--json", "--results", str(store),
                         "with t as (select kind, metrics__ttft_s__p99 p99 from runs) select * from t order by kind")
    assert code == 0, err
    assert json.loads(out) == [{"kind": "llm", "p99": 0.2}, {"kind": "replay", "p99": None}]
    for sql in ("describe runs", "summarize select kind from runs", "show tables", "explain select 1"):
        code, out, err = cli("results", "query", "--json", "--results", str(store), sql)
        assert code == 0 and json.loads(out), (sql, err)


# ------------------------------------------------------------------------------ 6. versions and hashes
def test_docs_name_the_schema_versions_and_hash_the_code_writes(tmp_path):
    from benchmint.llm.bench import RESULT_SCHEMA_VERSION as BENCH_RESULT
    from benchmint.llm.loadgen.api import RESULT_SCHEMA_VERSION as MLPERF_RESULT
    from benchmint.results.record import SCHEMA_VERSION

    results_md, mlperf_md = (DOCS / "results.md").read_text(), (DOCS / "mlperf.md").read_text()
    assert f"## RunRecord (schema_version {SCHEMA_VERSION})" in results_md
    assert BENCH_RESULT == MLPERF_RESULT
    # result.json is its own document with its own version, and the docs say which is which
    assert f"`result.json` has `schema_version` `{MLPERF_RESULT}`" in mlperf_md
    assert f"`schema_version` `{MLPERF_RESULT}`, the version of the result document" in results_md
    # workload_hash: the first 32 hex digits (128 bits) of a SHA-256, as the code writes it
    from benchmint.llm.traffic import fingerprint

    fp = fingerprint(_Cfg(), _Wl(), _Sched())
    assert re.fullmatch(r"[0-9a-f]{32}", fp["workload_hash"])
    assert "first 32 hex digits (128 bits) of a SHA-256" in results_md


class _Cfg:  # the fields fingerprint reads (the workload parameters: getattr, None when absent)
    trace = sessions = prefix_groups = None


class _Wl:
    requests = ()


class _Sched:
    offsets_s = None


def test_sha256_prefix_is_what_is_stored():
    import orjson

    from benchmint.llm.traffic import PARAM_KEYS, fingerprint

    params = {k: None for k in PARAM_KEYS}
    want = hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    assert fingerprint(_Cfg(), _Wl(), _Sched())["workload_hash"] == want


def test_a_peak_search_lists_its_peak_and_that_it_was_a_sweep(cli, tmp_path):
    # its row had no scenario and an empty headline: it stores no run figures of its own, only the search
    sweep = {"sweep": {"peak_rate": 32.0, "trials_used": 4, "bracket": {"passed": 32.0, "failed": None},
                       "unit": "llm bench requests/s (Poisson arrivals)", "curve": []}}
    ResultsStore(tmp_path).append_many([
        RunRecord(kind="llm", config={"target": "bench"}, workload={"model_name": None}, metrics=sweep),
        RunRecord(kind="llm", config={"target": "bench"}, workload={"model_name": "tiny"},
                  metrics={"sweep": {**sweep["sweep"], "bracket": {"passed": 8.0, "failed": 16.0}, "peak_rate": 8.0}}),
        RunRecord(kind="llm", config={"target": "bench"}, workload={"model_name": "tiny"}, status="partial",
                  metrics={"sweep": {**sweep["sweep"], "interrupted": True}}),
    ])
    code, out, err = cli("results", "list", "--results", str(tmp_path), "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["scenario"] for r in rows] == ["sweep (bench)"] * 3
    assert rows[0]["headline"] == "peak 32 req/s over 4 trials (every trial passed: a floor)"
    assert rows[1]["headline"] == "peak 8 req/s over 4 trials" and rows[1]["model"] == "tiny"
    # a sweep Ctrl-C stopped: its floor is where it stopped, not where the server gave out
    assert rows[2]["headline"] == "peak 32 req/s over 4 trials (every trial passed: a floor); stopped by Ctrl-C"

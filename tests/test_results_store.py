"""The Parquet results store: appends, atomic writes, flattened DuckDB table, bad parts and versions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings

import pyarrow.parquet as pq
import pytest

from benchmint.core.errors import UserError
from benchmint.results.record import RunRecord
from benchmint.results.store import ResultsStore, StoreWarning, default_results_dir, load_run_json


def _rec(**kw) -> RunRecord:
    base = {"kind": "llm", "config": {"rate": 2.0, "backend": "http"},
            "metrics": {"ttft_s": {"p50": 0.1, "p99": 0.5}, "throughput": {"requests_per_s": 1.9},
                        "sessions": {"by_turn": [{"op": "x", "count": 1}]}},
            "workload": {"model_name": "tiny", "parameter_count": 1234}}
    base.update(kw)
    return RunRecord(**base)


def test_default_results_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("BENCHMINT_RESULTS", raising=False)
    assert str(default_results_dir()) == "benchmint-results"
    monkeypatch.setenv("BENCHMINT_RESULTS", str(tmp_path / "env"))
    assert default_results_dir() == tmp_path / "env"
    assert default_results_dir(tmp_path / "flag") == tmp_path / "flag"
    assert ResultsStore().path == tmp_path / "env"


def test_append_and_read_back_every_field(tmp_path):
    store = ResultsStore(tmp_path / "s")
    a, b = _rec(), _rec(kind="replay", metrics={"error": 0.03})
    store.append(a)
    store.append(b)
    assert len(store.part_files()) == 2
    got = {r.id: r for r in store.records()}
    assert got[a.id].to_dict() == a.to_dict()
    assert got[b.id].metrics.to_dict() == {"error": 0.03} and got[b.id].metrics.error == 0.03
    assert store.get(a.id[:-2]).id == a.id  # unique prefix


def test_query_uses_flattened_column_names_and_full_json(tmp_path):
    store = ResultsStore(tmp_path)
    a = _rec()
    store.append(a)
    store.append(_rec(kind="replay", metrics={"error": -0.01}))
    cols, rows = store.query(
        "select id, metrics__ttft_s__p99, config__rate, workload__parameter_count, metrics__error, "
        "json_extract(record_json, '$.metrics.sessions.by_turn[0].op') as op from runs order by kind"
    )
    assert cols == ["id", "metrics__ttft_s__p99", "config__rate", "workload__parameter_count", "metrics__error", "op"]
    llm, replay = rows
    assert llm[0] == a.id and llm[1] == 0.5 and llm[2] == 2.0 and llm[3] == 1234 and llm[4] is None
    assert json.loads(llm[5]) == "x"
    assert replay[4] == -0.01
    # lists are kept as JSON text
    _, rows = store.query("select metrics__sessions__by_turn from runs where kind = 'llm'")
    assert json.loads(rows[0][0]) == [{"op": "x", "count": 1}]


def test_mixed_types_in_one_column_become_text(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(_rec(config={"rate": 2.0}))
    store.append(_rec(config={"rate": "inf"}))
    _, rows = store.query("select config__rate from runs order by config__rate")
    assert sorted(r[0] for r in rows) == ["2.0", "inf"]


def test_bad_sql_is_a_user_error(tmp_path):
    store = ResultsStore(tmp_path)
    store.append(_rec())
    with pytest.raises(UserError, match="query failed.*runs"):
        store.query("select nope from runs")


def test_corrupt_part_is_skipped_with_a_warning_naming_it(tmp_path):
    store = ResultsStore(tmp_path)
    a = _rec()
    store.append(a)
    bad = store.parts_dir / "part-00000000T000000-corrupt.parquet"
    good = store.part_files()[0]
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # truncated copy
    with pytest.warns(StoreWarning, match=bad.name):
        recs = store.records()
    assert [r.id for r in recs] == [a.id]
    assert [p.path for p in store.problems] == [bad]
    with pytest.raises(UserError, match=bad.name):
        store.read_part(bad)
    # the rest stays usable: query and new appends work
    store.append(_rec())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        _, rows = store.query("select count(*) from runs")
    assert rows == [(2,)]


def test_unknown_schema_version(tmp_path):
    store = ResultsStore(tmp_path)
    ok = _rec()
    future = _rec().to_dict() | {"schema_version": "9.0"}
    store.append(ok)
    store._write_part(store.parts_dir / "part-99999999T999999-future.parquet", [future])
    with pytest.warns(StoreWarning, match="part-99999999T999999-future.parquet.*schema_version '9.0'"):
        assert [r.id for r in store.records()] == [ok.id]
    run_json = tmp_path / "run.json"
    run_json.write_text(json.dumps(future))
    with pytest.raises(UserError, match=r"run\.json: unknown RunRecord schema_version '9.0'"):
        load_run_json(run_json)
    with pytest.raises(UserError, match="schema_version"):
        store.append(future)


def test_failed_write_leaves_no_part_and_store_intact(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)
    a = _rec()
    store.append(a)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # killed while writing

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(KeyboardInterrupt):
        store.append(_rec())
    monkeypatch.undo()
    assert len(store.part_files()) == 1
    assert list(store.parts_dir.glob(".*.tmp")) == []
    assert [r.id for r in store.records()] == [a.id]


KILLER = r"""
import sys
from benchmint.results.record import RunRecord
from benchmint.results.store import ResultsStore
store = ResultsStore(sys.argv[1])
import os, time
def batch():
    return [RunRecord(kind="llm", metrics={"sessions": {"x": i, "pad": "y" * 2000}}) for i in range(int(sys.argv[2]))]

store.append_many(batch())
store.append_many(batch())

def stuck(fd):  # the third part is written in full, and the process is killed before it is renamed into place
    print("writing", flush=True)
    time.sleep(3600)

os.fsync = stuck
store.append_many(batch())
"""


def test_process_killed_mid_write_loses_nothing_stored(tmp_path):
    store = ResultsStore(tmp_path)
    kept = [_rec() for _ in range(3)]
    store.append_many(kept)
    batch = 500
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(tmp_path), str(batch)], stdout=subprocess.PIPE,
                            text=True)
    try:
        # killed while it writes a part (its temporary file exists), after two parts were stored (the child
        # says when: waiting for the moment from outside missed it on a loaded host)
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)  # no part may be unreadable
        recs = store.records()
    ids = {r.id for r in recs}
    assert {r.id for r in kept} <= ids
    assert len(recs) - len(kept) == 2 * batch  # the two whole parts, nothing of the third
    # the kill hit mid-write: its temporary file is left behind and is not taken for a part
    assert list(store.parts_dir.glob(".*.tmp"))
    assert all(not p.name.startswith(".") for p in store.part_files())


def test_compact_merges_parts_and_keeps_everything(tmp_path):
    store = ResultsStore(tmp_path)
    recs = [_rec() for _ in range(4)]
    for r in recs:
        store.append(r)
    store.append(recs[0])  # the same id twice: one copy survives
    target = store.compact()
    assert store.part_files() == [target]
    assert sorted(r.id for r in store.records()) == sorted(r.id for r in recs)


def test_append_rejects_unknown_kind(tmp_path):
    with pytest.raises(ValueError):
        RunRecord(kind="nope")
    with pytest.raises(UserError, match="not a valid RunRecord"):
        ResultsStore(tmp_path).append(_rec().to_dict() | {"kind": "nope"})


def test_paths_numpy_and_int_keys_are_stored_as_json(tmp_path):
    from pathlib import Path

    import numpy as np

    store = ResultsStore(tmp_path)
    rec = _rec(config={"out": Path("/x/y"), "tags": {"b", "a"}}, metrics={"output_tokens_total": np.int64(3), "sessions": {"hist": {1: 2}}})
    store.append(rec)
    (got,) = store.records()
    assert got.config == {"out": "/x/y", "tags": ["a", "b"]}
    assert got.metrics.to_dict() == {"output_tokens_total": 3, "sessions": {"hist": {"1": 2}}}


def test_core_columns_exist_and_accelerator_is_derived_from_gpus(tmp_path):
    store = ResultsStore(tmp_path)
    gpu = {"index": 0, "name": "NVIDIA L4", "memory_bytes": 24 * 10**9, "driver": "550"}
    store.append(RunRecord(kind="replay", workload={"trace": "t.json"}, system={"cpu_model": "x", "gpus": [gpu]}))
    cols, rows = store.query("select workload__architecture, workload__parameter_count, system__accelerator__name, "
                             "system__accelerator__count from runs")
    assert rows == [(None, None, "NVIDIA L4", 1)]

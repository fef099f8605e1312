"""The typed result models: derived from the metric table, strict for producers, and the one way to save a run."""

from __future__ import annotations

import json

import pytest

from benchmint.results.metric_table import LLM_METRICS, REPLAY_FIGURES, STAT_KEYS
from benchmint.results.models import (
    LlmMetrics,
    ReplayMetrics,
    Stats,
    SweepMetrics,
    UnknownField,
    metrics_from_dict,
)
from benchmint.results.record import RunRecord
from benchmint.results.save import save_run, save_runs
from benchmint.results.store import ResultsStore


def test_the_llm_model_has_every_metric_of_the_table_and_nothing_else():
    fields = set(LlmMetrics.__struct_fields__)
    assert fields == {m.block for m in LLM_METRICS}
    full = metrics_from_dict("llm", {"requests": {}, "throughput": {}, "token_counts": {}})
    for m in LLM_METRICS:
        if len(m.path) == 2:  # a figure inside a block: a field of the block's Struct
            assert m.path[1] in getattr(full, m.block).__struct_fields__, m.key
    assert set(Stats.__struct_fields__) == set(STAT_KEYS)
    rec = RunRecord(kind="llm", metrics={"ttft_s": {"p50": 0.1, "p99": 0.2, "count": 3},
                                         "throughput": {"requests_per_s": 2.0}, "requests": {"completed": 3}})
    assert isinstance(rec.metrics, LlmMetrics) and rec.metrics.ttft_s.p99 == 0.2 and rec.metrics.ttft_s.mean is None
    assert rec.metrics.throughput.requests_per_s == 2.0 and rec.metrics.requests.completed == 3
    # the mapping view of code written against the dicts; a block the run did not produce is absent
    assert rec.metrics["ttft_s"]["p99"] == 0.2 and rec.metrics.get("goodput") is None and "goodput" not in rec.metrics
    assert "goodput" not in rec.to_dict()["metrics"] and "tpot_s" not in rec.to_dict()["metrics"]


def test_every_replay_figure_of_the_table_is_a_field_of_the_replay_model():
    assert {m.key for m in REPLAY_FIGURES} <= set(ReplayMetrics.__struct_fields__)


@pytest.mark.parametrize(("kind", "metrics", "field"), [
    ("replay", {"coverage": 1.0, "coverage_ratio": 1.0}, "coverage_ratio"),
    ("llm", {"ttft_s": {"p99": 0.1, "p999": 0.2}}, "ttft_s.p999"),
    ("llm", {"sweep": {"peak_rate": 2.0, "peak": 2.0}}, "sweep.peak"),
    ("capture", {"step_s": 0.1}, "step_s"),
])
def test_a_producer_giving_an_undeclared_figure_is_told_which(kind, metrics, field):
    with pytest.raises(UnknownField, match=f"no field '{field}'"):
        RunRecord(kind=kind, metrics=metrics)


def test_a_figure_of_the_wrong_type_is_refused():
    with pytest.raises(ValueError, match="coverage"):
        RunRecord(kind="replay", metrics={"coverage": "all"})


def test_a_sweep_record_reads_as_a_sweep_whatever_its_run_kind():
    for kind in ("llm", "mlperf"):
        rec = RunRecord(kind=kind, metrics={"sweep": {"peak_rate": 4.0, "curve": [{"rate": 4.0, "passed": True}]}})
        assert rec.result_kind == "sweep" and isinstance(rec.metrics, SweepMetrics)
        assert rec.metrics.sweep.curve[0].passed is True


def test_save_run_writes_run_json_appends_and_returns_the_paths(tmp_path):
    rec = RunRecord(kind="replay", metrics={"error": 0.01, "coverage": 1.0})
    saved = save_run(rec, tmp_path / "out", store=tmp_path / "store")
    assert saved.run_json == tmp_path / "out" / "run.json" and saved.store == tmp_path / "store"
    assert json.loads(saved.run_json.read_text())["metrics"] == {"error": 0.01, "coverage": 1.0}
    assert saved.part in ResultsStore(tmp_path / "store").part_files()
    assert [r.id for r in ResultsStore(tmp_path / "store").records()] == [rec.id]
    only_file = save_run(RunRecord(kind="replay"), tmp_path / "o2", store=tmp_path / "store", append=False)
    assert only_file.part is None and only_file.run_json.is_file()
    assert len(ResultsStore(tmp_path / "store").records()) == 1
    # many at once, ids already stored are not stored twice
    more = [rec, RunRecord(kind="llm"), RunRecord(kind="llm")]
    first = save_runs(more, store=tmp_path / "store")
    assert (first.total, first.new) == (3, 2) and first.part is not None
    again = save_runs(more, store=tmp_path / "store")
    assert (again.new, again.part) == (0, None) and len(ResultsStore(tmp_path / "store").records()) == 3

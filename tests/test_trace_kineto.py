"""Joining the PARAM Kineto traces to their execution traces."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from benchmint.core.errors import TraceError
from benchmint.trace import KinetoJoin, join_kineto, load, load_kineto, summarize

PARAM = Path(__file__).parent / "data" / "param"


@pytest.fixture(scope="module")
def linear() -> tuple:
    tr = load(PARAM / "linear_et.json.gz")
    return tr, join_kineto(tr, PARAM / "linear_kineto.json.gz")


def test_linear_joins_fully_by_sequence(linear):
    tr, j = linear
    assert isinstance(j, KinetoJoin)
    # this Kineto trace predates record-function ids: ops are aligned by name sequence
    assert not j.kineto.has_rf_ids and j.method == "sequence"
    assert j.matched_fraction == 1.0
    assert j.matched_nodes == j.candidate_nodes
    assert j.warnings == []
    for n in tr.top_level_ops():
        t = j.time_of(n)
        assert t is not None and t.dur_us >= 0
        assert j.duration_s(n) == pytest.approx(t.dur_us * 1e-6)


def test_linear_device_kernels_and_gaps(linear):
    tr, j = linear
    mms = [n for n in tr.top_level_ops() if n.name == "aten::mm"]
    kernels = [k for n in mms for k in j.kernels_of(n)]
    assert kernels, "matrix multiplies launched GPU kernels"
    assert all(k.cat in ("kernel", "gpu_memset", "gpu_memcpy") for k in kernels)
    assert all(k.stream is not None and k.dur_us >= 0 for k in kernels)
    assert any(k.cat == "kernel" and "gemm" in k.name for k in kernels)
    # a gap before every matched top-level op but the first of each thread
    top = tr.top_level_ops()
    assert len(j.gaps_us) >= len(top) - len(tr.thread_ids) - 5
    assert all(g >= 0 for g in j.gaps_us.values())
    first = {}
    for n in top:
        first.setdefault(n.tid, n)
    assert all(j.gap_before_s(n) is None for n in first.values())
    d = j.to_dict()
    assert d["matched_fraction"] == 1.0 and d["device_events"] > 0 and d["device_time_s"] > 0
    assert d["time_by_op"]["aten::mm"]["count"] == len(mms)
    assert d["time_by_op"]["aten::mm"]["device_s"] > 0


def test_resnet_partial_match_is_reported_not_fatal():
    tr = load(PARAM / "resnet_et.json.gz")
    j = join_kineto(tr, PARAM / "resnet_kineto.json.gz")
    # the Kineto trace is of another run (no DDP): a partial match, said so in a warning
    assert 0.2 < j.matched_fraction < 1.0
    assert any("no Kineto event" in w for w in j.warnings)
    assert j.to_dict()["device_events"] > 0


@pytest.mark.parametrize("rank", [0, 3])
def test_dlrm_per_rank(rank):
    tr = load(PARAM / "dlrm_pytorch_et.tar.gz", rank=rank)
    j = join_kineto(tr, PARAM / "dlrm_kineto.tar.gz", rank=rank)
    assert f"worker{rank}_" in j.kineto.path
    assert j.kineto.rank == rank
    assert j.matched_fraction > 0.99
    comm = [n for n in tr.top_level_ops() if n.name.startswith("c10d::")]
    assert comm and all(j.time_of(n) is not None for n in comm)
    # the all-to-all launched NCCL kernels
    assert any("nccl" in k.name.lower() for n in comm for k in j.kernels_of(n))


def test_dlrm_first_rank_by_default():
    k = load_kineto(PARAM / "dlrm_kineto.tar.gz")
    assert "worker0_" in k.path and k.rank == 0


def test_summary_with_kineto(linear):
    tr, j = linear
    s = summarize(tr, j)
    assert s["kineto"]["matched_fraction"] == 1.0
    assert s["kineto"]["method"] == "sequence"
    json.dumps(s)  # JSON-ready


def test_unmatched_kineto_is_not_fatal(tmp_path):
    tr = load(PARAM / "pt2_et.json.tar.gz")
    k = {"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "aten::nothing", "pid": 1, "tid": 1, "ts": 0,
                          "dur": 1, "args": {}}]}
    p = tmp_path / "k.json"
    p.write_text(json.dumps(k))
    j = join_kineto(tr, p)
    assert j.matched_fraction == 0.0 and j.method == "none" and j.warnings


def test_kineto_errors(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"traceEvents": [')
    with pytest.raises(TraceError, match="truncated"):
        load_kineto(p)
    p.write_text('{"schema": "1.0.1", "nodes": []}')
    with pytest.raises(TraceError, match="execution trace, not a Kineto trace"):
        load_kineto(p)
    p.write_text("[1, 2]")
    with pytest.raises(TraceError, match="not a Kineto trace"):
        load_kineto(p)
    g = tmp_path / "x.json.gz"
    g.write_bytes(gzip.compress(b'{"traceEvents": []}')[:-6])
    with pytest.raises(TraceError, match="compressed"):
        load_kineto(g)
    with pytest.raises(TraceError, match="no such file"):
        load_kineto(tmp_path / "missing.json")
    with pytest.raises(TraceError, match="rank 42"):
        load_kineto(PARAM / "dlrm_kineto.tar.gz", rank=42)

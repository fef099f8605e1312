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


def test_modern_cuda_layout_kernels_by_correlation_and_external_id(tmp_path):
    """torch >= 2.x on CUDA: runtime calls carry the op's External id and their own correlation; kernels carry
    the correlation. A launch inside the op's time span and one found only by External id are both kept."""
    tr = load(PARAM / "pt2_et.json.tar.gz")
    mm1, mm2 = tr.top_level_ops()
    ev = [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#5", "pid": 7, "tid": 7, "ts": 0, "dur": 100,
         "args": {"Record function id": tr.iterations[0].node.rf_id, "External id": 1}},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 7, "tid": 7, "ts": 10, "dur": 20,
         "args": {"Record function id": mm1.rf_id, "External id": 11}},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 7, "tid": 7, "ts": 50, "dur": 20,
         "args": {"Record function id": mm2.rf_id, "External id": 12}},
        # launched inside mm1
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 7, "tid": 7, "ts": 12, "dur": 3,
         "args": {"External id": 11, "correlation": 901}},
        # recorded on another thread (no containment): found by External id
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 7, "tid": 99, "ts": 55, "dur": 3,
         "args": {"External id": 12, "correlation": 902}},
        {"ph": "X", "cat": "kernel", "name": "sm90_gemm_a", "pid": 0, "tid": 7, "ts": 20, "dur": 5,
         "args": {"External id": 11, "correlation": 901, "stream": 7, "device": 0}},
        {"ph": "X", "cat": "kernel", "name": "sm90_gemm_b", "pid": 0, "tid": 7, "ts": 60, "dur": 4,
         "args": {"External id": 12, "correlation": 902, "stream": 7, "device": 0}},
        {"ph": "X", "cat": "kernel", "name": "orphan", "pid": 0, "tid": 7, "ts": 90, "dur": 1,
         "args": {"correlation": 999, "stream": 7, "device": 0}},
    ]
    p = tmp_path / "k.json"
    p.write_text(json.dumps({"traceEvents": ev}))
    j = join_kineto(tr, p)
    assert j.method == "rf_id"
    assert [k.name for k in j.kernels_of(mm1)] == ["sm90_gemm_a"]
    assert [k.name for k in j.kernels_of(mm2)] == ["sm90_gemm_b"]
    assert j.kernels_of(mm1)[0].stream == 7
    assert j.unattributed_device_events == 1
    assert j.gap_before_s(mm2) == pytest.approx(20e-6)
    # each iteration's subtree holds its op's kernel
    it5, it6 = tr.iterations
    assert [k.name for k in j.kernels_of(it5.node)] == ["sm90_gemm_a"]
    assert [k.name for k in j.kernels_of(it6.node)] == ["sm90_gemm_b"]

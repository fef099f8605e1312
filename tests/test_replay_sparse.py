"""Sparse (COO) tensors: the trace records them as storage-less tensors of their dense shape. The replay does
not run the ops on them as dense ops (another computation), and every replay of the trace says so."""

from __future__ import annotations

import torch
from torch import nn

from benchmint.replay.api import replay_trace
from benchmint.replay.plan import SPARSE_REASON, build_plan
from benchmint.replay.source import view_from_trace
from benchmint.trace import damage, load
from benchmint.trace.capture import capture_steps

N = 300


def _capture(out):
    torch.manual_seed(0)
    idx = torch.randint(0, N, (2, 900))
    a = torch.sparse_coo_tensor(idx, torch.rand(900), (N, N)).coalesce()
    lin = nn.Linear(16, 16)
    x = torch.randn(N, 16)

    def step():
        lin(torch.sparse.mm(a, x)).sum().backward()

    capture_steps(step, out, warmup=1, measure=5, record=1)


def test_ops_on_sparse_tensors_are_stood_in_for_and_the_replay_says_the_time_is_not_the_steps(tmp_path):
    _capture(tmp_path)
    tr = load(tmp_path / "et.json")
    said = damage.find(tr)
    assert said is not None and "sparse" in said and "aten::_sparse_mm" in said
    plan = build_plan(view_from_trace(tr), "cpu")
    sparse = [s for s in plan.steps if s.op.name == "aten::_sparse_mm"]
    assert sparse and all(not s.replayed and s.reason == SPARSE_REASON for s in sparse)
    assert plan.persistent_bytes < N * N * 4  # no dense stand-in of the sparse matrix
    assert all(s.replayed for s in plan.steps if s.op.name in ("aten::linear", "aten::mm"))
    res = replay_trace(tmp_path / "et.json", iters=3, warmup=1)
    assert "sparse" in (res.result.get("trace_damage") or "")
    assert res.result["coverage"] < 1.0


def test_a_dense_trace_names_no_sparse_tensors(tmp_path):
    lin = nn.Linear(8, 8)
    x = torch.randn(4, 8)
    capture_steps(lambda: lin(x).sum().backward(), tmp_path, warmup=1, measure=5, record=1)
    tr = load(tmp_path / "et.json")
    assert damage.sparse_ops(tr) is None and damage.find(tr) is None

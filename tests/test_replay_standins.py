"""A skipped op (arguments that cannot be rebuilt: a quantized linear's packed weights) is stood in for by CPU
work of its un-observed time: its recorded duration holds the recorders' cost of every node under it, which
the replay spent on top of the real step (a dynamically quantized MLP read +72% before, +2% after)."""

from __future__ import annotations

import torch
from torch import nn

from benchmint.replay import replay_trace
from benchmint.replay.plan import build_plan
from benchmint.replay.source import view_from_trace
from benchmint.trace import load
from benchmint.trace.capture import capture_steps
from benchmint.trace.kineto import join_kineto


def _quantized_step():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 16)).eval()
    q = torch.ao.quantization.quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)

    def step():
        with torch.inference_mode():
            q(torch.randn(8, 64))

    return step


def test_a_skipped_ops_stand_in_spends_its_time_less_the_recorders_cost(tmp_path):
    capture_steps(_quantized_step(), tmp_path, warmup=2, measure=5)
    tr = load(tmp_path / "et.json")
    plan = build_plan(view_from_trace(tr, join_kineto(tr, tmp_path / "kineto.json")))
    skipped = [st for st in plan.steps if st.standin_s]
    assert skipped and all(st.op.name == "quantized::linear_dynamic" for st in skipped)
    recorded = [st.standin_s for st in skipped]
    cost = 2e-6  # a node's cost to the observers
    assert plan.correct_standins(cost) == len(skipped)
    for st, was in zip(skipped, recorded, strict=True):
        assert st.standin_s == max(0.0, was - cost * st.op.subtree_nodes) < was

    res = replay_trace(tmp_path, iters=3, warmup=1)  # calibrated: the stand-ins corrected by the measured cost
    cost = res.result["calibration"]["observer_cost_per_op_node_s"]
    assert res.result["coverage"] < 1.0 and cost > 0
    spent = [st for st in res.plan.steps if st.op.name == "quantized::linear_dynamic"]
    assert spent and all(st.standin_s == max(0.0, st.op.dur_s - cost * st.op.subtree_nodes) < st.op.dur_s
                         for st in spent)

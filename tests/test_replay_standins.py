"""A skipped op (arguments that cannot be rebuilt: a quantized linear's packed weights) is stood in for by CPU
work of its un-observed time: its recorded duration holds the recorders' cost of every node under it, which
the replay spent on top of the real step (a dynamically quantized MLP read +72% before, +2% after)."""

from __future__ import annotations

import torch
from torch import nn

from benchmint.replay import replay_trace
from benchmint.replay.plan import build_plan
from benchmint.replay.source import view_from_trace
from benchmint.replay.types import MIN_NODE_S
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
        assert st.standin_s == _less(was, cost, st.op.subtree_nodes) < was

    res = replay_trace(tmp_path, iters=3, warmup=1)  # calibrated: the stand-ins corrected by the measured cost
    cost = res.result["standins"]["cost_per_node_s"]  # (the first calibration's; the gaps are placed by a second)
    assert res.result["coverage"] < 1.0 and cost >= 0  # (a busy host can read no cost at all)
    assert _spent_as(res, cost) and res.result["standins"]["how"].endswith("this replay's calibration)")


def _spent_as(res, cost):
    spent = [st for st in res.plan.steps if st.op.name == "quantized::linear_dynamic"]
    return spent and all(st.standin_s == _less(st.op.dur_s, cost, st.op.subtree_nodes) for st in spent)


def _less(recorded, cost, nodes):
    # the recorders' cost taken out, never below a dispatch per node (a noisy calibration can read a cost per node
    # above what the stand-in's nodes recorded)
    return max(recorded - cost * nodes, min(recorded, MIN_NODE_S * nodes))


def test_stand_ins_are_corrected_without_gaps_and_from_a_gaps_file(tmp_path):
    """--gaps none calibrates nothing for the gaps, and a replay from a gaps file calibrates nothing at all:
    the stand-ins spent their recorded durations there (an exported quantized MLP's runner read +163%)."""
    from benchmint.replay import gaps_file

    cap = tmp_path / "cap"
    capture_steps(_quantized_step(), cap, warmup=2, measure=5)
    bare = replay_trace(cap, gaps="none", iters=3, warmup=1)
    info = bare.result["standins"]
    assert info["ops"] == 2 and info["cost_per_node_s"] is not None and "calibration" in info["how"]
    assert _spent_as(bare, info["cost_per_node_s"])
    assert info["spent_s"] == sum(st.standin_s for st in bare.plan.steps if st.standin_s)

    settled = replay_trace(cap, iters=3, warmup=1)
    path = gaps_file.write(tmp_path / "gaps.json", settled.result, settled.gaps_ns, len(settled.plan.steps))
    cost = settled.result["standins"]["cost_per_node_s"]
    assert gaps_file.read(path).standin_cost_s == cost
    again = replay_trace(cap, gaps_from=str(path), iters=3, warmup=1)
    assert again.result["standins"]["cost_per_node_s"] == cost and "settled these gaps" in again.result["standins"]["how"]
    assert _spent_as(again, cost) and again.result["calibration"] is None


def test_a_step_without_skipped_ops_has_no_stand_ins(tmp_path):
    capture_steps(lambda: torch.randn(16, 16) @ torch.randn(16, 16), tmp_path, warmup=1, measure=5)
    assert replay_trace(tmp_path, gaps="none", iters=2, warmup=1).result["standins"] is None

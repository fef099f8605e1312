"""Python numbers that torch wrapped into 0-dim tensors (``clip_grad_norm_``'s ``total_norm + 1e-6``) are replayed
as numbers, so that the op's result keeps the recorded dtype."""

from __future__ import annotations

import torch
from torch import nn

from benchmint.replay.plan import build_plan
from benchmint.replay.source import view_from_trace
from benchmint.trace import load
from benchmint.trace.capture import capture_steps


def test_clip_grad_norm_replays_its_wrapped_numbers_in_the_recorded_dtype(tmp_path):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x = torch.randn(4, 8)

    def step():
        m(x).sum().backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    capture_steps(step, tmp_path, warmup=1, measure=5, record=1)
    view = view_from_trace(load(tmp_path / "et.json"))
    # the trace records the wrapped numbers as 0-dim float64 tensors beside float32 ones
    mixed = [o for o in view.ops if o.name in ("aten::add", "aten::mul")
             and any(a.kind == "tensor" and a.value.shape == () and a.value.dtype == torch.float64 for a in o.inputs)]
    assert {o.name for o in mixed} == {"aten::add", "aten::mul"}
    plan = build_plan(view, "cpu")
    assert plan.retyped() == []  # no "ops ran in another dtype" warning
    assert all(s.replayed for s in plan.steps if s.op in mixed)
    # the loop assigns their results (not a pinned stand-in of the recorded dtype) and runs
    at = {id(s.op): s.index for s in plan.steps}
    texts = dict(plan.lines)
    for o in mixed:
        k = at[id(o)]
        assert texts[k].startswith("R[") and f"= f{k}(" in texts[k]
    fn = plan.compile()
    with plan.grad_context():
        fn(plan.registers())

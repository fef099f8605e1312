"""The calibration's probe of whether an op's time depends on its values (replay/value_probe.py): what it runs
and what it leaves alone. No timing is asserted: only that every probed op got a ratio and the replay's own
state is untouched."""

from __future__ import annotations

import torch
from torch import nn

from benchmint.replay.plan import build_plan
from benchmint.replay.source import view_from_trace
from benchmint.replay.value_probe import _probe_lines, zero_input_ratios
from benchmint.trace import load
from benchmint.trace.capture import capture_steps


def test_the_probe_calls_the_op_again_on_zeros_or_copies_and_leaves_the_steps_own_line_to_assign():
    line = "_r = f7(R[3], R[12], 2, alpha=c9); R[4] = _r[0]; R[5] = _r[1]"
    zeros = _probe_lines(7, line, zeros=True)
    copies = _probe_lines(7, line, zeros=False)
    assert zeros == ["_z3 = _zeros_of(R[3])", "_z12 = _zeros_of(R[12])", "_S.append((-3, _now()))",
                     "try:", "    f7(_z3, _z12, 2, alpha=c9)", "except Exception:", "    _refused.add(7)",
                     "_S.append((-4, _now()))", "del _z3, _z12"]
    assert copies[:2] == ["_z3 = _copy_of(R[3])", "_z12 = _copy_of(R[12])"] and copies[3:] == zeros[3:]
    assert _probe_lines(7, "R[2] = R[1].as_strided((2,), (1,), 0)", zeros=True) is None  # no call of the op


def test_every_probed_op_of_a_training_step_gets_a_ratio_and_the_replays_tensors_are_not_written(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    x, y = torch.randn(8, 16), torch.randn(8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x).squeeze(1), y).backward()
        opt.step()

    capture_steps(step, tmp_path, warmup=1, measure=5, record=1)
    view = view_from_trace(load(tmp_path / "et.json"))
    plan, same = build_plan(view, "cpu"), build_plan(view, "cpu")
    every = {s.index: 1.0 for s in plan.steps if s.replayed}  # as if every op took 1 s: all probed
    ratios = zero_input_ratios(plan, every, iters=1)
    sqrt = [s.index for s in plan.steps if s.op.name == "aten::sqrt"]
    assert sqrt and set(sqrt) <= set(ratios)
    assert all(r > 0 for r in ratios.values())
    assert set(ratios) <= set(every)
    fn = same.compile()  # the probe ran 4 iterations (2 a side): the same plan's own 4 leave the same state
    with same.grad_context():
        for _ in range(4):
            fn(same.registers())
    for a, b in zip(same.init, plan.init, strict=True):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)  # the probe's own calls ran on new tensors: the plan's not written
    assert zero_input_ratios(plan, {}, iters=1) == {}  # nothing long enough to probe


def test_an_op_that_refuses_zeros_goes_unprobed_the_others_keep_their_ratios_and_the_random_state_is_kept(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(16, 8)
    x = torch.randn(4, 16)

    def step():
        probs = torch.softmax(model(x), dim=1)
        return torch.multinomial(probs, 2)  # all-zero probabilities: "invalid multinomial distribution"

    with torch.inference_mode():
        capture_steps(step, tmp_path, warmup=1, measure=5, record=1)
    view = view_from_trace(load(tmp_path / "et.json"))
    plan = build_plan(view, "cpu")
    every = {s.index: 1.0 for s in plan.steps if s.replayed}
    multinomial = [s.index for s in plan.steps if s.op.name == "aten::multinomial"]
    assert multinomial and set(multinomial) <= set(every)
    before = torch.random.get_rng_state()
    ratios = zero_input_ratios(plan, every, iters=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert not set(multinomial) & set(ratios)
    assert any(plan.steps[i].op.name in ("aten::addmm", "aten::linear", "aten::_softmax") for i in ratios)

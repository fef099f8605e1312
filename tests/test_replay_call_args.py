"""The replayed call passes what the original's op received, and no more: an argument that holds its
default is left out of the generated line (a keyword costs a Python call about half a microsecond, which the
original, calling the op from C++ inside a composite or the autograd engine, did not pay)."""

from __future__ import annotations

import torch

from benchmint.replay.ops import defaulted, resolve, split_args
from benchmint.replay.plan import build_plan
from benchmint.replay.source import view_from_trace
from benchmint.trace import load
from benchmint.trace.capture import capture_steps


def test_arguments_at_their_default_are_left_out_of_the_call():
    add_ = resolve("aten::add_.Tensor(Tensor(a!) self, Tensor other, *, Scalar alpha=1) -> Tensor(a!)")
    x = torch.zeros(2)
    assert split_args(add_, [x, x, 1], defaulted(add_, [x, x, 1])) == ([x, x], {})
    # another value, or the same number of another type, is passed as recorded
    assert split_args(add_, [x, x, 2], defaulted(add_, [x, x, 2])) == ([x, x], {"alpha": 2})
    assert split_args(add_, [x, x, 1.0], defaulted(add_, [x, x, 1.0])) == ([x, x], {"alpha": 1.0})
    # positional defaults go only from the end: a default before a recorded value stays
    sum_ = resolve("aten::sum.dim_IntList(Tensor self, int[1]? dim, bool keepdim=False, *, ScalarType? dtype=None) -> Tensor")
    assert split_args(sum_, [x, [0], False, None], defaulted(sum_, [x, [0], False, None])) == ([x, [0]], {})
    to = resolve("aten::to.dtype(Tensor(a) self, ScalarType dtype, bool non_blocking=False, bool copy=False, "
                 "MemoryFormat? memory_format=None) -> Tensor(a)")
    assert split_args(to, [x, 6, False, True, None], defaulted(to, [x, 6, False, True, None])) == ([x, 6, False, True], {})
    # a written argument (out=) is never left out, nor a device (the dry run hands factories its own)
    empty = resolve("aten::empty.memory_format(SymInt[] size, *, ScalarType? dtype=None, Layout? layout=None, "
                    "Device? device=None, bool? pin_memory=None, MemoryFormat? memory_format=None) -> Tensor")
    assert split_args(empty, [[2], None, None, None, None, None],
                      defaulted(empty, [[2], None, None, None, None, None])) == ([[2]], {"device": None})


def test_a_replayed_step_calls_its_ops_without_their_default_arguments(tmp_path):
    w, b = torch.randn(4, 4), torch.randn(4)

    def step():
        y = torch.nn.functional.linear(torch.ones(2, 4), w, b)
        y.add_(b)
        y.add_(b, alpha=2)
        return y.sum()

    capture_steps(step, tmp_path, warmup=1, measure=5, record=1)
    plan = build_plan(view_from_trace(load(tmp_path / "et.json")), "cpu")
    assert all(s.replayed for s in plan.steps)
    adds = [line for i, line in plan.lines if i >= 0 and plan.steps[i].op.name == "aten::add_"]
    assert len(adds) == 2
    assert "alpha" not in adds[0] and "alpha=2" in adds[1]
    R = plan.registers()
    plan.compile()(R)  # the shortened calls run

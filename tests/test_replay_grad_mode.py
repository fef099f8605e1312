"""The grad mode a replay runs its iterations under follows the recorded step: a training step's ops ran
outside inference mode and paid its bookkeeping (version counters, views), so its replay runs under no_grad;
an inference step's under inference_mode."""

from __future__ import annotations

import torch
from torch import nn

from benchmint.replay.conditions import INFERENCE_MODE, NO_GRAD, grad_mode_of
from benchmint.replay.plan import build_plan
from benchmint.replay.source import view_from_trace
from benchmint.trace import load
from benchmint.trace.capture import capture_steps


def _plan(step, out):
    capture_steps(step, out, warmup=1, measure=5, record=1)
    return build_plan(view_from_trace(load(out / "et.json")), "cpu")


def test_a_training_step_replays_under_no_grad_on_ordinary_tensors_and_an_inference_step_under_inference_mode(
        tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    x = torch.randn(4, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def train():
        opt.zero_grad(set_to_none=True)
        model(x).sum().backward()
        opt.step()

    def infer():
        with torch.inference_mode():
            model(x)

    trained = _plan(train, tmp_path / "train")
    assert trained.grad_mode == NO_GRAD
    tensors = [t for t in trained.init if isinstance(t, torch.Tensor)]
    assert tensors and not any(t.is_inference() for t in tensors)  # updated in place outside inference mode
    fn = trained.compile()
    with trained.grad_context():
        assert not torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        fn(trained.registers())
        fn(trained.registers())  # the optimizer's in-place updates of the plan's own tensors run again
    inferred = _plan(infer, tmp_path / "infer")
    assert inferred.grad_mode == INFERENCE_MODE
    with inferred.grad_context():
        assert torch.is_inference_mode_enabled()


def test_the_mode_is_read_from_the_autograd_engines_scopes_or_backward_ops():
    assert grad_mode_of(["autograd::engine::evaluate_function: MmBackward0"], ["aten::mm"]) == NO_GRAD
    assert grad_mode_of([], ["aten::mm", "aten::threshold_backward"]) == NO_GRAD  # a trace without scopes
    assert grad_mode_of(["ProfilerStep#3", "## forward ##"], ["aten::mm", "aten::relu"]) == INFERENCE_MODE

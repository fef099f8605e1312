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


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 1)
        self.register_buffer("shifted", torch.zeros(4, 8))

    def forward(self, x):
        torch.add(x, 1.0, out=self.shifted)  # out= on tensors that need no grad: the original recorded no graph
        return self.fc2(torch.relu(self.bn(self.fc1(self.shifted))))


def _graph_outputs(plan, fn_marks, iterations=3):
    """Per iteration, the plan steps that made a tensor with autograd history (one that was not in the
    registers before the step)."""
    seen: list[set[int]] = []
    for _ in range(iterations):
        regs = plan.registers()
        hit: set[int] = set()
        known: set[int] = set()

        def mark(i, regs=regs, hit=hit, known=known):
            new = {id(t) for t in regs if isinstance(t, torch.Tensor) and t.grad_fn is not None} - known
            if new:
                hit.add(i)
                known.update(new)

        fn_marks.__globals__["_mark"] = mark
        with plan.grad_context():
            fn_marks(regs)
            assert not torch.is_grad_enabled()  # the iteration leaves grad mode as it found it
        seen.append(hit)
    return seen


def test_a_training_steps_forward_records_autograd_graph_on_its_parameters_and_nothing_else_does(tmp_path):
    torch.manual_seed(0)
    model = _Net()
    x = torch.randn(4, 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def train():
        opt.zero_grad(set_to_none=True)
        model(x).sum().backward()
        opt.step()

    capture_steps(train, tmp_path, warmup=1, measure=5, record=1)
    view = view_from_trace(load(tmp_path / "et.json"))
    plan = build_plan(view, "cpu")
    g = plan.graph
    assert g["built"] and g["parameters"] == len(list(model.parameters())) == 6
    assert g["parameters_from"].startswith("the tensors the optimizer updates")
    why = {(r["op"], r["why"]) for r in g["ops_without_graph"]}
    assert ("aten::add", "writes through out=") in why  # the forward's out= op
    assert ("aten::add_", "writes into a tensor kept across iterations") in why  # batch norm's step counter
    kept = [t for t in plan.init if isinstance(t, torch.Tensor)]
    assert sum(t.requires_grad for t in kept) == 6
    from benchmint.replay.phases import graph_region, phases
    region = graph_region(view, phases(view))
    for hit in _graph_outputs(plan, plan.compile(standins=False, marks=True)):
        assert hit and all(region[i] for i in hit)  # the forward's ops built it, the backward's none
    assert not any(t.grad_fn is not None for t in kept)  # no iteration's graph carried into the next

    # the forward cut from the step no longer shows the backward that followed: it runs as it ran in the step
    from benchmint.replay.adapt import adapt_view
    fwd = build_plan(adapt_view(view, "phase:forward")[0], "cpu")
    assert fwd.grad_mode == NO_GRAD and fwd.graph["built"] and fwd.graph["parameters"] == 6
    bwd = build_plan(adapt_view(view, "phase:backward")[0], "cpu")
    assert bwd.grad_mode == NO_GRAD and not bwd.graph["built"]

    plain = build_plan(view, "cpu", graph=False)
    assert plain.graph == {"built": False}
    assert not any(_graph_outputs(plain, plain.compile(standins=False, marks=True), iterations=1)[0])


def test_an_inference_step_builds_no_graph(tmp_path):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

    def infer():
        with torch.inference_mode():
            model(torch.randn(4, 8))

    assert _plan(infer, tmp_path).graph == {"built": False}


def test_without_an_optimizer_the_parameters_are_the_forwards_floating_inputs_but_never_batch_norm_statistics(
        tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))
    x = torch.randn(4, 8)

    def forward_backward():  # gradients only: no optimizer step recorded
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    plan = _plan(forward_backward, tmp_path)
    assert plan.graph["built"] and plan.graph["parameters_from"].startswith("the floating-point tensors")
    assert all(s.replayed and s.substitute is None for s in plan.steps), plan.skipped()  # batch norm ran
    stats = [t for t in plan.init if isinstance(t, torch.Tensor) and t.shape == (16,) and not t.requires_grad]
    assert len(stats) >= 2  # running mean and variance: the kernel updates them, no gradient flows there
    fn = plan.compile()
    with plan.grad_context():
        for _ in range(3):
            fn(plan.registers())
    assert not any(isinstance(t, torch.Tensor) and t.grad_fn is not None for t in plan.init)

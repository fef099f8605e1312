"""A step recorded under autocast replays in the dtypes the original computed in: the trace holds each op as
called (float32 inputs, a bfloat16 output), then the casts and the op again on the cast tensors; replaying the
op as called, outside autocast, ran it in float32 (a channels-last CNN read +23%) and said nothing. Where an op
still comes out in another dtype than recorded, the result says so and later ops read the recorded dtype."""

from __future__ import annotations

import torch
from torch import nn
from torch.profiler import profile

from benchmint.replay import source
from benchmint.replay.headline import retyped_line
from benchmint.replay.plan import build_plan
from benchmint.replay.source import view_from_trace
from benchmint.trace import load
from benchmint.trace.capture import capture_steps


def _step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)).eval()
    x = torch.randn(2, 3, 16, 16)

    def infer():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x)

    return infer


def _plan(tmp_path):
    capture_steps(_step(), tmp_path, warmup=1, measure=5, record=1)
    return build_plan(view_from_trace(load(tmp_path / "et.json")), "cpu")


def _replayed_dtypes(plan):
    """The input dtype of every convolution and matmul the replayed iteration ran."""
    fn = plan.compile()
    with plan.grad_context(), profile(record_shapes=True) as prof:
        fn(plan.registers())
    return [(e.name.removeprefix("aten::"), e.input_dtypes[0]) for e in prof.events()
            if e.name in ("aten::convolution", "aten::addmm")]


def test_an_autocast_step_replays_its_convolutions_and_matmuls_in_bfloat16(tmp_path):
    plan = _plan(tmp_path)
    seen = _replayed_dtypes(plan)
    assert seen and all(dt == "c10::BFloat16" for _, dt in seen), seen
    assert any(s.op.name in ("aten::to", "aten::_to_copy") for s in plan.steps)  # the casts are replayed too
    assert plan.retyped() == []


def test_an_op_that_still_comes_out_in_another_dtype_is_reported_and_later_ops_read_the_recorded_one(
        tmp_path, monkeypatch):
    monkeypatch.setattr(source, "calls_itself", lambda node, callees: False)  # as before the fix
    plan = _plan(tmp_path)
    rt = {x["op"]: x for x in plan.retyped()}
    assert rt["aten::conv2d"]["replayed_dtype"] == "float32" and rt["aten::conv2d"]["recorded_dtype"] == "bfloat16"
    assert "aten::conv2d x1 (float32, recorded bfloat16)" in retyped_line({"retyped": plan.retyped()})
    # later ops read the recorded bfloat16: the linear (float32 weight, autocast not replayed) cannot run on
    # it and is skipped, saying why, rather than replayed silently in float32
    assert dict(_replayed_dtypes(plan))["convolution"] == "float"
    linear = [s for s in plan.steps if s.op.name == "aten::linear"]
    assert linear and not linear[0].replayed and "dtype" in linear[0].reason


def test_a_bfloat16_layer_norm_planned_on_the_meta_device_is_not_retyped_by_its_float32_statistics(tmp_path):
    """Tensors over the dry run's 1 MiB are tried on the meta device, whose layer norm returns float32 mean and
    rstd for bfloat16 inputs (as CUDA's does; the CPU kernel returns bfloat16): only an op's first output
    decides, so a pure bfloat16 model is not reported as retyped and its normalised output stays linked."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 1024), nn.LayerNorm(1024), nn.Linear(1024, 4)).to(torch.bfloat16)
    x = torch.randn(1024, 256, dtype=torch.bfloat16)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        model(x).float().sum().backward()
        opt.step()

    capture_steps(step, tmp_path, warmup=1, measure=5, record=1)
    plan = build_plan(view_from_trace(load(tmp_path / "et.json")), "cpu")
    assert plan.retyped() == [] and len(plan.replayed) == len(plan.steps)
    assert any(s.op.name == "aten::native_layer_norm" for s in plan.steps)


def _node(name, inputs):
    from types import SimpleNamespace

    from benchmint.trace import TensorRef

    return SimpleNamespace(name=name, inputs=inputs,
                           input_tensors=lambda: [v for v in inputs if isinstance(v, TensorRef)])


def test_autocast_re_dispatch_is_told_from_an_overload_calling_another():
    from benchmint.trace import TensorRef

    def t(dtype):
        return TensorRef(tensor_id=1, storage_id=2, offset=0, numel=4, itemsize=2, device="cpu", shape=[4],
                         strides=[1], dtype=dtype)

    calls = source.calls_itself
    # CPU autocast: the op again on cast inputs
    assert calls(_node("aten::conv2d", [t("float32")]), [_node("aten::to", [t("float32")]),
                                                        _node("aten::conv2d", [t("bfloat16")])])
    # CUDA autocast's float32 policies: the op again with dtype=float32 it was called without
    assert calls(_node("aten::softmax", [t("float16"), -1, None]), [_node("aten::softmax", [t("float16"), -1, 6])])
    # an overload calling another: arange(end) -> arange(start, end, step, out)
    assert not calls(_node("aten::arange", [10, None]), [_node("aten::arange", [0, 10, 1, t("int64")])])
    assert not calls(_node("aten::add", [t("float32"), t("float32"), 1]), [])

"""``--scale batch=F`` / ``--scale seq=F``: the scaled step has the shapes the real model has at that size, a
size that cannot be attributed is refused naming its op, and a scaled step replays and exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmint.core.errors import UserError
from benchmint.models.workloads import build
from benchmint.replay import replay_trace
from benchmint.replay.adapt import phases
from benchmint.replay.scale import scale_view
from benchmint.replay.source import view_from_trace
from benchmint.replay.types import TENSOR, TENSOR_LIST
from benchmint.trace import load
from benchmint.trace.capture import capture_steps


def _capture(d: Path, step) -> Path:
    capture_steps(step, d, warmup=1, measure=5, record=1)
    return d


def _view(d: Path):
    return view_from_trace(load(d / "et.json"))


def _shapes(view) -> list[tuple]:
    """Per op: its name, and each input and output as the replay makes it (a tensor's shape, strides, offset,
    dtype; any other argument's value: the sizes written into view, expand, split, ... arguments)."""
    def one(a):
        if a.kind == TENSOR and a.value is not None and a.value.dtype is not None:
            return (tuple(a.value.shape), a.value.strides, a.value.offset, a.value.dtype)
        if a.kind == TENSOR and a.value is not None and a.value.numel == 0 and a.value.dtype is None:
            return ("undefined tensor",)  # (an optional tensor left out: its id is no size)
        if a.kind == TENSOR_LIST:
            return tuple((r.shape, r.strides, r.offset) if r is not None else None for r in a.value)
        return (a.kind, repr(a.value))

    return [(o.name, tuple(one(a) for a in o.inputs), tuple(one(a) for a in o.outputs)) for o in view.ops]


@pytest.fixture(scope="module")
def caps(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scale")
    out = {}
    for tag, name, b, s in (("b2", "decoder_infer", 2, 48), ("b4", "decoder_infer", 4, 48),
                            ("s96", "decoder_infer", 2, 96), ("lstm8", "bilstm", 8, 32), ("lstm16", "bilstm", 16, 32),
                            ("enc4", "encoder_cls", 4, 48), ("enc8", "encoder_cls", 8, 48),
                            ("enc96", "encoder_cls", 4, 96)):
        out[tag] = _capture(root / tag, build(name, batch=b, seq=s).step)
    return out


@pytest.mark.parametrize(("small", "big", "spec"), [("b2", "b4", "batch=2"), ("b2", "s96", "seq=2"),
                                                    ("lstm8", "lstm16", "batch=2"), ("enc4", "enc8", "batch=2"),
                                                    ("enc4", "enc96", "seq=2")])
def test_a_scaled_step_has_the_shapes_of_the_real_model_at_that_size(caps, small, big, spec):
    v = _view(caps[small])
    scaled = scale_view(v, [spec], phases(v))
    real = _shapes(_view(caps[big]))
    got = _shapes(scaled.view)
    assert got == real
    assert got != _shapes(v)  # something did change
    assert scaled.info["ops_with_new_shapes"] > 0


def _attention_train_step(batch: int):
    """A training step of a small multi-head attention block whose batch (3) equals the count of multi-head
    attention's stacked projections (q, k, v: its backward's sizes hold a 3 beside the batch)."""
    torch.manual_seed(0)
    attn, head = torch.nn.MultiheadAttention(32, 2, batch_first=True), torch.nn.Linear(32, 50)
    emb = torch.nn.Embedding(50, 32)
    params = [*attn.parameters(), *head.parameters(), *emb.parameters()]
    opt = torch.optim.AdamW(params, 1e-3)
    ids, y = torch.randint(0, 50, (batch, 10)), torch.randint(0, 50, (batch, 10))

    def step():
        h = emb(ids)
        for _ in range(2):  # two layers' worth of sizes to decide
            h = h + attn(h, h, h, need_weights=False)[0]
        torch.nn.functional.cross_entropy(head(h).flatten(0, 1), y.flatten()).backward()
        opt.step()
        opt.zero_grad()

    return step


def _scales_as_real(tmp_path: Path, small: Any, big: Any) -> Any:
    """``small``'s captured step scaled by batch=2 (``scale_view``'s result), asserted to have the shapes of
    ``big``'s captured step (the real model at twice the batch), op by op."""
    v = _view(_capture(tmp_path / "small", small))
    scaled = scale_view(v, ["batch=2"], phases(v))
    assert _shapes(scaled.view) == _shapes(_view(_capture(tmp_path / "big", big)))
    return scaled


def test_a_batch_equal_to_another_dimension_is_decided_by_the_shapes_that_follow(tmp_path):
    # each reading of the 3s is searched pass by pass: 48 passes (the former limit) refused this step
    scaled = _scales_as_real(tmp_path, _attention_train_step(3), _attention_train_step(6))
    assert scaled.info["readings_checked"] > 0


def _synthetic_data_step(batch: int):
    """A training loop that makes up its data in the step (``torch.randint`` ids and labels, as benchmarks do)."""
    torch.manual_seed(0)
    emb, head = torch.nn.Embedding(50, 16), torch.nn.Linear(16, 50)
    opt = torch.optim.SGD([*emb.parameters(), *head.parameters()], 0.1)

    def step():
        ids, y = torch.randint(0, 50, (batch, 12)), torch.randint(0, 50, (batch, 12))
        torch.nn.functional.cross_entropy(head(emb(ids)).flatten(0, 1), y.flatten()).backward()
        opt.step()
        opt.zero_grad()

    return step


def test_a_step_that_makes_up_its_data_scales_by_the_data_it_makes(tmp_path):
    v = _view(_capture(tmp_path / "b3", _synthetic_data_step(3)))
    for spec, real in (("batch=2", _synthetic_data_step(6)), ("seq=2", None)):
        scaled = scale_view(v, [spec], phases(v))
        if real is not None:
            assert _shapes(scaled.view) == _shapes(_view(_capture(tmp_path / "b6", real)))
        randint = [o for o in scaled.view.ops if o.name == "aten::randint"]
        assert [list(o.outputs[0].value.shape) for o in randint] == ([[6, 12]] * 2 if real else [[3, 24]] * 2)


def _padded_lm_step(batch: int, seq: int):
    """A language-model training step as tutorials write it: token ids padded from random lengths with a boolean
    mask made from ``arange(seq)`` (``ids[arange(S)[None] >= lens[:, None]] = PAD``), shifted by one for the
    targets, through ``nn.TransformerEncoderLayer`` (multi-head attention's packed q, k, v) with its padding mask."""
    torch.manual_seed(0)
    emb, head = torch.nn.Embedding(50, 16), torch.nn.Linear(16, 50)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 24, batch_first=True)
    opt = torch.optim.SGD([*emb.parameters(), *layer.parameters(), *head.parameters()], 0.1)

    def step():
        ids = torch.randint(1, 50, (batch, seq))
        lens = torch.randint(3, 9, (batch,))
        ids[torch.arange(seq)[None] >= lens[:, None]] = 0
        x = ids[:, :-1]
        logits = head(layer(emb(x), src_key_padding_mask=x == 0))
        torch.nn.functional.cross_entropy(logits.reshape(-1, 50), ids[:, 1:].reshape(-1), ignore_index=0).backward()
        opt.step()
        opt.zero_grad()

    return step


def test_a_padded_language_model_step_scales_in_batch_and_sequence(tmp_path):
    # refused before: the mask's arange was "more than one reading" (torch checks a boolean index's shape when the
    # op runs, not on the meta device), and attention's saved v (the same view made again inside the op) and
    # select_backward's sizes did not follow the sequence
    v = _view(_capture(tmp_path / "small", _padded_lm_step(4, 10)))
    for spec, big in (("batch=2", (8, 10)), ("seq=2", (4, 20))):
        scaled = scale_view(v, [spec], phases(v))
        assert _shapes(scaled.view) == _shapes(_view(_capture(tmp_path / spec, _padded_lm_step(*big))))


def _mask_by_index_step(batch: int):
    """A padding mask gathered by index (``mask[arange(B)[:, None], arange(S)]``, as Hugging Face's mask helpers
    do): its lengths' size feeds only values, so reading it as the batch or as a fixed size both fit the shapes."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 8)

    def step():
        ids, lens = torch.randint(0, 50, (batch, 12)), torch.randint(3, 12, (batch,))
        mask = torch.arange(12)[None] < lens[:, None]
        keep = mask[torch.arange(batch)[:, None], torch.arange(12)[None]]
        (emb(ids) * keep[..., None]).sum().backward()

    return step


def test_a_size_that_feeds_only_values_is_refused_saying_so(tmp_path):
    v = _view(_capture(tmp_path / "m", _mask_by_index_step(5)))
    with pytest.raises(UserError, match="as a fixed size gives consistent shapes too"):
        scale_view(v, ["batch=2"], phases(v))


def test_a_scaled_replay_runs_and_says_what_was_scaled(caps):
    res = replay_trace(caps["b2"], scale=("batch=2",), gaps="none", warmup=0, iters=2)
    r = res.result
    sc = r["scale"]
    assert sc["recorded"] == {"batch": 2} and sc["scaled"] == {"batch": 4.0}
    assert sc["size_arguments_rewritten"] > 0 and sc["unscaled_iter_time_s"] > 0
    assert r["coverage"] == 1.0
    assert r["error"] is None and "scaled" in r["error_note"]
    # the replayed tensors are the scaled ones
    emb = next(s for s in res.plan.steps if s.op.name == "aten::embedding")
    assert emb.op.outputs[0].value.shape == (4, 48, 64)


def _ambiguous_step():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 8)
    ids = torch.randint(0, 10, (4, 6))

    def step() -> None:
        with torch.inference_mode():
            y = emb(ids).sum()
            buf = torch.zeros(4)  # four of something: the batch size, or not?
            buf.add_(y)

    return step


def test_a_size_that_cannot_be_attributed_is_refused_naming_the_op(tmp_path, cli):
    d = _capture(tmp_path / "amb", _ambiguous_step())
    v = _view(d)
    with pytest.raises(UserError) as e:
        scale_view(v, ["batch=2"], phases(v))
    assert "aten::zeros" in str(e.value) and "unambiguously" in str(e.value)
    code, _, err = cli("replay", str(d), "--scale", "batch=2", "--gaps", "none", "--iters", "1", "--no-store")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "aten::zeros" in err


def test_a_scale_that_cannot_be_applied_is_one_line_and_exit_2(caps, cli):
    for spec, word in (("batch=0.3", "whole"), ("width=2", "batch=F"), ("batch=-1", "positive"),
                       ("seq=x", "number")):
        code, _, err = cli("replay", str(caps["b2"]), "--scale", spec, "--gaps", "none", "--iters", "1", "--no-store")
        assert code == 2, (spec, err)
        assert len(err.strip().splitlines()) == 1 and word in err, (spec, err)


def test_a_scaled_export_runs(caps, tmp_path, cli):
    out = tmp_path / "bench"
    code, _, err = cli("export", str(caps["b2"]), "--out", str(out), "--scale", "batch=2")
    assert code == 0, err
    meta = json.loads((out / "export.json").read_text())
    assert meta["scale"] == ["batch=2"] and any(a["kind"] == "scale" for a in meta["adapted"])
    assert "scaled" in (out / "README.md").read_text()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, str(out / "run.py"), "--iters", "2", "--warmup", "0", "--gaps", "none",
                        "--json", str(tmp_path / "r.json")], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["scale"]["scaled"] == {"batch": 4.0} and r["exported"]["scale"] == ["batch=2"]
    assert r["coverage"] == 1.0
    # another size has no error: the fidelity block said "measured" -50% against the unscaled original
    assert r["error"] is None and r["fidelity"]["error"] is None and r["fidelity"]["verdict"] == "no reference"
    assert "no error: a scaled replay is the step at another size" in p.stdout


def test_an_embedding_bag_whose_index_count_does_not_follow_the_batch_is_refused(tmp_path):
    """Bags of random lengths: the offsets follow the batch, the packed indices' count does not (it is the sum
    of the lengths). Scaling the offsets alone would replay twice the bags over the same indices, silently."""
    torch.manual_seed(0)
    bag = torch.nn.EmbeddingBag(100, 8, mode="sum")
    lens = torch.randint(1, 6, (16,))
    idx = torch.randint(0, 100, (int(lens.sum()),))
    offs = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)[:-1]])
    assert idx.numel() % 16  # not a multiple of the batch

    def step() -> None:
        with torch.inference_mode():
            bag(idx, offs).sum()

    v = _view(_capture(tmp_path / "bag", step))
    with pytest.raises(UserError) as e:
        scale_view(v, ["batch=2"], phases(v))
    assert "embedding_bag" in str(e.value)


def test_a_step_whose_ops_follow_no_size_read_as_the_batch_is_refused_not_replayed_unchanged(tmp_path):
    """A DataLoader over a TensorDataset: the step's inputs are the whole dataset (512 rows), the batch is
    made inside by picking and stacking 8 rows. Reading 512 as the batch scaled no op (0 of N ops with new
    shapes) and the replay said it had scaled the step."""
    torch.manual_seed(0)
    data = torch.randn(512, 16)
    lin = torch.nn.Linear(16, 4)

    def step() -> None:
        with torch.inference_mode():
            lin(torch.stack([data[i] for i in range(8)])).sum()

    v = _view(_capture(tmp_path / "rows", step))
    with pytest.raises(UserError) as e:
        scale_view(v, ["batch=2"], phases(v))
    assert "no op of the step would change shape" in str(e.value) and "512" in str(e.value)
    assert scale_view(v, ["batch=1"], phases(v)).info["ops_with_new_shapes"] == 0  # factor 1: nothing to change


def _linear_on_3d_input_step(batch: int):
    """``nn.Linear`` on a ``[B, S, F]`` float input in training: the linear flattens the input to ``[B * S, F]``
    (a view on the input's storage, no op of the trace makes it) and keeps that view for its weight gradient."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(48, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(m.parameters(), 0.1)
    x, y = torch.randn(batch, 16, 48), torch.randint(0, 10, (batch,))

    def step() -> None:
        torch.nn.functional.cross_entropy(m(x).mean(1), y).backward()
        opt.step()
        opt.zero_grad()

    return step


def test_a_view_of_a_step_input_follows_the_input(tmp_path):
    # refused before: the [B * S, 48] view of the input read by the weight gradient's mm was never scaled (a step
    # input was not on its storage for later views to find), "a and b must have same reduction dim"
    scaled = _scales_as_real(tmp_path, _linear_on_3d_input_step(8), _linear_on_3d_input_step(16))
    mm = [o for o in scaled.view.ops if o.name == "aten::mm"]
    assert any(a.value.shape == (256, 48) for o in mm for a in o.inputs if a.kind == TENSOR)


class _NativeGroupNorm(torch.nn.Module):
    """``native_group_norm`` called as is: the forward op, with ``N``, ``C`` and ``HxW`` as scalars, in the trace."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.native_group_norm(h, None, None, h.shape[0], h.shape[1], h.shape[2], 4, 1e-5)[0]


def _group_norm_step(batch: int, amp: bool):
    """A 1-D conv net with ``nn.GroupNorm`` in training (fp32 or under CPU bfloat16 autocast):
    ``native_group_norm_backward`` takes the batch as a scalar ``N`` and reads the mean and rstd, ``[N, groups]``,
    that ``group_norm`` saved (no op of the trace returns them), and ``native_group_norm`` takes ``N`` too."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv1d(1, 16, 9, stride=2, padding=4), torch.nn.GroupNorm(4, 16),
                            torch.nn.SiLU(), torch.nn.Conv1d(16, 16, 9, stride=2, padding=4),
                            _NativeGroupNorm(), torch.nn.SiLU(), torch.nn.AdaptiveAvgPool1d(1),
                            torch.nn.Flatten(), torch.nn.Linear(16, 5))
    opt = torch.optim.SGD(m.parameters(), 0.01, momentum=0.9)
    x, y = torch.randn(batch, 1, 200), torch.randint(0, 5, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16-autocast"])
def test_a_group_norm_training_step_scales_its_scalar_sizes(tmp_path, amp):
    # refused before: native_group_norm_backward's N kept the recorded batch ("Expect input to have ... elements")
    scaled = _scales_as_real(tmp_path, _group_norm_step(6, amp), _group_norm_step(12, amp))
    back = [o for o in scaled.view.ops if o.name == "aten::native_group_norm_backward"]
    assert len(back) == 2 and all(o.inputs[5].value == 12 and o.inputs[2].value.shape == (12, 4) for o in back)
    fwd = [o for o in scaled.view.ops if o.name == "aten::native_group_norm"]
    assert len(fwd) == 1 and fwd[0].inputs[3].value == 12 and fwd[0].outputs[1].value.shape == (12, 4)


def test_a_scalar_size_that_cannot_be_attributed_is_refused(tmp_path):
    # N and C are both 4, the batch size: either can carry it (N * C * HxW holds both ways) and nothing after
    # the op tells, so the step is refused rather than replayed with one guessed
    x = torch.randn(4, 4, 50)

    def step() -> None:
        with torch.inference_mode():
            torch.native_group_norm(x, None, None, 4, 4, 50, 2, 1e-5)[0].sum()

    v = _view(_capture(tmp_path / "gn", step))
    with pytest.raises(UserError, match="native_group_norm .*more than one reading") as e:
        scale_view(v, ["batch=2"], phases(v))
    assert "N 4, C 4" in str(e.value)

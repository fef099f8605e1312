"""A trace the execution-trace observer failed on (nested tensors) is said to be one, at capture and at replay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmint.trace import damage, load
from benchmint.trace.model import Node, TensorRef, Trace

ENV = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def _t(i: int) -> TensorRef:
    return TensorRef(i, i, 0, 6, 4, "cpu", (2, 3), (3, 1), "float32", "Tensor(float)")


def _trace(*extra: Node) -> Trace:
    return Trace([
        Node(1, "[pytorch|profiler|execution_trace|process]", 1),
        Node(2, "[pytorch|profiler|execution_trace|thread]", 1, tid=1),
        Node(3, "aten::relu", 2, "aten::relu(Tensor self) -> Tensor", inputs=[_t(1)], outputs=[_t(2)]),
        Node(4, "aten::ones", 2, "aten::ones(SymInt[] size, *, ScalarType? dtype=None) -> Tensor", inputs=[[2, 3]],
             input_types=["GenericList[Int,Int]"], outputs=[_t(3)]),
        *extra,
    ])


def test_a_whole_trace_and_a_partial_one_have_lost_nothing():
    assert damage.find(_trace()) is None
    # an op cut out of a longer trace hangs from a parent left behind, with its arguments: a partial trace, which
    # the loader names; the recording lost nothing of what is there
    assert damage.find(_trace(Node(9, "aten::relu", 77, "aten::relu(Tensor self) -> Tensor", inputs=[_t(1)]))) is None


def test_a_dense_fast_path_trace_with_an_op_left_hanging_is_not_blamed_on_nested_tensors():
    # the fused layers run on dense tensors too (enable_nested_tensor=False), and are then recorded whole; an op
    # whose parent was still open on another thread when the observer stopped hangs with its arguments
    fwd = "aten::_transformer_encoder_layer_fwd(Tensor src, int embed_dim) -> Tensor"
    assert damage.find(_trace(
        Node(5, "aten::_transformer_encoder_layer_fwd", 2, fwd, inputs=[_t(2), 32], input_types=["Tensor(float)", "Int"]),
        Node(6, "aten::relu", 40, "aten::relu(Tensor self) -> Tensor", inputs=[_t(1)]),
    )) is None


def test_real_traces_of_every_schema_at_hand_have_lost_nothing():
    data = Path(__file__).parent / "data" / "param"
    for name in ("linear_et.json.gz", "resnet_et.json.gz", "1.0.3-chakra.0.0.4/resnet_1gpu_et.json.gz"):
        assert damage.find(load(data / name)) is None, name


def test_ranks_that_lost_the_same_are_named_together():
    assert damage.by_rank([None, None]) is None
    assert damage.by_rank(["a", None, "a", "a", "b", "a"]) == "ranks 0, 2-3, 5: a; rank 4: b"


def test_an_op_name_that_looks_like_markup_is_printed_as_it_is(cli, tmp_path):
    et = {"schema": "1.1.1-chakra.0.0.4", "pid": 1, "time": "", "start_ts": 0, "finish_ts": 1, "nodes": [
        {"id": 1, "name": "[pytorch|profiler|execution_trace|process]", "ctrl_deps": 1,
         "inputs": {"values": [], "shapes": [], "types": [], "strides": []},
         "outputs": {"values": [], "shapes": [], "types": [], "strides": []}, "attrs": []},
        {"id": 2, "name": "[pytorch|profiler|execution_trace|thread]", "ctrl_deps": 1,
         "inputs": {"values": [], "shapes": [], "types": [], "strides": []},
         "outputs": {"values": [], "shapes": [], "types": [], "strides": []}, "attrs": []},
        {"id": 3, "name": "aten::_nested_[/x]", "ctrl_deps": 0,
         "inputs": {"values": [], "shapes": [], "types": [], "strides": []},
         "outputs": {"values": [], "shapes": [], "types": [], "strides": []},
         "attrs": [{"name": "op_schema", "type": "string", "value": "aten::_nested_x(Tensor self) -> Tensor"}]},
    ]}
    (tmp_path / "et.json").write_text(json.dumps(et))
    code, out, err = cli("inspect", str(tmp_path / "et.json"))
    assert code == 0, err
    assert "aten::_nested_[/x]" in out and "no recorded arguments" in " ".join(out.replace("│", " ").split())


def test_ops_the_observer_could_not_record_are_counted_and_nested_tensors_named_as_the_cause():
    lost = damage.find(_trace(
        Node(5, "aten::_transform_bias_rescale_qkv", 0,
             "aten::_transform_bias_rescale_qkv(Tensor qkv, Tensor qkv_bias, int num_heads) -> (Tensor, Tensor, Tensor)",
             outputs=[_t(4)]),
        Node(6, "aten::bmm", 40, "aten::bmm(Tensor self, Tensor mat2) -> Tensor", inputs=[_t(4), _t(4)]),
        Node(7, "aten::_nested_tensor_softmax_with_shape", 0,
             "aten::_nested_tensor_softmax_with_shape(Tensor self, Tensor query) -> Tensor", inputs=[_t(4), _t(4)]),
    ))
    assert lost is not None
    assert "1 op(s) have no recorded arguments (aten::_transform_bias_rescale_qkv)" in lost
    assert "1 op(s) hang from a parent that is not in the trace" in lost  # (parent 0: left at the root)
    assert "aten::_nested_tensor_softmax_with_shape" in lost and "enable_nested_tensor=False" in lost


NESTED_SCRIPT = """
import sys, torch
from benchmint.trace import capture
from torch import nn
torch.manual_seed(0)
nested = sys.argv[1] == "nested"
enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 2, 64, batch_first=True, dropout=0.0), 1,
                            enable_nested_tensor=nested).eval()
x = torch.randn(4, 16, 32)
pad = torch.zeros(4, 16, dtype=torch.bool)
pad[1:, 12:] = True  # padded tails: the fast path packs the batch into a nested tensor
with torch.inference_mode():
    for _ in range(20):
        enc(x, src_key_padding_mask=pad)
        {step}
"""


@pytest.mark.slow
def test_a_capture_of_nested_tensors_says_the_trace_lost_the_step_and_its_replay_says_the_error_is_not_its(tmp_path):
    script = tmp_path / "enc.py"
    script.write_text(textwrap.dedent(NESTED_SCRIPT.format(step="capture.step()")))
    base = [sys.executable, "-m", "benchmint.cli.main"]
    said = {}
    for how in ("nested", "dense"):
        out = tmp_path / how
        r = subprocess.run([*base, "capture", "--no-store", "--warmup", "2", "--measure", "5", "--out", str(out),
                            "--", sys.executable, str(script), how], capture_output=True, text=True, env=ENV,
                           cwd=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        said[how] = " ".join(r.stdout.split())  # (rich wraps at the terminal's width)
    assert "lost part of the step" in said["nested"] and "enable_nested_tensor=False" in said["nested"]
    assert "lost part of the step" not in said["dense"]  # the fast path on dense tensors is recorded whole
    assert damage.find(load(tmp_path / "dense" / "et.json")) is None
    r = subprocess.run([*base, "inspect", str(tmp_path / "nested" / "et.json")], capture_output=True, text=True,
                       env=ENV, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "lost part of the step" in " ".join(r.stdout.replace("│", " ").split())

    r = subprocess.run([*base, "replay", str(tmp_path / "nested"), "--no-store", "--iters", "3", "--warmup", "1",
                        "--threads", "1", "--json", str(tmp_path / "r.json")], capture_output=True, text=True,
                       env=ENV, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "not the step's fidelity: the execution-trace observer lost part of the step" in " ".join(r.stdout.split())
    assert "nested" in json.loads((tmp_path / "r.json").read_text())["trace_damage"]
    # an exported benchmark says it too: its README and export.json travel where benchmint is not installed
    r = subprocess.run([*base, "export", str(tmp_path / "nested"), "--out", str(tmp_path / "bench")],
                       capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "**not the whole step**" in (tmp_path / "bench" / "README.md").read_text()
    assert "nested" in json.loads((tmp_path / "bench" / "export.json").read_text())["trace_damage"]

"""What held-out kinds of workload need of a replay: a mixture of experts' ``slot // k`` dispatch, padded
sequences packed for an LSTM, and an allocator that does not return a training step's gradients to the system
every iteration (an embedding-bag recommender's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmint.replay import replay_trace
from benchmint.replay.tensors import _sequence_lengths

L, F = "Tensor(long int)", "Tensor(float)"


def _node(i, name, schema, inputs, shapes, types, outputs, oshapes, otypes):
    return {"id": i, "name": name, "ctrl_deps": 2,
            "inputs": {"values": list(inputs), "shapes": list(shapes), "types": list(types),
                       "strides": [[] for _ in inputs]},
            "outputs": {"values": list(outputs), "shapes": list(oshapes), "types": list(otypes),
                        "strides": [[] for _ in outputs]},
            "attrs": [{"name": "rf_id", "type": "uint64", "value": i}, {"name": "tid", "type": "uint64", "value": 1},
                      {"name": "op_schema", "type": "string", "value": schema}]}


def _et(path: Path, ops: list[dict]) -> Path:
    root = [{"id": 1, "name": "[pytorch|profiler|execution_trace|process]", "ctrl_deps": 0,
             "inputs": {"values": [], "shapes": [], "types": []}, "outputs": {"values": [], "shapes": [], "types": []},
             "attrs": [{"name": "rf_id", "type": "uint64", "value": 0}]},
            {"id": 2, "name": "[pytorch|profiler|execution_trace|thread]", "ctrl_deps": 1,
             "inputs": {"values": [], "shapes": [], "types": []}, "outputs": {"values": [], "shapes": [], "types": []},
             "attrs": [{"name": "rf_id", "type": "uint64", "value": 0}]}]
    path.write_text(json.dumps({"schema": "1.1.1-chakra.0.0.4", "pid": 1, "time": "x", "start_ts": 0,
                                "finish_ts": 1, "nodes": [*root, *ops]}))
    return path


def _t(tid: int, numel: int, itemsize: int = 8) -> list:
    return [tid, tid, 0, numel, itemsize, "cpu"]


def test_a_scalar_divisor_is_never_zero_and_maps_expert_slots_onto_tokens(tmp_path):
    """``token = argsort(expert_of_slot) // top_k``: torch records the 2 as a 0-dim tensor without its value.
    Zero made the division fail (ZeroDivisionError, op skipped); 1 made the token index run past the tokens."""
    ops = [
        _node(3, "aten::argsort", "aten::argsort.stable(Tensor self, *, bool stable, int dim=-1, "
              "bool descending=False) -> Tensor", [_t(10, 1024), True, -1, False], [[1024], [], [], []],
              [L, "Bool", "Int", "Bool"], [_t(11, 1024)], [[1024]], [L]),
        _node(4, "aten::floor_divide", "aten::floor_divide(Tensor self, Tensor other) -> Tensor",
              [_t(11, 1024), _t(12, 1)], [[1024], []], [L, L], [_t(13, 1024)], [[1024]], [L]),
        _node(5, "aten::index_select", "aten::index_select(Tensor self, int dim, Tensor index) -> Tensor",
              [_t(14, 512 * 8, 4), 0, _t(13, 1024)], [[512, 8], [], [1024]], [F, "Int", L],
              [_t(15, 1024 * 8, 4)], [[1024, 8]], [F]),
    ]
    res = replay_trace(_et(tmp_path / "et.json", ops), gaps="none", warmup=0, iters=1)
    assert res.result["skipped"] == [] and res.result["coverage"] == 1.0
    div = next(s for s in res.plan.steps if s.op.name == "aten::floor_divide")
    assert div.replayed and div.substitute is None
    # the gather reads the token indices the division computed in the loop (not valid ones made up instead)
    lines = dict(res.plan.lines)
    quotient = lines[1].split(" = ", 1)[0]
    assert quotient.startswith("R[") and quotient in lines[2].split("(", 1)[1], lines
    divisor = [t for t in res.plan.init if isinstance(t, torch.Tensor) and t.dim() == 0 and not t.is_floating_point()]
    assert [int(t) for t in divisor] == [2]


def test_padded_sequence_lengths_pack_into_the_recorded_data_and_batch_sizes(tmp_path):
    """pack_padded_sequence(enforce_sorted=False): lengths sorted in the step, then packed; lengths of zeros
    made the pack fail ('Length of all samples has to be greater than 0') and the LSTM ran on made-up batch
    sizes."""
    ops = [
        _node(3, "aten::sort", "aten::sort(Tensor self, int dim=-1, bool descending=False) -> "
              "(Tensor values, Tensor indices)", [_t(10, 6), -1, True], [[6], [], []], [L, "Int", "Bool"],
              [_t(11, 6), _t(12, 6)], [[6], [6]], [L, L]),
        _node(4, "aten::_pack_padded_sequence", "aten::_pack_padded_sequence(Tensor input, Tensor lengths, "
              "bool batch_first) -> (Tensor, Tensor)", [_t(13, 6 * 20 * 4, 4), _t(11, 6), True],
              [[6, 20, 4], [6], []], [F, L, "Bool"], [_t(14, 57 * 4, 4), _t(15, 20)], [[57, 4], [20]], [F, L]),
        _node(5, "aten::relu", "aten::relu(Tensor self) -> Tensor", [_t(14, 57 * 4, 4)], [[57, 4]], [F],
              [_t(16, 57 * 4, 4)], [[57, 4]], [F]),
    ]
    res = replay_trace(_et(tmp_path / "et.json", ops), gaps="none", warmup=0, iters=1)
    assert res.result["skipped"] == [] and res.result["coverage"] == 1.0
    lengths = next(t for t in res.plan.init if isinstance(t, torch.Tensor) and t.dtype == torch.int64)
    assert int(lengths.sum()) == 57 and int(lengths.max()) == 20 and int(lengths.min()) >= 1


@pytest.mark.parametrize("n,total,longest", [(6, 57, 20), (16, 16, 1), (3, 60, 20), (5, 40, 30)])
def test_sequence_lengths_hit_the_total_and_the_longest(n, total, longest):
    g = torch.Generator().manual_seed(0)
    x = _sequence_lengths(n, total, longest, g)
    assert x.tolist() == sorted(x.tolist(), reverse=True)
    assert int(x[0]) == longest and int(x.min()) >= 1 and int(x.sum()) == total


_FAULTS = r"""
import json, resource, sys, torch
from benchmint.replay import replay_trace
res = replay_trace(sys.argv[1], gaps="none", warmup=0, iters=1)
def flt():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():  # a training step's gradients, freed together (as a replay frees them after the optimizer's update)
    grads = [torch.ones(3 << 20) for _ in range(4)]
    del grads
for _ in range(3):
    step()
a = flt()
for _ in range(5):
    step()
print(json.dumps({"allocator": res.result["allocator"], "faults": (flt() - a) / 5}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_a_replay_settles_malloc_so_freed_gradients_are_not_faulted_in_again(tmp_path):
    """With glibc's starting thresholds, four 12 MiB tensors freed together are returned to the system and
    faulted in again on the next iteration (1,200+ page faults per iteration here); a long-running training
    process has long raised them, and so does a replay now."""
    et = _et(tmp_path / "et.json", [_node(3, "aten::relu", "aten::relu(Tensor self) -> Tensor", [_t(10, 12, 4)],
                                          [[3, 4]], [F], [_t(11, 12, 4)], [[3, 4]], [F])])
    env = dict(os.environ)
    env.pop("BENCHMINT_REPLAY_MALLOC", None)
    p = subprocess.run([sys.executable, "-c", _FAULTS, str(et)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert "settled" in out["allocator"]
    assert out["faults"] < 100, out


def test_a_divisor_of_several_values_maps_every_row_onto_the_tokens(tmp_path):
    """``positions // k`` with ``k`` a (4, 1) tensor: every value of it must be the k that keeps the quotient
    within the rows it indexes (a divisor of 1 in any row ran the index past the table)."""
    ops = [
        _node(3, "aten::argsort", "aten::argsort.stable(Tensor self, *, bool stable, int dim=-1, "
              "bool descending=False) -> Tensor", [_t(10, 1024), True, -1, False], [[4, 256], [], [], []],
              [L, "Bool", "Int", "Bool"], [_t(11, 1024)], [[4, 256]], [L]),
        _node(4, "aten::floor_divide", "aten::floor_divide(Tensor self, Tensor other) -> Tensor",
              [_t(11, 1024), _t(12, 4)], [[4, 256], [4, 1]], [L, L], [_t(13, 1024)], [[4, 256]], [L]),
        _node(5, "aten::embedding", "aten::embedding(Tensor weight, Tensor indices, SymInt padding_idx=-1, "
              "bool scale_grad_by_freq=False, bool sparse=False) -> Tensor",
              [_t(14, 32 * 8, 4), _t(13, 1024), -1, False, False], [[32, 8], [4, 256], [], [], []],
              [F, L, "Int", "Bool", "Bool"], [_t(15, 1024 * 8, 4)], [[4, 256, 8]], [F]),
    ]
    for seed in range(3):
        res = replay_trace(_et(tmp_path / "et.json", ops), gaps="none", warmup=0, iters=1, seed=seed)
        assert res.result["skipped"] == [] and res.result["coverage"] == 1.0
        divisor = [t for t in res.plan.init if isinstance(t, torch.Tensor) and t.shape == (4, 1)]
        assert [int(v) for v in divisor[0].flatten()] == [8] * 4


def test_a_divisor_of_positions_from_a_shifted_arange_keeps_the_quotient_in_range(tmp_path):
    """``arange(512, 1024) // k`` indexing 512 rows: the dividend's values reach 1023, not its 512 elements;
    k = 1 (from the element count) ran the index past the table."""
    ops = [
        _node(3, "aten::arange", "aten::arange.start(Scalar start, Scalar end, *, ScalarType? dtype=None, "
              "Layout? layout=None, Device? device=None, bool? pin_memory=None) -> Tensor",
              [512, 1024, 4, 0, "cpu", False], [[], [], [], [], [], []], ["Int", "Int", "Int", "Int", "Device", "Bool"],
              [_t(11, 512)], [[512]], [L]),
        _node(4, "aten::floor_divide", "aten::floor_divide(Tensor self, Tensor other) -> Tensor",
              [_t(11, 512), _t(12, 1)], [[512], []], [L, L], [_t(13, 512)], [[512]], [L]),
        _node(5, "aten::index_select", "aten::index_select(Tensor self, int dim, Tensor index) -> Tensor",
              [_t(14, 512 * 8, 4), 0, _t(13, 512)], [[512, 8], [], [512]], [F, "Int", L],
              [_t(15, 512 * 8, 4)], [[512, 8]], [F]),
    ]
    res = replay_trace(_et(tmp_path / "et.json", ops), gaps="none", warmup=0, iters=1)
    divisor = [t for t in res.plan.init if isinstance(t, torch.Tensor) and t.dim() == 0 and not t.is_floating_point()]
    assert [int(t) for t in divisor] == [2]
    div = next(s for s in res.plan.steps if s.op.name == "aten::floor_divide")
    assert div.replayed and res.result["skipped"] == []


def test_positions_seen_through_a_view_still_bound_the_divisor(tmp_path):
    """``argsort(x).view(-1) // k``: the view's output holds the same positions; without carrying their bound
    through it k came out 1 and the quotient indexed past the rows."""
    ops = [
        _node(3, "aten::argsort", "aten::argsort.stable(Tensor self, *, bool stable, int dim=-1, "
              "bool descending=False) -> Tensor", [_t(10, 1024), True, -1, False], [[1024], [], [], []],
              [L, "Bool", "Int", "Bool"], [_t(11, 1024)], [[1024]], [L]),
        _node(4, "aten::view", "aten::view(Tensor(a) self, SymInt[] size) -> Tensor(a)",
              [_t(11, 1024), [1024]], [[1024], []], [L, "GenericList[Int]"], [_t(16, 1024)], [[1024]], [L]),
        _node(5, "aten::floor_divide", "aten::floor_divide(Tensor self, Tensor other) -> Tensor",
              [_t(16, 1024), _t(12, 1)], [[1024], []], [L, L], [_t(13, 1024)], [[1024]], [L]),
        _node(6, "aten::index_select", "aten::index_select(Tensor self, int dim, Tensor index) -> Tensor",
              [_t(14, 512 * 8, 4), 0, _t(13, 1024)], [[512, 8], [], [1024]], [F, "Int", L],
              [_t(15, 1024 * 8, 4)], [[1024, 8]], [F]),
    ]
    res = replay_trace(_et(tmp_path / "et.json", ops), gaps="none", warmup=0, iters=1)
    divisor = [t for t in res.plan.init if isinstance(t, torch.Tensor) and t.dim() == 0 and not t.is_floating_point()]
    assert [int(t) for t in divisor] == [2]
    assert res.result["skipped"] == []

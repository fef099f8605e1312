from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import torch

from benchmint.core.errors import UserError
from benchmint.models.workloads import WORKLOADS, build
from benchmint.replay import replay_trace, run_record
from benchmint.replay.fidelity import once_a_step
from benchmint.replay.plan import build_plan
from benchmint.replay.source import view_from_trace
from benchmint.replay.tensors import Constraints, IntConstraint, StoragePool, fill
from benchmint.replay.types import TRef
from benchmint.trace import load
from benchmint.trace.capture import capture_steps

REQUIRED_KEYS = {"ops_total", "ops_replayed", "coverage", "coverage_time", "iter_time_s", "original_iter_time_s",
                 "error", "skipped", "peak_memory_bytes", "device", "threads"}


@pytest.fixture(scope="module")
def captures(tmp_path_factory) -> dict[str, Path]:
    """Every example workload captured once (small; a fraction of a second each)."""
    root = tmp_path_factory.mktemp("captures")
    out = {}
    for name in WORKLOADS:
        d = root / name
        capture_steps(build(name).step, d, warmup=1, measure=5, record=1)
        out[name] = d
    return out


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_every_example_workload_replays_whole(captures, name):
    res = replay_trace(captures[name], gaps="none", warmup=0, iters=2)
    r = res.result
    assert r["coverage"] == 1.0, r["skipped"]
    assert r["ops_replayed"] == r["ops_total"] > 0 and r["coverage_time"] == 1.0
    assert r["original_iter_time_s"] > 0 and r["iter_time_s"]["n"] == 2
    assert r["peak_memory_bytes"] > 0
    # with --gaps none the timed iterations are the ops alone: no second timing of them
    assert r["replay_ops_only_s"] == r["iter_time_s"]["median"]
    # the memory estimate made from the trace before planning matches the replay's measured peak
    est = r["tensor_memory_estimate"]["total_bytes"]
    assert abs(est / r["peak_memory_bytes"] - 1) < 0.05, (est, r["peak_memory_bytes"])


def test_a_replay_says_which_composites_it_calls_the_callees_of(captures):
    """A training step's backward reads a layer norm's saved statistics and attention's logsumexp, which the
    composites do not return: the replay calls the ops they called, one by one from Python, and says how
    many stand in each."""
    view = view_from_trace(load(captures["transformer_train"] / "et.json"))
    inside = collections.Counter(o.composite for o in view.ops if o.composite)
    assert inside["aten::layer_norm"] >= 1 and inside["aten::scaled_dot_product_attention"] >= 1
    assert not any(o.name in ("aten::layer_norm", "aten::scaled_dot_product_attention") for o in view.ops)
    r = replay_trace(captures["transformer_train"], gaps="none", warmup=0, iters=1).result
    assert r["opened_composites"] == dict(inside)
    # an inference step replays its composites whole: nothing opened
    assert replay_trace(captures["decoder_infer"], gaps="none", warmup=0, iters=1).result["opened_composites"] is None


def test_training_step_replays_forward_backward_and_optimizer(captures):
    tr = load(captures["transformer_train"] / "et.json")
    view = view_from_trace(tr)
    names = [o.name for o in view.ops]
    assert "aten::embedding" in names  # forward
    assert "aten::embedding_backward" in names and "aten::tanh_backward" in names  # autograd backward
    assert any(n.startswith("aten::_foreach_") for n in names)  # AdamW (foreach)
    # ops the autograd engine ran on its own thread are part of the step (the main thread's and that one's)
    tids = {o.tid for o in view.ops}
    assert len(tids) == 2
    assert all(s.replayed for s in build_plan(view).steps)


def test_recorded_gaps_aim_at_capture_time_and_result_keys(captures, tmp_path, cli):
    code, out, err = cli("replay", str(captures["moe"]), "--iters", "3", "--warmup", "1", "--json",
                         str(tmp_path / "r.json"), "--out", str(tmp_path / "run"), "--report", "--no-store")
    assert code == 0, err
    r = json.loads((tmp_path / "r.json").read_text())
    assert REQUIRED_KEYS <= set(r)
    assert set(r["iter_time_s"]) == {"median", "p10", "p90", "n", "iqr", "noisy"}
    assert r["iter_time_s"]["noisy"] == (r["iter_time_s"]["iqr"] > 0.1 * r["iter_time_s"]["median"])
    assert r["gaps"] == "recorded" and r["gap_target"] == "capture.json"
    assert r["error"] == pytest.approx((r["iter_time_s"]["median"] - r["original_iter_time_s"])
                                       / r["original_iter_time_s"])
    assert r["calibration"]["observer_overhead_s"] >= 0
    assert r["original_iter_time_estimated_s"] is not None
    # the value probe's ratios are in the result, for the ops the step calls once (the only ones it judges)
    once = set(once_a_step(view_from_trace(load(captures["moe"] / "et.json"))))
    probed = {int(k): v for k, v in r["calibration"]["zero_input_ratio"].items()}
    # (which ops are probed depends on their time here: those under PROBE_MIN_S are not, so on a fast run none
    # of moe's may be; tests/test_replay_value_probe.py checks the probe itself)
    assert set(probed) <= once and all(v > 0 for v in probed.values())
    assert "coverage 1.000" in out and "error" in out and "aten::linear" in out
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["kind"] == "replay"
    rows = run["metrics"]["per_op_type"]
    assert {"op", "count", "original_s", "replay_s", "original_under_observer_cost"} <= set(rows[0])
    # the per-op originals are corrected for the recorder's cost, and the result says so
    assert "less the observers' cost" in r["per_op_original_how"]
    assert all(c.get("original_under_observer_cost", 0) < c["count"] for c in r["largest_contributors"])
    assert sum(x["count"] for x in rows if not x["op"].startswith("(")) == r["ops_total"]


def test_without_capture_json_the_original_is_estimated_and_error_is_null(captures, tmp_path):
    d = tmp_path / "user"
    d.mkdir()
    for f in ("et.json", "kineto.json"):
        (d / f).write_bytes((captures["cnn_train"] / f).read_bytes())
    res = replay_trace(d / "et.json", kineto=d / "kineto.json", warmup=0, iters=2)
    r = res.result
    assert r["original_iter_time_s"] is None and r["error"] is None
    assert r["gap_target"] == "estimate" and r["original_iter_time_estimated_s"] > 0
    assert r["threads"] == torch.get_num_threads()
    (d / "kineto.json").unlink()
    with pytest.raises(UserError, match="needs a Kineto trace"):
        replay_trace(d / "et.json", gaps="recorded")


def test_a_capture_folder_that_lost_the_kineto_trace_its_capture_json_names_is_refused_not_replayed_gapless(
        captures, tmp_path, cli):
    """The replay went on without the CPU time between ops (--gaps none, silently) and read -13%, called a
    change of the host's pace."""
    d = tmp_path / "nokin"
    d.mkdir()
    for f in ("et.json", "capture.json"):
        (d / f).write_bytes((captures["cnn_train"] / f).read_bytes())
    code, _, err = cli("replay", str(d), "--no-store", "--iters", "1")
    assert code == 2 and "capture.json names this Kineto trace" in err and "--gaps none" in err
    assert replay_trace(d, gaps="none", warmup=0, iters=1).result["gaps"] == "none"  # the way on it names


def test_min_coverage_exits_1_after_writing(tmp_path, cli):
    et = _write_et(tmp_path / "et.json", _bad_ops())
    code, _, err = cli("replay", str(et), "--iters", "1", "--warmup", "0", "--min-coverage", "0.5", "--json",
                       str(tmp_path / "r.json"), "--no-store", "--out", str(tmp_path / "o"))
    assert code == 1 and "below --min-coverage" in err
    assert json.loads((tmp_path / "r.json").read_text())["coverage"] == pytest.approx(0.4)
    assert (tmp_path / "o" / "run.json").exists()
    code, _, err = cli("replay", str(et), "--min-coverage", "1.5", "--no-store")  # not a fraction: before replaying
    assert code == 2 and "--min-coverage 1.5: give a fraction" in err


def _node(i, name, parent, schema="", inputs=(), shapes=(), types=(), outputs=(), oshapes=(), otypes=(), rf=0):
    return {"id": i, "name": name, "ctrl_deps": parent,
            "inputs": {"values": list(inputs), "shapes": list(shapes), "types": list(types),
                       "strides": [[] for _ in inputs]},
            "outputs": {"values": list(outputs), "shapes": list(oshapes), "types": list(otypes),
                        "strides": [[] for _ in outputs]},
            "attrs": [{"name": "rf_id", "type": "uint64", "value": rf},
                      {"name": "tid", "type": "uint64", "value": 1},
                      {"name": "op_schema", "type": "string", "value": schema}]}


def _write_et(path: Path, ops: list[dict]) -> Path:
    nodes = [_node(1, "[pytorch|profiler|execution_trace|process]", 0),
             _node(2, "[pytorch|profiler|execution_trace|thread]", 1), *ops]
    path.write_text(json.dumps({"schema": "1.1.1-chakra.0.0.4", "pid": 1, "time": "x", "start_ts": 0,
                                "finish_ts": 1, "nodes": nodes}))
    return path


T = "Tensor(float)"


def test_bad_ops_are_skipped_with_reasons_never_a_crash(tmp_path):
    et = _write_et(tmp_path / "et.json", _bad_ops())
    r = replay_trace(et, warmup=0, iters=2).result
    assert r["ops_total"] == 5 and r["ops_replayed"] == 2 and r["coverage"] == pytest.approx(0.4)
    reasons = {s["op"]: s["reason"] for s in r["skipped"]}
    assert "not an op" in reasons["mylib::frobnicate"]
    assert "mat1 and mat2 shapes cannot be multiplied" in reasons["aten::mm"] or "size" in reasons["aten::mm"]
    assert "aten::sum" in reasons
    assert r["coverage_time"] is None and r["gaps"] == "none"


def _bad_ops() -> list[dict]:
    """Five ops of which two replay (coverage 0.4): an op this build lacks, shapes that do not fit, an argument
    that does not bind."""
    a, b = [10, 11, 0, 12, 4, "cpu"], [20, 21, 0, 12, 4, "cpu"]
    return [
        _node(3, "aten::add", 2, "aten::add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor",
              [a, a, 1], [[3, 4], [3, 4], []], [T, T, "Int"], [b], [[3, 4]], [T]),
        _node(4, "mylib::frobnicate", 2, "mylib::frobnicate(Tensor x) -> Tensor", [b], [[3, 4]], [T],
              [[30, 31, 0, 12, 4, "cpu"]], [[3, 4]], [T]),
        # shapes that do not fit: (3x4) @ (3x4)
        _node(5, "aten::mm", 2, "aten::mm(Tensor self, Tensor mat2) -> Tensor", [b, b], [[3, 4], [3, 4]], [T, T],
              [[40, 41, 0, 9, 4, "cpu"]], [[3, 3]], [T]),
        # an argument that does not bind: a string where the schema wants an int
        _node(6, "aten::sum", 2, "aten::sum.dim_IntList(Tensor self, int[1]? dim, bool keepdim=False, *, "
              "ScalarType? dtype=None) -> Tensor", [b, "oops", False, None], [[3, 4], [], [], []],
              [T, "String", "Bool", "None"], [[50, 51, 0, 4, 4, "cpu"]], [[4]], [T]),
        # its consumer still runs on a synthetic tensor of the recorded shape
        _node(7, "aten::relu", 2, "aten::relu(Tensor self) -> Tensor", [[30, 31, 0, 12, 4, "cpu"]], [[3, 4]], [T],
              [[60, 61, 0, 12, 4, "cpu"]], [[3, 4]], [T]),
    ]


def test_no_replayable_op_is_a_user_error(tmp_path, cli):
    et = _write_et(tmp_path / "et.json", [_node(3, "mylib::f", 2, "mylib::f(Tensor x) -> Tensor",
                                                [[1, 2, 0, 1, 4, "cpu"]], [[1]], [T])])
    code, _, err = cli("replay", str(et), "--no-store")
    assert code == 2 and "no op of the trace could be replayed" in err
    code, _, err = cli("replay", str(tmp_path / "missing.json"), "--no-store")
    assert code == 2 and "no such trace" in err


def test_views_share_storage_at_recorded_offsets():
    pool = StoragePool(torch.device("cpu"))
    a = TRef(1, 7, 0, 6, 4, "cpu", (2, 3), (3, 1), torch.float32)
    b = TRef(2, 7, 3, 3, 4, "cpu", (3,), (1,), torch.float32)
    pool.note(a)
    pool.note(b)
    ta, fresh_a = pool.view(a)
    tb, fresh_b = pool.view(b)
    assert fresh_a and not fresh_b
    ta.zero_()
    tb.fill_(5)
    assert ta[1].tolist() == [5, 5, 5] and ta[0].tolist() == [0, 0, 0]


def test_integer_fill_respects_consumers():
    g = torch.Generator().manual_seed(0)
    cons = Constraints()
    off = TRef(1, 1, 0, 8, 8, "cpu", (8,), (1,), torch.int64)
    idx = TRef(2, 2, 0, 50, 8, "cpu", (50,), (1,), torch.int64)
    cons.by_key[off.key] = IntConstraint(offsets_of=50)
    cons.by_key[idx.key] = IntConstraint(high=7)
    t = torch.empty(8, dtype=torch.int64)
    fill(t, off, cons, g)
    assert t[0] == 0 and bool((t[1:] >= t[:-1]).all()) and int(t.max()) <= 50
    u = torch.empty(50, dtype=torch.int64)
    fill(u, idx, cons, g)
    assert int(u.min()) >= 0 and int(u.max()) < 7
    r = TRef(3, 3, 0, 20, 8, "cpu", (20,), (1,), torch.int64)
    cons.by_key[r.key] = IntConstraint(forced=(3, 5))
    v = torch.empty(20, dtype=torch.int64)
    fill(v, r, cons, g)
    assert int(v.min()) >= 3 and int(v.max()) <= 5


def test_data_dependent_ops_keep_recorded_shapes(captures):
    view = view_from_trace(load(captures["moe"] / "et.json"))
    plan = build_plan(view, seed=123)
    assert all(s.replayed for s in plan.steps)
    fn = plan.compile()
    R = plan.registers()
    fn(R)  # the routing differs from the original's, the shapes do not: nothing raises
    nz = [s for s in plan.steps if s.op.name == "aten::nonzero_numpy"]
    assert len(nz) == 8


def test_run_record_has_kind_replay_and_per_op_type(captures):
    res = replay_trace(captures["encoder_cls"], gaps="none", warmup=0, iters=1)
    rec = run_record(res, {"trace": "x"})
    assert rec.kind == "replay" and rec.status == "ok"
    assert rec.metrics["per_op_type"] and rec.metrics["coverage"] == 1.0
    assert rec.workload["captured"]["device"] == "cpu" and rec.workload["captured"]["torch_version"]
    assert rec.system["accelerator"] is not None and rec.provenance["cwd"]


PARAM = Path(__file__).parent / "data" / "param"


@pytest.mark.parametrize("name,floor", [("linear_et.json.gz", 1.0), ("pt2_et.json.tar.gz", 1.0),
                                        ("dlrm_pytorch_et.tar.gz", 0.987)])
def test_param_cuda_traces_plan_on_cpu(name, floor):
    view = view_from_trace(load(PARAM / name))
    plan = build_plan(view, "cpu")
    cov = len(plan.replayed) / len(plan.steps)
    assert cov >= floor, plan.skipped()
    assert any(d.startswith("cuda") for d in view.devices)
    # every recorded cuda tensor was remapped to the CPU
    assert all(t.device.type == "cpu" for t in plan.init if isinstance(t, torch.Tensor))


@pytest.mark.slow
def test_param_resnet_trace_replays_on_cpu_with_coverage_099():
    view = view_from_trace(load(PARAM / "resnet_et.json.gz"))
    plan = build_plan(view, "cpu")
    assert len(plan.replayed) / len(plan.steps) >= 0.99
    subs = {s["op"] for s in plan.substituted()}
    assert "aten::cudnn_batch_norm_backward" in subs
    assert {s["op"] for s in plan.skipped()} <= {"c10d::allreduce_", "c10d::broadcast_"}


def test_a_cuda_trace_replayed_on_cpu_has_no_estimate_of_the_original_across_devices(cli, tmp_path):
    code, out, err = cli("replay", str(PARAM / "linear_et.json.gz"), "--kineto", str(PARAM / "linear_kineto.json.gz"),
                         "--device", "cpu", "--warmup", "0", "--iters", "2", "--no-store", "--json",
                         str(tmp_path / "r.json"), "--out", str(tmp_path / "o"))
    assert code == 0, err
    r = json.loads((tmp_path / "r.json").read_text())
    # the gaps row said "recorded (0.000 ms of CPU time between ops)" and not why
    assert "nothing to aim them at" in " ".join(out.split())
    assert r["gaps"] == "recorded" and r["coverage"] == 1.0
    assert r["original_iter_time_estimated_s"] is None and r["error"] is None
    assert "not estimated across devices" in r["estimate_note"] and "cuda" in r["estimate_note"]


@pytest.mark.parametrize("name", ["transformer_train", "cnn_train"])
def test_backward_ops_read_what_the_forward_saved_so_training_state_stays_finite(captures, name):
    # the forward composites (layer_norm, scaled_dot_product_attention, batch_norm, cross_entropy_loss) keep
    # the statistics their backward reads; the replay calls the ops that return them instead, so the backward
    # gets the forward's logsumexp, mean and rstd rather than synthetic values in [0.05, 0.95] (with those, the
    # attention backward overflowed and the weights were NaN before the first timed iteration)
    view = view_from_trace(load(captures[name] / "et.json"))
    names = {o.name for o in view.ops}
    assert "aten::nll_loss_forward" in names and "aten::cross_entropy_loss" not in names
    if name == "transformer_train":
        assert {"aten::native_layer_norm", "aten::_scaled_dot_product_flash_attention_for_cpu"} <= names
        assert not names & {"aten::layer_norm", "aten::scaled_dot_product_attention"}
    else:
        assert "aten::batch_norm" not in names and "aten::max_pool2d_with_indices" in names
    plan = build_plan(view, "cpu")
    assert len(plan.replayed) == len(plan.steps)
    fn, regs = plan.compile(), plan.registers()
    with plan.grad_context():
        for _ in range(10):
            fn(regs)
    state = [t for t in plan.init if isinstance(t, torch.Tensor) and t.is_floating_point()]
    assert state and all(bool(torch.isfinite(t).all()) for t in state)


def test_a_backward_reads_the_activations_its_forward_saved_so_training_does_not_run_away(captures):
    # autograd hands a backward op what its forward saved as a tensor of a new id on the same storage; the
    # replay dropped the forward's output after its last reader by id and made the saved one up instead, so
    # the CNN's gradients were not its own and SGD grew its weights 1e5-fold in 100 replayed iterations
    view = view_from_trace(load(captures["cnn_train"] / "et.json"))
    plan = build_plan(view, "cpu")
    saved = [(op.name, op.inputs[1].value) for op in view.ops
             if op.name in ("aten::_log_softmax_backward_data", "aten::threshold_backward")]
    assert len(saved) >= 2
    for name, ref in saved:
        assert plan.init[plan.slots[ref.key]] is None, f"{name} reads a made-up tensor"
    fn, regs = plan.compile(), plan.registers()
    with plan.grad_context():
        for _ in range(100):
            fn(regs)
    state = [t for t in plan.init if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
    assert max(float(t.abs().max()) for t in state) < 100


def test_a_tensor_made_from_python_data_holds_made_up_values_not_the_allocators(captures):
    # AdamW's step increment is torch.tensor(1.0): an empty, a copy from Python that no op records, then
    # lift_fresh; replayed as recorded it held whatever memory it got (at times 1e14 or NaN, and the step
    # counters were not finite after 10 iterations, about one run in ten). torch's deterministic mode fills
    # every empty with NaN, so what the allocator hands out is the worst case each time
    view = view_from_trace(load(captures["transformer_train"] / "et.json"))
    assert {"aten::empty", "aten::lift_fresh"} <= {o.name for o in view.ops}
    was, fill_was = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        plan = build_plan(view, "cpu")
        fn, regs = plan.compile(), plan.registers()
        with plan.grad_context():
            for _ in range(3):
                fn(regs)
    finally:
        torch.use_deterministic_algorithms(was)
        torch.utils.deterministic.fill_uninitialized_memory = fill_was
    steps = [t for t in plan.init if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() == 0]
    assert steps and all(bool(torch.isfinite(t)) for t in steps)
    state = [t for t in plan.init if isinstance(t, torch.Tensor) and t.is_floating_point()]
    assert all(bool(torch.isfinite(t).all()) for t in state)


class _Tree:
    """A recorded op tree, as much of a Trace as expose_hidden_outputs reads."""

    def __init__(self, callees: dict[int, list]):
        self.callees = callees

    def descendants(self, n):
        for c in self.callees.get(n.id, []):
            yield c
            yield from self.descendants(c)

    def top_level_ops(self, n):
        return self.callees.get(n.id, [])


def _op(i: int, name: str, ins: list, outs: list, schema: str = ""):
    from types import SimpleNamespace

    return SimpleNamespace(id=i, name=name, op_schema=schema, input_tensors=lambda: list(ins),
                           output_tensors=lambda: list(outs))


def _t(tid: int):
    from benchmint.trace.model import TensorRef

    return TensorRef(tid, tid, 0, 4, 4, "cpu", (4,), None, "float32")


def test_a_read_of_reused_tensor_ids_is_attributed_to_their_last_writer():
    from benchmint.replay.source import expose_hidden_outputs

    x, k, y, z = _t(1), _t(2), _t(3), _t(4)
    nln = "aten::native_layer_norm(Tensor input, SymInt[] normalized_shape, Tensor? weight, Tensor? bias, float eps)"
    # the allocator gave k's ids to a dead tensor first: the backward's k is the one the layer norm kept
    ln_inner = _op(4, "aten::native_layer_norm", [x], [y, k], nln)
    ops = [_op(1, "aten::empty", [], [k]), _op(2, "aten::add", [k], [z]), _op(3, "aten::layer_norm", [x], [y]),
           _op(5, "aten::native_layer_norm_backward", [y, x, k], [x])]
    nodes, opened, within = expose_hidden_outputs(_Tree({3: [ln_inner]}), ops)
    assert [n.id for n in nodes] == [1, 2, 4, 5] and opened == {4: 1} and within == {4: "aten::layer_norm"}
    # two layer norms kept tensors with the same ids: the later one is what the backward reads
    a, b = _op(11, "aten::native_layer_norm", [x], [y, k], nln), _op(13, "aten::native_layer_norm", [z], [x, k], nln)
    ops = [_op(10, "aten::layer_norm", [x], [y]), _op(12, "aten::layer_norm", [z], [x]),
           _op(14, "aten::native_layer_norm_backward", [k], [z])]
    nodes, _, _ = expose_hidden_outputs(_Tree({10: [a], 12: [b]}), ops)
    assert [n.id for n in nodes] == [10, 13, 14]


def test_an_embedding_bag_replays_the_callee_the_original_ran_not_the_one_its_made_up_inputs_pick():
    """Inference under inference_mode with weights that require grad runs _embedding_bag; the replay's weights
    do not require grad, so the composite would pick _embedding_bag_forward_only, another kernel."""
    from benchmint.replay.source import expose_hidden_outputs

    w, i, o, y = _t(1), _t(2), _t(3), _t(4)
    schema = "aten::_embedding_bag(Tensor weight, Tensor indices, Tensor offsets) -> (Tensor, Tensor, Tensor, Tensor)"
    full = _op(2, "aten::_embedding_bag", [w, i, o], [y, _t(5), _t(6), _t(7)], schema)
    fwd = _op(12, "aten::_embedding_bag_forward_only", [w, i, o], [y, _t(15), _t(16), _t(17)], schema)
    ops = [_op(1, "aten::embedding_bag", [w, i, o], [y]), _op(11, "aten::embedding_bag", [w, i, o], [y])]
    nodes, _, _ = expose_hidden_outputs(_Tree({1: [full], 11: [fwd]}), ops)
    assert [n.name for n in nodes] == ["aten::_embedding_bag", "aten::embedding_bag"]


def test_a_composite_whose_callee_cannot_run_on_the_replay_device_is_kept():
    from benchmint.replay.source import expose_hidden_outputs

    x, y, lse = _t(1), _t(2), _t(3)
    # a CUDA trace's attention: its flash kernel has no CPU kernel, the composite picks one that runs
    flash = _op(3, "aten::_scaled_dot_product_flash_attention", [x, x, x], [y, lse],
                "aten::_scaled_dot_product_flash_attention(Tensor query, Tensor key, Tensor value) -> Tensor")
    ops = [_op(2, "aten::scaled_dot_product_attention", [x, x, x], [y]),
           _op(4, "aten::_scaled_dot_product_flash_attention_backward", [y, x, lse], [x])]
    nodes, opened, within = expose_hidden_outputs(_Tree({2: [flash]}), ops, "cpu")
    assert [n.id for n in nodes] == [2, 4] and opened == {} and within == {}


def test_a_replay_whose_recordings_cannot_be_read_says_why_there_is_no_estimate(captures, monkeypatch):
    from benchmint.replay import fidelity

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fidelity, "record_replay", broken)
    r = replay_trace(captures["cnn_train"], warmup=0, iters=2).result
    assert r["original_iter_time_estimated_s"] is None
    assert r["estimate_note"].startswith("not estimated: none of the 5 recordings of the replay could be read")
    assert "No space left on device" in r["estimate_note"]
    # the gaps still aim at capture.json's step time
    assert r["gaps"] == "recorded" and r["original_iter_time_s"] > 0 and r["error"] is not None


def test_a_container_memory_limit_counts_as_the_memory_available(tmp_path):
    from benchmint.replay.memory import cgroup_room

    proc = tmp_path / "cgroup"
    root = tmp_path / "fs"
    proc.write_text("0::/job/step\n")
    assert cgroup_room(root, proc) is None  # no control group files: no limit known
    leaf, job = root / "job" / "step", root / "job"
    leaf.mkdir(parents=True)
    (leaf / "memory.max").write_text("max\n")
    assert cgroup_room(root, proc) is None
    # cgroup v2: the job step may take 8 GiB and uses 5 GiB, of which 1 GiB is reclaimable page cache
    (leaf / "memory.max").write_text(f"{8 << 30}\n")
    (leaf / "memory.current").write_text(f"{5 << 30}\n")
    (leaf / "memory.stat").write_text(f"anon {4 << 30}\ninactive_file {1 << 30}\n")
    assert cgroup_room(root, proc) == 4 << 30
    # the job above it is tighter: 6 GiB with 5 GiB in use
    (job / "memory.max").write_text(f"{6 << 30}\n")
    (job / "memory.current").write_text(f"{5 << 30}\n")
    assert cgroup_room(root, proc) == 1 << 30
    # cgroup v1: the memory controller's own hierarchy
    proc.write_text("4:memory:/docker/abc\n3:cpu:/docker/abc\n")
    v1 = root / "memory" / "docker" / "abc"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert cgroup_room(root, proc) is None
    (v1 / "memory.limit_in_bytes").write_text(f"{2 << 30}\n")
    assert cgroup_room(root, proc) is None  # a limit with no usage known: not guessed
    (v1 / "memory.usage_in_bytes").write_text(f"{3 << 30}\n")
    assert cgroup_room(root, proc) == 0


def test_a_trace_too_big_for_the_memory_available_is_refused_before_planning(monkeypatch):
    from benchmint.replay import memory

    view = view_from_trace(load(PARAM / "linear_et.json.gz"))
    est = memory.tensor_bytes(view)
    # the linear trace's true inputs (weights) and its produced activations, as the trace records them
    assert est["inputs_bytes"] > 0 and est["produced_peak_bytes"] > 0
    assert est["total_bytes"] == est["inputs_bytes"] + est["produced_peak_bytes"]
    # a machine with less memory available than the estimate: one line naming the way out, nothing planned
    monkeypatch.setattr(memory, "available_bytes", lambda device: est["total_bytes"] // 2)
    with pytest.raises(UserError, match="GiB available.*--no-memory-check"):
        replay_trace(PARAM / "linear_et.json.gz", gaps="none", iters=1, warmup=0)
    res = replay_trace(PARAM / "linear_et.json.gz", gaps="none", iters=1, warmup=0, memory_check=False)
    m = res.result["tensor_memory_estimate"]
    assert m["total_bytes"] == est["total_bytes"] and m["checked"] is False
    assert m["available_bytes"] == est["total_bytes"] // 2


def test_a_cuda_capture_replayed_on_cpu_has_no_error_and_no_gaps_aimed_at_it(tmp_path):
    # capture.json's step time was measured on another device: neither the gaps nor an error may use it
    import gzip
    import shutil

    d = tmp_path / "cap"
    d.mkdir()
    for name, src in (("et.json", "linear_et.json.gz"), ("kineto.json", "linear_kineto.json.gz")):
        with gzip.open(PARAM / src, "rb") as f, open(d / name, "wb") as g:
            shutil.copyfileobj(f, g)
    (d / "capture.json").write_text(json.dumps({"schema_version": "1.0", "device": "cuda:0",
                                                "step_time_s": {"median": 0.004, "n": 10}}))
    r = replay_trace(d, device="cpu", warmup=0, iters=1).result
    assert r["original_iter_time_s"] == 0.004 and r["error"] is None and "ran on cuda" in r["error_note"]
    assert r["gap_target"] is None and r["gap_time_s"] == 0.0
    stages: list[str] = []
    with pytest.raises(UserError, match="another device"):
        replay_trace(d, device="cpu", warmup=0, iters=1, target="capture", progress=lambda s, *_: stages.append(s))
    assert "plan" not in stages  # refused before anything was planned or timed
    # nothing to aim at across devices: no calibration of the recorder's cost (its recordings of a big step
    # took longer than the timed run), and the per-op table says its recorded times are the other device's
    assert r["calibration"] is None and "on cuda, NOT corrected" in r["per_op_original_how"]


def _rec(name: str, ins: list, outs: list[TRef], schema: str = ""):
    from benchmint.replay.types import TENSOR, VALUE, Arg, OpRec

    return OpRec(0, name, schema, [Arg(TENSOR, r) if isinstance(r, TRef) else Arg(VALUE, r) for r in ins],
                 [Arg(TENSOR, r) for r in outs])


def _ref(tid: int, sid: int, dtype: torch.dtype | None = torch.float32) -> TRef:
    return TRef(tid, sid, 0, 8, 4, "cpu", (8,), (1,), dtype)


def test_a_produced_tensor_lives_until_the_last_read_on_its_storage_not_after_the_address_is_reused():
    from benchmint.replay.tensors import last_reads

    x, act, saved, fresh, late = _ref(1, 10), _ref(2, 20), _ref(3, 20), _ref(4, 20), _ref(5, 20)
    ops = [_rec("aten::relu", [x], [act]),  # 0: the forward's output on address 20
           _rec("aten::sum", [act], []),  # 1: its last reader by id
           _rec("aten::threshold_backward", [x, saved], []),  # 2: the saved tensor: another id, same storage
           _rec("aten::zeros", [], [fresh]),  # 3: a new tensor at the freed address
           _rec("aten::add", [late], [])]  # 4: a read on address 20 after the reuse
    last = last_reads(ops)
    assert last[act.key] == 2  # kept for the backward, not freed after op 1
    assert last[fresh.key] == 4 and last[saved.key] == 2  # the reuse starts a new storage


def test_storage_id_zero_and_repeated_keys_and_sibling_outputs_follow_the_storage_rule():
    from benchmint.replay.tensors import last_reads

    # id 0 is every storage-less or undefined tensor's: no chain through it
    a, none_ref = _ref(1, 0), _ref(2, 0, None)
    last = last_reads([_rec("aten::to_sparse", [], [a]), _rec("aten::neg", [a], []),
                       _rec("aten::nll_loss_backward", [none_ref], [])])
    assert last[a.key] == 1
    # the same key produced again at the same address (a second micro-batch): its saved read counts too
    k, saved = _ref(1, 20), _ref(2, 20)
    last = last_reads([_rec("aten::relu", [], [k]), _rec("aten::mul", [saved], []), _rec("aten::zeros", [], [_ref(3, 20)]),
                       _rec("aten::relu", [], [k]), _rec("aten::neg", [k], []), _rec("aten::mul", [saved], [])])
    assert last[k.key] == 5
    # two outputs of one op on one new address share its storage
    o1, o2, v = _ref(1, 30), _ref(2, 30), _ref(3, 30)
    last = last_reads([_rec("aten::split", [], [o1, o2]), _rec("aten::neg", [v], [])])
    assert last[o1.key] == last[o2.key] == 1


def test_a_read_at_an_address_reused_by_an_op_not_replayed_is_not_a_view_of_the_dead_tensor():
    relu = "aten::relu(Tensor self) -> Tensor"
    x, g, act, saved, fresh, late = _ref(1, 10), _ref(9, 40), _ref(2, 20), _ref(3, 20), _ref(4, 20), _ref(5, 20)
    ops = [_rec("aten::relu", [x], [act], relu),
           _rec("aten::neg", [act], [_ref(6, 30)], "aten::neg(Tensor self) -> Tensor"),
           _rec("aten::threshold_backward", [g, saved, 0], [_ref(7, 50)],
               "aten::threshold_backward(Tensor grad_output, Tensor self, Scalar threshold) -> Tensor"),
           _rec("aten::not_a_known_op", [], [fresh]),  # not replayed (no schema): a new storage at address 20
           _rec("aten::relu", [late], [_ref(8, 60)], relu)]
    from benchmint.replay.types import TraceView

    plan = build_plan(TraceView("t", "1", ops, len(ops)), "cpu", check=0)
    assert plan.init[plan.slots[saved.key]] is None  # the backward's saved tensor: a view of the relu's output
    assert plan.init[plan.slots[late.key]] is not None  # the later read: an input of its own, made up

"""Planning on the meta device (issue 13, point 6): the dry run checks bindings and shapes without computing,
gives the plan the real dry run gives, and computes only what it cannot answer (counted and reported)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmint.core.errors import UserError
from benchmint.models.workloads import build
from benchmint.replay import dryrun, replay_trace
from benchmint.replay.plan import build_plan
from benchmint.replay.source import view_from_trace
from benchmint.trace import load
from benchmint.trace.capture import capture_steps

PARAM = Path(__file__).parent / "data" / "param"
# embedding_bag (its meta kernel sizes auxiliary outputs otherwise), the gating of a mixture of experts
# (data-dependent nonzero), a training step (item, the optimizer), an index computed from synthetic values that
# falls out of range only when the iteration runs (encoder_decoder's embedding)
WORKLOADS = ["embbag_train", "moe", "transformer_train", "encoder_decoder"]


@pytest.fixture(scope="module")
def captures(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("captures")
    out = {}
    for name in WORKLOADS:
        capture_steps(build(name).step, root / name, warmup=1, measure=5, record=1)
        out[name] = root / name
    return out


def _same_plan(a, b) -> None:
    assert [(s.replayed, s.reason, s.substitute) for s in a.steps] == \
        [(s.replayed, s.reason, s.substitute) for s in b.steps]
    assert a.lines == b.lines and a.n_slots == b.n_slots and a.persistent_bytes == b.persistent_bytes
    fa = {k: v for k, v in a.namespace.items() if k.startswith("f")}
    fb = {k: v for k, v in b.namespace.items() if k.startswith("f")}
    assert fa.keys() == fb.keys() and all(fa[k] is fb[k] for k in fa)  # the same callables (torch's bindings)
    assert a.skipped() == b.skipped() and a.substituted() == b.substituted()


@pytest.mark.parametrize("name", WORKLOADS)
def test_meta_planning_gives_the_plan_the_computing_dry_run_gives(captures, name, monkeypatch):
    monkeypatch.setattr(dryrun, "SMALL_BYTES", 0)  # every op tried on the meta device, small ones too
    view = view_from_trace(load(captures[name] / "et.json"))
    real = build_plan(view, "cpu", dry_run="real")
    meta = build_plan(view, "cpu", dry_run="meta")
    _same_plan(real, meta)
    assert len(meta.replayed) == len(meta.steps)
    d = meta.dry_run
    assert d["mode"] == "meta" and d["tried_meta"] >= len(view.ops) - d["ran_real"]
    # only what the meta device cannot answer ran for real, and each is named with why
    assert d["ran_real"] == sum(r["count"] for r in d["real_runs"]) < len(view.ops) / 4
    assert real.dry_run["mode"] == "real" and real.dry_run["ran_real"] == len(view.ops)
    fn, regs = meta.compile(), meta.registers()
    with meta.grad_context():
        fn(regs)


def test_a_cuda_trace_plans_on_cpu_with_the_same_coverage_on_meta(monkeypatch):
    monkeypatch.setattr(dryrun, "SMALL_BYTES", 0)
    view = view_from_trace(load(PARAM / "linear_et.json.gz"), device="cpu")
    _same_plan(build_plan(view, "cpu", dry_run="real"), build_plan(view, "cpu", dry_run="meta"))


# -- a spy on an op's kernels -------------------------------------------------------------------------------
CALLS = {"cpu": 0, "meta": 0, "nometa": 0}
_lib = torch.library.Library("benchmint_test", "DEF")
_lib.define("big(Tensor x) -> Tensor")
_lib.define("nometa(Tensor x) -> Tensor")


def _big_cpu(x):
    CALLS["cpu"] += 1
    return x @ x


def _big_meta(x):
    CALLS["meta"] += 1
    return torch.empty_like(x)


def _nometa_cpu(x):
    CALLS["nometa"] += 1
    return x + 1


_lib.impl("big", _big_cpu, "CPU")
_lib.impl("big", _big_meta, "Meta")
_lib.impl("nometa", _nometa_cpu, "CPU")
T = "Tensor(float)"


def _et(path: Path, n: int = 600) -> Path:  # 1.4 MB a tensor: above dryrun.SMALL_BYTES
    def node(i, name, schema, ins, outs):
        t = lambda k: [k, k + 1, 0, n * n, 4, "cpu"]  # noqa: E731
        return {"id": i, "name": name, "ctrl_deps": 2,
                "inputs": {"values": [t(k) for k in ins], "shapes": [[n, n]] * len(ins), "types": [T] * len(ins),
                           "strides": [[] for _ in ins]},
                "outputs": {"values": [t(k) for k in outs], "shapes": [[n, n]] * len(outs),
                            "types": [T] * len(outs), "strides": [[] for _ in outs]},
                "attrs": [{"name": "rf_id", "type": "uint64", "value": i}, {"name": "tid", "type": "uint64", "value": 1},
                          {"name": "op_schema", "type": "string", "value": schema}]}

    nodes = [{"id": 1, "name": "[pytorch|profiler|execution_trace|process]", "ctrl_deps": 0,
              "inputs": {"values": [], "shapes": [], "types": []}, "outputs": {"values": [], "shapes": [], "types": []},
              "attrs": []},
             {"id": 2, "name": "[pytorch|profiler|execution_trace|thread]", "ctrl_deps": 1,
              "inputs": {"values": [], "shapes": [], "types": []}, "outputs": {"values": [], "shapes": [], "types": []},
              "attrs": []},
             node(3, "benchmint_test::big", "benchmint_test::big(Tensor x) -> Tensor", [10], [20]),
             node(4, "benchmint_test::big", "benchmint_test::big(Tensor x) -> Tensor", [20], [30]),
             node(5, "benchmint_test::nometa", "benchmint_test::nometa(Tensor x) -> Tensor", [30], [40])]
    path.write_text(json.dumps({"schema": "1.1.1-chakra.0.0.4", "pid": 1, "time": "x", "start_ts": 0,
                                "finish_ts": 1, "nodes": nodes}))
    return path


def test_planning_on_meta_never_runs_an_ops_real_kernel(tmp_path):
    view = view_from_trace(load(_et(tmp_path / "et.json")))
    CALLS.update(cpu=0, meta=0, nometa=0)
    plan = build_plan(view, "cpu", check=0)
    # both calls of the big op were answered by its meta kernel (the second from the first: same layouts); its
    # real kernel never ran; the op without a meta kernel ran for real once, and says so
    assert CALLS == {"cpu": 0, "meta": 1, "nometa": 1}
    assert len(plan.replayed) == 3
    assert plan.dry_run["real_runs"] == [{"op": "benchmint_test::nometa", "count": 1, "why": "no meta kernel"}]
    assert plan.dry_run["answered_from_earlier"] >= 1
    # the check that ends planning is one real pass over the compiled iteration
    CALLS.update(cpu=0, meta=0, nometa=0)
    plan = build_plan(view, "cpu")
    assert CALLS["cpu"] == 2 and plan.check_time_s > 0
    # the dry run as it was: every op computed while planning
    CALLS.update(cpu=0, meta=0, nometa=0)
    build_plan(view, "cpu", dry_run="real", check=0)
    assert CALLS == {"cpu": 2, "meta": 0, "nometa": 1}


def test_the_replay_result_says_how_the_plan_was_made(tmp_path, monkeypatch):
    r = replay_trace(_et(tmp_path / "et.json"), warmup=0, iters=1).result
    assert r["coverage"] == 1.0 and r["plan_dry_run"]["mode"] == "meta" and r["plan_check_time_s"] > 0
    assert r["plan_dry_run"]["ran_real"] == 1
    monkeypatch.setenv("BENCHMINT_PLAN_DRY_RUN", "real")
    r = replay_trace(tmp_path / "et.json", warmup=0, iters=1).result
    assert r["plan_dry_run"]["mode"] == "real" and r["coverage"] == 1.0
    monkeypatch.setenv("BENCHMINT_PLAN_DRY_RUN", "fast")
    with pytest.raises(UserError, match="BENCHMINT_PLAN_DRY_RUN=fast"):
        replay_trace(tmp_path / "et.json", warmup=0, iters=1)


def test_a_view_remade_from_a_reused_storage_id_must_fit_its_base_or_is_made_afresh():
    """Dropping an attention backward (--what-if drop:) left a later op reading a tensor on a storage id the
    allocator had given an earlier, smaller tensor: the plan (on the meta device, which does not check bounds)
    re-made it as a view of that tensor, and the timed loop failed out of bounds."""
    from benchmint.replay.plan import _fits

    for base in (torch.empty(10), torch.empty(10, device="meta")):
        assert _fits(base, (4,), (1,), 6) and not _fits(base, (4,), (1,), 7)
        assert _fits(base, (2, 3), (5, 1), 0) and not _fits(base, (2, 3), (6, 1), 2)
        assert not _fits(base, (1,), (1,), -1) and _fits(base, (0, 5), (5, 1), 10)

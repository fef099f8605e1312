from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from test_capture_plain_api import record_et_alone

from benchmint.core.errors import UserError
from benchmint.models.workloads import build
from benchmint.replay import replay_trace
from benchmint.replay.adapt import adapt_view, describe, phases, select, what_if
from benchmint.replay.source import view_from_trace
from benchmint.trace import load
from benchmint.trace.capture import capture_steps
from benchmint.trace.kineto import join_kineto


@pytest.fixture(scope="module")
def train(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("adapt") / "transformer_train"
    capture_steps(build("transformer_train").step, d, warmup=1, measure=5, record=1)
    return d


@pytest.fixture(scope="module")
def view(train):
    tr = load(train / "et.json")
    return view_from_trace(tr, join_kineto(tr, train / "kineto.json"))


def test_phases_split_a_training_step_into_forward_backward_and_optimizer(view):
    ph = phases(view)
    by = {p: Counter(o.name for o, q in zip(view.ops, ph, strict=True) if q == p) for p in set(ph)}
    assert set(by) == {"forward", "backward", "optimizer"}
    assert "aten::embedding" in by["forward"] and "aten::embedding_backward" in by["backward"]
    assert any(n.startswith("aten::_foreach_") for n in by["optimizer"])
    assert not any(n.endswith("_backward") for n in by["forward"] | by["optimizer"])
    # the optimizer runs last, as one block
    first = ph.index("optimizer")
    assert all(p == "optimizer" for p in ph[first:])


def test_a_selection_replays_only_its_ops_and_compares_with_its_share_of_the_step(train, view):
    res = replay_trace(train, select="phase:optimizer", gaps="none", warmup=0, iters=2)
    r = res.result
    sel = r["selection"]
    n_opt = phases(view).count("optimizer")
    assert r["ops_total"] == sel["ops_selected"] == n_opt < sel["ops_in_step"] == len(view.ops)
    assert 0 < sel["share_of_step"] < 1
    cap = json.loads((train / "capture.json").read_text())["step_time_s"]["median"]
    assert sel["original_step_time_s"] == pytest.approx(cap)
    assert r["original_iter_time_s"] == pytest.approx(cap * sel["share_of_step"])
    assert r["error"] == pytest.approx(r["iter_time_s"]["median"] / r["original_iter_time_s"] - 1)
    # --target cpu aims at the selection's share of the original's CPU time per step, not the whole step's
    sm0 = json.loads((train / "capture.json").read_text())["system_metrics"]
    assert r["original_cpu_time_per_step_s"] == pytest.approx(sm0["cpu_s"] / sm0["steps"] * sel["share_of_step"])
    # system metrics of the capture's measured steps beside the replay's iterations
    sm = r["system_metrics"]["metrics"]
    assert {"cpu_utilization", "involuntary_ctx_switches_per_step", "peak_rss_bytes"} <= set(sm)
    assert all(v["original"] is not None and v["replay"] is not None for v in sm.values())
    # the recorded scopes left are the optimizer's: no autograd-engine scope survives the selection
    adapted, _ = adapt_view(view, "phase:optimizer")
    assert adapted.scopes and all(not n.startswith("autograd::") for _p, _k, _i, n in adapted.scopes)
    assert adapted.step_span_s < view.step_span_s


def test_shares_leave_out_the_recorders_cost_when_the_unobserved_step_is_known(train, view):
    """The recorded step holds the observers' cost of every node: the optimizer's many short ops weighed 2.5x
    their live share in a ViT step (32% recorded, 13-14% timed live, 12.6% with the cost taken out)."""
    cap = json.loads((train / "capture.json").read_text())["step_time_s"]["median"]
    assert cap < view.step_span_s  # (the recorders' cost is in the recorded span)
    parts = {p: select(view, f"phase:{p}", unobserved_s=cap)[1].info for p in ("forward", "backward", "optimizer")}
    assert sum(i["share_of_step"] for i in parts.values()) == pytest.approx(1.0, abs=0.02)
    assert all(i["recorders_cost_per_node_s"] > 0 and "taken out" in i["share_how"] for i in parts.values())
    opt = parts["optimizer"]  # the most ops per microsecond of the three: the most recorders' cost
    assert opt["share_of_step"] < opt["share_as_recorded"]
    bare = select(view, "phase:optimizer")[1].info  # no capture.json step time: as recorded, and said so
    assert bare["share_of_step"] == pytest.approx(opt["share_as_recorded"]) and bare["recorders_cost_per_node_s"] is None
    assert "as recorded, the recorders' cost included" in bare["share_how"]
    # the replay takes capture.json's step time: its console line says which share it is
    r = replay_trace(train, select="phase:optimizer", gaps="none", warmup=0, iters=2).result
    assert r["selection"]["share_of_step"] == pytest.approx(opt["share_of_step"], rel=0.3)
    assert "of the step without the recorders' cost" in " ".join(describe(r))


def test_op_and_scope_selections(view):
    adapted, (a,) = adapt_view(view, "op:aten::mm|aten::addmm")
    assert {o.name for o in adapted.ops} <= {"aten::mm", "aten::addmm"}
    assert a.info["ops_selected"] == sum(1 for o in view.ops if o.name in ("aten::mm", "aten::addmm"))
    opt, _ = adapt_view(view, "scope:Optimizer.step")
    assert 0 < len(opt.ops) <= phases(view).count("optimizer")


def test_a_selection_or_what_if_that_matches_nothing_is_one_line_and_exit_2(train, cli, tmp_path):
    for flag, value in (("--select", "scope:encoder.layers.0"), ("--select", "op:aten::conv9d"),
                        ("--what-if", "drop:aten::conv9d"), ("--select", "phase:sideways"),
                        ("--what-if", "repeat:aten::mm=x"), ("--what-if", "frob:x:"), ("--select", "op:zz:smile:")):
        code, _, err = cli("replay", str(train), flag, value, "--gaps", "none", "--iters", "1", "--no-store")
        assert code == 2, (flag, value, err)
        assert len(err.strip().splitlines()) == 1 and value.split(":")[0] in err
        assert value in err  # the user's text as written (":x:" is no emoji code)


def test_a_scope_recorded_without_ops_is_named_as_such(view):
    # zero_grad(set_to_none=True) records its scope and runs no operator: "matches none" read as a wrong name
    from benchmint.replay.adapt import select

    name = next((n for _p, k, _i, n in view.scopes if k == "enter" and "zero_grad" in n), None)
    assert name is not None
    with pytest.raises(UserError, match="holds none of the step's ops"):
        select(view, "scope:zero_grad")


def test_what_if_drops_and_repeats_ops_and_says_what_changed(train, view):
    n_foreach = sum(1 for o in view.ops if "_foreach_" in o.name)
    n_addmm = sum(1 for o in view.ops if o.name == "aten::addmm")
    res = replay_trace(train, what_if=["drop:_foreach_", "repeat:aten::addmm=3"], gaps="none", warmup=0, iters=2)
    r = res.result
    wi = r["what_if"]
    assert r["ops_total"] == wi["ops_after"] == len(view.ops) - n_foreach + 2 * n_addmm
    drop, rep = wi["changes"]
    assert (drop["action"], drop["ops_matched"], rep["copies"], rep["ops_matched"]) == ("drop", n_foreach, 3, n_addmm)
    assert 0 < drop["share_of_step"] < 1 and 0 < rep["share_of_step"] < 1
    assert wi["step_time_factor"] == pytest.approx(1 - drop["share_of_step"] + 2 * rep["share_of_step"])
    cap = json.loads((train / "capture.json").read_text())["step_time_s"]["median"]
    assert r["original_iter_time_s"] == pytest.approx(cap) and r["error"] is None and r["error_note"]
    assert wi["expected_iter_time_s"] == pytest.approx(cap * wi["step_time_factor"])
    assert wi["change_vs_original"] == pytest.approx(r["iter_time_s"]["median"] / cap - 1)
    assert sum(1 for s in res.plan.steps if s.op.name == "aten::addmm") == 3 * n_addmm


def test_a_scaled_what_if_has_no_expected_time_at_the_recorded_size(tmp_path):
    # `--scale batch=2 --what-if drop:aten::sqrt` judged the step at twice the batch against the recorded step
    # less its sqrt: "expected ~43.6 ms (capture.json's 48.0 ms x 0.909)" and "+34.2% (expected -9.1%)"
    from benchmint.replay.adapt import describe
    from benchmint.replay.headline import headline

    m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    x = torch.randn(16, 64)

    def step():
        with torch.no_grad():
            return torch.sqrt(m(x).abs()).sum()

    capture_steps(step, tmp_path / "mlp", warmup=2, measure=5, record=1)
    r = replay_trace(tmp_path / "mlp", what_if=["drop:aten::sqrt"], scale=("batch=2",), gaps="none", warmup=1,
                     iters=3).result
    wi = r["what_if"]
    assert wi["expected_iter_time_s"] is None and wi["change_vs_original"] is None and "scaled too" in wi["expected_note"]
    text = " ".join(headline(r) + describe(r))
    assert "expected" not in text.replace("no expected time", "") and "the step is scaled too" in text


def test_ops_of_many_light_nodes_keep_a_share_when_the_recorders_cost_is_taken_out(view):
    # AdamW's _foreach_ ops record 29-169 nodes each at about the recorders' average cost per node; spread evenly,
    # that cost took all of them (a what-if dropping them read a share of 0 in CI). An un-observed step measured
    # at a quiet moment makes the excess, and so the cost per node, larger still
    span = view.step_span_s
    for unobserved in (span / 5, span / 50):
        _v, a = what_if(view, ["drop:_foreach_"], unobserved_s=unobserved)
        drop = a.info["changes"][0]
        assert a.info["recorders_cost_per_node_s"] > 0
        assert 0 < drop["share_of_step"] < 1 and 0 < a.factor < 1
        assert "at least" in a.info["how"]


def test_a_selection_without_recorded_times_has_no_share_and_no_comparison(train, tmp_path):
    d = tmp_path / "no_kineto"
    d.mkdir()
    (d / "et.json").write_bytes((train / "et.json").read_bytes())
    (d / "capture.json").write_bytes((train / "capture.json").read_bytes())
    cap = json.loads((d / "capture.json").read_text())
    cap["files"] = {"et": "et.json"}
    (d / "capture.json").write_text(json.dumps(cap))
    r = replay_trace(d, select="phase:backward", gaps="none", warmup=0, iters=1).result
    assert r["selection"]["share_of_step"] is None and "not known" in r["selection"]["share_how"]
    assert r["original_iter_time_s"] is None and r["error"] is None
    with pytest.raises(UserError, match="drops every op"):
        replay_trace(d, what_if=["drop:.*"], gaps="none", warmup=0, iters=1)


def test_a_multi_rank_replay_refuses_select_and_what_if(tmp_path):
    from benchmint.replay.distributed import replay_ranks

    for kw in ({"select": "op:aten::mm"}, {"what_if": ["drop:aten::mm"]}):
        with pytest.raises(UserError, match="single-process replay"):
            replay_ranks(tmp_path / "none.json", None, ranks=2, **kw)


def _spiked(view, k: int, extra_s: float):
    """``view`` with ``extra_s`` more recorded time in the gap before op ``k`` (what a preemption leaves)."""
    from dataclasses import replace

    ops = [o if i < k or o.start_s is None else replace(o, start_s=o.start_s + extra_s)
           for i, o in enumerate(view.ops)]
    return replace(view, ops=ops, step_span_s=view.step_span_s + extra_s)


def test_a_selections_share_is_the_median_over_the_recorded_steps(view):
    """One recorded step's spike outside the selection (a preemption) moves its share; the other steps'
    shares outvote it."""
    from benchmint.replay.adapt import select

    spec = "phase:optimizer"
    first = phases(view).index("optimizer")
    calm = select(view, spec)[1].info["share_of_step"]
    spiked = _spiked(view, first // 2, 0.5 * view.step_span_s)  # half a step more time, before the optimizer
    alone = select(spiked, spec)[1].info
    assert alone["share_of_step"] < 0.75 * calm
    info = select(spiked, spec, others=[view, _spiked(view, first, 0.0)])[1].info
    assert info["share_of_step"] == pytest.approx(calm)
    assert info["share_of_replayed_step"] == pytest.approx(alone["share_of_step"])
    assert len(info["share_per_recorded_step"]) == 3 and "median over 3 recorded steps" in info["share_how"]
    # a step with other ops (another path, a partial step) is not counted
    other = select(spiked, spec, others=[view, _spiked(view, first, 0.0).__class__(
        **{**view.__dict__, "ops": view.ops[:-1]})])[1].info
    assert len(other["share_per_recorded_step"]) == 2


def test_replay_takes_a_selections_share_over_every_recorded_step(tmp_path):
    d = tmp_path / "cap"
    capture_steps(build("encoder_cls").step, d, warmup=1, measure=5, record=3)
    res = replay_trace(d, select="op:aten::linear", gaps="none", warmup=0, iters=1)
    sel = res.result["selection"]
    assert len(sel["share_per_recorded_step"]) == 3
    assert sel["share_of_step"] == pytest.approx(sorted(sel["share_per_recorded_step"])[1])


def _et_observer_alone(path: Path) -> Path:
    """One training step of a small MLP recorded with the ExecutionTraceObserver alone: no profiler, so no
    ProfilerStep node and no Kineto trace."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    return record_et_alone(step, path, warmup=1)


def test_phase_selections_find_the_backward_and_optimizer_of_a_trace_recorded_by_the_et_observer_alone(tmp_path, cli):
    # the observer alone records the autograd engine's and the optimizer's scopes but no ProfilerStep: they
    # were left out of the view, and phase:backward matched none of the step's ops
    et = _et_observer_alone(tmp_path / "et.json")
    by = {}
    for phase in ("forward", "backward", "optimizer"):
        r = replay_trace(et, select=f"phase:{phase}", gaps="none", warmup=0, iters=1).result
        assert r["coverage"] == 1.0
        by[phase] = set(r["selection"]["op_types"])
    assert {"aten::nll_loss_backward", "aten::_log_softmax_backward_data", "aten::threshold_backward",
            "aten::mm"} <= by["backward"]
    assert by["optimizer"] == {"aten::add_"}  # SGD's step, inside Optimizer.step#SGD.step
    assert {"aten::linear", "aten::relu"} <= by["forward"]
    assert not by["forward"] & {"aten::mm", "aten::threshold_backward", "aten::add_"}
    assert not any(n.endswith("_backward") for n in by["forward"] | by["optimizer"])
    code, out, _err = cli("replay", str(et), "--select", "phase:backward", "--iters", "1", "--warmup", "0",
                          "--gaps", "none", "--no-store", "--out", str(tmp_path / "out"))
    assert code == 0 and "selection phase:backward:" in out


def test_phases_of_a_trace_whose_backward_ran_on_its_own_thread_without_profiler_steps():
    # PARAM's linear trace: no ProfilerStep, the backward on the autograd engine's thread, which ran more ops
    # than the step's own thread (the most frequent thread is not the step's)
    view = view_from_trace(load(Path(__file__).parent / "data" / "param" / "linear_et.json.gz"), device="cpu")
    ph = phases(view)
    by = {p: Counter(o.name for o, q in zip(view.ops, ph, strict=True) if q == p) for p in set(ph)}
    assert set(by) == {"forward", "backward", "optimizer"}
    assert "aten::linear" in by["forward"] and "aten::threshold_backward" in by["backward"]
    assert {"aten::zero_", "aten::_foreach_add_"} <= set(by["optimizer"])
    assert all(o.tid == view.ops[0].tid for o, q in zip(view.ops, ph, strict=True) if q == "forward")
    assert not any(n.endswith("_backward") for n in by["forward"] | by["optimizer"])


def test_a_scaled_steps_change_timed_under_noise_says_so():
    """The unscaled and the scaled step are timed one after the other: a user's GRU read -17% to +93% against
    a real +57..80% on a noisy host, with no caveat on the line."""
    sc = {"specs": ["batch=2"], "recorded": {"batch": 8}, "scaled": {"batch": 16}, "ops_with_new_shapes": 3,
          "ops": 9, "size_arguments_rewritten": 2, "change_vs_unscaled": -0.173, "unscaled_noisy": False}
    quiet = {"scale": sc, "iter_time_s": {"median": 1.0, "noisy": False}, "fidelity": {"verdict": "measured"}}
    assert "noisy" not in describe(quiet)[0] and "-17.3% against the unscaled replay" in describe(quiet)[0]
    loud = {**quiet, "iter_time_s": {"median": 1.0, "noisy": True}}
    assert "noisy: the scaled replay was timed under noise" in describe(loud)[0]
    first = {**quiet, "scale": {**sc, "unscaled_noisy": True}}
    assert "noisy: the unscaled replay was" in describe(first)[0]

"""The trace-only estimate of the un-observed step (replay/fidelity.py), on synthetic recordings: no timing."""

from __future__ import annotations

import pytest

from benchmint.replay.fidelity import (
    GAP_CAP_S,
    Calibration,
    estimate_original,
    estimate_over_steps,
    scope_inserts,
)
from benchmint.replay.types import TENSOR, Arg, OpRec, TraceView, TRef

US = 1e-6


def _view(slots: list[tuple[str, float, float]], tail: float, scopes: list) -> TraceView:
    ops, t = [], 0.0
    for k, (name, gap, dur) in enumerate(slots):
        t += gap
        ops.append(OpRec(node_id=k + 1, name=name, schema="", inputs=[], outputs=[], start_s=t, dur_s=dur))
        t += dur
    return TraceView(path="x", schema_version="1", ops=ops, total_nodes=len(ops), step_start_s=0.0,
                     step_span_s=t + tail, scopes=scopes)


def _tref(shape: tuple[int, ...]) -> TRef:
    n = 1
    for x in shape:
        n *= x
    return TRef(tensor_id=1, storage_id=1, offset=0, numel=n, itemsize=4, device="cpu", shape=shape, strides=None,
                dtype=None)


def _cal(n: int, gap: float, dur: float, tail: float) -> Calibration:
    return Calibration(replay_s=1e-3, replay_observed_s=2e-3, replay_op_nodes=n, replay_scope_nodes=0,
                       scope_cost_s=0.0, op_node_cost_s=0.0, bare_slots={i: (gap, dur) for i in range(n)},
                       bare_tail_s=tail, scope_event_cost_s=2 * US)


def test_estimate_counts_python_gaps_and_systematic_durations_not_stalls_or_scope_events():
    scopes = [(2, "enter", 90, "autograd::engine::evaluate_function: XBackward0"), (3, "exit", 90, "")]
    view = _view([
        ("aten::a", (10 + 40) * US, 100 * US),        # the first gap: at most the other gaps' median (50 us)
        ("aten::a", (10 + 50) * US, 100 * US),        # 50 us of the original's own Python before it
        ("aten::a", (10 + 2 + 50) * US, 4100 * US),   # a scope event here; a 4 ms stall in one call of aten::a
        ("aten::a", (10 + 2 + 5000) * US, 100 * US),  # a scope event and a 5 ms stall in a gap: capped
        ("aten::b", 10 * US, 130 * US),               # called once: its duration difference is not counted
    ], tail=5 * US, scopes=scopes)
    est = estimate_original(view, _cal(5, 10 * US, 100 * US, 5 * US))
    assert est == pytest.approx(1e-3 + (40 + 50 + 50) * US + GAP_CAP_S)


def test_estimate_takes_off_the_autograd_engines_scope_events_at_their_own_cheaper_cost():
    # the engine opens its scopes in C++ and the observers charge less for them than for a Python
    # record_function scope: taking them off at the Python probe's cost made an encoder-decoder's
    # backward gaps negative and its estimate fall to the ops alone (12% short of the live step)
    ev, acc = "autograd::engine::evaluate_function: MmBackward0", "torch::autograd::AccumulateGrad"
    scopes = [(1, "enter", 90, ev), (1, "enter", 91, "MmBackward0"), (2, "exit", 91, "MmBackward0"),
              (2, "exit", 90, ev), (2, "enter", 92, acc), (3, "exit", 92, acc),
              (3, "enter", 93, "## loss ##"), (4, "exit", 93, "## loss ##")]
    # each gap: the replay's 10 us, the scope events' cost at 3 us (the engine's) or 5 us, and 20 us of the model
    view = _view([("aten::a", 30 * US, 100 * US), ("aten::a", (10 + 2 * 3 + 20) * US, 100 * US),
                  ("aten::a", (10 + 3 * 3 + 20) * US, 100 * US), ("aten::a", (10 + 3 + 5 + 20) * US, 100 * US),
                  ("aten::a", (10 + 5 + 20) * US, 100 * US)], tail=0.0, scopes=scopes)
    cal = _cal(5, 10 * US, 100 * US, 0.0)
    cal.scope_event_cost_s, cal.engine_event_cost_s = 5 * US, 3 * US
    assert estimate_original(view, cal) == pytest.approx(1e-3 + 5 * 20 * US)
    cal.engine_event_cost_s = None  # not probed: every event at the record_function probe's cost
    assert estimate_original(view, cal) == pytest.approx(1e-3 + (17 + 16 + 14 + 18 + 20) * US)


def test_the_engine_scope_probe_times_only_the_engines_two_scopes_per_node(tmp_path):
    # its cost per event is the backward's observed-minus-unobserved time over four events a node: an op or
    # another scope recorded in that backward would be charged to the engine's scope events
    import json

    import torch
    from torch.profiler import ExecutionTraceObserver, ProfilerActivity, profile

    from benchmint.replay.fidelity import _Identity

    x, g = torch.ones(4, requires_grad=True), torch.ones(4)
    y = x
    for _ in range(3):
        y = _Identity.apply(y)
    et = ExecutionTraceObserver().register_callback(str(tmp_path / "et.json"))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, execution_trace_observer=et):
        torch.autograd.grad(y, x, g)  # as the probe runs it: no gradient accumulated into the leaf
    names = [n["name"] for n in json.loads((tmp_path / "et.json").read_text())["nodes"]
             if not n["name"].startswith("[pytorch|profiler")]
    assert sorted(names) == ["_IdentityBackward"] * 3 + ["autograd::engine::evaluate_function: _IdentityBackward"] * 3 \
        + ["autograd::engine::evaluate_function: torch::autograd::AccumulateGrad"]  # the leaf's, empty


def test_estimate_does_not_count_the_first_recorded_gap_as_the_model():
    # the observers' start-up lands before the first op of a recording: 900 us there is not the model's
    view = _view([("aten::a", 900 * US, 100 * US)] + [("aten::a", 30 * US, 100 * US)] * 3, tail=0.0, scopes=[])
    est = estimate_original(view, _cal(4, 10 * US, 100 * US, 0.0))
    assert est == pytest.approx(1e-3 + 4 * 20 * US)


def test_estimate_keeps_a_duration_difference_every_call_of_an_op_type_shows():
    view = _view([("aten::sqrt", 10 * US, 400 * US)] * 3 + [("aten::add", 10 * US, 100 * US)],
                 tail=0.0, scopes=[])
    est = estimate_original(view, _cal(4, 10 * US, 100 * US, 0.0))
    assert est == pytest.approx(1e-3 + 3 * 300 * US)


def test_estimate_groups_durations_by_input_shapes_so_small_calls_do_not_outvote_large_ones():
    # an optimizer's sqrt over two large states (slow in the original: denormals) and three small biases
    big, small = _tref((5000, 32)), _tref((64,))
    view = _view([("aten::sqrt", 10 * US, 600 * US)] * 2 + [("aten::sqrt", 10 * US, 100 * US)] * 3,
                 tail=0.0, scopes=[])
    for k, t in enumerate([big, big, small, small, small]):
        view.ops[k].inputs.append(Arg(TENSOR, t))
    est = estimate_original(view, _cal(5, 10 * US, 100 * US, 0.0))
    assert est == pytest.approx(1e-3 + 2 * 500 * US)


def test_estimate_is_never_below_the_replay():
    view = _view([("aten::a", 1 * US, 10 * US)] * 3, tail=0.0, scopes=[])
    assert estimate_original(view, _cal(3, 50 * US, 100 * US, 0.0)) == pytest.approx(1e-3)


def test_estimate_says_what_the_calls_of_an_opened_composites_callees_add_to_the_replay():
    # two of six ops stand in an LSTM the replay opened: the original called them from C++ (1 us gaps), the
    # replay from Python (10 us): their 18 us is told apart from the other gaps' 80 us of the original's Python
    view = _view([("aten::a", 30 * US, 100 * US)] * 4 + [("aten::mul", 1 * US, 100 * US)] * 2, tail=0.0, scopes=[])
    view.ops[4].composite = view.ops[5].composite = "aten::lstm"
    cal = _cal(6, 10 * US, 100 * US, 0.0)
    estimate_original(view, cal)
    assert cal.estimate_parts["gaps_in_opened_composites_s"] == pytest.approx(-18 * US)
    assert cal.estimate_parts["gaps_s"] == pytest.approx(80 * US - 18 * US)


def test_estimate_of_two_calls_takes_the_smaller_difference_so_one_stall_does_not_count_half():
    view = _view([("aten::exp", 10 * US, 2100 * US), ("aten::exp", 10 * US, 130 * US)], tail=0.0, scopes=[])
    est = estimate_original(view, _cal(2, 10 * US, 100 * US, 0.0))
    assert est == pytest.approx(1e-3 + 2 * 30 * US)


def test_a_duration_difference_no_larger_than_the_observers_cost_for_that_op_does_not_count():
    # the replay's add took 100 us recorded and 10 us un-observed: 90 us of it is the observers'; the original's
    # +60 us on every call can be theirs too (interleaved with Python their cost grows), +200 us cannot
    view = _view([("aten::add", 10 * US, 160 * US)] * 3 + [("aten::mul", 10 * US, 300 * US)] * 2, tail=0.0,
                 scopes=[])
    cal = _cal(5, 10 * US, 100 * US, 0.0)
    cal.op_unobserved_s = {i: 10 * US for i in range(5)}
    assert estimate_original(view, cal) == pytest.approx(1e-3 + 2 * 200 * US)


def test_ops_that_only_allocate_fill_or_copy_memory_add_no_duration_difference_to_the_estimate():
    # a packed LSTM's first recording: its slice_backward calls (a zeroed gradient of the input's size, copied
    # into) took fresh-page faults as the observers' buffers grew, 420 us against the replay's recorded 100 us,
    # on every call; un-observed the original does not. A sqrt over an optimizer state of zeros is slower on
    # its values in the original too: that one counts
    view = _view([("aten::slice_backward", 10 * US, 420 * US)] * 4 + [("aten::sqrt", 10 * US, 400 * US)] * 3,
                 tail=0.0, scopes=[])
    cal = _cal(7, 10 * US, 100 * US, 0.0)
    assert estimate_original(view, cal) == pytest.approx(1e-3 + 3 * 300 * US)
    assert cal.estimate_parts["durations_value_independent_s"] == pytest.approx(4 * 320 * US)
    assert cal.estimate_parts["durations_s"] == pytest.approx(3 * 300 * US)


def test_a_recording_slowed_throughout_is_scaled_to_this_machines_speed_first():
    # every op computes for 50 us here; the original's one recorded step ran 1.5x slower throughout (a busy
    # machine): its gaps and durations are scaled back before they are compared, so only its 20 us of Python
    # per gap count, not 1.5x of everything
    cal = _cal(6, 10 * US, 100 * US, 0.0)
    cal.op_unobserved_s = {i: 50 * US for i in range(6)}
    same_speed = _view([("aten::mm", 30 * US, 100 * US)] * 6, tail=0.0, scopes=[])
    slowed = _view([("aten::mm", 45 * US, 150 * US)] * 6, tail=0.0, scopes=[])
    assert estimate_original(same_speed, cal) == pytest.approx(1e-3 + 6 * 20 * US)
    assert estimate_original(slowed, cal) == pytest.approx(1e-3 + 6 * 20 * US)
    assert cal.original_slowdown == pytest.approx(1.5)


def test_several_recorded_steps_of_the_same_ops_give_their_median_so_one_preempted_step_does_not_decide():
    # three recorded steps of the same ops: 20 us of Python per gap in two, a preempted third (200 us more in
    # every gap); a step that ran other ops (a partial one) is left out
    cal = _cal(4, 10 * US, 100 * US, 0.0)
    steps = [_view([("aten::a", g * US, 100 * US)] * 4, tail=0.0, scopes=[]) for g in (230, 30, 30)]
    other = _view([("aten::b", 900 * US, 100 * US)] * 4, tail=0.0, scopes=[])
    est = estimate_over_steps(steps[0], [steps[1], other, steps[2]], cal)
    assert est == pytest.approx(1e-3 + 4 * 20 * US)
    assert cal.estimate_parts["per_step_s"] == pytest.approx([1e-3 + 4 * 220 * US, est, est])
    assert cal.estimate_parts["gaps_s"] == pytest.approx(4 * 220 * US)  # the replayed step's own parts
    assert estimate_over_steps(steps[0], [], cal) == pytest.approx(1e-3 + 4 * 220 * US)


def test_an_op_called_once_a_step_counts_when_every_recorded_step_shows_it_and_its_time_depends_on_values():
    # Adam's sqrt over an embedding table's state (mostly zeros) runs once a step, 300 us slower than the
    # replay's over random values in both recorded steps, and the calibration timed it 5x slower on zeros:
    # the original's own time. The linear is slower in both steps too (the recording's fresh-page faults on
    # its output) but takes the same time on zeros; the exp is slow in one recorded step only (a stall)
    cal = _cal(4, 10 * US, 100 * US, 0.0)
    cal.zero_input_ratio = {1: 5.0, 2: 1.0, 3: 1.0}
    steps = [_view([("aten::add", 10 * US, 100 * US), ("aten::sqrt", 10 * US, 400 * US),
                    ("aten::linear", 10 * US, 270 * US), ("aten::exp", 10 * US, e * US)], tail=0.0, scopes=[])
             for e in (2100, 100)]
    assert estimate_over_steps(steps[0], [steps[1]], cal) == pytest.approx(1e-3 + 300 * US)
    assert cal.estimate_parts["durations_s"] == pytest.approx(300 * US)
    assert cal.estimate_parts["durations_value_independent_s"] == pytest.approx(170 * US)
    assert estimate_original(steps[0], cal) == pytest.approx(1e-3)  # one step alone: nothing tells a stall
    cal.zero_input_ratio = {}  # not probed (a GPU replay): once-a-step ops stay out, as before, unlabelled
    assert estimate_over_steps(steps[0], [steps[1]], cal) == pytest.approx(1e-3)
    assert cal.estimate_parts["durations_value_independent_s"] == 0.0


def test_an_op_called_several_times_keeps_its_systematic_difference_whatever_the_probe_on_zeros_says():
    # the probe zeroes floating-point inputs only: an embedding bag's time follows its indices, which it
    # leaves alone, so its ratio near 1 does not make a difference every call shows the recording's
    view = _view([("aten::_embedding_bag", 10 * US, 300 * US)] * 3, tail=0.0, scopes=[])
    cal = _cal(3, 10 * US, 100 * US, 0.0)
    cal.zero_input_ratio = {0: 1.0, 1: 1.1, 2: 0.9}
    assert estimate_original(view, cal) == pytest.approx(1e-3 + 3 * 200 * US)


def test_a_few_data_dependent_slow_ops_do_not_rescale_the_recording():
    # two ops 5x slower in the original (its data), the others as fast as the replay's: not a slow machine
    cal = _cal(6, 10 * US, 100 * US, 0.0)
    cal.op_unobserved_s = {i: 50 * US for i in range(6)}
    durs = [95, 100, 105, 120, 500, 500]
    view = _view([(f"aten::op{k}", 10 * US, d * US) for k, d in enumerate(durs)], tail=0.0, scopes=[])
    estimate_original(view, cal)
    assert cal.original_slowdown == 1.0 and cal.original_speed["applied"] is False
    assert cal.original_speed["median_ratio"] == pytest.approx(1.125)


def test_the_calibration_recreates_balanced_scopes_only_and_never_a_collectives_record_param_comms():
    # a trace without a ProfilerStep: the scopes of two threads (the main thread's listed first), placed
    # among the ops replayed on one. The autograd thread's scope 7 closes after op 1 where the main thread's
    # optimizer scope 8 opens before op 2: the closing goes first. Scope 9 closes while 10, opened after it on
    # the other thread, is still open: replayed on one thread they would nest wrongly, so 9 is not re-created
    # (10 alone nests). Nor is c10d's record_param_comms: re-created bare, without the collective's
    # parameters, Kineto segfaulted on it
    scopes = [(2, "enter", 8, "Optimizer.step#SGD.step"), (3, "exit", 8, ""),
              (3, "enter", 9, "outer"), (5, "exit", 9, ""),
              (1, "enter", 11, "record_param_comms"), (1, "exit", 11, "record_param_comms"),
              (1, "enter", 7, "autograd::engine::evaluate_function: AddmmBackward0"), (2, "exit", 7, ""),
              (4, "enter", 10, "inner"), (6, "exit", 10, "")]
    view = _view([(f"aten::op{i}", US, US) for i in range(6)], 0.0, scopes)
    assert scope_inserts(view) == {
        1: ["_h7 = _rfe('autograd::engine::evaluate_function: AddmmBackward0', None)"],
        2: ["_rfx(_h7)", "_h8 = _rfe('Optimizer.step#SGD.step', None)"], 3: ["_rfx(_h8)"],
        4: ["_h10 = _rfe('inner', None)"], 6: ["_rfx(_h10)"]}


def test_the_scope_event_cost_is_the_median_of_probes_taken_beside_the_recordings_so_one_slow_probe_does_not_set_it(
        tmp_path, monkeypatch):
    # a step's scope events are many (1,868 in a small encoder-decoder's training step): the observers' cost
    # per event, times that count, is most of the trace-only estimate's noise when one probe decides it
    import torch
    from torch import nn

    from benchmint.replay import fidelity
    from benchmint.replay.plan import build_plan
    from benchmint.replay.source import view_from_trace
    from benchmint.trace import load
    from benchmint.trace.capture import capture_steps

    model = nn.Linear(8, 4)
    x = torch.randn(2, 8)

    def step():
        model(x).sum().backward()  # autograd-engine scopes: the calibration records a scoped and a bare pass

    capture_steps(step, tmp_path, warmup=1, measure=5, record=1)
    plan = build_plan(view_from_trace(load(tmp_path / "et.json")), "cpu")
    order: list[str] = []
    real_record = fidelity.record_replay
    monkeypatch.setattr(fidelity, "record_replay",
                        lambda *a, **k: order.append("record") or real_record(*a, **k))
    probes = iter([(30e-6, 20e-6), (30e-6, 20e-6), (90e-6, 20e-6)] + [(30e-6, 20e-6)] * 20)  # one stalled probe

    def probe():
        order.append("probe")
        return next(probes)

    monkeypatch.setattr(fidelity, "_probe_scope_cost", probe)
    engine = iter([3e-6, 3e-6, 9e-6] + [3e-6] * 20)
    monkeypatch.setattr(fidelity, "_probe_engine_scope_cost", lambda: next(engine))
    cal = fidelity.calibrate(plan, plan.compile(), 1e-3, repeats=3)
    assert cal.scope_event_cost_s == pytest.approx(5e-6)  # (30 - 20) / 2 us, the stalled probe out-voted
    assert cal.engine_event_cost_s == pytest.approx(3e-6)  # the engine's scopes, probed beside them
    assert order.count("probe") == 6  # one before each kept recording of the two passes
    assert order[:4] == ["record", "probe", "record", "probe"]  # the first recording (thrown away) has none

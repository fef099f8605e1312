"""A collective's cost apart from the ranks' waits in it (benchmint.replay.collective_time)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmint.replay.collective_time import communication_gaps, last_arrival, recorded_spans


def _view(ops, start=0.0, span=0.1):
    return SimpleNamespace(ops=[SimpleNamespace(name=n, start_s=s, dur_s=d, inputs=[], parents_opened=0)
                                for n, s, d in ops], step_start_s=start, step_span_s=span, scopes=[])


def _rank(wait):
    # backward's last op, the all-reduce (async: 1 ms on the main thread), then `wait` seconds of waiting for the
    # other rank plus the communication (4 ms), then the next op
    return _view([("aten::mul", 0.010, 0.001), ("c10d::allreduce_", 0.011, 0.001),
                  ("aten::as_strided", 0.016 + wait, 0.0001)])


def test_the_wait_for_the_last_rank_is_not_the_collectives_cost():
    a, b = _rank(0.0), _rank(0.080)  # rank 1 arrived first and waited 80 ms for rank 0
    assert communication_gaps(a) == {2}
    out = last_arrival([recorded_spans(a), recorded_spans(b)], [[{"time_s": 0.006}], [{"time_s": 0.050}]])
    assert out["cost_s"] == pytest.approx(0.005)  # from the collective's start to the next op, on rank 0
    assert out["wait_s_per_rank"] == pytest.approx([0.0, 0.080])
    assert out["replay_cost_s"] == pytest.approx(0.006) and out["replay_wait_s_per_rank"] == pytest.approx([0, 0.044])
    assert last_arrival([recorded_spans(a), []]) is None  # ranks whose collectives do not line up
    # spans not recorded (no Kineto trace): the totals are unknown, not 0
    blind = [[{"op": "c10d::allreduce_", "span_s": None}]] * 2
    out = last_arrival(blind)
    assert out["cost_s"] is None and out["wait_s_per_rank"] is None and out["collectives_timed"] == 0


def test_cpu_time_between_ops_is_not_placed_where_a_rank_waited():
    # the gap schedule spread the CPU time between ops by where the original spent more than the replay; a rank
    # that waited 80 ms after its all-reduce got almost all of its gaps there, after the collective, where it only
    # waited: a gap after a collective now counts at most what the estimate counts of any gap
    from benchmint.replay.fidelity import gap_schedule

    v = _rank(0.080)
    v.ops.insert(0, SimpleNamespace(name="aten::add", start_s=0.002, dur_s=0.001, inputs=[], parents_opened=0))
    plan = SimpleNamespace(view=v, steps=[SimpleNamespace(op=o, replayed=True, index=i) for i, o in enumerate(v.ops)])
    gaps = gap_schedule(plan, None, 0.010)
    after = gaps[3]  # before aten::as_strided, right after the all-reduce
    assert after < 0.05 * sum(gaps)  # was 89% of them
    assert gaps[0] + gaps[1] > 10 * after  # most of it before the collective, where the original worked


def test_ranks_record_each_calibration_repeat_at_once_and_read_after(monkeypatch):
    # the estimate subtracts the replay's recordings from the original's, both under the observers: the ranks'
    # original step was recorded by all ranks at once; the replay's recordings were each rank's own, made while
    # another rank read its previous recording (Python-heavy) on the shared cores, which slowed them: each repeat
    # is now recorded by every rank at once (the same sync names on every rank) and read after all are made
    import benchmint.trace as trace_pkg
    from benchmint.replay import fidelity

    events = []
    monkeypatch.setattr(fidelity, "record_replay", lambda plan, fn, tmp, k: events.append(("record", k)) or ("e", "k"))

    def bad_load(path):
        events.append(("read",))
        raise ValueError("unreadable")

    monkeypatch.setattr(trace_pkg, "load", bad_load)
    with pytest.raises(fidelity.CalibrationFailed):
        fidelity._record_slots(None, None, 3, sync=lambda name: events.append(("sync", name)), tag="bare")
    assert events[:8] == [("sync", "recordbare/-1"), ("record", -1), ("sync", "recordbare/0"), ("record", 0),
                          ("sync", "recordbare/1"), ("record", 1), ("sync", "recordbare/2"), ("record", 2)]
    assert events[8:] == [("read",)] * 3  # the first (discarded) recording is not read


def test_a_rank_whose_recordings_fail_still_joins_the_other_ranks_recordings(monkeypatch):
    # every rank records the same passes (the sync names are met by all): a rank whose first pass failed still
    # takes part in the second before it reports the failure, so the others are not left waiting for it
    from benchmint.replay import fidelity

    passes = []

    def fake_slots(plan, fn, repeats, sync=None, tag="", probe=None):
        passes.append((tag, sync is not None))
        raise fidelity.CalibrationFailed("unreadable")

    monkeypatch.setattr(fidelity, "_record_slots", fake_slots)
    plan = SimpleNamespace(view=SimpleNamespace(scopes=[]), comm=SimpleNamespace(phase=lambda name: None))
    with pytest.raises(fidelity.CalibrationFailed):
        fidelity.calibrate(plan, None, 0.01)
    assert passes == [("scoped", True), ("bare", True)]
    passes.clear()
    with pytest.raises(fidelity.CalibrationFailed):
        fidelity.calibrate(SimpleNamespace(view=plan.view, comm=None), None, 0.01)
    assert passes == [("scoped", False)]  # one process: nothing to join

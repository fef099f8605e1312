"""compare_with_original: a live step and its replay timed alternately, the error as a median of ratios."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Two threads on two busy cores swing a matmul's time from round to round: one thread, as benchmarks run."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_a_replay_of_a_captured_step_is_compared_with_the_live_step(tmp_path):
    from benchmint.replay.api import replay_trace
    from benchmint.replay.compare import compare_with_original
    from benchmint.trace.capture import capture_steps

    w = torch.randn(512, 512)
    x = torch.randn(256, 512)  # a step of milliseconds: the replay's own overhead is small beside it

    def step():
        return torch.relu(x @ w).sum()

    capture_steps(step, tmp_path / "cap", warmup=2, measure=5, record=1)
    # the ops alone: gaps settled against capture.json's figure would add their own noise to what is checked here
    res = replay_trace(tmp_path / "cap", iters=3, warmup=1, gaps="none")
    out = compare_with_original(step, {"replay": res, "again": res}, rounds=3, reps=2)
    assert out["original_s"] > 0 and out["rounds"] == 3 and "alternating" in out["how_measured"]
    assert set(out["replays"]) == {"replay", "again"}
    for r in out["replays"].values():
        assert r["replay_s"] > 0
    # an original that does the step twice takes about twice the replay's time: the error says so
    twice = compare_with_original(lambda: (step(), step()), {"replay": res}, rounds=5, reps=3)
    assert -0.85 < twice["replays"]["replay"]["error"] < -0.15, twice
    # a replay without gaps is its own ops alone: nothing more is timed
    rep = out["replays"]["replay"]
    assert rep["ops_timed"] is False and rep["ops_rounds_s"] == rep["rounds_s"]
    with pytest.raises(ValueError):
        compare_with_original(step, {"replay": res}, rounds=0)


def test_a_replay_with_gaps_has_its_ops_alone_timed_in_the_same_rounds(tmp_path):
    from benchmint.replay.api import replay_trace
    from benchmint.replay.compare import compare_with_original
    from benchmint.replay.headline import judge
    from benchmint.trace.capture import capture_steps

    w = torch.randn(256, 256)
    x = torch.randn(128, 256)

    def step():
        return torch.relu(x @ w).sum()

    capture_steps(step, tmp_path / "cap", warmup=2, measure=5, record=1)
    res = replay_trace(tmp_path / "cap", iters=3, warmup=1, gaps="none")
    res.gaps_ns = [2_000_000] + [0] * len(res.plan.steps)  # 2 ms of gaps before the first op: ops alone far below
    out = compare_with_original(step, {"replay": res}, rounds=3, reps=2)
    rep = out["replays"]["replay"]
    assert rep["ops_timed"] is True and len(rep["ops_rounds_s"]) == 3
    assert rep["ops_s"] < rep["replay_s"] and rep["ops_vs_original"] < rep["error"] + 1
    assert "ops alone" in out["how_measured"]
    j = judge(res.result, out)
    assert j["ops_alone_s"] == rep["ops_s"] and j["ops_alone_over_reference"] == rep["ops_vs_original"]
    # not asked for: the replays alone are timed, as before
    assert "ops_s" not in compare_with_original(step, {"replay": res}, rounds=1, reps=1,
                                                ops_alone=False)["replays"]["replay"]

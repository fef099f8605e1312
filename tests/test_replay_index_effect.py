"""Where the trace cannot say how a lookup's indices were spread, the replay says how much its guess moves the
step (replay/index_effect.py): the step's ops timed over uniform and over skewed indices, the replayed indices
kept, and a warning only where the difference is large and told from noise."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmint.replay import index_effect, index_skew

ROWS, N = 20000, 4096


def _step():
    torch.manual_seed(0)
    bag = torch.nn.EmbeddingBag(ROWS, 32, mode="sum")
    idx = torch.randint(0, ROWS, (N,))
    offs = torch.arange(0, N, 16)

    def step() -> None:
        with torch.inference_mode():
            bag(idx, offs).sum()

    return step


def _plain_capture(d: Path) -> Path:
    """A trace recorded the way a user records one with the plain PyTorch API (no capture.json, no sketch)."""
    from torch.profiler import ExecutionTraceObserver, ProfilerActivity, profile, schedule

    d.mkdir(parents=True)
    step = _step()
    for _ in range(3):
        step()
    et = ExecutionTraceObserver().register_callback(str(d / "et.json"))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, schedule=schedule(wait=0, warmup=1, active=1),
                 execution_trace_observer=et,
                 on_trace_ready=lambda p: p.export_chrome_trace(str(d / "kineto.json"))) as prof:
        for _ in range(2):
            step()
            prof.step()
    et.unregister_callback()
    return d


def _index_tensor(res, rec: dict) -> torch.Tensor:
    st = res.plan.steps[rec["step"]]
    ref = next(r for r in index_skew._index_refs(st.op, index_skew._arg_names(st.op)) if r.tensor_id == rec["tensor_id"])
    return res.plan.init[res.plan.slots[ref.key]]


def test_a_guessed_spread_is_timed_both_ways_and_the_replay_keeps_its_own_indices(tmp_path, monkeypatch, cli):
    from benchmint.replay import replay_trace

    monkeypatch.delenv(index_skew.SPREAD_ENV, raising=False)
    measure, kept = index_effect.measure, []

    def measured(plan, *a, **k):  # the indices the replay chose, before and after the timing
        before = [plan.init[plan.slots[key]].clone() for key in index_skew.lookup_tensors(plan)]
        out = measure(plan, *a, **k)
        kept.append(all(torch.equal(b, plan.init[plan.slots[key]])
                        for b, key in zip(before, index_skew.lookup_tensors(plan), strict=True)))
        return out

    monkeypatch.setattr(index_effect, "measure", measured)
    d = _plain_capture(tmp_path / "plain")
    res = replay_trace(d / "et.json", d / "kineto.json", gaps="none", warmup=0, iters=2)
    assert kept == [True]
    dist = res.result["index_distribution"]
    eff = dist["effect"]
    assert eff["tensors"] == 1 and eff["sides"] == ["uniform", "zipf 1.05"] and eff["replayed"] == {"uniform": 1}
    assert eff["pairs"] >= index_effect.MIN_PAIRS and eff["ops_only_uniform_s"] > 0 and eff["ops_only_skewed_s"] > 0
    assert eff["ci_low"] <= 1 + eff["change"] <= eff["ci_high"]
    # the replay ran over the indices it chose (uniform here), not over the last side timed
    (rec,) = dist["tensors"]
    idx = _index_tensor(res, rec)
    assert rec["chosen"] == "uniform"
    assert int(torch.unique(idx).numel()) > 0.9 * index_skew.expected_distinct(ROWS, N, 0.0)
    # the CLI says it, and how to settle it where it matters
    code, out, err = cli("replay", str(d / "et.json"), "--kineto", str(d / "kineto.json"), "--gaps", "none",
                         "--iters", "2", "--no-store", "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    text = " ".join(out.split())
    assert "made-up lookup indices (1 tensor)" in text and "over uniform indices" in text and "zipf 1.05" in text
    assert json.loads((tmp_path / "r.json").read_text())["index_distribution"]["effect"]["pairs"] >= 5


def test_a_spread_that_is_known_is_not_timed(tmp_path, monkeypatch):
    """Given by the user (``--index-spread``, ``BENCHMINT_INDEX_SPREAD``) or fitted to a capture's sketch of the
    data: nothing rides on a guess, nothing is timed."""
    from benchmint.replay import replay_trace
    from benchmint.trace.capture import capture_steps

    monkeypatch.delenv(index_skew.SPREAD_ENV, raising=False)
    monkeypatch.setattr(index_effect, "measure", lambda *a, **k: (_ for _ in ()).throw(AssertionError("timed")))
    d = _plain_capture(tmp_path / "plain")
    res = replay_trace(d / "et.json", d / "kineto.json", gaps="none", warmup=0, iters=1, index_spread="zipf:1.1")
    assert "effect" not in res.result["index_distribution"]
    monkeypatch.undo()  # a sketched tensor: looked at, and left out of the timing
    monkeypatch.delenv(index_skew.SPREAD_ENV, raising=False)
    cap = tmp_path / "cap"
    capture_steps(_step(), cap, warmup=2, measure=5, record=1)  # capture.json holds the indices' sketch
    res = replay_trace(cap, gaps="none", warmup=0, iters=1)
    assert res.result["index_distribution"]["tensors"][0]["as"].startswith("capture.json")
    assert "effect" not in res.result["index_distribution"]
    assert not index_effect.unknown("uniform") and not index_effect.unknown("zipf:1.2")
    monkeypatch.setenv(index_skew.SPREAD_ENV, "uniform")
    assert not index_effect.unknown("auto")
    monkeypatch.setenv(index_skew.SPREAD_ENV, "auto")
    assert index_effect.unknown("auto")
    monkeypatch.delenv(index_skew.SPREAD_ENV)
    assert index_effect.unknown("auto")


def test_the_console_warns_only_where_the_guess_measurably_moves_the_step():
    def result(change: float, lo: float, hi: float, verdict: str) -> dict:
        return {"index_distribution": {"effect": {
            "tensors": 6, "sides": ["uniform", "zipf 1.05"], "ops_only_uniform_s": 0.0018,
            "ops_only_skewed_s": 0.0018 * (1 + change), "change": change, "ci_low": lo, "ci_high": hi,
            "pairs": 30, "verdict": verdict}}}

    (big,) = index_effect.lines(result(-0.12, 0.86, 0.91, "saving"))
    assert big.startswith("warning:") and "-12.0%" in big and "--index-spread" in big and "benchmint capture" in big
    (small,) = index_effect.lines(result(-0.01, 0.98, 1.005, "no measurable cost"))
    assert not small.startswith("warning") and "hardly" in small
    (noisy,) = index_effect.lines(result(-0.08, 0.80, 1.02, "inconclusive"))  # large but not told from noise
    assert not noisy.startswith("warning") and "too noisy" in noisy
    (wide,) = index_effect.lines(result(-0.03, 0.85, 1.08, "inconclusive"))  # small, but the interval is wide
    assert "too noisy" in wide and "hardly" not in wide
    (unsure,) = index_effect.lines(result(-0.045, 0.88, 0.99, "saving"))  # could be 12%
    assert "too noisy" in unsure and not unsure.startswith("warning")
    (note,) = index_effect.lines({"index_distribution": {"effect": {"tensors": 1, "note": "not measured: x"}}})
    assert "not measured" in note
    assert index_effect.lines({"index_distribution": None}) == [] and index_effect.lines({}) == []

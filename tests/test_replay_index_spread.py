"""Made-up lookup indices spread as the recorded lookup time says (replay/index_skew.py): a lookup recorded as
fast as over skewed indices gets skewed ones, one recorded as fast as over uniform indices keeps uniform."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmint.replay import index_skew
from benchmint.replay.plan import build_plan
from benchmint.replay.source import view_from_trace
from benchmint.trace import load

ROWS, N = 5000, 4096


def _trace(path: Path) -> Path:
    """One ``embedding`` over a (5000, 16) table with 4096 made-up indices."""
    def node(i, name, inputs=(), shapes=(), types=(), outputs=(), oshapes=(), otypes=(), attrs=()):
        return {"id": i, "name": name, "ctrl_deps": 2 if i > 2 else i - 1,
                "inputs": {"values": list(inputs), "shapes": list(shapes), "types": list(types),
                           "strides": [[] for _ in inputs]},
                "outputs": {"values": list(outputs), "shapes": list(oshapes), "types": list(otypes),
                            "strides": [[] for _ in outputs]},
                "attrs": [{"name": "rf_id", "type": "uint64", "value": i}, {"name": "tid", "type": "uint64",
                                                                            "value": 1}, *attrs]}
    schema = ("aten::embedding(Tensor weight, Tensor indices, SymInt padding_idx=-1, bool scale_grad_by_freq=False, "
              "bool sparse=False) -> Tensor")
    ops = [node(1, "[pytorch|profiler|execution_trace|process]"), node(2, "[pytorch|profiler|execution_trace|thread]"),
           node(3, "aten::embedding", [[10, 10, 0, ROWS * 16, 4, "cpu"], [11, 11, 0, N, 8, "cpu"], -1, False, False],
                [[ROWS, 16], [N], [], [], []], ["Tensor(float)", "Tensor(long int)", "Int", "Bool", "Bool"],
                [[12, 12, 0, N * 16, 4, "cpu"]], [[N, 16]], ["Tensor(float)"],
                [{"name": "op_schema", "type": "string", "value": schema}])]
    path.write_text(json.dumps({"schema": "1.1.1-chakra.0.0.4", "pid": 1, "time": "x", "start_ts": 0,
                                "finish_ts": 1, "nodes": ops}))
    return path


def _plan(tmp_path: Path, recorded_s: float):
    view = view_from_trace(load(_trace(tmp_path / "et.json")))
    view.ops[0].dur_s = recorded_s  # as Kineto would give it
    plan = build_plan(view, "cpu", 0)
    key = view.ops[0].inputs[1].value.key
    return plan, plan.init[plan.slots[key]]


def _top_share(t: torch.Tensor) -> float:
    """Share of the lookups that land on the 1% most used rows."""
    counts = torch.bincount(t.reshape(-1), minlength=ROWS).sort(descending=True).values
    return float(counts[: ROWS // 100].sum()) / t.numel()


def _fake_timer(indices: torch.Tensor):
    """A lookup that costs 1 ms per distinct row touched (a skewed spread touches fewer, as caches see it)."""
    def timer(f, R):
        f(R)
        return 1e-3 * int(torch.unique(indices).numel()) / ROWS
    return timer


@pytest.mark.parametrize("skewed", [True, False])
def test_the_spread_that_matches_the_recorded_lookup_time_is_kept_in_the_plan(tmp_path, monkeypatch, skewed):
    monkeypatch.delenv(index_skew.SPREAD_ENV, raising=False)
    gen = torch.Generator().manual_seed(3)
    uniform_s = 1e-3 * int(torch.unique(index_skew.spread_indices((N,), ROWS, 0.0, gen)).numel()) / ROWS
    skew_s = 1e-3 * int(torch.unique(index_skew.spread_indices((N,), ROWS, 1.3, gen)).numel()) / ROWS
    assert skew_s < 0.7 * uniform_s  # the family spans what the test needs
    plan, idx = _plan(tmp_path, skew_s if skewed else uniform_s)
    got = index_skew.choose(plan, timer=_fake_timer(idx))
    assert got is not None and len(got) == 1
    rec = got[0]
    assert rec["ops"] == ["aten::embedding"] and rec["rows"] == ROWS and rec["indices"] == N
    assert (rec["chosen"] != "uniform") is skewed
    assert set(rec["times_s"]) == {label for label, _ in index_skew.SPREADS}
    # the plan's tensor holds the chosen spread, in range, and the replay runs on it
    assert int(idx.min()) >= 0 and int(idx.max()) < ROWS
    assert (_top_share(idx) > 0.2) is skewed
    with plan.grad_context():
        plan.compile()(plan.registers())


def test_the_choice_can_be_turned_off_and_uniform_indices_stay(tmp_path, monkeypatch):
    monkeypatch.setenv(index_skew.SPREAD_ENV, "uniform")
    plan, idx = _plan(tmp_path, 1e-9)
    assert index_skew.choose(plan, timer=_fake_timer(idx)) is None
    assert _top_share(idx) < 0.05


def test_skewed_indices_stay_in_range_and_concentrate_on_few_rows():
    gen = torch.Generator().manual_seed(0)
    for rows in (1, 7, 1000, (1 << 22) + 5):
        for _label, skew in index_skew.SPREADS:
            t = index_skew.spread_indices((64, 8), rows, skew, gen, torch.int32)
            assert t.shape == (64, 8) and t.dtype == torch.int32
            assert int(t.min()) >= 0 and int(t.max()) < rows
    u = index_skew.spread_indices((20000,), 10000, 0.0, gen)
    z = index_skew.spread_indices((20000,), 10000, 1.3, gen)
    assert torch.unique(z).numel() < 0.5 * torch.unique(u).numel()


def test_a_lookup_whose_time_does_not_depend_on_the_spread_keeps_uniform(tmp_path, monkeypatch):
    """A table that stays in cache runs as fast over any spread: a recording far faster than the replay (a busy
    machine at replay time) must not pick a skew on noise."""
    monkeypatch.delenv(index_skew.SPREAD_ENV, raising=False)
    plan, idx = _plan(tmp_path, 1e-6)
    got = index_skew.choose(plan, timer=lambda f, R: 1e-3)
    assert got is not None and got[0]["chosen"] == "uniform"
    assert _top_share(idx) < 0.05


@pytest.mark.parametrize("gaps", ["none", "recorded"])
def test_a_scaled_replay_keeps_the_unscaled_steps_choice_of_spread(tmp_path, monkeypatch, gaps):
    """``--scale`` replays the unscaled step first and keeps its gaps: it must keep its index spread too, neither
    fall back to uniform indices (``--gaps recorded``: the scaled lookups then ran slower than the unscaled ones)
    nor choose again against the recorded times, which are those of the unscaled lookups (``--gaps none``)."""
    from benchmint.replay import replay_trace
    from benchmint.trace.capture import capture_steps

    monkeypatch.delenv(index_skew.SPREAD_ENV, raising=False)

    calls = []

    def timer(f, R):  # far slower than recorded, faster the fewer rows touched: the most skewed spread is chosen
        calls.append(1)
        return float(sum(int(torch.unique(t).numel()) for t in R
                         if isinstance(t, torch.Tensor) and t.dtype == torch.long and t.numel()))

    monkeypatch.setattr(index_skew, "_time", timer)
    d = tmp_path / "cap"
    torch.manual_seed(0)
    bags = [torch.nn.Embedding(ROWS, 32) for _ in range(2)]
    idx = [torch.randint(0, ROWS, (16, 4)) for _ in bags]  # [batch, 4]

    def step() -> None:
        with torch.inference_mode():
            sum(b(i).sum() for b, i in zip(bags, idx, strict=True))

    capture_steps(step, d, warmup=1, measure=5, record=1)
    res = replay_trace(d, scale=("batch=2",), gaps=gaps, warmup=0, iters=1)
    spread = res.result["index_distribution"]
    assert spread is not None and {t["chosen"] for t in spread["tensors"]} == {"zipf 1.3"}
    # chosen once, on the unscaled step (every tensor timed in every round, over every spread)
    assert len(calls) == index_skew.ROUNDS * len(index_skew.SPREADS) * len(spread["tensors"])
    assert res.result["scale"]["scaled"] == {"batch": 32.0}
    # the gaps kept are the unscaled replay's, and say how that replay settled them
    assert (res.result["gap_settling"] == "alone") is (gaps == "recorded")
    for t in spread["tensors"]:  # the scaled step's tensors hold the chosen spread
        st = res.plan.steps[t["step"]]
        ref = next(r for r in index_skew._index_refs(st.op, index_skew._arg_names(st.op)) if r.tensor_id == t["tensor_id"])
        idx = res.plan.init[res.plan.slots[ref.key]]
        u = index_skew.spread_indices(idx.shape, t["rows"], 0.0, torch.Generator().manual_seed(0))
        assert torch.unique(idx).numel() < 0.8 * torch.unique(u).numel()


def test_a_spread_the_step_cannot_run_over_falls_back_to_uniform(tmp_path, monkeypatch):
    # another op reading the same indices can have a shape that follows their values (unique, coalesce): a
    # spread the whole step does not run over is given up, and the result says so
    monkeypatch.delenv(index_skew.SPREAD_ENV, raising=False)
    gen = torch.Generator().manual_seed(3)
    skew_s = 1e-3 * int(torch.unique(index_skew.spread_indices((N,), ROWS, 1.3, gen)).numel()) / ROWS
    plan, idx = _plan(tmp_path, skew_s)
    real = plan.compile

    def compile_failing_over_skew(*a, **k):
        fn = real(*a, **k)

        def run(R):
            if _top_share(idx) > 0.2:
                raise RuntimeError("shape follows the values")
            return fn(R)
        return run
    monkeypatch.setattr(plan, "compile", compile_failing_over_skew)
    got = index_skew.choose(plan, timer=_fake_timer(idx))
    assert got is not None and got[0]["chosen"] == "uniform" and "does not run over zipf" in got[0]["fallback"]
    assert _top_share(idx) < 0.05


def _capture_lookups(d: Path) -> None:
    from benchmint.trace.capture import capture_steps

    torch.manual_seed(0)
    bag = torch.nn.EmbeddingBag(ROWS, 16, mode="sum")
    idx = torch.randint(0, ROWS, (N,))
    offs = torch.arange(0, N, 16)

    def step() -> None:
        with torch.inference_mode():
            bag(idx, offs).sum()

    capture_steps(step, d, warmup=1, measure=5, record=1)


def test_a_spread_the_user_gives_fills_every_lookup_and_is_reported(tmp_path, monkeypatch):
    """The trace holds the indices' shape, not their values: a user who knows the data is power-law gives
    ``--index-spread zipf:E``; every made-up lookup index is then so spread, nothing timed, and the result says
    it was given; ``uniform`` given keeps them uniform."""
    from benchmint.replay import replay_trace

    monkeypatch.delenv(index_skew.SPREAD_ENV, raising=False)
    monkeypatch.setattr(index_skew, "_time", lambda f, R: pytest.fail("a given spread times nothing"))
    choose = index_skew._choose
    d = tmp_path / "cap"
    _capture_lookups(d)
    for given, skewed in (("zipf:1.1", True), ("uniform", False)):
        res = replay_trace(d, gaps="none", warmup=0, iters=1, index_spread=given)
        (t,) = res.result["index_distribution"]["tensors"]
        assert t["chosen"] == ("zipf 1.1" if skewed else "uniform") and t["as"] == "given by --index-spread"
        assert t["ops"] == ["aten::_embedding_bag"]  # (the callee the original ran: its weight required grad)
        assert t["indices"] == N
        st = res.plan.steps[t["step"]]
        ref = next(r for r in index_skew._index_refs(st.op, index_skew._arg_names(st.op)) if r.tensor_id == t["tensor_id"])
        idx = res.plan.init[res.plan.slots[ref.key]]
        assert int(idx.min()) >= 0 and int(idx.max()) < ROWS
        assert (_top_share(idx) > 0.2) is skewed
    monkeypatch.setenv(index_skew.SPREAD_ENV, "zipf:1.1")  # the variable acts as the option, wherever replayed
    monkeypatch.setattr(index_skew, "_choose", lambda *a, **k: pytest.fail("a given spread is not chosen as auto")
                        if k.get("forced") is None else choose(*a, **k))
    res = replay_trace(d, gaps="none", warmup=0, iters=1)
    (t,) = res.result["index_distribution"]["tensors"]
    assert t["chosen"] == "zipf 1.1" and t["as"] == f"given by {index_skew.SPREAD_ENV}"
    assert "nothing timed" in res.result["index_distribution"]["how"]
    assert "effect" not in res.result["index_distribution"]


@pytest.mark.parametrize("bad", ["zipf", "zipf:0", "zipf:-1", "zipf:9", "pareto:1", "zipf:x"])
def test_a_bad_index_spread_is_refused_in_one_line(tmp_path, cli, bad):
    d = tmp_path / "cap"
    d.mkdir()
    (d / "et.json").write_text("{}")
    for cmd in (["replay", str(d), "--no-store"], ["export", str(d), "--out", str(tmp_path / "o")]):
        code, out, err = cli(*cmd, "--index-spread", bad)
        assert code == 2, (out, err)
        assert "--index-spread" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    assert index_skew.parse_spread("zipf:1.05") == 1.05 and index_skew.parse_spread("zipf 0.8") == 0.8
    assert index_skew.parse_spread("auto") is None and index_skew.parse_spread("uniform") == 0.0


def test_an_exported_benchmark_keeps_the_index_spread_it_was_given(tmp_path):
    import json
    import subprocess
    import sys

    from benchmint.replay.export import export_benchmark

    d = tmp_path / "cap"
    _capture_lookups(d)
    out = tmp_path / "bench"
    assert export_benchmark(d, out, index_spread="zipf:1.05")["index_spread"] == "zipf:1.05"
    for extra, chosen in (([], "zipf 1.05"), (["--index-spread", "uniform"], "uniform")):
        res = tmp_path / "r.json"
        p = subprocess.run([sys.executable, str(out / "run.py"), "--gaps", "none", "--iters", "1", "--warmup", "0",
                            "--json", str(res), *extra], capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        r = json.loads(res.read_text())
        assert [t["chosen"] for t in r["index_distribution"]["tensors"]] == [chosen]


@pytest.mark.parametrize("skewed", [True, False])
def test_a_capture_sketches_its_lookups_data_and_the_replay_touches_as_many_rows(tmp_path, monkeypatch, skewed):
    """`benchmint capture` counts, in its last warm-up step, the distinct rows each lookup touched; the replay
    fits the spread whose made-up indices touch as many (skewed data: far fewer rows than uniform; uniform data:
    uniform), times nothing for it, and says where the spread came from."""
    from benchmint.replay import replay_trace
    from benchmint.trace.capture import capture_steps

    monkeypatch.delenv(index_skew.SPREAD_ENV, raising=False)
    monkeypatch.setattr(index_skew, "_time", lambda f, R: pytest.fail("a sketched tensor is not timed"))
    torch.manual_seed(0)
    bag = torch.nn.EmbeddingBag(ROWS, 16, mode="sum")
    gen = torch.Generator().manual_seed(1)
    idx = index_skew.spread_indices((N,), ROWS, 1.1 if skewed else 0.0, gen)
    offs = torch.arange(0, N, 16)

    def step() -> None:
        with torch.inference_mode():
            bag(idx, offs).sum()

    d = tmp_path / "cap"
    capture_steps(step, d, warmup=2, measure=5, record=1)
    sketch = json.loads((d / "capture.json").read_text())["index_sketch"]
    (seen,) = sketch["lookups"]
    assert seen["shape"] == [N] and seen["rows"] == ROWS and seen["distinct"] == int(torch.unique(idx).numel())
    res = replay_trace(d, gaps="none", warmup=0, iters=1)
    (t,) = res.result["index_distribution"]["tensors"]
    assert t["as"].startswith("capture.json") and t["distinct_original"] == seen["distinct"]
    if skewed:
        assert t["chosen"].startswith("zipf ") and abs(float(t["chosen"].split()[1]) - 1.1) < 0.15
        assert abs(t["distinct_replay"] - seen["distinct"]) < 0.1 * seen["distinct"]
    else:
        assert t["chosen"] == "uniform"


def test_a_capture_json_whose_index_sketch_is_malformed_is_refused_in_one_line(tmp_path, cli):
    d = tmp_path / "cap"
    _capture_lookups(d)
    cap = json.loads((d / "capture.json").read_text())
    cap["index_sketch"] = {"lookups": [{"shape": [N], "rows": -5, "indices": N, "distinct": 3}]}
    (d / "capture.json").write_text(json.dumps(cap))
    code, out, err = cli("replay", str(d), "--no-store", "--gaps", "none", "--iters", "1")
    assert code == 2 and "index_sketch" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_sketch_leaves_a_compiled_step_compiled():
    """A dispatch mode dynamo does not know makes it skip, and never again compile, the frames it meets: the
    sketched warm-up step must not leave the user's compiled step running eager afterwards."""
    from benchmint.trace.index_sketch import IndexSketch

    compiled_calls = []

    def backend(gm, _example):
        def run(*a):
            compiled_calls.append(1)
            return gm.forward(*a)
        return run

    emb = torch.nn.Embedding(100, 4)
    f = torch.compile(lambda i: emb(i).sum(), backend=backend, dynamic=False)
    for k in range(4):
        s = IndexSketch()
        if k == 1:
            s.start()
        f(torch.randint(0, 100, (8,)))
        s.stop()
    assert len(compiled_calls) == 4
    from torch.utils._python_dispatch import _get_current_dispatch_mode
    assert _get_current_dispatch_mode() is None


def test_a_sketch_record_is_not_given_to_another_tensor_of_the_same_shape(tmp_path, monkeypatch):
    """An index computed inside the step (here ``raw % ROWS``, all one row) and a true input of the same shape
    and table rows: the sketch holds two records for that key and the replay fills one tensor, so which record
    is whose is not known; the true input must not get the computed index's count (a steep skew)."""
    from benchmint.replay import replay_trace
    from benchmint.trace.capture import capture_steps

    monkeypatch.delenv(index_skew.SPREAD_ENV, raising=False)
    torch.manual_seed(0)
    e1, e2 = torch.nn.Embedding(ROWS, 8), torch.nn.Embedding(ROWS, 8)
    raw = torch.zeros(N, dtype=torch.long)
    ids = torch.randint(0, ROWS, (N,))

    def step() -> None:
        with torch.inference_mode():
            (e1(raw % ROWS).sum() + e2(ids).sum())

    d = tmp_path / "cap"
    capture_steps(step, d, warmup=2, measure=5, record=1)
    assert len(json.loads((d / "capture.json").read_text())["index_sketch"]["lookups"]) == 2
    res = replay_trace(d, gaps="none", warmup=0, iters=1)
    for t in (res.result["index_distribution"] or {}).get("tensors") or []:
        assert not t.get("as", "").startswith("capture.json")
        assert t["chosen"] == "uniform"


def test_tables_of_the_same_shape_each_get_their_own_sketch_record(tmp_path, monkeypatch):
    """A recommender's tables often share a size: two true inputs of the same shape and table rows, one fed
    skewed ids and one uniform. The sketch holds one record per tensor in the order the step read them, as
    many as the replay fills, so each gets its own count: the first a skew, the second uniform."""
    from benchmint.replay import replay_trace
    from benchmint.trace.capture import capture_steps

    monkeypatch.delenv(index_skew.SPREAD_ENV, raising=False)
    monkeypatch.setattr(index_skew, "_time", lambda f, R: pytest.fail("a sketched tensor is not timed"))
    torch.manual_seed(0)
    e1, e2 = torch.nn.Embedding(ROWS, 8), torch.nn.Embedding(ROWS, 8)
    gen = torch.Generator().manual_seed(1)
    hot, flat = index_skew.spread_indices((N,), ROWS, 1.1, gen), torch.randint(0, ROWS, (N,), generator=gen)

    def step() -> None:
        with torch.inference_mode():
            (e1(hot).sum() + e2(flat).sum())

    d = tmp_path / "cap"
    capture_steps(step, d, warmup=2, measure=5, record=1)
    res = replay_trace(d, gaps="none", warmup=0, iters=1)
    got = sorted(res.result["index_distribution"]["tensors"], key=lambda t: t["step"])
    assert [t["as"].startswith("capture.json") for t in got] == [True, True]
    assert got[0]["chosen"].startswith("zipf ") and got[1]["chosen"] == "uniform"
    assert got[0]["distinct_original"] == int(torch.unique(hot).numel())


def test_an_index_by_a_tensor_is_sketched_and_filled_as_a_lookup(tmp_path, monkeypatch):
    """``table[ids]`` (``aten::index``) reads rows as an embedding does: the sketch counts its distinct rows and
    the replay fits them, through the same table of lookups on both sides."""
    from benchmint.replay import replay_trace
    from benchmint.trace.capture import capture_steps

    monkeypatch.delenv(index_skew.SPREAD_ENV, raising=False)
    monkeypatch.setattr(index_skew, "_time", lambda f, R: pytest.fail("a sketched tensor is not timed"))
    table = torch.randn(ROWS, 8)
    ids = index_skew.spread_indices((N,), ROWS, 1.2, torch.Generator().manual_seed(2))

    def step() -> None:
        with torch.inference_mode():
            table[ids].sum()

    d = tmp_path / "cap"
    capture_steps(step, d, warmup=2, measure=5, record=1)
    (seen,) = json.loads((d / "capture.json").read_text())["index_sketch"]["lookups"]
    assert seen["op"] == "aten::index" and seen["rows"] == ROWS and seen["distinct"] == int(torch.unique(ids).numel())
    res = replay_trace(d, gaps="none", warmup=0, iters=1)
    (t,) = res.result["index_distribution"]["tensors"]
    assert t["as"].startswith("capture.json") and t["chosen"].startswith("zipf ")


def test_a_partial_sketch_is_not_used(tmp_path, monkeypatch):
    """A step that reads more index tensors than the sketch keeps says so (``more``); which kept record is whose
    can then not be told, and no tensor gets one."""
    from benchmint.replay import replay_trace
    from benchmint.trace import index_sketch
    from benchmint.trace.capture import capture_steps

    monkeypatch.delenv(index_skew.SPREAD_ENV, raising=False)
    monkeypatch.setattr(index_sketch, "MAX_LOOKUPS", 1)
    e1, e2 = torch.nn.Embedding(ROWS, 8), torch.nn.Embedding(ROWS, 8)
    hot = index_skew.spread_indices((N,), ROWS, 1.5, torch.Generator().manual_seed(3))
    flat = torch.randint(0, ROWS, (N // 2,))

    def step() -> None:
        with torch.inference_mode():
            (e2(flat).sum() + e1(hot).sum())

    d = tmp_path / "cap"
    capture_steps(step, d, warmup=2, measure=5, record=1)
    sketch = json.loads((d / "capture.json").read_text())["index_sketch"]
    assert len(sketch["lookups"]) == 1 and sketch["more"] == 1
    res = replay_trace(d, gaps="none", warmup=0, iters=1)
    for t in (res.result["index_distribution"] or {}).get("tensors") or []:
        assert not t.get("as", "").startswith("capture.json")


def test_where_lookups_cannot_be_timed_only_the_sketch_fills_indices(tmp_path, monkeypatch):
    """A rank of a multi-rank replay, or a trace replayed on another device, cannot time its lookups against
    the recorded durations; the sketch needs no timing, so its tensors are still filled, and nothing is timed."""
    monkeypatch.delenv(index_skew.SPREAD_ENV, raising=False)
    monkeypatch.setattr(index_skew, "_time", lambda f, R: pytest.fail("nothing is timed here"))
    plan, t = _plan(tmp_path, 1e-3)
    assert index_skew.choose(plan, sketch=None, time_rest=False) is None
    sketch = {"lookups": [{"shape": [N], "rows": ROWS, "indices": N, "distinct": 900}]}
    (got,) = index_skew.choose(plan, sketch=sketch, time_rest=False)
    assert got["chosen"].startswith("zipf ") and got["as"].startswith("capture.json")
    assert abs(int(torch.unique(t).numel()) - 900) < 90

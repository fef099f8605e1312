"""`benchmint next`: choose the next runs of a space, explain why, measure them with --run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmint.learn.space import parse_space
from benchmint.results.record import RunRecord
from benchmint.results.store import ResultsStore

AXES = {"concurrency": [1, 2, 4, 8], "max_batch_size": [1, 2, 4, 8], "output_tokens": [8, 16, 32]}


def tokens_per_s(p: dict) -> float:
    """A smooth stand-in for a machine: batching helps up to the batch size, longer answers amortize prefill."""
    eff = min(p["concurrency"], p["max_batch_size"])
    return 60.0 * eff ** 0.8 * (p["output_tokens"] / (p["output_tokens"] + 6.0))


def write_space(path: Path, **extra) -> Path:
    import yaml

    doc = {"name": "t", "backend": "transformers", "model": "tiny", "target": "output_tokens_per_s",
           "fixed": {"scenario": "concurrency", "num_requests": 4, "dataset": "synthetic", "input_tokens": 8},
           "axes": AXES, **extra}
    path.write_text(yaml.safe_dump(doc))
    return path


def stored_run(point: dict, value: float, name: str = "t") -> RunRecord:
    return RunRecord(kind="llm", config={"space": {"name": name, "point": point}},
                     metrics={"throughput": {"output_tokens_per_s": value}})


def test_bad_space_budget_or_target_is_one_line_exit_2(cli, tmp_path):
    bad_axis = tmp_path / "a.yaml"
    bad_axis.write_text("axes:\n  batch: [1, 2]\n")
    bad_yaml = tmp_path / "b.yaml"
    bad_yaml.write_text("axes: [1, 2\n")
    good = write_space(tmp_path / "s.yaml")
    cases = [
        (("next", "--space", str(bad_axis), "--budget", "2"), "unknown axis 'batch'"),
        (("next", "--space", str(bad_yaml), "--budget", "2"), "not valid YAML"),
        (("next", "--space", str(good), "--budget", "0"), "--budget 0"),
        (("next", "--space", str(good), "--budget", "2", "--target", "speed"), "unknown target 'speed'"),
        (("next", "--space", str(tmp_path / "none.yaml"), "--budget", "2"), "no such space file"),
    ]
    for args, want in cases:
        code, _, err = cli(*args)
        assert code == 2, (args, err)
        assert want in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_space_checks_its_axes_values_and_keys():
    from benchmint.core.errors import UserError

    for doc, want in [({"axes": {"rate": []}}, "non-empty list"), ({"axes": {"rate": [1, -2]}}, "positive"),
                      ({"axes": {"rate": [1]}, "colour": 1}, "unknown key 'colour'"),
                      ({"kind": "replay", "axes": {"threads": [1]}}, "needs `trace:`"),
                      ({"axes": {"rate": [1]}, "fixed": {"rate": 2}}, "both an axis and fixed"),
                      # the backend is the registry's (or the space's own builtin-server), asked what it can do
                      ({"axes": {"rate": [1]}, "backend": "nope"}, r"unknown backend 'nope'.*builtin-server"),
                      ({"axes": {"rate": [1]}, "backend": "http"}, "backend http needs `url:`"),
                      ({"axes": {"max_batch_size": [1]}, "backend": "openai-http", "url": "http://h:1/v1"},
                       "cannot change max_batch_size")]:
        with pytest.raises(UserError, match=want):
            parse_space(doc, "s.yaml")
    sp = parse_space({"axes": {"concurrency": [4, 1, 2]}, "slo": {"output_tokens_per_s": 100}}, "s.yaml")
    assert sp.axes["concurrency"] == [1, 2, 4] and sp.mode() == "frontier" and len(sp.grid()) == 3
    assert parse_space({"axes": {"rate": [1]}, "backend": "sim"}, "s.yaml").model == "tiny"  # in-process
    assert parse_space({"axes": {"rate": [1]}, "backend": "openai-http", "url": "http://h:1/v1"}, "s.yaml").model is None


def test_next_uses_stored_runs_and_says_why(cli, tmp_path):
    space = write_space(tmp_path / "s.yaml")
    grid = parse_space(json.loads(json.dumps({"axes": AXES})), "x").grid()
    rng = np.random.default_rng(0)
    measured = [grid[i] for i in rng.choice(len(grid), 10, replace=False)]
    store = ResultsStore(tmp_path / "store")
    store.append_many([stored_run(p, tokens_per_s(p)) for p in measured]
                      + [stored_run(grid[0], 1.0, name="another-space")])
    code, out, err = cli("next", "--space", str(space), "--budget", "3", "--results", str(store.path),
                         "--json", str(tmp_path / "n.json"))
    assert code == 0, err
    res = json.loads((tmp_path / "n.json").read_text())
    assert res["schema_version"] and res["measured"] == 10 and res["mode"] == "uncertainty"
    chosen = [c["point"] for c in res["choices"]]
    assert len(chosen) == 3 and len({json.dumps(c, sort_keys=True) for c in chosen}) == 3
    assert not any(c in measured for c in chosen)
    for c in res["choices"]:
        assert c["lower"] < c["prediction"] < c["upper"] and "90% interval" in c["why"]
        assert c["interval_width_rel"] > 0
    assert "next 3 run(s)" in out


def test_frontier_mode_looks_near_the_slo_limit(tmp_path):
    from benchmint.learn.active import choose

    sp = parse_space({"axes": AXES, "slo": {"output_tokens_per_s": 150.0}}, "s.yaml")
    grid = sp.grid()
    truth = np.array([tokens_per_s(p) for p in grid])
    rng = np.random.default_rng(1)
    idx = rng.choice(len(grid), 14, replace=False)
    measured = {int(i): float(truth[i]) for i in idx}
    picks = choose(grid, sp.axes, measured, 5, mode="frontier", slo=150.0)
    free = [i for i in range(len(grid)) if i not in measured]
    dist = lambda i: abs(math.log(truth[i] / 150.0))  # noqa: E731
    assert np.mean([dist(c.index) for c in picks]) < np.median([dist(i) for i in free])
    assert all("SLO limit 150" in c.why and "P(above)" in c.why for c in picks)


def test_active_choice_learns_a_smooth_space_with_fewer_runs_than_random():
    from benchmint.learn.active import SpaceModel, active_order, encode, median_ape

    sp = parse_space({"axes": AXES}, "s.yaml")
    grid = sp.grid()
    y = np.array([tokens_per_s(p) for p in grid])
    X = encode(grid, sp.axes)
    checkpoints = (8, 11, 14)

    def curve(order: list[int]) -> list[float]:
        out = []
        for n in checkpoints:
            rest = np.setdiff1d(np.arange(len(y)), order[:n])
            out.append(median_ape(SpaceModel().fit(X[order[:n]], y[order[:n]]), X[rest], y[rest]))
        return out

    active = curve(active_order(grid, sp.axes, y, max(checkpoints)))
    randoms = [curve(np.random.default_rng(s).permutation(len(y)).tolist()) for s in range(3)]
    assert active[-1] <= 0.10, active  # median APE <= 10% on the 34 configurations not measured
    # on the way there, active's error stays below what a random choice typically has
    assert np.mean(active) < np.median([np.mean(r) for r in randoms]), (active, randoms)


@pytest.mark.slow
def test_next_run_measures_stores_and_prints_the_learning_curve(cli, tmp_path):
    space = write_space(tmp_path / "s.yaml", axes={"concurrency": [1, 2], "output_tokens": [2, 4, 8]})
    store = tmp_path / "store"
    code, out, err = cli("next", "--space", str(space), "--budget", "4", "--run", "--results", str(store),
                         "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    res = json.loads((tmp_path / "r.json").read_text())
    assert len(res["runs"]) == 4 and all(r["measured_value"] > 0 for r in res["runs"])
    assert [row["measured"] for row in res["learning_curve"]] == [3]
    assert "learning curve" in out and "median APE" in out
    recs = ResultsStore(store).records()
    assert len(recs) == 4 and all(r.config["space"]["name"] == "t" for r in recs)
    assert {r.id for r in recs} == {r["run_id"] for r in res["runs"]}
    assert len(list((tmp_path / "runs").glob("*/run.json"))) == 4
    # a plan made afterwards knows what was measured and never proposes it again
    code, _, err = cli("next", "--space", str(space), "--budget", "2", "--results", str(store),
                       "--json", str(tmp_path / "p.json"))
    plan = json.loads((tmp_path / "p.json").read_text())
    assert code == 0 and plan["measured"] == 4 and len(plan["choices"]) == 2
    done = [r["point"] for r in res["runs"]]
    assert not any(c["point"] in done for c in plan["choices"])


def test_ctrl_c_during_a_run_ends_next_after_storing_it(tmp_path, monkeypatch):
    # llm bench keeps Ctrl-C's partial run and returns; next went on to measure the next configuration (the same
    # one again) and exited 0
    import yaml

    from benchmint.learn import measure
    from benchmint.learn.nextrun import run_next

    space = parse_space(yaml.safe_load(write_space(tmp_path / "s.yaml").read_text()), "s.yaml")
    calls = []

    def fake(self, point):
        calls.append(point)
        self.interrupted = True  # as _run_llm sets it from the result's requests.interrupted
        return RunRecord(kind="llm", status="partial", config={"space": {"name": "t", "point": point}},
                         metrics={"throughput": {"output_tokens_per_s": 5.0}}), 5.0

    monkeypatch.setattr(measure.Measurer, "measure", fake)
    seen = []
    with pytest.raises(KeyboardInterrupt):
        run_next(space, [], 3, out_dir=tmp_path / "runs", on_run=lambda k, row: seen.append(row))
    assert len(calls) == 1 and len(seen) == 1 and seen[0]["left_out"].startswith("status partial")

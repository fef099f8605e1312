"""``benchmarks/replay_ranks.py`` compares each multi-rank replay with the original timed before AND after it
(A B A B): on a shared machine the original's step moves between minutes, so a replay is judged against the
mean of the two timings around it, and their drift is printed as the figure's noise floor."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("replay_ranks_bench", ROOT / "benchmarks" / "replay_ranks.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["replay_ranks_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


rr = _load()


def test_replay_between_two_timings_of_the_original_is_judged_against_their_mean():
    # the original took 30 ms before the replay and 54 ms after it (as it did between two rounds): a 42 ms
    # replay is on the mark, and the 80% drift says how much a single timing could be trusted
    err, drift = rr.bracketed(0.042, 0.030, 0.054)
    assert err == pytest.approx(0.0)
    assert drift == pytest.approx(0.8)
    err, drift = rr.bracketed(0.044, 0.040, 0.040)
    assert err == pytest.approx(0.1)
    assert drift == pytest.approx(0.0)


def test_each_ranks_reference_is_read_from_its_capture(tmp_path):
    for r, t in enumerate((0.031, 0.029)):
        (tmp_path / f"rank{r}").mkdir()
        (tmp_path / f"rank{r}" / "capture.json").write_text(json.dumps({"step_time_s": {"median": t}}))
    assert rr.capture_steps(tmp_path, 2) == [0.031, 0.029]


def test_each_ranks_error_is_the_median_of_its_replay_original_pairs():
    # three rounds, each replay timed between two timings of the original (A B A B A): one timing caught in a
    # moment of load (0.080) moves the median of the six pairs by one pair, not the round's mean by half of it
    rows = [[(0.040, 0.040, 0.040)], [(0.040, 0.040, 0.080)], [(0.044, 0.080, 0.040)]]
    assert rr.paired(rows, 1)[0] == pytest.approx(0.0)
    means = [rr.bracketed(*x[0])[0] for x in rows]
    assert sorted(means)[1] == pytest.approx(0.044 / 0.060 - 1)  # the median of the rounds' bracketed errors: -27%
    assert rr.paired([[(0.044, 0.040, 0.040), (0.036, 0.040, 0.040)]], 2) == pytest.approx([0.1, -0.1])

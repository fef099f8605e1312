"""The one percentile rule: linear interpolation between closest ranks, used by the replay's, the capture's
and the LLM metrics' summaries alike."""

import math

from benchmint.core.stats import noise_note, percentile, percentiles, timing_summary
from benchmint.llm.metrics import stats
from benchmint.replay.console import fidelity_line
from benchmint.replay.execute import summarize


def test_percentile_interpolates_between_closest_ranks():
    xs = [4.0, 1.0, 3.0, 2.0]  # sorted 1 2 3 4: p10 at rank 0.3 -> 1.3, p90 at rank 2.7 -> 3.7
    assert math.isclose(percentile(xs, 10), 1.3)
    assert math.isclose(percentile(xs, 90), 3.7)
    assert all(math.isnan(x) for x in percentiles([], [50, 90]))


def test_replay_capture_and_llm_summaries_agree():
    xs = [0.010, 0.013, 0.011, 0.030, 0.012]
    s = summarize(xs)
    assert s == timing_summary(xs)
    assert (s["median"], s["n"]) == (0.012, 5)
    assert math.isclose(s["p90"], percentile(xs, 90))
    assert math.isclose(stats(xs)["p90"], s["p90"]) and math.isclose(stats(xs)["p50"], s["median"])
    assert summarize([]) == {"median": None, "p10": None, "p90": None, "n": 0, "iqr": None, "noisy": None}


def test_a_timing_whose_iqr_exceeds_a_tenth_of_its_median_is_flagged_noisy():
    steady = timing_summary([1.0, 1.01, 0.99, 1.02, 0.98])
    assert steady["noisy"] is False and noise_note(steady) == ""
    noisy = timing_summary([1.0, 1.3, 0.8, 1.25, 0.85])  # IQR 0.4, median 1.0
    assert noisy["noisy"] is True and math.isclose(noisy["iqr"], 0.4)
    assert noise_note(noisy) == "; noisy: IQR 40% of the median"
    line = fidelity_line({"iter_time_s": noisy, "original_iter_time_s": None, "coverage": 1.0, "ops_replayed": 3,
                          "ops_total": 3})
    assert "replay 1.000 s/iter; noisy: IQR 40% of the median" in line

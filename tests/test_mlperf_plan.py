"""Settings from model keys / user.conf, early-stopping arithmetic, and the --plan predictor."""

from __future__ import annotations

import pytest

from benchmint.core.errors import UserError
from benchmint.llm.loadgen.settings import MODEL_KEYS, RunSettings, build_test_settings, model_key
from benchmint.llm.loadgen.validity import early_stopping_min_queries, plan


def test_early_stopping_minimum_matches_loadgen_texts():
    # LoadGen says "Processed 24 queries. Would need to run at least 435 more" at p99 (24 + 435 = 459)
    assert early_stopping_min_queries(0.99) == 459
    # ...and "would need to process at least 662 total queries" for a p99 estimate (one query over the limit)
    assert early_stopping_min_queries(0.99, overlatency=1) == 662
    assert early_stopping_min_queries(0.90) == 44
    # more queries over the limit need more queries in all
    assert early_stopping_min_queries(0.99, 5) > early_stopping_min_queries(0.99, 1)


@pytest.mark.parametrize("name", sorted(MODEL_KEYS))
def test_model_key_table_matches_loadgen_embedded_mlperf_conf(name):
    key = MODEL_KEYS[name]
    s = build_test_settings(RunSettings(scenario="server", model_key=name))
    assert s.use_token_latencies
    if key.ttft_s is not None:
        assert s.ttft_latency == round(key.ttft_s * 1e9)
        assert s.tpot_latency == round(key.tpot_s * 1e9)
    assert s.server_target_latency_percentile == pytest.approx(key.server_percentile)
    assert s.min_duration_ms == key.min_duration_s * 1000
    assert s.performance_sample_count_override == key.performance_sample_count


def test_official_limits_of_the_issue():
    assert (MODEL_KEYS["llama2-70b"].ttft_s, MODEL_KEYS["llama2-70b"].tpot_s) == (2.0, 0.2)
    assert (MODEL_KEYS["llama2-70b-interactive"].ttft_s, MODEL_KEYS["llama2-70b-interactive"].tpot_s) == (0.45, 0.04)


def test_flags_override_the_model_key_and_user_conf_is_read(tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_text("llama2-70b.Server.target_qps = 3.5\nllama2-70b.Server.min_duration = 1500\n"
                    "*.Server.target_latency_percentile = 90\n")
    s = build_test_settings(RunSettings(scenario="server", user_conf=str(conf)))
    assert s.server_target_qps == 3.5 and s.min_duration_ms == 1500
    assert s.server_target_latency_percentile == pytest.approx(0.90)
    s = build_test_settings(RunSettings(scenario="server", user_conf=str(conf), target_qps=7, min_duration_s=2,
                                        ttft_s=0.5, tpot_s=0.05))
    assert s.server_target_qps == 7 and s.min_duration_ms == 2000
    assert s.ttft_latency == 500_000_000 and s.tpot_latency == 50_000_000


def test_bad_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="--scenario"):
        RunSettings(scenario="multistream")
    with pytest.raises(UserError, match="no such file"):
        RunSettings(user_conf=str(tmp_path / "nope.conf"))
    with pytest.raises(UserError, match="llama2-70b"):
        model_key("llama9")


def test_plan_server_too_short_can_never_be_valid():
    p = plan(RunSettings(scenario="server", target_qps=10, min_duration_s=5), n_samples=100)
    assert not p.can_be_valid
    assert p.expected_queries == 100  # the official min_query_count of 100 beats 10 QPS x 5 s
    assert p.early_stopping_min_queries == 459
    text = " ".join(p.notes)
    assert "Cannot be VALID" in text and "459" in text and "--min-duration to 46 s" in text
    assert not p.submission_grade


def test_plan_server_long_enough_can_be_valid():
    p = plan(RunSettings(scenario="server", target_qps=10, min_duration_s=60), n_samples=100)
    assert p.can_be_valid and p.expected_queries == 600
    assert any("TTFT p99 <= 2.00 s" in n for n in p.notes)


def test_plan_lower_percentile_needs_fewer_queries():
    p = plan(RunSettings(scenario="server", target_qps=10, min_duration_s=2, min_query_count=10,
                         latency_percentile=0.9), n_samples=10)
    assert p.early_stopping_min_queries == 44 and not p.can_be_valid
    p = plan(RunSettings(scenario="server", target_qps=10, min_duration_s=5, min_query_count=10,
                         latency_percentile=0.9), n_samples=10)
    assert p.can_be_valid


def test_plan_offline_and_contradictions():
    p = plan(RunSettings(scenario="offline", target_qps=100, min_duration_s=10, min_query_count=1), n_samples=50)
    assert p.can_be_valid and p.expected_queries == 1100
    p = plan(RunSettings(scenario="offline", target_qps=100, min_duration_s=10, max_duration_s=5), n_samples=50)
    assert not p.can_be_valid
    # Offline issues one query: a query cap does not bind its samples (LoadGen issued 24576 samples under
    # --max-query-count 3000 and called the run VALID, where the plan said it could not be)
    p = plan(RunSettings(scenario="offline", target_qps=100, min_duration_s=10, min_query_count=2000,
                         max_query_count=300), n_samples=50)
    assert p.can_be_valid and p.expected_queries == 2000
    assert any("does not shorten an Offline run" in n for n in p.notes)
    p = plan(RunSettings(scenario="single-stream", min_query_count=10, max_query_count=20), n_samples=50)
    assert not p.can_be_valid  # early stopping at p90 needs more than 20 queries
    assert p.early_stopping_min_queries == 64  # LoadGen: "Processed at least 64 queries" for its p90 estimate


def test_plan_reads_the_user_conf_like_loadgen(tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_text("llama2-70b.Server.target_qps = 10\nllama2-70b.Server.min_duration = 60000\n")
    p = plan(RunSettings(scenario="server", user_conf=str(conf)), n_samples=100)
    assert p.can_be_valid and p.expected_queries == 600  # 10 QPS x 60 s, both from the user.conf
    conf.write_text("llama2-70b.Server.target_qps = 10\nllama2-70b.Server.min_duration = 5000\n")
    p = plan(RunSettings(scenario="server", user_conf=str(conf)), n_samples=100)
    assert not p.can_be_valid and p.expected_queries == 100


def test_plan_offline_with_no_minimum_duration_is_a_plan_not_a_crash():
    # `llm mlperf --scenario offline --min-duration 0 --plan` ended in exit 1 (ZeroDivisionError)
    p = plan(RunSettings(scenario="offline", target_qps=100, min_duration_s=0, min_query_count=10), n_samples=50)
    assert p.can_be_valid and any("No minimum duration" in n for n in p.notes)


def test_plan_says_why_whole_passes_over_the_samples_make_a_run_longer_than_asked():
    # --min-duration 5 --min-query-count 16 at 4 QPS ran 130 queries (about 33 s): the sample set's 130 prompts
    # are the performance samples, and an LLM key issues whole passes over them; only --json said so, without why
    p = plan(RunSettings(scenario="server", target_qps=4, min_duration_s=5, min_query_count=16,
                         sample_concatenate_permutation=True), n_samples=130)
    assert p.expected_queries == 130
    note = next(n for n in p.notes if "LoadGen issues about" in n)
    assert "about 130 queries (not 20: " in note and "130 performance samples" in note and "about 32 s" in note

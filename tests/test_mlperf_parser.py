"""The :::MLLOG parser and the plain-words validity text, on real LoadGen logs recorded on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmint.core.errors import UserError
from benchmint.llm.loadgen.mllog import parse_detail, parse_lines, summarize
from benchmint.llm.loadgen.validity import explain

LOGS = Path(__file__).parent / "data" / "loadgen"


def load(name: str) -> dict:
    return summarize(parse_detail(LOGS / name))


def test_server_figures_come_from_the_mllog_records():
    s = load("server_early_stopping")
    assert s["validity"] == "INVALID"
    assert s["scenario"] == "Server" and s["mode"] == "PerformanceOnly"
    # values as LoadGen wrote them, converted to seconds
    raw = parse_detail(LOGS / "server_early_stopping")
    assert s["samples_per_s"] == raw.get("result_completed_samples_per_sec")
    assert s["tokens_per_s"] == raw.get("result_completed_tokens_per_second")
    assert s["ttft_s"]["p99"] == raw.get("result_first_token_99.00_percentile_latency_ns") / 1e9
    assert s["tpot_s"]["p90"] == raw.get("result_time_per_output_token_90.00_percentile_ns") / 1e9
    for block in ("ttft_s", "tpot_s", "latency_s"):
        assert {"p50", "p90", "p99"} <= set(s[block])
        assert s[block]["p50"] <= s[block]["p90"] <= s[block]["p99"]
    assert s["limits"]["ttft_s"] == 2.0 and s["limits"]["tpot_s"] == 0.2  # llama2-70b's official limits
    assert s["effective"]["target_qps"] == 20
    assert s["constraints"] == {"perf_constraints_met": True, "min_duration_met": True, "min_queries_met": True,
                                "early_stopping_met": False}
    assert s["early_stopping"]["tpot"]["more_queries_needed"] == 435


def test_early_stopping_reason_names_the_missing_queries():
    reasons = explain(load("server_early_stopping"))
    assert len(reasons) == 1
    assert "Early stopping" in reasons[0]
    assert "435 more queries" in reasons[0]
    assert "459" in reasons[0]  # the total early stopping needs at p99


def test_latency_reason_names_the_failed_limits_and_a_lower_rate():
    s = load("server_latency")
    assert s["constraints"]["perf_constraints_met"] is False
    reasons = explain(s)
    text = " ".join(reasons)
    assert "TTFT p50" in text and "over the 20 ms limit" in text
    assert "TPOT p50" in text and "over the 5 ms limit" in text
    assert "target QPS at or below about" in text


def test_valid_run_has_no_reasons():
    s = load("server_valid")
    assert s["validity"] == "VALID"
    assert explain(s) == []


def test_offline_min_duration_reason_asks_for_a_higher_expected_qps():
    s = load("offline_min_duration")
    assert s["scenario"] == "Offline"
    assert s["samples_per_s"] is not None and s["tokens_per_s"] is not None
    (reason,) = explain(s)
    assert reason.startswith("Minimum duration not met")
    assert "--target-qps to at least" in reason


def test_single_stream_min_queries_reason_points_at_max_query_count():
    s = load("single_stream")
    assert s["scenario"] == "SingleStream"
    assert s["early_stopping"]["latency_estimate_ss_s"] > 0
    reason, loadgen_error = explain(s)
    assert "Minimum query count not met" in reason and "--max-query-count 64" in reason
    assert "Max query count reached" in loadgen_error  # LoadGen's own error record, passed on


def test_truncated_and_foreign_lines_are_skipped():
    lines = [
        "some other output\n",
        ':::MLLOG {"key": "result_validity", "value": "VALID", "metadata": {"is_error": false}}\n',
        ':::MLLOG {"key": "error_invalid_config", "value": "bad", "metadata": {"is_error": true}}\n',
        ':::MLLOG {"key": "result_samples_per_second", "val',  # cut short by a killed run
    ]
    log = parse_lines(lines)
    assert log.get("result_validity") == "VALID"
    assert log.errors == ["error_invalid_config: bad"]
    assert log.get("result_samples_per_second") is None


def test_unfinished_run_is_unknown_and_explained(tmp_path):
    text = (LOGS / "server_valid" / "mlperf_log_detail.txt").read_text().splitlines()
    cut = [ln for ln in text if '"result_' not in ln and "early_stopping" not in ln]
    (tmp_path / "mlperf_log_detail.txt").write_text("\n".join(cut))
    s = summarize(parse_detail(tmp_path))
    assert s["validity"] == "UNKNOWN"
    assert "no verdict" in explain(s)[0]


def test_missing_or_empty_log_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no LoadGen detail log"):
        parse_detail(tmp_path)
    (tmp_path / "mlperf_log_detail.txt").write_text("hello\n")
    with pytest.raises(UserError, match="no ':::MLLOG' records"):
        parse_detail(tmp_path)


def test_loadgen_errors_become_a_reason():
    lines = [
        ':::MLLOG {"key": "result_validity", "value": "INVALID", "metadata": {}}\n',
        ':::MLLOG {"key": "error_runtime", "value": "QuerySamplesComplete for an unknown id", '
        '"metadata": {"is_error": true}}\n',
    ]
    reasons = explain(summarize(parse_lines(lines)))
    assert any("LoadGen logged 1 error(s), first: error_runtime: QuerySamplesComplete" in r for r in reasons)

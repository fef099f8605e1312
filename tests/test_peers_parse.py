"""``benchmarks/peers.py`` reads each peer's own output file into the same figures (milliseconds, req/s): checked
on sample files the tools wrote (``tests/data/peers``), plus the truth server's log and a real truth server.
Nothing here installs or runs a peer tool."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from local_port import free_port, wait_port

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "peers"


def _load():
    spec = importlib.util.spec_from_file_location("peers_parse", ROOT / "benchmarks" / "peers_parse.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["peers_parse"] = mod
    spec.loader.exec_module(mod)
    return mod


pp = _load()


def test_guidellm_report_successful_percentiles_and_rate_over_duration():
    f = pp.parse_guidellm(DATA / "guidellm-0.8.1-report.json")
    assert f.ttft_p50 == pytest.approx(2.658843994140625)  # already milliseconds
    assert f.ttft_p99 == pytest.approx(33.921241760253906)
    assert f.tpot_p50 == pytest.approx(2.0751506090164185)
    assert f.itl_p99 == pytest.approx(2.898057301839193)
    assert (f.completed, f.failed) == (161, 2)  # 2 incomplete: cut off at the end of the run
    assert f.rate == pytest.approx(161 / 5.0)


def test_aiperf_export_tpot_is_inter_token_latency_and_itl_inter_chunk():
    f = pp.parse_aiperf(DATA / "aiperf-0.13.0-profile_export_aiperf.json")
    d = json.loads((DATA / "aiperf-0.13.0-profile_export_aiperf.json").read_text())
    assert f.ttft_p50 == pytest.approx(1.238782) and f.ttft_p99 == pytest.approx(19.28689348)
    assert f.tpot_p50 == pytest.approx(d["inter_token_latency"]["p50"])
    assert f.itl_p50 == pytest.approx(d["inter_chunk_latency"]["p50"])
    assert f.rate == pytest.approx(18.467283669231087)
    assert (f.completed, f.failed) == (93, 0)  # no error_request_count block when nothing failed


def test_aiperf_units_in_seconds_are_converted(tmp_path):
    p = tmp_path / "profile_export_aiperf.json"
    p.write_text(json.dumps({"time_to_first_token": {"unit": "s", "p50": 0.004, "p99": 0.02},
                             "request_count": {"unit": "requests", "avg": 10.0},
                             "error_request_count": {"unit": "requests", "avg": 2.0}}))
    f = pp.parse_aiperf(p)
    assert f.ttft_p50 == pytest.approx(4.0) and f.ttft_p99 == pytest.approx(20.0)
    assert (f.completed, f.failed, f.tpot_p50) == (10, 2, None)


def test_inference_perf_summary_seconds_to_ms():
    f = pp.parse_inference_perf(DATA / "inference-perf-0.7.0-summary_lifecycle_metrics.json")
    assert f.ttft_p50 == pytest.approx(3.0949960000725696)
    assert (f.completed, f.failed) == (100, 0)
    assert f.rate == pytest.approx(23.761785511170714)
    assert f.tpot_p50 is not None and 1.0 < f.tpot_p50 < 10.0  # the server spaced chunks 2 ms apart


def test_benchmint_ttft_is_from_send_not_from_schedule():
    f = pp.parse_benchmint(DATA / "benchmint-result.json")
    r = json.loads((DATA / "benchmint-result.json").read_text())
    assert f.ttft_p50 == pytest.approx(r["ttft_from_send_s"]["p50"] * 1e3)
    assert f.ttft_p50 != pytest.approx(r["ttft_s"]["p50"] * 1e3)
    assert f.itl_p99 == pytest.approx(r["itl_s"]["p99"] * 1e3)
    assert (f.completed, f.failed) == (r["requests"]["completed"], 0)


def test_truth_log_figures_and_unfinished_request():
    t = pp.parse_truth(DATA / "truth-server-log.jsonl")
    f = t.figures
    assert (t.requests, f.completed, f.failed) == (3, 2, 1)  # the third never got its first chunk
    assert f.ttft_p50 == pytest.approx(1.5)  # 1 ms and 2 ms
    assert f.tpot_p50 == pytest.approx(2.5)  # 4 ms / 2 and 6 ms / 2
    assert f.itl_p50 == pytest.approx(2.5) and f.itl_p99 == pytest.approx(3.0)
    assert t.arrival_rate == pytest.approx(2 / 0.2)
    assert (t.first_in_ns, t.last_in_ns) == (1_000_000_000, 1_200_000_000)


def test_cpu_between_interpolates_and_refuses_uncovered_interval():
    s = [(0, 1.0), (1_000_000_000, 2.0), (2_000_000_000, 4.0)]
    assert pp.cpu_between(s, 500_000_000, 1_500_000_000) == pytest.approx(1.5)
    assert pp.cpu_between(s, 0, 3_000_000_000) is None
    # a process of the tree that ended before it was reaped makes the sum dip: never negative CPU
    assert pp.cpu_between([(0, 1.0), (1, 3.0), (2, 2.0), (3, 4.0)], 1, 2) == pytest.approx(0.0)


def test_mock_server_logs_its_own_times(tmp_path):
    port, log = free_port(), tmp_path / "truth.jsonl"
    p = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "mock_openai_server.py"), "--port", str(port),
                          "--log", str(log), "--tokens", "4", "--itl-ms", "3", "--loop", "asyncio"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        wait_port(port, p)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", method="POST",
                                     data=json.dumps({"prompt": "hi", "max_tokens": 3, "stream": True}).encode(),
                                     headers={"Content-Type": "application/json"})
        body = urllib.request.urlopen(req, timeout=10).read().decode()
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
    events = [ln[6:] for ln in body.splitlines() if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    texts = [json.loads(e)["choices"][0]["text"] for e in events[:-1] if json.loads(e)["choices"]]
    assert texts == [" the"] * 3  # max_tokens (3) below --tokens (4)
    t = pp.parse_truth(log)
    assert (t.requests, t.figures.completed) == (1, 1)
    row = json.loads(log.read_text())
    assert row["t_in"] <= row["t_first"] <= row["t_last"] and row["n"] == 3
    # the last of 3 chunks spaced 3 ms apart is written at least 6 ms after the request was read (a busy loop
    # only makes chunks late, so TPOT itself can fall below 3 ms when the first one was late); on asyncio's loop,
    # as the server's --help says for chunks a few ms apart: uvloop's 1 ms timers fired one early (5.84 ms)
    assert (row["t_last"] - row["t_in"]) / 1e6 >= 6.0 - 0.01


def test_benchmint_paths_pairs_requests_in_send_order(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # two requests sent 100 ms apart (wall clock), listed out of order; the server read each 0.5 ms later
    # and wrote its first chunk 1 ms after the read; the client saw its first token 0.25 ms after that
    pq.write_table(pa.table({"warmup": [False, False, True], "sent_s": [0.1, 0.0, 0.0],
                             "first_token_s": [0.10175, 0.00175, None], "sent_wall_s": [1000.1, 1000.0, None]}),
                   tmp_path / "requests.parquet")
    rows = [{"t_in": 5_000_000_000 + k * 100_000_000, "w_in": int((1000.0005 + k * 0.1) * 1e9),
             "t_first": 5_001_000_000 + k * 100_000_000, "t_last": None, "n": 16} for k in (1, 0)]
    (tmp_path / "truth.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = pp.benchmint_paths(tmp_path / "requests.parquet", tmp_path / "truth.jsonl")
    assert p["matched"] == 2
    assert p["request_ms_p50"] == pytest.approx(0.5, abs=1e-3) and p["request_ms_p99"] == pytest.approx(0.5, abs=1e-3)
    assert p["response_ms_p50"] == pytest.approx(0.25, abs=1e-3)
    (tmp_path / "truth.jsonl").write_text(json.dumps(rows[0]) + "\n")  # one request the server never saw
    assert pp.benchmint_paths(tmp_path / "requests.parquet", tmp_path / "truth.jsonl") is None

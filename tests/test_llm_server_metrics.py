"""The server's own view beside the client's (issue 14, point 5): `/metrics` scraped during `llm bench`, the names
of vLLM, SGLang, TGI and the built-in server mapped to one set, absent metrics named, garbage a warning."""

from __future__ import annotations

import json

import pytest
from strict_llm_server import StrictLLMServer

from benchmint.llm.server_metrics import MetricsScraper, histogram_quantile, summarize

LE = (0.001, 0.005, 0.01, 0.05, 0.1, 1.0)


def vllm_text(n: int) -> str:
    """vLLM-named metrics after ``n`` answered requests: each took 3 tokens, TTFT 3 ms, TPOT 20 ms."""
    lab = 'model_name="m",engine="0"'
    lines = ["# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{{{lab}}} {n % 2}",
             "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{{{lab}}} 0",
             "# TYPE vllm:kv_cache_usage_perc gauge", f"vllm:kv_cache_usage_perc{{{lab}}} {0.01 * n}",
             "# TYPE vllm:generation_tokens counter", f"vllm:generation_tokens_total{{{lab}}} {3 * n + 100}",
             "# TYPE vllm:prefix_cache_queries counter", f"vllm:prefix_cache_queries_total{{{lab}}} {10 * n}",
             "# TYPE vllm:prefix_cache_hits counter", f"vllm:prefix_cache_hits_total{{{lab}}} {4 * n}"]
    for name, at in (("vllm:time_to_first_token_seconds", 0.005), ("vllm:request_time_per_output_token_seconds", 0.05)):
        lines.append(f"# TYPE {name} histogram")
        for le in (*LE, "+Inf"):
            c = n + 5 if le == "+Inf" or float(le) >= at else 0  # 5 observations were before the run
            lines.append(f'{name}_bucket{{{lab},le="{le}"}} {c}')
        lines.append(f"{name}_sum{{{lab}}} {at * (n + 5)}")
        lines.append(f"{name}_count{{{lab}}} {n + 5}")
    return "\n".join(lines) + "\n"


def _bench(cli, tmp_path, url: str, *extra: str) -> tuple[int, str, str, dict]:
    code, out, err = cli("llm", "bench", "--url", url, "-n", "9", "--scenario", "concurrency", "--concurrency", "1",
                         "--allow-eos", "--no-usage", "--server-metrics-interval", "0.05",
                         "--out", str(tmp_path / "run"), "--results", str(tmp_path / "store"), *extra)
    p = tmp_path / "run" / "result.json"
    return code, out, err, json.loads(p.read_text()) if p.exists() else {}


def test_vllm_metrics_are_scraped_mapped_and_stored(cli, tmp_path):
    with StrictLLMServer(metrics_text=vllm_text, empty_every=0) as s:
        code, out, err, r = _bench(cli, tmp_path, s.url)
        scrapes = s.scrapes
    assert code == 0, err + out
    sm = r["server_metrics"]
    assert sm["scrapes"] == scrapes >= 2 and sm["warnings"] == []
    assert sm["sources"]["running_requests"] == "vllm:num_requests_running"
    assert sm["sources"]["ttft_s"] == "vllm:time_to_first_token_seconds"
    summ = sm["summary"]
    assert summ["generation_tokens"]["total_during_run"] == 27  # a delta over the run: the 100 before are not in it
    assert summ["ttft_s"]["count"] == 9 and summ["ttft_s"]["mean"] == pytest.approx(0.005)
    assert 0.001 <= summ["ttft_s"]["p50"] <= 0.005 and 0.01 <= summ["tpot_s"]["p99"] <= 0.05
    assert summ["prefix_cache_hit_rate"]["over_run"] == pytest.approx(0.4)
    assert summ["kv_cache_usage"]["max"] == pytest.approx(0.09)
    assert sm["absent"] == []
    series = json.loads((tmp_path / "run" / "server_metrics.json").read_text())
    assert series["schema_version"] and len(series["t_s"]) == sm["scrapes_parsed"]
    assert series["t_s"] == sorted(series["t_s"]) and series["t_s"][0] < 0.01  # the first is before the run
    assert series["counters"]["generation_tokens"][-1] == 127
    assert r["artifacts"]["server_metrics"].endswith("server_metrics.json")
    assert "server metrics (" in out and "TTFT p50" in out
    # the report draws the server's gauges over the run, from the run's server_metrics.json
    from benchmint.report import build_report
    from benchmint.report.server_figure import server_metrics_figure
    from benchmint.results.record import RunRecord

    rec = RunRecord.read(tmp_path / "run" / "run.json")
    assert rec.artifacts["server_metrics"] == "server_metrics.json"
    fig = server_metrics_figure(rec, [])
    assert fig is not None and {tr.name for tr in fig.data} == {"running requests", "waiting requests",
                                                                  "KV-cache usage (%)"}
    html = build_report([rec], tmp_path / "report.html").read_text()
    assert "Server metrics (its " in html and "KV-cache usage (%)" in html


def test_a_server_without_histograms_names_what_is_absent(cli, tmp_path):
    tgi = ("# TYPE tgi_queue_size gauge\ntgi_queue_size 2\n# TYPE tgi_batch_current_size gauge\n"
           "tgi_batch_current_size 4\n")
    with StrictLLMServer(metrics_text=tgi, empty_every=0) as s:
        code, out, err, r = _bench(cli, tmp_path, s.url)
    assert code == 0, err
    sm = r["server_metrics"]
    assert sm["summary"]["waiting_requests"]["max"] == 2 and sm["summary"]["running_requests"]["mean"] == 4
    assert sm["absent"] == ["kv_cache_usage", "prefix_cache_hit_rate", "ttft_s", "tpot_s", "generation_tokens"]
    assert "not exposed by this server: kv_cache_usage" in out


@pytest.mark.parametrize("text", [None, "<html>{{not metrics}} ###\x00", ""])
def test_a_missing_or_garbage_endpoint_is_a_warning_and_the_run_goes_on(cli, tmp_path, text):
    with StrictLLMServer(metrics_text=text, empty_every=0) as s:
        code, out, err, r = _bench(cli, tmp_path, s.url)
    assert code == 0, err
    assert r["requests"]["completed"] == 9
    sm = r["server_metrics"]
    assert sm["warnings"] and sm["summary"] == {} and len(sm["absent"]) == 7
    assert "warning:" in out
    if text is None:
        assert "HTTP 404" in sm["warnings"][0] and sm["scrapes"] == 0


def test_warm_up_requests_are_not_counted_as_the_runs_server_work(cli, tmp_path):
    # the counters' baseline is a snapshot taken after the warm-up: 3 warm-up answers were counted before
    with StrictLLMServer(metrics_text=vllm_text, empty_every=0) as s:
        code, out, err, r = _bench(cli, tmp_path, s.url, "--warmup", "3", "--server-metrics-interval", "5")
    assert code == 0, err + out
    summ = r["server_metrics"]["summary"]
    assert summ["generation_tokens"]["total_during_run"] == 27  # 9 measured answers of 3 tokens, not 12
    assert summ["ttft_s"]["count"] == 9
    assert r["server_metrics"]["baseline_t_s"] <= 0


def test_no_server_metrics_does_not_scrape(cli, tmp_path):
    with StrictLLMServer(metrics_text=vllm_text) as s:
        code, out, err, r = _bench(cli, tmp_path, s.url, "--no-server-metrics")
        scrapes = s.scrapes
    assert code == 0 and scrapes == 0 and "server_metrics" not in r
    assert not (tmp_path / "run" / "server_metrics.json").exists()


@pytest.mark.parametrize("text,source", [
    ("# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs{tp_rank=\"0\"} 3\n"
     "# TYPE sglang:token_usage gauge\nsglang:token_usage{tp_rank=\"0\"} 0.5\n", "sglang:num_running_reqs"),
    ("# TYPE benchmint_requests_running gauge\nbenchmint_requests_running 3\n"
     "# TYPE benchmint_queue_depth gauge\nbenchmint_queue_depth 1\n", "benchmint_requests_running"),
])
def test_sglang_and_built_in_names_map_to_the_same_set(text, source):
    sc = MetricsScraper("http://x/metrics")
    sc.snapshots = [(0, text), (10**9, text)]
    block, _ = summarize(sc, 0)
    assert block["sources"]["running_requests"] == source and block["summary"]["running_requests"]["max"] == 3


def test_histogram_quantile_interpolates_like_prometheus():
    import numpy as np

    les, cum = np.array([0.1, 0.2, np.inf]), np.array([10.0, 20.0, 20.0])
    assert histogram_quantile(0.5, les, cum) == pytest.approx(0.1)
    assert histogram_quantile(0.75, les, cum) == pytest.approx(0.15)
    assert histogram_quantile(0.5, les, np.zeros(3)) is None


def test_the_built_in_server_is_scraped_for_real(cli, tmp_path):
    from benchmint.llm.engine import AsyncEngine
    from benchmint.llm.server import ServerThread
    from benchmint.models.tiny_llm import tiny_llm_path

    engine = AsyncEngine.create(str(tiny_llm_path()), max_batch_size=4)
    srv = ServerThread(engine, model_name="tiny").start()
    try:
        code, out, err = cli("llm", "bench", "--url", srv.url, "-n", "6", "--rate", "30", "--output-tokens", "4",
                             "--server-metrics-interval", "0.05", "--out", str(tmp_path / "run"),
                             "--results", str(tmp_path / "store"))
    finally:
        srv.stop()
        engine.close()
    assert code == 0, err
    r = json.loads((tmp_path / "run" / "result.json").read_text())
    sm = r["server_metrics"]
    assert sm["sources"]["running_requests"] == "benchmint_requests_running"
    assert sm["summary"]["generation_tokens"]["total_during_run"] == r["output_tokens_total"] == 24
    # the built-in server has no latency histograms nor caches: named as absent, never estimated
    assert {"ttft_s", "tpot_s", "kv_cache_usage", "prefix_cache_hit_rate"} <= set(sm["absent"])


def test_a_scrape_is_stamped_after_the_server_read_its_counters():
    """A busy server: it gets to the scrape 0.3 s late (serving requests), reads its counters and answers at once.
    A stamp at the GET's midpoint fell before that read, so a scrape that straddled the run's start could serve as
    its baseline while holding the first request's tokens (CI read a delta of 24 tokens for 27)."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from benchmint.core.clock import now_ns

    read_at: list[int] = []

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            time.sleep(0.3)
            read_at.append(now_ns())
            body = b"# TYPE x gauge\nx 1\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        sc = MetricsScraper(f"http://127.0.0.1:{srv.server_address[1]}/metrics")
        sc._scrape()
    finally:
        srv.shutdown()
        srv.server_close()
    assert len(sc.snapshots) == 1 and sc.snapshots[0][0] >= read_at[0]


def test_the_baseline_is_the_snapshot_sent_last_among_those_answered_before_the_start():
    # a periodic scrape sent during the warm-up and answered after the warm-up's mark() (still before the start)
    # read its counters before the warm-up ended: as the baseline it counted warm-up tokens as the run's
    text = "# TYPE vllm:generation_tokens counter\nvllm:generation_tokens_total{{model_name=\"m\"}} {}\n"
    sc = MetricsScraper("http://x/metrics")
    mark, slow, end = (-5, text.format(130)), (-2, text.format(110)), (10**9, text.format(157))
    sc.snapshots = [mark, slow, end]
    sc.sent = {-5: -8, -2: -20, 10**9: 10**9 - 1}  # the slow one was sent first
    block, _ = summarize(sc, 0)
    assert block["summary"]["generation_tokens"]["total_during_run"] == 27

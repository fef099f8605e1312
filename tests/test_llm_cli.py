"""`benchmint llm bench` end to end: outputs, in-process runs, faults, exit codes, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_llm_http import CHUNK, FaultServer, plain, sse_response

from benchmint.results.record import RunRecord

GOOD = sse_response([CHUNK % b"a", CHUNK % b"b", b'data: {"choices":[],"usage":{"completion_tokens":2}}', b"data: [DONE]"])


def test_bench_over_http_writes_result_parquet_and_run_record(cli, server, tmp_path):
    code, out, err = cli(
        "llm", "bench", "--url", server.url, "--scenario", "server", "--rate", "40", "-n", "8", "--warmup", "2",
        "--output-tokens", "4", "--slo", "ttft=30,tpot=10", "--out", str(tmp_path / "run"),
        "--json", str(tmp_path / "r.json"), "--results", str(tmp_path / "store"),
    )
    assert code == 0, err
    assert "TTFT" in out and "throughput" in out
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["schema_version"]
    for key in ("requests", "ttft_s", "tpot_s", "itl_s", "e2e_s", "throughput", "goodput_requests_per_s",
                "output_tokens_total", "send_lag_s", "duration_s", "config"):
        assert key in r, key
    for key in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
        assert set(r[key]) >= {"mean", "p50", "p90", "p99", "max"}
    assert set(r["send_lag_s"]) >= {"p50", "p99", "max"}
    assert set(r["throughput"]) == {"requests_per_s", "output_tokens_per_s", "total_tokens_per_s", "sent_requests_per_s"}
    assert r["requests"]["completed"] == 8 and r["requests"]["failed"] == 0 and r["requests"]["warmup_excluded"] == 2
    assert r["output_tokens_total"] == 32 and r["token_counts"]["output_tokens_source"] == {"usage": 8}
    assert r["goodput_requests_per_s"] > 0 and r["config"]["rate"] == 40 and r["config"]["model"] == "tiny"
    assert r["schedule"]["arrival"] == "poisson" and r["measurement"]["clock"] == "time.perf_counter_ns"
    t = pq.read_table(tmp_path / "run" / "requests.parquet").to_pandas()
    assert len(t) == 10 and t.warmup.sum() == 2
    m = t[~t.warmup]
    assert (m.ttft_s > 0).all() and (m.e2e_s >= m.ttft_s).all() and (m.output_tokens == 4).all()
    assert all(len(x) >= 1 for x in m.itl_s) and (m.sent_s >= m.scheduled_s).all()
    rec = RunRecord.read(tmp_path / "run" / "run.json")
    assert rec.kind == "llm" and rec.status == "ok" and rec.artifacts["requests"] == "requests.parquet"
    assert rec.metrics["ttft_s"] == r["ttft_s"]
    from benchmint.results.store import ResultsStore

    assert any(x.id == rec.id for x in ResultsStore(tmp_path / "store").records())


def test_bench_in_process_offline_and_chat_concurrency(cli, tmp_path):
    code, out, err = cli(
        "llm", "bench", "--backend", "transformers", "--model", "tiny", "--scenario", "offline", "-n", "4",
        "--output-tokens", "3", "--out", str(tmp_path / "a"), "--results", str(tmp_path / "s"),
    )
    assert code == 0, err
    r = json.loads((tmp_path / "a" / "result.json").read_text())
    assert r["requests"]["completed"] == 4 and r["output_tokens_total"] == 12
    assert r["schedule"]["arrival"] == "all-at-once"
    wl = RunRecord.read(tmp_path / "a" / "run.json").workload
    assert wl["model_name"] == "tiny" and wl["architecture"] == "LlamaForCausalLM"
    assert wl["parameter_count"] > 0 and wl["dtype"] == "float32"


def test_bench_chat_concurrency_over_http(cli, server, tmp_path):
    code, out, err = cli(
        "llm", "bench", "--url", server.url, "--api", "chat", "--scenario", "concurrency", "--concurrency", "2",
        "-n", "4", "--output-tokens", "2", "--out", str(tmp_path / "c"), "--results", str(tmp_path / "s"), "-q",
    )
    assert code == 0, err
    r = json.loads((tmp_path / "c" / "result.json").read_text())
    assert r["requests"]["completed"] == 4 and r["schedule"]["concurrency"] == 2


def test_unreachable_server_is_one_line_error(cli, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = cli("llm", "bench", "--url", f"http://127.0.0.1:{port}/v1", "--model", "m", "-n", "2",
                         "--rate", "5", "--results", str(tmp_path / "s"))
    assert code == 2
    assert "cannot reach the server" in err and str(port) in err and len(err.strip().splitlines()) == 1


def test_all_requests_failing_exits_nonzero_but_keeps_the_result(cli, tmp_path):
    with FaultServer(lambda sock, h, b: sock.sendall(plain("500 Internal Server Error", b"boom"))) as s:
        code, out, err = cli("llm", "bench", "--url", s.url, "--model", "m", "-n", "3", "--rate", "50",
                             "--out", str(tmp_path / "f"), "--results", str(tmp_path / "s"))
    assert code == 2 and "all 3 requests failed (http_5xx: 3)" in err
    r = json.loads((tmp_path / "f" / "result.json").read_text())
    assert r["requests"]["failed"] == 3 and r["requests"]["errors"] == {"http_5xx": 3}
    assert RunRecord.read(tmp_path / "f" / "run.json").status == "failed"


def test_mixed_faults_are_counted_and_the_run_goes_on(cli, tmp_path):
    replies = [GOOD, plain("429 Too Many Requests", b"slow down"), GOOD, sse_response([b"data: {oops"]), GOOD, "close"]

    def h(sock, head, body):
        rep = replies[h.n % len(replies)]  # single-stream: requests arrive one at a time, in order
        h.n += 1
        if rep == "close":
            return "close"
        sock.sendall(rep)

    h.n = 0
    with FaultServer(h) as s:
        code, out, err = cli("llm", "bench", "--url", s.url, "--model", "m", "--scenario", "single-stream",
                             "-n", "6", "--out", str(tmp_path / "x"), "--results", str(tmp_path / "s"))
    assert code == 0, err
    r = json.loads((tmp_path / "x" / "result.json").read_text())
    assert r["requests"]["completed"] == 3
    assert r["requests"]["errors"] == {"http_4xx": 1, "malformed": 1, "reset": 1}
    assert "429" in r["requests"]["error_examples"]["http_4xx"]
    assert RunRecord.read(tmp_path / "x" / "run.json").status == "partial"


@pytest.mark.slow
def test_ctrl_c_writes_the_partial_result(tmp_path):
    def slow(sock, head, body):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            ev = CHUNK % b"t" + b"\n\n"
            sock.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
            time.sleep(0.1)
        tail = b"data: [DONE]\n\n"
        sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))

    out = tmp_path / "run"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    with FaultServer(slow) as s:
        p = subprocess.Popen(
            [sys.executable, "-m", "benchmint.cli.main", "llm", "bench", "--url", s.url, "--model", "m",
             "--rate", "20", "-n", "1000", "--out", str(out), "--results", str(tmp_path / "s"), "--no-progress"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 60
        while s.count < 16 and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    r = json.loads((out / "result.json").read_text())
    assert r["requests"]["interrupted"] is True and 1 <= r["requests"]["completed"] < 1000
    assert "partial" in stdout or "partial" in stderr
    assert RunRecord.read(Path(out) / "run.json").status == "partial"


def test_duration_bound_closed_loop(cli, server, tmp_path):
    code, out, err = cli(
        "llm", "bench", "--url", server.url, "--scenario", "concurrency", "--concurrency", "2", "--duration", "0.5",
        "--output-tokens", "2", "--out", str(tmp_path / "d"), "--results", str(tmp_path / "s"), "-q",
    )
    assert code == 0, err
    r = json.loads((tmp_path / "d" / "result.json").read_text())
    assert r["requests"]["completed"] >= 2 and r["schedule"]["duration_limit_s"] == 0.5
    assert 0.4 < r["duration_s"] < 5


def test_progress_line_shows_done_in_flight_errors_rate():
    from benchmint.llm.bench import Counters, _Progress

    c = Counters(planned=10)
    c.done, c.in_flight, c.failed = 4, 2, 1
    text = str(_Progress(c, enabled=False)._render())
    assert "done 4/10" in text and "in flight 2" in text and "errors 1" in text and "rate" in text


@pytest.mark.slow
def test_serve_command_runs_the_built_in_server(tmp_path):
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    log = tmp_path / "truth.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "benchmint.cli.main", "llm", "serve", "--model", "tiny", "--port", str(port),
                          "--request-log", str(log)],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert p.poll() is None and time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions",
            data=json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 3, "ignore_eos": True}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            assert json.loads(r.read())["usage"]["completion_tokens"] == 3
        # a streamed request: the server logs its own times on the monotonic clock this process reads too
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions",
            data=json.dumps({"model": "tiny", "prompt": "hi", "max_tokens": 4, "ignore_eos": True,
                             "stream": True}).encode(),
            headers={"Content-Type": "application/json"},
        )
        sent = time.monotonic_ns()
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        got = time.monotonic_ns()
        assert b"[DONE]" in body
        # the line is in the file as the answer ends, not only once the server stops (a long-running server
        # keeps nothing in memory)
        deadline = time.monotonic() + 10
        while not log.read_bytes().endswith(b"\n") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(log.read_text().splitlines()) == 1
    finally:
        p.send_signal(signal.SIGTERM)  # as a supervisor stops it: uvicorn re-raises SIGTERM once it is done
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == 1  # the streamed request only
    r = rows[0]
    assert sent <= r["t_in"] <= r["t_first"] <= r["t_last"] <= r["t_done"] <= got
    assert r["n"] == 4 and len(r["t_chunks"]) == 4 and r["t_chunks"][0] == r["t_first"]


@pytest.mark.parametrize(("args", "says"), [
    (("--rate", "nan", "-n", "3"), "--rate nan: give a finite number"),  # stored a p99 of 9.2e9 s before
    (("--rate", "inf", "-n", "3"), "--rate inf"),
    (("--rate", "5", "-n", "3", "--timeout", "0"), "--timeout"),  # every request failed as "connect" before
    (("--scenario", "concurrency", "--concurrency", "2", "-n", "3", "--warmup", "-1"), "--warmup -1"),
    (("--sessions", "synthetic", "--num-sessions", "0"), "--num-sessions 0"),  # ran the default 8 before
    (("--rate", "5", "-n", "3", "--slo", "ttft=-1"), "--slo"),
    (("--scenario", "bogus", "-n", "3"), "ramp, concurrency-ramp"),
    (("--url", "ftp://127.0.0.1:9/v1", "--rate", "5", "-n", "3"), "http:// or https://"),
])
def test_numbers_and_urls_a_run_cannot_mean_are_one_line_and_exit_2(cli, tmp_path, args, says):
    backend = () if "--url" in args else ("--backend", "sim")
    code, out, err = cli("llm", "bench", *backend, "--dataset", "synthetic", "--input-tokens", "8",
                         "--output-tokens", "4", *args, "--out", str(tmp_path / "o"), "--results", str(tmp_path / "s"))
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err + out
    assert not (tmp_path / "o" / "result.json").exists()


def test_more_in_flight_than_requests_says_so(cli, tmp_path):
    # --concurrency 5000 -n 1000 recorded concurrency 5000 and said nothing
    code, _, err = cli("llm", "bench", "--backend", "sim", "--dataset", "synthetic", "--input-tokens", "8",
                       "--output-tokens", "4", "--scenario", "concurrency", "--concurrency", "50", "-n", "5",
                       "--no-store", "--out", str(tmp_path / "o"))
    assert code == 0 and "--concurrency 50 with 5 requests: at most 5 are ever in flight" in " ".join(err.split())


def test_a_url_that_is_not_an_openai_base_says_what_it_answered(cli, tmp_path):
    with FaultServer(lambda sock, h, b: sock.sendall(plain("404 Not Found", b"no"))) as s:
        code, out, err = cli("llm", "bench", "--url", s.url.replace("/v1", "/v2"), "-n", "2", "--rate", "5",
                             "--results", str(tmp_path / "s"))
    assert code == 2 and "HTTP 404" in err and "/v1" in err

"""Sessions, ramps and their warm-up under a faulty backend and Ctrl-C: every request is in the records."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from benchmint.core.clock import now_ns
from benchmint.llm.types import GenRequest, RequestRecord


class Raising:
    """Raises on every request whose id is in ``bad`` (a third-party backend's bug); answers the rest."""

    kind = "raising"

    def __init__(self, bad=lambda i: True, delay_s: float = 0.0):
        self.bad, self.delay_s = bad, delay_s

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def generate(self, req: GenRequest, on_first_token=None) -> RequestRecord:
        await asyncio.sleep(self.delay_s)
        if self.bad(req.id):
            raise OverflowError("Python int too large to convert to C long")
        t = now_ns()
        return RequestRecord(id=req.id, sent_ns=t, first_token_ns=t, end_ns=t, text=" ok", output_tokens=1)


def test_a_raising_backend_fails_the_session_turn_not_the_run():
    from benchmint.llm.schedule import make_schedule
    from benchmint.llm.sessions import drive_sessions, synthetic_sessions

    ss = synthetic_sessions(3, "2", "4", "2", "0", None, seed=1)
    recs: list[RequestRecord] = []
    sched = make_schedule("concurrency", concurrency=2, num_requests=3)
    asyncio.run(drive_sessions(Raising(), ss, sched, asyncio.Event(), recs))
    # each session's first turn fails (kind other) and ends its session
    assert len(recs) == 3 and {r.error_kind for r in recs} == {"other"}
    assert "OverflowError" in recs[0].error and {r.session_id for r in recs} == {0, 1, 2}


def test_a_raising_backend_fails_ramp_requests_not_the_run():
    from benchmint.llm.ramp import concurrency_ramp_schedule, drive_concurrency_ramp

    sched = concurrency_ramp_schedule(1, 2, 0.2)
    recs: list[RequestRecord] = []
    tpl = [GenRequest(id=0, prompt="x", max_tokens=1)]
    asyncio.run(drive_concurrency_ramp(Raising(lambda i: i % 2 == 1, 0.005), sched, tpl, asyncio.Event(), recs))
    failed = [r for r in recs if not r.ok]
    assert failed and len(failed) < len(recs) and {r.error_kind for r in failed} == {"other"}


def test_a_raising_backend_fails_a_warmup_request_not_the_run():
    from benchmint.llm import traffic
    from benchmint.llm.ramp import concurrency_ramp_schedule
    from benchmint.llm.workload import Workload

    sched = concurrency_ramp_schedule(1, 1, 0.05)
    tpl = [GenRequest(id=0, prompt="x", max_tokens=1)]
    warm = [GenRequest(id=-1, prompt="w", max_tokens=1)]
    cfg = SimpleNamespace(ignore_eos=True)
    recs, _, _ = asyncio.run(traffic.drive(cfg, Raising(lambda i: i == -1), sched, Workload("t", tpl), warm,
                                           asyncio.Event()))
    w = [r for r in recs if r.warmup]
    assert len(w) == 1 and w[0].error_kind == "other"


class Slow:
    """Answers after ``delay_s``; counts what it was sent; sets ``stop_at``'s event (Ctrl-C) as the k-th request
    arrives, so that a test stops a run at a point of its own, not at a time a loaded host may miss."""

    kind = "slow"

    def __init__(self, delay_s: float):
        self.delay_s, self.got = delay_s, []
        self.stop_at: tuple[int, asyncio.Event] | None = None

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def generate(self, req: GenRequest, on_first_token=None) -> RequestRecord:
        self.got.append(req.id)
        if self.stop_at is not None and len(self.got) == self.stop_at[0]:
            self.stop_at[1].set()
        sent = now_ns()
        await asyncio.sleep(self.delay_s)
        t = now_ns()
        return RequestRecord(id=req.id, sent_ns=sent, first_token_ns=t, end_ns=t, text=" ok", output_tokens=1)


async def _stopped_at(be: Slow, k: int, coro_fn):
    """Run ``coro_fn(stop)``; Ctrl-C as the backend receives its k-th request."""
    stop = asyncio.Event()
    be.stop_at = (k, stop)
    return await coro_fn(stop)


def test_ctrl_c_during_open_loop_sessions_records_in_flight_and_unstarted_first_turns():
    from benchmint.llm.metrics import compute_metrics
    from benchmint.llm.schedule import make_schedule
    from benchmint.llm.sessions import drive_sessions, session_metrics, synthetic_sessions

    ss = synthetic_sessions(6, "3", "4", "2", "0", None, seed=1)
    be = Slow(0.3)
    recs: list[RequestRecord] = []
    sched = make_schedule("constant", rate=20, num_requests=6)  # sessions start every 50 ms
    start = asyncio.run(_stopped_at(be, 3, lambda stop: drive_sessions(be, ss, sched, stop, recs)))
    first = [r for r in recs if r.turn == 0]
    assert sorted(r.session_id for r in first) == list(range(6))  # every session's first turn is in the records
    in_flight = [r for r in recs if r.error_kind == "cancelled" and r.sent_ns]
    unsent = [r for r in recs if r.error_kind == "cancelled" and not r.sent_ns]
    assert len(in_flight) == len(be.got) >= 1 and len(unsent) == 6 - len(be.got) >= 1
    m = compute_metrics(recs, start, interrupted=True)["requests"]
    assert m["scheduled"] == m["completed"] + m["failed"] + m["cancelled"] == 6 and m["cancelled"] == 6
    assert session_metrics(recs, ss)["started"] == len(be.got)


def test_ctrl_c_during_closed_loop_sessions_records_the_sessions_no_worker_reached():
    from benchmint.llm.schedule import make_schedule
    from benchmint.llm.sessions import drive_sessions, synthetic_sessions

    ss = synthetic_sessions(5, "2", "4", "2", "0", None, seed=1)
    be = Slow(0.3)
    recs: list[RequestRecord] = []
    sched = make_schedule("concurrency", concurrency=2, num_requests=5)
    asyncio.run(_stopped_at(be, 2, lambda stop: drive_sessions(be, ss, sched, stop, recs)))
    assert len(be.got) == 2 and sorted(r.session_id for r in recs if r.turn == 0) == list(range(5))
    assert all(r.error_kind == "cancelled" for r in recs)
    assert sum(1 for r in recs if r.sent_ns) == 2


def test_ctrl_c_during_a_concurrency_ramp_records_the_requests_in_flight():
    from benchmint.llm.ramp import concurrency_ramp_schedule, drive_concurrency_ramp

    sched = concurrency_ramp_schedule(3, 3, 5.0)
    be = Slow(0.3)
    recs: list[RequestRecord] = []
    tpl = [GenRequest(id=0, prompt="x", max_tokens=1)]
    asyncio.run(_stopped_at(be, 3, lambda stop: drive_concurrency_ramp(be, sched, tpl, stop, recs)))
    assert len(recs) == len(be.got) == 3 and {r.error_kind for r in recs} == {"cancelled"}


def test_ctrl_c_during_the_shapes_warmup_stops_the_warmup():
    from benchmint.llm import traffic
    from benchmint.llm.schedule import make_schedule
    from benchmint.llm.sessions import sessions_workload, synthetic_sessions

    ss = synthetic_sessions(3, "2", "4", "2", "0", None, seed=1)
    base = sessions_workload(ss, name="s", ignore_eos=True, source={})
    wl = traffic.SessionWorkload(base.name, base.requests, base.source, sessions=ss)
    warm = [GenRequest(id=-1 - i, prompt="w", max_tokens=1) for i in range(10)]
    be = Slow(0.05)
    sched = make_schedule("concurrency", concurrency=1, num_requests=3)
    recs, _, interrupted = asyncio.run(_stopped_at(
        be, 2, lambda stop: traffic.drive(SimpleNamespace(ignore_eos=True), be, sched, wl, warm, stop)))
    assert interrupted and len(be.got) == 2  # the warm-up stopped; no measured turn was sent
    measured = [r for r in recs if not r.warmup]
    assert len(measured) == 3 and all(r.error_kind == "cancelled" and not r.sent_ns for r in measured)


# ---------------------------------------------------------------- client-bound verdict of ramps and traces
def test_send_lag_makes_a_rate_ramp_and_a_trace_replay_client_bound():
    from pathlib import Path

    from benchmint.llm.client_bound import client_bound_verdict
    from benchmint.llm.ramp import concurrency_ramp_schedule, rate_ramp_schedule
    from benchmint.llm.schedule import make_schedule
    from benchmint.llm.trace_replay import trace_schedule

    trace = Path(__file__).resolve().parents[1] / "src" / "benchmint" / "data" / "workloads" / "mooncake_trace.jsonl"
    lag = {"p99": 0.05}
    for sched in (rate_ramp_schedule(2, 10, 5, seed=1), trace_schedule(str(trace))[0]):
        d = sched.describe()
        assert d["open_loop"] is True
        v = client_bound_verdict({"send_lag_s": lag, "schedule": d}, None)
        assert v["client_bound"] and "send lag p99" in v["reasons"][0]
    closed = concurrency_ramp_schedule(1, 2, 1).describe()
    assert closed["open_loop"] is False
    assert not client_bound_verdict({"send_lag_s": lag, "schedule": closed}, None)["client_bound"]
    offline = make_schedule("offline", num_requests=4).describe()
    assert not client_bound_verdict({"send_lag_s": lag, "schedule": offline}, None)["client_bound"]
    # an old result without the key: the arrival's name still decides
    assert client_bound_verdict({"send_lag_s": lag, "schedule": {"arrival": "poisson"}}, None)["client_bound"]


# ---------------------------------------------------------------- one /metrics scraper for the prefix-cache hit rate
_VLLM_TEXT = ("# TYPE vllm:prefix_cache_queries counter\nvllm:prefix_cache_queries_total{model_name=\"m\"} %d\n"
              "# TYPE vllm:prefix_cache_hits counter\nvllm:prefix_cache_hits_total{model_name=\"m\"} %d\n")


def test_the_hit_rate_comes_from_the_server_metrics_scrapes_when_they_ran(monkeypatch):
    from benchmint.llm import prefixes, traffic
    from benchmint.llm.schedule import make_schedule
    from benchmint.llm.server_metrics import MetricsScraper, summarize
    from benchmint.llm.workload import Workload

    async def no_second_scrape(*a, **k):
        raise AssertionError("a second /metrics scrape")

    monkeypatch.setattr(prefixes, "scrape_prefix_counters", no_second_scrape)
    sc = MetricsScraper("http://127.0.0.1:9/metrics")
    sc.snapshots = [(0, _VLLM_TEXT % (100, 10)), (10**9, _VLLM_TEXT % (1100, 610))]
    block, _ = summarize(sc, 0)
    cfg = SimpleNamespace(prefix_groups=2, prefix_tokens=8, trace=None, url="http://127.0.0.1:9/v1", api_key="k",
                          anchor="scheduled")
    reqs = [GenRequest(id=i, prompt="p", max_tokens=1, input_tokens=16) for i in range(4)]
    assert asyncio.run(traffic.before_run(cfg, True, scraping=True)) is None
    out = asyncio.run(traffic.after_run(cfg, [], 0, make_schedule("offline", num_requests=4), Workload("w", reqs),
                                        reqs, None, True, block))
    p = out["prefix_cache"]
    assert p["measured_hit_rate"] == 0.6 and p["queried_tokens"] == 1000 and p["hit_tokens"] == 600
    assert "expected_cacheable_fraction" in p and "server_metrics" in p["source"]


def test_the_fallback_scrape_sends_the_api_key_and_survives_a_binary_answer():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from benchmint.llm.prefixes import scrape_prefix_counters

    class H(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/bad/metrics":
                body = b"\xff\xfe\xfa not text"
            elif self.headers.get("Authorization") != "Bearer sekret":
                self.send_response(401)
                self.end_headers()
                return
            else:
                body = (_VLLM_TEXT % (50, 5)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        got = asyncio.run(scrape_prefix_counters(url + "/v1", api_key="sekret"))
        assert got == {"vllm:prefix_cache_queries": 50.0, "vllm:prefix_cache_hits": 5.0}
        assert asyncio.run(scrape_prefix_counters(url + "/bad/v1", api_key="sekret")) is None
    finally:
        srv.shutdown()
        srv.server_close()


# ---------------------------------------------------------------- windows
def test_windows_count_cancelled_requests_apart_from_failures():
    import numpy as np

    from benchmint.llm.bench import PERCENTILE_RULE
    from benchmint.llm.windows import window_metrics

    s = 1_000_000_000
    recs = []
    for i, ttft in enumerate((0.1, 0.2, 0.4, 0.8)):
        t = s + i * 1000
        recs.append(RequestRecord(id=i, scheduled_ns=t, sent_ns=t, first_token_ns=t + int(ttft * 1e9),
                                  end_ns=t + int(ttft * 1e9), output_tokens=1))
    bad = RequestRecord(id=8, scheduled_ns=s, sent_ns=s, end_ns=s + 10)
    bad.error_kind = "http"
    cut = RequestRecord(id=9, scheduled_ns=s, sent_ns=s)
    cut.error_kind = "cancelled"
    w = window_metrics([*recs, bad, cut], s, 1, span_s=1.0)["windows"][0]
    assert (w["scheduled"], w["completed"], w["failed"], w["cancelled"]) == (6, 4, 1, 1)
    assert w["ttft_s"]["p50"] == np.percentile([0.1, 0.2, 0.4, 0.8], 50)
    assert "benchmint.core.stats" in PERCENTILE_RULE


# ---------------------------------------------------------------- hostile files: one line, exit 2
def test_a_sessions_file_holding_a_json_scalar_is_a_one_line_error(cli, tmp_path):
    for text in ("42", '"hello"', '{"data": 5}'):
        bad = tmp_path / "s.json"
        bad.write_text(text)
        code, out, err = cli("llm", "bench", "--backend", "transformers", "--model", "tiny", "--sessions", str(bad),
                             "--scenario", "concurrency", "--concurrency", "1")
        assert code == 2 and "not a list of conversations" in err and len(err.strip().splitlines()) == 1, text


def test_a_trace_length_too_large_for_an_int_is_a_one_line_error(cli, tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"timestamp": 0, "input_length": 5, "output_length": 2, "hash_ids": []}\n'
                 '{"timestamp": 10, "input_length": 5, "output_length": 1e400, "hash_ids": []}\n')
    code, out, err = cli("llm", "bench", "--backend", "transformers", "--model", "tiny", "--trace", str(p))
    assert code == 2 and "line 2" in err and "OverflowError" in err and len(err.strip().splitlines()) == 1
    c = tmp_path / "t.csv"
    c.write_text("Timestamp,Model,Request tokens,Response tokens\n0.0,GPT-4,10,5\n1.0,GPT-4,1e400,5\n")
    code, out, err = cli("llm", "bench", "--backend", "transformers", "--model", "tiny", "--trace", str(c))
    assert code == 2 and "not a finite number" in err and len(err.strip().splitlines()) == 1

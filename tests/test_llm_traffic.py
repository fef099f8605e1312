"""Workload shapes of `llm bench`: multi-turn sessions, shared prefixes, arrival-trace replay, ramps."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from benchmint.core.clock import now_ns
from benchmint.llm.types import GenRequest, RequestRecord

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "benchmint" / "data" / "workloads"
MOONCAKE = SAMPLES / "mooncake_trace.jsonl"
BURSTGPT = SAMPLES / "burstgpt_trace.csv"
SHAREGPT = SAMPLES / "sessions_sharegpt.json"


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from benchmint.models.tiny_llm import tiny_llm_path

    return AutoTokenizer.from_pretrained(str(tiny_llm_path()))




class EchoBackend:
    """Answers at once with a text naming the request; keeps every request it got."""

    kind = "echo"

    def __init__(self, delay_s: float = 0.0):
        self.got: list[GenRequest] = []
        self.delay_s = delay_s
        self.in_flight = self.peak = 0

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def generate(self, req: GenRequest, on_first_token=None) -> RequestRecord:
        self.got.append(req)
        rec = RequestRecord(id=req.id, sent_ns=now_ns())
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(self.delay_s)
        self.in_flight -= 1
        t = now_ns()
        rec.first_token_ns, rec.chunk_ns, rec.end_ns = t, [t], t
        rec.text, rec.output_tokens, rec.chunk_count = f" answer to request {req.id}", 4, 1
        return rec


# ---------------------------------------------------------------- each format loads from its sample
def test_each_sample_format_loads():
    from benchmint.llm.sessions import load_session_file
    from benchmint.llm.trace_replay import load_trace

    rows, fmt = load_trace(MOONCAKE)
    assert fmt == "mooncake" and len(rows) == 32
    assert rows[0].t_s == json.loads(MOONCAKE.read_text().splitlines()[0])["timestamp"] / 1000
    assert rows[0].hash_ids and all(r.input_tokens > 0 and r.output_tokens > 0 for r in rows)
    rows, fmt = load_trace(BURSTGPT)
    assert fmt == "burstgpt" and len(rows) == 40 and rows[0].hash_ids == ()
    ss = load_session_file(SHAREGPT, "8", "0.5")
    assert len(ss) == 6 and [len(s.turns) for s in ss] == [3, 2, 4, 2, 3, 2]
    assert ss[1].system == "You are a patient maths tutor." and ss[0].turns[1].think_s == 0.5
    assert ss[0].turns[0].think_s == 0.0 and ss[0].turns[0].user.startswith("I am planning")


# ---------------------------------------------------------------- sessions
def test_each_turn_carries_the_conversation_so_far():
    from benchmint.llm.schedule import make_schedule
    from benchmint.llm.sessions import drive_sessions, session_metrics, synthetic_sessions

    ss = synthetic_sessions(3, "3", "12", "4", "0.01", None, seed=1)
    be = EchoBackend()
    recs: list[RequestRecord] = []
    sched = make_schedule("concurrency", concurrency=2, num_requests=3)
    asyncio.run(drive_sessions(be, ss, sched, asyncio.Event(), recs))
    assert len(recs) == 9 and {r.session_id for r in recs} == {0, 1, 2}
    by_id = {r.id: r for r in recs}
    for s in ss:
        sent = sorted((r for r in recs if r.session_id == s.id), key=lambda r: r.turn)
        assert [r.turn for r in sent] == [0, 1, 2]
        prompts = [next(q.prompt for q in be.got if q.id == r.id) for r in sent]
        for k in range(1, 3):
            prev_answer = by_id[sent[k - 1].id].text
            assert prompts[k] == prompts[k - 1] + [{"role": "assistant", "content": prev_answer},
                                                   {"role": "user", "content": s.turns[k].user}]
            # the next turn is scheduled after the previous answer plus the think time
            assert sent[k].scheduled_ns >= sent[k - 1].end_ns + 0.01e9 - 1
            assert sent[k].sent_ns >= sent[k].scheduled_ns
    m = session_metrics(recs, ss)
    assert m["completed"] == 3 and [t["requests"] for t in m["by_turn"]] == [3, 3, 3]


def test_sessions_over_the_builtin_server(cli, server, tmp_path):
    code, out, err = cli(
        "llm", "bench", "--url", server.url, "--sessions", "synthetic", "--num-sessions", "3", "--session-turns", "3",
        "--input-tokens", "16", "--output-tokens", "4", "--think-time", "0.05", "--scenario", "concurrency",
        "--concurrency", "3", "--out", str(tmp_path / "run"), "--results", str(tmp_path / "store"), "-q",
    )
    assert code == 0, err
    r = json.loads((tmp_path / "run" / "result.json").read_text())
    s = r["sessions"]
    assert s["completed"] == 3 and s["turns_sent"] == 9 and len(s["by_turn"]) == 3
    # the history grows: each turn's prompt (counted by the server) is longer than the previous turn's
    ins = [t["input_tokens_mean"] for t in s["by_turn"]]
    assert ins[0] < ins[1] < ins[2]
    assert s["ttft_growth"]["points"] == 9 and s["by_turn"][0]["ttft_s"]["count"] == 3
    t = pq.read_table(tmp_path / "run" / "requests.parquet").to_pandas()
    assert {"session_id", "turn", "scheduled_s", "input_tokens"} <= set(t.columns)
    assert sorted(t.turn.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2] and t.input_tokens.notna().all()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["workload"]["workload_kind"] == "sessions" and len(run["workload"]["workload_hash"]) == 32


def test_an_empty_conversation_is_a_one_line_error(cli, tmp_path):
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps([{"id": "a", "conversations": [{"from": "human", "value": "hi"}]},
                               {"id": "b", "conversations": []}]))
    code, out, err = cli("llm", "bench", "--backend", "transformers", "--model", "tiny", "--sessions", str(bad),
                         "--scenario", "concurrency", "--concurrency", "1")
    assert code == 2 and "conversation 2 (id b) is empty" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- shared prefixes
def _common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_a_prefix_group_shares_exactly_p_tokens(tok):
    from benchmint.llm.prefixes import cacheable_fraction, prefix_hook
    from benchmint.llm.workload import load_workload

    hook = prefix_hook(3, 40, tok, 0, True, "100")
    wl = load_workload("synthetic", tokenizer=tok, num_prompts=12, input_tokens="100", prompt_hook=hook)
    ids = [tok(r.prompt, add_special_tokens=False)["input_ids"] for r in wl.requests]
    assert all(len(x) == 100 for x in ids) and all(r.input_tokens == 100 for r in wl.requests)
    for g in range(3):
        members = ids[g::3]
        assert min(_common(members[0], m) for m in members[1:]) == 40
        assert all(_common(members[i], members[j]) == 40 for i in range(4) for j in range(i + 1, 4))
    assert all(_common(ids[0], ids[g]) < 40 for g in (1, 2))
    # file datasets: the prefix goes before each prompt's text
    wl2 = load_workload("sample", tokenizer=tok, num_prompts=6, chat_template=False,
                        prompt_hook=prefix_hook(2, 25, tok, 0, False, None))
    fids = [tok(r.prompt, add_special_tokens=False)["input_ids"] for r in wl2.requests]
    assert fids[0][:25] == fids[2][:25] == fids[4][:25] and fids[0][:25] != fids[1][:25]
    cf = cacheable_fraction(wl.requests, 12, 3, 40)
    assert cf["expected_cacheable_fraction"] == pytest.approx(9 * 40 / 1200)


def test_prefix_longer_than_the_prompt_is_a_one_line_error(cli):
    code, out, err = cli("llm", "bench", "--backend", "transformers", "--model", "tiny", "--dataset", "synthetic",
                         "--input-tokens", "32", "--prefix-groups", "2", "--prefix-tokens", "64", "-n", "2",
                         "--scenario", "offline")
    assert code == 2 and "--prefix-tokens 64" in err and len(err.strip().splitlines()) == 1


def test_builtin_server_reports_no_prefix_cache_hit_rate():
    from benchmint.llm.prefixes import measured_hit_rate, parse_prefix_counters

    assert parse_prefix_counters("benchmint_prompt_tokens_total 5\n") is None
    vllm = ("# TYPE vllm:prefix_cache_queries counter\nvllm:prefix_cache_queries_total{model_name=\"m\"} %d\n"
            "# TYPE vllm:prefix_cache_hits counter\nvllm:prefix_cache_hits_total{model_name=\"m\"} %d\n")
    a, b = parse_prefix_counters(vllm % (100, 10)), parse_prefix_counters(vllm % (1100, 610))
    assert measured_hit_rate(a, b)["measured_hit_rate"] == pytest.approx(0.6)
    assert measured_hit_rate(None, None)["measured_hit_rate"] is None


# ---------------------------------------------------------------- trace replay
def test_trace_replay_sends_at_the_recorded_offsets():
    from benchmint.llm.bench import drive
    from benchmint.llm.trace_replay import load_trace, trace_schedule, trace_workload

    sched, rows, fmt = trace_schedule(str(BURSTGPT), speed=4.0, window="1:6")
    all_rows, _ = load_trace(BURSTGPT)
    want = [(r.t_s - rows[0].t_s) / 4.0 for r in all_rows if 1 <= r.t_s < 6]
    assert np.allclose(sched.offsets_s, want) and len(rows) == len(want) and sched.describe()["trace_speed"] == 4.0
    wl = trace_workload(rows, None, fmt=fmt)
    assert [r.max_tokens for r in wl.requests] == [r.output_tokens for r in rows]
    be = EchoBackend()
    recs, start, _ = asyncio.run(drive(be, sched, wl.requests, [], wl.requests))
    recs.sort(key=lambda r: r.id)
    sched_s = np.array([(r.scheduled_ns - start) / 1e9 for r in recs])
    lag = np.array([(r.sent_ns - r.scheduled_ns) / 1e9 for r in recs])
    assert np.allclose(sched_s, want, atol=1e-6)  # the schedule is the trace's, exactly
    sent = np.array([(r.sent_ns - start) / 1e9 for r in recs])
    assert np.allclose(sent - sched_s, lag) and lag.min() >= 0 and lag.max() < 0.25


def test_trace_prompts_have_recorded_lengths_and_share_blocks(tok):
    from benchmint.llm.trace_replay import load_trace, trace_workload

    rows, fmt = load_trace(MOONCAKE)
    wl = trace_workload(rows, tok, block_tokens=512, fmt=fmt)
    ids = [tok(r.prompt, add_special_tokens=False)["input_ids"] for r in wl.requests]
    assert [len(x) for x in ids] == [r.input_tokens for r in rows]
    a, b = next((i, j) for i in range(len(rows)) for j in range(i + 1, len(rows))
                if rows[i].hash_ids[:2] == rows[j].hash_ids[:2] == (0, 1))
    assert _common(ids[a], ids[b]) >= 1024  # blocks 0 and 1: 2 x 512 tokens in common


def test_trace_replay_over_the_builtin_server(cli, server, tmp_path):
    code, out, err = cli("llm", "bench", "--url", server.url, "--trace", str(BURSTGPT), "--trace-window", "0:3",
                         "--trace-speed", "2", "--out", str(tmp_path / "run"), "--results", str(tmp_path / "s"), "-q")
    assert code == 0, err
    r = json.loads((tmp_path / "run" / "result.json").read_text())
    assert r["schedule"]["scenario"] == "trace" and r["requests"]["failed"] == 0
    assert len(r["windows"]["windows"]) == 10 and r["prefix_cache"]["measured_hit_rate"] is None
    from benchmint.llm.trace_replay import load_trace

    rows, _ = load_trace(BURSTGPT)
    want = np.array([(x.t_s - rows[0].t_s) / 2 for x in rows if x.t_s < 3])
    t = pq.read_table(tmp_path / "run" / "requests.parquet").to_pandas().sort_values("scheduled_s")
    assert np.allclose(t.scheduled_s.to_numpy(), want, atol=1e-6)  # sent at the recorded offsets...
    lag = t.sent_s.to_numpy() - want  # ...within the send lag the result reports
    assert lag.min() >= 0 and lag.max() <= r["send_lag_s"]["max"] + 1e-6


@pytest.mark.parametrize("rows, what", [
    (['{"timestamp": 0, "input_length": 5, "output_length": 2, "hash_ids": []}',
      '{"timestamp": -10, "input_length": 5, "output_length": 2, "hash_ids": []}'], "negative"),
    (['{"timestamp": 50, "input_length": 5, "output_length": 2, "hash_ids": []}',
      '{"timestamp": 10, "input_length": 5, "output_length": 2, "hash_ids": []}'], "comes before"),
])
def test_bad_trace_timestamps_are_one_line_errors(cli, tmp_path, rows, what):
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(rows) + "\n")
    code, out, err = cli("llm", "bench", "--backend", "transformers", "--model", "tiny", "--trace", str(p))
    assert code == 2 and what in err and "line 2" in err and len(err.strip().splitlines()) == 1


def test_unsorted_burstgpt_is_an_error(cli, tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("Timestamp,Model,Request tokens,Response tokens\n2.0,GPT-4,10,5\n1.0,GPT-4,10,5\n")
    code, out, err = cli("llm", "bench", "--backend", "transformers", "--model", "tiny", "--trace", str(p))
    assert code == 2 and "comes before" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- ramps, windows, reproducibility
def test_rate_ramp_grows_and_is_seeded():
    from benchmint.llm.ramp import rate_ramp_schedule

    s = rate_ramp_schedule(2, 40, 20, seed=3)
    o = s.offsets_s
    assert abs(len(o) - 420) < 4 * np.sqrt(420) and o.max() < 20 and np.all(np.diff(o) >= 0)
    first, last = np.sum(o < 5), np.sum(o >= 15)
    assert last > 3 * first
    assert np.array_equal(o, rate_ramp_schedule(2, 40, 20, seed=3).offsets_s)
    assert s.describe()["rate_end_per_s"] == 40 and s.scenario == "ramp"


def test_concurrency_ramp_climbs_and_windows_follow():
    from benchmint.llm.ramp import concurrency_ramp_schedule, drive_concurrency_ramp
    from benchmint.llm.windows import window_metrics

    sched = concurrency_ramp_schedule(1, 4, 0.8)
    be = EchoBackend(delay_s=0.02)
    recs: list[RequestRecord] = []
    tpl = [GenRequest(id=0, prompt="x", max_tokens=4)]
    start = asyncio.run(drive_concurrency_ramp(be, sched, tpl, asyncio.Event(), recs))
    assert be.peak == 4 and recs
    w = window_metrics(recs, start, 4, span_s=0.8)["windows"]
    assert w[0]["offered_rate_per_s"] < w[-1]["offered_rate_per_s"]


def test_same_seed_same_workload_hash(tok):
    from benchmint.llm import traffic
    from benchmint.llm.bench import BenchConfig

    def fp(seed: int) -> str:
        cfg = BenchConfig(sessions="synthetic", num_sessions=4, session_turns="2-4", think_time="exp:1",
                          seed=seed, scenario="server", rate=2)
        sched = traffic.schedule_for(cfg)
        wl = traffic.workload_for(cfg, "chat", tok)
        assert wl is not None
        return traffic.fingerprint(cfg, wl, sched)["workload_hash"]

    assert fp(0) == fp(0) != fp(1)


def test_report_shows_ttft_by_turn_and_latency_over_time():
    from benchmint.report.html import render
    from benchmint.results.record import RunRecord

    by_turn = [{"turn": k, "requests": 3, "input_tokens_mean": 20.0 * (k + 1),
                "ttft_s": {"p50": 0.01 * (k + 1), "p90": 0.02 * (k + 1)}} for k in range(3)]
    wins = [{"start_s": i, "end_s": i + 1, "offered_rate_per_s": 2.0 * i, "ttft_s": {"p50": 0.01 * i}}
            for i in range(5)]
    recs = [RunRecord(kind="llm", config={"scenario": "concurrency"}, metrics={"sessions": {"by_turn": by_turn}},
                      workload={"model_name": "tiny"}),
            RunRecord(kind="llm", config={"scenario": "ramp"}, workload={"model_name": "tiny"},
                      metrics={"windows": {"windows": wins, "latency_bend": {"start_s": 3.0}}})]
    page = render(recs)
    assert "Workload shapes" in page and "TTFT by turn" in page and "TTFT p50 over the run" in page
    assert "Workload shapes" not in render(recs[:0])


def test_sessions_and_prefixes_in_process(tmp_path):
    from benchmint.llm.bench import BenchConfig, run_bench

    cfg = BenchConfig(backend="transformers", model="tiny", sessions="synthetic", num_sessions=2, session_turns="2",
                      input_tokens="12", output_tokens="3", think_time="0", scenario="offline", progress=False,
                      out=str(tmp_path / "s"))
    r = run_bench(cfg, results_dir=tmp_path / "store").result
    assert r["sessions"]["completed"] == 2 and r["requests"]["completed"] == 4
    b = r["sessions"]["by_turn"]
    assert b[1]["input_tokens_mean"] > b[0]["input_tokens_mean"] + 3  # history: 12-token turn + 3-token answer
    cfg = BenchConfig(backend="transformers", model="tiny", dataset="synthetic", input_tokens="40", output_tokens="2",
                      prefix_groups=2, prefix_tokens=30, num_requests=4, scenario="offline", progress=False,
                      out=str(tmp_path / "p"))
    p = run_bench(cfg, results_dir=tmp_path / "store").result["prefix_cache"]
    assert p["expected_cacheable_fraction"] == pytest.approx(2 * 30 / 160)
    assert p["measured_hit_rate"] is None and "no prefix cache" in p["source"]


def test_workload_hash_is_the_same_in_another_process():
    import os
    import subprocess
    import sys

    code = (
        "from benchmint.llm import traffic\n"
        "from benchmint.llm.bench import BenchConfig\n"
        "for kw in (dict(sessions='synthetic', num_sessions=3, think_time='exp:1', scenario='server', rate=2),\n"
        "           dict(dataset='synthetic', input_tokens='20-40', prefix_groups=2, prefix_tokens=10, num_requests=6,\n"
        "                scenario='server', rate=3)):\n"
        "    cfg = BenchConfig(seed=5, **kw)\n"
        "    s = traffic.schedule_for(cfg)\n"
        "    from benchmint.llm.workload import load_workload\n"
        "    wl = traffic.workload_for(cfg, 'chat', None) or load_workload('synthetic', input_tokens=cfg.input_tokens,\n"
        "        num_prompts=6, seed=5, prompt_hook=traffic.prompt_hook(cfg, None))\n"
        "    print(traffic.fingerprint(cfg, wl, s)['workload_hash'])\n"
    )
    outs = []
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        outs.append(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   timeout=120, check=True).stdout.split())
    assert outs[0] == outs[1] and len(outs[0]) == 2 and outs[0][0] != outs[0][1]


def test_ramp_windows_carry_the_planned_load_and_the_console_reads_latency_against_it():
    # the console read "0.0->-, 2.5->14.09, 10.0->8.86, 2.5->..." for a 1 -> 10 req/s ramp: a window's
    # offered rate counts its few requests (one in 0.4 s is 2.5 req/s), which looked like a random rate
    from benchmint.llm.bench import BenchConfig
    from benchmint.llm.traffic import planned_load, summary_lines
    from benchmint.llm.windows import window_metrics

    cfg = BenchConfig(scenario="ramp", rate_start=1.0, rate_end=10.0, ramp_duration_s=4.0)
    key, rate = planned_load(cfg, "ramp")
    assert key == "planned_rate_per_s" and [rate(t) for t in (0, 2, 4, 9)] == [1.0, 5.5, 10.0, 10.0]
    cfg = BenchConfig(scenario="concurrency-ramp", concurrency_start=1, concurrency_end=4, ramp_duration_s=0.8)
    key, inflight = planned_load(cfg, "concurrency-ramp")
    assert key == "planned_concurrency" and [inflight(t) for t in (0, 0.19, 0.21, 0.61, 5)] == [1, 1, 2, 4, 4]

    recs = [RequestRecord(id=i, scheduled_ns=int(t * 1e9), sent_ns=int(t * 1e9), first_token_ns=int((t + 0.01) * 1e9),
                          end_ns=int((t + 0.02) * 1e9), output_tokens=2) for i, t in enumerate((0.1, 1.5, 3.9))]
    w = window_metrics(recs, 0, 4, span_s=4.0, planned=planned_load(
        BenchConfig(scenario="ramp", rate_start=1.0, rate_end=10.0, ramp_duration_s=4.0), "ramp"))
    assert [x["planned_rate_per_s"] for x in w["windows"]] == [2.125, 4.375, 6.625, 8.875]
    line = next(x for x in summary_lines({"windows": w}) if x.startswith("TTFT p50 over time"))
    assert "(planned req/s: ms, requests)" in line and "2.1: 10.00 (1)" in line and "6.6: - (0)" in line

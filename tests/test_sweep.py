"""Peak search: bounded trials, probe then bisect; LoadGen Server sweep and llm bench sweep for real."""

from __future__ import annotations

import json

import pytest

from benchmint.core.errors import UserError
from benchmint.llm.sweep import Trial, bench_trial_verdict, find_peak, loadgen_trial_verdict


def _threshold(limit: float, calls: list):
    def run(rate: float) -> Trial:
        calls.append(rate)
        return Trial(rate, rate <= limit, {"ttft_p99_s": rate / 100})

    return run


@pytest.mark.parametrize("limit", [0.3, 3.0, 37.0, 1000.0])
@pytest.mark.parametrize("budget", [3, 6, 10])
def test_peak_is_the_highest_passing_rate_within_the_budget(limit, budget):
    calls: list[float] = []
    r = find_peak(_threshold(limit, calls), start_rate=4.0, max_trials=budget)
    assert len(calls) == len(r.trials) <= budget
    passing = [t.rate for t in r.trials if t.passed]
    failing = [t.rate for t in r.trials if not t.passed]
    assert r.peak_rate == (max(passing) if passing else None)
    if r.peak_rate is not None:
        assert r.peak_rate <= limit
    if failing and r.peak_rate is not None:
        assert min(failing) > limit >= r.peak_rate
        assert r.bracket == (r.peak_rate, min(failing))
    rates = [p["rate"] for p in r.curve()]
    assert rates == sorted(rates)


def test_bisection_narrows_to_the_tolerance():
    calls: list[float] = []
    r = find_peak(_threshold(37.0, calls), start_rate=4.0, max_trials=20, rel_tol=0.05)
    lo, hi = r.bracket
    assert hi / lo - 1 <= 0.05 and lo <= 37.0 < hi
    assert calls[:5] == [4.0, 8.0, 16.0, 32.0, 64.0]  # probe up by 2x until a failure
    assert "bracket" in r.stopped_because


def test_probe_down_and_max_rate():
    calls: list[float] = []
    r = find_peak(_threshold(0.7, calls), start_rate=4.0, max_trials=4)
    assert calls[:3] == [4.0, 2.0, 1.0] and r.peak_rate == 0.5
    calls.clear()
    r = find_peak(_threshold(1000.0, calls), start_rate=4.0, max_trials=10, max_rate=10.0)
    assert calls == [4.0, 8.0, 10.0] and r.peak_rate == 10.0 and "maximum" in r.stopped_because


def test_ctrl_c_ends_the_search_and_keeps_the_finished_trials():
    calls: list[float] = []
    inner = _threshold(37.0, calls)

    def run(rate: float) -> Trial:
        if len(calls) == 3:
            raise KeyboardInterrupt
        return inner(rate)

    r = find_peak(run, start_rate=4.0, max_trials=10)
    assert r.interrupted and "interrupted" in r.stopped_because and "3 finished trials" in r.stopped_because
    assert [t.rate for t in r.trials] == [4.0, 8.0, 16.0] and r.peak_rate == 16.0
    assert r.to_dict()["interrupted"] is True
    assert find_peak(_threshold(37.0, []), start_rate=4.0, max_trials=3).to_dict()["interrupted"] is False


def test_an_interrupted_bench_trial_ends_the_bench_sweep(tmp_path, monkeypatch):
    # llm bench keeps a Ctrl-C'd run as a partial result; the sweep must not judge that part of a trial as a
    # load level and go on to the next rate
    from types import SimpleNamespace

    from benchmint.llm import bench
    from benchmint.llm.sweep import run_bench_sweep
    from benchmint.results.record import RunRecord

    calls = []

    def fake_run_bench(cfg, results_dir=None, store=True):
        calls.append(cfg.rate)
        return SimpleNamespace(result={"ttft_s": {"p99": 0.1}, "tpot_s": {"p99": 0.01}, "throughput": {},
                                       "requests": {"failed": 0, "interrupted": len(calls) == 2}})

    monkeypatch.setattr(bench, "run_bench", fake_run_bench)
    result = run_bench_sweep(2.0, {"backend": "openai-http", "url": "http://127.0.0.1:9"}, "ttft=5,tpot=1",
                             tmp_path / "b", max_trials=5, results=tmp_path / "store")
    sw = result["sweep"]
    assert calls == [2.0, 4.0] and sw["interrupted"] and sw["order"] == [2.0] and sw["peak_rate"] == 2.0
    assert RunRecord.read(tmp_path / "b" / "run.json").status == "partial"


@pytest.mark.slow
def test_ctrl_c_during_a_loadgen_sweep_keeps_the_finished_trials(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from benchmint.results.record import RunRecord

    out = tmp_path / "sw"
    p = subprocess.Popen(
        [sys.executable, "-m", "benchmint.cli.main", "llm", "sweep", "--backend", "sim", "--start-qps", "4",
         "--max-trials", "6", "--trial-duration", "1", "--min-query-count", "8", "--num-samples", "8",
         "--output-tokens", "4", "--sim", "ttft=0.01,tpot=0.002,slots=4", "--out", str(out),
         "--results", str(tmp_path / "store")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    # wait until the second trial is running: the first one's folder is complete and the second's exists
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(list(out.glob("trial-02-*"))) == 0:
        time.sleep(0.2)
    assert list(out.glob("trial-02-*")), "the sweep never reached its second trial"
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    # an impatient second Ctrl-C while the partial sweep is being written and stored loses nothing
    time.sleep(0.6)
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    # 130; or killed by the second SIGINT itself when it lands after everything was written, on the way out
    assert p.returncode in (130, -signal.SIGINT), err[-2000:]
    assert "interrupted: kept the 1 finished trial(s)" in err and "Traceback" not in err
    sw = json.loads((out / "result.json").read_text())["sweep"]
    assert sw["interrupted"] is True and sw["trials_used"] == 1 and sw["order"] == [4.0]
    rec = RunRecord.read(out / "run.json")
    assert rec.status == "partial" and rec.metrics["sweep"]["interrupted"] is True
    from benchmint.results.store import ResultsStore

    assert rec.id in {r.id for r in ResultsStore(tmp_path / "store").records()}


def test_trial_verdicts_from_result_blocks():
    lg = {"constraints": {"perf_constraints_met": False}, "invalid_reasons": ["Latency constraint failed: TTFT"],
          "ttft_s": {"p99": 3.0}, "tpot_s": {"p99": 0.1}, "validity": "INVALID"}
    ok, reason, m = loadgen_trial_verdict(lg)
    assert not ok and reason.startswith("Latency") and m["ttft_p99_s"] == 3.0
    lg2 = {"constraints": {"perf_constraints_met": True, "early_stopping_met": False}, "validity": "INVALID"}
    assert loadgen_trial_verdict(lg2)[0] is True  # short trials: early stopping says nothing about load
    assert loadgen_trial_verdict(lg2, require_valid=True)[0] is False
    res = {"ttft_s": {"p99": 0.5}, "tpot_s": {"p99": 0.3}, "requests": {"failed": 0}, "throughput": {}}
    ok, reason, _ = bench_trial_verdict(res, {"ttft_s": 1.0, "tpot_s": 0.2})  # metrics.parse_slo's keys
    assert not ok and "TPOT" in reason and "TTFT" not in reason
    # a client-bound trial is said to be one (its rate may be the client's limit): the sweep hid it
    ok, _, m = bench_trial_verdict({**res, "client_bound": {"client_bound": True}}, {})
    assert ok and m["client_bound"] is True
    from rich.console import Console

    import benchmint.cli.llm_mlperf as cmd

    con = Console(record=True, width=200)
    old, cmd.console = cmd.console, con
    try:
        cmd._show_trial(Trial(rate=2000.0, passed=True, metrics=m, reason=""))
    finally:
        cmd.console = old
    assert "client-bound: this rate may be the client's limit" in con.export_text()


@pytest.mark.slow
def test_a_loadgen_trial_with_failed_requests_does_not_pass(cli, tmp_path):
    # LoadGen takes a failed request as answered (empty) and met its latency limits on errors: a sweep whose
    # every request failed passed every trial and printed a peak (bench trials fail on one failed request)
    code, out, err = cli(
        "llm", "sweep", "--backend", "sim", "--start-qps", "4", "--max-trials", "2", "--trial-duration", "0.5",
        "--min-query-count", "8", "--num-samples", "8", "--output-tokens", "4", "--sim", "fail_every=2",
        "--out", str(tmp_path / "sw"), "--json", str(tmp_path / "sw.json"), "--results", str(tmp_path / "st"),
    )
    r = json.loads((tmp_path / "sw.json").read_text())["sweep"]
    assert r["curve"] and not any(p["passed"] for p in r["curve"]) and r["peak_rate"] is None
    assert all("requests failed" in p["reason"] for p in r["curve"])
    assert all((p["metrics"]["tpot_p99_s"] or 0) >= 0 for p in r["curve"])  # LoadGen's TPOT of empty answers
    assert "FAIL" in out and "requests failed)" in out  # each trial line says why it failed


def test_loadgen_server_sweep_through_the_cli(cli, tmp_path):
    # one slot, 20 ms prefill + 5 x 5 ms tokens: about 22 queries/s at most
    code, out, err = cli(
        "llm", "sweep", "--backend", "sim", "--start-qps", "4", "--max-trials", "4", "--trial-duration", "1",
        "--min-query-count", "8", "--num-samples", "8", "--output-tokens", "6", "--slo", "ttft=0.15,tpot=0.05",
        "--sim", "ttft=0.02,tpot=0.005,slots=1",
        "--out", str(tmp_path / "sw"), "--json", str(tmp_path / "sw.json"), "--results", str(tmp_path / "store"),
    )
    assert code == 0, err
    assert "latency vs load" in out
    r = json.loads((tmp_path / "sw.json").read_text())["sweep"]
    assert r["trials_used"] <= 4
    assert json.loads((tmp_path / "sw.json").read_text())["config"]["backend"]["options"]["slots"] == 1
    rates = [p["rate"] for p in r["curve"]]
    assert rates == sorted(rates)
    assert all((tmp_path / "sw" / p["run_dir"] / "mlperf_log_detail.txt").is_file() for p in r["curve"])
    for p in r["curve"]:
        assert p["metrics"]["ttft_p99_s"] is not None
        # the --slo limits reached LoadGen: a trial passes exactly when its p99s are within them
        within = p["metrics"]["ttft_p99_s"] <= 0.15 and p["metrics"]["tpot_p99_s"] <= 0.05
        assert p["passed"] == within
        if not p["passed"]:
            assert "TTFT" in p["reason"] or "TPOT" in p["reason"]


def test_sim_backend_slots_limit_capacity():
    # the simulated engine's capacity is what makes a sweep meaningful without a model
    import asyncio

    from benchmint.llm.loadgen.sim import SimulatedBackend
    from benchmint.llm.types import GenRequest

    async def main():
        b = SimulatedBackend(ttft_s=0.02, tpot_s=0.0, slots=1)
        await b.start()
        recs = await asyncio.gather(*(b.generate(GenRequest(id=i, prompt="x", max_tokens=1)) for i in range(3)))
        return sorted(r.first_token_ns - r.sent_ns for r in recs)

    waits = asyncio.run(main())
    assert waits[2] >= 3 * 0.02 * 1e9  # the third request waited for two others


@pytest.mark.slow
def test_bench_rate_sweep_against_the_built_in_server(tmp_path):
    from benchmint.llm.engine import AsyncEngine
    from benchmint.llm.server import ServerThread
    from benchmint.llm.sweep import run_bench_sweep

    engine = AsyncEngine.create("tiny", max_batch_size=8)
    try:
        with ServerThread(engine) as srv:
            with pytest.raises(UserError, match="--slo"):
                run_bench_sweep(2.0, {"backend": "openai-http", "url": srv.url}, None, tmp_path / "x")
            result = run_bench_sweep(
                2.0, {"backend": "openai-http", "url": srv.url, "model": "tiny", "output_tokens": "8"},
                slo="ttft=5,tpot=1", out=tmp_path / "b", max_trials=2, trial_duration_s=1.0,
                results=tmp_path / "store",
            )
    finally:
        engine.close()
    sw = result["sweep"]
    assert sw["trials_used"] == 2 and sw["order"] == [2.0, 4.0]
    assert all(p["metrics"]["ttft_p99_s"] is not None for p in sw["curve"])
    assert (tmp_path / "b" / "result.json").is_file()
    # the two trials and the sweep itself are runs in the store; the sweep's carries the curve and the peak
    from benchmint.results.store import ResultsStore

    recs = ResultsStore(tmp_path / "store").records()
    sweeps = [r for r in recs if r.config.get("benchmark") == "llm bench sweep"]
    assert len(recs) == 3 and len(sweeps) == 1 and sweeps[0].id == result["run_id"]
    assert sweeps[0].metrics["sweep"]["order"] == [2.0, 4.0] and (tmp_path / "b" / "run.json").is_file()
    # the report labels the search by its model and backend, as it labels the trials
    from benchmint.report.data import label

    trial = next(r for r in recs if r is not sweeps[0])
    assert label(sweeps[0]).startswith("tiny / openai-http (") and label(trial).split(" (")[0] == "tiny / openai-http"


@pytest.mark.parametrize("target", ["loadgen", "bench"])
def test_no_store_writes_the_sweep_and_its_trials_in_out_only(cli, tmp_path, target):
    code, out, err = cli(
        "llm", "sweep", "--target", target, "--backend", "sim", "--start-qps", "20", "--max-trials", "1",
        "--trial-duration", "0.5", "--min-query-count", "4", "--num-samples", "8", "--output-tokens", "4",
        "--slo", "ttft=5,tpot=1", "--no-store", "--out", str(tmp_path / "sw"), "--results", str(tmp_path / "st"),
    )
    assert code == 0, err + out
    r = json.loads((tmp_path / "sw" / "result.json").read_text())
    assert (tmp_path / "sw" / "run.json").is_file() and r["sweep"]["trials_used"] == 1
    from benchmint.results.store import ResultsStore

    assert ResultsStore(tmp_path / "st").records() == []  # neither the sweep nor a trial was stored
    if target == "bench":  # the trial's own run is still written in its folder
        assert (tmp_path / "sw" / r["sweep"]["curve"][0]["run_dir"] / "run.json").is_file()

"""Real MLPerf LoadGen runs, seconds long: the tiny model in-process and over HTTP, and the simulated engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmint.core.errors import UserError
from benchmint.llm.loadgen.api import MlperfConfig, run_mlperf, validity_line
from benchmint.llm.loadgen.settings import RunSettings
from benchmint.llm.loadgen.sut import Sample
from benchmint.results.record import RunRecord


def _samples(n: int = 8, max_tokens: int = 6) -> list[Sample]:
    return [Sample(prompt=f"Say something about {i}.", max_tokens=max_tokens, reference="w0 w1 w2") for i in range(n)]


def _sim(**opts) -> dict:
    return {"kind": "sim", "options": {"ttft_s": 0.01, "tpot_s": 0.002, **opts}}


def _short(**kw) -> RunSettings:
    base = dict(scenario="server", target_qps=20, min_duration_s=0.5, min_query_count=16, performance_sample_count=8)
    base.update(kw)
    return RunSettings(**base)


def test_first_token_is_reported_before_completion(tmp_path):
    cfg = MlperfConfig(settings=_short(), backend=_sim(ttft_s=0.05, tpot_s=0.01), samples=_samples(8, 5),
                       out_dir=tmp_path, measure_energy=False)
    res, _ = run_mlperf(cfg)
    lg = res["loadgen"]
    # LoadGen measures TTFT at FirstTokenComplete: at least the engine's 50 ms, and well before the end
    assert lg["ttft_s"]["p50"] >= 0.05
    assert lg["ttft_s"]["p50"] < lg["latency_s"]["p50"]
    assert lg["tpot_s"]["p50"] >= 0.01  # from n_tokens: (e2e - ttft) / (5 - 1) with 10 ms per token
    assert lg["limits"]["use_token_latencies"] is True
    # LoadGen and the client count the same queries
    assert lg["query_count"] == res["client"]["requests"]["completed"] == res["requests"]["completed"]


def test_result_blocks_run_record_and_kept_logs(tmp_path):
    cfg = MlperfConfig(settings=_short(), backend=_sim(), samples=_samples(), out_dir=tmp_path,
                       price={"usd_per_hour": 3.6, "name": None, "source": "--price flag"})
    res, rec = run_mlperf(cfg)
    lg = res["loadgen"]
    assert lg["validity"] == "INVALID"  # 16 queries: early stopping at p99 wants 459
    assert any("Early stopping" in r for r in lg["invalid_reasons"])
    for k in ("samples_per_s", "tokens_per_s"):
        assert lg[k] > 0
    for k in ("ttft_s", "tpot_s"):
        assert {"p50", "p90", "p99"} <= set(lg[k])
    assert lg["effective"]["target_qps"] == 20 and lg["early_stopping"]["met"] is False
    logs = Path(lg["log_dir"])
    assert (logs / "mlperf_log_detail.txt").is_file() and (logs / "mlperf_log_summary.txt").is_file()
    for k in ("ttft_s", "tpot_s", "itl_s", "e2e_s", "throughput"):
        assert k in res["client"]
    assert res["cost"]["usd_per_million_output_tokens"] == pytest.approx(1e3 / lg["tokens_per_s"])
    assert "gpu" in res["energy"] and "cpu" in res["energy"]
    assert not res["plan"]["can_be_valid"]  # the plan saw it coming
    on_disk = RunRecord.read(tmp_path / "run.json")
    assert on_disk.kind == "mlperf" and on_disk.status == "invalid" and rec.id == on_disk.id
    assert on_disk.metrics["loadgen"]["validity"] == "INVALID"
    # named like imported official results, so both can be compared in one table
    assert on_disk.metrics["throughput"]["output_tokens_per_s"] == lg["tokens_per_s"]
    assert on_disk.metrics["result"]["unit"] == "Tokens/s" and on_disk.config["scenario"] == "Server"
    assert on_disk.workload["mlperf_model"] == "llama2-70b"
    assert json.loads((tmp_path / "result.json").read_text())["schema_version"]
    assert validity_line(lg).startswith("LoadGen result: INVALID - Early stopping")


def test_warmup_requests_stay_out_of_loadgen_and_records(tmp_path):
    cfg = MlperfConfig(settings=_short(), backend=_sim(), samples=_samples(), out_dir=tmp_path,
                       measure_energy=False, warmup=5)
    res, _ = run_mlperf(cfg)
    worker = json.loads((tmp_path / "performance" / "worker.json").read_text())
    assert worker["warmup_requests"] == 5
    assert res["loadgen"]["query_count"] == res["client"]["requests"]["completed"] == len(_records(tmp_path))
    assert all(r.id >= 0 for r in _records(tmp_path))


def test_valid_run_with_a_user_conf(tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_text("*.Server.target_latency_percentile = 50\n")
    cfg = MlperfConfig(settings=_short(user_conf=str(conf)), backend=_sim(), samples=_samples(),
                       out_dir=tmp_path / "run", measure_energy=False)
    res, rec = run_mlperf(cfg)
    assert res["loadgen"]["effective"]["target_latency_percentile"] == 0.5
    assert res["loadgen"]["validity"] == "VALID", res["loadgen"]["invalid_reasons"]
    assert res["loadgen"]["invalid_reasons"] == [] and rec.status == "ok"


def test_offline_and_accuracy_in_one_submission_run(tmp_path):
    cfg = MlperfConfig(settings=_short(scenario="offline", target_qps=1000, min_query_count=8),
                       backend=_sim(), samples=_samples(), out_dir=tmp_path, mode="submission",
                       measure_energy=False)
    res, _ = run_mlperf(cfg)
    assert res["loadgen"]["scenario"] == "Offline"
    assert res["loadgen"]["samples_per_s"] > 0 and res["loadgen"]["tokens_per_s"] > 0
    a = res["accuracy"]
    assert a["samples"] == 8 and a["log"]["unique_samples"] == 8
    assert a["rouge"]["rouge1"] == pytest.approx(100 * 2 * 3 / 9, abs=1e-3)  # sim says w0..w5, reference w0 w1 w2
    assert a["tokens_per_sample"] == 6
    assert a["targets"]["model_key"] == "llama2-70b" and not a["targets"]["levels"]["99%"]["passed"]
    assert (tmp_path / "accuracy" / "mlperf_log_accuracy.json").is_file()


def test_backend_failures_are_counted_and_loadgen_still_finishes(tmp_path):
    cfg = MlperfConfig(settings=_short(), backend=_sim(fail_every=4), samples=_samples(), out_dir=tmp_path,
                       measure_energy=False)
    res, rec = run_mlperf(cfg)
    n = res["loadgen"]["query_count"]
    assert n == res["requests"]["completed"] + res["requests"]["failed"]  # every query was answered to LoadGen
    assert res["requests"]["failed"] == n // 4 and res["requests"]["errors"] == {"other": n // 4}
    assert rec.status == "invalid"


def test_worker_failure_is_one_user_error_naming_the_log(tmp_path):
    cfg = MlperfConfig(settings=_short(), backend={"factory": "no_such_module:make"}, samples=_samples(),
                       out_dir=tmp_path, measure_energy=False)
    with pytest.raises(UserError, match="worker.log"):
        run_mlperf(cfg)


@pytest.mark.slow
def test_tiny_model_in_process_under_loadgen(tmp_path):
    from benchmint.llm.workload import load_workload

    wl = load_workload("sample", num_prompts=8, output_tokens=8)
    samples = [Sample(prompt=r.prompt, max_tokens=r.max_tokens, reference=r.reference) for r in wl.requests]
    cfg = MlperfConfig(settings=_short(target_qps=4, min_duration_s=1, min_query_count=8), mode="performance",
                       backend={"kind": "transformers", "options": {"model": "tiny", "max_batch_size": 8}},
                       samples=samples, out_dir=tmp_path, measure_energy=False)
    res, rec = run_mlperf(cfg)
    lg = res["loadgen"]
    assert lg["validity"] == "INVALID" and lg["query_count"] == 8
    assert lg["ttft_s"]["p99"] > 0 and lg["tpot_s"]["p99"] > 0 and lg["tokens_per_s"] > 0
    assert res["client"]["requests"]["completed"] == 8
    assert all(r.output_tokens_source == "engine" or r.output_tokens == 8 for r in _records(tmp_path))
    assert rec.kind == "mlperf"


@pytest.mark.slow
def test_cli_over_http_against_the_built_in_server(cli, tmp_path):
    from benchmint.llm.engine import AsyncEngine
    from benchmint.llm.server import ServerThread

    engine = AsyncEngine.create("tiny", max_batch_size=8)
    try:
        with ServerThread(engine) as srv:
            code, out, err = cli(
                "llm", "mlperf", "--backend", "openai-http", "--url", srv.url,  # no --model: the one it serves
                "--scenario", "server", "--target-qps", "4", "--min-duration", "1", "--min-query-count", "8",
                "--num-samples", "8", "--output-tokens", "8", "--out", str(tmp_path / "m"),
                "--json", str(tmp_path / "r.json"), "--results", str(tmp_path / "store"), "--price", "2",
                "--mode", "submission",
            )
    finally:
        engine.close()
    assert code == 0, err
    assert "LoadGen result: INVALID" in out and "Early stopping" in out
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["loadgen"]["query_count"] == 8 and r["client"]["requests"]["failed"] == 0
    assert r["cost"]["price"]["usd_per_hour"] == 2.0
    assert RunRecord.read(tmp_path / "m" / "run.json").workload["model_name"] == "tiny"  # it stored none
    # accuracy of the tiny model's answers against the shipped sample's references, from LoadGen's accuracy log
    a = r["accuracy"]
    assert a["samples"] == 8 and a["tokens_per_sample"] == 8 and 0 <= a["rouge"]["rouge1"] <= 100
    assert a["targets"]["model_key"] == "llama2-70b"
    assert "accuracy: ROUGE-1" in out and "MLPerf target 99%: NOT met" in out
    from benchmint.results.store import ResultsStore

    assert [x.kind for x in ResultsStore(tmp_path / "store").records()] == ["mlperf"]


def test_cli_plan_and_bad_flags(cli):
    code, out, _ = cli("llm", "mlperf", "--backend", "sim", "--target-qps", "10", "--min-duration", "60",
                       "--min-query-count", "1", "--plan")
    assert code == 0 and "plan: can be VALID" in out
    code, out, _ = cli("llm", "mlperf", "--backend", "sim", "--target-qps", "10", "--min-duration", "5", "--plan")
    assert code == 0 and "can NOT be VALID" in out and "459" in out
    code, _, err = cli("llm", "mlperf", "--backend", "sim", "--scenario", "multistream", "--plan")
    assert code == 2 and "--scenario" in err
    code, _, err = cli("llm", "mlperf", "--backend", "sim", "--mode", "fast")
    assert code == 2 and "--mode" in err


def test_single_stream_one_query_at_a_time(tmp_path):
    rs = RunSettings(scenario="single-stream", model_key="llama3_1-8b-edge", min_duration_s=0.3, min_query_count=64,
                     performance_sample_count=8, single_stream_expected_latency_s=0.02)
    cfg = MlperfConfig(settings=rs, backend=_sim(ttft_s=0.003, tpot_s=0.001), samples=_samples(8, 4),
                       out_dir=tmp_path, measure_energy=False)
    res, _ = run_mlperf(cfg)
    lg = res["loadgen"]
    assert lg["scenario"] == "SingleStream" and lg["query_count"] >= 64
    assert lg["validity"] == "VALID", lg["invalid_reasons"]
    recs = sorted((r.sent_ns, r.end_ns) for r in _records(tmp_path))
    assert all(a_end <= b_sent for (_, a_end), (b_sent, _) in zip(recs, recs[1:], strict=False))  # never overlapping


def _records(tmp_path):
    from benchmint.llm.loadgen.runner import read_records

    return read_records(tmp_path / "performance" / "records.jsonl")[0]


@pytest.mark.slow
def test_demo_step_prints_the_validity_line(tmp_path):
    from rich.console import Console

    from benchmint.demo import STEPS, DemoContext
    from benchmint.demo.mlperf import mlperf_demo_step

    assert any("LoadGen" in title for title, _ in STEPS)
    console = Console(record=True, width=200)
    ctx = DemoContext(out=tmp_path, console=console, results_dir=tmp_path / "store", quick=True)
    mlperf_demo_step(ctx)
    text = console.export_text()
    assert "LoadGen result: INVALID - Early stopping" in text and "plan: can NOT be VALID" in text
    assert ctx.records[0].kind == "mlperf" and (tmp_path / "mlperf" / "performance" / "mlperf_log_detail.txt").is_file()


def test_cli_unreachable_server_and_missing_references(cli):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = cli("llm", "mlperf", "--url", f"http://127.0.0.1:{port}/v1", "--model", "m",
                       "--dataset", "synthetic", "--num-samples", "4", "--input-tokens", "8")
    assert code == 2 and "cannot reach the server" in err
    code, _, err = cli("llm", "mlperf", "--backend", "sim", "--dataset", "synthetic", "--num-samples", "4",
                       "--input-tokens", "8", "--mode", "accuracy")
    assert code == 2 and "references" in err


def test_cli_all_requests_failing_exits_2(cli, tmp_path):
    code, _, err = cli("llm", "mlperf", "--backend", "sim", "--sim", "fail_every=1", "--num-samples", "8",
                       "--target-qps", "20", "--min-duration", "0.3", "--min-query-count", "8",
                       "--out", str(tmp_path / "f"), "--results", str(tmp_path / "store"))
    assert code == 2 and "all 8 requests failed (other: 8)" in err
    assert RunRecord.read(tmp_path / "f" / "run.json").status == "failed"


def test_a_valid_run_with_failed_requests_says_loadgen_took_them_as_answered(cli, tmp_path):
    # LoadGen judges timing alone: a failed request is completed empty, and the run printed VALID and nothing else
    code, out, _ = cli("llm", "mlperf", "--backend", "sim", "--sim", "fail_every=4", "--num-samples", "8",
                       "--target-qps", "20", "--min-duration", "0.3", "--min-query-count", "8",
                       "--out", str(tmp_path / "f"), "--no-store")
    flat = " ".join(out.split())
    assert code == 0
    assert "2 of 8 requests failed (other: 2): LoadGen took them as answered (empty)" in flat


def test_ctrl_c_during_a_loadgen_test_writes_the_partial_result_and_leaves_no_worker(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    out, store = tmp_path / "run", tmp_path / "store"
    p = subprocess.Popen(
        [sys.executable, "-m", "benchmint.cli.main", "llm", "mlperf", "--backend", "sim", "--num-samples", "8",
         "--target-qps", "20", "--min-duration", "60", "--min-query-count", "8", "--out", str(out),
         "--results", str(store)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    records = out / "performance" / "records.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not records.is_file() or records.stat().st_size < 2000):
        time.sleep(0.2)
    assert records.is_file(), "the LoadGen test never started"
    kids = psutil.Process(p.pid).children(recursive=True)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-2000:]
    assert "interrupted: wrote the partial result" in err and "Traceback" not in err
    result = json.loads((out / "result.json").read_text())
    part = result["interrupted_performance"]
    assert result["status"] == "partial" and part["requests"]["completed"] > 0
    assert part["client"]["requests"]["interrupted"] is True and part["client"]["throughput"]["output_tokens_per_s"] > 0
    assert RunRecord.read(out / "run.json").status == "partial"
    assert not [k for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]


def test_ctrl_c_before_the_test_began_reads_no_earlier_runs_records(tmp_path, monkeypatch):
    # an earlier run left its records in the same folder; Ctrl-C while the worker still loads its model must
    # not report them as this run's
    import subprocess

    from benchmint.llm.loadgen import runner

    out = tmp_path / "performance"
    out.mkdir()
    (out / "records.jsonl").write_text('{"id": 1, "qsl_index": 0}\n')
    (out / "worker.json").write_text('{"test_start_ns": 1}')

    class Loading:
        pid = 0

        def __init__(self, *a, **k):
            pass

        def wait(self, timeout=None):
            raise KeyboardInterrupt

        def poll(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Loading)
    monkeypatch.setattr(runner.os, "killpg", lambda *a: None)
    samples = runner.write_samples(_samples(2), tmp_path / "s.jsonl")
    with pytest.raises(KeyboardInterrupt) as e:
        runner.run_test(out, samples, _short(), _sim())
    assert not isinstance(e.value, runner.TestInterrupted)
    assert not (out / "records.jsonl").exists() and not (out / "worker.json").exists()


def test_cli_plan_describes_the_accuracy_test(cli, tmp_path):
    # `--mode accuracy --num-samples 20 --plan` printed the performance plan (24576 queries, 600 s)
    code, out, _ = cli("llm", "mlperf", "--backend", "sim", "--scenario", "offline", "--mode", "accuracy",
                       "--num-samples", "20", "--plan", "--json", str(tmp_path / "plan.json"))
    assert code == 0 and "accuracy test" in out and "20 samples" in out
    assert "24576" not in out and "600 s" not in out and "VALID" not in out
    p = json.loads((tmp_path / "plan.json").read_text())
    assert p["plan"]["mode"] == "accuracy" and p["plan"]["expected_queries"] == 20
    assert p["settings"]["mode"] == "accuracy"
    code, out, _ = cli("llm", "mlperf", "--backend", "sim", "--scenario", "server", "--mode", "accuracy",
                       "--num-samples", "7", "--target-qps", "2", "--plan")
    assert code == 0 and "7 queries, one per sample" in out and "459" not in out
    # submission: the performance test's plan, then the accuracy test
    code, out, _ = cli("llm", "mlperf", "--backend", "sim", "--scenario", "offline", "--mode", "submission",
                       "--num-samples", "20", "--plan")
    assert code == 0 and "performance test: one query of about 24576 samples" in out
    assert "then an accuracy test of 20 samples" in out


def test_accuracy_run_records_the_accuracy_plan(tmp_path):
    cfg = MlperfConfig(settings=_short(scenario="offline", target_qps=100), backend=_sim(), samples=_samples(5, 3),
                       out_dir=tmp_path, mode="accuracy", measure_energy=False)
    res, _ = run_mlperf(cfg)
    assert res["plan"]["mode"] == "accuracy" and res["plan"]["expected_queries"] == 5
    assert res["accuracy"]["samples"] == 5

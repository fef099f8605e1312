"""`benchmint llm calibrate` and the `client_bound` verdict of `llm bench` (issue 14, point 4)."""

from __future__ import annotations

import json

from strict_llm_server import StrictLLMServer

from benchmint.llm.client_bound import NEAR_CEILING, client_bound_line, client_bound_verdict, load_calibration


def test_calibrate_stores_a_ceiling_and_the_client_latency(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHMINT_CACHE", str(tmp_path / "cache"))
    code, out, err = cli("llm", "calibrate", "--start-rate", "40", "--max-rate", "80", "--duration", "0.5",
                         "--refine", "0", "--latency-rate", "40", "--json", str(tmp_path / "cal.json"))
    assert code == 0, err
    r = json.loads((tmp_path / "cal.json").read_text())
    assert r["schema_version"] and r["kind"] == "llm-calibrate"
    trials = r["trials"]
    assert trials[0]["purpose"] == "client added latency" and trials[1]["rate"] == 40
    # every trial's verdict follows the stated criteria (whatever this machine's load makes of them)
    for t in trials[1:]:
        assert t["passed"] == (t["failed"] == 0 and t["achieved_fraction"] >= 0.99 and t["send_lag_p99_s"] <= 0.001)
    passing = [t["rate"] for t in trials[1:] if t["passed"]]
    assert r["ceiling_rate_per_s"] == (max(passing) if passing else None)
    assert r["client_added_latency"]["ttft_from_send_s"]["p50"] > 0
    assert "ceiling:" in out and "client added latency" in out
    assert load_calibration()["ceiling_rate_per_s"] == r["ceiling_rate_per_s"]


def _result(rate: float | None, lag99: float, achieved: float = 10.0) -> dict:
    return {"schedule": {"arrival": "poisson" if rate else "closed-loop", "rate_per_s": rate},
            "send_lag_s": {"p99": lag99}, "throughput": {"requests_per_s": achieved}}


def test_the_verdict_names_its_reason():
    cal = {"ceiling_rate_per_s": 1000.0}
    v = client_bound_verdict(_result(NEAR_CEILING * 1000 + 1, 0.0002), cal)
    assert v["client_bound"] is True and "of this client's calibrated ceiling 1000" in v["reasons"][-1]
    v = client_bound_verdict(_result(100, 0.0002), cal)
    assert v["client_bound"] is False and "10% of the calibrated ceiling" in v["reasons"][-1]
    v = client_bound_verdict(_result(100, 0.005), cal)
    assert v["client_bound"] is True and "send lag p99 5.00 ms > 1 ms" in v["reasons"][0]
    v = client_bound_verdict(_result(None, 0.005, achieved=900), cal)  # closed loop: achieved rate, no send lag
    assert v["client_bound"] is True and v["reasons"][0].startswith("achieved 900")
    v = client_bound_verdict(_result(100, 0.0002), None)
    assert v["client_bound"] is False and "run `benchmint llm calibrate`" in v["reasons"][-1]
    # a closed loop with nothing to judge it by is unknown, not "no" (it read "no (the stored calibration found
    # no passing rate)")
    for c in (None, {"ceiling_rate_per_s": None}):
        v = client_bound_verdict(_result(None, 0.005), c)
        assert v["client_bound"] is None and client_bound_line(v).startswith("client-bound: unknown")
    # requests that waited in the client for a connection: the client held the load back
    r = {**_result(None, 0.0), "measurement": {"requests_waited_for_connection": 808}}
    v = client_bound_verdict(r, None)
    assert v["client_bound"] is True and v["reasons"][0].startswith("808 requests waited in the client")


def test_bench_results_carry_the_verdict(cli, tmp_path, monkeypatch):
    import socket

    monkeypatch.setenv("BENCHMINT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "client-calibration.json").write_text(json.dumps(
        {"schema_version": "1.0", "host": {"hostname": socket.gethostname()}, "ceiling_rate_per_s": 20.0}))
    with StrictLLMServer(empty_every=0) as s:
        code, out, err = cli("llm", "bench", "--url", s.url, "-n", "6", "--rate", "18", "--allow-eos", "--no-usage",
                             "--no-server-metrics", "--out", str(tmp_path / "run"), "--results", str(tmp_path / "st"))
    assert code == 0, err
    r = json.loads((tmp_path / "run" / "result.json").read_text())
    cb = r["client_bound"]
    assert cb["client_bound"] is True and cb["ceiling_rate_per_s"] == 20.0
    assert any("90% of this client's calibrated ceiling" in x for x in cb["reasons"])
    assert "client-bound: yes" in out
    # the verdict is in the run record and the report's comparison table
    from benchmint.report import build_report
    from benchmint.results.record import RunRecord

    rec = RunRecord.read(tmp_path / "run" / "run.json")
    assert rec.metrics["client_bound"]["client_bound"] is True
    html = build_report([rec], tmp_path / "report.html").read_text()
    assert "client-bound (llm calibrate)" in html and "calibrated ceiling" in html

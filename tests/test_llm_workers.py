"""`llm bench --workers N` (issue 14): N processes share one seeded schedule, round-robin; their records merge into
one result with a `workers` block; faults are counted per worker and merged; Ctrl-C keeps the merged partial
result; bad flags are one line and exit 2."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
from fault_llm_server import DEFAULT_MIX, FaultLLMServer
from test_llm_faults import _bench, _expected, _wait_until

from benchmint.core.errors import UserError
from benchmint.llm.schedule import make_schedule
from benchmint.llm.types import GenRequest
from benchmint.llm.workers import shard
from benchmint.results.record import RunRecord


def _reqs(n: int) -> list[GenRequest]:
    return [GenRequest(id=i, prompt="p", max_tokens=1) for i in range(n)]


def test_the_shards_together_are_the_one_process_schedule():
    sched = make_schedule("server", num_requests=11, rate=100.0, seed=3)
    reqs = _reqs(11)
    specs = shard(None, None, sched, reqs, _reqs(4), reqs, 3)
    assert [len(s.measured) for s in specs] == [4, 4, 3] and [len(s.warm) for s in specs] == [2, 1, 1]
    for s in specs:  # worker k: requests k, k+3, ... at their absolute scheduled times
        ids = [r.id for r in s.measured]
        assert ids == list(range(s.index, 11, 3))
        assert np.array_equal(s.sched.offsets_s, sched.offsets_s[ids]) and s.sched.count == len(ids)
    union = np.sort(np.concatenate([s.sched.offsets_s for s in specs]))
    assert np.array_equal(union, sched.offsets_s)
    closed = shard(None, None, make_schedule("concurrency", num_requests=9, concurrency=5), _reqs(9), [], [], 2)
    assert [s.sched.concurrency for s in closed] == [3, 2] and sum(len(s.measured) for s in closed) == 9
    with pytest.raises(UserError, match="at most 1 workers"):
        shard(None, None, make_schedule("single-stream", num_requests=4), _reqs(4), [], [], 2)


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_workers_zero_is_one_line_and_exit_2(cli, tmp_path):
    code, _, err = cli("llm", "bench", "--url", "http://127.0.0.1:9/v1", "--workers", "0", "-n", "2",
                       "--results", str(tmp_path / "s"))
    assert code == 2
    assert "--workers 0" in _one_line(err) and "at least 1" in err


def test_ray_without_the_extra_names_the_install(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as on a machine without the extra
    code, _, err = cli("llm", "bench", "--url", "http://127.0.0.1:9/v1", "--ray", "-n", "2",
                       "--results", str(tmp_path / "s"))
    assert code == 2
    assert "pip install 'benchmint[ray]'" in _one_line(err)


def test_an_unreachable_ray_address_is_one_line_and_exit_2(cli, tmp_path):
    t0 = time.monotonic()
    code, _, err = cli("llm", "bench", "--url", "http://127.0.0.1:9/v1", "--ray", "127.0.0.1:1", "-n", "2",
                       "--results", str(tmp_path / "s"))
    assert code == 2
    line = _one_line(err)
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in line and "--ray" in line
    assert time.monotonic() - t0 < 60  # not Ray's own minutes of retries


def test_faults_are_counted_per_worker_and_merged(cli, tmp_path):
    n = 2 * len(DEFAULT_MIX)
    out = tmp_path / "run"
    with FaultLLMServer() as s:
        code, stdout, err = cli("llm", "bench", "--url", s.url, "--model", "m", "-n", str(n), "--scenario", "server",
                                "--rate", "200", "--warmup", "2", "--workers", "2", "--out", str(out),
                                "--results", str(tmp_path / "store"), "--no-server-metrics")
        received = s.received
    assert code == 0, err
    r = json.loads((out / "result.json").read_text())
    req = r["requests"]
    completed, errors, flagged = _expected(n)  # the server picks a fault by arrival: the totals are the same
    assert received == n + 2
    assert (req["scheduled"], req["sent"], req["completed"], req["failed"]) == (n, n, completed, n - completed)
    assert req["errors"] == errors and req["warmup_excluded"] == 2 and r["token_counts"]["flagged"] == flagged
    ws = r["workers"]
    assert [w["index"] for w in ws] == [0, 1] and len({w["pid"] for w in ws} | {os.getpid()}) == 3
    assert [w["requests_scheduled"] for w in ws] == [n // 2, n - n // 2]
    assert sum(w["completed"] for w in ws) == completed and sum(w["failed"] for w in ws) == n - completed
    merged: dict[str, int] = {}
    for w in ws:
        assert w["status"] == "ok" and w["send_lag_s"]["p50"] is not None
        assert w["clock"]["same_host_as_driver"] and w["clock"]["applied_offset_s"] == 0
        for k, v in w["errors"].items():
            merged[k] = merged.get(k, 0) + v
    assert merged == errors
    assert r["measurement"]["workers"]["count"] == 2 and "CLOCK_MONOTONIC" in ws[0]["clock"]["how"]
    t = pq.read_table(out / "requests.parquet").to_pandas()
    assert sorted(t[~t.warmup].id) == list(range(n))
    assert "worker 1 (" in stdout and "send lag p50" in stdout


@pytest.mark.slow
def test_ctrl_c_keeps_the_merged_partial_result(tmp_path):
    out = tmp_path / "run"
    with FaultLLMServer(["good", "http_500"], delay_s=0.2) as s:
        p = _bench(s.url, out, tmp_path / "store", "--no-server-metrics", "--scenario", "server", "--rate", "40",
                   "-n", "400", "--workers", "2")
        # six answers, three of them 500s, before Ctrl-C (waiting on arrivals, a late worker could send in a
        # burst and be stopped before any answer)
        _wait_until(lambda: s.answered >= 6, p, 240, 0.05)
        children = [c.pid for c in psutil.Process(p.pid).children()]
        p.send_signal(signal.SIGINT)
        _, stderr = p.communicate(timeout=120)
        received = s.received
    assert p.returncode == 130, stderr
    r = json.loads((out / "result.json").read_text())
    req = r["requests"]
    assert req["interrupted"] is True and req["scheduled"] == 400
    assert req["completed"] + req["failed"] + req["cancelled"] == 400 and req["cancelled"] >= 1
    assert req["errors"].get("http_5xx", 0) >= 1  # what was measured before Ctrl-C is kept, faults too
    # requests on their way when Ctrl-C came are sent and not received: at 40/s, a few; never the unsent ones
    assert received <= req["sent"] <= received + 20
    ws = r["workers"]
    assert [w["status"] for w in ws] == ["interrupted", "interrupted"]
    assert sum(w["completed"] + w["failed"] + w["cancelled"] for w in ws) == 400
    assert RunRecord.read(out / "run.json").status == "partial"
    # no process left behind: the workers (and multiprocessing's helper) end with the run, within seconds
    procs = []
    for c in children:
        try:
            procs.append(psutil.Process(c))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    assert not [a.cmdline() for a in alive if a.status() != psutil.STATUS_ZOMBIE]


def test_ray_may_be_given_without_a_value():
    from benchmint.cli.optional_value import fill_bare

    assert fill_bare(["--ray"]) == ["--ray=local"]
    assert fill_bare(["--ray", "-n", "3"]) == ["--ray=local", "-n", "3"]
    assert fill_bare(["--ray", "auto", "-n", "3"]) == ["--ray", "auto", "-n", "3"]
    assert fill_bare(["--ray=10.0.0.1:6379"]) == ["--ray=10.0.0.1:6379"]


def test_sweep_workers_need_the_bench_target(cli, tmp_path):
    code, _, err = cli("llm", "sweep", "--ray", "--out", str(tmp_path / "sw"), "--results", str(tmp_path / "s"))
    assert code == 2 and "--target bench" in _one_line(err)


@pytest.mark.slow
def test_a_killed_worker_process_is_named_and_the_run_goes_on(tmp_path):
    out = tmp_path / "run"
    n = 120
    with FaultLLMServer(["good"], delay_s=0.05) as s:
        p = _bench(s.url, out, tmp_path / "store", "--no-server-metrics", "--scenario", "constant", "--rate", "15",
                   "-n", str(n), "--workers", "2")
        _wait_until(lambda: s.answered >= 12, p, 240, 0.05)
        time.sleep(0.6)  # the workers hand their records on every 0.25 s: the victim's first ones have reached us
        workers = [c for c in psutil.Process(p.pid).children() if "spawn_main" in " ".join(c.cmdline())]
        assert len(workers) == 2
        victim = max(workers, key=lambda c: c.pid)
        victim.kill()
        stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr
    r = json.loads((out / "result.json").read_text())
    req = r["requests"]
    lost = req["errors"].get("worker_lost", 0)
    assert req["scheduled"] == n and req["completed"] + lost == n and lost >= 1
    dead = next(w for w in r["workers"] if w["pid"] == victim.pid)
    alive = next(w for w in r["workers"] if w["pid"] != victim.pid)
    assert dead["status"] == "lost" and "killed by signal 9" in dead["lost_reason"]
    assert dead["completed"] >= 2 and dead["completed"] + lost == n // 2  # what it measured is kept
    assert alive["status"] == "ok" and alive["completed"] == n // 2
    assert f"pid {victim.pid}" in req["error_examples"]["worker_lost"] and "LOST" in stdout
    assert RunRecord.read(out / "run.json").status == "partial"


@pytest.mark.slow
def test_ctrl_c_while_the_workers_start_writes_a_partial_result(tmp_path):
    out = tmp_path / "run"
    with FaultLLMServer(["good"]) as s:
        p = _bench(s.url, out, tmp_path / "store", "--no-server-metrics", "--scenario", "constant", "--rate", "0.05",
                   "-n", "5", "--workers", "2")
        _wait_until(lambda: s.fault.probes >= 1, p, 120)
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        _, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr
    r = json.loads((out / "result.json").read_text())
    req = r["requests"]
    assert req["interrupted"] and req["scheduled"] == 5 and req["completed"] + req["failed"] + req["cancelled"] == 5
    assert req["sent"] <= 1 and [w["status"] for w in r["workers"]] == ["interrupted", "interrupted"]
    assert sum(w["cancelled"] for w in r["workers"]) == req["cancelled"] >= 4


@pytest.mark.parametrize("args, says", [
    (["--backend", "transformers", "--model", "tiny"], "--backend transformers runs in this process"),
    (["--sessions", "synthetic", "--api", "chat"], "--sessions and --scenario concurrency-ramp run in one process"),
], ids=["in-process-engine", "sessions"])
def test_what_workers_cannot_run_is_one_line_and_exit_2(cli, tmp_path, args, says):
    code, _, err = cli("llm", "bench", "--url", "http://127.0.0.1:9/v1", "--workers", "2", *args,
                       "--results", str(tmp_path / "s"))
    assert code == 2 and says in _one_line(err)


def test_an_in_process_backend_is_refused_with_workers(cli, tmp_path):
    # each worker would build its own engine: the run would measure N engines as if they were one
    code, _, err = cli("llm", "bench", "--backend", "sim", "--workers", "2", "-n", "4", "--results",
                       str(tmp_path / "s"))
    assert code == 2
    assert "--backend sim runs in this process" in _one_line(err)

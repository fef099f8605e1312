"""`llm bench --ray` (issue 14): the load workers as Ray actors on a local Ray cluster the test starts, against the
built-in server; merged counts and tokens are what was scheduled; a worker killed mid-run is named and what it
measured before is kept."""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest
import ray  # the `ray` extra, part of the `test` extra

from benchmint.llm.bench import BenchConfig, run_bench
from benchmint.results.record import RunRecord

pytestmark = pytest.mark.slow  # a local Ray cluster and the tiny model's server: tens of seconds on a busy host


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def server():
    from benchmint.llm.engine import AsyncEngine
    from benchmint.llm.server import ServerThread
    from benchmint.models.tiny_llm import tiny_llm_path

    engine = AsyncEngine.create(str(tiny_llm_path()), max_batch_size=16, batch_wait_s=0.005)
    srv = ServerThread(engine, model_name="tiny").start()
    yield srv
    srv.stop()
    engine.close()


def _cfg(srv, tmp_path, name: str, **kw) -> BenchConfig:
    base = dict(url=srv.url, model="tiny", tokenizer="tiny", dataset="synthetic", input_tokens="12",
                output_tokens="4", chat_template=False, scenario="constant", warmup=2, ray="auto", workers=2,
                server_metrics=False, progress=False, out=str(tmp_path / name))
    return BenchConfig(**{**base, **kw})


def _received(srv) -> int:
    with urllib.request.urlopen(srv.url.removesuffix("/v1") + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("benchmint_requests_received_total"):
                return int(float(line.split()[-1]))
    return 0


def test_two_ray_workers_send_what_was_scheduled(ray_cluster, server, tmp_path):
    n = 16
    res = run_bench(_cfg(server, tmp_path, "run", rate=8.0, num_requests=n), results_dir=tmp_path / "store")
    r = res.result
    req = r["requests"]
    assert (req["scheduled"], req["sent"], req["completed"], req["failed"], req["cancelled"]) == (n, n, n, 0, 0)
    assert req["warmup_excluded"] == 2
    assert r["output_tokens_total"] == n * 4  # ignore_eos: every request gives exactly its max_tokens
    sent_in = sorted(rec.input_tokens for rec in res.records if not rec.warmup)
    assert r["input_tokens_total"] == sum(sent_in) and r["input_tokens_known"] == n and sent_in[0] >= 12
    ws = r["workers"]
    assert [(w["index"], w["status"], w["completed"], w["failed"]) for w in ws] == [(0, "ok", 8, 0), (1, "ok", 8, 0)]
    for w in ws:  # each actor's clock measured against the driver's; on this one node it is not applied
        c = w["clock"]
        assert w["node_id"] and c["same_host_as_driver"] and c["applied_offset_s"] == 0
        assert abs(c["offset_to_driver_s"]) <= c["round_trip_s"] + 0.05
    assert {w["pid"] for w in ws}.isdisjoint({0}) and len({w["pid"] for w in ws}) == 2
    assert r["measurement"]["workers"]["kind"] == "ray" and r["measurement"]["workers"]["ray"]["alive_nodes"] == 1
    assert sorted(rec.id for rec in res.records if not rec.warmup) == list(range(n))
    assert RunRecord.read(tmp_path / "run" / "run.json").status == "ok"


def test_a_ray_worker_killed_mid_run_is_named_and_its_measurements_kept(ray_cluster, server, tmp_path):
    n = 60
    before = _received(server)
    cfg = _cfg(server, tmp_path, "killed", rate=6.0, num_requests=n)
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(res=run_bench(cfg, results_dir=tmp_path / "store")))
    t.start()
    deadline = time.monotonic() + 240
    victim = None
    while time.monotonic() < deadline and t.is_alive():
        names = [a for a in ray.util.list_named_actors() if a.startswith("benchmint-load-") and a.endswith("-1")]
        if names and _received(server) - before >= 2 + 12:  # the warm-up and some measured requests
            victim = names[0]
            break
        time.sleep(0.1)
    assert victim is not None, "the run ended before a worker could be killed"
    ray.kill(ray.get_actor(victim))
    t.join(240)
    assert not t.is_alive()
    r = box["res"].result
    req = r["requests"]
    assert req["scheduled"] == n and req["completed"] + req["failed"] + req["cancelled"] == n
    lost = req["errors"].get("worker_lost", 0)
    assert lost >= 1 and "load worker 1" in req["error_examples"]["worker_lost"]
    w0, w1 = r["workers"]
    assert w0["status"] == "ok" and w0["completed"] == n // 2  # the other worker went on to the end
    assert w1["status"] == "lost" and "died" in w1["lost_reason"] and w1["errors"] == {"worker_lost": lost}
    assert w1["completed"] >= 2  # what the killed worker measured before it died is kept
    assert w1["completed"] + lost == n // 2
    assert r["measurement"]["workers"]["lost"] == 1
    assert RunRecord.read(tmp_path / "killed" / "run.json").status == "partial"


def test_sweep_with_ray_runs_every_trial_on_ray_workers(ray_cluster, server, tmp_path):
    import json

    from benchmint.llm.sweep import run_bench_sweep

    opts = {"backend": "openai-http", "url": server.url, "model": "tiny", "output_tokens": "4", "ray": "auto",
            "workers": 2}
    result = run_bench_sweep(4.0, opts, slo="ttft=30,tpot=10", out=tmp_path / "sw", max_trials=2,
                             trial_duration_s=1.0, results=tmp_path / "store")
    sw = result["sweep"]
    assert sw["trials_used"] == 2 and result["config"]["ray"] == "auto" and result["config"]["workers"] == 2
    trials = sorted((tmp_path / "sw").glob("trial-*/result.json"))
    assert len(trials) == 2
    for p in trials:
        r = json.loads(p.read_text())
        assert r["measurement"]["workers"]["kind"] == "ray" and len(r["workers"]) == 2
        assert sum(w["completed"] for w in r["workers"]) == r["requests"]["completed"] > 0

"""Client speed of `benchmint llm bench` (issue 4, item 9).

Starts ``mock_openai_server.py`` in another process on loopback, then runs one ``benchmint llm bench``
process per target rate (Server scenario: Poisson arrivals, streamed ``/v1/completions`` with 16 chunks
each, after 32 warm-up requests that open the connection pool) and reports, for each rate: the offered rate (requests / span of their scheduled send times, which
takes out Poisson sampling noise), the achieved rate (completed / run duration), their ratio, and the p99
send lag (actual - scheduled send time). The sustained rate is the highest one with
achieved/offered >= 0.99, p99 send lag <= 2 ms and no failed request.

``--truth`` compares the client's TTFT with the server's own (the mock records, per streamed request, the time
from the request read to its first chunk written, on the same monotonic clock): the excess of the client's
TTFT over the server's at p50 and p99 is what the client adds (its send lag after the scheduled time is not in
it: TTFT is from the send). The issue's target: at 1,000 req/s with ``--itl-ms 2``, <= 1 ms at p50, <= 3 ms at
p99.

``--workers 0,1,2`` runs each rate once per entry: 0 is one process (no ``--workers``), N is ``llm bench
--workers N`` (N load processes sharing the one schedule; docs/workers.md). For worker runs the client's CPU
per streamed request is printed: the workers' own CPU time (user + system, every thread) from their start to
their last answer, summed, over the completed requests.

    .venv/bin/python benchmarks/llm_client.py [--rates 500,1000,1500,2000] [--duration 8] [--repeat 1]
        [--tokens 16] [--itl-ms 0] [--workers 0,1,2] [--transports auto,aiohttp] [--truth]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCHMINT = [sys.executable, "-m", "benchmint.cli.main"]
sys.path.insert(0, str(ROOT / "tests"))
from local_port import free_port, wait_port  # noqa: E402


def run_once(url: str, rate: float, duration: float, tokens: int, work: Path, seed: int, workers: int = 0,
             transport: str = "auto") -> dict:
    out = work / f"r{rate:g}-s{seed}-w{workers}-{transport}"
    cmd = BENCHMINT + [
        "llm", "bench", "--url", url, "--model", "mock", "--scenario", "server", "--rate", str(rate),
        "--duration", str(duration), "--output-tokens", str(tokens), "--seed", str(seed), "--warmup", "32", "--no-progress",
        "--quiet", "--out", str(out), "--results", str(work / "store"), "--no-server-metrics",
    ] + (["--workers", str(workers)] if workers else []) + (
        ["--backend-option", f"transport={transport}"] if transport != "auto" else [])
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration * 4 + 300)
    if p.returncode != 0:
        return {"rate": rate, "error": (p.stderr or p.stdout).strip().splitlines()[-1:]}
    res = json.loads((out / "result.json").read_text())
    import pyarrow.parquet as pq

    t = pq.read_table(out / "requests.parquet", columns=["scheduled_s", "sent_s", "first_token_s", "warmup"]).to_pandas()
    t = t[~t.warmup]
    ttft = (t.first_token_s - t.sent_s).dropna().to_numpy()
    span = float(t.scheduled_s.max() - t.scheduled_s.min())
    offered = (len(t) - 1) / span if span > 0 else float("nan")
    achieved = res["throughput"]["requests_per_s"]
    ws = res.get("workers") or []
    cpu = sum(w["cpu_s"] or 0.0 for w in ws)
    return {
        "rate": rate,
        "workers": workers,
        "transport": transport,
        "cpu_us_per_req": 1e6 * cpu / res["requests"]["completed"] if ws and res["requests"]["completed"] else None,
        "sent": res["requests"]["sent"],
        "failed": res["requests"]["failed"],
        "errors": res["requests"]["errors"],
        "offered": offered,
        "achieved": achieved,
        "ratio": achieved / offered,
        "lag_p50_ms": res["send_lag_s"]["p50"] * 1e3,
        "lag_p99_ms": res["send_lag_s"]["p99"] * 1e3,
        "lag_max_ms": res["send_lag_s"]["max"] * 1e3,
        "ttft_p50_ms": res["ttft_s"]["p50"] * 1e3,
        "ttft_from_send_ms": (np.percentile(ttft, [50, 99]) * 1e3).tolist() if len(ttft) else None,
    }


def server_truth(url: str, warmup: int = 32) -> list[float] | None:
    """The mock's own TTFT p50 and p99 (ms) of the requests it served since the last call, less the warm-up
    ones (the first ``warmup``, which every worker sends before the common start)."""
    with urllib.request.urlopen(url.removesuffix("/v1") + "/truth", timeout=30) as r:
        ns = json.loads(r.read())["ttft_ns"][warmup:]
    return (np.percentile(ns, [50, 99]) / 1e6).tolist() if ns else None


def main() -> None:
    ap = argparse.ArgumentParser(description="Highest sustained streamed requests/s of one benchmint llm bench process.")
    ap.add_argument("--rates", default="250,500,750,1000,1250,1500,1750,2000,2500")
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--repeat", type=int, default=1, help="runs per rate (different seeds); best and median shown")
    ap.add_argument("--tokens", type=int, default=16, help="streamed chunks per answer")
    ap.add_argument("--itl-ms", type=float, default=0.0, help="mock server time between chunks")
    ap.add_argument("--stop-after-fail", type=int, default=2, help="stop after this many failing rates in a row")
    ap.add_argument("--workers", default="0", help="comma list: 0 = one process, N = llm bench --workers N")
    ap.add_argument("--transports", default="auto",
                    help="comma list of the HTTP backend's transports (auto, h1, aiohttp), run in turn at each point")
    ap.add_argument("--truth", action="store_true", help="print the client's TTFT over the server's own (p50, p99)")
    a = ap.parse_args()
    port = free_port()
    mock = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "mock_openai_server.py"), "--port", str(port), "--tokens",
         str(a.tokens), "--itl-ms", str(a.itl_ms)] + (["--record"] if a.truth else []),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    print(f"cpus: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}; mock server pid {mock.pid} "
          f"(tokens={a.tokens}, itl_ms={a.itl_ms}), duration {a.duration:g} s per run, Poisson arrivals")
    best = None
    fails: dict[tuple[int, str], int] = {}  # failing rates in a row, per number of workers and transport
    try:
        wait_port(port)
        url = f"http://127.0.0.1:{port}/v1"
        with tempfile.TemporaryDirectory() as d:
            print(f"{'transport':>9} {'workers':>7} {'target':>7} {'offered':>8} {'achieved':>9} {'ratio':>6} {'lag p50':>8} "
                  f"{'lag p99':>8} {'lag max':>8} {'cpu/req':>8} {'failed':>6}  pass")
            plan = [(float(x), int(w), tr) for x in a.rates.split(",") for w in a.workers.split(",")
                    for tr in a.transports.split(",")]
            for rate, nw, tr in plan:
                if fails.get((nw, tr), 0) >= a.stop_after_fail:  # this number of workers failed at lower rates
                    continue
                runs = []
                for seed in range(a.repeat):
                    runs.append(run_once(url, rate, a.duration, a.tokens, Path(d), seed, nw, tr))
                    if a.truth:
                        runs[-1]["server_ttft_ms"] = server_truth(url)
                ok_runs = []
                for r in runs:
                    if "error" in r:
                        print(f"{rate:7g}  error: {r['error']}")
                        continue
                    passed = r["ratio"] >= 0.99 and r["lag_p99_ms"] <= 2.0 and r["failed"] == 0
                    r["pass"] = passed
                    ok_runs.append(r)
                    cpu = "-" if r["cpu_us_per_req"] is None else f"{r['cpu_us_per_req']:6.0f}us"
                    print(f"{tr:>9} {nw:7d} {rate:7g} {r['offered']:8.1f} {r['achieved']:9.1f} {r['ratio']:6.3f} "
                          f"{r['lag_p50_ms']:7.2f}ms {r['lag_p99_ms']:7.2f}ms {r['lag_max_ms']:7.2f}ms {cpu:>8} "
                          f"{r['failed']:6d}  {'yes' if passed else 'NO'}"
                          + (f"  errors: {r['errors']}" if r["errors"] else ""), flush=True)
                    if a.truth and r["server_ttft_ms"] and r["ttft_from_send_ms"]:
                        (c50, c99), (s50, s99) = r["ttft_from_send_ms"], r["server_ttft_ms"]
                        print(f"{'':15}TTFT from send: client p50 {c50:.3f} ms, p99 {c99:.3f} ms; server's own p50 "
                              f"{s50:.3f} ms, p99 {s99:.3f} ms; client over server: p50 +{c50 - s50:.3f} ms, "
                              f"p99 +{c99 - s99:.3f} ms (load average {os.getloadavg()[0]:.2f})", flush=True)
                if any(r.get("pass") for r in ok_runs):
                    best = max(best or 0.0, max(r["achieved"] for r in ok_runs if r.get("pass")))
                    fails[(nw, tr)] = 0
                else:
                    fails[(nw, tr)] = fails.get((nw, tr), 0) + 1
    finally:
        mock.terminate()
        mock.wait(timeout=10)
    print(f"highest sustained streamed rate: {best:.0f} requests/s (achieved/offered >= 0.99, p99 send lag <= 2 ms)"
          if best else "no rate met the criteria")


if __name__ == "__main__":
    main()

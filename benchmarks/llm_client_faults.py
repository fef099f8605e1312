"""`benchmint llm bench` against a fault-injecting server (issue 16): is every request the server received in
the results, is any run lost, what are the exit codes?

Starts ``tests/fault_llm_server.py`` (127.0.0.1) twice: one answering at once with a cycle of good and bad
answers (usage of 2**64-1, ``"many"``, ``"lots"``, null JSON, no choices, 500 ...), one that delays every
answer (for Ctrl-C runs). Runs ``--runs`` ``benchmint llm bench`` processes per scenario (server/Poisson,
offline, concurrency, single-stream, Ctrl-C mid-run, Ctrl-C before the first request) and prints one row
per scenario: runs, requests received by the server, requests sent in the results and all rows of
requests.parquet (with those Ctrl-C stopped before they were sent), runs lost (no result.json / requests.parquet / run.json), exit codes.

    .venv/bin/python benchmarks/llm_client_faults.py [--runs 5] [-n 60]

The benchmint on PYTHONPATH is the one measured (``PYTHONPATH=/other/src`` measures another tree).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "tests" / "fault_llm_server.py"
BENCHMINT = [sys.executable, "-m", "benchmint.cli.main"]
sys.path.insert(0, str(ROOT / "tests"))
from local_port import free_port  # noqa: E402


def stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        return json.loads(r.read())


def start_server(delay_ms: float) -> tuple[subprocess.Popen, int]:
    port = free_port()
    p = subprocess.Popen([sys.executable, str(SERVER), "--port", str(port), "--delay-ms", str(delay_ms)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            stats(port)
            return p, port
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit("fault server did not start")


def parquet_rows(path: Path) -> tuple[int, int]:
    """Measured rows of requests.parquet, and those among them that were sent."""
    try:
        import pyarrow.parquet as pq

        t = pq.read_table(path, columns=["warmup", "sent_s"]).to_pydict()
    except Exception:
        return 0, 0
    rows = [s for w, s in zip(t["warmup"], t["sent_s"], strict=True) if not w]
    return len(rows), sum(1 for s in rows if s is not None)


def one_run(port: int, out: Path, args: list[str], sigint: str | None) -> dict:
    before = stats(port)
    cmd = [*BENCHMINT, "llm", "bench", "--url", f"http://127.0.0.1:{port}/v1", "--model", "m", "--no-progress",
           "--out", str(out / "run"), "--results", str(out / "store"), "-q", *args]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if sigint:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None:
            s = stats(port)
            if sigint == "before" and s["probes"] > before["probes"]:
                time.sleep(0.5)
                break
            if sigint == "mid" and s["received"] - before["received"] >= 10:
                break
            time.sleep(0.02)
        p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    time.sleep(0.2)  # requests cancelled by the client may still be counted by the server
    received = stats(port)["received"] - before["received"]
    run = out / "run"
    lost = not all((run / f).is_file() for f in ("result.json", "requests.parquet", "run.json"))
    rows, sent = parquet_rows(run / "requests.parquet")
    res = json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else {}
    req = res.get("requests", {})
    return {"rc": p.returncode, "received": received, "rows": rows, "sent": sent, "lost": lost,
            "never_retrieved": "never retrieved" in err,
            "internal_text": "object has no attribute" in json.dumps(req.get("error_examples", {})),
            "err": err.strip().splitlines()[-1:] if p.returncode not in (0, 130) else []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per scenario")
    ap.add_argument("-n", type=int, default=60, help="requests per run")
    a = ap.parse_args()
    n = str(a.n)
    scenarios = [
        ("server (Poisson 200/s)", False, ["--scenario", "server", "--rate", "200", "-n", n], None),
        ("offline", False, ["--scenario", "offline", "-n", n], None),
        ("concurrency 4", False, ["--scenario", "concurrency", "--concurrency", "4", "-n", n], None),
        ("single-stream, no stream", False, ["--scenario", "single-stream", "--no-stream", "-n", n], None),
        ("Ctrl-C mid-run (server 50/s)", True, ["--scenario", "server", "--rate", "50", "-n", "1000"], "mid"),
        ("Ctrl-C before 1st request", True, ["--scenario", "constant", "--rate", "0.05", "-n", "5"], "before"),
    ]
    fast, fast_port = start_server(0)
    slow, slow_port = start_server(300)
    rows = []
    try:
        for name, delayed, args, sigint in scenarios:
            agg: dict = collections.defaultdict(int)
            codes: collections.Counter = collections.Counter()
            notes: set[str] = set()
            for _ in range(a.runs):
                with tempfile.TemporaryDirectory() as d:
                    r = one_run(slow_port if delayed else fast_port, Path(d), args, sigint)
                codes[r["rc"]] += 1
                agg["received"] += r["received"]
                agg["rows"] += r["rows"]
                agg["sent"] += r["sent"]
                agg["lost"] += r["lost"]
                agg["never_retrieved"] += r["never_retrieved"]
                agg["internal_text"] += r["internal_text"]
                notes.update(" ".join(e.split())[:90] for e in r["err"])
            rows.append((name, a.runs, agg, codes, notes))
            print(f"{name}: done", file=sys.stderr, flush=True)
    finally:
        for p in (fast, slow):
            p.terminate()
            p.wait(10)
    print(f"benchmint from {os.environ.get('PYTHONPATH') or '(installed)'}")
    hdr = ("scenario", "runs", "server received", "sent in results", "all rows", "runs lost", "exit codes",
           "'never retrieved'", "internal error text")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    tot = collections.Counter()
    for name, runs, agg, codes, notes in rows:
        tot.update({"runs": runs, "received": agg["received"], "sent": agg["sent"], "rows": agg["rows"],
                    "lost": agg["lost"]})
        cs = ", ".join(f"{k}: {v}" for k, v in sorted(codes.items()))
        print(f"| {name} | {runs} | {agg['received']} | {agg['sent']} | {agg['rows']} | {agg['lost']} | {cs} | "
              f"{agg['never_retrieved']} | {agg['internal_text']} |")
        for note in sorted(notes):
            print(f"|   ↳ {note} | | | | | | | | |")
    print(f"| total | {tot['runs']} | {tot['received']} | {tot['sent']} | {tot['rows']} | {tot['lost']} | | | |")


if __name__ == "__main__":
    main()

"""Which files hold an API key after `llm bench --api-key` and `llm mlperf --api-key` (issue 16)?

Starts ``tests/fault_llm_server.py`` (127.0.0.1, good answers only), runs ``llm bench`` and ``llm mlperf`` with
``--api-key KEY`` (one small LoadGen Server test), then ``results query`` and ``report`` on the same store, and
prints every file (and command output) that holds KEY, and how many requests reached the server with it.

    .venv/bin/python benchmarks/secrets_leak.py

The benchmint on PYTHONPATH is the one measured (``PYTHONPATH=/other/src`` measures another tree).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_client_faults import SERVER, free_port, stats  # noqa: E402

KEY = "SEKRET-leakcheck-5b1e77"


def holds(path: Path, secret: str) -> bool:
    """The file's bytes hold ``secret``; a Parquet file's decoded values too (its pages are compressed)."""
    if secret.encode() in path.read_bytes():
        return True
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return secret in str(pq.read_table(path).to_pylist())
        except Exception:
            return False
    return False


def main() -> None:
    port = free_port()
    srv = subprocess.Popen([sys.executable, str(SERVER), "--port", str(port), "--faults", "good"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                stats(port)
                break
            except OSError:
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}/v1"
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            store = str(tmp / "store")
            cmds = {
                "llm bench": ["llm", "bench", "--url", url, "--model", "m", "--api-key", KEY, "-n", "4", "--rate", "50",
                              "--out", str(tmp / "bench"), "--json", str(tmp / "bench.json"), "--results", store,
                              "--no-progress"],
                "llm mlperf": ["llm", "mlperf", "--url", url, "--model", "m", "--api-key", KEY, "--scenario", "server",
                               "--target-qps", "20", "--min-duration", "1", "--min-query-count", "4",
                               "--num-samples", "4", "--output-tokens", "4", "--no-energy", "--out",
                               str(tmp / "mlperf"), "--json", str(tmp / "mlperf.json"), "--results", store],
                "results query": ["results", "query", "select * from runs", "--json", "--results", store],
                "report": ["report", "--results", store, "--out", str(tmp / "report.html")],
            }
            env = dict(os.environ, HF_HUB_OFFLINE="1")
            env.pop("OPENAI_API_KEY", None)
            out_hits = []
            codes = {}
            for name, args in cmds.items():
                p = subprocess.run([sys.executable, "-m", "benchmint.cli.main", *args], env=env,
                                   capture_output=True, text=True, timeout=600)
                codes[name] = p.returncode
                if KEY in p.stdout + p.stderr:
                    out_hits.append(f"output of {name}")
            files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file() and holds(p, KEY))
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
                received = json.loads(r.read())["received"]
    finally:
        srv.terminate()
        srv.wait(10)
    print(f"benchmint from {os.environ.get('PYTHONPATH') or '(installed)'}")
    print(f"exit codes: {codes}; requests the server received: {received}")
    print(f"{len(files)} files hold the key: {', '.join(files) or '-'}")
    print(f"{len(out_hits)} command outputs hold the key: {', '.join(out_hits) or '-'}")


if __name__ == "__main__":
    main()

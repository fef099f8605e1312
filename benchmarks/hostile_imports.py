"""Hostile values through ``benchmint results import`` and ``benchmint llm mlperf --plan`` (issue 16): one
command per case, each in its own process; prints the exit code, how many runs were stored, and the last
line of stderr. Target: every case exit 2 with one line naming the file and the field (or exit 0 with a
warning naming a skipped row), never exit 1, never a junk run.

    .venv/bin/python benchmarks/hostile_imports.py

Run it against another tree's code with ``PYTHONPATH=/that/tree/src``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CSV = ROOT / "src" / "benchmint" / "results" / "samples" / "summary.csv"
OPEN_JSON = ROOT / "tests" / "data" / "openmlperf" / "data_subset.json"
BENCHMINT = [sys.executable, "-m", "benchmint.cli.main"]


def _csv_with(column: str, value: str) -> str:
    rows = list(csv.DictReader(io.StringIO(SAMPLE_CSV.read_text())))[:1]
    rows[0][column] = value
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


def _open_with(key: str, raw_value: str) -> str:
    """The first Open MLPerf row with ``key`` set to a raw JSON literal (1e999 is valid JSON text)."""
    row = json.loads(OPEN_JSON.read_text())[0]
    row[key] = "__VALUE__"
    return json.dumps([row]).replace('"__VALUE__"', raw_value)


def cases() -> list[tuple[str, str, str, list[str]]]:
    """(name, file name, content, command after 'benchmint') with {f} for the file."""
    head = SAMPLE_CSV.read_text().splitlines()[0]
    first = SAMPLE_CSV.read_text().splitlines()[1]
    imp = ["results", "import", "{f}", "--results", "{store}"]
    plan = ["llm", "mlperf", "--backend", "sim", "--scenario", "server", "--plan", "--user-conf", "{f}"]
    return [
        ("CSV Result = inf", "summary.csv", _csv_with("Result", "inf"), imp),
        ("CSV Result = 1e999", "summary.csv", _csv_with("Result", "1e999"), imp),
        ("CSV number_of_nodes = 1e999", "summary.csv", _csv_with("number_of_nodes", "1e999"), imp),
        ("CSV accelerators_per_node = inf", "summary.csv", _csv_with("accelerators_per_node", "inf"), imp),
        ("CSV Result = NaN", "summary.csv", _csv_with("Result", "NaN"), imp),
        ("CSV unterminated quote", "summary.csv", head + "\n" + first.replace('"Example CPU 8480"', '"Example CPU 8480',
                                                                             1) + "\n", imp),
        ("Open MLPerf metrics.result = inf", "data.json", _open_with("metrics.result", '"inf"'), imp),
        ("Open MLPerf metrics.result = 1e999", "data.json", _open_with("metrics.result", "1e999"), imp),
        ("Open MLPerf total_count = 1e999", "data.json", _open_with("system.accelerator.total_count", "1e999"), imp),
        ("Open MLPerf accuracy 'ROUGE1: .'", "data.json", _open_with("metrics.accuracy", '"ROUGE1: ."'), imp),
        ("Open MLPerf metrics.result = NaN", "data.json", _open_with("metrics.result", "NaN"), imp),
        ("user.conf target_qps = nan", "user.conf", "llama2-70b.Server.target_qps = nan\n", plan),
        ("user.conf 100,000-digit QPS", "user.conf", "llama2-70b.Server.target_qps = " + "9" * 100000 + "\n", plan),
        ("user.conf min_query_count = 10**26", "user.conf", f"llama2-70b.Server.min_query_count = {10**26}\n", plan),
        ("--min-query-count 10**26", "user.conf", "*.Server.target_latency_percentile = 99\n",
         plan + ["--target-qps", "1", "--min-query-count", str(10**26)]),
        ("--target-qps nan", "user.conf", "*.Server.target_latency_percentile = 99\n", plan + ["--target-qps", "nan"]),
    ]


def _stored(store: Path) -> int:
    if not store.exists():
        return 0
    r = subprocess.run([*BENCHMINT, "results", "list", "--results", str(store), "--json"], capture_output=True,
                       text=True, timeout=300)
    try:
        return len(json.loads(r.stdout))
    except ValueError:
        return -1


def main() -> int:
    import benchmint

    print(f"benchmint from {Path(benchmint.__file__).parent}")
    print(f"{'case':<38} {'exit':>4} {'stored':>6}  stderr (last line)")
    bad = 0
    with tempfile.TemporaryDirectory(prefix="hostile_imports_") as tmp:
        for i, (name, fname, content, cmd) in enumerate(cases()):
            d = Path(tmp) / f"c{i}"
            d.mkdir()
            f = d / fname
            f.write_text(content)
            store = d / "store"
            argv = [a.replace("{f}", str(f)).replace("{store}", str(store)) for a in cmd]
            r = subprocess.run([*BENCHMINT, *argv], capture_output=True, text=True, timeout=300,
                               env={**os.environ, "COLUMNS": "400"})
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            last = (lines[-1] if lines else "").replace(str(d) + "/", "")
            n = _stored(store) if "import" in cmd else 0
            print(f"{name:<38} {r.returncode:>4} {n:>6}  {last[:150]}", flush=True)
            bad += r.returncode not in (0, 2) or "Traceback" in r.stderr
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

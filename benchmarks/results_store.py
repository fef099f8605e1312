"""Results store and report: how long an append, a query, an import and a report take.

Prints figures (no pass/fail): median of repeated timings with benchmint.core.clock (perf_counter_ns), on
this machine, in one process. Run: .venv/bin/python benchmarks/results_store.py [--parts 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

from benchmint.core.clock import now_ns
from benchmint.report import build_report
from benchmint.results.importers import read_open_mlperf
from benchmint.results.record import RunRecord
from benchmint.results.store import ResultsStore

ROOT = Path(__file__).resolve().parent.parent
OPEN = ROOT / "tests" / "data" / "openmlperf" / "data.parquet"


def timed(fn, repeat: int = 5) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = now_ns()
        out = fn()
        times.append((now_ns() - t0) / 1e9)
    return statistics.median(times), out


def llm_like(i: int) -> RunRecord:
    pct = {"mean": 0.05, "p50": 0.04, "p90": 0.07, "p99": 0.1, "max": 0.2}
    return RunRecord(kind="llm", config={"rate": float(i % 8 + 1), "backend": "openai-http"},
                     metrics={"ttft_s": pct, "tpot_s": pct, "e2e_s": pct,
                              "throughput": {"requests_per_s": 1.0 + i, "output_tokens_per_s": 30.0 + i}},
                     workload={"model_name": "tiny", "parameter_count": 10**6}, system={"cpu_model": "x"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--parts", type=int, default=200, help="single-run parts to append")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultsStore(Path(tmp) / "store")
        t_imp, recs = timed(lambda: read_open_mlperf(OPEN), repeat=3)
        t0 = now_ns()
        store.append_many(recs)
        t_app_many = (now_ns() - t0) / 1e9
        print(f"import Open MLPerf ({len(recs)} results) parse: {t_imp * 1e3:.1f} ms (median of 3); "
              f"store as one part: {t_app_many * 1e3:.1f} ms")
        app = []
        for i in range(args.parts):
            r = llm_like(i)
            t0 = now_ns()
            store.append(r)
            app.append((now_ns() - t0) / 1e9)
        app.sort()
        print(f"append one run (new part, fsync + rename), {args.parts} appends: median "
              f"{statistics.median(app) * 1e3:.2f} ms, p90 {app[int(0.9 * len(app))] * 1e3:.2f} ms")
        n = len(store.part_files())
        t_read, got = timed(store.records)
        t_q, _ = timed(lambda: store.query("select kind, count(*), avg(metrics__ttft_s__p99) from runs group by 1"))
        print(f"{len(got)} runs in {n} parts: read all {t_read * 1e3:.0f} ms, query (table build + SQL) "
              f"{t_q * 1e3:.0f} ms (median of 5)")
        t0 = now_ns()
        store.compact()
        t_c = (now_ns() - t0) / 1e9
        t_read2, _ = timed(store.records)
        t_q2, _ = timed(lambda: store.query("select kind, count(*), avg(metrics__ttft_s__p99) from runs group by 1"))
        print(f"compact {n} parts -> 1: {t_c * 1e3:.0f} ms; then read all {t_read2 * 1e3:.0f} ms, query "
              f"{t_q2 * 1e3:.0f} ms (median of 5)")
        sys.path.insert(0, str(ROOT / "tests"))
        from test_report_records import sample_records

        sample = sample_records(Path(tmp))
        t_rep, path = timed(lambda: build_report(sample, Path(tmp) / "report.html"), repeat=3)
        print(f"report of {len(sample)} runs: {t_rep * 1e3:.0f} ms (median of 3), "
              f"{path.stat().st_size / 1e6:.2f} MB self-contained")


if __name__ == "__main__":
    main()

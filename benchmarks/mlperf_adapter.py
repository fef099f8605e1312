"""How much the LoadGen adapter adds: LoadGen Server runs against the simulated engine (fixed 10 ms TTFT,
1 ms per token, no model), at rising target QPS, one LoadGen test per subprocess as `llm mlperf` runs them.

Prints, per target QPS: what LoadGen scheduled and completed per second, and LoadGen's TTFT p50/p99 minus the
engine's own 10 ms (the adapter's overhead: LoadGen issue -> asyncio loop -> first-token report), and TPOT
p50 minus 1 ms, for the SUT's event loop on uvloop and on plain asyncio (alternated).
Usage: python benchmarks/mlperf_adapter.py [--duration 3] [--qps 50,200,500,1000] [--loops uvloop,asyncio]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmint.llm.loadgen.runner import run_test, write_samples
from benchmint.llm.loadgen.settings import RunSettings
from benchmint.llm.loadgen.sut import Sample

TTFT_S, TPOT_S, TOKENS = 0.010, 0.001, 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--qps", default="50,200,500,1000")
    ap.add_argument("--loops", default="uvloop,asyncio", help="event loops of the SUT, alternated per QPS")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        samples = write_samples([Sample(prompt=f"p{i}", max_tokens=TOKENS) for i in range(64)], Path(tmp) / "s.jsonl")
        print(f"simulated engine: TTFT {TTFT_S * 1e3:.0f} ms, TPOT {TPOT_S * 1e3:.0f} ms, {TOKENS} tokens; "
              f"min duration {args.duration:g} s per test")
        print(f"{'loop':>8} {'target':>8} {'sched/s':>9} {'done/s':>9} {'done/sched':>10} {'TTFT p50 +':>11} {'TTFT p99 +':>11} "
              f"{'TPOT p50 +':>11} {'client-LG TTFT p50':>19}")
        for qps, loop in [(float(q), lp) for q in args.qps.split(",") for lp in args.loops.split(",")]:
            rs = RunSettings(scenario="server", target_qps=qps, min_duration_s=args.duration, min_query_count=1,
                             performance_sample_count=64)
            o = run_test(Path(tmp) / f"q{qps:g}", samples, rs,
                         {"kind": "sim", "options": {"ttft_s": TTFT_S, "tpot_s": TPOT_S, "slots": 100000}},
                         event_loop=loop)
            lg = o.loadgen
            ttft_client = sorted((r.first_token_ns - r.scheduled_ns) / 1e9 for r in o.records if r.first_token_ns)
            c50 = ttft_client[len(ttft_client) // 2]
            sched, done = lg["scheduled_samples_per_s"], lg["samples_per_s"]
            print(f"{o.worker.get('event_loop', loop):>8} {qps:8g} {sched:9.1f} {done:9.1f} {done / sched:10.3f} "
                  f"{(lg['ttft_s']['p50'] - TTFT_S) * 1e3:9.2f}ms {(lg['ttft_s']['p99'] - TTFT_S) * 1e3:9.2f}ms "
                  f"{(lg['tpot_s']['p50'] - TPOT_S) * 1e3:9.3f}ms {(c50 - lg['ttft_s']['p50']) * 1e3:17.3f}ms")


if __name__ == "__main__":
    main()

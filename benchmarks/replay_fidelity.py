"""Replay fidelity over the built-in example workloads: does a replayed step take what the original took?

For each workload: capture one step (ET + Kineto, and the un-observed step time in capture.json), replay it
two ways, then time the ORIGINAL step and each REPLAY in the same process, alternating A B C A B C ...
(same thread count), and report the median over rounds of (replay / original - 1):

* replay (capture.json): CPU gaps aimed at capture.json's measured step time;
* replay (trace only): the same ET + Kineto without capture.json, the un-observed step estimated from the
  trace itself (recorded span less the observers' cost, measured here by recording the replay).

Each workload is captured --repeats times (fresh capture, fresh replays, fresh alternating timing) and the
median error is reported: on a shared machine the load drifts between a capture and its replay. The "drift"
column measures that drift with no replay involved: the original's step time measured at capture (what the
capture.json path aims at) against the same original timed alternately with the replays.

Usage: python benchmarks/replay_fidelity.py [--threads 1] [--rounds 7] [--repeats 3] [--scale 1] [--workloads a,...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore")


def _one(name, cap, args, build, replay_trace, capture_steps, compare_with_original) -> dict:
    """One fresh capture of ``name``, its two replays, and the alternating timing."""
    w = build(name, args.scale)
    summary = capture_steps(w.step, cap, warmup=20, measure=10, record=1, model=w.model, discard=args.discard)
    user = cap.parent / f"{cap.name}-trace-only"
    user.mkdir()
    for f in ("et.json", "kineto.json"):
        shutil.copy(cap / f, user / f)
    a = replay_trace(cap, iters=10, warmup=2)
    b = replay_trace(user / "et.json", kineto=user / "kineto.json", iters=10, warmup=2)
    cmp = compare_with_original(w.step, {"capture": a, "trace": b}, rounds=args.rounds, reps=args.reps,
                                ops_alone=False)
    ra, rb = cmp["replays"]["capture"], cmp["replays"]["trace"]
    r = a.result
    return {
        "workload": name, "ops": r["ops_total"], "coverage": r["coverage"],
        "original_s": cmp["original_s"], "capture_s": r["original_iter_time_s"],
        "replay_s": ra["replay_s"], "error": ra["error"],
        "estimate_s": b.result["original_iter_time_estimated_s"], "replay_trace_only_s": rb["replay_s"],
        "error_trace_only": rb["error"],
        "ops_only_s": r["replay_ops_only_s"],
        # the original against itself: its capture-time measurement (what the capture.json path aims at) vs its
        # alternating timing now; a perfect replay aimed at capture.json misses by this much
        "drift": summary["step_time_s"]["median"] / cmp["original_s"] - 1,
    }


def _spread(values: list[float], what: str = "") -> str:
    """``max X%, median Y%; within 10%: K/N`` of the values' magnitudes (``what`` names them)."""
    a = [abs(v) for v in values]
    return (f"max {what}{max(a) * 100:.1f}%, median {what}{statistics.median(a) * 100:.1f}%; within 10%: "
            f"{sum(e <= 0.10 for e in a)}/{len(a)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=9, help="alternating rounds (original, replays)")
    ap.add_argument("--reps", type=int, default=5, help="iterations per round; the round takes their median")
    ap.add_argument("--workloads", default=None, help="comma-separated subset")
    ap.add_argument("--scale", type=int, default=1, help="model width factor (workloads.build's scale): at 1 a "
                    "step takes 1-7 ms here and recording it costs 2x-6x the step; larger scales are closer to "
                    "real models")
    ap.add_argument("--repeats", type=int, default=3, help="fresh captures per workload; the median error is "
                    "reported (the machine's load drifts between a capture and its replay)")
    ap.add_argument("--discard", type=int, default=1, help="steps each capture records and throws away before the "
                    "kept one (capture's default, 1: the first recording in a process pays one-time costs)")
    ap.add_argument("--malloc", choices=("steady", "default"), default="steady",
                    help="steady: fix glibc's mmap/trim thresholds for the whole run, as every replay does "
                    "(benchmint.replay.allocator.settle_malloc); default: leave them dynamic, in the replays too")
    args = ap.parse_args()
    if args.malloc == "default":
        os.environ["BENCHMINT_REPLAY_MALLOC"] = "default"  # the replays leave them alone too
    from benchmint.replay.allocator import settle_malloc

    malloc = settle_malloc()

    import torch

    from benchmint.models.workloads import WORKLOADS, build
    from benchmint.replay.api import replay_trace
    from benchmint.replay.compare import compare_with_original
    from benchmint.trace.capture import capture_steps

    torch.set_num_threads(args.threads)
    names = args.workloads.split(",") if args.workloads else list(WORKLOADS)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="benchmint-fidelity-"))
    try:
        for name in names:
            reps = [_one(name, tmp / f"{name}-{k}", args, build, replay_trace, capture_steps, compare_with_original)
                    for k in range(args.repeats)]
            reps.sort(key=lambda x: x["error"])
            x = dict(reps[len(reps) // 2])  # the repeat with the median error (capture.json path)
            x["error"] = statistics.median(r["error"] for r in reps)
            x["error_trace_only"] = statistics.median(r["error_trace_only"] for r in reps)
            x["errors"] = [r["error"] for r in reps]
            x["errors_trace_only"] = [r["error_trace_only"] for r in reps]
            x["drift"] = statistics.median(r["drift"] for r in reps)
            x["drifts"] = [r["drift"] for r in reps]
            rows.append(x)
            print(f"  {name}: errors per capture {[f'{e * 100:+.1f}%' for e in x['errors']]}, trace-only "
                  f"{[f'{e * 100:+.1f}%' for e in x['errors_trace_only']]}, original's drift "
                  f"{[f'{e * 100:+.1f}%' for e in x['drifts']]}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nreplay fidelity on CPU, {args.threads} thread(s), scale {args.scale}, discard {args.discard}; per capture: "
          f"{args.rounds} alternating rounds x "
          f"{args.reps} iterations, malloc {malloc}, error = median over rounds of replay/original - 1; median over {args.repeats} "
          "captures")
    hdr = (f"{'workload':18s} {'ops':>5s} {'coverage':>8s} {'original s':>11s} {'replay s':>10s} {'error':>7s}"
           f" | {'ops only s':>10s} {'trace-only replay s':>19s} {'error':>7s} | {'drift':>6s}")
    print(hdr)
    print("-" * len(hdr))
    for x in rows:
        print(f"{x['workload']:18s} {x['ops']:5d} {x['coverage']:8.3f} {x['original_s']:11.6f} {x['replay_s']:10.6f} "
              f"{x['error'] * 100:+6.1f}% | {x['ops_only_s']:10.6f} {x['replay_trace_only_s']:19.6f} "
              f"{x['error_trace_only'] * 100:+6.1f}% | {x['drift'] * 100:+5.1f}%")
    if rows:
        cov = sum(1 for x in rows if x["coverage"] == 1.0)
        print(f"\ncoverage 1.0: {cov}/{len(rows)}")
        print(f"with capture.json: {_spread([x['error'] for x in rows], '|error| ')}")
        print(f"trace only (ET + Kineto): {_spread([x['error_trace_only'] for x in rows], '|error| ')}")
        print("drift (the original's capture-time step time vs its alternating timing, no replay involved): "
              + _spread([x["drift"] for x in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

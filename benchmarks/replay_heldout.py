"""Replay fidelity on workloads captured the way a user captures them: the plain PyTorch API
(``torch.profiler.ExecutionTraceObserver`` + Kineto with ``record_shapes``, no ``benchmint capture``, no
capture.json), replayed as ``benchmint replay ET --kineto K --gaps recorded --threads 1`` would (the
trace-only estimate), and timed against the live original in the same process, alternating.

Workloads: the held-out kinds of ``benchmarks/heldout_workloads.py`` (embedding bags fed skewed indices with
per-sample weights and several pooling modes, sorted-dispatch mixtures of experts, a packed-sequence LSTM) and,
with ``--builtin``, benchmint's own examples (``benchmint.models.workloads``) captured the same plain way.

Per round: ``--iters`` iterations of the original, then of the replay; each side's figure is the 10th
percentile of its iterations; error = median over rounds of replay / original - 1 (the issue's protocol).
With ``--pairs N`` (default 100) the same two sides are then also timed iteration by iteration, N rounds whose
order reverses each round (A B C, C B A, ...; C the ops alone, below): ``paired`` is the median of the
rounds' replay / original - 1, with a 95% bootstrap interval (:mod:`benchmint.core.paired`). A block of 30
iterations takes a few hundred milliseconds, and this machine's speed moves by more than the replay's error within that (two replays of one
capture, timed in the same rounds, read 30 points apart); a pair of single iterations is timed milliseconds
apart, so the paired figure shows what is the replay's and what is the protocol's noise. The pairs also time the
replay's ops alone (without its gaps) as a third side, which splits the paired error in two: ``estimate``
(what the trace-only estimate says the original adds to the ops, against what the live original added to them
in the pairs) and ``gaps`` (what the settled gaps added in the pairs, against what the estimate asked of them).
Prints the load average beside the table.

Usage: python benchmarks/replay_heldout.py [--workloads a,b] [--builtin] [--rounds 3] [--iters 30] [--repeats 1]
       [--pairs 100] [--ab-spread] [--index-spread auto|uniform|zipf:E] [--malloc steady|default]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def plain_capture(step, out: Path, steps: int = 2) -> tuple[Path, Path]:
    """What a user writes: warm up, then record ``steps`` steps with the ET observer and Kineto."""
    import torch
    from torch.profiler import ExecutionTraceObserver, ProfilerActivity, profile, schedule

    et_path, k_path = out / "et.json", out / "kineto.json"
    for _ in range(5):
        step()
    et = ExecutionTraceObserver().register_callback(str(et_path))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True,
                 schedule=schedule(wait=0, warmup=1, active=steps), execution_trace_observer=et,
                 on_trace_ready=lambda p: p.export_chrome_trace(str(k_path))) as prof:
        for _ in range(steps + 1):
            step()
            prof.step()
    et.unregister_callback()
    del torch
    return et_path, k_path


def _p10(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[max(0, int(round(0.1 * (len(xs) - 1))))]


def _times(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e9)
    return out


def _pairs(orig, replay, ops, n: int) -> dict | None:
    """``n`` rounds of single iterations of the three sides (the original, the replay, the replay's ops alone
    without its gaps), the order reversing each round: the median replay / original ratio with its 95% bootstrap
    interval, and the medians of original / ops and replay / ops (None when ``n`` is 0)."""
    from benchmint.core.paired import ratio_interval

    if n <= 0:
        return None
    sides = (orig, replay, ops)
    t: tuple[list[float], list[float], list[float]] = ([], [], [])
    for k in range(n):
        for i in (0, 1, 2) if k % 2 == 0 else (2, 1, 0):
            t[i].append(_times(sides[i], 1)[0])
    out = ratio_interval([b / a for a, b in zip(t[0], t[1], strict=True)])
    out["original_vs_ops"] = statistics.median(a / c for a, c in zip(t[0], t[2], strict=True))
    out["replay_vs_ops"] = statistics.median(b / c for b, c in zip(t[1], t[2], strict=True))
    return out


#: a row's paired error and its two parts (:func:`split_error`): each capture's, then their median per workload
PARTS = {"paired_error": "paired", "estimate_error": "estimate error", "gaps_error": "gaps error"}


def split_error(est_s: float | None, ops_s: float | None, pairs: dict | None) -> tuple[float | None, float | None]:
    """The paired error in two parts. ``estimate``: what the trace-only estimate says the original adds to the
    ops (``est_s / ops_s``, both from the replay's calibration) against what the live original added to them in
    the pairs (original / ops alone); ``gaps``: what the settled gaps added to the ops in the pairs (replay /
    ops alone) against what the estimate asked of them. The paired error is about their product: a wrong
    estimate is the estimator's, a wrong gap total the settling's or the machine's pace between settling and
    timing."""
    if not est_s or not ops_s or not pairs or not pairs.get("original_vs_ops") or not pairs.get("replay_vs_ops"):
        return None, None
    asked = est_s / ops_s
    return asked / pairs["original_vs_ops"] - 1, pairs["replay_vs_ops"] / asked - 1


def measure(name: str, step, tmp: Path, args) -> dict:
    from benchmint.replay import conditions
    from benchmint.replay.api import replay_trace

    d = tmp / name
    d.mkdir()
    et, k = plain_capture(step, d)
    res = replay_trace(et, kineto=k, gaps="recorded", threads=1, iters=10, warmup=2, index_spread=args.index_spread)
    fn, plan = res.compiled(), res.plan
    alt = None
    if args.ab_spread:  # the same capture replayed with every made-up index uniform (the choice off)
        from benchmint.replay.index_skew import SPREAD_ENV

        os.environ[SPREAD_ENV] = "uniform"
        try:
            alt = replay_trace(et, kineto=k, gaps="recorded", threads=1, iters=10, warmup=2)
        finally:
            del os.environ[SPREAD_ENV]

    @conditions.as_replay  # (denormals flushed, as replay_trace runs it)
    def replay() -> None:
        with plan.grad_context():
            fn(plan.registers())

    fn0 = plan.compile()  # the same ops without the gaps: what the estimate and the gaps are added to

    @conditions.as_replay
    def ops_alone() -> None:
        with plan.grad_context():
            fn0(plan.registers())

    @conditions.as_replay
    def replay_alt() -> None:
        with alt.plan.grad_context():
            alt_fn(alt.plan.registers())

    alt_fn = alt.compiled() if alt is not None else None
    step()
    replay()
    ops_alone()
    errs, orig, rep, alt_errs = [], [], [], []
    for _ in range(args.rounds):
        o = _p10(_times(step, args.iters))
        r = _p10(_times(replay, args.iters))
        orig.append(o)
        rep.append(r)
        errs.append(r / o - 1)
        if alt is not None:
            alt_errs.append(_p10(_times(replay_alt, args.iters)) / o - 1)
    pairs = _pairs(step, replay, ops_alone, args.pairs)
    if alt is not None:
        print(f"  {name}: spread off (uniform) rounds {[f'{e * 100:+.1f}%' for e in alt_errs]} median "
              f"{statistics.median(alt_errs) * 100:+.1f}%; chosen spread rounds {[f'{e * 100:+.1f}%' for e in errs]} "
              f"median {statistics.median(errs) * 100:+.1f}% (load {os.getloadavg()[0]:.2f})", file=sys.stderr,
              flush=True)
    r = res.result
    est_err, gap_err = split_error(r.get("original_iter_time_estimated_s"), r.get("replay_ops_only_s"), pairs)
    return {"workload": name, "ops": r["ops_total"], "coverage": r["coverage"],
            "original_s": statistics.median(orig), "replay_s": statistics.median(rep),
            "error": statistics.median(errs), "errors": errs, "paired": pairs,
            "paired_error": pairs["median_ratio"] - 1 if pairs and pairs["median_ratio"] else None,
            "estimate_error": est_err, "gaps_error": gap_err,
            "ops_only_s": r.get("replay_ops_only_s"),
            "estimate_s": r.get("original_iter_time_estimated_s"),
            "skipped": r.get("skipped"), "substituted": r.get("substituted"),
            "spread": [t["chosen"] for t in (r.get("index_distribution") or {}).get("tensors") or []]}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:+.1f}%"


def _ci(x: dict) -> str:
    p = x.get("paired") or {}
    if p.get("ci_low") is None:
        return "-"
    return f"{(p['ci_low'] - 1) * 100:+.1f}..{(p['ci_high'] - 1) * 100:+.1f}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=None, help="comma-separated subset")
    ap.add_argument("--builtin", action="store_true", help="also benchmint's own example workloads")
    ap.add_argument("--index-spread", default="auto",
                    help="made-up lookup indices, as benchmint replay --index-spread: auto, uniform or zipf:E")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=1, help="fresh captures per workload (median error)")
    ap.add_argument("--pairs", type=int, default=100,
                    help="then this many pairs of single iterations, alternating (0: none)")
    ap.add_argument("--ab-spread", action="store_true",
                    help="also replay each capture with every made-up index uniform (BENCHMINT_INDEX_SPREAD), "
                         "timed in the same rounds")
    ap.add_argument("--malloc", choices=("steady", "default"), default="steady",
                    help="steady: fix glibc's mmap/trim thresholds before the first capture, as every replay does "
                    "(benchmint.replay.allocator.settle_malloc), so the captures, the replays and the live "
                    "originals all run under them; default: leave them dynamic, in the replays too")
    args = ap.parse_args()
    if args.malloc == "default":
        os.environ["BENCHMINT_REPLAY_MALLOC"] = "default"
    from benchmint.replay.allocator import settle_malloc

    # the first replay fixes them for the whole process: without this, the first workload's capture ran under
    # dynamic thresholds (a MoE training step's select_backward took page faults on every 1-MiB zeros, 350 us
    # per call under the recorders) and its live original, timed after that replay, did not
    malloc = settle_malloc()

    import torch
    from heldout_workloads import HELDOUT

    torch.set_num_threads(1)
    makers = dict(HELDOUT)
    if args.builtin:
        from benchmint.models.workloads import WORKLOADS, build

        for n in WORKLOADS:
            makers[n] = (lambda n=n: build(n).step)
    names = args.workloads.split(",") if args.workloads else list(makers)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="benchmint-heldout-"))
    try:
        for name in names:
            reps = []
            for k in range(args.repeats):
                reps.append(measure(f"{name}" if k == 0 else f"{name}-{k}", makers[name](), tmp, args))
                reps[-1]["workload"] = name
            reps.sort(key=lambda x: x["error"])
            x = dict(reps[len(reps) // 2])
            x["error"] = statistics.median(r["error"] for r in reps)
            x["errors"] = [e for r in reps for e in r["errors"]]
            for part in PARTS:
                xs = [r[part] for r in reps if r.get(part) is not None]
                x[part] = statistics.median(xs) if xs else None
            rows.append(x)
            print(f"  {name}: rounds {[f'{e * 100:+.1f}%' for e in x['errors']]} skipped {x['skipped']} "
                  f"substituted {x['substituted']} index spread {x['spread']} (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nplain-API captures, trace-only replay (--gaps recorded), 1 thread; p10 of {args.iters} iterations, "
          f"{args.rounds} alternating rounds, {args.repeats} capture(s); load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; malloc: {malloc}")
    hdr = (f"{'workload':18s} {'ops':>5s} {'coverage':>8s} {'original s':>11s} {'replay s':>10s} {'error':>7s} "
           f"{'ops only s':>10s} {'paired':>7s}  {'paired 95% CI':>15s} {'estimate':>8s} {'gaps':>7s}")
    print(hdr)
    print("-" * len(hdr))
    for x in rows:
        print(f"{x['workload']:18s} {x['ops']:5d} {x['coverage']:8.3f} {x['original_s']:11.6f} {x['replay_s']:10.6f} "
              f"{x['error'] * 100:+6.1f}% {x['ops_only_s'] or 0:10.6f} {_pct(x['paired_error']):>7s}  {_ci(x):>15s} "
              f"{_pct(x['estimate_error']):>8s} {_pct(x['gaps_error']):>7s}")
    if rows:
        print()
        for part, label in (("error", "error"), *PARTS.items()):
            p = [abs(x[part]) for x in rows if x.get(part) is not None]
            if p:
                print(f"|{label}|: max {max(p) * 100:.1f}%, median {statistics.median(p) * 100:.1f}%; within 10%: "
                      f"{sum(e <= 0.10 for e in p)}/{len(p)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

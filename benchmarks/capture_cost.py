"""What recording costs the job it records: ``capture --every N`` against the same loop with nothing attached.

``--design interleave`` (the default): one process per workload runs both sides in alternating blocks of
``--block`` steps: the loop with ``Capture(every=N).step()`` after each step (the recorder attached, idle
between its recordings) and the same loop without it, the order swapping each pair (A B, B A, ...; a fixed
order read moe's idle steps 1-2% slow, the swapped one 1.00). Recorded steps are left out, and the ``--after``
steps that follow each recording, on either side, are reported apart (any pause slows the next few steps:
:func:`child_ab`); only block pairs after the first recording count. Printed: the median of the paired block ratios (idle / plain)
with a 95% bootstrap interval, "no measurable cost" only when the interval holds 1 within +-3%
(:mod:`benchmint.core.paired`), and the recorded steps' median over the plain blocks'.

``--design processes``: for each workload, rounds alternate two fresh processes (A B A B ...), each running the same training or
inference loop for the same number of steps after the same warm-up:

- ``plain``: nothing of benchmint attached; every step timed (``time.perf_counter_ns`` between steps);
- ``every``: the loop under :class:`benchmint.trace.capture.Capture` with ``every=N``: one step in every N
  recorded (ExecutionTraceObserver + Kineto, each in its own ``iter_K`` folder), the other steps un-observed
  with the recorder idle in the process.

Per round: the median of the ``every`` process's un-observed steps (after the first recording) over the
median of the ``plain`` process's steps at the same positions in the loop, and the recorded steps' median over
the plain steps at theirs. Printed: the
median of those ratios over rounds, with their range. Target (issue 13): no measurable cost on the steps that
are not recorded, i.e. the idle ratio's range straddles 1.00 or lies within the rounds' own spread.

``--clock cpu`` times each step by the main thread's CPU time (``time.thread_time_ns`` around the step, 1
intra-op thread) instead of the wall time between ``step()`` calls: on a machine other jobs load, the time a
step waits for a core is not the recorder's cost. ``--compare-src DIR`` adds a third process per round, the
same ``every`` loop importing benchmint from ``DIR/src`` (e.g. ``git archive`` of an earlier commit), so that
a change to the recorder is measured against the one before it inside one run (A B C A B C ...).

    python benchmarks/capture_cost.py [--workloads transformer_train,cnn_train,embbag_train,moe]
        [--design interleave|processes] [--block 4] [--after 3] [--rounds 5] [--steps 400|60] [--every 10]
        [--clock wall|cpu] [--compare-src DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(mode: str, workload: str, steps: int, every: int, warmup: int, out: str, clock: str = "wall",
          after: int = 3) -> dict:
    """One process's loop; returns its step times (seconds)."""
    import torch

    from benchmint.models import workloads

    torch.set_num_threads(1)
    w = workloads.build(workload)
    for _ in range(warmup):
        w.step()
    if mode == "plain":
        times = []
        t0 = time.perf_counter_ns()
        for _ in range(steps):
            c0 = time.thread_time_ns()
            w.step()
            t1 = time.perf_counter_ns()
            times.append((t1 - t0) / 1e9 if clock == "wall" else (time.thread_time_ns() - c0) / 1e9)
            t0 = t1
        return {"unobserved": times, "recorded": [], "idle": times, "after": [], "kinds": ["unobserved"] * len(times)}
    from benchmint.trace.capture import Capture

    # warm-up done above; measure=5 un-observed steps before the first recording (the minimum the class takes)
    cap = Capture(out, warmup=0, measure=5, record=max(1, (steps - 5) // every), discard=0, every=every,
                  model=getattr(w, "model", None))
    out_t: dict[str, list] = {"unobserved": [], "recorded": [], "idle": [], "after": [], "kinds": []}
    since = after + 1  # un-observed steps since the last recording: the first ``after`` are set apart, as
    with cap:  # Capture itself sets them apart (AFTER_RECORDING)
        for _ in range(steps):
            rec = cap.recording
            kind = ("recorded" if rec else "idle" if (cap.recorded_times_s or cap.discarded_times_s)
                    else "unobserved")
            if kind == "idle":
                since += 1
                kind = "after" if since <= after else kind
            out_t["kinds"].append(kind)
            c0 = time.thread_time_ns()
            w.step()
            out_t[kind].append((time.thread_time_ns() - c0) / 1e9)
            cap.step()
            if rec and not cap.recording:
                since = 0
    if clock == "wall":  # the recorder's own times: wall time between step() calls
        out_t.update(unobserved=cap.step_times_s, recorded=cap.recorded_times_s, idle=cap.idle_times_s,
                     after=[t for _k, t in getattr(cap, "after_times_s", ())])  # (an older --compare-src)
    return out_t


def child_ab(workload: str, steps: int, every: int, warmup: int, out: str, block: int, clock: str,
             after: int = 3) -> dict:
    """One process, both sides interleaved (``--design interleave``): blocks of ``block`` steps alternate between
    the loop with the recorder attached (``Capture(every=N)``'s ``step()`` after each step, recording one step
    in every N of ITS steps) and the same loop without it (no ``step()`` call), the order of the two swapping
    each pair (a drift within a pair, as the process settles after a recording, would otherwise always land on
    the same side). Recorded steps are left out
    (a block that ends while a recording is open runs on until it closes). Only block pairs after the first
    recording count, so both sides carry whatever that recording left in the process; the pair's ratio is
    the idle block's median step over the plain block's.

    The ``after`` steps that follow a recording, on either side, are set aside (``after_idle``/``after_plain``,
    by their distance from it): any pause slows the next steps, the first most (a recording writes its trace:
    moe's first step after one ran 2.2x, the next 1.23x, 1.13x, 1.09x; the same loop after touching 256 MB ran
    2.40, 1.24, 1.16, 1.14x, after a 50 ms sleep 2.04, 1.08, 1.02x). That is what recording costs the steps
    beside it, reported apart; the blocks compare the recorder attached and idle with nothing attached. The
    steps just past ``after`` still carry a little of it (1.01-1.04x) and land more often in plain blocks (a
    recording opens in an idle block; with every 10 and blocks of 4, positions 4-6 fell 41 times on the plain
    side and 19 on the idle side): idle/plain reads about 0.3% low for moe's profile, more with other settings."""
    import torch

    from benchmint.models import workloads
    from benchmint.trace.capture import Capture

    torch.set_num_threads(1)
    w = workloads.build(workload)
    for _ in range(warmup):
        w.step()

    def timed() -> float:
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        w.step()
        return ((time.perf_counter_ns() - t0) if clock == "wall" else (time.thread_time_ns() - c0)) / 1e9

    cap = Capture(out, warmup=0, measure=5, record=max(1, steps // every), discard=0, every=every,
                  model=getattr(w, "model", None))
    idle_b, plain_b, recorded = [], [], []
    aside: dict[str, dict[int, list[float]]] = {"idle": {}, "plain": {}}
    since = [after + 1]  # steps since the last recording closed

    def kept(side: str, t: float, xs: list[float]) -> None:
        since[0] += 1
        if since[0] <= after:
            aside[side].setdefault(since[0], []).append(t)
        else:
            xs.append(t)

    def plain_block() -> list[float]:
        ys: list[float] = []
        for _ in range(block):
            kept("plain", timed(), ys)
        return ys

    with cap:
        for _ in range(5):  # the un-observed steps Capture measures before its first recording
            timed()
            cap.step()
        for k in range(max(1, steps // (2 * block))):
            ys = plain_block() if k % 2 else []  # the order swaps each pair (A B, B A, ...)
            xs: list[float] = []
            for _ in range(block):
                rec = cap.recording
                t = timed()
                cap.step()
                if rec:
                    recorded.append(t)
                    if not cap.recording:
                        since[0] = 0
                else:
                    kept("idle", t, xs)
            while cap.recording:  # a recording the block opened: closed before the plain block
                recorded.append(timed())
                cap.step()
                since[0] = 0
            if not k % 2:
                ys = plain_block()
            if cap.recorded_times_s and xs and ys:
                idle_b.append(statistics.median(xs))
                plain_b.append(statistics.median(ys))
    return {"idle_blocks": idle_b, "plain_blocks": plain_b, "recorded": recorded,
            "after_idle": {str(d): v for d, v in sorted(aside["idle"].items())},
            "after_plain": {str(d): v for d, v in sorted(aside["plain"].items())}}


def same_steps(plain: dict, every: dict, kind: str) -> float:
    """The median of the plain process's steps at the loop positions of ``every``'s steps of ``kind``: a step
    whose time drifts along the loop (an optimizer's state growing) is compared with itself, not with the
    plain run's whole loop."""
    idx = [i for i, k in enumerate(every["kinds"]) if k == kind][-len(every[kind]):] if every[kind] else []
    xs = [plain["unobserved"][i] for i in idx if i < len(plain["unobserved"])]
    return statistics.median(xs) if xs else statistics.median(plain["unobserved"])


def run_child(mode: str, args: argparse.Namespace, workload: str, tmp: Path, r: int, src: Path = ROOT) -> dict:
    out = tmp / f"{workload}-{mode}-{r}-{src.name}"
    cmd = [sys.executable, __file__, "--child", mode, "--workloads", workload, "--steps", str(args.steps),
           "--every", str(args.every), "--warmup", str(args.warmup), "--out", str(out), "--clock", args.clock,
           "--after", str(args.after)]
    env = dict(os.environ, PYTHONPATH=str(src / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"{workload} {mode}: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_ab(args: argparse.Namespace, workload: str, tmp: Path) -> dict:
    out = tmp / f"{workload}-ab"
    cmd = [sys.executable, __file__, "--child", "ab", "--workloads", workload, "--steps", str(args.steps),
           "--every", str(args.every), "--warmup", str(args.warmup), "--out", str(out), "--clock", args.clock,
           "--block", str(args.block), "--after", str(args.after)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"{workload} ab: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main_interleave(args: argparse.Namespace) -> int:
    from benchmint.core.paired import describe, paired_ratios, ratio_interval

    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(f"design interleave: one process per workload, blocks of {args.block} steps alternating recorder "
          f"attached (idle) / not attached; {args.steps} steps, every {args.every}, 1 thread, clock {args.clock}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="benchmint-capcost-") as td:
        for wl in args.workloads.split(","):
            r = run_ab(args, wl, Path(td))
            res = ratio_interval(paired_ratios(r["idle_blocks"], r["plain_blocks"]))
            plain = statistics.median(r["plain_blocks"]) if r["plain_blocks"] else float("nan")
            rec = statistics.median(r["recorded"]) / plain if r["recorded"] else None
            # the steps just after a recording, by distance, over the plain blocks' median (either side: a
            # pause of any kind slows them; child_ab)
            after = {d: statistics.median(r["after_idle"].get(d, []) + r["after_plain"].get(d, [])) / plain
                     for d in sorted(set(r["after_idle"]) | set(r["after_plain"]), key=int)}
            rows.append({"workload": wl, "plain_step_s": plain, "idle_over_plain": res,
                         "recorded_over_plain": rec, "recordings": len(r["recorded"]), "clock": args.clock,
                         "block": args.block, "after_recording_over_plain": after})
            print(f"{wl:<18} plain {plain * 1e3:8.2f} ms  idle/plain {describe(res)}; recorded/plain "
                  f"{rec or float('nan'):.2f} ({len(r['recorded'])} recorded steps)"
                  + (f"; the {args.after} steps after a recording (set aside) / plain "
                     f"{', '.join(f'{v:.2f}' for v in after.values())}" if after else ""), flush=True)
    print(f"uptime: {os.popen('uptime').read().strip()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"schema_version": "1.0", "design": "interleave", "rows": rows},
                                              indent=2))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default="transformer_train,cnn_train,embbag_train,moe")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None, help="steps per process (default: 400 interleaved, 60 "
                    "per process with --design processes)")
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--compare-src", default=None, help="a tree with src/benchmint: its recorder, alternated too")
    ap.add_argument("--json", default=None)
    ap.add_argument("--design", choices=["interleave", "processes"], default="interleave",
                    help="interleave: both sides in one process, alternating blocks; processes: A B A B processes")
    ap.add_argument("--block", type=int, default=4, help="steps per block (--design interleave)")
    ap.add_argument("--after", type=int, default=3, help="steps after each recording set aside from the blocks "
                    "and reported apart, as capture.json's recording_cost sets them apart (AFTER_RECORDING)")
    ap.add_argument("--child", choices=["plain", "every", "ab"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps is None:
        args.steps = 400 if args.design == "interleave" else 60
    if args.child == "ab":
        print(json.dumps(child_ab(args.workloads, args.steps, args.every, args.warmup, args.out, args.block,
                                  args.clock, args.after)))
        return 0
    if args.child:
        print(json.dumps(child(args.child, args.workloads, args.steps, args.every, args.warmup, args.out,
                               args.clock, args.after)))
        return 0
    if args.design == "interleave":
        return main_interleave(args)
    med = statistics.median
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; rounds {args.rounds}, steps "
          f"{args.steps}, every {args.every}, 1 thread, clock {args.clock}"
          + (f"; 'compare': the recorder of {args.compare_src}" if args.compare_src else ""))
    print(f"{'workload':<18} {'plain step':>11} {'idle/plain':>11} {'range':>15} {'recorded/plain':>15} "
          f"{'idle steps':>10} {'recordings':>10}" + (f" {'compare idle/plain':>19} {'range':>15}"
                                                      if args.compare_src else ""))
    rows = []
    with tempfile.TemporaryDirectory(prefix="benchmint-capcost-") as td:
        for wl in args.workloads.split(","):
            idle_r, rec_r, base, cmp_r = [], [], [], []
            n_idle = n_rec = 0
            for r in range(args.rounds):
                a = run_child("plain", args, wl, Path(td), r)
                b = run_child("every", args, wl, Path(td), r)
                base.append(med(a["unobserved"]))
                if args.compare_src:
                    c = run_child("every", args, wl, Path(td), r, Path(args.compare_src).resolve())
                    if c["idle"]:
                        cmp_r.append(med(c["idle"]) / same_steps(a, c, "idle"))
                if b["idle"]:
                    idle_r.append(med(b["idle"]) / same_steps(a, b, "idle"))
                if b["recorded"]:
                    rec_r.append(med(b["recorded"]) / same_steps(a, b, "recorded"))
                n_idle, n_rec = len(b["idle"]), len(b["recorded"])
            row = {"workload": wl, "plain_step_s": med(base), "idle_over_plain": med(idle_r) if idle_r else None,
                   "idle_over_plain_min": min(idle_r, default=None), "idle_over_plain_max": max(idle_r, default=None),
                   "recorded_over_plain": med(rec_r) if rec_r else None, "idle_steps": n_idle,
                   "recordings": n_rec, "rounds": args.rounds, "clock": args.clock}
            if cmp_r:
                row |= {"compare_idle_over_plain": med(cmp_r), "compare_idle_over_plain_min": min(cmp_r),
                        "compare_idle_over_plain_max": max(cmp_r)}
            rows.append(row)
            rng = f"{row['idle_over_plain_min']:.3f}-{row['idle_over_plain_max']:.3f}" if idle_r else "-"
            extra = f" {med(cmp_r):>19.3f} {min(cmp_r):>7.3f}-{max(cmp_r):.3f}" if cmp_r else ""
            print(f"{wl:<18} {row['plain_step_s'] * 1e3:>9.2f}ms {row['idle_over_plain'] or float('nan'):>11.3f} "
                  f"{rng:>15} {row['recorded_over_plain'] or float('nan'):>15.2f} {n_idle:>10} {n_rec:>10}{extra}",
                  flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"schema_version": "1.0", "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

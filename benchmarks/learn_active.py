"""Active vs random choice of the next run, on this machine (the learning curves of `benchmint next`).

1. Measure every configuration of a small space (the tiny model behind the built-in server on 127.0.0.1, or
   in-process) ``--passes`` times, in passes over the whole grid: the ground truth is each configuration's
   median (or best) over the passes, and the spread of the passes is the noise floor.
2. Simulate both strategies on that grid: `active` picks one run at a time as `benchmint next --budget 1`
   does (the widest 90% interval of the GP model, after a space-filling start); `random` picks uniformly
   (several seeds). After each measured run, the model is fitted on the runs measured so far and its median
   APE is taken on every configuration NOT measured.
3. Print both curves side by side and the number of runs each needs to reach a median APE <= 10%, for each
   target: output tokens per wall-clock second, and output tokens per CPU second of the process (client and
   server), which other work on a shared machine disturbs much less.

    PYTHONPATH=src python benchmarks/learn_active.py [--backend builtin-server|transformers] [--passes 3]
        [--max-runs 30] [--seeds 8] [--grid-json FILE] [--truth median|best]

--grid-json keeps the measured grid (written when absent, read when present) so that the simulation can be
rerun without measuring again. The runs are not stored in the results store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

AXES = {"concurrency": [1, 2, 4, 8], "max_batch_size": [1, 2, 4, 8], "output_tokens": [8, 16, 32]}
FIXED = {"scenario": "concurrency", "num_requests": 16, "dataset": "synthetic", "input_tokens": 32, "warmup": 2}
TARGETS = ("output_tokens_per_s", "output_tokens_per_cpu_s")


def measure_grid(backend: str, passes: int) -> dict:
    """Every configuration, ``passes`` times, in passes over the whole grid (a slow spell of a shared machine
    then spreads over many configurations instead of hitting a few)."""
    from benchmint.learn.measure import Measurer
    from benchmint.learn.space import TARGETS as ALL
    from benchmint.learn.space import parse_space

    space = parse_space({"name": "bench-active", "backend": backend, "model": "tiny", "fixed": FIXED,
                         "axes": AXES}, "benchmarks/learn_active.py")
    grid = space.grid()
    t0 = time.monotonic()

    def once(m: Measurer, p: dict) -> dict[str, float | None]:
        for attempt in range(3):  # a shared machine may refuse a thread now and then: try again
            try:
                rec = m.measure(p)[0]
                return {t: ALL[t].value(rec) for t in TARGETS}
            except RuntimeError as e:
                print(f"\n  {p}: {e} (attempt {attempt + 1})", file=sys.stderr)
                time.sleep(2)
        return dict.fromkeys(TARGETS)

    runs: dict[str, list[list[float | None]]] = {t: [] for t in TARGETS}
    with Measurer(space, store=False, out_dir="/tmp/benchmint-learn-active") as m:
        for k in range(passes):
            rows: dict[str, list] = {t: [] for t in TARGETS}
            for i, p in enumerate(grid):
                got = once(m, p)
                for t in TARGETS:
                    rows[t].append(got[t])
                print(f"\r  pass {k + 1}/{passes}: measured {i + 1}/{len(grid)} ({time.monotonic() - t0:.0f} s)",
                      end="", file=sys.stderr)
            for t in TARGETS:
                runs[t].append(rows[t])
    print(file=sys.stderr)
    return {"backend": backend, "axes": AXES, "fixed": FIXED, "grid": grid, "passes": runs,
            "measure_s": time.monotonic() - t0}


def first_below(curve: dict[int, float], level: float) -> int | None:
    return next((n for n, e in sorted(curve.items()) if e <= level), None)


def simulate(data: dict, target: str, args: argparse.Namespace) -> None:
    from benchmint.learn.active import active_order, encode, learning_curve
    from benchmint.learn.space import TARGETS as ALL

    passes = np.array([[np.nan if v is None else v for v in row] for row in data["passes"][target]], dtype=float)
    higher = ALL[target].better == "higher"
    best = np.nanmax(passes, axis=0) if higher else np.nanmin(passes, axis=0)
    truth = np.nanmedian(passes, axis=0) if args.truth == "median" else best
    keep = [i for i, v in enumerate(truth) if np.isfinite(v) and v > 0]
    grid = [data["grid"][i] for i in keep]
    y = truth[keep]
    X = encode(grid, data["axes"])
    if args.truth == "median":  # the noise floor: one measurement vs its configuration's median
        dev, how = np.abs(passes[:, keep] - y) / y, "one measurement vs its configuration's median"
    else:
        srt = np.sort(passes[:, keep], axis=0)
        dev, how = np.abs((srt[-2] if higher else srt[1]) - y) / y, "second best vs best measurement"
    print(f"\n== target {target} ({ALL[target].unit}); truth = the {args.truth} of {len(passes)} passes ==")
    print(f"values: min {y.min():.4g}, median {np.median(y):.4g}, max {y.max():.4g}; noise floor ({how}): "
          f"median {np.nanmedian(dev):.1%}, p90 {np.nanpercentile(dev, 90):.1%}; a constant (the median of "
          f"the whole grid, known in advance) has median APE {np.median(np.abs(np.median(y) - y) / y):.1%}")
    n_max = min(args.max_runs, len(y) - 1)
    t0 = time.monotonic()
    active = dict(learning_curve(X, y, active_order(grid, data["axes"], y, n_max)))
    randoms = [dict(learning_curve(X, y, np.random.default_rng(100 + s).permutation(len(y))[:n_max].tolist()))
               for s in range(args.seeds)]
    print(f"(simulation {time.monotonic() - t0:.0f} s; random = {args.seeds} seeds; median APE on the "
          f"configurations not measured)")
    print(f"{'runs':>4}  {'active':>8}  {'random p50':>10}  {'random p25':>10}  {'random p75':>10}")
    for n in sorted(active):
        r = np.array([c[n] for c in randoms if n in c])
        print(f"{n:>4}  {active[n]:>8.1%}  {np.median(r):>10.1%}  {np.percentile(r, 25):>10.1%}  "
              f"{np.percentile(r, 75):>10.1%}")
    a_n = first_below(active, args.level)
    r_ns = [first_below(c, args.level) for c in randoms]
    reached = [n for n in r_ns if n is not None]
    r_med = float(np.median([n if n is not None else n_max + 1 for n in r_ns]))
    print(f"runs to median APE <= {args.level:.0%}: active {a_n if a_n is not None else f'not within {n_max}'}, "
          f"random median {r_med:g} ({len(reached)}/{len(r_ns)} seeds reached it within {n_max} runs"
          + (f"; a seed that did not counts as {n_max + 1})" if len(reached) < len(r_ns) else ")"))
    ok = a_n is not None and a_n < r_med
    print(f"target (active reaches it with fewer runs than random): {'met' if ok else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="builtin-server", choices=("builtin-server", "transformers"))
    ap.add_argument("--target", action="append", choices=TARGETS, help="simulate only this target (repeatable)")
    ap.add_argument("--max-runs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--passes", type=int, default=3, help="measurements of each configuration")
    ap.add_argument("--grid-json", type=Path, default=None)
    ap.add_argument("--truth", default="median", choices=("median", "best"),
                    help="a configuration's true value: the median of its passes, or the best (the highest "
                    "throughput: the run least disturbed by other work on a shared machine)")
    ap.add_argument("--level", type=float, default=0.10)
    args = ap.parse_args()

    if args.grid_json and args.grid_json.exists():
        data = json.loads(args.grid_json.read_text())
    else:
        data = measure_grid(args.backend, args.passes)
        if args.grid_json:
            args.grid_json.write_text(json.dumps(data, indent=1))
    print(f"space: {' x '.join(f'{a} {v}' for a, v in data['axes'].items())} = {len(data['grid'])} configurations "
          f"({data['backend']}, tiny model, {data['fixed']}); measured in {data.get('measure_s', 0):.0f} s")
    for t in args.target or TARGETS:
        simulate(data, t, args)


if __name__ == "__main__":
    main()

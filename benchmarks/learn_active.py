"""Active vs random choice of the next run, on this machine (the learning curves of `benchmint next`).

1. Measure every configuration of a small space once (the tiny model in-process, or behind the built-in
   server on 127.0.0.1): the ground truth. A few configurations are measured twice: the noise floor.
2. Simulate both strategies on that grid: `active` picks one run at a time as `benchmint next --budget 1`
   would (the widest 90% interval of the GP model, after a space-filling start); `random` picks uniformly
   (several seeds). After each measured run, the model is fitted on the runs measured so far and its median
   APE is taken on every configuration NOT measured.
3. Print both curves side by side and the number of runs each needs to reach a median APE <= 10%.

    PYTHONPATH=src python benchmarks/learn_active.py [--backend transformers|builtin-server]
        [--target output_tokens_per_s] [--max-runs 40] [--seeds 20] [--grid-json FILE]

--grid-json keeps the measured grid (written when absent, read when present) so the simulation can be rerun
without measuring again. Runs are not stored in the results store.
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


def measure_grid(backend: str, target: str, passes: int) -> dict:
    """Every configuration, ``passes`` times, in passes over the whole grid (a slow spell of a shared machine
    then spreads over many configurations instead of hitting a few); the truth is the median of the passes."""
    from benchmint.learn.measure import Measurer
    from benchmint.learn.space import parse_space

    space = parse_space({"name": "bench-active", "backend": backend, "model": "tiny", "target": target,
                         "fixed": FIXED, "axes": AXES}, "benchmarks/learn_active.py")
    grid = space.grid()
    t0 = time.monotonic()

    def once(m: Measurer, p: dict) -> float | None:
        for attempt in range(3):  # a shared machine may refuse a thread now and then: try again
            try:
                return m.measure(p)[1]
            except RuntimeError as e:
                print(f"\n  {p}: {e} (attempt {attempt + 1})", file=sys.stderr)
                time.sleep(2)
        return None

    runs: list[list[float | None]] = []
    with Measurer(space, store=False, out_dir="/tmp/benchmint-learn-active") as m:
        for k in range(passes):
            row = []
            for i, p in enumerate(grid):
                row.append(once(m, p))
                print(f"\r  pass {k + 1}/{passes}: measured {i + 1}/{len(grid)} ({time.monotonic() - t0:.0f} s)",
                      end="", file=sys.stderr)
            runs.append(row)
    print(file=sys.stderr)
    return {"backend": backend, "target": target, "axes": AXES, "fixed": FIXED, "grid": grid, "passes": runs,
            "measure_s": time.monotonic() - t0}


def first_below(curve: list[tuple[int, float]], level: float) -> int | None:
    return next((n for n, e in curve if e <= level), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="transformers", choices=("transformers", "builtin-server"))
    ap.add_argument("--target", default="output_tokens_per_s")
    ap.add_argument("--max-runs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--passes", type=int, default=3, help="measurements of each configuration (truth: median)")
    ap.add_argument("--grid-json", type=Path, default=None)
    ap.add_argument("--level", type=float, default=0.10)
    args = ap.parse_args()

    from benchmint.learn.active import active_order, encode, learning_curve

    if args.grid_json and args.grid_json.exists():
        data = json.loads(args.grid_json.read_text())
    else:
        data = measure_grid(args.backend, args.target, args.passes)
        if args.grid_json:
            args.grid_json.write_text(json.dumps(data, indent=1))
    passes = np.array([[np.nan if v is None else v for v in row] for row in data["passes"]], dtype=float)
    truth = np.nanmedian(passes, axis=0)
    keep = [i for i, v in enumerate(truth) if np.isfinite(v) and v > 0]
    grid = [data["grid"][i] for i in keep]
    y = truth[keep]
    X = encode(grid, data["axes"])
    # the noise floor: how far one measurement lies from the median of its configuration's passes
    dev = np.abs(passes[:, keep] - y) / y
    print(f"space: {' x '.join(f'{a} {v}' for a, v in data['axes'].items())} = {len(data['grid'])} configurations "
          f"({data['backend']}, tiny model, {data['fixed']}); each measured {len(passes)} times in "
          f"{data.get('measure_s', 0):.0f} s; truth = the median of the passes")
    print(f"target {data['target']}: min {y.min():.4g}, median {np.median(y):.4g}, max {y.max():.4g}; noise floor "
          f"(one measurement vs its configuration's median): median {np.nanmedian(dev):.1%}, p90 "
          f"{np.nanpercentile(dev, 90):.1%}")
    n_max = min(args.max_runs, len(y) - 1)
    t0 = time.monotonic()
    order = active_order(grid, data["axes"], y, n_max)
    active = dict(learning_curve(X, y, order))
    randoms = []
    for s in range(args.seeds):
        perm = np.random.default_rng(100 + s).permutation(len(y))[:n_max].tolist()
        randoms.append(dict(learning_curve(X, y, perm)))
    print(f"(simulation {time.monotonic() - t0:.0f} s; random = {args.seeds} seeds)\n")
    print(f"{'runs':>4}  {'active':>8}  {'random p50':>10}  {'random p25':>10}  {'random p75':>10}")
    for n in sorted(active):
        r = np.array([c[n] for c in randoms if n in c])
        print(f"{n:>4}  {active[n]:>8.1%}  {np.median(r):>10.1%}  {np.percentile(r, 25):>10.1%}  "
              f"{np.percentile(r, 75):>10.1%}")
    a_n = first_below(sorted(active.items()), args.level)
    r_ns = [first_below(sorted(c.items()), args.level) for c in randoms]
    reached = [n for n in r_ns if n is not None]
    r_med = float(np.median([n if n is not None else n_max + 1 for n in r_ns]))
    print(f"\nruns to median APE <= {args.level:.0%} on the configurations not measured: active {a_n}, random "
          f"median {r_med:g} ({len(reached)}/{len(r_ns)} seeds reached it within {n_max} runs"
          + (f"; a seed that did not counts as {n_max + 1})" if len(reached) < len(r_ns) else ")"))
    ok = a_n is not None and a_n < r_med
    print(f"target (active reaches it with fewer runs than random): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()

"""Execution-trace loading speed and memory against a plain ``orjson.loads`` of the same bytes.

For each of the largest shared traces, on the decompressed bytes (decompression costs both sides the same):

* ``orjson s``: median time of ``orjson.loads(data)`` (the process as is: garbage collector on);
* ``load s``: median time of ``benchmint.trace.load_bytes(data)``: decode + normalize into the typed model
  (header, nodes ordered by id, parents, standard attributes; arguments are decoded on first access);
* ``ratio`` = load / orjson (target: <= 1.5); ``ratio*`` = load / orjson with the collector paused for
  orjson too (orjson's best case, the stricter comparison);
* ``peak MB``: tracemalloc peak of ``load_bytes(data)`` (what it allocates, live trace included, the input
  bytes excluded), and ``peak/file`` = peak / decompressed file size (target: <= 4);
* ``+args s``: the extra time to decode every node's typed arguments too (``Trace.validate()``), which a replay
  planner pays once; and ``orjson peak/file`` for comparison.

The two sides alternate, ``--rounds`` times each (default 7), and medians are quoted.

    python benchmarks/trace_load.py [--rounds N] [TRACE ...]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import orjson

from benchmint.trace import load_bytes, read_bytes

HERE = Path(__file__).resolve().parent
CANDIDATES = [
    Path(os.environ.get("BENCHMINT_PARAM_TRACES", HERE.parent.parent / "shared" / "traces" / "param")),
    HERE.parent / "tests" / "data" / "param",
]
DEFAULT = ["hf_GPT2_et.json.tar.gz", "resnet_1gpu_et.json.tar.gz", "resnet_et.json.gz",
           "1.1.0-chakra.0.0.4/resnet_2gpu_et.json.gz", "dlrm_pytorch_et.tar.gz", "linear_et.json.gz"]


def _find(name: str) -> Path | None:
    p = Path(name)
    if p.exists():
        return p
    for base in CANDIDATES:
        if (base / name).exists():
            return base / name
    return None


def _timed(fn, data: bytes) -> float:
    t0 = time.perf_counter()
    obj = fn(data)
    dt = time.perf_counter() - t0
    del obj
    return dt


def _peak(fn, data: bytes) -> int:
    gc.collect()
    tracemalloc.start()
    obj = fn(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del obj
    gc.collect()
    return peak


def _orjson_nogc(data: bytes):
    was = gc.isenabled()
    gc.disable()
    try:
        return orjson.loads(data)
    finally:
        if was:
            gc.enable()


def bench(path: Path, rounds: int) -> dict:
    data, _ = read_bytes(path)
    o, o2, ld, full = [], [], [], []
    nodes = 0
    for _ in range(rounds):  # alternate the sides
        o.append(_timed(orjson.loads, data))
        gc.collect()
        ld.append(_timed(load_bytes, data))
        gc.collect()
        o2.append(_timed(_orjson_nogc, data))
        gc.collect()
        tr = load_bytes(data)
        nodes = len(tr.nodes)
        t0 = time.perf_counter()
        tr.validate()
        full.append(time.perf_counter() - t0)
        del tr
        gc.collect()
    peak = _peak(load_bytes, data)
    opeak = _peak(orjson.loads, data)
    mb = len(data) / 1e6
    med = statistics.median
    return {
        "trace": path.name, "file_mb": mb, "nodes": nodes, "orjson_s": med(o), "orjson_nogc_s": med(o2),
        "load_s": med(ld), "ratio": med(ld) / med(o), "ratio_strict": med(ld) / med(o2),
        "peak_mb": peak / 1e6, "peak_per_file": peak / len(data), "args_s": med(full),
        "orjson_peak_per_file": opeak / len(data),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="*", help="trace files (default: the largest shared PARAM traces)")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    paths = []
    for name in args.traces or DEFAULT:
        p = _find(name)
        if p is None:
            print(f"skip {name}: not found (set BENCHMINT_PARAM_TRACES)", file=sys.stderr)
            continue
        paths.append(p)
    if not paths:
        print("no traces found", file=sys.stderr)
        return 1
    hdr = (f"{'trace':34} {'file MB':>8} {'nodes':>6} {'orjson s':>9} {'load s':>8} {'ratio':>6} {'ratio*':>7} "
           f"{'peak MB':>8} {'peak/file':>9} {'+args s':>8} {'orjson peak/file':>16}")
    print(f"python {sys.version.split()[0]}, {args.rounds} alternating rounds, medians; ratio* = against "
          "orjson with the garbage collector paused")
    print(hdr)
    print("-" * len(hdr))
    worst_ratio = worst_peak = 0.0
    for p in paths:
        r = bench(p, args.rounds)
        print(f"{r['trace']:34} {r['file_mb']:8.1f} {r['nodes']:6d} {r['orjson_s']:9.3f} {r['load_s']:8.3f} "
              f"{r['ratio']:6.2f} {r['ratio_strict']:7.2f} {r['peak_mb']:8.1f} {r['peak_per_file']:9.2f} "
              f"{r['args_s']:8.3f} {r['orjson_peak_per_file']:16.2f}", flush=True)
        worst_ratio = max(worst_ratio, r["ratio_strict"])
        worst_peak = max(worst_peak, r["peak_per_file"])
    ok = worst_ratio <= 1.5 and worst_peak <= 4.0
    print(f"targets: ratio* <= 1.5 (worst {worst_ratio:.2f}), peak/file <= 4 (worst {worst_peak:.2f}): "
          f"{'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

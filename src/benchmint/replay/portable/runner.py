"""Replay this exported benchmark: ``python run.py [--device cpu|cuda] [--threads N] [--warmup N] [--iters N]
[--gaps recorded|none] [--gaps-from FILE] [--target auto|capture|estimate|cpu] [--json PATH]``. Needs only PyTorch.

Written by ``benchmint export``: the folder holds the recorded step (``trace/``), the replay engine that
``benchmint replay`` runs (``_benchmint_replay/``, benchmint's own modules, imported from here) and
``export.json`` (what was exported, with which selection). The result has the keys of ``benchmint replay
--json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
# an environment with torch and nothing else has no NumPy: torch warns about it on import, and the runner
# never hands torch a NumPy array
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")


def _clean(x):
    """JSON-safe: NaN and infinities become null, tuples lists, anything else its text."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if x is None or isinstance(x, bool | int | str):
        return x
    return str(x)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="run.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="cpu or cuda[:N] (default: the trace's device when available)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the capture's)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default: 3)")
    ap.add_argument("--iters", type=int, default=20, help="timed iterations (default: 20)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic tensor contents (default: 0)")
    ap.add_argument("--gaps", choices=("recorded", "none"), default=None,
                    help="recorded: calibrate the CPU time between ops here (default when the Kineto trace is there "
                         "and the folder has no gaps.json); none: the ops back to back")
    ap.add_argument("--gaps-from", default=None,
                    help="spend the CPU work between ops saved in this gaps file (default: the folder's gaps.json, "
                         "when it has one and --gaps is not given)")
    ap.add_argument("--target", choices=("auto", "capture", "estimate", "cpu"), default="auto",
                    help="what recorded gaps aim at, as benchmint replay --target (default: capture.json when there)")
    ap.add_argument("--index-spread", default=None,
                    help="made-up lookup indices: auto, uniform or zipf:E, as benchmint replay --index-spread "
                         "(default: what the export was given, else auto)")
    ap.add_argument("--json", default=None, help="write the result as JSON here")
    ap.add_argument("--no-memory-check", action="store_true", help="plan even when the tensors may not fit")
    args = ap.parse_args(argv)
    if args.json:  # a path that cannot be written fails now, not after the run
        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        except OSError as e:
            print(f"error: --json {args.json}: cannot write there ({e.strerror}); give a writable path",
                  file=sys.stderr)
            return 2

    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # the ET observer's start/stop lines
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    with open(os.path.join(HERE, "export.json")) as f:
        cfg = json.load(f)

    try:
        import torch  # noqa: F401  (the one thing this benchmark needs)
    except ModuleNotFoundError as e:
        if e.name != "torch":  # torch is there and one of its own imports failed: that error, not "install"
            raise
        print(f"error: this benchmark needs PyTorch (it was recorded with torch "
              f"{(cfg.get('original') or {}).get('torch_version') or 'of its export'}): pip install torch",
              file=sys.stderr)
        return 2
    from _benchmint_replay.core.errors import UserError
    from _benchmint_replay.replay.adapt import describe
    from _benchmint_replay.replay.api import replay_trace
    from _benchmint_replay.replay.headline import headline, retyped_line, threads_line
    from _benchmint_replay.replay.index_effect import lines as spread_lines

    gaps_from = args.gaps_from
    if gaps_from is None and args.gaps is None and cfg.get("gaps_file"):
        gaps_from = os.path.join(HERE, cfg["gaps_file"])
    try:
        res = replay_trace(os.path.join(HERE, cfg["trace"]), os.path.join(HERE, cfg["kineto"]) if cfg.get("kineto")
                           else None, device=args.device, threads=args.threads, warmup=args.warmup,
                           iters=args.iters, seed=args.seed, gaps=args.gaps, target=args.target, memory_check=not args.no_memory_check,
                           select=cfg.get("select"), what_if=cfg.get("what_if"), iteration=cfg.get("iteration"),
                           scale=tuple(cfg.get("scale") or ()), gaps_from=gaps_from,
                           index_spread=args.index_spread or cfg.get("index_spread") or "auto")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    r = dict(res.result)
    r["per_op_type"] = res.per_op_type
    r["exported"] = {k: cfg.get(k) for k in ("benchmint_version", "exported_at", "source", "select", "what_if",
                                                    "scale", "index_spread")}
    r["runner"] = {"python": sys.version.split()[0], "executable": sys.executable}
    # the headline benchmint replay prints: the measurement, or why it is noise, or why there is none
    lines = headline(r)
    lines[0] += f" [{r['device']}, {r['threads']} thread{'s' if r['threads'] != 1 else ''}]"
    for extra in lines + describe(r):  # then what was selected, scaled or changed, and how the step moved with it
        print(extra)
    gf = r.get("gaps_from")
    if gf:  # the folder's gaps.json (by default) or --gaps-from: spent as saved, not calibrated here
        print(f"gaps: {gf['turns']} spin turns of CPU work between ops from {os.path.basename(str(gf['path']))}, "
              "settled by the replay that saved them (--gaps recorded calibrates them here instead)")
    retyped = retyped_line(r)  # ops that ran in another dtype than the original's
    if retyped:
        print(retyped)
    threads = threads_line(r)  # --threads other than the capture's: the error holds that difference
    if threads and threads not in lines:
        print(threads)
    for extra in spread_lines(r):  # the made-up lookup indices' spread was a guess: how much it moves the step
        print(extra)
    for s in r.get("skipped", [])[:5]:
        print(f"skipped {s['op']} x{s['count']}: {s['reason']}")
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(_clean(r), f, indent=2)
                f.write("\n")
        except OSError as e:
            print(f"error: --json {args.json}: cannot write it ({e.strerror}); the result is above", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C: a line, not the replay engine's traceback
        print("interrupted", file=sys.stderr)
        sys.exit(130)

"""Print the held-out evaluation of the throughput predictor on the Open MLPerf dataset, for every split.

    python benchmarks/learn_eval.py [PATH] [--json OUT] [--splits random,accelerator,...]

PATH: an Open MLPerf ``data.parquet`` / ``data.json`` (default: ``../shared/datasets/openmlperf/data.parquet``
when present, else the copy in ``tests/data/openmlperf``). Targets (issue 12): random split MAPE <= 8%,
leave-one-accelerator-out MAPE <= 20%, 90% interval coverage 85-95% on both.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS = (ROOT.parent / "shared" / "datasets" / "openmlperf" / "data.parquet",
            Path("/work/shared/datasets/openmlperf/data.parquet"),
            ROOT / "tests" / "data" / "openmlperf" / "data.parquet")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--splits", default="random,accelerator,model,submitter,round")
    ap.add_argument("--target", default="tokens_per_s_per_accelerator")
    args = ap.parse_args()
    path = Path(args.path) if args.path else next((p for p in DEFAULTS if p.exists()), DEFAULTS[-1])
    sys.path.insert(0, str(ROOT / "src"))
    from rich.console import Console

    from benchmint.core.jsonio import write_json
    from benchmint.learn.api import eval_table, load_rows
    from benchmint.learn.evaluate import evaluate

    console = Console(width=150)
    df = load_rows(path)
    console.print(f"{path}: {len(df)} rows")
    out = {"schema_version": "1.0", "source": str(path), "splits": {}}
    for split in args.splits.split(","):
        t0 = time.perf_counter()
        res = evaluate(df, args.target, split)
        res.pop("predictions", None)
        out["splits"][split] = res
        console.print(eval_table(res, max_groups=12))
        console.print(f"[dim]{split}: {time.perf_counter() - t0:.0f} s[/]")
    if args.json:
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

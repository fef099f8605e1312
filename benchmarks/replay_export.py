"""Does an exported benchmark time what ``benchmint replay`` times, in an environment with torch alone?

For each example workload: ``benchmint capture --workload NAME``, ``benchmint export``, then, alternating in
the same run (A B A B ...), the exported ``run.py`` under a fresh virtual environment holding only torch
(``python -m venv`` without system site packages, then ``pip install torch==<this torch's version>``; pip's
find-links / cache serve the CPU wheel) and ``benchmint replay`` of the same capture, each in its own
process. Prints per workload the median iteration time of each (median over rounds), their difference, the
ops-only times (the replayed ops without the CPU time between them) and the original (capture.json).

    python benchmarks/replay_export.py [--workloads a,b] [--rounds 2] [--iters 20] [--venv DIR]
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

import torch

from benchmint.models.workloads import WORKLOADS

HERE = Path(__file__).resolve().parent


def clean_env() -> dict[str, str]:
    """This environment without what would let a child find benchmint (PYTHONPATH, an active venv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "BENCHMINT", "VIRTUAL_ENV"))}
    env.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    return env


def torch_only_venv(path: Path) -> Path:
    """A virtual environment holding torch and its requirements only (made once, reused)."""
    py = path / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        version = torch.__version__.split("+")[0]
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"torch=={version}"], check=True)
    check = subprocess.run([str(py), "-c", "import benchmint"], capture_output=True, text=True, env=clean_env())
    if check.returncode == 0:
        raise SystemExit(f"{path}: benchmint is importable there; use a fresh --venv")
    return py


def run_json(cmd: list[str], out: Path, env: dict | None = None, timeout: float = 1800) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({p.returncode}): {p.stderr.strip()[-800:]}")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads on both sides (default: the "
                                                               "capture's)")
    ap.add_argument("--venv", type=Path, default=None, help="torch-only virtual environment (default: a new one)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="benchmint-export-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    venv_py = torch_only_venv(args.venv or work / "venv")
    pkgs = subprocess.run([str(venv_py), "-m", "pip", "list", "--format=freeze"], capture_output=True,
                          text=True).stdout.split()
    print(f"torch-only venv ready in {time.monotonic() - t0:.0f} s: {', '.join(pkgs)}", flush=True)
    env = dict(os.environ)
    env.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    clean = clean_env()
    bm = [sys.executable, "-m", "benchmint.cli.main"]
    rows = []
    for name in args.workloads.split(","):
        cap, exp = work / "cap" / name, work / "export" / name
        if not (cap / "capture.json").exists():
            subprocess.run([*bm, "capture", "--workload", name, "--out", str(cap)], check=True, env=env,
                           capture_output=True)
        subprocess.run([*bm, "export", str(cap), "--out", str(exp), "--force"], check=True, env=env,
                       capture_output=True)
        a, b, loads = [], [], []
        thr = ["--threads", str(args.threads)] if args.threads else []
        for k in range(args.rounds):
            ja, jb = work / f"{name}_export_{k}.json", work / f"{name}_replay_{k}.json"
            loads.append(os.getloadavg()[0])
            a.append(run_json([str(venv_py), str(exp / "run.py"), "--iters", str(args.iters), "--warmup",
                               str(args.warmup), "--json", str(ja), *thr], ja, env=clean))
            loads.append(os.getloadavg()[0])
            b.append(run_json([*bm, "replay", str(cap), "--iters", str(args.iters), "--warmup", str(args.warmup),
                               "--json", str(jb), "--no-store", "--out", str(work / "runs" / f"{name}_{k}"), *thr],
                              jb, env=env))
        loads.append(os.getloadavg()[0])
        ea = statistics.median(r["iter_time_s"]["median"] for r in a)
        eb = statistics.median(r["iter_time_s"]["median"] for r in b)
        oa = statistics.median(r["replay_ops_only_s"] for r in a)
        ob = statistics.median(r["replay_ops_only_s"] for r in b)
        diff = statistics.median(x["iter_time_s"]["median"] / y["iter_time_s"]["median"] - 1 for x, y in zip(a, b, strict=True))
        # the 10th percentile moves less with the other jobs of a shared machine than the median does
        diff10 = statistics.median(x["iter_time_s"]["p10"] / y["iter_time_s"]["p10"] - 1 for x, y in zip(a, b, strict=True))
        rows.append((name, ea, eb, diff, oa, ob, a[0]["original_iter_time_s"], a[0]["coverage"],
                     f"{min(loads):.1f}-{max(loads):.1f}", a[0]["threads"], diff10,
                     sum(bool(r["iter_time_s"].get("noisy")) for r in (*a, *b))))
        each = ", ".join(f"{x['iter_time_s']['median'] * 1e3:.1f}/{y['iter_time_s']['median'] * 1e3:.1f} ms"
                         for x, y in zip(a, b, strict=True))
        print(f"{name}: export {ea * 1e3:.3f} ms, replay {eb * 1e3:.3f} ms, difference {diff * 100:+.1f}% "
              f"(export/replay each round: {each}; load average {min(loads):.1f}-{max(loads):.1f})", flush=True)
    print()
    print("| workload | export iter | replay iter | difference | difference of p10 | export ops only | replay ops "
          "only | original (capture.json) | coverage | threads | runs flagged noisy | load average |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, ea, eb, diff, oa, ob, orig, cov, load, threads, diff10, noisy in rows:
        print(f"| {name} | {ea * 1e3:.3f} ms | {eb * 1e3:.3f} ms | {diff * 100:+.1f}% | {diff10 * 100:+.1f}% | "
              f"{oa * 1e3:.3f} ms | {ob * 1e3:.3f} ms | {orig * 1e3:.3f} ms | {cov:.3f} | {threads} | "
              f"{noisy}/{2 * args.rounds} | {load} |")
    within = sum(1 for r in rows if abs(r[3]) <= 0.05)
    print(f"\nwithin 5%: {within}/{len(rows)}, median |difference| "
          f"{statistics.median(abs(r[3]) for r in rows) * 100:.1f}%; {args.rounds} alternating rounds, "
          f"{args.iters} iterations each; {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Does an exported benchmark time what ``benchmint replay`` times, in an environment with torch alone?

For each example workload: ``benchmint capture --workload NAME``, ``benchmint export``, then, alternating in
the same run, the exported ``run.py`` under a fresh virtual environment holding only torch (``python -m venv``
without system site packages, then ``pip install torch==<this torch's version>``; pip's find-links / cache
serve the CPU wheel) and ``benchmint replay`` of the same capture, each in its own process started the same
way (same working folder, same environment less what would let the runner find benchmint; the order swaps
every round: A B, B A, ...). Both sides time through the same engine code and record the conditions of their
timed loop (``timing_conditions``); any setting that differs is printed. Per workload: the median over
rounds of each side's iteration time, whether both timed the same generated iteration (``iteration_code`` of
``timing_conditions``, the gaps' work left out) and each side's gap time, and the medians of the round-by-round
ratios (export / replay - 1) of
the iteration time, its 10th percentile, the process CPU time per iteration and the ops-only time (the
replayed ops without the CPU time between them), with the load average beside them. ``--gaps none`` compares
the engines without the gap calibration (each process calibrates its own gaps against capture.json, so with
recorded gaps the figure also holds how differently the two calibrations landed); ``--gaps shared`` settles
the gaps once (``benchmint replay --save-gaps``), exports them with the benchmark (``--gaps-from``) and has both
sides spend that same work between the same ops: the comparison a user of an exported benchmark makes.

    python benchmarks/replay_export.py [--workloads a,b] [--rounds 4] [--iters 20] [--gaps none|shared] [--target cpu]
        [--venv DIR]
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
from benchmint.replay.conditions import differences

HERE = Path(__file__).resolve().parent


def clean_env() -> dict[str, str]:
    """This environment without what would let a child find benchmint (PYTHONPATH, an active venv)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "BENCHMINT", "VIRTUAL_ENV"))
           or k.startswith("BENCHMINT_REPLAY_")}  # the engine's own settings reach both sides
    env.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    return env


def torch_only_venv(path: Path) -> Path:
    """A virtual environment holding torch and its requirements only (made once, reused)."""
    py = path / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, env=clean_env())
        version = torch.__version__.split("+")[0]
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"torch=={version}"], check=True, env=clean_env())
    check = subprocess.run([str(py), "-c", "import benchmint"], capture_output=True, text=True, env=clean_env())
    if check.returncode == 0:
        raise SystemExit(f"{path}: benchmint is importable there; use a fresh --venv")
    return py


def run_json(cmd: list[str], out: Path, env: dict | None = None, timeout: float = 1800, cwd: Path | None = None) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({p.returncode}): {p.stderr.strip()[-800:]}")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads on both sides (default: the "
                                                               "capture's)")
    ap.add_argument("--gaps", choices=("recorded", "none", "shared"), default=None,
                    help="both sides (default: recorded, as each defaults, each process calibrating its own); "
                         "shared: one benchmint replay --save-gaps first, exported with --gaps-from, then both sides "
                         "spend those gaps (the runner from its gaps.json, the replay with --gaps-from)")
    ap.add_argument("--target", choices=("auto", "capture", "estimate", "cpu"), default=None,
                    help="what the gaps aim at, both sides (cpu: capture.json's CPU time per step, settled on the "
                         "process's CPU time, which a busy machine's waits do not enter)")
    ap.add_argument("--venv", type=Path, default=None, help="torch-only virtual environment (default: a new one)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="benchmint-export-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    venv_py = torch_only_venv(args.venv or work / "venv")
    pkgs = subprocess.run([str(venv_py), "-m", "pip", "list", "--format=freeze"], capture_output=True,
                          text=True, env=clean_env()).stdout.split()  # (what the runner sees: no PYTHONPATH)
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
        threads = ["--threads", str(args.threads)] if args.threads else []
        target = ["--target", args.target] if args.target else []
        gaps_json = work / f"{name}_gaps.json"
        if args.gaps == "shared":  # settled once, by benchmint replay, and spent by both sides
            subprocess.run([*bm, "replay", str(cap), "--iters", str(args.iters), "--warmup", str(args.warmup),
                            "--no-store", "--out", str(work / "runs" / f"{name}_gaps"), "--save-gaps",
                            str(gaps_json), *threads, *target], check=True, env=env, capture_output=True, cwd=work)
        subprocess.run([*bm, "export", str(cap), "--out", str(exp), "--force",
                        *(["--gaps-from", str(gaps_json)] if args.gaps == "shared" else [])], check=True, env=env,
                       capture_output=True)
        a, b, loads = [], [], []
        extra = threads + (["--gaps", args.gaps] if args.gaps in ("recorded", "none") else []) + target
        extra_b = extra + (["--gaps-from", str(gaps_json)] if args.gaps == "shared" else [])
        for k in range(args.rounds):
            ja, jb = work / f"{name}_export_{k}.json", work / f"{name}_replay_{k}.json"
            side_a = ([str(venv_py), str(exp / "run.py"), "--iters", str(args.iters), "--warmup", str(args.warmup),
                       "--json", str(ja), *extra], ja, clean)
            side_b = ([*bm, "replay", str(cap), "--iters", str(args.iters), "--warmup", str(args.warmup), "--json",
                       str(jb), "--no-store", "--out", str(work / "runs" / f"{name}_{k}"), *extra_b], jb, env)
            for side, dest in ((side_a, a), (side_b, b)) if k % 2 == 0 else ((side_b, b), (side_a, a)):
                loads.append(os.getloadavg()[0])
                dest.append(run_json(*side, cwd=work))
        loads.append(os.getloadavg()[0])
        diffs = sorted({d for x, y in zip(a, b, strict=True)
                        for d in differences(x.get("timing_conditions"), y.get("timing_conditions"))})
        row = {"name": name, "export_s": med(r["iter_time_s"]["median"] for r in a),
               "replay_s": med(r["iter_time_s"]["median"] for r in b),
               "diff": ratio(a, b, lambda r: r["iter_time_s"]["median"]),
               "diff10": ratio(a, b, lambda r: r["iter_time_s"]["p10"]),
               "diff_cpu": ratio(a, b, lambda r: r.get("cpu_time_per_iter_s")),
               "diff_ops": ratio(a, b, lambda r: r.get("replay_ops_only_s")),
               # the gaps' CPU work each side settled (spin turns per iteration; each process calibrates its own)
               "gap_a": med(r["gap_time_s"] for r in a), "gap_b": med(r["gap_time_s"] for r in b),
               "same_code": all(x["timing_conditions"]["settings"].get("iteration_code") is not None
                                for x in (*a, *b)) and not any("iteration_code" in d for d in diffs),
               "ops_a": med(r["replay_ops_only_s"] for r in a), "ops_b": med(r["replay_ops_only_s"] for r in b),
               "orig": a[0]["original_iter_time_s"], "cov": a[0]["coverage"], "threads": a[0]["threads"],
               "load": f"{min(loads):.1f}-{max(loads):.1f}", "gaps": "shared file" if a[0].get("gaps_from") else a[0]["gaps"], "target": a[0].get("gap_target"),
               "noisy": sum(bool(r["iter_time_s"].get("noisy")) for r in (*a, *b)), "conditions": diffs}
        rows.append(row)
        each = ", ".join(f"{x['iter_time_s']['median'] * 1e3:.2f}/{y['iter_time_s']['median'] * 1e3:.2f}"
                         for x, y in zip(a, b, strict=True))
        print(f"{name}: export {row['export_s'] * 1e3:.3f} ms, replay {row['replay_s'] * 1e3:.3f} ms, difference "
              f"{pct(row['diff'])} (export/replay ms each round: {each}; load average {row['load']}); settings that "
              f"differ: {'; '.join(diffs) or 'none'}", flush=True)
    print()
    print("| workload | gaps | export iter | replay iter | difference (median of ratios) | of p10 | of CPU time "
          "per iter | of ops only | export / replay ops only | export / replay gap time | same iteration code | "
          "original (capture.json) | coverage | threads | runs flagged noisy | load average |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['gaps']}{' (' + r['target'] + ')' if r['target'] else ''} | {r['export_s'] * 1e3:.3f} ms | {r['replay_s'] * 1e3:.3f} ms | "
              f"{pct(r['diff'])} | {pct(r['diff10'])} | {pct(r['diff_cpu'])} | {pct(r['diff_ops'])} | "
              f"{r['ops_a'] * 1e3:.3f} / {r['ops_b'] * 1e3:.3f} ms | {r['gap_a'] * 1e3:.3f} / {r['gap_b'] * 1e3:.3f} ms | "
              f"{'yes' if r['same_code'] else 'NO'} | {r['orig'] * 1e3:.3f} ms | {r['cov']:.3f} | "
              f"{r['threads']} | {r['noisy']}/{2 * args.rounds} | {r['load']} |")
    within = sum(1 for r in rows if abs(r["diff"]) <= 0.05)
    print(f"\nwithin 5%: {within}/{len(rows)}, median |difference| "
          f"{statistics.median(abs(r['diff']) for r in rows) * 100:.1f}%; {args.rounds} alternating rounds (order "
          f"swapped each round), {args.iters} iterations each; {time.monotonic() - t0:.0f} s")


def med(xs) -> float:
    return statistics.median(list(xs))


def ratio(a: list[dict], b: list[dict], key) -> float | None:
    """Median over rounds of export / replay - 1 of one figure (None where a side lacks it)."""
    rs = [key(x) / key(y) - 1 for x, y in zip(a, b, strict=True) if key(x) and key(y)]
    return statistics.median(rs) if rs else None


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


if __name__ == "__main__":
    main()

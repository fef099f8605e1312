"""Multi-rank fidelity: a DDP training step captured with `benchmint capture` under torchrun on N ranks (gloo on
the CPU), replayed with `--ranks N` (torch's process starter, the same rank path as torchrun), every collective
matched, per-rank error against each rank's measured step; and PARAM's multi-rank traces replayed on the CPU
with gloo, with their collective coverage.

    .venv/bin/python benchmarks/replay_ranks.py [--ranks 2 4] [--rounds 3] [--param]

Gap targets per replay: `capture` (each rank's gaps settled, with its collectives running, at its own
capture.json step time: the communication is this machine's, the CPU time between ops is aimed: small by
construction), `estimate` (the gaps from the trace alone, the observers' cost measured here: nothing aimed at
the measured step) and `cpu` (the gaps settled, collectives running, so that each rank's iteration uses the CPU
time per step capture.json measured: the wall time, what the error compares, is not aimed at). Each round
captures the step afresh and replays that capture right after, with every target, so the
reference (the capture's un-observed steps, timed by `benchmint capture` under torchrun) is measured under the
same conditions as the replay (on a shared machine the load moves between minutes); the figure is the median
over rounds of each rank's error. The load average is printed beside each row.

Bracketed reference (`--bracket`, default on): after each replay the original step is timed again (a fresh
`benchmint capture` of the same script: its un-observed steps), so that every replay lies between two timings
of the original, A B A B; `bracketed` is each rank's replay against the mean of the two, and `drift` how far
the original moved between them (the noise floor of the figure: on a machine shared with other jobs the same
step moved by up to 30% between two timings minutes apart). `paired` is each rank's error as the single-rank
headline takes it: the median over all rounds of replay / original for each replay and each timing next to it
(two pairs a round). The replay's own `error` (against the capture it replayed) is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmint.core.errors import UserError
from benchmint.replay.distributed import replay_ranks
from benchmint.replay.types import is_collective

PARAM = Path(__file__).resolve().parents[1] / "tests" / "data" / "param"


def capture_ddp(n: int, out: Path, steps: int) -> None:
    env = {**os.environ, "BENCHMINT_DDP_DEVICE": "cpu", "OMP_NUM_THREADS": "1",
           "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), "-m",
           "benchmint", "capture", "--out", str(out), "--warmup", "5", "--measure", "20", "--no-store", "--",
           "python", "-m", "benchmint.models.ddp_train", "--steps", str(steps)]
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:  # what torchrun and the ranks said, so that a failed capture can be told apart
        tail = "\n".join(line for line in p.stderr.splitlines() if not line.startswith(("[W", "USDT")))[-3000:]
        raise SystemExit(f"capture of {n} ranks into {out} failed ({p.returncode}):\n{tail}")


def capture_steps(cap: Path, n: int) -> list[float]:
    """Each rank's un-observed step time (median, seconds) of a capture."""
    return [json.loads((cap / f"rank{r}" / "capture.json").read_text())["step_time_s"]["median"] for r in range(n)]


def bracketed(replay_s: float, before_s: float, after_s: float) -> tuple[float, float]:
    """A replay timed between two timings of the original: its error against their mean, and how far the
    original moved between them (after against before), the noise floor of that error."""
    return replay_s / ((before_s + after_s) / 2) - 1, after_s / before_s - 1


def paired(rows: list[list[tuple[float, float, float]]], n: int) -> list[float | None]:
    """Each rank's error as the single-rank headline takes it (``replay.headline``): the median, over every
    pair of a replay and a timing of the original next to it (before and after it, A B A B), of replay /
    original, less one. ``rows``: per round, per rank, (replay, before, after) seconds. One timing of the
    original caught in a moment of load then moves the figure by one pair of many, not by half of a mean."""
    out: list[float | None] = []
    for k in range(n):
        ratios = [x[k][0] / ref for x in rows for ref in x[k][1:]]
        out.append(statistics.median(ratios) - 1 if ratios else None)
    return out


def collective_coverage(r: dict) -> str:
    replayed = r["collectives"]["replayed_per_rank"]
    skipped = sum(s["count"] for s in r["skipped"] if is_collective(s["op"])) // max(r["ranks"], 1)
    return f"{replayed}/{replayed + skipped}"


def waits(r: dict) -> str:
    """The collectives' cost on the last-arriving rank and each rank's wait, recorded and replayed."""
    la = r["collectives"].get("last_arrival")
    if not la or la.get("replay_cost_s") is None:
        return ""
    ms = "/".join
    return (f"; collectives' cost recorded {la['cost_s'] * 1e3:.1f} ms, replayed {la['replay_cost_s'] * 1e3:.1f} ms, "
            f"waits recorded {ms(f'{w * 1e3:.1f}' for w in la['wait_s_per_rank'])} ms, replayed "
            f"{ms(f'{w * 1e3:.1f}' for w in la['replay_wait_s_per_rank'])} ms")


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def cpu(p: dict, key: str) -> str:
    v = p.get(key)
    return f"{v * 1e3:.1f}" if v is not None else "-"


def ddp(n: int, rounds: int, steps: int, tmp: Path, verbose: bool, targets: list[str], bracket: bool) -> None:
    errs: dict[str, list[list[float]]] = {t: [] for t in targets}
    brk: dict[str, list[list[float]]] = {t: [] for t in targets}
    drift: dict[str, list[list[float]]] = {t: [] for t in targets}
    pairs_of: dict[str, list[list[tuple[float, float, float]]]] = {t: [] for t in targets}
    cov = ""
    for k in range(rounds):
        cap = tmp / f"ddp{n}-{k}"
        capture_ddp(n, cap, steps)  # the reference of this round: its capture's un-observed steps
        before = capture_steps(cap, n)
        for j, target in enumerate(targets):
            r = replay_ranks(cap, ranks=n, device="cpu", warmup=3, iters=20, gaps="recorded", target=target,
                             echo=lambda s: None).result
            errs[target].append([p["error"] for p in r["per_rank"]])
            cov = collective_coverage(r)
            line = ""
            if bracket:  # the original again, right after this replay: A B A B
                again = tmp / f"ddp{n}-{k}-ref{j}"
                capture_ddp(n, again, steps)
                after = capture_steps(again, n)
                pairs = [bracketed(p["iter_time_s"]["median"], before[p["rank"]], after[p["rank"]])
                         for p in r["per_rank"]]
                brk[target].append([e for e, _ in pairs])
                pairs_of[target].append([(p["iter_time_s"]["median"], before[p["rank"]], after[p["rank"]])
                                         for p in r["per_rank"]])
                drift[target].append([d for _, d in pairs])
                line = "; original before/after " + ", ".join(
                    f"{b * 1e3:.1f}/{a * 1e3:.1f} ms" for b, a in zip(before, after, strict=True))
                before = after
            if verbose:
                print(f"  round {k} {target}: " + "; ".join(
                    f"rank {p['rank']} {p['iter_time_s']['median'] * 1e3:.1f} ms vs {p['original_iter_time_s'] * 1e3:.1f}"
                    f" ms (ops {p['replay_ops_only_s'] * 1e3:.1f}, gaps {p['gap_time_s'] * 1e3:.1f}, collectives "
                    f"{p['collectives']['time_s'] * 1e3:.1f}; CPU {cpu(p, 'cpu_time_per_iter_s')} vs "
                    f"{cpu(p, 'original_cpu_time_per_step_s')})" for p in r["per_rank"]) + line + waits(r)
                    + f"; load {load()}",
                    flush=True)
    for target, rows in errs.items():
        per_rank = per_rank_median(rows, n)
        worst = max((abs(e) for e in per_rank if e is not None), default=None)
        ok = "yes" if worst is not None and worst <= 0.10 else "no"
        extra = ""
        if bracket:
            b, d = per_rank_median(brk[target], n), per_rank_median(drift[target], n)
            extra = f" {pct(b)} | {pct(paired(pairs_of[target], n))} | {pct(d)} |"
        print(f"| DDP {n} ranks | {target} | {cov} | {pct(per_rank)} | {ok} |{extra} {load()} |", flush=True)


def per_rank_median(rows: list[list[float]], n: int) -> list[float | None]:
    return [statistics.median(x[k] for x in rows if x[k] is not None) if any(x[k] is not None for x in rows)
            else None for k in range(n)]


def pct(xs: list[float | None]) -> str:
    return ", ".join(f"{e * 100:+.1f}%" if e is not None else "-" for e in xs)


def param(tmp: Path) -> None:
    import psutil

    cases = [("resnet_et.json.gz (one trace, every rank)", PARAM / "resnet_et.json.gz", 2, True),
             ("dlrm_pytorch_et.tar.gz", PARAM / "dlrm_pytorch_et.tar.gz", 8, False)]
    for name, path, n, check in cases:
        if n == 8 and psutil.virtual_memory().available < 20 * 2**30:
            print(f"| {name} | {n} | skipped: needs about 20 GiB available | | | {load()} |", flush=True)
            continue
        try:
            r = replay_ranks(path, ranks=n, device="cpu", warmup=1, iters=3, gaps="none", memory_check=check,
                             echo=lambda s: None).result
        except UserError as e:  # a rank that failed: its one line, the other cases still run
            print(f"| {name} | {n} | failed: {e} | | | {load()} |", flush=True)
            continue
        names = ", ".join(f"{k.split('::')[1]} x{v}" for k, v in sorted(r["collectives"]["by_name"].items()))
        print(f"| {name} | {n} | {r['coverage']:.3f} | {collective_coverage(r)} ({names}) | "
              f"{r['iter_time_s']['median'] * 1e3:.1f} ms | {load()} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--param", action="store_true", help="also replay PARAM's multi-rank traces")
    ap.add_argument("--only-param", action="store_true", help="only PARAM's multi-rank traces (no DDP capture)")
    ap.add_argument("--targets", nargs="+", default=["estimate", "capture", "cpu"],
                    help="gap targets to replay each capture with")
    ap.add_argument("--bracket", action=argparse.BooleanOptionalAction, default=True,
                    help="time the original again after each replay and compare with the two timings around it")
    ap.add_argument("-v", "--verbose", action="store_true", help="each round's times per rank")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not a.only_param:
            b = a.bracket
            print("| workload | gap target | collectives matched per rank | error per rank (median of rounds) | "
                  "all within 10% |" + (" bracketed error per rank | paired error per rank | original's drift per rank |" if b else "")
                  + " load average |")
            print("|---|---|---|---|---|" + ("---|---|---|" if b else "") + "---|")
            for n in a.ranks:
                ddp(n, a.rounds, a.steps, tmp, a.verbose, a.targets, b)
        if a.param or a.only_param:
            print()
            print("| PARAM trace | ranks | coverage | collectives replayed/recorded per rank | iteration (gaps none) | "
                  "load average |")
            print("|---|---|---|---|---|---|")
            param(tmp)


if __name__ == "__main__":
    main()

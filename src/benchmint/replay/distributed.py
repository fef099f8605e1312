"""Multi-rank replay: one process per rank of a multi-rank trace, its collectives run on a real process group.

``replay_ranks`` (``benchmint replay TRACE --ranks N``) starts N worker processes on this machine
(``python -m benchmint.replay.rank_worker SPEC``, :mod:`benchmint.replay.rank_worker`). Each loads the ET (and Kineto trace) of its rank, plans and
calibrates its replay as a single-process replay does, with the recorded ``c10d::`` collectives mapped to
``torch.distributed`` calls (:class:`benchmint.replay.collectives.Collectives`). While planning, calibrating and measuring memory, the
collectives do nothing (each rank plans at its own pace, and the number of calibration runs depends on the
rank's measurements); they run for real only in the timed iterations, which every rank runs the same number of
times with a barrier before each. The process group (gloo over 127.0.0.1, or NCCL with ``--device cuda`` and
a GPU per rank) is formed once every rank has planned, after the ranks have checked, through the store, that
they will issue the same collectives in the same order with sizes that fit together
(:mod:`benchmint.replay.collective_sequence`): a mismatch is an error, not a hang. The parent watches the workers with an overall timeout, stops them all when one fails, and joins
their results into one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import torch

from benchmint.core.errors import UserError
from benchmint.core.jsonio import read_json
from benchmint.replay import memory
from benchmint.replay.api import find_inputs, last_whole_iteration
from benchmint.replay.collective_sequence import disagreement, sequence
from benchmint.replay.options import ReplayOptions
from benchmint.replay.rank_worker import RankSpec
from benchmint.replay.source import default_device, view_from_trace
from benchmint.replay.types import is_collective
from benchmint.trace.load import archive_ranks

#: The module each rank's process runs (``python -m WORKER SPEC``).
WORKER = "benchmint.replay.rank_worker"


@dataclass
class RanksResult:
    """The joined result of a multi-rank replay (``result`` is what ``--json`` writes, ``per_op_type`` the
    slowest rank's table); :func:`benchmint.replay.api.run_record` takes it as it takes a ReplayResult."""

    result: dict[str, Any]
    per_op_type: list[dict[str, Any]]


def _loopback_ifname() -> str | None:
    try:
        names = [n for _, n in socket.if_nameindex()]
    except OSError:
        return None
    for n in ("lo", "lo0"):
        if n in names:
            return n
    return None


def _backend_for(device: str, ranks: int) -> str:
    """NCCL (or gloo where torch has no NCCL) with a GPU per rank for cuda, gloo for cpu."""
    import torch.distributed as dist

    if device.startswith("cuda"):
        have = torch.cuda.device_count()
        if have < ranks:
            raise UserError(f"--device {device} with --ranks {ranks} needs a GPU per rank (rank r on cuda:r); this "
                            f"machine has {have}; use --device cpu")
        return "nccl" if dist.is_nccl_available() else "gloo"
    return "gloo"


def replay_ranks(
    trace: str | os.PathLike,
    kineto: str | os.PathLike | None = None,
    options: ReplayOptions | None = None,
    *,
    ranks: int,
    timeout_s: float = 1800.0,
    collective_timeout_s: float = 60.0,
    echo: Callable[[str], None] | None = None,
    keep_logs: bool | None = None,
    **settings: Any,
) -> RanksResult:
    """Replay a multi-rank trace with one process per rank on this machine, its collectives on a real
    process group; see the module's doc. ``options`` / ``settings``: the replay's settings, as for
    :func:`benchmint.replay.api.replay_trace` (``threads``: intra-op threads per rank, default 1);
    ``timeout_s``: the whole run, after which every rank is stopped; ``collective_timeout_s``: the process
    group's timeout for one collective. ``echo``: where the ranks' progress lines go (default stderr).
    ``keep_logs``: when a rank fails, keep the ranks' logs (with tracebacks) and name their folder in the error
    (default: when BENCHMINT_DEBUG is set; the CLI passes --debug)."""
    from benchmint.trace import load

    opts = ReplayOptions.of(options, **settings)
    say = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    if ranks < 1:
        raise UserError(f"--ranks {ranks}: must be at least 1")
    opts.check()
    if opts.select or opts.what_if or opts.scale:  # each rank would adapt its own step: a dropped collective
        raise UserError("--select, --what-if and --scale apply to a single-process replay; leave out --ranks")
    if not timeout_s > 0 or not collective_timeout_s > 0:
        raise UserError(f"--timeout {timeout_s:g} / --comm-timeout {collective_timeout_s:g}: both must be positive "
                        "numbers of seconds")
    inp = find_inputs(trace, kineto)
    have = archive_ranks(inp.trace)
    if have is not None:
        if ranks != len(have):
            raise UserError(f"{inp.trace}: the trace has {len(have)} ranks; --ranks must equal it")
        if have != list(range(len(have))):
            raise UserError(f"{inp.trace}: the archive's ranks are {have}, not 0..{len(have) - 1}")
    trace_rank = (lambda r: r) if have is not None else (lambda r: None)
    device = opts.device
    if device is None:
        tr0 = load(inp.trace, rank=trace_rank(0))
        device = default_device(tr0.devices)
        opts = ReplayOptions.of(opts, device=device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    backend = _backend_for(device, ranks)
    # the ranks must issue the same collectives in the same order: check the traces before starting anything
    # (one trace for all ranks is read once; a rank replays the step capture.json says was whole)
    seqs, ests = [], []
    for r in range(ranks):
        if r == 0 or have is not None:
            tr = load(inp.trace, rank=trace_rank(r))
            it = opts.iteration if opts.iteration is not None else last_whole_iteration(tr, inp.capture)
            view = view_from_trace(tr, iteration=it, device=device)
            seq, est = sequence(view.ops), memory.tensor_bytes(view)
            del tr, view
        seqs.append(seq)
        ests.append(est)
    why = disagreement(seqs)
    if why is not None:
        more = " (every rank replays the same single trace)" if have is None and ranks > 1 else ""
        raise UserError(f"{inp.trace}: its collectives cannot be replayed on {ranks} ranks{more}: {why}")
    if opts.memory_check and ranks > 1 and not device.startswith("cuda"):
        # the ranks share this host's memory: each rank's own check would pass where all of them cannot
        total = {k: sum(e[k] for e in ests) for k in ests[0]}
        memory.check_fits(total, torch.device("cpu"), str(inp.trace), ranks=ranks)

    old_sigterm = _stop_on_sigterm(say)
    try:
        return _run_ranks(inp, ranks, trace_rank, opts, backend, timeout_s, collective_timeout_s, keep_logs, say)
    finally:
        if old_sigterm is not None:
            signal.signal(signal.SIGTERM, old_sigterm)


def _stop_on_sigterm(say: Callable[[str], None]) -> Any:
    """While the ranks run, SIGTERM raises SystemExit (exit code 143) so that the ranks are stopped and the
    temporary folder removed on the way out; returns the handler to restore (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_sigterm(signum: int, _frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: let the clean-up finish
        say("terminated (SIGTERM): stopping the ranks")
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, on_sigterm)


def _run_ranks(inp: Any, ranks: int, trace_rank: Callable[[int], int | None], opts: ReplayOptions, backend: str,
               timeout_s: float, collective_timeout_s: float, keep_logs: bool | None,
               say: Callable[[str], None]) -> RanksResult:
    tmp = Path(tempfile.mkdtemp(prefix="benchmint-ranks-"))
    env = dict(os.environ)
    lo = _loopback_ifname()
    if lo and backend == "gloo":
        env.setdefault("GLOO_SOCKET_IFNAME", lo)
    env["MASTER_ADDR"] = "127.0.0.1"
    env["PYTHONUNBUFFERED"] = "1"
    th = opts.threads or 1
    opts = ReplayOptions.of(opts, threads=th)
    device = opts.device
    env["OMP_NUM_THREADS"] = str(th)
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    kept = False
    t0 = time.monotonic()
    say(f"replaying {ranks} ranks of {inp.trace} ({backend}, {device}, {th} thread(s) per rank)")
    try:
        for r in range(ranks):
            spec = RankSpec(rank=r, world=ranks, trace_rank=trace_rank(r), trace=str(inp.trace),
                            kineto=str(inp.kineto) if inp.kineto else None, backend=backend, options=opts,
                            store=str(tmp / "store"), out=str(tmp / f"rank{r}.result.json"), timeout_s=timeout_s,
                            collective_timeout_s=collective_timeout_s, parent=os.getpid())
            sp = tmp / f"rank{r}.spec.json"
            sp.write_bytes(msgspec.json.encode(spec))
            log = tmp / f"rank{r}.log"
            logs.append(log)
            with open(log, "wb") as fh:
                procs.append(subprocess.Popen([sys.executable, "-m", WORKER, str(sp)],
                                              stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              env=env))
        _watch(procs, logs, tmp, t0 + timeout_s, timeout_s, say)
        wall = time.monotonic() - t0
        per = [read_json(tmp / f"rank{r}.result.json") for r in range(ranks)]
    except RankFailed as e:
        kept = keep_logs if keep_logs is not None else bool(os.environ.get("BENCHMINT_DEBUG"))
        raise RankFailed(f"{e} (" + (f"the ranks' logs: {tmp}" if kept else "--debug keeps the ranks' logs")
                         + ")") from e
    finally:
        _stop(procs)
        if not kept:
            shutil.rmtree(tmp, ignore_errors=True)
    return _join(per, ranks, backend, wall, inp)


def _watch(procs: list[subprocess.Popen], logs: list[Path], tmp: Path, deadline: float, timeout_s: float,
           say: Callable[[str], None]) -> None:
    """Forward the ranks' progress lines; return when all have exited 0; on the first failure or at the
    deadline stop them all and raise, naming the rank."""
    pos = [0] * len(procs)
    last = [""] * len(procs)

    def forward() -> None:
        for r, log in enumerate(logs):
            try:
                with open(log, "rb") as fh:
                    fh.seek(pos[r])
                    chunk = fh.read()
            except OSError:
                continue
            end = chunk.rfind(b"\n")
            if end < 0:
                continue
            pos[r] += end + 1
            for line in chunk[: end + 1].decode(errors="replace").splitlines():
                if line.startswith(f"rank {r}: "):
                    last[r] = line
                    say(line)

    while True:
        forward()
        codes = [p.poll() for p in procs]
        bad = [r for r, c in enumerate(codes) if c not in (None, 0)]
        if bad:
            _stop(procs)
            forward()
            raise _failure(bad, codes, tmp, last)
        if all(c == 0 for c in codes):
            return
        if time.monotonic() > deadline:
            waiting = [r for r, c in enumerate(codes) if c is None]
            _stop(procs)
            where = "; ".join(f"rank {r} last said {last[r][len(f'rank {r}: '):]!r}" if last[r] else f"rank {r}: "
                              "no progress" for r in waiting[:4])
            raise RankFailed(f"the replay did not finish within {timeout_s:.0f} s: rank(s) "
                            f"{', '.join(map(str, waiting))} still running ({where}); stopped them all; "
                            "give more time (--timeout) or fewer --iters")
        time.sleep(0.2)


class RankFailed(UserError):
    """A rank of a multi-rank replay failed: one line naming the rank, the step, the op and its peer."""


def _failure(bad: list[int], codes: list[int | None], tmp: Path, last: list[str]) -> UserError:
    """The first failure: of the ranks that reported one, the earliest (a rank that fails makes its peers
    fail after it); else the first rank that exited with an error code."""
    reports = []
    for r in range(len(codes)):
        res = tmp / f"rank{r}.result.json"
        try:
            info = read_json(res) if res.exists() else {}
        except (OSError, ValueError):
            info = {}
        if info.get("error"):
            reports.append((info.get("failed_at", float("inf")), r, info))
    if reports:
        _, r, info = min(reports, key=lambda x: (x[0], x[1]))
        if info.get("user_error"):
            return UserError(f"rank {r}: {info['error']}")
        return RankFailed(f"rank {r} {info['error']}")
    r = bad[0]
    said = last[r][len(f"rank {r}: "):] if last[r] else "nothing"
    return RankFailed(f"rank {r} exited with code {codes[r]} (it last said {said!r})")


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    end = time.monotonic() + 5
    for p in procs:
        try:
            p.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _join(per: list[dict[str, Any]], ranks: int, backend: str, wall: float, inp: Any) -> RanksResult:
    """One result of the ranks' results: coverage is the lowest rank's, the iteration time the slowest rank's
    (every rank timed the same iterations, a barrier before each), skipped ops with the ranks they were
    skipped on."""
    slow = max(range(ranks), key=lambda r: per[r]["iter_time_s"]["median"] or 0.0)
    low = min(range(ranks), key=lambda r: (per[r]["coverage"], r))
    base = {k: v for k, v in per[slow].items() if k not in ("rank", "per_op_type", "collectives", "peak_rss_bytes")}
    skipped: dict[tuple[str, str], dict[str, Any]] = {}
    substituted: dict[tuple[str, str], dict[str, Any]] = {}
    for r, p in enumerate(per):
        for s in p["skipped"]:
            e = skipped.setdefault((s["op"], s["reason"]), {**s, "count": 0, "ranks": []})
            e["count"] += s["count"]
            e["ranks"].append(r)
        for s in p["substituted"]:
            if is_collective(s["op"]):
                continue
            e = substituted.setdefault((s["op"], s["replacement"]), {**s, "count": 0, "ranks": []})
            e["count"] += s["count"]
            e["ranks"].append(r)
    col = [p["collectives"] for p in per]
    by_name: dict[str, int] = {}
    for o in col[0]["ops"]:
        by_name[o["op"]] = by_name.get(o["op"], 0) + 1
    base.update({
        "trace": str(inp.trace),
        "kineto": str(inp.kineto) if inp.kineto else None,
        "ranks": ranks,
        "backend": backend,
        "ops_total": per[low]["ops_total"],
        "ops_replayed": per[low]["ops_replayed"],
        "coverage": per[low]["coverage"],
        "coverage_rank": low,
        "coverage_time": min((p["coverage_time"] for p in per if p["coverage_time"] is not None), default=None),
        "slowest_rank": slow,
        "skipped": sorted(skipped.values(), key=lambda s: -s["count"]),
        "substituted": sorted(substituted.values(), key=lambda s: -s["count"]),
        "peak_memory_bytes": max(p["peak_memory_bytes"] for p in per),
        "peak_rss_bytes": max(p["peak_rss_bytes"] for p in per),
        "peak_rss_sum_bytes": sum(p["peak_rss_bytes"] for p in per),
        "wall_time_s": wall,
        "collectives": {
            "replayed_per_rank": col[0]["count"],
            "by_name": by_name,
            "backend": backend,
            "bytes_in_per_rank": [c["bytes_in"] for c in col],
            "bytes_out_per_rank": [c["bytes_out"] for c in col],
            "time_s_per_rank": [c["time_s"] for c in col],
            "how_measured": "per iteration: payload bytes of each call's input and output tensors on the rank "
                            "(not wire traffic), and wall time inside the calls (time.perf_counter_ns), "
                            "including waiting for the other ranks, mean over the timed iterations",
        },
        "per_rank": [{
            "rank": r, "trace": p["trace"], "coverage": p["coverage"], "ops_replayed": p["ops_replayed"],
            "ops_total": p["ops_total"], "iter_time_s": p["iter_time_s"], "replay_ops_only_s": p["replay_ops_only_s"],
            "gap_time_s": p["gap_time_s"], "peak_memory_bytes": p["peak_memory_bytes"],
            "peak_rss_bytes": p["peak_rss_bytes"], "collectives": {k: v for k, v in p["collectives"].items()
                                                                   if k != "ops"},
            "collective_ops": p["collectives"]["ops"],
        } for r, p in enumerate(per)],
        "error_note": per[slow].get("error_note"),
        "how_measured": (per[slow]["how_measured"] + f"; {ranks} ranks, one process each on this machine, "
                         f"collectives on a {backend} process group; a barrier before each iteration, so the "
                         f"ranks time the same iterations; iter_time_s is the slowest rank's (rank {slow})"),
    })
    aimed = [p.get("gap_target") for p in per if p.get("gap_target")]
    if aimed:
        # the gaps were calibrated with the collectives doing nothing, to make the iteration as long as the
        # original step, which includes the original's communication; the timed iterations then add this
        # machine's collectives on top: the replayed time is not comparable with the original's
        base["error"] = None
        base["error_note"] = (f"no error: the gaps between ops were aimed at the original step time ({aimed[0]}) "
                              "with the collectives doing nothing, and the timed iterations add the real "
                              "collectives on top, so the time counts communication twice; --gaps none compares "
                              "the ops and the real collectives back to back with the original")
        base["how_measured"] += ("; error: none, the gaps were calibrated without communication (see "
                                 "error_note)")
    elif base.get("error") is not None:
        base["how_measured"] += ("; error: the slowest rank's iteration, ops back to back with this machine's "
                                 "collectives, against the original step time")
    return RanksResult(result=base, per_op_type=per[slow].get("per_op_type", []))

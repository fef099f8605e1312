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
from benchmint.replay.collective_time import last_arrival
from benchmint.replay.modes import mode_view
from benchmint.replay.options import ReplayOptions
from benchmint.replay.rank_env import check_ranks, free_port, launcher_env, rank_trace, trace_ranks
from benchmint.replay.rank_worker import RankSpec
from benchmint.replay.source import default_device, view_from_trace
from benchmint.replay.types import is_collective
from benchmint.trace import damage

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
    have = trace_ranks(trace)
    check_ranks(trace, have, ranks, "--ranks is")
    inputs = [_rank_input(trace, kineto, r, have) for r in range(ranks)]
    inp = inputs[0][0]  # rank 0's inputs: the trace itself, or its rank0/ folder
    device = opts.device
    if device is None:
        tr0 = load(inputs[0][0].trace, rank=inputs[0][1])
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
            rin, trank = inputs[r]
            tr = load(rin.trace, rank=trank)
            it = opts.iteration if opts.iteration is not None else last_whole_iteration(tr, rin.capture)
            view = view_from_trace(tr, iteration=it, device=device)
            view = mode_view(view, opts.mode)
            seq, est = sequence(view.ops), memory.tensor_bytes(view)
            del tr, view
        seqs.append(seq)
        ests.append(est)
    why = disagreement(seqs)
    if why is not None:
        more = " (every rank replays the same single trace)" if have is None and ranks > 1 else ""
        raise UserError(f"{trace}: its collectives cannot be replayed on {ranks} ranks{more}: {why}")
    if opts.memory_check and ranks > 1 and not device.startswith("cuda"):
        # the ranks share this host's memory: each rank's own check would pass where all of them cannot
        total = {k: sum(e[k] for e in ests) for k in ests[0]}
        memory.check_fits(total, torch.device("cpu"), str(trace), ranks=ranks)

    old_sigterm = _stop_on_sigterm(say)
    try:
        return _run_ranks(inp, inputs, opts, backend, timeout_s, collective_timeout_s, keep_logs, say)
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


def _rank_input(trace: Any, kineto: Any, r: int, have: list[int] | None) -> tuple[Any, int | None]:
    """Rank ``r``'s replay inputs and its rank within an archive (None: a file of one trace)."""
    t, k, trank = rank_trace(trace, kineto, r, have)
    return find_inputs(t, k), trank


def _run_ranks(inp: Any, inputs: list[tuple[Any, int | None]], opts: ReplayOptions, backend: str,
               timeout_s: float, collective_timeout_s: float, keep_logs: bool | None,
               say: Callable[[str], None]) -> RanksResult:
    """Start the ranks with torch's process starter (as torchrun does, with the environment it sets), watch
    them and join their results."""
    from torch.distributed.elastic.multiprocessing import (
        DefaultLogsSpecs,
        SignalException,
        Std,
        start_processes,
    )

    ranks = len(inputs)
    tmp = Path(tempfile.mkdtemp(prefix="benchmint-ranks-"))
    common = {"PYTHONUNBUFFERED": "1"}
    lo = _loopback_ifname()
    if lo and backend == "gloo":
        common["GLOO_SOCKET_IFNAME"] = os.environ.get("GLOO_SOCKET_IFNAME", lo)
    th = opts.threads or 1
    opts = ReplayOptions.of(opts, threads=th)
    common["OMP_NUM_THREADS"] = str(th)
    port = free_port()
    args: dict[int, tuple] = {}
    envs: dict[int, dict[str, str]] = {}
    for r, (rin, trank) in enumerate(inputs):
        spec = RankSpec(rank=r, world=ranks, trace_rank=trank, trace=str(rin.trace),
                        kineto=str(rin.kineto) if rin.kineto else None, backend=backend, options=opts,
                        out=str(tmp / f"rank{r}.result.json"), timeout_s=timeout_s,
                        collective_timeout_s=collective_timeout_s, parent=os.getpid())
        sp = tmp / f"rank{r}.spec.json"
        sp.write_bytes(msgspec.json.encode(spec))
        args[r] = ("-m", WORKER, str(sp))
        envs[r] = {**common, **launcher_env(r, ranks, port)}
    kept = False
    t0 = time.monotonic()
    folders = {Path(i.trace).parent for i, _ in inputs}
    # a folder of rank folders: each rank its own trace (the same line read "of DIR/rank0/et.json", as when one
    # trace is replayed by every rank)
    what = (f"{Path(inp.trace).parent.parent}/rank0..rank{ranks - 1}" if len(folders) > 1 else str(inp.trace))
    say(f"replaying {ranks} ranks of {what} ({backend}, {opts.device}, {th} thread(s) per rank)")
    pc = None
    handlers = _signal_handlers()  # the process starter installs its own; ours come back after it
    quiet = _quiet_starter()
    try:
        pc = start_processes(name="benchmint-replay", entrypoint=sys.executable, args=args, envs=envs,
                             logs_specs=DefaultLogsSpecs(log_dir=str(tmp / "logs"), redirects=Std.ALL))
        _watch(pc, ranks, tmp, t0 + timeout_s, timeout_s, say)
        wall = time.monotonic() - t0
        per = [read_json(tmp / f"rank{r}.result.json") for r in range(ranks)]
    except RankFailed as e:
        kept = keep_logs if keep_logs is not None else bool(os.environ.get("BENCHMINT_DEBUG"))
        if kept and pc is not None:
            _gather_logs(pc, tmp)
        raise RankFailed(f"{e} (" + (f"the ranks' logs: {tmp}" if kept else "--debug keeps the ranks' logs")
                         + ")") from e
    except SignalException as e:  # the starter's handler: Ctrl-C is an interrupt, SIGTERM an exit as before
        if e.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        say(f"terminated ({e.sigval.name}): stopping the ranks")
        raise SystemExit(128 + int(e.sigval)) from None
    finally:
        if pc is not None:
            pc.close(timeout=5)
        for sig, h in handlers.items():
            signal.signal(sig, h)
        quiet()
        if not kept:
            shutil.rmtree(tmp, ignore_errors=True)
    return join_ranks(per, backend, wall, inp)


def _signal_handlers() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    sigs = [getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT") if hasattr(signal, n)]
    return {s: signal.getsignal(s) for s in sigs}


def _quiet_starter() -> Callable[[], None]:
    """The process starter logs each signal it forwards as a warning: the console says it once, our way; the
    returned function restores its logger's level."""
    import logging

    log = logging.getLogger("torch.distributed.elastic")
    old = log.level
    log.setLevel(logging.ERROR)
    return lambda: log.setLevel(old)


def _gather_logs(pc: Any, tmp: Path) -> None:
    """Each rank's output as ``rankN.log`` in the kept folder (the process starter keeps it deeper down)."""
    for r, path in pc.stderrs.items():
        try:
            shutil.copyfile(path, tmp / f"rank{r}.log")
        except OSError:
            pass


def _watch(pc: Any, ranks: int, tmp: Path, deadline: float, timeout_s: float, say: Callable[[str], None]) -> None:
    """Forward the ranks' progress lines; return when all have exited 0; on the first failure or at the
    deadline stop them all (the process starter stops the others when one fails) and raise, naming the rank."""
    pos = [0] * ranks
    last = [""] * ranks

    def forward() -> None:
        for r in range(ranks):
            try:
                with open(pc.stderrs[r], "rb") as fh:
                    fh.seek(pos[r])
                    chunk = fh.read()
            except (OSError, KeyError):
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
        res = pc.wait(timeout=0)
        if res is not None:
            forward()
            if res.is_failed():
                codes = [res.failures[r].exitcode if r in res.failures else 0 for r in range(ranks)]
                raise _failure(sorted(res.failures), codes, tmp, last)
            return
        if time.monotonic() > deadline:
            pids = pc.pids()
            waiting = [r for r in range(ranks) if _alive(pids.get(r))]
            pc.close(timeout=5)
            where = "; ".join(f"rank {r} last said {last[r][len(f'rank {r}: '):]!r}" if last[r] else f"rank {r}: "
                              "no progress" for r in waiting[:4])
            raise RankFailed(f"the replay did not finish within {timeout_s:.0f} s: rank(s) "
                            f"{', '.join(map(str, waiting))} still running ({where}); stopped them all; "
                            "give more time (--timeout) or fewer --iters")
        time.sleep(0.2)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


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


def join_ranks(per: list[dict[str, Any]], backend: str, wall: float, inp: Any) -> RanksResult:
    """One result of the ranks' results: coverage is the lowest rank's, the iteration time the slowest rank's
    (every rank timed the same iterations, a barrier before each), skipped ops with the ranks they were
    skipped on."""
    ranks = len(per)
    hosts = sorted({p["host"] for p in per if p.get("host")})
    where = "this machine" if len(hosts) <= 1 else f"{len(hosts)} hosts"
    slow = max(range(ranks), key=lambda r: per[r]["iter_time_s"]["median"] or 0.0)
    low = min(range(ranks), key=lambda r: (per[r]["coverage"], r))
    base = {k: v for k, v in per[slow].items() if k not in ("rank", "host", "per_op_type", "collectives",
                                                           "peak_rss_bytes", "recorded_collectives")}
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
        # what each rank's recording lost (trace/damage.py), by rank
        "trace_damage": damage.by_rank([p.get("trace_damage") for p in per]),
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
            # per collective: its cost on the rank that arrived last and each rank's wait, recorded and replayed
            "last_arrival": last_arrival([p.get("recorded_collectives") or [] for p in per], [c["ops"] for c in col]),
            "how_measured": "per iteration: payload bytes of each call's input and output tensors on the rank "
                            "(not wire traffic), and wall time inside the calls (time.perf_counter_ns), "
                            "including waiting for the other ranks, mean over the timed iterations",
        },
        "per_rank": [{
            "rank": r, "host": p.get("host"), "trace": p["trace"], "coverage": p["coverage"],
            "ops_replayed": p["ops_replayed"],
            "ops_total": p["ops_total"], "iter_time_s": p["iter_time_s"], "replay_ops_only_s": p["replay_ops_only_s"],
            "gap_time_s": p["gap_time_s"], "peak_memory_bytes": p["peak_memory_bytes"],
            "original_iter_time_s": p.get("original_iter_time_s"), "error": p.get("error"),
            "original_iter_time_estimated_s": p.get("original_iter_time_estimated_s"),
            "calibration": p.get("calibration"),
            "gap_target": p.get("gap_target"), "gap_settling": p.get("gap_settling"),
            "cpu_time_per_iter_s": p.get("cpu_time_per_iter_s"),
            "original_cpu_time_per_step_s": p.get("original_cpu_time_per_step_s"),
            "peak_rss_bytes": p["peak_rss_bytes"], "collectives": {k: v for k, v in p["collectives"].items()
                                                                   if k != "ops"},
            "collective_ops": p["collectives"]["ops"],
            "system_metrics": p.get("system_metrics"),
        } for r, p in enumerate(per)],
        "error_note": per[slow].get("error_note"),
        "hosts": hosts,
        "how_measured": (per[slow]["how_measured"] + f"; {ranks} ranks, one process each on {where}, "
                         f"collectives on a {backend} process group; a barrier before each iteration, so the "
                         f"ranks time the same iterations; iter_time_s is the slowest rank's (rank {slow})"),
    })
    if isinstance(base.get("system_metrics"), dict):  # the slowest rank's, said so (each rank's in per_rank)
        base["system_metrics"] = {**base["system_metrics"], "rank": slow,
                                  "ranks_how": f"rank {slow}'s (the slowest): each rank's capture against its "
                                               "replay; per_rank holds every rank's"}
    if per[slow].get("mode") == "comm":
        base["error_note"] = "; ".join(filter(None, (
            base.get("error_note"),
            "the original's share of each collective holds its communication and the rank's wait for its peers "
            "(collectives.last_arrival: wait_s_per_rank), which waited on the other ranks' computation; a "
            "communication-only replay has none between its collectives")))
    # (a rank whose gaps were settled with its collectives running counts its communication once)
    aimed = [p.get("gap_target") for p in per if p.get("gap_target") and not p.get("gaps_settled_with_collectives")
             and not p.get("gaps_aimed_without_communication")]
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
    elif any(p.get("gap_target") == "capture.json cpu" for p in per):
        base["how_measured"] += ("; each rank's gaps between ops were settled with its collectives running so that "
                                 "its iteration used the CPU time per step (the process's, every thread) that "
                                 "capture.json measured on the original's un-observed steps; the wall time is left "
                                 "to this machine (the CPU time the ranks ask for, the cores they share, the waits "
                                 "for each other); error: the slowest rank's iteration against the original step "
                                 "time")
        base["errors_per_rank"] = [p.get("error") for p in per]
    elif any(p.get("gaps_settled_with_collectives") for p in per):
        base["how_measured"] += ("; each rank's gaps between ops were settled with its collectives running, aimed "
                                 f"at the original step time ({base.get('gap_target')}): the gaps stand for the CPU "
                                 "time between ops, the collectives and the waits for the other ranks are this "
                                 "machine's; error: the slowest rank's iteration against the original step time")
        base["errors_per_rank"] = [p.get("error") for p in per]
    elif any(p.get("gaps_aimed_without_communication") for p in per):
        base["how_measured"] += ("; each rank's gaps between ops were aimed at its estimated CPU time between ops "
                                 "(from the trace, the waits for collectives left out) with the collectives doing "
                                 "nothing; the timed iterations add this machine's collectives and waits; error: "
                                 "the slowest rank's iteration against the original step time")
        base["errors_per_rank"] = [p.get("error") for p in per]
    elif base.get("error") is not None:
        base["how_measured"] += ("; error: the slowest rank's iteration, ops back to back with this machine's "
                                 "collectives, against the original step time")
        base["errors_per_rank"] = [p.get("error") for p in per]
    return RanksResult(result=base, per_op_type=per[slow].get("per_op_type", []))

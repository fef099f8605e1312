"""One rank of a multi-rank replay, in its own process.

Two ways in, one path: ``torchrun ... -m benchmint replay TRACE`` (:mod:`benchmint.replay.torchrun`), or
``benchmint replay TRACE --ranks N``, whose launcher (:func:`benchmint.replay.distributed.replay_ranks`) starts
``python -m benchmint.replay.rank_worker SPEC`` once per rank with torch's process starter and the environment
torchrun would set. Either way the rank learns who it is from that environment (:mod:`benchmint.replay.rank_env`),
meets the other ranks through torch's ``env://`` rendezvous store, and replays its trace with its collectives on
the process group (:func:`run_rank`); under the launcher it writes its result (or its failure) where the spec
says."""

from __future__ import annotations

import os
import resource
import socket
import sys
import threading
import time
import traceback
from typing import Any

import msgspec
import torch

from benchmint.core.errors import UserError
from benchmint.core.jsonio import write_json
from benchmint.replay.api import replay_trace
from benchmint.replay.collectives import Collectives, CommFailed
from benchmint.replay.options import ReplayOptions


class RankSpec(msgspec.Struct, frozen=True):
    """What the launcher tells one rank's worker: what to replay with which settings and where to write its
    result (who it is and where to meet the others come from the environment, as under torchrun)."""

    rank: int
    world: int
    trace_rank: int | None  # the rank's trace in an archive of one trace per rank; None: the one trace
    trace: str
    kineto: str | None
    backend: str  # the process group's: gloo or nccl
    options: ReplayOptions
    out: str  # the rank's result (or failure) JSON
    timeout_s: float  # the whole run: how long to wait for the other ranks to plan
    collective_timeout_s: float
    parent: int  # the launcher's pid: the rank ends with it


def rendezvous_store(timeout_s: float) -> Any:
    """The store the ranks meet in: torch's ``env://`` rendezvous (MASTER_ADDR/MASTER_PORT, RANK, WORLD_SIZE;
    the torchrun agent's own store when it shares it), under a prefix of benchmint's."""
    from datetime import timedelta

    import torch.distributed as dist

    store, _rank, _world = next(dist.rendezvous("env://", timeout=timedelta(seconds=timeout_s)))
    return dist.PrefixStore("benchmint", store)


def run_rank(spec: RankSpec, store: Any, say: Any) -> dict[str, Any]:
    """Replay ``spec``'s trace as rank ``spec.rank`` of ``spec.world``, its collectives on a process group formed
    in ``store``; the rank's result (what :func:`benchmint.replay.distributed.join_ranks` joins).
    Raises UserError, CommFailed, or what the replay raised."""
    rank, world = spec.rank, spec.world
    comm = Collectives(rank=rank, world=world, backend=spec.backend, store=store,
                       start_timeout_s=spec.timeout_s, timeout_s=spec.collective_timeout_s)
    seen: set[str] = set()

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in seen:
            seen.add(stage)
            say({"plan": "planning", "time": "timing"}.get(stage, stage))

    try:
        opts = spec.options
        if (opts.device or "").startswith("cuda"):  # one GPU per rank; NCCL and the current-device allocations
            local = int(os.environ.get("LOCAL_RANK", rank))  # follow it (the rank's GPU on its host)
            opts = ReplayOptions.of(opts, device=f"cuda:{local}")
            torch.cuda.set_device(local)
        res = replay_trace(spec.trace, spec.kineto, opts, rank=spec.trace_rank, comm=comm, progress=progress)
        r = dict(res.result)
        r["rank"] = rank
        r["host"] = socket.gethostname()
        r["collectives"] = comm.stats()
        r["peak_rss_bytes"] = _peak_rss_bytes()
        r["per_op_type"] = res.per_op_type
        say(f"done: {r['ops_replayed']}/{r['ops_total']} ops, {r['iter_time_s']['median'] * 1e3:.1f} ms/iter")
        return r
    finally:
        try:
            comm.close()
        except Exception:  # noqa: BLE001
            pass


def failure_record(e: BaseException) -> tuple[dict[str, Any], int]:
    """What a rank that failed reports (its ``error``, and ``user_error`` for a bad input) and its exit code."""
    if isinstance(e, UserError):
        return {"error": str(e), "user_error": True}, 2
    if isinstance(e, CommFailed):
        return {"error": f"failed in {e.where}: {e.why}"}, 1
    text = str(e).strip()
    return {"error": f"failed: {type(e).__name__}" + (f": {text.splitlines()[0]}" if text else "")}, 1


def _peak_rss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def _die_with_parent(parent: int) -> None:
    """A rank ends when the parent does (killed, not only stopped cleanly): on Linux through the kernel's
    parent-death signal; a rank whose parent is already gone exits at once."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        sys.exit(1)
    if threading.current_thread() is threading.main_thread():
        import signal

        # stopped by the parent (Ctrl-C, another rank failed): unwind, so that what the rank made on its way
        # is removed (a calibration's recordings under /dev/shm were left behind in 2 of 4 tries)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + int(signal.SIGTERM)))


def _worker(spec_path: str) -> int:
    with open(spec_path, "rb") as fh:
        spec = msgspec.json.decode(fh.read(), type=RankSpec)
    _die_with_parent(spec.parent)
    rank = spec.rank

    def say(msg: str) -> None:
        print(f"rank {rank}: {msg}", file=sys.stderr, flush=True)

    try:
        r = run_rank(spec, rendezvous_store(spec.timeout_s), say)
        write_json(spec.out, r)
        return 0
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which stops the other ranks
        traceback.print_exc()  # into the rank's log, kept with --debug
        record, code = failure_record(e)
        write_json(spec.out, {"rank": rank, "failed_at": time.time(), **record})
        say(f"failed: {record['error']}")
        return code


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))

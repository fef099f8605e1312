"""One rank of a multi-rank replay, in its own process (``python -m benchmint.replay.rank_worker SPEC``,
started by :func:`benchmint.replay.distributed.replay_ranks`): reads its :class:`RankSpec`, replays its trace
with its collectives on the process group, and writes its result (or its failure) where the spec says."""

from __future__ import annotations

import os
import resource
import sys
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
    """What the launcher tells one rank's worker: who it is, what to replay with which settings, where to meet
    the other ranks and where to write its result."""

    rank: int
    world: int
    trace_rank: int | None  # the rank's trace in an archive of one trace per rank; None: the one trace
    trace: str
    kineto: str | None
    backend: str  # the process group's: gloo or nccl
    options: ReplayOptions
    store: str  # the FileStore the ranks meet in
    out: str  # the rank's result (or failure) JSON
    timeout_s: float  # the whole run: how long to wait for the other ranks to plan
    collective_timeout_s: float
    parent: int  # the launcher's pid: the rank ends with it


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


def _worker(spec_path: str) -> int:
    with open(spec_path, "rb") as fh:
        spec = msgspec.json.decode(fh.read(), type=RankSpec)
    _die_with_parent(spec.parent)
    rank, world = spec.rank, spec.world

    def say(msg: str) -> None:
        print(f"rank {rank}: {msg}", file=sys.stderr, flush=True)

    comm = Collectives(rank=rank, world=world, backend=spec.backend, store_path=spec.store,
                       start_timeout_s=spec.timeout_s, timeout_s=spec.collective_timeout_s)
    seen: set[str] = set()

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in seen:
            seen.add(stage)
            say({"plan": "planning", "time": "timing"}.get(stage, stage))

    def failed(record: dict[str, Any], code: int) -> int:
        traceback.print_exc()  # into the rank's log, kept with --debug
        write_json(spec.out, {"rank": rank, "failed_at": time.time(), **record})
        say(f"failed: {record['error']}")
        return code

    try:
        opts = spec.options
        if (opts.device or "").startswith("cuda"):  # one GPU per rank; NCCL and the current-device allocations
            opts = ReplayOptions.of(opts, device=f"cuda:{rank}")  # follow it
            torch.cuda.set_device(rank)
        res = replay_trace(spec.trace, spec.kineto, opts, rank=spec.trace_rank, comm=comm, progress=progress)
        r = dict(res.result)
        r["rank"] = rank
        r["collectives"] = comm.stats()
        r["peak_rss_bytes"] = _peak_rss_bytes()
        r["per_op_type"] = res.per_op_type
        write_json(spec.out, r)
        say(f"done: {r['ops_replayed']}/{r['ops_total']} ops, {r['iter_time_s']['median'] * 1e3:.1f} ms/iter")
        return 0
    except UserError as e:
        return failed({"error": str(e), "user_error": True}, 2)
    except CommFailed as e:
        return failed({"error": f"failed in {e.where}: {e.why}"}, 1)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which stops the other ranks
        text = str(e).strip()
        return failed({"error": f"failed: {type(e).__name__}" + (f": {text.splitlines()[0]}" if text else "")}, 1)
    finally:
        try:
            comm.close()
        except Exception:  # noqa: BLE001
            pass


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))

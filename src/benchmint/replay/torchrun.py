"""Multi-rank replay under the launcher users already run:
``torchrun --nproc-per-node N [--nnodes M ...] -m benchmint replay TRACE ...``.

Each process is one rank: it takes its rank, the world size and the rendezvous from the environment torchrun
set (:mod:`benchmint.replay.rank_env`), replays its own rank's trace with :func:`benchmint.replay.rank_worker.run_rank`
(the same path as each rank of ``--ranks N``), puts its result in the rendezvous store, and rank 0 joins the
ranks' results into one (:func:`benchmint.replay.distributed.join_ranks`) that it prints and saves. torchrun
starts, watches and stops the processes; a rank that fails ends with its one-line error and torchrun stops the
others.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch

from benchmint.core.errors import UserError
from benchmint.replay.api import find_inputs
from benchmint.replay.distributed import RanksResult, _backend_for, join_ranks
from benchmint.replay.options import ReplayOptions
from benchmint.replay.rank_env import RankEnv, check_ranks, rank_trace, trace_ranks
from benchmint.replay.rank_worker import RankSpec, failure_record, rendezvous_store, run_rank
from benchmint.replay.source import default_device


def replay_torchrun(
    trace: str | os.PathLike,
    kineto: str | os.PathLike | None,
    options: ReplayOptions | None,
    env: RankEnv,
    *,
    timeout_s: float = 1800.0,
    collective_timeout_s: float = 60.0,
    echo: Callable[[str], None] | None = None,
) -> RanksResult | None:
    """Replay this process's rank of ``trace`` under torchrun; rank 0 returns the joined result of every rank,
    the other ranks None. ``timeout_s``: how long to wait for the other ranks (to meet, to plan, to finish)."""
    from benchmint.trace import load

    say = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    opts = ReplayOptions.of(options)
    opts.check()
    if opts.select or opts.what_if or opts.scale:  # each rank would adapt its own step: a dropped collective
        raise UserError("--select, --what-if and --scale apply to a single-process replay; use --mode under "  # hangs
                        "torchrun")
    have = trace_ranks(trace)
    check_ranks(trace, have, env.world, "torchrun's WORLD_SIZE is")
    t, k, trank = rank_trace(trace, kineto, env.rank, have)
    inp = find_inputs(t, k)
    device = opts.device or default_device(load(inp.trace, rank=trank).devices)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    backend = _backend_for(device, env.local_world)
    opts = ReplayOptions.of(opts, device=device, threads=opts.threads or 1)
    torch.set_num_threads(opts.threads or 1)
    spec = RankSpec(rank=env.rank, world=env.world, trace_rank=trank, trace=str(inp.trace),
                    kineto=str(inp.kineto) if inp.kineto else None, backend=backend, options=opts, out="",
                    timeout_s=timeout_s, collective_timeout_s=collective_timeout_s, parent=os.getppid())

    def rank_say(msg: str) -> None:
        say(f"rank {env.rank}: {msg}")

    if env.rank == 0:
        say(f"replaying {env.world} ranks of {trace} under torchrun ({backend}, {device}, {opts.threads} "
            "thread(s) per rank)")
    t0 = time.monotonic()
    store = rendezvous_store(timeout_s)
    try:
        mine: dict[str, Any] = run_rank(spec, store, rank_say)
    except BaseException as e:
        record, _code = failure_record(e)
        store.set(f"result/{env.rank}", json.dumps({"rank": env.rank, "failed_at": time.time(), **record}))
        raise
    store.set(f"result/{env.rank}", json.dumps(mine))
    if env.rank != 0:
        return None
    keys = [f"result/{r}" for r in range(env.world)]
    try:
        store.wait(keys, timedelta(seconds=timeout_s))
    except Exception as e:  # noqa: BLE001 - a store timeout
        raise UserError(f"rank 0: the other ranks did not report within {timeout_s:.0f} s") from e
    per = [json.loads(store.get(k)) for k in keys]
    bad = sorted((p["failed_at"], r, p) for r, p in enumerate(per) if "failed_at" in p)
    if bad:
        _, r, p = bad[0]
        raise UserError(f"rank {r}: {p['error']}")
    return join_ranks(per, backend, time.monotonic() - t0, inp)

"""Run a compiled replay iteration: timed iterations, and one untimed iteration that measures memory."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmint.core import clock
from benchmint.core.stats import timing_summary
from benchmint.replay.conditions import quiet_gc
from benchmint.replay.plan import Plan


def _nothing() -> None:
    return None


def sync_fn(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return _nothing


def _timed(fn: Callable, R: list[Any], sync: Callable[[], None], drain: Callable[[], None]) -> tuple[float, float]:
    """One iteration ``fn(R)``, the device synced on both sides (``drain``: pending communication waited on,
    inside the timing): its (wall, CPU) seconds, the CPU time the process's, every thread's."""
    sync()
    c0 = time.process_time()
    t0 = clock.now_ns()
    fn(R)
    drain()
    sync()
    t = (clock.now_ns() - t0) / 1e9
    return t, time.process_time() - c0


def iteration_s(plan: Plan, fn: Callable) -> float:
    """Wall seconds of one iteration ``fn`` on a fresh register file, the device synced on both sides."""
    return _timed(fn, plan.registers(), sync_fn(plan.device), _nothing)[0]


def time_iterations(plan: Plan, fn: Callable, iters: int, warmup: int = 1, live: bool = False,
                    count: bool = True, together: bool = False, cpu: list[float] | None = None) -> list[float]:
    """Wall seconds of ``iters`` iterations after ``warmup`` untimed ones (registers reset outside timing).

    ``live``: in a multi-rank replay (``plan.comm``), run the collectives for real on the process group, with
    a barrier before each iteration (outside the timing) so that every rank times the same iterations; every
    rank must then make the same call. Point-to-point ops issued without blocking are waited on at the end of
    each iteration, inside the timing. ``count``: the collectives' figures (:meth:`Collectives.stats`) count
    these iterations (False while the gaps are settled). ``together``: not live, but the ranks still start each
    iteration together (the same barrier), so that a rank's ops alone are timed while the other ranks run
    theirs, as in the original step; every rank must then make the same call. ``cpu``: where to append each
    timed iteration's CPU seconds (the process's, every thread: the collectives' too). Python's collector runs
    with the objects from before the call frozen (:func:`benchmint.replay.conditions.quiet_gc`)."""
    sync = sync_fn(plan.device)
    comm = plan.comm if live or together else None
    barrier = comm.barrier if comm is not None else _nothing
    drain = comm.drain if comm is not None else _nothing
    if comm is not None and live:
        comm.begin(plan)
    elif comm is not None:
        comm.ready(plan)
    try:
        with quiet_gc(), plan.grad_context():
            for _ in range(warmup):
                R = plan.registers()
                barrier()
                fn(R)
                drain()
                sync()
                del R
            out = []
            if comm is not None and live and count:
                comm.counting = True
                comm.iterations += iters
            for _ in range(iters):
                R = plan.registers()
                barrier()
                t, c = _timed(fn, R, sync, drain)
                out.append(t)
                if cpu is not None:
                    cpu.append(c)
                del R
    finally:
        if comm is not None and live:
            comm.end()
    return out


def time_in_turns(plan: Plan, fns: list[Callable], turns: int, warmup: int = 1,
                  block: int = 1) -> list[tuple[list[float], list[float]]]:
    """Each of ``fns`` timed in ``turns`` turns of ``block`` iterations in a row (A A B B A A B B ...), after
    ``warmup`` untimed turns, all inside one collector freeze, as the timed iterations run: per function, its
    (wall, CPU) seconds per iteration, turn after turn. Not one :func:`time_iterations` call per iteration:
    each collects the whole heap first, which leaves the caches cold, and a cold iteration of a small
    selection (47 ops) ran twice its warm time here. In a row because the timed loop runs one function so:
    the same selection's iteration with its gaps ran 6% faster alternating one by one with the ops alone
    than on its own."""
    sync = sync_fn(plan.device)
    out: list[tuple[list[float], list[float]]] = [([], []) for _ in fns]
    with quiet_gc(), plan.grad_context():
        for k in range(warmup + turns):
            for f, (wall, cpu) in [pair for pair in zip(fns, out, strict=True) for _ in range(block)]:
                R = plan.registers()
                t, c = _timed(f, R, sync, _nothing)
                del R
                if k >= warmup:
                    wall.append(t)
                    cpu.append(c)
    return out


def summarize(xs: list[float]) -> dict[str, Any]:
    """Median, p10, p90, count, IQR and noise flag of timed iterations
    (:func:`benchmint.core.stats.timing_summary`)."""
    return timing_summary(xs)


def measure_peak_memory(plan: Plan) -> tuple[int, str]:
    """Peak bytes of live tensor storages during one iteration, and how it was measured."""
    if plan.device.type == "cuda":
        torch.cuda.synchronize(plan.device)
        torch.cuda.reset_peak_memory_stats(plan.device)
        base = torch.cuda.memory_allocated(plan.device)
        fn = plan.compile(standins=False)
        R = plan.registers()
        with plan.grad_context():
            fn(R)
        torch.cuda.synchronize(plan.device)
        peak = torch.cuda.max_memory_allocated(plan.device)
        del R
        return int(max(peak, base)), "torch.cuda.max_memory_allocated over one iteration (includes inputs)"
    # CPU: track the storages reachable from the register file after every op
    live: dict[int, int] = {}
    state = {"peak": 0}
    regs = plan.registers()

    def mark(_: int) -> None:
        live.clear()
        for t in regs:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                live[st.data_ptr()] = st.nbytes()
        total = sum(live.values())
        if total > state["peak"]:
            state["peak"] = total

    if len(plan.steps) * plan.n_slots > 20_000_000:  # the per-op walk is quadratic: measure at the end only
        fn = plan.compile(standins=False)
        with plan.grad_context():
            fn(regs)
        mark(0)
        return int(max(state["peak"], plan.persistent_bytes)), "live tensor storages after the iteration"
    fn = plan.compile(standins=False, marks=True)
    fn.__globals__["_mark"] = mark
    gc.collect()
    with plan.grad_context():
        fn(regs)
    return int(state["peak"]), "sum of distinct live tensor storages after each op, one untimed iteration"

"""Time a live original step against its replays, alternating (original, replay, ..., original, replay, ...).

On a shared machine the same step can take half as long again a few minutes later, so a replay is compared
with its original only inside one run, alternately, as the median over rounds of (replay / original - 1).
This is what ``benchmarks/replay_fidelity.py`` and the demo report; call it from a notebook with the step
function you captured::

    res = replay_trace("capture")
    compare_with_original(step, {"replay": res})
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

from benchmint.core import clock
from benchmint.replay import conditions


def _median_time(fn: Callable[[], object], reps: int) -> float:
    xs = []
    for _ in range(reps):
        t0 = clock.now_ns()
        fn()
        xs.append((clock.now_ns() - t0) / 1e9)
    return statistics.median(xs)


def _runner(res: Any, fn: Callable | None = None) -> Callable[[], None]:
    fn, plan = fn or res.compiled(), res.plan
    sync = plan.device.type == "cuda"

    def run() -> None:
        with conditions.denormals_flushed(), plan.grad_context():  # as the replay ran it
            fn(plan.registers())
            if sync:
                torch.cuda.synchronize(plan.device)

    return run


def compare_with_original(step: Callable[[], object], replays: dict[str, Any], *, rounds: int = 7,
                          reps: int = 5, ops_alone: bool = True) -> dict[str, Any]:
    """Time ``step`` (the original) and each replay (a ``ReplayResult``) alternately: ``rounds`` rounds of
    ``reps`` iterations each, one call of each first as warm-up. Returns the original's median time and, per
    replay, its median time and ``error``: the median over rounds of (replay / original - 1).

    With ``ops_alone`` each replay that has gaps is also timed without them, right after it in every round:
    ``ops_s`` and ``ops_vs_original`` (the median over rounds of ops alone / original) say, at the pace of the
    same rounds, whether the replayed ops alone already exceed the original (so that no gap could bring the
    replay down to it). A replay without gaps is its own ops alone (``ops_timed`` False)."""
    if rounds < 1 or reps < 1:
        raise ValueError("rounds and reps must be at least 1")
    runs = {name: _runner(res) for name, res in replays.items()}
    ops: dict[str, Callable[[], None]] = {}
    if ops_alone:
        for name, res in replays.items():
            fn0 = res.compiled_ops()
            if fn0 is not None:
                ops[name] = _runner(res, fn0)
    cuda = [res.plan.device for res in replays.values() if res.plan.device.type == "cuda"]
    if cuda:  # the replays end with a synchronize: so does the live step, or it would time launches only
        live = step

        def step() -> None:  # type: ignore[no-redef]
            live()
            torch.cuda.synchronize(cuda[0])

    step()
    for run in [*runs.values(), *ops.values()]:
        run()
    orig: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in runs}
    ops_times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(rounds):
        orig.append(_median_time(step, reps))
        for name, run in runs.items():
            times[name].append(_median_time(run, reps))
            if name in ops:
                ops_times[name].append(_median_time(ops[name], reps))
    med = statistics.median(orig)
    sides = "each replay" + (" and its ops alone (without its gaps)" if ops else "")
    out: dict[str, Any] = {
        "original_s": med,
        # the original's own round medians, and how far they moved (max - min over their median): an error
        # inside that spread is noise of the measurement, not the replay's (benchmint.replay.headline)
        "original_rounds_s": orig,
        "original_moved": (max(orig) - min(orig)) / med if med > 0 else None,
        "rounds": rounds,
        "reps": reps,
        "how_measured": f"{rounds} rounds alternating the original step and {sides}, {reps} iterations "
                        "each per round (median); error = median over rounds of replay / original - 1",
        "replays": {},
    }
    for name, xs in times.items():
        rm = statistics.median(xs)
        # the replay's own round medians and how far they moved: an error inside it is noise too
        rep = {"replay_s": rm, "rounds_s": xs, "moved": (max(xs) - min(xs)) / rm if rm > 0 else None,
               "error": _paired(xs, orig)}
        if ops_alone:
            ys = ops_times.get(name, xs)
            rep.update(ops_s=statistics.median(ys), ops_rounds_s=ys, ops_vs_original=_paired(ys, orig) + 1,
                       ops_timed=name in ops)
        out["replays"][name] = rep
    return out


def _paired(xs: list[float], orig: list[float]) -> float:
    """The median over rounds of x / original - 1."""
    return statistics.median(x / o - 1 for x, o in zip(xs, orig, strict=True))

"""What a rank's recorded collectives cost, apart from the time the rank waited in them for its peers.

A rank that reaches a collective before its peers waits there: on gloo the main thread records nothing until the
collective is done (the wait is no op of the trace, it is the recorded gap before the next op), for functional
collectives the wait is ``wait_tensor``'s duration. That time is neither the rank's CPU work nor the collective's
cost: it is what the other ranks still had to do. The cost of collective k is its span on the rank that arrived
last, the one that did not wait: of the ranks' recorded spans (from the collective's start to the start of the
next op that is no collective), the smallest; a rank's wait is its span less that. A multi-rank replay leaves
both to its live collectives (the ranks replayed together wait for each other as the original's did), so the
CPU time between ops is never placed where a rank only waited (:func:`communication_gaps`), and the result
reports, per collective, the recorded cost against the replayed one (:func:`last_arrival`).
"""

from __future__ import annotations

from typing import Any

from benchmint.replay.types import TraceView, is_collective
from benchmint.replay.types import local_collective as _local


def communication_gaps(view: TraceView) -> set[int]:
    """Indices of the ops whose recorded gap before them follows a collective (with only collectives, such as
    ``wait_tensor``, in between): that gap holds the collective's communication and the wait for the other
    ranks, not the rank's own work."""
    return set(gap_owners(view))


def gap_owners(view: TraceView) -> dict[int, int]:
    """Per op of :func:`communication_gaps`, the collective whose communication its gap holds: the last one
    that moves data before it."""
    out: dict[int, int] = {}
    owner = None
    for i, o in enumerate(view.ops):
        if is_collective(o.name):
            if not _local(o.name):
                owner = i
            continue
        if owner is not None:
            out[i] = owner
        owner = None
    return out


def recorded_spans(view: TraceView) -> list[dict[str, Any]]:
    """Per collective that moves data, in recorded order: its step, name and recorded span (seconds from its
    start to the start of the next op that is no collective, or to the end of the step; None when not timed)."""
    ops = view.ops
    end = (view.step_start_s + view.step_span_s) if view.step_start_s is not None and view.step_span_s is not None \
        else None
    out = []
    for i, o in enumerate(ops):
        if not is_collective(o.name) or _local(o.name):
            continue
        nxt = next((p.start_s for p in ops[i + 1:] if not is_collective(p.name) and p.start_s is not None), end)
        span = nxt - o.start_s if o.start_s is not None and nxt is not None else None
        out.append({"step": i, "op": o.name, "span_s": span})
    return out


def last_arrival(spans: list[list[dict[str, Any]]], replayed: list[list[dict[str, Any]]] | None = None
                 ) -> dict[str, Any] | None:
    """The ranks' recorded collectives joined (``spans``: each rank's :func:`recorded_spans`): per collective,
    its cost on the last-arriving rank (the smallest span) and each rank's wait (its span less that), and the
    totals per rank; with ``replayed`` (each rank's per-op collective figures, ``time_s`` per call), the same of
    the replay. None when the ranks' recorded collectives do not line up (not the same count)."""
    if not spans or any(len(s) != len(spans[0]) for s in spans) or not spans[0]:
        return None
    per = []
    for k, first in enumerate(spans[0]):
        xs = [s[k]["span_s"] for s in spans]
        if any(x is None for x in xs):
            per.append({"op": first["op"], "cost_s": None, "wait_s_per_rank": None})
            continue
        cost = min(xs)
        per.append({"op": first["op"], "cost_s": cost, "wait_s_per_rank": [x - cost for x in xs]})
    timed = [p for p in per if p["cost_s"] is not None]
    out: dict[str, Any] = {
        "per_collective": per,
        # null, not 0, when no collective's span was recorded (no Kineto trace): nothing was measured
        "cost_s": sum(p["cost_s"] for p in timed) if timed else None,
        "wait_s_per_rank": [sum(p["wait_s_per_rank"][r] for p in timed) for r in range(len(spans))] if timed else None,
        "collectives_timed": len(timed),
        "how": "the original's recording (under the observers): a collective's span is from its start to the start "
               "of the next op that is no collective on that rank; its cost is the smallest span over the ranks (the "
               "rank that arrived last waited for no one), a rank's wait its span less that",
    }
    if replayed and all(len(r) == len(spans[0]) for r in replayed):
        costs = [min(r[k]["time_s"] for r in replayed) for k in range(len(spans[0]))]
        out["replay_cost_s"] = sum(costs)
        out["replay_wait_s_per_rank"] = [sum(r[k]["time_s"] - costs[k] for k in range(len(costs))) for r in replayed]
    return out

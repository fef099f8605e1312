"""The CPU work a replay settled between its ops, saved to a file and replayed from it (``benchmint replay
--save-gaps`` / ``--gaps-from``, an exported benchmark's ``gaps.json``).

Each process that replays with ``--gaps recorded`` calibrates and settles its own gaps against a measurement
that the machine's load moves, so two processes replaying the same step differ by what their calibrations did
as much as by their engines. A gaps file fixes that part: the gaps are kept as the amount of work (turns of
:func:`benchmint.replay.spin.spin`), not as time, so a replay from the file spends the same work between the
same ops, and a slower machine takes longer over it as it would over the original's Python.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmint.core.errors import UserError
from benchmint.core.jsonio import read_json, write_json
from benchmint.replay.spin import iters_for, ns_per_turn
from benchmint.replay.types import TENSOR, TENSOR_LIST

KIND = "benchmint.replay.gaps"
SCHEMA_VERSION = 1

#: what the replay that settled the gaps said about them, carried into a replay from the file
CARRIED = ("gap_target", "gap_settling", "original_iter_time_estimated_s", "estimate_note", "device", "threads",
           "trace")


@dataclass(frozen=True)
class GapsFile:
    """Gaps read from a file: ``turns[i]`` before step ``i`` (one more entry: after the last step)."""

    path: str
    steps: int
    turns: list[int]
    ns_per_turn: float  # on the machine that settled them
    settled: dict[str, Any]
    # the recorders' cost per recorded node that the settling replay took out of the skipped ops' stand-ins
    # (their recorded durations hold it): the replay from the file spends the same; None: not in the file
    standin_cost_s: float | None = None
    digest: str | None = None  # step_digest of the step they were settled for (None: an older file)

    def gaps_ns(self) -> list[int]:
        """The gaps in this process's nanoseconds: as many turns as were settled (``spin.iters_for`` of each
        gives back the same count)."""
        here = ns_per_turn()
        return [round(t * here) for t in self.turns]

    def check_steps(self, steps: int, view: Any = None) -> None:
        """Refuse a file settled for another step: another op count, or (where the file has one) another
        digest of the ops and their shapes (:func:`step_digest`)."""
        if steps != self.steps:
            raise UserError(f"{self.path}: its gaps were settled for a step of {self.steps} ops and this replay "
                            f"has {steps}; save them from a replay of the same trace with the same --select, "
                            "--what-if and --iteration")
        if view is not None and self.digest is not None and step_digest(view) != self.digest:
            raise UserError(f"{self.path}: its gaps were settled for another step of {steps} ops (other ops or "
                            f"tensor shapes; settled on {self.settled.get('trace') or 'another trace'}); save them "
                            "from a replay of this trace")

    def info(self) -> dict[str, Any]:
        """What a replay from the file says about where its gaps came from (``gaps_from`` in the result)."""
        return {"path": self.path, "turns": sum(self.turns), "ns_per_turn_then": self.ns_per_turn,
                "ns_per_turn_here": ns_per_turn(), "settled": self.settled,
                "standin_cost_per_node_s": self.standin_cost_s,
                "how": "the CPU work between ops that the replay in `settled` calibrated, spent as the same number "
                       "of spin turns (no calibration here)"}


def step_digest(view: Any) -> str:
    """A digest of a step's ops: their names and their tensor arguments' shapes and dtypes, in order. Two
    captures of one model at two batch sizes have the same op count and another digest."""
    h = hashlib.sha256()
    for op in view.ops:
        h.update(op.name.encode())
        for a in (*op.inputs, *op.outputs):
            refs = a.value if a.kind == TENSOR_LIST else [a.value] if a.kind == TENSOR else []
            for t in refs:
                if t is not None:
                    h.update(f"|{tuple(t.shape)}{t.dtype}".encode())
        h.update(b";")
    return h.hexdigest()[:16]


def write(path: str | os.PathLike, result: dict[str, Any], gaps_ns: list[int] | None, steps: int,
          view: Any = None) -> Path:
    """Save a replay's settled gaps (``gaps_ns`` for a plan of ``steps`` ops, ``view`` its step) with what it
    said about them."""
    if gaps_ns is None:  # (settled to nothing is a figure: the ops alone reach the aim, the file holds zeros)
        why = result.get("estimate_note") or f"the replay ran with --gaps {result.get('gaps')}"
        raise UserError(f"--save-gaps {path}: this replay settled no gaps between its ops ({why})")
    doc = {"schema_version": SCHEMA_VERSION, "kind": KIND, "steps": steps,
           "ns_per_turn": ns_per_turn(), "gap_time_s": sum(gaps_ns) / 1e9,
           "turns": [iters_for(g) if g > 0 else 0 for g in gaps_ns],
           "settled": {k: result.get(k) for k in CARRIED}}
    if view is not None:
        doc["step_digest"] = step_digest(view)
    cost = (result.get("standins") or {}).get("cost_per_node_s")
    if cost is not None:
        doc["standin_cost_per_node_s"] = cost
    return write_json(path, doc)


def read(path: str | os.PathLike) -> GapsFile:
    """A gaps file, checked: one line naming the file for anything that is not one."""
    p = Path(path)
    try:
        doc = read_json(p)
    except FileNotFoundError:
        raise UserError(f"{p}: no such gaps file (write one with benchmint replay --save-gaps)") from None
    except (OSError, ValueError) as e:  # (a JSON or UTF-8 decoding error is a ValueError)
        raise UserError(f"{p}: not a gaps file ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise UserError(f"{p}: not a gaps file (no kind {KIND!r}; write one with benchmint replay --save-gaps)")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{p}: gaps file schema_version {doc.get('schema_version')!r}; this benchmint reads "
                        f"{SCHEMA_VERSION}")
    turns, steps, npt = doc.get("turns"), doc.get("steps"), doc.get("ns_per_turn")
    if (not isinstance(turns, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                               for t in turns)
            or not isinstance(steps, int) or len(turns) not in (steps, steps + 1)
            or not isinstance(npt, int | float) or not npt > 0):
        raise UserError(f"{p}: a damaged gaps file (turns must be {steps!r} or one more counts >= 0, ns_per_turn "
                        "a positive number)")
    settled = doc.get("settled") if isinstance(doc.get("settled"), dict) else {}
    cost = doc.get("standin_cost_per_node_s")
    if cost is not None and (not isinstance(cost, int | float) or isinstance(cost, bool) or not 0 <= cost < 1):
        raise UserError(f"{p}: a damaged gaps file (standin_cost_per_node_s must be seconds >= 0, got {cost!r})")
    digest = doc.get("step_digest")
    return GapsFile(path=str(p), steps=steps, turns=turns, ns_per_turn=float(npt), settled=settled,
                    standin_cost_s=float(cost) if cost is not None else None,
                    digest=digest if isinstance(digest, str) else None)

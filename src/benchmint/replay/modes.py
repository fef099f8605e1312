"""What a multi-rank replay runs of its step (``--mode``): all of it (``full``), its computation alone
(``compute``: the step without its collectives, as ``--what-if drop:`` of them) or its communication alone
(``comm``: the collectives with the CPU time before each, as ``--select op:`` of them). Each is an adaptation
(:mod:`benchmint.replay.adapt`), so the result says what was replayed and compares it with that part of the
original step."""

from __future__ import annotations

from benchmint.core.errors import UserError
from benchmint.replay.adapt import adapt_view
from benchmint.replay.source import TraceView
from benchmint.replay.types import is_collective

#: the op names of the collectives (c10d and functional collectives), as a --select/--what-if pattern
COLLECTIVES = r"^(c10d|c10d_functional|_c10d_functional)::"


def mode_specs(view: TraceView, mode: str, select: str | None,
               what_if: list[str]) -> tuple[str | None, list[str]]:
    """The ``--select`` and ``--what-if`` that ``mode`` stands for on ``view`` (the given ones for full)."""
    if mode == "full":
        return select, what_if
    has = any(is_collective(o.name) for o in view.ops)
    if mode == "comm":
        if not has:
            raise UserError("--mode comm: the step has no collectives to replay; use --mode full")
        return f"op:{COLLECTIVES}", []
    if mode == "compute":
        return None, ([f"drop:{COLLECTIVES}"] if has else [])
    raise UserError(f"--mode {mode}: choose full, compute or comm")


def mode_view(view: TraceView, mode: str) -> TraceView:
    """``view`` as ``mode`` replays it."""
    select, what_if = mode_specs(view, mode, None, [])
    return adapt_view(view, select, what_if)[0]

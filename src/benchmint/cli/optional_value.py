"""Options whose value may be left out (``--ray`` alone, ``--ray auto``, ``--ray HOST:PORT``).

typer has no option with an optional value; a command class rewrites a bare ``--ray`` (last, or followed by
another option) into ``--ray=local`` before click parses the arguments.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand

OPTIONAL_VALUES = {"--ray": "local"}


def fill_bare(args: list[str], defaults: dict[str, str] = OPTIONAL_VALUES) -> list[str]:
    out = []
    for i, a in enumerate(args):
        nxt = args[i + 1] if i + 1 < len(args) else None
        if a in defaults and (nxt is None or nxt.startswith("-")):
            a = f"{a}={defaults[a]}"
        out.append(a)
    return out


class OptionalValueCommand(TyperCommand):
    """A typer command where ``--ray`` may be given without a value (it then means ``local``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, fill_bare(list(args)))

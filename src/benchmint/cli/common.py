"""Shared CLI state and consoles."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


@dataclass
class _State:
    debug: bool = False


state = _State()


def run_kind(value: str | None) -> str | None:
    """typer callback for ``--kind``: a kind no run can have is an error, not an empty answer."""
    from benchmint.core.errors import UserError
    from benchmint.results.record import KINDS

    if value is not None and value not in KINDS:
        raise UserError(f"--kind {value!r}: runs are of kind {', '.join(KINDS)}")
    return value

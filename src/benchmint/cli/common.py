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

"""A replay's result in words: the fidelity line ``benchmint replay`` and the demo print."""

from __future__ import annotations

from benchmint.replay.headline import headline


def fmt_s(x: float | None) -> str:
    """Seconds as ms below one second, else s; "-" for None."""
    if x is None:
        return "-"
    return f"{x * 1e3:.3f} ms" if x < 1 else f"{x:.3f} s"


def fidelity_line(r: dict) -> str:
    """One line: coverage, replayed vs original time, error, and whether that error is a measurement or noise
    (:mod:`benchmint.replay.headline`)."""
    return headline(r)[0]

"""A replay's result in words: the fidelity line ``benchmint replay`` and the demo print."""

from __future__ import annotations

from benchmint.replay.headline import fmt_s, headline

__all__ = ["fidelity_line", "fmt_s"]


def fidelity_line(r: dict) -> str:
    """One line: coverage, replayed vs original time, error, and whether that error is a measurement or noise
    (:mod:`benchmint.replay.headline`)."""
    return headline(r)[0]

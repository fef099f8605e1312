"""A replay's result in words: the fidelity line ``benchmint replay`` and the demo print."""

from __future__ import annotations

from benchmint.core.stats import noise_note


def fmt_s(x: float | None) -> str:
    """Seconds as ms below one second, else s; "-" for None."""
    if x is None:
        return "-"
    return f"{x * 1e3:.3f} ms" if x < 1 else f"{x:.3f} s"


def fidelity_line(r: dict) -> str:
    """One line: coverage, replayed vs original time, error."""
    it = r["iter_time_s"]["median"]
    orig = r["original_iter_time_s"]
    parts = [f"coverage {r['coverage']:.3f} ({r['ops_replayed']}/{r['ops_total']} ops)",
             f"replay {fmt_s(it)}/iter" + noise_note(r["iter_time_s"])]
    if orig is not None:
        parts.append(f"original {fmt_s(orig)} (capture.json)")
        parts.append(f"error {r['error'] * 100:+.1f}%" if r["error"] is not None else "error - (see error_note)")
    elif r.get("original_iter_time_estimated_s") is not None:
        parts.append(f"original ~{fmt_s(r['original_iter_time_estimated_s'])} (estimated from the trace)")
    return ", ".join(parts)

"""Which rows of the results store the learning layer learns from: complete, real measurements only
(:mod:`benchmint.results.measured` says which runs are; this module applies it to the store's flattened rows).

Rows without these columns (imported official results, Open MLPerf files) are kept. Every caller says how many rows
were left out and why (:func:`left_out_text`).
"""

from __future__ import annotations

import pandas as pd

from benchmint.learn.features import target_values
from benchmint.results.measured import REASONS, SIM_BACKENDS, name_of, record_reason

__all__ = ["REASONS", "left_out_text", "record_reason", "row_reasons", "usable_rows"]

# where a flattened `runs` row names the engine that ran it (first non-empty wins per column, any one is enough)
BACKEND_COLUMNS = ("config__backend", "config__backend__kind", "system__engine", "workload__backend", "backend")
STATUS_COLUMNS = ("status",)


def row_reasons(df: pd.DataFrame, allow_sim: bool = False) -> pd.Series:
    """Per row, why it is left out (a key of :data:`REASONS`), or None when it is kept."""
    out = pd.Series([None] * len(df), index=df.index, dtype=object)
    for c in STATUS_COLUMNS:
        if c in df.columns:
            st = df[c].map(name_of)
            bad = st.notna() & (st != "ok")
            out = out.where(~(bad & out.isna()), st.map(lambda s: s if s in REASONS else "failed"))
    if not allow_sim:
        for c in BACKEND_COLUMNS:
            if c in df.columns:
                sim = df[c].map(name_of).isin(SIM_BACKENDS)
                out = out.where(~(sim & out.isna()), "sim")
    return out


def usable_rows(df: pd.DataFrame, allow_sim: bool = False,
                target: str | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows that are complete, real measurements, and {reason: rows left out}. ``target``: only the rows that
    have it are candidates, and only they are counted (a partial capture was never a throughput row)."""
    if not len(df):
        return df, {}
    if target is not None:
        df = df[target_values(df, target).notna().to_numpy()].reset_index(drop=True)
        if not len(df):
            return df, {}
    reasons = row_reasons(df, allow_sim)
    keep = reasons.isna()
    counts = {str(k): int(v) for k, v in reasons[~keep].value_counts().items()}
    return (df if keep.all() else df[keep.to_numpy()].reset_index(drop=True)), counts


def left_out_text(left_out: dict[str, int] | None) -> str | None:
    """``"left out 5 run(s) that are not complete, real measurements: 2 partial (...), 3 simulated (...)"``,
    or None when none were."""
    if not left_out:
        return None
    n = sum(left_out.values())
    parts = ", ".join(f"{v} {REASONS.get(k, k)}" for k, v in sorted(left_out.items(), key=lambda kv: -kv[1]))
    return f"left out {n} run(s) that are not complete, real measurements: {parts}"

"""Whether a stored run is a complete, real measurement: what the learning layer learns from and what may sit on
the report's Pareto frontier.

A run is not one when its status is not ``ok`` (``partial``: interrupted, e.g. Ctrl-C, or with failed requests,
its rate is that of the requests that finished; ``failed``; ``invalid``: LoadGen INVALID, it broke its
scenario's constraints), or when the simulated engine made it (``--backend sim``: its figures are the
simulator's settings, not a measurement of any model, engine or host).
"""

from __future__ import annotations

from typing import Any

SIM_BACKENDS = frozenset({"sim"})
REASONS = {
    "partial": "partial (interrupted or with failed requests)",
    "failed": "failed",
    "invalid": "invalid (LoadGen INVALID)",
    "sim": "simulated backend (--backend sim), not a measurement",
}


def name_of(v: Any) -> str | None:
    """A backend or status value as lower-case text (a mlperf backend block: its kind), None when empty."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, dict):
        v = v.get("kind") or v.get("name")
    t = str(v).strip().lower()
    return t or None


def record_reason(rec: Any, allow_sim: bool = False) -> str | None:
    """Why a RunRecord is no complete, real measurement (a key of :data:`REASONS`), or None."""
    status = name_of(getattr(rec, "status", "ok")) or "ok"
    if status != "ok":
        return status if status in REASONS else "failed"
    if allow_sim:
        return None
    config, system, workload = (getattr(rec, k, None) or {} for k in ("config", "system", "workload"))
    names = [name_of(config.get("backend")) if isinstance(config, dict) else None,
             name_of(system.get("engine")) if isinstance(system, dict) else None,
             name_of(workload.get("backend")) if isinstance(workload, dict) else None]
    return "sim" if any(n in SIM_BACKENDS for n in names) else None

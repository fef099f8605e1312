"""What the report reads out of RunRecords, tolerant of missing pieces.

Replay runs carry ``metrics.per_op_type`` (a list of ``{op, count, original_s, replay_s}``, or a mapping op ->
that), ``metrics.error`` and ``metrics.coverage``; LLM runs carry ``artifacts["requests"]`` (a per-request
Parquet file with ``ttft_s``, ``tpot_s``, ``e2e_s``) and percentiles such as ``metrics.ttft_s.p99``, and
``metrics.throughput`` against the offered load in ``config`` (rate or concurrency). A peak search
(``benchmint llm sweep``) stores one more record whose ``metrics.sweep`` holds the trials' curve and the peak
(``SweepResult.to_dict()`` plus ``unit`` and ``criterion``); it is a sweep, not an LLM run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmint.results.record import RunRecord

LATENCY_METRICS = ("ttft_s", "tpot_s", "e2e_s")
PERCENTILES = ("p50", "p90", "p95", "p99", "max")
LOAD_KEYS = (
    ("rate", "offered rate (req/s)"),
    ("request_rate", "offered rate (req/s)"),
    ("target_qps", "offered rate (req/s)"),
    ("qps", "offered rate (req/s)"),
    ("concurrency", "concurrency"),
    ("max_concurrency", "concurrency"),
)


def short_id(rec: RunRecord) -> str:
    return rec.id if len(rec.id) <= 24 else rec.id[:24] + "…"


def _short_name(v: Any) -> str | None:
    """A short text for a config value: dicts give their ``kind``/``name``; local paths their last part."""
    if isinstance(v, dict):
        v = v.get("kind") or v.get("name")
    if v is None or isinstance(v, dict | list) or v == "":
        return None
    s = str(v)
    if s.startswith(("/", "./", "../", "~")) and len(s) > 24:
        s = Path(s).name or s
    return s


def label(rec: RunRecord) -> str:
    """A short human label for a run: model, backend or scenario, and a short id."""
    w, c = rec.workload or {}, rec.config or {}
    # (a peak search stored before it named the model model_name has it as model)
    bits = [_short_name(w.get("model_name")) or _short_name(w.get("model")) or _short_name(w.get("name")) or rec.kind]
    for k in ("backend", "engine", "scenario", "device"):
        s = _short_name(c.get(k))
        if s:
            bits.append(s)
            break
    if rec.kind == "mlperf":
        bits.append("LoadGen")
    return f"{' / '.join(bits)} ({rec.id[-8:]})"


def num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int | float):
        f = float(v)
        return f if math.isfinite(f) else None
    try:
        f = float(v)
        return f if math.isfinite(f) else None
    except (TypeError, ValueError):
        return None


@dataclass
class OpRow:
    op: str
    count: int | None
    original_s: float | None
    replay_s: float | None

    @property
    def error(self) -> float | None:
        if self.original_s and self.replay_s is not None:
            return (self.replay_s - self.original_s) / self.original_s
        return None


def per_op_rows(rec: RunRecord) -> list[OpRow]:
    raw = rec.metrics.to_dict().get("per_op_type")
    items: list[dict[str, Any]] = []
    if isinstance(raw, list):
        items = [d for d in raw if isinstance(d, dict)]
    elif isinstance(raw, dict):
        items = [{"op": k, **v} for k, v in raw.items() if isinstance(v, dict)]
    rows = []
    for d in items:
        op = d.get("op") or d.get("name") or d.get("op_type") or "?"
        cnt = d.get("count")
        rows.append(OpRow(str(op), int(cnt) if isinstance(cnt, int | float) else None,
                          num(d.get("original_s")), num(d.get("replay_s"))))
    rows.sort(key=lambda r: -(r.original_s or r.replay_s or 0.0))
    return rows


def coverage(rec: RunRecord) -> tuple[float | None, float | None]:
    """(coverage by count, coverage by time) when the replay run recorded them."""
    cov = rec.metrics.to_dict().get("coverage")
    if isinstance(cov, dict):
        return num(cov.get("count")), num(cov.get("time"))
    m = rec.metrics.to_dict()
    return num(cov) if cov is not None else num(m.get("coverage_count")), num(m.get("coverage_time"))


def resolve_artifact(rec: RunRecord, key: str, base_dirs: list[Path]) -> Path | None:
    """Find an artifact file: absolute, or relative to the run's folder (``artifacts.out_dir``,
    ``config.out``), one of ``base_dirs`` (e.g. the folder of a run.json given to the report) or the cwd."""
    arts = rec.artifacts or {}
    absolute = arts.get(f"{key}_abs")  # the LLM layer records the absolute path beside the relative one
    if isinstance(absolute, str | Path) and Path(absolute).is_file():
        return Path(absolute)
    value = arts.get(key)
    if not value or not isinstance(value, str | Path):
        return None
    p = Path(value)
    if p.is_absolute():
        return p if p.is_file() else None
    candidates = []
    for k in ("out_dir", "run_dir"):
        if (rec.artifacts or {}).get(k):
            candidates.append(Path(rec.artifacts[k]))
    for k in ("out", "out_dir"):
        if (rec.config or {}).get(k):
            candidates.append(Path(str(rec.config[k])))
    candidates += list(base_dirs) + [Path.cwd()]
    for base in candidates:
        q = base / p
        if q.is_file():
            return q
    return None


@dataclass
class LatencySamples:
    """Per-request latencies of one run (seconds), or ``None`` per metric when only percentiles exist."""

    values: dict[str, list[float]]
    source: str  # "requests file" | "percentiles" | "none"


def latency_samples(rec: RunRecord, base_dirs: list[Path]) -> LatencySamples:
    path = resolve_artifact(rec, "requests", base_dirs)
    if path is not None:
        try:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            n = table.num_rows
            keep = [True] * n  # measured, successful requests only (no warm-up, no failures)
            if "warmup" in table.column_names:
                keep = [k and not w for k, w in zip(keep, table.column("warmup").to_pylist(), strict=True)]
            if "ok" in table.column_names:
                keep = [k and ok is not False for k, ok in zip(keep, table.column("ok").to_pylist(), strict=True)]
            vals: dict[str, list[float]] = {}
            for m in LATENCY_METRICS:
                if m in table.column_names:
                    col = [num(v) for v, k in zip(table.column(m).to_pylist(), keep, strict=True) if k]
                    vals[m] = sorted(v for v in col if v is not None)
            if any(vals.values()):
                return LatencySamples(vals, "requests file")
        except Exception:  # an unreadable requests file: fall back to the stored percentiles
            pass
    return LatencySamples({}, "percentiles" if percentiles(rec) else "none")


def _client_metrics(rec: RunRecord) -> dict[str, Any]:
    """The block holding client-side latency/throughput: ``metrics`` itself (``llm`` runs) or
    ``metrics.client`` (``mlperf`` runs measured through LoadGen)."""
    m = rec.metrics.to_dict()
    if any(k in m for k in (*LATENCY_METRICS, "throughput")):
        return m
    client = m.get("client")
    return client if isinstance(client, dict) else m


def percentiles(rec: RunRecord) -> dict[str, dict[str, float]]:
    """``{"ttft_s": {"p50": ..., "p99": ...}, ...}`` from the record's metrics (only finite numbers)."""
    out: dict[str, dict[str, float]] = {}
    m = _client_metrics(rec)
    for metric in LATENCY_METRICS:
        block = m.get(metric)
        if isinstance(block, dict):
            got = {k: num(block.get(k)) for k in ("mean", *PERCENTILES)}
            got = {k: v for k, v in got.items() if v is not None}
            if got:
                out[metric] = got
    return out


def throughput(rec: RunRecord) -> dict[str, float]:
    tp = _client_metrics(rec).get("throughput")
    if not isinstance(tp, dict):
        return {}
    return {k: v for k, v in ((k, num(v)) for k, v in tp.items()) if v is not None}


def offered_load(rec: RunRecord) -> tuple[float, str] | None:
    c = rec.config or {}
    for key, what in LOAD_KEYS:
        v = num(c.get(key))
        if v is not None:
            return v, what
    return None


def sweep(rec: RunRecord) -> dict[str, Any] | None:
    """The ``metrics.sweep`` block of a peak-search run (``benchmint llm sweep``), or ``None``."""
    sw = rec.metrics.to_dict().get("sweep")
    return sw if isinstance(sw, dict) and isinstance(sw.get("curve"), list) else None


def is_sweep(rec: RunRecord) -> bool:
    """A peak search's own record: the curve of its trials and the peak, no per-request metrics (each trial
    is a run of its own)."""
    return sweep(rec) is not None


def is_llm(rec: RunRecord) -> bool:
    if is_sweep(rec):
        return False
    return rec.kind in ("llm", "mlperf") or bool(percentiles(rec)) or "requests" in (rec.artifacts or {})


def is_replay(rec: RunRecord) -> bool:
    return rec.kind == "replay" or "per_op_type" in rec.metrics.to_dict()

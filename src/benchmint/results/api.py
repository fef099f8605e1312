"""The Python API behind ``benchmint results``: list, show, query, export and import, over a ResultsStore."""

from __future__ import annotations

import datetime as _dt
import decimal
import os
import warnings
from pathlib import Path
from typing import Any

import orjson
from msgspec import UNSET

from benchmint.core.errors import UserError
from benchmint.core.jsonio import atomic_write_bytes
from benchmint.results.models import CaptureMetrics, MlperfMetrics, ReplayMetrics, SweepMetrics
from benchmint.results.store import ResultsStore, StoreWarning

EXPORT_FORMATS = ("csv", "parquet", "jsonl")
LIST_COLUMNS = ("id", "created", "kind", "status", "model", "scenario", "headline")


def open_store(path: str | os.PathLike | None, must_exist: bool = False) -> ResultsStore:
    """The store at ``path`` (else $BENCHMINT_RESULTS, else ./benchmint-results). A path that is a file is
    refused; with ``must_exist`` (commands that only read) so is one that does not exist (:class:`UserError`)."""
    store = ResultsStore(path)
    store.check_folder(must_exist=must_exist)
    return store


def quietly(fn, *args, **kwargs):
    """Call ``fn`` with the store's own warnings silenced (callers print ``store.problems`` themselves)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        return fn(*args, **kwargs)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, decimal.Decimal):
        return float(obj)
    if isinstance(obj, _dt.datetime | _dt.date | _dt.time):
        return obj.isoformat()
    if isinstance(obj, _dt.timedelta):
        return obj.total_seconds()
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def rows_as_json(columns: list[str], rows: list[tuple], indent: bool = True) -> str:
    """Query rows as a JSON list of objects (one per row, keys = column names)."""
    objs = [dict(zip(columns, r, strict=True)) for r in rows]
    opt = orjson.OPT_INDENT_2 if indent else 0
    return orjson.dumps(objs, default=_json_default, option=opt | orjson.OPT_NON_STR_KEYS).decode()


def _set(v: Any) -> Any:
    return None if v is UNSET else v


def headline(rec) -> str:
    """One short figure that says what a run measured (read from the record's typed metrics)."""
    m = rec.metrics
    parts = []
    sw = _set(getattr(m, "sweep", UNSET)) if isinstance(m, SweepMetrics) else None
    if sw is not None:  # a peak search: its peak, not a run's figures (it stored none of its own)
        peak, unit = _set(sw.peak_rate), _set(sw.unit) or "req/s"
        unit = "req/s" if "request" in unit else unit  # ("llm bench requests/s (Poisson arrivals)")
        ceiling = _set(sw.bracket) or {}
        more = " (every trial passed: a floor)" if peak is not None and ceiling.get("failed") is None else ""
        cut = "; stopped by Ctrl-C" if _set(sw.interrupted) else ""  # (a floor, or nothing, for that reason)
        return (f"peak {peak:.4g} {unit} over {_set(sw.trials_used) or 0} trials{more}{cut}" if peak is not None
                else f"no passing rate in {_set(sw.trials_used) or 0} trials{cut}")
    if isinstance(m, CaptureMetrics):  # the step the capture timed without observers
        st = _set(m.step_time_s)
        med = _set(getattr(st, "median", UNSET)) if st is not None else None
        return f"step {med * 1000:.3g} ms un-observed" if isinstance(med, int | float) else ""
    fid = _set(m.fidelity) if isinstance(m, ReplayMetrics) else None
    if isinstance(fid, dict) and fid.get("reference") == "live step" and isinstance(fid.get("error"), int | float):
        # the demo's measurement: the live step timed alternately with the replay (metrics.error is against
        # capture.json, minutes earlier: the list read +588% where the demo printed -28.2%)
        parts.append(f"replay error {fid['error']:+.1%} vs live step")
    elif isinstance(m, ReplayMetrics) and isinstance(_set(m.error), int | float):
        parts.append(f"replay error {m.error:+.1%}")
    if isinstance(m, MlperfMetrics) and _set(m.throughput) is None:  # no LoadGen figures: the client's
        m = _set(m.client)
    tp = _set(getattr(m, "throughput", UNSET))
    if tp is not None:
        if _set(tp.output_tokens_per_s) is not None:
            parts.append(f"{tp.output_tokens_per_s:.4g} tok/s")
        elif _set(getattr(tp, "samples_per_s", UNSET)) is not None:
            parts.append(f"{tp.samples_per_s:.4g} samples/s")
        elif _set(getattr(tp, "requests_per_s", UNSET)) is not None:
            parts.append(f"{tp.requests_per_s:.4g} req/s")
    ttft = _set(getattr(m, "ttft_s", UNSET))
    if ttft is not None and ttft.p99 is not None:
        parts.append(f"TTFT p99 {ttft.p99 * 1000:.3g} ms")
    lat = _set(getattr(m, "latency_s", UNSET))
    if isinstance(lat, dict):
        for k in ("p90", "p99"):
            if lat.get(k) is not None:
                parts.append(f"latency {k} {lat[k] * 1000:.3g} ms")
                break
    return ", ".join(parts)


def list_rows(store: ResultsStore, kind: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    recs = quietly(store.records)
    if kind:
        recs = [r for r in recs if r.kind == kind]
    if limit:
        recs = recs[-limit:]
    out = []
    for r in recs:
        out.append({
            "id": r.id,
            "created": _dt.datetime.fromtimestamp(r.created_s, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "kind": r.kind,
            "status": r.status,
            "model": (r.workload or {}).get("model_name") or (r.workload or {}).get("model"),
            "scenario": (r.config or {}).get("scenario") or (f"sweep ({(r.config or {}).get('target')})"
                                                             if isinstance(r.metrics, SweepMetrics) else None),
            "headline": headline(r),
        })
    return out


def export(store: ResultsStore, fmt: str, out: str | os.PathLike) -> tuple[Path, int]:
    """Write the whole store as CSV or Parquet (table ``runs``, flattened) or JSONL (one full record per
    line). Returns (path, number of runs)."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    recs = quietly(store.records)
    if fmt == "jsonl":
        data = b"".join(orjson.dumps(r.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for r in recs)
        atomic_write_bytes(out, data)
        return out, len(recs)
    import io

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = store.table(recs)
    buf = io.BytesIO()
    if fmt == "csv":
        pacsv.write_csv(table, buf)
    else:
        pq.write_table(table, buf, compression="zstd")
    atomic_write_bytes(out, buf.getvalue())
    return out, len(recs)


def import_into(store: ResultsStore, paths: list[str | os.PathLike], fmt: str | None = None,
                problems: list[str] | None = None) -> tuple[int, int]:
    """Import MLPerf results into the store; returns (records read, records new to the store). Rows skipped
    (an impossible number such as ``inf``) are named in ``problems``."""
    from benchmint.results.importers import import_results

    recs = import_results(paths, None if fmt in (None, "auto") else fmt, problems)
    if not recs:
        return 0, 0
    from benchmint.results.save import save_runs

    saved = save_runs(recs, store=store)
    return saved.total, saved.new

"""Import official MLPerf Inference results into RunRecords of kind ``imported``.

Two layouts are read:

- ``summary.csv`` of the mlcommons/inference_results_v* repositories (one row per system, benchmark and
  scenario; columns ``Organization, Availability, Division, SystemType, SystemName, Platform, Model,
  MlperfModel, Scenario, Result, Accuracy, number_of_nodes, host_processor_model_name, ...,
  accelerator_model_name, accelerators_per_node, Location, framework, operating_system, ..., version, Units``);
- the Open MLPerf dataset (flexaihq/flexbench ``OpenMLPerf-dataset``) as JSON (a list of objects) or
  Parquet, with flattened keys such as ``system.accelerator.name`` and ``metrics.result_per_accelerator``.

Units are normalized into the same metric names our own runs use (docs/results.md):
``Tokens/s`` -> ``metrics.throughput.output_tokens_per_s``; ``Samples/s`` and ``Queries/s`` ->
``metrics.throughput.samples_per_s``; ``Latency (ms)`` -> ``metrics.latency_s.p90`` (SingleStream) or
``.p99`` (MultiStream) in seconds; ``Watts`` -> ``metrics.power_w``; ``millijoules`` ->
``metrics.energy_per_sample_j``. Memory capacities given in GB become bytes (GB = 10^9 bytes) and parameter
counts given in billions become counts. The original value and unit stay in ``metrics.result``.

Ids are derived from the source row (``mlperf-<hash>`` / ``openmlperf-<debug_uid>``), so importing the same
results twice stores them once.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from benchmint.core.errors import UserError
from benchmint.results.record import RunRecord

GB = 10**9

SUMMARY_REQUIRED = ("Organization", "Division", "SystemName", "Model", "Scenario", "Result", "Units")
OPEN_MLPERF_REQUIRED = ("model.name", "submission.scenario", "metrics.result", "metrics.units",
                        "system.accelerator.name")


# ------------------------------------------------------------------------------------------ units
def _norm_unit(unit: str) -> str:
    return re.sub(r"\s+", " ", str(unit or "")).strip().lower()


def normalize_result(value: float | None, unit: str, scenario: str | None,
                     accelerators: int | None = None) -> dict[str, Any]:
    """The metrics block for one official result: the raw value and unit plus normalized metrics."""
    metrics: dict[str, Any] = {"result": {"value": value, "unit": unit}}
    if value is None:
        return metrics
    u = _norm_unit(unit)
    per_acc = value / accelerators if accelerators else None
    if u in ("tokens/s", "tokens/sec", "tokens per second"):
        metrics["throughput"] = {"output_tokens_per_s": value}
        if per_acc is not None:
            metrics["throughput"]["output_tokens_per_s_per_accelerator"] = per_acc
    elif u in ("samples/s", "queries/s", "samples/sec", "queries/sec", "qps"):
        metrics["throughput"] = {"samples_per_s": value}
        if per_acc is not None:
            metrics["throughput"]["samples_per_s_per_accelerator"] = per_acc
    elif u in ("latency (ms)", "ms", "milliseconds"):
        key = "p99" if (scenario or "").lower() == "multistream" else "p90"
        metrics["latency_s"] = {key: value / 1000.0}
    elif u in ("latency (s)", "s", "seconds"):
        key = "p99" if (scenario or "").lower() == "multistream" else "p90"
        metrics["latency_s"] = {key: value}
    elif u in ("watts", "w"):
        metrics["power_w"] = value
    elif u in ("millijoules", "mj"):
        metrics["energy_per_sample_j"] = value / 1000.0
    elif u in ("joules", "j"):
        metrics["energy_per_sample_j"] = value
    return metrics


_BIGGEST = 1e18  # larger than any figure an MLPerf result holds; also what a store's int64 column can take
_NUMERIC = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?inf(?:inity)?$", re.IGNORECASE)


# the columns read as numbers (text elsewhere, such as a hex id "7e21", is never taken for one)
_CSV_NUMBERS = frozenset(("Result", "Accuracy", "number_of_nodes", "host_processors_per_node",
                          "host_processor_core_count", "accelerators_per_node", "errors", "inferred", "compliance"))
_OPEN_NUMBERS = frozenset(("metrics.result", "metrics.result_per_accelerator", "system.accelerator.total_count",
                           "system.number_of_nodes", "system.cpu.count_per_node", "system.cpu.core_count",
                           "system.cpu.vcpu_count", "system.memory.capacity", "system.accelerator.count_per_node",
                           "system.accelerator.memory_capacity", "model.number_of_parameters"))


def _bad_number(r: dict[str, Any], numeric: frozenset[str]) -> str | None:
    """The first column of a row holding a number no result can have (``inf``, ``1e999``, beyond 1e18): any
    number, or text in a ``numeric`` column; as "column 'X' is VALUE ...", None when every number is sane.
    NaN is a missing value (pandas writes it so)."""
    for k, v in r.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, int | float):
            f = float(v) if abs(v) < 1e300 or isinstance(v, float) else math.inf
        elif not isinstance(v, str) or k not in numeric:
            continue
        elif len(v) < 400 and _NUMERIC.match(v.strip().strip('"')):
            f = float(v.strip().strip('"'))
        elif isinstance(v, str) and len(v) >= 400 and v.strip().lstrip("+-").isdigit():
            f = math.inf
        else:
            continue
        # elsewhere only inf counts: an id or a timestamp may be big
        if math.isinf(f) or (k in numeric and abs(f) > _BIGGEST):
            return f"column {k!r} is {str(v)[:30]}{'...' if len(str(v)) > 30 else ''}, not a figure a result can have"
    return None


def _float(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, int | float):
        return None if v != v else float(v)  # NaN -> None
    s = str(v).strip().strip('"')
    if not s or s.lower() in ("nan", "none", "null", "n/a", "-"):
        return None
    try:
        return float(s)
    except ValueError:
        return None


def _int(v: Any) -> int | None:
    f = _float(v)
    return int(f) if f is not None else None


def _str(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and v != v:
        return None
    s = str(v).strip()
    return s or None


def _strs(r: dict, **columns: str) -> dict[str, str | None]:
    """``{key: _str(r[column])}`` for each ``key=column`` (a missing column: None)."""
    return {k: _str(r.get(c)) for k, c in columns.items()}


def _gb_to_bytes(v: Any) -> int | None:
    f = _float(v)
    return int(round(f * GB)) if f is not None else None


def _params(v: Any) -> int | None:
    """Parameter counts: Open MLPerf gives billions (70.0); a large number is taken as a count."""
    f = _float(v)
    if f is None:
        return None
    return int(round(f * 1e9)) if f < 1e5 else int(f)


def _stable_id(prefix: str, *parts: Any) -> str:
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:16]
    return f"{prefix}-{h}"


def _provenance(path: Path, fmt: str, row: int, **extra: Any) -> dict[str, Any]:
    import sys

    from benchmint import __version__

    out = {"source": str(path), "source_format": fmt, "source_row": row, "imported_s": time.time(),
           "command_line": list(sys.argv), "benchmint_version": __version__}
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


# ------------------------------------------------------------------------------------------ summary.csv
def _rows(path: Path, rows: list[tuple[int, dict[str, Any]]], convert: Callable[[Path, int, dict[str, Any]],
          RunRecord], problems: list[str] | None, where: str, result: str, numeric: frozenset[str]
          ) -> list[RunRecord]:
    """Convert the rows; a row with an impossible number, or no number in its ``result`` column (NaN, empty,
    text), is skipped with a warning naming it (in ``problems``), and a file whose every row is so is an
    error."""
    out: list[RunRecord] = []
    skipped: list[str] = []
    for i, r in rows:
        bad = _bad_number(r, numeric)
        if bad is None and _float(r.get(result)) is None:
            bad = f"column {result!r} holds no number ({str(r.get(result))[:30]!r})"
        if bad:
            skipped.append(f"{path}: {where} {i} skipped: {bad}")
            continue
        out.append(convert(path, i, r))
    if skipped and not out:
        raise UserError(skipped[0].replace(" skipped: ", ": ") + (f" (and {len(skipped) - 1} more row(s))"
                                                                  if len(skipped) > 1 else "") + "; fix the file")
    if problems is not None:
        problems.extend(skipped)
    return out


def read_summary_csv(path: str | os.PathLike, problems: list[str] | None = None) -> list[RunRecord]:
    """RunRecords from an MLPerf Inference ``summary.csv``; :class:`UserError` naming the file and the
    missing columns when the layout does not match, or the line when the CSV is malformed (an unterminated
    quote). A row with an impossible number (``inf``, ``1e999``) is skipped, named in ``problems``."""
    path = Path(path)
    reader = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, strict=True)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in SUMMARY_REQUIRED if c not in header]
            if missing:
                raise UserError(
                    f"{path}: not an MLPerf summary.csv: missing column(s) {', '.join(missing)} "
                    f"(found: {', '.join(header) if header else 'no header'})"
                )
            rows = [(reader.line_num, {(k or "").strip(): v for k, v in r.items()}) for r in reader]
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a text CSV file ({e})") from None
    except csv.Error as e:
        line = f" after line {reader.line_num}" if reader is not None else ""
        raise UserError(f"{path}: malformed CSV{line} ({e}; an unterminated quote?); fix the file") from None
    return _rows(path, rows, _summary_row, problems, "line", "Result", _CSV_NUMBERS)


def _summary_row(path: Path, line: int, r: dict[str, Any]) -> RunRecord:
    scenario = _str(r.get("Scenario"))
    unit = _str(r.get("Units")) or ""
    value = _float(r.get("Result"))
    nodes = _int(r.get("number_of_nodes")) or 1
    per_node = _int(r.get("accelerators_per_node"))
    accelerators = per_node * nodes if per_node else None
    metrics = normalize_result(value, unit, scenario, accelerators)
    acc = _float(r.get("Accuracy"))
    metrics["accuracy"] = acc if acc is not None else _str(r.get("Accuracy"))
    errors = _int(r.get("errors"))
    version = (_str(r.get("version")) or "").removeprefix("v") or None
    model = _str(r.get("Model"))
    system = {
        **_strs(r, name="SystemName", platform="Platform", organization="Organization", type="SystemType"),
        "number_of_nodes": nodes,
        "cpu_model": _str(r.get("host_processor_model_name")),
        "cpu_count_per_node": _int(r.get("host_processors_per_node")),
        "cpu_cores_physical": _int(r.get("host_processor_core_count")),
        "accelerator": {
            "name": _str(r.get("accelerator_model_name")),
            "count_per_node": per_node,
            "count": accelerators,
        },
        **_strs(r, os="operating_system", framework="framework", notes="notes"),
    }
    status = "ok"
    if errors:
        status = "invalid"
    return RunRecord(
        kind="imported",
        id=_stable_id("mlperf", version, r.get("Location"), r.get("Platform"), model, scenario, unit),
        created_s=time.time(),
        status=status,
        config={
            "source": "mlperf-inference-summary-csv",
            "benchmark": "mlperf-inference",
            "mlperf_version": version,
            **_strs(r, division="Division", availability="Availability"),
            "scenario": scenario,
            "has_power": _str(r.get("has_power")),
            "inferred": _int(r.get("inferred")),
            "compliance": _int(r.get("compliance")),
        },
        metrics=metrics | ({"errors": errors} if errors is not None else {}),
        workload={
            "model_name": model,
            "mlperf_model": _str(r.get("MlperfModel")),
            "architecture": None,
            "parameter_count": None,
            "dtype": _str(r.get("weight_data_types")),
            "dataset": None,
            "dataset_hash": None,
        },
        system=system,
        provenance=_provenance(path, "mlperf-summary-csv", line, location=_str(r.get("Location"))),
    )


# ------------------------------------------------------------------------------------------ Open MLPerf
def read_open_mlperf(path: str | os.PathLike, problems: list[str] | None = None) -> list[RunRecord]:
    """RunRecords from the Open MLPerf dataset (``data.json`` or ``data.parquet``); a row with an impossible
    number (``inf``, ``1e999``) is skipped, named in ``problems``."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except (OSError, pa.ArrowException) as e:
            raise UserError(f"{path}: unreadable Parquet file ({e})") from None
    else:
        try:
            data = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e})") from None
        if isinstance(data, dict):
            data = data.get("data") or data.get("results") or [data]
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            raise UserError(f"{path}: expected a JSON list of result objects (Open MLPerf layout)")
        rows = data
    if not rows:
        return []
    present = set().union(*(r.keys() for r in rows))
    missing = [c for c in OPEN_MLPERF_REQUIRED if c not in present]
    if missing:
        raise UserError(
            f"{path}: not in the Open MLPerf layout: missing column(s) {', '.join(missing)}"
        )
    return _rows(path, list(enumerate(rows)), _open_row, problems, "row", "metrics.result", _OPEN_NUMBERS)


def _created(dt: Any) -> float:
    s = _str(dt)
    if s:
        try:
            d = datetime.fromisoformat(s)
            if d.tzinfo is None:
                d = d.replace(tzinfo=UTC)
            return d.timestamp()
        except ValueError:
            pass
    return time.time()


def _open_row(path: Path, i: int, r: dict[str, Any]) -> RunRecord:
    g = r.get
    scenario = _str(g("submission.scenario"))
    unit = _str(g("metrics.units")) or ""
    value = _float(g("metrics.result"))
    total = _int(g("system.accelerator.total_count"))
    metrics = normalize_result(value, unit, scenario, total)
    per_acc = _float(g("metrics.result_per_accelerator"))
    metrics["result_per_accelerator"] = per_acc
    if per_acc is not None and "throughput" in metrics:
        key = next(iter(metrics["throughput"])) + "_per_accelerator"
        metrics["throughput"][key] = per_acc  # the dataset's own figure wins over our division
    acc_text = _str(g("metrics.accuracy"))
    metrics["accuracy"] = acc_text
    metrics["accuracy_scores"] = _parse_accuracy(acc_text)
    uid = _str(g("submission.debug_uid"))
    version = _str(g("benchmark.version"))
    framework = {k.removeprefix("software.framework."): _str(v) for k, v in r.items()
                 if k.startswith("software.framework.") and _str(v) is not None}
    return RunRecord(
        kind="imported",
        id=f"openmlperf-{uid}" if uid else _stable_id("openmlperf", path.name, i,
                                                       orjson.dumps(r, default=str).decode()),
        created_s=_created(g("datetime")),
        status="ok",
        config={
            "source": "open-mlperf-dataset",
            "benchmark": _str(g("benchmark.name")) or "mlperf-inference",
            "mlperf_version": version,
            **_strs(r, division="submission.division", availability="submission.availability"),
            "scenario": scenario,
        },
        metrics=metrics,
        workload={
            **_strs(r, model_name="model.name", mlperf_model="model.mlperf_name", architecture="model.architecture"),
            "parameter_count": _params(g("model.number_of_parameters")),
            "dtype": _str(g("model.weight_data_types")),
            "dataset": None,
            "dataset_hash": None,
        },
        system={
            **_strs(r, name="system.name", organization="submission.organization", type="system.type"),
            "number_of_nodes": _int(g("system.number_of_nodes")),
            "cpu_model": _str(g("system.cpu.model")),
            "cpu_vendor": _str(g("system.cpu.vendor")),
            "cpu_count_per_node": _int(g("system.cpu.count_per_node")),
            "cpu_cores_physical": _int(g("system.cpu.core_count")),
            "cpu_cores_logical": _int(g("system.cpu.vcpu_count")),
            "cpu_frequency": _str(g("system.cpu.frequency")),
            "memory_bytes": _gb_to_bytes(g("system.memory.capacity")),
            "memory_configuration": _str(g("system.memory.configuration")),
            "accelerator": {
                **_strs(r, name="system.accelerator.name", vendor="system.accelerator.vendor"),
                "count_per_node": _int(g("system.accelerator.count_per_node")),
                "count": total,
                "memory_bytes": _gb_to_bytes(g("system.accelerator.memory_capacity")),
                "memory_config": _str(g("system.accelerator.memory_config")),
            },
            "interconnect": {
                **_strs(r, accelerator="system.interconnect.accelerator",
                        accelerator_host="system.interconnect.accelerator_host"),
            },
            **_strs(r, os="software.operating_system", framework="software.framework"),
            "framework_versions": framework,
        },
        provenance=_provenance(path, "open-mlperf", i, debug_uid=uid),
    )


def _parse_accuracy(text: str | None) -> dict[str, float]:
    """``"ROUGE1: 44.5  ROUGE2: 22.1"`` -> ``{"rouge1": 44.5, "rouge2": 22.1}``."""
    if not text:
        return {}
    out = {}
    for k, v in _ACC_RE.findall(text):
        f = float(v)
        if math.isfinite(f):
            out[k.lower()] = f
    return out


# a name, ':' or '=', and a number ("ROUGE1: ." names no number)
_ACC_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*[:=]\s*(-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d{1,3})?)(?![\d.])")


# ------------------------------------------------------------------------------ benchmint's own export
RECORD_COLUMN = "record_json"  # the whole record, in table ``runs`` and so in `results export` CSV / Parquet


def read_exported_records(path: str | os.PathLike, problems: list[str] | None = None) -> list[RunRecord]:
    """The RunRecords of a file `benchmint results export` wrote: JSONL (one record per line), or CSV / Parquet
    of table ``runs`` (the records are in its ``record_json`` column). They keep their ids and kinds, so
    importing an export into a store that holds the runs stores nothing twice. A line or row that holds no
    valid record is skipped, named in ``problems``; when none is valid the import is an error."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    suffix = path.suffix.lower()
    where = "row"
    try:
        if suffix in (".parquet", ".csv"):
            texts = _record_column(path)
        else:
            where = "line"
            texts = path.read_bytes().splitlines()
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable export ({type(e).__name__}: {e})") from None
    from benchmint.results.store import record_from_dict

    by_id: dict[str, RunRecord] = {}
    bad = 0
    for i, text in enumerate(texts, start=1):
        if text is None or not text.strip():  # a blank line (or an empty cell)
            continue
        at = f"{path}: {where} {i}"
        try:
            rec = record_from_dict(orjson.loads(text), at)
        except orjson.JSONDecodeError as e:
            bad += 1
            _note(problems, f"{at}: not valid JSON ({e}); skipped")
            continue
        except UserError as e:
            bad += 1
            _note(problems, f"{e}; skipped")
            continue
        by_id[rec.id] = rec  # the same id twice: the later line wins, as in the store
    if not by_id and bad:
        raise UserError(f"{path}: no valid record in the file ({bad} {where}(s) skipped); nothing stored")
    return list(by_id.values())


def _note(problems: list[str] | None, message: str) -> None:
    if problems is not None:
        problems.append(message)


def _record_column(path: Path) -> list[str | None]:
    import pyarrow as pa

    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path, columns=[RECORD_COLUMN]).column(RECORD_COLUMN).to_pylist()
        import pyarrow.csv as pacsv

        opts = pacsv.ConvertOptions(include_columns=[RECORD_COLUMN], column_types={RECORD_COLUMN: pa.string()})
        return pacsv.read_csv(path, convert_options=opts).column(RECORD_COLUMN).to_pylist()
    except pa.ArrowException as e:
        raise ValueError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def _has_record_column(path: Path) -> bool:
    """Whether a CSV / Parquet file is a `results export` of table ``runs`` (it has a ``record_json`` column)."""
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return RECORD_COLUMN in pq.read_schema(path).names
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            header = next(csv.reader([f.readline()]), [])
        return RECORD_COLUMN in [h.strip() for h in header]
    except Exception:  # unreadable: leave it to the reader of the layout the name says, which names the problem
        return False


# ------------------------------------------------------------------------------------------ dispatch
def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "benchmint-export"
    if suffix in (".csv", ".parquet") and _has_record_column(path):
        return "benchmint-export"
    if suffix == ".csv":
        return "mlperf-summary-csv"
    if suffix in (".json", ".parquet"):
        return "open-mlperf"
    raise UserError(
        f"{path}: cannot tell the layout from the name; expected a summary.csv (MLPerf Inference results), "
        "an Open MLPerf data.json / data.parquet, or a `benchmint results export` file (.jsonl, .csv, .parquet); "
        "or name the layout with --format"
    )


READERS: dict[str, Callable[[Path, list[str] | None], list[RunRecord]]] = {
    "mlperf-summary-csv": read_summary_csv,
    "open-mlperf": read_open_mlperf,
    "benchmint-export": read_exported_records,
}


def iter_sources(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand folders: every ``summary.csv`` below, and ``data.json``/``data.parquet`` (Parquet preferred
    when both hold the same Open MLPerf rows)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("summary.csv"))
            for d in sorted({q.parent for q in p.rglob("data.parquet")} | {q.parent for q in p.rglob("data.json")}):
                out.append(d / "data.parquet" if (d / "data.parquet").exists() else d / "data.json")
            out.extend(found)
            if not found and not out:
                raise UserError(f"{p}: no summary.csv, data.json or data.parquet found in this folder")
        elif not p.exists():
            raise UserError(f"{p}: no such file or folder")
        else:
            out.append(p)
    return out


def import_results(paths: Iterable[str | os.PathLike], fmt: str | None = None,
                   problems: list[str] | None = None) -> list[RunRecord]:
    """RunRecords (kind ``imported``) from MLPerf summary.csv files and Open MLPerf JSON/Parquet files; rows
    skipped (an impossible number) are named in ``problems``."""
    records: list[RunRecord] = []
    for p in iter_sources(paths):
        f = fmt or detect_format(p)
        if f not in READERS:
            raise UserError(f"unknown import format {f!r}; expected one of {', '.join(READERS)}")
        records.extend(READERS[f](p, problems))
    return records

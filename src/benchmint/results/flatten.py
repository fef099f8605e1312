"""Flatten a RunRecord into the columns of table ``runs``.

Nested dict keys are joined with a double underscore: ``metrics["ttft_s"]["p99"]`` becomes the column
``metrics__ttft_s__p99`` (no quoting needed in SQL). Lists are kept whole as JSON text (for example
``metrics__per_op_type``); DuckDB's JSON functions read them. The full record is in column ``record_json``.
docs/results.md documents the columns.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
import pyarrow as pa

SEP = "__"
# top-level fields that are columns of their own, in this order, before the flattened ones
TOP_COLUMNS = ("id", "created_s", "kind", "status", "schema_version")
# the flattened blocks, in this order (columns sorted by name inside each block)
BLOCKS = ("config", "metrics", "workload", "system", "provenance", "artifacts")


def _default(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):  # small arrays
        return obj.tolist()
    return str(obj)


def json_ready(d: dict[str, Any]) -> dict[str, Any]:
    """A plain-JSON copy of a record dict (paths, sets, numpy values, non-string keys made JSON)."""
    return orjson.loads(orjson.dumps(d, default=_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))


def flatten_dict(d: dict[str, Any], prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a__b": 1, "c": "[1,2]"}`` (lists as JSON text)."""
    out = {} if out is None else out
    for key, value in d.items():
        name = f"{prefix}{SEP}{key}" if prefix else str(key)
        if isinstance(value, dict):
            flatten_dict(value, name, out)  # an empty mapping adds no column
        elif isinstance(value, list | tuple):
            out[name] = orjson.dumps(list(value), option=orjson.OPT_SERIALIZE_NUMPY).decode()
        else:
            out[name] = value
    return out


def flatten_record(rec: dict[str, Any]) -> dict[str, Any]:
    """One row of table ``runs`` from a record dict (``RunRecord.to_dict()``)."""
    row: dict[str, Any] = {k: rec.get(k) for k in TOP_COLUMNS}
    for block in BLOCKS:
        value = rec.get(block)
        if isinstance(value, dict):
            flatten_dict(value, block, row)
    row["record_json"] = orjson.dumps(rec, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return row


# columns of table `runs` that exist even when no stored run has the field (typed NULLs), so queries on
# the documented core fields never fail for lack of a column
CORE_COLUMNS: dict[str, pa.DataType] = {
    "config__scenario": pa.string(),
    "workload__model_name": pa.string(),
    "workload__architecture": pa.string(),
    "workload__parameter_count": pa.int64(),
    "workload__dtype": pa.string(),
    "workload__dataset": pa.string(),
    "workload__dataset_hash": pa.string(),
    "system__accelerator__name": pa.string(),
    "system__accelerator__count": pa.int64(),
    "system__cpu_model": pa.string(),
    "system__memory_bytes": pa.int64(),
    "provenance__git_revision": pa.string(),
    "provenance__command_line": pa.string(),
}


def _column_type(values: list[Any], default: pa.DataType | None = None) -> pa.DataType:
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return default or pa.string()
    if kinds == {bool}:
        return pa.bool_()
    if kinds == {int}:
        if all(-(2**63) <= v < 2**63 for v in values if v is not None):
            return pa.int64()
        return pa.float64()
    if kinds <= {int, float}:
        return pa.float64()
    return pa.string()


def _as_text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def rows_to_table(rows: list[dict[str, Any]], null_columns: bool = False) -> pa.Table:
    """Flattened rows -> Arrow table. A column whose values mix types becomes text (JSON for non-strings).
    ``null_columns``: a column with no value is of Arrow type null (a store part: the column's type is then
    decided by the parts that have values, :mod:`benchmint.results.query`), else of its core type or text."""
    seen: set[str] = set()
    for r in rows:
        seen.update(r)
    seen -= {*TOP_COLUMNS, "record_json"}
    seen |= set(CORE_COLUMNS)

    def order(name: str) -> tuple[int, str]:
        block = name.split("__", 1)[0]
        return (BLOCKS.index(block) if block in BLOCKS else len(BLOCKS), name)

    names = [*TOP_COLUMNS, *sorted(seen, key=order), "record_json"]
    arrays, fields = [], []
    for name in names:
        values = [r.get(name) for r in rows]
        if name == "created_s":
            typ: pa.DataType = pa.float64()
            values = [None if v is None else float(v) for v in values]
        elif null_columns and all(v is None for v in values):
            typ = pa.null()
        else:
            typ = _column_type(values, CORE_COLUMNS.get(name))
        if typ == pa.string():
            values = [_as_text(v) for v in values]
        elif typ == pa.float64():
            values = [None if v is None else float(v) for v in values]
        arrays.append(pa.array(values, type=typ))
        fields.append(pa.field(name, typ))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))

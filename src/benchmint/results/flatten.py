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

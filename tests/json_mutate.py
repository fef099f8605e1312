"""Mutations of a JSON document for the hostile-input tests and ``benchmarks/trace_fuzz.py``: every path into
the document, and one change at a path (drop, replace, duplicate a list item)."""

from __future__ import annotations

import copy


def json_paths(obj: object, prefix: tuple = ()) -> list[tuple]:
    """Every path into ``obj`` (keys and list indexes), the document itself (``()``) first."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(json_paths(v, prefix + (k,)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.extend(json_paths(v, prefix + (i,)))
    return out


def mutate(doc: object, path: tuple, value: object = None, op: str = "replace", in_place: bool = False) -> object:
    """``doc`` with the item at ``path`` dropped, replaced by ``value`` or (in a list) duplicated; a copy unless
    ``in_place``. The empty path replaces the whole document."""
    if not path:
        return value
    if not in_place:
        doc = copy.deepcopy(doc)
    parent: object = doc
    for k in path[:-1]:
        parent = parent[k]  # type: ignore[index]
    k = path[-1]
    if op == "drop":
        del parent[k]  # type: ignore[attr-defined]
    elif op == "replace":
        parent[k] = value  # type: ignore[index]
    elif op == "duplicate" and isinstance(parent, list):
        parent.insert(k, copy.deepcopy(parent[k]))
    return doc

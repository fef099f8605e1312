"""The lookup ops: which argument of each holds the indices, and how many rows those index into.

One table for the two places that need it: a capture's index sketch (:mod:`benchmint.trace.index_sketch`,
on the live arguments of a dispatched op) and the replay's made-up indices (:mod:`benchmint.replay.index_skew`,
on a recorded op's arguments; also the CLI's help, so no torch import here). Both name the arguments as the
op's schema does, so the same lookups are seen on both sides, whatever the call passed by position or by name.
"""

from __future__ import annotations

from typing import Any

# lookup op (base name, no "aten::") -> (its index argument, its table argument, how the rows are counted:
# "0" the table's first dimension, "dim" the dimension the op's ``dim`` argument names, "numel" the table's
# elements, "each" one dimension per entry of an index list, in order)
LOOKUPS: dict[str, tuple[str, str, str]] = {
    "embedding": ("indices", "weight", "0"),
    "embedding_bag": ("indices", "weight", "0"),
    "_embedding_bag": ("indices", "weight", "0"),
    "_embedding_bag_forward_only": ("indices", "weight", "0"),
    "index_select": ("index", "self", "dim"),
    "gather": ("index", "self", "dim"),
    "take": ("index", "self", "numel"),
    "index": ("indices", "self", "each"),
    "_unsafe_index": ("indices", "self", "each"),
}
NAMES = ", ".join(k for k in LOOKUPS if not k.startswith("_"))  # for help texts (the public ops)


def base_name(op_name: str) -> str:
    """``aten::embedding_bag`` -> ``embedding_bag``; an overload (``index.Tensor``) is dropped."""
    return op_name.split("::", 1)[-1].split(".", 1)[0]


def index_arg(op_name: str) -> str | None:
    """The name of the argument that holds the indices of lookup ``op_name``, or None for another op."""
    got = LOOKUPS.get(base_name(op_name))
    return got[0] if got else None


def index_tensors(op_name: str, named: dict[str, Any]) -> list[tuple[Any, int]]:
    """(index tensor, rows it indexes into) for each index a call of lookup ``op_name`` reads, its arguments by
    schema name; an empty list for another op or arguments that do not fit (an index list entry may be None:
    that dimension is taken whole; a list holding a mask gives none)."""
    got = LOOKUPS.get(base_name(op_name))
    if got is None:
        return []
    idx_name, table_name, rule = got
    idx, table = named.get(idx_name), named.get(table_name)
    shape = getattr(table, "shape", None)
    if idx is None or shape is None:
        return []
    try:
        if rule == "0":
            return [(idx, int(shape[0]))]
        if rule == "dim":
            return [(idx, int(shape[int(named.get("dim", 0))]))]
        if rule == "numel":
            return [(idx, int(table.numel()))]
        if any(t is not None and str(t.dtype) in ("torch.bool", "torch.uint8") for t in idx):
            return []  # a mask spans as many dimensions as it has: the rows of the entries after it are unclear
        return [(t, int(shape[k])) for k, t in enumerate(idx) if t is not None and k < len(shape)]
    except (IndexError, TypeError, ValueError):
        return []

"""Checks a trace must pass at load, before anything walks its tree: every node id once, and no parent cycle.

A tree walk (the top-level ops, the collectives nested in one, the scopes of a step) assumes that following
parents always ends at a root; a duplicate id or a parent cycle in a corrupt or hand-edited trace would send
such a walk round forever. Both are refused here with one line naming the node ids.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from benchmint.core.errors import TraceError

__all__ = ["check_tree", "field_error"]

_SHOW = 6  # ids named in a message


def _ids(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:_SHOW])
    return shown + (f" ... ({len(ids)} in all)" if len(ids) > _SHOW else "")


def check_tree(nodes: Sequence[Any], name: str) -> None:
    """Raise :class:`TraceError` when two nodes share an id or a node's parents lead back to it.

    ``nodes`` have ``id`` and ``parent``; a node whose parent is itself or is not among the nodes is a root
    (the process root names itself; a partial trace has dangling parents)."""
    parent = {n.id: n.parent for n in nodes}
    if len(parent) != len(nodes):
        seen: set[int] = set()
        uniq = sorted({n.id for n in nodes if n.id in seen or seen.add(n.id)})  # type: ignore[func-returns-value]
        raise TraceError(name, f"duplicate node id{'s' if len(uniq) > 1 else ''} {_ids(uniq)}: each node of an "
                               "execution trace has its own id (the file is corrupt or was edited); "
                               "re-record the trace")
    if all(p <= i for i, p in parent.items()):
        return  # every parent was entered before its child (how PyTorch numbers them): no cycle can close
    state: dict[int, int] = {}  # 1: on the current path, 2: leads to a root
    for start in parent:
        if start in state:
            continue
        path: list[int] = []
        cur = start
        while True:
            s = state.get(cur)
            if s == 2:
                break
            if s == 1:  # back on the current path: a cycle
                cycle = path[path.index(cur):]
                raise TraceError(name, f"parent cycle through node ids {_ids(cycle)} (each names the next as its "
                                       "parent, the last the first): the file is corrupt or was edited; "
                                       "re-record the trace")
            p = parent.get(cur)
            if p is None:  # not a node of the trace (a dangling parent): a root above
                break
            state[cur] = 1
            path.append(cur)
            if p == cur:  # a root that names itself
                break
            cur = p
        for i in path:
            state[i] = 2


_LOC = re.compile(r" - at `\$(.*)`$")


def field_error(msg: str) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.threads``` -> ``field threads: expected `int`, got `str```."""
    m = _LOC.search(msg)
    where = m[1].lstrip(".") if m else ""
    what = _LOC.sub("", msg)
    what = what[:1].lower() + what[1:]
    return f"field {where}: {what}" if where else what

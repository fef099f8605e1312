"""A summary of a trace as a plain dict: what ``benchmint inspect --json`` prints, and what the demo and the
replay layer use to describe a trace."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from benchmint.trace import damage
from benchmint.trace.kineto import KinetoJoin, KinetoTrace, join_kineto
from benchmint.trace.model import Node, Trace

__all__ = ["SUMMARY_SCHEMA_VERSION", "inspect_trace", "summarize"]

#: Version of the layout of the dict :func:`summarize` returns.
SUMMARY_SCHEMA_VERSION = 1

def _comm(trace: Trace) -> dict[str, Any]:
    nodes = trace.comm_ops()
    by_name = Counter(n.name for n in nodes)
    # one record per collective: the record_param_comms node (or a node with collective attributes)
    collectives = []
    for n in nodes:
        info = n.comm_info
        if info:
            collectives.append({"node_id": n.id, "name": n.name, **info})
    ops = [n for n in trace.top_level_ops() if n.is_comm]
    return {
        "nodes": len(nodes),
        "top_level_ops": len(ops),
        "by_name": dict(by_name.most_common()),
        "collectives": collectives,
    }


def _threads(trace: Trace, top: list[Node]) -> list[dict[str, Any]]:
    nodes_per = Counter(n.tid for n in trace.nodes if not (n.is_thread_root or n.is_process_root))
    top_per = Counter(n.tid for n in top)
    out = []
    for root in trace.threads:
        out.append({"tid": root.tid, "root_id": root.id, "nodes": nodes_per.get(root.tid, 0),
                    "top_level_ops": top_per.get(root.tid, 0)})
    known = {r.tid for r in trace.threads}
    for tid in sorted(t for t in nodes_per if t not in known and t is not None):
        out.append({"tid": tid, "root_id": None, "nodes": nodes_per[tid], "top_level_ops": top_per.get(tid, 0)})
    return out


def summarize(trace: Trace, join: KinetoJoin | None = None, *, top: int = 20) -> dict[str, Any]:
    """Everything ``benchmint inspect`` shows, as a JSON-ready dict (``schema_version`` is the layout's
    version; the ET's own schema is ``et_schema``). ``top`` limits the op histograms (0: all)."""
    top_ops = trace.top_level_ops()
    hist = Counter(n.name for n in top_ops)
    table = trace.tensor_table()
    iterations = []
    for it in trace.iterations:
        iterations.append({"number": it.number, "node_id": it.node.id,
                           "top_level_ops": len(trace.top_level_ops(within=it.node))})
    scopes = Counter(n.name for n in trace.scopes)
    out: dict[str, Any] = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "path": trace.path,
        "et_schema": trace.schema,
        "et_version": ".".join(map(str, trace.version)) if trace.version else None,
        "chakra_version": trace.chakra_version,
        "pid": trace.pid,
        "time": trace.time,
        "nodes": len(trace.nodes),
        "ops": sum(1 for n in trace.nodes if n.op_schema),
        "top_level_ops": len(top_ops),
        "distinct_top_level_ops": len(hist),
        "op_histogram": dict(hist.most_common(top or None)),
        "tensors": len(table.tensors),
        "external_tensors": len(table.external()),
        "storages": len(table.storages),
        "storage_bytes": table.storage_bytes,
        "storage_bytes_by_device": table.bytes_by_device(),
        "threads": _threads(trace, top_ops),
        "iterations": iterations,
        "scopes": {"count": sum(scopes.values()), "by_name": dict(scopes.most_common(top or None))},
        "devices": trace.devices,
        "communication": _comm(trace),
        # what the loader found, and what the recording lost of the step (nested tensors: trace/damage.py)
        "warnings": [*trace.warnings, *filter(None, [damage.find(trace)])],
    }
    if join is not None:
        out["kineto"] = join.to_dict(top=top)
    return out


def inspect_trace(path: str | os.PathLike, kineto: str | os.PathLike | KinetoTrace | None = None, *,
                  rank: int | None = None, top: int = 20) -> dict[str, Any]:
    """Load ``path`` (and join ``kineto`` when given) and return :func:`summarize` of it."""
    from benchmint.trace.load import load

    trace = load(path, rank=rank)
    join = join_kineto(trace, kineto, rank=rank) if kineto is not None else None
    return summarize(trace, join, top=top)

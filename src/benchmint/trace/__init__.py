"""The trace layer: load PyTorch execution traces (ET) of every schema version into one typed model, join
Kineto profiler traces to them, summarise them.

Public API::

    from benchmint.trace import load, join_kineto, summarize

    trace = load("step_et.json.gz")            # Trace (raises TraceError for a bad file)
    ops = trace.top_level_ops()                 # what a replay runs, in execution order
    for n in ops:
        n.name, n.op_schema, n.inputs, n.outputs  # typed values: TensorRef, int, float, list ...
    table = trace.tensor_table()                # distinct tensors and storages of the top-level ops

The model classes (:class:`Trace`, :class:`Node`, :class:`TensorRef`, ...) are documented in
:mod:`benchmint.trace.model`.
"""

from __future__ import annotations

from benchmint.trace.load import TraceWarning, is_execution_trace, load, load_bytes, read_bytes
from benchmint.trace.model import (
    KNOWN_SCHEMAS,
    Device,
    Generator,
    Iteration,
    Node,
    Opaque,
    StorageInfo,
    TensorInfo,
    TensorRef,
    TensorTable,
    Trace,
    Value,
    dtype_from_et,
    parse_schema_version,
)

__all__ = [
    "KNOWN_SCHEMAS",
    "Device",
    "Generator",
    "Iteration",
    "Node",
    "Opaque",
    "StorageInfo",
    "TensorInfo",
    "TensorRef",
    "TensorTable",
    "Trace",
    "TraceWarning",
    "Value",
    "dtype_from_et",
    "is_execution_trace",
    "load",
    "load_bytes",
    "parse_schema_version",
    "read_bytes",
]

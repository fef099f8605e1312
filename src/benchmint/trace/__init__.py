"""The trace layer: load PyTorch execution traces (ET) of every schema version into one typed model, join
Kineto profiler traces to them, summarise them.

Public API::

    from benchmint.trace import load, join_kineto, summarize

    trace = load("step_et.json.gz")            # Trace (raises TraceError for a bad file)
    ops = trace.top_level_ops()                 # what a replay runs, in execution order
    for n in ops:
        n.name, n.op_schema, n.inputs, n.outputs  # typed values: TensorRef, int, float, list ...
    table = trace.tensor_table()                # distinct tensors and storages of the top-level ops

    join = join_kineto(trace, "step_kineto.json")   # KinetoJoin: never fails on a partial match
    join.matched_fraction, join.time_of(ops[0]), join.gap_before_s(ops[1]), join.kernels_of(ops[0])

    summarize(trace, join)                      # the dict `benchmint inspect --json` prints
    inspect_trace("step_et.json.gz", kineto="step_kineto.json")   # load + join + summarize

The model classes (:class:`Trace`, :class:`Node`, :class:`TensorRef`, ...) are documented in
:mod:`benchmint.trace.model`.
"""

from __future__ import annotations

from benchmint.trace.kineto import (
    DeviceEvent,
    KinetoEvent,
    KinetoJoin,
    KinetoTrace,
    OpTime,
    join_kineto,
    load_kineto,
)
from benchmint.trace.load import TraceWarning, is_execution_trace, load, load_bytes, read_bytes
from benchmint.trace.model import (
    KNOWN_SCHEMAS,
    Iteration,
    Node,
    StorageInfo,
    TensorInfo,
    TensorTable,
    Trace,
    parse_schema_version,
)
from benchmint.trace.summary import SUMMARY_SCHEMA_VERSION, inspect_trace, summarize
from benchmint.trace.values import Device, Generator, Opaque, TensorRef, Value, dtype_from_et

__all__ = [
    "KNOWN_SCHEMAS",
    "SUMMARY_SCHEMA_VERSION",
    "Device",
    "DeviceEvent",
    "Generator",
    "Iteration",
    "KinetoEvent",
    "KinetoJoin",
    "KinetoTrace",
    "Node",
    "OpTime",
    "Opaque",
    "StorageInfo",
    "TensorInfo",
    "TensorRef",
    "TensorTable",
    "Trace",
    "TraceWarning",
    "Value",
    "dtype_from_et",
    "inspect_trace",
    "is_execution_trace",
    "join_kineto",
    "load",
    "load_bytes",
    "load_kineto",
    "parse_schema_version",
    "read_bytes",
    "summarize",
]

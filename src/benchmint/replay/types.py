"""The replayer's view of a trace: top-level ops in execution order with typed arguments and timings.

:mod:`benchmint.replay.source` builds these from the trace layer's model (and its Kineto join); the planner
never reads trace files itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

MIN_NODE_S = 1e-6  # the least an operator node takes un-observed, one dispatch on a CPU (a Python-level add_ on one
# element took 2.7-3.0 us on the development host, a node called from C++ less): taking the recorders' cost out of a
# recorded time never leaves less than this per node


@dataclass(frozen=True)
class TRef:
    """A recorded tensor: identity, storage placement, and metadata."""

    tensor_id: int
    storage_id: int
    offset: int  # in elements
    numel: int
    itemsize: int
    device: str
    shape: tuple[int, ...]
    strides: tuple[int, ...] | None
    dtype: torch.dtype | None  # None: uninitialized / unknown

    @property
    def key(self) -> tuple:
        # tensor ids can be reused once a tensor dies, so identity includes its placement and type too
        return (self.tensor_id, self.storage_id, self.offset, self.numel, self.dtype)

    def extent(self) -> int:
        """Elements of storage the tensor spans from its offset."""
        if any(s == 0 for s in self.shape):
            return 0
        strides = self.strides if self.strides is not None else _contiguous(self.shape)
        return 1 + sum((n - 1) * abs(st) for n, st in zip(self.shape, strides, strict=False))


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for n in reversed(shape):
        out.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(out))


# argument kinds
TENSOR = "tensor"
TENSOR_LIST = "tensor_list"  # list of TRef | None
VALUE = "value"  # plain Python value (int, float, bool, str, list of those, None)
DEVICE = "device"
UNSUPPORTED = "unsupported"  # e.g. a generator or an object we cannot rebuild


@dataclass(frozen=True)
class Arg:
    kind: str
    value: Any  # TRef, list[TRef | None], a Python value, or a description for UNSUPPORTED


COLLECTIVE_PREFIXES = ("c10d::", "c10d_functional::", "_c10d_functional::")


def is_collective(name: str) -> bool:
    return name.startswith(COLLECTIVE_PREFIXES)


# functional-collective ops that move no data (the wait, the autograd wrapper): replayed as the identity and
# left out of the ranks' sequence check (a rank records them or not, depending on when its result was used)
LOCAL_COLLECTIVES = {"wait_tensor", "_wrap_tensor_autograd"}


def local_collective(name: str) -> bool:
    """A collective op that moves no data (:data:`LOCAL_COLLECTIVES`)."""
    return is_collective(name) and name.partition("::")[2] in LOCAL_COLLECTIVES


@dataclass(frozen=True)
class StepGrad:
    """How a recorded step ran under autograd (:func:`benchmint.replay.phases.step_grad`): the grad mode its
    replay runs under, per op whether it recorded the forward's graph, the parameters (tensor id, storage
    id) and how they were found. A view cut from the step (``--select``, ``--what-if``) keeps its step's: the
    forward alone no longer shows that a backward followed."""

    mode: str
    ops: tuple[bool, ...]
    parameters: frozenset[tuple[int, int]] = frozenset()
    parameters_from: str = ""

    @property
    def builds_graph(self) -> bool:
        return any(self.ops) and bool(self.parameters)


class CommUnavailable(Exception):
    """A recorded collective that has no mapping to a torch.distributed call (the reason says why)."""


@dataclass
class OpRec:
    """One top-level op of the trace."""

    node_id: int
    name: str
    schema: str
    inputs: list[Arg]
    outputs: list[Arg]
    tid: int = 0
    rf_id: int | None = None
    dur_s: float | None = None  # recorded duration (Kineto), if joined
    start_s: float | None = None  # recorded start (Kineto, seconds from the trace's origin)
    tensor_range: str | None = None
    subtree_nodes: int = 1  # recorded nodes of this op and everything it called (observer cost model)
    # recorded composites replaced by the ops they called (source.expose_hidden_outputs) whose first callee
    # this op is: their own nodes' observer cost lands in the gap before it (observer cost model)
    parents_opened: int = 0
    # the recorded composite this op stands in, called by it (source.expose_hidden_outputs): the original
    # called the op from C++ inside it, the replay calls it from Python
    composite: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TraceView:
    """All the replayer needs from a trace."""

    path: str
    schema_version: str
    ops: list[OpRec]
    total_nodes: int
    # node counts used by the fidelity model: all recorded nodes, and those that carry no op schema
    non_op_nodes: int = 0
    step_span_s: float | None = None  # recorded span of the step (ProfilerStep or first-start to last-end)
    step_start_s: float | None = None
    kineto_matched: float | None = None  # fraction of ET ops matched in Kineto
    recorded_with: dict[str, Any] = field(default_factory=dict)  # record_shapes, with_stack, ...
    devices: list[str] = field(default_factory=list)
    # the recorded non-op scopes (record_function, autograd engine nodes) around and between the ops, as
    # (number of ops before it, "enter" | "exit", scope node id, name); used to record the replay with the
    # same structure as the original when measuring the observers' cost
    scopes: list[tuple[int, str, int, str]] = field(default_factory=list)
    grad: StepGrad | None = None  # the step's, where this view was cut from it (else read from the view itself)

    def same_ops(self, other: TraceView) -> bool:
        """Whether ``other`` (another recorded step) ran the same ops in the same order: not another path
        through the model, nor a partial step."""
        return [o.name for o in other.ops] == [o.name for o in self.ops]

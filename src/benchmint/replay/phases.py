"""Which part of a recorded training step each op belongs to, and what of the forward builds autograd's graph.

Phases (``--select phase:...`` and the replay of a training step's forward both read them): the optimizer's
ops run inside ``Optimizer.step#...`` / ``Optimizer.zero_grad#...`` scopes, the backward's inside the autograd
engine's ``autograd::engine::evaluate_function`` scopes or a backward function's node (``AddmmBackward0``),
or on another thread than the one that ran the step's first op (the autograd engine's own threads); the rest
is forward. The execution trace observer records these scopes with or without the profiler (a trace of the
observer alone has no ``ProfilerStep``: its scopes are taken over every recorded thread).

The forward of a training step ran with autograd recording: each op on a tensor that requires grad made a
graph node and saved its inputs, inside its recorded duration. The execution trace records neither the graph
nor which tensors required grad, so :func:`graph_plan` infers them: the ops that built the graph are the
forward's before the first backward op (:func:`graph_region`), and the tensors that required grad are the
parameters, the leaves the optimizer updates in place that the forward reads (:func:`parameters`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from benchmint.replay.ops import OpUnavailable, unresolved
from benchmint.replay.types import TENSOR, TENSOR_LIST, OpRec, TraceView, TRef

PHASES = ("forward", "backward", "optimizer")
BACKWARD_SCOPE = "autograd::engine::evaluate_function"
BACKWARD_NODE = re.compile(r"Backward\d*$")  # a backward function's node: AddmmBackward0, MyFunctionBackward
OPTIMIZER_SCOPES = ("Optimizer.step#", "Optimizer.zero_grad#")


def op_scopes(view: TraceView) -> list[list[str]]:
    """Per op of ``view``, the names of the recorded (non-op) scopes around it, outermost first."""
    open_: dict[int, str] = {}
    events = sorted(view.scopes, key=lambda e: e[0])  # stable: tree order within a position
    out: list[list[str]] = []
    k = 0
    for i in range(len(view.ops)):
        while k < len(events) and events[k][0] <= i:
            pos, kind, nid, name = events[k]
            if kind == "enter":
                open_[nid] = name
            else:
                open_.pop(nid, None)
            k += 1
        out.append(list(open_.values()))
    return out


def backward_scope(name: str) -> bool:
    """An autograd engine scope, or a backward function's node (``AddmmBackward0``, a custom Function's
    ``MyFnBackward``) as the execution trace records it inside one."""
    return name.startswith(BACKWARD_SCOPE) or bool(BACKWARD_NODE.search(name))


def phases(view: TraceView) -> list[str]:
    """Per op: forward, backward or optimizer (see the module docstring)."""
    scopes = op_scopes(view)
    main = view.ops[0].tid if view.ops else 0  # the step starts on the thread that runs it, before any backward
    out = []
    for op, names in zip(view.ops, scopes, strict=True):
        if any(n.startswith(OPTIMIZER_SCOPES) for n in names):
            out.append("optimizer")
        elif op.tid != main or any(backward_scope(n) for n in names):
            out.append("backward")
        else:
            out.append("forward")
    return out


def graph_region(phase: list[str]) -> list[bool]:
    """Per op: whether it ran while autograd recorded the forward's graph: a forward op before the step's
    first backward op (after the backward, the forward's ops are the program's bookkeeping on gradients and
    metrics, most often under no_grad). Nothing when the step has no backward."""
    if "backward" not in phase:
        return [False] * len(phase)
    first = phase.index("backward")
    return [p == "forward" and i < first for i, p in enumerate(phase)]


def _refs(args: list) -> list[TRef]:
    out: list[TRef] = []
    for a in args:
        if a.kind == TENSOR and isinstance(a.value, TRef):
            out.append(a.value)
        elif a.kind == TENSOR_LIST:
            out.extend(r for r in a.value if isinstance(r, TRef))
    return out


def written(op: OpRec) -> list[TRef]:
    """The recorded tensors ``op`` writes into (its schema's ``Tensor(a!)`` arguments: in place or out=)."""
    if not op.schema or "!" not in op.schema:
        return []
    try:
        spec = unresolved(op.schema)
    except OpUnavailable:
        return []
    return _refs([a for a, arg in zip(op.inputs, spec.args, strict=False) if arg.is_write])


@dataclass
class GraphPlan:
    """What of a training step's forward builds autograd's graph in its replay: ``ops[i]`` (the op ran while
    the graph was recorded) and the recorded tensors that require grad (``parameters``, by key), with how they
    were found (``parameters_from``)."""

    ops: list[bool]
    parameters: set[tuple] = field(default_factory=set)
    parameters_from: str = ""

    @property
    def any(self) -> bool:
        return any(self.ops) and bool(self.parameters)


def parameters(view: TraceView, region: list[bool], phase: list[str]) -> tuple[set[tuple], str]:
    """The recorded tensors that required grad in the forward: the ones the optimizer's ops write into (a
    parameter updated in place) that an op of ``region`` reads; when the step has no optimizer op, every
    floating-point tensor the region reads and nothing of the step writes (a buffer such as batch norm's
    running mean is written by its forward: it never requires grad)."""
    read: dict[tuple, TRef] = {}
    for op, on in zip(view.ops, region, strict=True):
        if on:
            for r in _refs(op.inputs):
                read.setdefault(r.key, r)
    if "optimizer" in phase:
        updated = {r.key for op, p in zip(view.ops, phase, strict=True) if p == "optimizer" for r in written(op)}
        return {k for k in read if k in updated}, "the tensors the optimizer updates in place"
    storages = {r.storage_id for op in view.ops for r in written(op)}
    keep = {k for k, r in read.items()
            if r.dtype is not None and r.dtype.is_floating_point and r.storage_id not in storages}
    return keep, "the floating-point tensors the forward reads and the step never writes (no optimizer recorded)"


def graph_plan(view: TraceView) -> GraphPlan:
    """:class:`GraphPlan` of a recorded step (nothing for a step without a backward)."""
    phase = phases(view)
    region = graph_region(phase)
    if not any(region):
        return GraphPlan(ops=region)
    params, how = parameters(view, region, phase)
    return GraphPlan(ops=region, parameters=params, parameters_from=how)

"""Which part of a recorded training step each op belongs to, and what of the forward builds autograd's graph.

Phases (``--select phase:...`` and the replay of a training step's forward both read them): the optimizer's
ops run inside ``Optimizer.step#...`` / ``Optimizer.zero_grad#...`` scopes, the backward's inside the autograd
engine's ``autograd::engine::evaluate_function`` scopes or a backward function's node (``AddmmBackward0``),
or on another thread than the one that ran the step's first op (the autograd engine's own threads); the rest
is forward. The execution trace observer records these scopes with or without the profiler (a trace of the
observer alone has no ``ProfilerStep``: its scopes are taken over every recorded thread).

The forward of a training step ran with autograd recording: each op on a tensor that requires grad made a
graph node and saved its inputs, inside its recorded duration. The execution trace records neither the graph
nor which tensors required grad, so :func:`step_grad` infers them: the ops that built the graph are the
forward's before the first backward op (:func:`graph_region`), and the tensors that required grad are the
parameters, the leaves the optimizer updates in place that the forward reads (:func:`parameters`).
"""

from __future__ import annotations

import re

from benchmint.replay.conditions import NO_GRAD, grad_mode_of
from benchmint.replay.ops import OpUnavailable, unresolved
from benchmint.replay.tensors import arg_refs
from benchmint.replay.types import OpRec, StepGrad, TraceView, TRef

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


def engine_scope(name: str) -> bool:
    """A scope the autograd engine opens (in C++): :func:`backward_scope`'s, and its own ``torch::autograd::``
    nodes (``AccumulateGrad``, ``CopySlices``)."""
    return backward_scope(name) or name.startswith("torch::autograd::")


def phases(view: TraceView, scopes: list[list[str]] | None = None) -> list[str]:
    """Per op: forward, backward or optimizer (see the module docstring); ``scopes``: :func:`op_scopes`'s, when
    the caller has them."""
    scopes = op_scopes(view) if scopes is None else scopes
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


def graph_region(view: TraceView, phase: list[str], scopes: list[list[str]] | None = None) -> list[bool]:
    """Per op: whether it ran while autograd recorded the forward's graph: a forward op before the step's
    first backward op, one inside the autograd engine's scopes or named ``*_backward`` (after the backward,
    the forward's ops are the program's bookkeeping on gradients and metrics, most often under no_grad; an op
    of another thread, which :func:`phases` counts as backward, a data loader's, does not end the forward).
    Nothing when the step has no backward."""
    scopes = op_scopes(view) if scopes is None else scopes
    first = next((i for i, (op, names) in enumerate(zip(view.ops, scopes, strict=True))
                  if op.name.endswith("_backward") or any(backward_scope(n) for n in names)), None)
    if first is None:
        return [False] * len(phase)
    return [p == "forward" and i < first for i, p in enumerate(phase)]


def _refs(args: list) -> list[TRef]:
    return [r for a in args for r in arg_refs(a)]


# arguments no gradient flows to (batch norm's running statistics, which its kernel updates; a loss's target):
# autograd refuses them when they require grad
_NOT_DIFFERENTIABLE = re.compile(r"^(running_\w+|target|indices|offsets|batch_sizes|lengths)$")


def _differentiable(op: OpRec) -> list[TRef]:
    """The recorded tensors ``op`` reads through arguments a gradient can flow to (all of them when its schema
    does not parse)."""
    try:
        names = [a.name for a in unresolved(op.schema).args] if op.schema else []
    except OpUnavailable:
        names = []
    return _refs([a for k, a in enumerate(op.inputs)
                  if k >= len(names) or not _NOT_DIFFERENTIABLE.match(names[k])])


def written(op: OpRec) -> list[TRef]:
    """The recorded tensors ``op`` writes into (its schema's ``Tensor(a!)`` arguments: in place or out=)."""
    if not op.schema or "!" not in op.schema:
        return []
    try:
        spec = unresolved(op.schema)
    except OpUnavailable:
        return []
    return _refs([a for a, arg in zip(op.inputs, spec.args, strict=False) if arg.is_write])


def param_id(ref: TRef) -> tuple[int, int]:
    """How :class:`~benchmint.replay.types.StepGrad` names a parameter: its tensor and storage ids (a scaled
    replay changes its sizes)."""
    return ref.tensor_id, ref.storage_id


def parameters(view: TraceView, region: list[bool], phase: list[str]) -> tuple[set[tuple[int, int]], str]:
    """The recorded tensors that required grad in the forward: the ones the optimizer's ops write into (a
    parameter updated in place) that an op of ``region`` reads; when the step has no optimizer op, every
    floating-point tensor the region reads and nothing of the step writes (a buffer such as batch norm's
    running mean is written by its forward: it never requires grad)."""
    read: dict[tuple[int, int], TRef] = {}  # by tensor and storage id: a scaled view's sizes differ
    for op, on in zip(view.ops, region, strict=True):
        if on:
            for r in _differentiable(op):
                read.setdefault(param_id(r), r)
    if "optimizer" in phase:
        updated = {param_id(r) for op, p in zip(view.ops, phase, strict=True) if p == "optimizer"
                   for r in written(op)}
        return {k for k in read if k in updated}, "the tensors the optimizer updates in place"
    storages = {r.storage_id for op in view.ops for r in written(op)}
    keep = {k for k, r in read.items()
            if r.dtype is not None and r.dtype.is_floating_point and r.storage_id not in storages}
    return keep, "the floating-point tensors the forward reads and the step never writes (no optimizer recorded)"


def step_grad(view: TraceView) -> StepGrad:
    """How the step ran under autograd: the view's own record when it was cut from a step (``view.grad``),
    else read from its ops and scopes (the mode: :func:`benchmint.replay.conditions.grad_mode_of`; the graph:
    a training step's forward before its first backward op, on the parameters)."""
    if view.grad is not None and len(view.grad.ops) == len(view.ops):
        return view.grad
    mode = grad_mode_of((e[3] for e in view.scopes), (o.name for o in view.ops))
    scopes = op_scopes(view)
    phase = phases(view, scopes)
    region = graph_region(view, phase, scopes) if mode == NO_GRAD else [False] * len(view.ops)
    if not any(region):
        return StepGrad(mode, tuple(region))
    params, how = parameters(view, region, phase)
    return StepGrad(mode, tuple(region), frozenset(params), how)

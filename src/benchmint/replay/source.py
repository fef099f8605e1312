"""Turn the trace layer's model (:mod:`benchmint.trace`) into the replayer's :class:`TraceView`.

The trace layer loads the ET and joins Kineto; this module only selects what a replay needs: the top-level ops
of one iteration in execution order, their arguments as replay kinds (tensor, tensor list, value, device), and,
when a Kineto trace is joined, each op's recorded start and duration and the span of the recorded step.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmint.replay.types import (
    DEVICE,
    TENSOR,
    TENSOR_LIST,
    UNSUPPORTED,
    VALUE,
    Arg,
    OpRec,
    TraceView,
    TRef,
    is_collective,
)


def _dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    t = getattr(torch, name, None)
    return t if isinstance(t, torch.dtype) else None


def _tref(r: Any) -> TRef:
    shape = tuple(int(x) for x in r.shape) if r.shape is not None else ()
    strides = tuple(int(x) for x in r.strides) if r.strides is not None else None
    if strides is not None and len(strides) != len(shape):
        strides = None  # not recorded (older schema, or an empty list): contiguous
    return TRef(tensor_id=int(r.tensor_id), storage_id=int(r.storage_id), offset=int(r.offset),
                numel=int(r.numel), itemsize=int(r.itemsize), device=str(r.device), shape=shape,
                strides=strides, dtype=_dtype(r.dtype))


def _arg(v: Any) -> Arg:
    from benchmint.trace.values import Device, Generator, Opaque, TensorRef

    if isinstance(v, TensorRef):
        return Arg(TENSOR, _tref(v))
    if isinstance(v, Device):
        return Arg(DEVICE, str(v))
    if isinstance(v, Generator):
        return Arg(UNSUPPORTED, "a random number generator")
    if isinstance(v, Opaque):
        return Arg(UNSUPPORTED, f"an opaque {v.type}")
    if isinstance(v, list | tuple):
        if v and any(isinstance(x, TensorRef) for x in v):
            return Arg(TENSOR_LIST, [_tref(x) if isinstance(x, TensorRef) else None for x in v])
        if any(isinstance(x, Device | Generator | Opaque | list | tuple) for x in v):
            return Arg(UNSUPPORTED, "a nested list")
        return Arg(VALUE, list(v))
    if isinstance(v, str) and v == "<None>":
        return Arg(VALUE, None)
    return Arg(VALUE, v)


def default_device(devices: Any) -> str:
    """Where a trace is replayed when no device is named: CUDA when it ran there and this machine has it."""
    if torch.cuda.is_available() and any(d.startswith("cuda") for d in devices):
        return "cuda"
    return "cpu"


def view_from_trace(trace: Any, kineto: Any = None, iteration: int | None = None,
                    device: str | None = None) -> TraceView:
    """The replayer's view of a loaded :class:`benchmint.trace.Trace`, optionally joined with Kineto.

    ``iteration``: replay the ops of ``ProfilerStep#N`` (default: the last recorded iteration when the trace
    has any, else all top-level ops). ``kineto``: the result of ``benchmint.trace.join_kineto`` (or None).
    ``device``: where the ops will be replayed (default: where the replay would run them, as ``replay_trace``
    picks it); it decides which composites can be replayed as their callees (``expose_hidden_outputs``).
    """
    within = None
    iters = trace.iterations
    if iters:
        if iteration is None:
            within = iters[-1].node
        else:
            match = [it for it in iters if it.number == iteration]
            if not match:
                from benchmint.core.errors import UserError

                raise UserError(f"{trace.path}: no ProfilerStep#{iteration}; the trace's steps are "
                                f"{', '.join(f'ProfilerStep#{it.number}' for it in iters)} (--iteration N names one)")
            within = match[0].node
    nodes = trace.top_level_ops(within) if within is not None else trace.top_level_ops()
    if within is not None and not nodes:
        nodes = trace.top_level_ops()
        within = None
    if within is not None:
        # ops that other threads (autograd workers) ran during the step sit under their own thread root;
        # node ids are handed out as ops start, so those ids fall inside the step's id range
        hi = max((n.id for n in trace.descendants(within)), default=within.id)
        mine = {n.id for n in nodes}
        extra = [n for n in trace.top_level_ops() if within.id < n.id <= hi and n.id not in mine]
        if extra:
            nodes = sorted([*nodes, *extra], key=lambda n: n.id)
    if device is None:
        device = default_device(trace.devices)
    nodes, opened, within_composite = expose_hidden_outputs(trace, nodes, device.split(":", 1)[0])
    ops = []
    for n in nodes:
        t = _time(kineto, n)
        ops.append(OpRec(
            node_id=n.id,
            name=n.name,
            schema=n.op_schema,
            inputs=[_arg(v) for v in n.inputs],
            outputs=[_arg(v) for v in n.outputs],
            tid=n.tid or 0,
            rf_id=n.rf_id,
            start_s=t[0] if t else None,
            dur_s=t[1] if t else None,
            tensor_range=n.tensor_range or None,
            subtree_nodes=1 + sum(1 for _ in trace.descendants(n)),
            parents_opened=opened.get(n.id, 0),
            composite=within_composite.get(n.id),
        ))
    # execution order: recorded start when Kineto gives it (ops of other threads interleave), else node id
    if ops and all(o.start_s is not None for o in ops):
        ops.sort(key=lambda o: (o.start_s, o.node_id))
    scope_nodes = list(trace.descendants(within)) if within is not None else list(trace.nodes)
    non_op = sum(1 for n in scope_nodes if not n.op_schema)
    step_start, step_span = _step_span(kineto, within, ops)
    scopes = _scopes(trace, within, {o.node_id: i for i, o in enumerate(ops)})
    return TraceView(
        path=str(trace.path),
        schema_version=str(trace.schema),
        ops=ops,
        total_nodes=len(scope_nodes),
        non_op_nodes=non_op,
        step_span_s=step_span,
        step_start_s=step_start,
        kineto_matched=_matched(kineto, ops),
        devices=list(trace.devices),
        scopes=scopes,
    )


MAX_EXPOSE_DEPTH = 6
# composites that pick their callee by whether an input requires grad, which a replay's made-up tensors never
# do: where the original ran this callee (an inference step under inference_mode or no_grad whose weights still
# require grad: embedding_bag runs _embedding_bag, which fills offset2bag and bag_size; the replay's would run
# _embedding_bag_forward_only, another kernel), the callee is replayed in its place
CALLEE_BY_GRAD = {"aten::embedding_bag": "aten::_embedding_bag"}


def expose_hidden_outputs(trace: Any, nodes: list[Any], device: str = "cpu"
                          ) -> tuple[list[Any], dict[int, int], dict[int, str]]:
    """Replace a composite op by the ops it called when a later op reads a tensor one of them made that the
    composite does not return: a layer norm's saved mean and rstd, attention's logsumexp, a max pool's
    indices, a loss's total weight, all read by their backward ops. Replaying the composite would hand those
    readers synthetic values (logsumexp drawn from [0.05, 0.95] overflows the attention backward, and the
    step's state drifts to NaN within a few iterations); its callees return them. A tensor on a storage the
    composite takes or returns is a view the replay re-makes from that storage, so it does not count. Recorded
    tensor ids are addresses the allocator reuses: what a read refers to is the last op that wrote that id.
    A composite is kept when one of its callees cannot run on ``device`` (a CUDA trace's flash attention or
    cuDNN RNN on the CPU: the composite picks a kernel that can) or when it issues a collective. A composite
    whose choice of callee hangs on ``requires_grad`` is replaced by the callee the original ran
    (:data:`CALLEE_BY_GRAD`). An op that calls itself again is replaced by its callees too: autocast records the
    op as called (float32 inputs, a bfloat16 or float16 output), then the casts of its inputs and the op on the
    cast tensors; replayed whole, outside autocast, it would run in float32 and hand float32 to every later op.

    Returns the ops, by node id how many replaced composites each op is the first callee of, and by node id the
    outermost replaced composite's name each callee stands in (the original called it from C++ inside that
    composite; the replay calls it from Python)."""
    opened: dict[int, int] = {}
    within: dict[int, str] = {}
    for _ in range(MAX_EXPOSE_DEPTH):  # a callee may hide it again one level down (cross entropy -> nll_loss)
        owner: dict[tuple[int, int], int | None] = {}  # tensor -> the op index that hides it; None: top level
        expand: set[int] = set()
        for i, n in enumerate(nodes):
            ins = n.input_tensors()
            for r in ins:
                j = owner.get((r.tensor_id, r.storage_id))
                if j is not None:
                    expand.add(j)
            own = [(r.tensor_id, r.storage_id) for r in ins + n.output_tensors()]
            storages = {k[1] for k in own}
            for c in trace.descendants(n):
                for r in c.output_tensors():
                    if r.storage_id not in storages:
                        owner[(r.tensor_id, r.storage_id)] = i
            for k in own:
                owner[k] = None
            callees = trace.top_level_ops(n)
            if n.name in CALLEE_BY_GRAD and any(c.name == CALLEE_BY_GRAD[n.name] for c in callees):
                expand.add(i)
            if calls_itself(n, callees):
                expand.add(i)
        out: list[Any] = []
        changed = False
        for i, n in enumerate(nodes):
            callees = trace.top_level_ops(n) if i in expand else []
            if callees and (_holds_collective(trace, n) or not all(_runs_on(c, device) for c in callees)):
                callees = []
            if callees:
                opened[callees[0].id] = opened.get(callees[0].id, 0) + 1 + opened.pop(n.id, 0)
                outer = within.pop(n.id, n.name)
                within.update((c.id, outer) for c in callees)
            out.extend(callees or [n])
            changed = changed or bool(callees)
        if not changed:
            break
        nodes = out
    return nodes, opened, within


def calls_itself(node: Any, callees: list[Any]) -> bool:
    """Whether an op called itself again the way autocast re-dispatches it: on tensors of other dtypes (the
    casts of its inputs, or a cast it cached earlier in the step), or with an argument it was called without
    (CUDA's softmax, sum, norms: ``dtype=float32``); not an overload calling another (arange)."""
    dtypes = [r.dtype for r in node.input_tensors()]
    for c in callees:
        if c.name != node.name or len(c.input_tensors()) != len(dtypes):
            continue
        if [r.dtype for r in c.input_tensors()] != dtypes:
            return True
        if len(c.inputs) == len(node.inputs) and any(a is None and b is not None
                                                     for a, b in zip(node.inputs, c.inputs, strict=True)):
            return True
    return False


_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


def _runs_on(node: Any, device: str) -> bool:
    """Whether the op has a kernel for ``device`` in this torch build (or a portable one, or a substitute)."""
    from benchmint.replay.substitutes import SUBSTITUTES

    if node.name in SUBSTITUTES:
        return True
    name = (node.op_schema or "").split("(", 1)[0] or node.name  # with its overload: aten::log_softmax.int
    keys = (_DISPATCH_KEYS.get(device, device.upper()), "CompositeImplicitAutograd", "CompositeExplicitAutograd",
            "CompositeExplicitAutogradNonFunctional")
    try:
        return any(torch._C._dispatch_has_kernel_for_dispatch_key(name, k) for k in keys)
    except RuntimeError:  # not an operator of this build
        return False


def _holds_collective(trace: Any, node: Any) -> bool:
    """A collective, or an op that issues one: the ranks must replay the same sequence of collectives, and
    which of its tensors a rank reads later varies with the rank."""
    return is_collective(node.name) or any(is_collective(c.name) for c in trace.descendants(node))


def _scopes(trace: Any, within: Any, op_index: dict[int, int]) -> list[tuple[int, str, int, str]]:
    """The non-op nodes of the step in tree order, as enter/exit events placed between the ops. Without a
    recorded step (``within`` None: an ET recorded without the profiler's steps, e.g. the observer alone) the
    scopes of every recorded thread. A scope opens just before the first op it holds (the ops of other threads
    may run between it and the previous op of its own) and closes after its last."""
    out: list[tuple[int, str, int, str]] = []
    starts = trace.roots() if within is None else trace.children(within)
    pos = 0
    pending: dict[int, int] = {}  # scope node id -> its enter event in out, placed at the next op it holds
    stack: list[tuple[Any, bool]] = [(c, False) for c in reversed(starts)]
    while stack:
        n, leaving = stack.pop()
        if leaving:
            k = pending.pop(n.id, None)
            if k is not None:  # it held no op: it opens where it closes
                out[k] = (pos, *out[k][1:])
            out.append((pos, "exit", n.id, n.name))
            continue
        if n.op_schema:
            i = op_index.get(n.id)
            if i is not None:
                for k in pending.values():
                    out[k] = (i, *out[k][1:])
                pending.clear()
                pos = max(pos, i + 1)
            else:  # a composite replaced by its callees (expose_hidden_outputs): they are in op_index
                stack.extend((c, False) for c in reversed(trace.children(n)))
            continue
        if n.is_thread_root or n.is_process_root or n.iteration is not None:
            if within is None:  # the whole trace: the roots hold each thread's ops, placed among its own
                if n.is_thread_root:
                    pos = 0
                stack.extend((c, False) for c in reversed(trace.children(n)))
            continue
        pending[n.id] = len(out)
        out.append((pos, "enter", n.id, n.name))
        stack.append((n, True))
        stack.extend((c, False) for c in reversed(trace.children(n)))
    return out


# -- Kineto join (benchmint.trace.join_kineto) -------------------------------------------------------------
def _time(kineto: Any, node: Any) -> tuple[float, float] | None:
    if kineto is None:
        return None
    t = kineto.time_of(node)
    if t is None:
        return None
    return t.ts_us * 1e-6, t.dur_us * 1e-6


def _step_span(kineto: Any, within: Any, ops: list[OpRec]) -> tuple[float | None, float | None]:
    if kineto is None:
        return None, None
    if within is not None:
        t = _time(kineto, within)
        if t is not None:
            return t
    timed = [o for o in ops if o.start_s is not None and o.dur_s is not None]
    if not timed:
        return None, None
    start = min(o.start_s for o in timed)  # type: ignore[type-var]
    end = max(o.start_s + o.dur_s for o in timed)  # type: ignore[operator]
    return start, end - start


def _matched(kineto: Any, ops: list[OpRec]) -> float | None:
    if kineto is None:
        return None
    return sum(1 for o in ops if o.dur_s is not None) / len(ops) if ops else 0.0


# -- torch.compile'd regions ----------------------------------------------------------------------------------
#: The scopes torch.compile records around what it runs (Dynamo's frame, AOTAutograd's forward and backward
#: functions, Inductor's call of its generated graph). The ops a compiled graph calls out to (``extern_kernels``:
#: mm, addmm, convolution) are recorded as ops under them; its generated (fused) kernels are not ops at all.
COMPILED_SCOPES = ("Torch-Compiled Region", "CompiledFunction", "## Call CompiledFxGraph")


def is_compiled_scope(name: str) -> bool:
    """Whether a recorded scope is one torch.compile opened (:data:`COMPILED_SCOPES`)."""
    return name.startswith(COMPILED_SCOPES)


def compiled_regions(kineto: Any, view: TraceView) -> dict[str, Any] | None:
    """The step's torch.compile'd regions (None: it has none), from the scopes the ET recorded in the step
    (``view.scopes``) and, with Kineto, their recorded spans: ``calls`` (outermost regions), ``graphs`` (distinct
    compiled graphs called), ``recorded_s`` (their recorded time), ``share_of_step`` (of the recorded step
    span), ``ops_inside`` (the replayed step's ops recorded inside them: the graphs' calls out to ATen),
    ``not_in_ops_s`` / ``not_in_ops_share_of_step``: their recorded time outside any op (the generated kernels,
    and the compiled code's own CPU work), which no op of the replay runs. Times are None without Kineto."""
    ids = [(nid, name) for _pos, kind, nid, name in view.scopes if kind == "enter" and is_compiled_scope(name)]
    if not ids:
        return None
    graphs = {name for _nid, name in ids if name.startswith("## Call CompiledFxGraph")}
    spans = sorted(t for t in (_time(kineto, nid) for nid, _name in ids) if t is not None)
    merged: list[list[float]] = []  # outermost regions: the scopes nest
    for start, dur in spans:
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], start + dur)
        else:
            merged.append([start, start + dur])
    depth = outer = 0  # without spans: the outermost compiled scopes, by the order the ET entered and left them
    for _pos, kind, _nid, name in view.scopes:
        if is_compiled_scope(name):
            if kind == "enter":
                outer += depth == 0
                depth += 1
            else:
                depth = max(0, depth - 1)
    out: dict[str, Any] = {
        "calls": len(merged) if merged else outer or len(ids),
        "graphs": len(graphs), "recorded_s": None, "share_of_step": None, "ops_inside": None,
        "not_in_ops_s": None, "not_in_ops_share_of_step": None,
        "how": "scopes torch.compile recorded (Torch-Compiled Region, CompiledFunction[Backward], ## Call "
               "CompiledFxGraph ##), their Kineto spans merged where they nest; not_in_ops_s: that time less the "
               "recorded time of the ops inside them (the generated kernels and the compiled code's CPU work)"}
    if not merged:
        return out
    region_s = sum(b - a for a, b in merged)
    inside = 0.0
    n_inside = 0
    for o in view.ops:
        if o.start_s is None or o.dur_s is None:
            continue
        for a, b in merged:
            if a <= o.start_s < b:
                inside += min(o.start_s + o.dur_s, b) - o.start_s
                n_inside += 1
                break
    step = view.step_span_s
    free = max(0.0, region_s - inside)
    out.update(recorded_s=region_s, ops_inside=n_inside, not_in_ops_s=free,
               share_of_step=region_s / step if step else None,
               not_in_ops_share_of_step=free / step if step else None)
    return out

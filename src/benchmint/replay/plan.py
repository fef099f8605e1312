"""Plan a replay once: resolve each top-level op, build its tensors, try it, and compile a tight loop.

Planning walks the top-level ops in order and tries each once (the dry run, :mod:`benchmint.replay.dryrun`: on
the meta device, which checks bindings and shapes without computing, and for real only where that cannot
answer);
the compiled iteration then runs once for real, and an op that fails there is planned again. Tensors produced
by a replayed op are used as produced; a tensor that no earlier op produced is a true input of the step and is made once, in a
storage sized from every recorded view of it (views share it at their recorded offsets); a tensor that is a
view of a produced tensor's storage is re-made from it in the loop. An op that cannot run (unknown to this
torch build, arguments that do not bind, shapes that do not fit, a device it does not support) is skipped with
the reason; its outputs become synthetic tensors of the recorded shapes, so that its consumers still run.
Outputs of data-dependent ops (nonzero, unique, masked_select, ...), and any output whose shape differs from
the recorded one, are replaced by synthetic tensors of the recorded shape after the op has run.

The replayed iteration is compiled into ONE generated Python function (``R[7] = f12(R[3], R[5], 1)`` per op,
``R[3] = None`` after a tensor's last use, optional ``_spin(n)`` CPU work for the gaps between ops and stand-ins), so the
replayer adds almost nothing to each op call.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmint.core import clock
from benchmint.replay.conditions import INFERENCE_MODE, grad_context
from benchmint.replay.dryrun import DryRun, first_line, meta_failure, real_like
from benchmint.replay.ops import OpSpec, OpUnavailable, defaulted, resolve, split_args, unresolved
from benchmint.replay.phases import param_id, step_grad
from benchmint.replay.spin import iters_for, spin
from benchmint.replay.substitutes import NO_OPS, SUBSTITUTES, UNREAD
from benchmint.replay.tensors import (
    Constraints,
    StoragePool,
    all_refs,
    arg_refs,
    collect_constraints,
    has_storage,
    last_reads,
    make_tensor,
)
from benchmint.replay.types import (
    DEVICE,
    MIN_NODE_S,
    TENSOR,
    TENSOR_LIST,
    UNSUPPORTED,
    VALUE,
    CommUnavailable,
    OpRec,
    StepGrad,
    TraceView,
    TRef,
)
from benchmint.trace.damage import sparse_tensors, storage_less

#: Why an op that reads or makes a sparse tensor is not run (trace/damage.py).
SPARSE_REASON = ("reads or makes a sparse tensor, which the trace records without layout, nonzeros or values: "
                 "a dense stand-in would time another computation")
#: What a tensor input that torch may have wrapped from a Python number is passed as (:meth:`_Builder._wrapped_numbers`).
_NUMBER: dict[torch.dtype, Any] = {torch.float64: 1.0, torch.int64: 1, torch.complex128: 1 + 0j, torch.bool: True}

DATA_DEPENDENT = {
    "aten::nonzero",
    "aten::nonzero_numpy",
    "aten::argwhere",
    "aten::masked_select",
    "aten::unique",
    "aten::_unique",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::unique_dim_consecutive",
    "aten::repeat_interleave",
    "aten::_local_scalar_dense",
}
# ops that hand the program a tensor whose values were copied in from Python data (``torch.tensor(1.0)``,
# ``as_tensor([...])``: an ``empty``, the copy that no op records, then ``lift_fresh``): replayed as recorded,
# the tensor holds whatever the allocator's memory held (an optimizer's step increment read from it was at
# times 1e14 or NaN, and the step counters were not finite after a few iterations), so the replay writes
# made-up values into it after the op, as the program's copy did
FRESH_FROM_DATA = {"aten::lift_fresh", "aten::lift_fresh_copy"}
# ops whose only effect is on the host's view of the device or on profiling; replaying them has no meaning
NOT_REPLAYED = {
    "profiler::_record_function_enter": "profiler bookkeeping",
    "profiler::_record_function_enter_new": "profiler bookkeeping",
    "profiler::_record_function_exit": "profiler bookkeeping",
}


@dataclass
class StepInfo:
    """What became of one top-level op."""

    index: int
    op: OpRec
    replayed: bool
    reason: str | None = None
    standin_s: float | None = None
    substitute: str | None = None  # what ran instead (device-specific op on another device), if anything
    retyped: tuple[str, str] | None = None  # (replayed, recorded) output dtype, where they differ


@dataclass
class Plan:
    view: TraceView
    device: torch.device
    steps: list[StepInfo]
    init: list[Any]  # initial register file: persistent tensors in their slots, None elsewhere
    lines: list[tuple[int, str]]  # (step index or -1, generated source line)
    namespace: dict[str, Any]
    persistent_bytes: int
    plan_time_s: float
    n_slots: int
    reads: list[list[int]] = field(default_factory=list)
    comm: Any = None  # the rank's collectives (benchmint.replay.collectives.Collectives), multi-rank replay only
    dry_run: dict[str, Any] = field(default_factory=dict)  # how the ops were tried (DryRun.summary)
    check_time_s: float = 0.0  # the real passes over the compiled iteration that checked the plan
    slots: dict[tuple, int] = field(default_factory=dict)  # recorded tensor key -> its register
    cons: Constraints | None = None  # what the consumers of made-up integer tensors need of them
    grad_mode: str = INFERENCE_MODE  # what its iterations run under (phases.step_grad): grad_context()
    graph: dict[str, Any] = field(default_factory=dict)  # the forward's autograd graph, as built (_Builder.graph_info)
    graph_steps: frozenset[int] = frozenset()  # the steps that run with it

    def grad_context(self) -> Any:
        """The grad mode the plan's iterations (and every call on its tensors) run under."""
        return grad_context(self.grad_mode)

    @property
    def replayed(self) -> list[StepInfo]:
        return [s for s in self.steps if s.replayed]

    def skipped(self) -> list[dict]:
        c: Counter = Counter()
        for s in self.steps:
            if not s.replayed:
                c[(s.op.name, s.reason or "")] += 1
        return [{"op": op, "count": n, "reason": r} for (op, r), n in sorted(c.items(), key=lambda x: -x[1])]

    def substituted(self) -> list[dict]:
        c: Counter = Counter()
        for s in self.steps:
            if s.replayed and s.substitute:
                c[(s.op.name, s.substitute)] += 1
        return [{"op": op, "count": n, "replacement": r} for (op, r), n in sorted(c.items(), key=lambda x: -x[1])]

    def retyped(self) -> list[dict]:
        """The ops whose replayed output came out in another dtype than the recorded one (an op the original ran
        under autocast, or in a dtype this device's kernel does not keep): later ops read a made-up tensor of the
        recorded dtype in its place, and the op's own time is that of the other dtype."""
        c: Counter = Counter()
        for s in self.steps:
            if s.replayed and s.retyped:
                c[(s.op.name, *s.retyped)] += 1
        return [{"op": op, "count": n, "replayed_dtype": a, "recorded_dtype": b}
                for (op, a, b), n in sorted(c.items(), key=lambda x: -x[1])]

    def registers(self) -> list[Any]:
        return list(self.init)

    def correct_standins(self, cost_per_node_s: float) -> int:
        """Take the recorders' cost out of the time the skipped ops' stand-ins spend (their recorded durations,
        which hold the observers' cost of every node under them: a skipped quantized linear recorded at 3.7x its
        un-observed time); ``cost_per_node_s``: the observers' cost of one recorded node, measured on this replay
        (:class:`benchmint.replay.fidelity.Calibration`). Returns how many stand-ins changed."""
        n = 0
        for st in self.steps:
            if st.standin_s and st.op.dur_s is not None:
                k = st.op.subtree_nodes
                new = max(st.op.dur_s - cost_per_node_s * k, min(st.op.dur_s, MIN_NODE_S * k))
                n += new != st.standin_s
                st.standin_s = new
        return n

    def compile(self, gaps_ns: list[int] | None = None, standins: bool = True, marks: bool = False,
                stamps: bool = False, inserts: dict[int, list[str]] | None = None) -> Callable:
        """The replayed iteration as one function of the register file.

        ``gaps_ns[i]``: CPU time to spend before step ``i`` (all steps, replayed or not), ``gaps_ns[-1]`` (when
        it has one more entry than there are steps) after the last; ``standins``: spend a skipped op's
        stand-in duration in its place; ``marks``: call ``_mark(i)`` after each replayed op (memory, never in
        timed runs); ``stamps``: append ``(i, now_ns)`` to the list ``_S`` after each op (per-op times);
        ``inserts[i]``: source lines placed before step ``i`` (``inserts[len(steps)]``: at the end).
        """
        ins = inserts or {}
        body = ["def _iter(R):"]
        owner: list[int] = [-1]  # step index of each body line (for errors raised in the loop)
        if stamps:
            body.append("    _S.append((-1, _now()))")
        # lines come in step order; skipped steps have no line, so place their stand-ins by index
        emitted = 0

        def emit_until(idx: int) -> None:
            nonlocal emitted
            while emitted < idx:
                for x in ins.get(emitted, ()):
                    body.append("    " + x)
                st = self.steps[emitted]
                if not st.replayed:
                    g = gaps_ns[emitted] if gaps_ns is not None else 0
                    if g > 0:
                        body.append(f"    _spin({iters_for(g)})")
                    if standins and st.standin_s:
                        body.append(f"    _spin({iters_for(int(st.standin_s * 1e9))})")
                        if stamps:
                            body.append(f"    _S.append(({emitted}, _now()))")
                emitted += 1

        for idx, line in self.lines:
            if idx >= 0:
                emit_until(idx)
                for x in ins.get(idx, ()):
                    body.append("    " + x)
                g = gaps_ns[idx] if gaps_ns is not None else 0
                if g > 0:
                    body.append(f"    _spin({iters_for(g)})")
                    if stamps:
                        body.append("    _S.append((-2, _now()))")
                emitted = idx + 1
            body.append("    " + line)
            while len(owner) < len(body):
                owner.append(idx)
            if marks and idx >= 0:
                body.append(f"    _mark({idx})")
            if stamps and idx >= 0:
                body.append(f"    _S.append(({idx}, _now()))")
        emit_until(len(self.steps))
        for x in ins.get(len(self.steps), ()):
            body.append("    " + x)
        if gaps_ns is not None and len(gaps_ns) > len(self.steps) and gaps_ns[-1] > 0:
            body.append(f"    _spin({iters_for(gaps_ns[-1])})")
        if len(body) == 1:
            body.append("    pass")
        ns = dict(self.namespace)
        ns["_spin"] = spin
        ns["_now"] = clock.now_ns
        ns["_grad"] = torch._C._set_grad_enabled  # the forward of a training step records autograd's graph
        ns["_S"] = []
        ns["_OWNER"] = owner
        ns["_rfe"] = torch.ops.profiler._record_function_enter_new
        ns["_rfx"] = torch.ops.profiler._record_function_exit._RecordFunction
        src = "\n".join(body)
        code = compile(src, f"<benchmint replay of {self.view.path}>", "exec")
        exec(code, ns)
        fn = ns["_iter"]
        fn.source = src  # what conditions.iteration_code fingerprints: both sides of a comparison run this text
        return fn


def _nbytes(op: OpRec) -> int:
    return sum(r.numel * r.itemsize for r in all_refs(op) if r.dtype is not None)


def _pairs(op: OpRec, result: Any) -> list[tuple[TRef, Any, str]] | None:
    """(recorded output, result tensor, its access in the loop) per output; None when the results do not match
    the recorded outputs (count, kinds or shapes)."""
    recorded = op.outputs
    if isinstance(result, tuple):
        rets = list(result)
    else:
        rets = [result]
    pairs: list[tuple[TRef, Any, str]] = []
    for j, a in enumerate(recorded):
        if j >= len(rets):
            return None
        r = rets[j]
        acc = "_r" if len(rets) == 1 and not isinstance(result, tuple) else f"_r[{j}]"
        if a.kind == TENSOR:
            if r is None and a.value.dtype is None:
                continue  # an optional output that was undefined in the original too
            if not isinstance(r, torch.Tensor):
                return None
            pairs.append((a.value, r, acc))
        elif a.kind == TENSOR_LIST:
            if not isinstance(r, list | tuple) or len(r) != len(a.value):
                return None
            for k, (ref, t) in enumerate(zip(a.value, r, strict=True)):
                if isinstance(ref, TRef):
                    if not isinstance(t, torch.Tensor):
                        return None
                    pairs.append((ref, t, f"{acc}[{k}]"))
    for ref, t, _ in pairs:
        if ref.dtype is not None and tuple(t.shape) != tuple(ref.shape):
            return None
    return pairs


def _fits(base: torch.Tensor, shape: tuple[int, ...], strides: tuple[int, ...], offset: int) -> bool:
    """Whether a view of ``shape``/``strides`` at element ``offset`` lies inside ``base``'s storage (a meta
    tensor's ``as_strided`` does not check it; the real one fails in the timed loop): the allocator reuses
    addresses, so a storage id an earlier op wrote can be another, smaller tensor's by now."""
    if offset < 0 or any(n == 0 for n in shape):
        return offset >= 0
    last = offset + sum((n - 1) * st for n, st in zip(shape, strides, strict=True))
    return last < base.untyped_storage().nbytes() // base.element_size()


def _retyped(op: OpRec, result: Any) -> tuple[TRef, str, str] | None:
    """The op's first output when its dtype differs from the recorded one, with the (replayed, recorded) dtype;
    None if it agrees. The first output only: an op's secondary outputs may take another dtype by kernel and
    device alike (a layer norm's saved statistics are float32 on CUDA and on the meta device, bfloat16 on the
    CPU, for bfloat16 inputs), and their readers take the replay's own."""
    pairs = _pairs(op, result) or []
    if not pairs or op.outputs[0].kind != TENSOR or pairs[0][0] is not op.outputs[0].value:
        return None
    ref, t, _ = pairs[0]
    if ref.dtype is None or t.dtype == ref.dtype:
        return None
    return ref, str(t.dtype).removeprefix("torch."), str(ref.dtype).removeprefix("torch.")


class _Builder:
    def __init__(self, view: TraceView, device: torch.device, seed: int, comm: Any = None,
                 dry_run: str | None = None, grad_mode: str = INFERENCE_MODE, graph: StepGrad | None = None,
                 ungraphed: set[int] | None = None):
        self.view = view
        self.grad_mode = grad_mode
        self.graph = graph if graph is not None and graph.builds_graph else None
        self.ungraphed = ungraphed or set()  # ops of the graph's region that run without it (they failed with it)
        self.grad_on = False  # the grad mode the lines emitted so far leave the loop in
        self.graph_steps: set[int] = set()
        self.without_graph: Counter = Counter()  # op -> ops of the region replayed without the graph
        self.kept_storages: set[int] = set()  # recorded storages of the persistent tensors
        self.dry = DryRun(device, dry_run)
        self.bound: dict[int, TRef] = {}  # id of a trial tensor bound to the current op -> its recorded tensor
        self.comm = comm
        self.device = device
        self.gen = torch.Generator().manual_seed(seed)
        self.pool = StoragePool(device)
        self.env: dict[tuple, torch.Tensor] = {}
        self.slot: dict[tuple, int] = {}
        self.persistent: dict[int, torch.Tensor] = {}
        self.produced_storage: dict[int, tuple] = {}  # storage id -> key of the latest produced tensor on it
        self.consts: dict[str, Any] = {}
        self.lines: list[tuple[int, str]] = []
        self.reads: list[list[int]] = []
        self.offsets: dict[tuple, int] = {}
        self.repin: set[tuple] = set()
        self.forced: dict[int, str] = {}
        for op in view.ops:
            for r in all_refs(op):
                self.pool.note(r)
        self.cons: Constraints = collect_constraints(view.ops, self._arg_names)
        # sparse tensors (recorded without storage, layout or nonzeros: trace/damage.py): ops on them are not run
        self.sparse = sparse_tensors((op.name, [r for a in op.inputs for r in arg_refs(a)],
                                      [r for a in op.outputs for r in arg_refs(a)]) for op in view.ops)
        # the dry run keeps a produced tensor only until its last reader, as the loop will
        self.dies_at: dict[int, list[tuple]] = {}  # op index -> keys last read there (by id or on their storage)
        for key, i in last_reads(view.ops).items():
            self.dies_at.setdefault(i, []).append(key)

    def release(self, idx: int) -> None:
        """Drop the produced tensors no op after ``idx`` reads (inputs and synthetic tensors stay), also those
        whose storage another tensor read there for the last time (a backward's view of a saved activation)."""
        for key in self.dies_at.get(idx, ()):
            s = self.slot.get(key)
            if s is not None and s not in self.persistent:
                self.env.pop(key, None)

    def _arg_names(self, op: OpRec) -> list[str] | None:
        try:
            return [a.name for a in resolve(op.schema).args]
        except OpUnavailable:
            pass
        if op.name in SUBSTITUTES and op.schema:
            try:  # an op this torch build lacks, that a substitute stands in for
                return [a.name for a in unresolved(op.schema).args]
            except OpUnavailable:
                return None
        return None

    # -- slots ---------------------------------------------------------------------------------------------
    def _slot_for(self, key: tuple) -> int:
        s = self.slot.get(key)
        if s is None:
            s = self.slot[key] = len(self.slot)
        return s

    def _const(self, value: Any) -> str:
        if value is None or isinstance(value, bool | int):
            return repr(value)
        name = f"c{len(self.consts)}"
        self.consts[name] = value
        return name

    def _keep(self, key: tuple, ref: TRef, pool: StoragePool | None = None, fill: bool = True) -> torch.Tensor:
        """A real tensor for ``ref`` (:func:`make_tensor`), persistent in ``key``'s slot; returns what the dry
        run tries in its place."""
        t0 = clock.now_ns()
        t = make_tensor(ref, self.device, self.cons, self.gen, pool, fill_values=fill)
        self.dry.inputs_ns += clock.now_ns() - t0
        if has_storage(ref):
            self.kept_storages.add(ref.storage_id)
        if self.graph is not None and param_id(ref) in self.graph.parameters and t.is_floating_point():
            t.requires_grad_(True)  # a parameter: the forward's ops on it record the graph, as they did
        self.persistent[self._slot_for(key)] = t
        trial = self.env[key] = self.dry.twin(t)
        return trial

    def _input_tensor(self, ref: TRef, pre: list[str], reads: list[int],
                      unread: bool = False) -> tuple[torch.Tensor | None, str]:
        t, txt = self._input(ref, pre, reads, unread)
        if t is not None:
            self.bound[id(t)] = ref
        return t, txt

    def _alt_input(self, alt: tuple, ref: TRef, reads: list[int]) -> tuple[torch.Tensor, str]:
        """The tensor kept under the alternative key ``alt`` (made on first use) and its register."""
        t = self.env.get(alt)  # type: ignore[arg-type]
        if t is None:
            t = self._keep(alt, ref)
        s = self.slot[alt]
        reads.append(s)
        return t, f"R[{s}]"

    def _input(self, ref: TRef, pre: list[str], reads: list[int], unread: bool) -> tuple[torch.Tensor | None, str]:
        if ref.dtype is None:
            return None, "None"
        if ref.key in self.repin:
            # an index computed in the replay from synthetic data fell out of range: use valid indices
            return self._alt_input(("pinned", *ref.key), ref, reads)
        t = self.env.get(ref.key)
        if t is not None and tuple(t.shape) != ref.shape:
            # the id was reused by a tensor the replay does not see: this one is made afresh, in its own slot
            return self._alt_input(("shadow", *ref.key, ref.shape), ref, reads)
        if t is not None:
            s = self.slot[ref.key]
            reads.append(s)
            return t, f"R[{s}]"
        base_key = self.produced_storage.get(ref.storage_id) if has_storage(ref) else None
        if base_key is not None and base_key in self.env and self.env[base_key].dtype == ref.dtype:
            # a view of a tensor an earlier replayed op produced: re-made from it in the loop
            base = self.env[base_key]
            strides = ref.strides if ref.strides is not None and len(ref.strides) == len(ref.shape) else None
            if strides is None:
                strides = torch.empty(ref.shape, device="meta").stride()
            off = ref.offset - self.offsets.get(base_key, 0)
            t = None
            if _fits(base, ref.shape, strides, base.storage_offset() + off):  # else the id was reused
                try:
                    t = base.as_strided(ref.shape, strides, base.storage_offset() + off)
                except RuntimeError:
                    t = None
            if t is not None:
                bs = self.slot[base_key]
                s = self._slot_for(ref.key)
                self.env[ref.key] = t
                pre.append(f"R[{s}] = R[{bs}].as_strided({tuple(ref.shape)!r}, {tuple(strides)!r}, "
                           f"R[{bs}].storage_offset() + {off})")
                reads.append(bs)
                reads.append(s)
                return t, f"R[{s}]"
        # a true input of the step: made once, persistent across iterations (allocated but not filled when
        # the substitute that reads it never looks at its contents)
        t = self._keep(ref.key, ref, self.pool, fill=not unread)
        s = self.slot[ref.key]
        reads.append(s)
        return t, f"R[{s}]"

    def _real(self, x: Any, memo: dict[int, Any]) -> Any:
        if isinstance(x, list | tuple):
            return type(x)(self._real(v, memo) for v in x)
        if isinstance(x, str | torch.device) and str(x) == "meta":
            return str(self.device)  # a device argument
        if not self.dry.is_trial(x):
            return x
        r = memo.get(id(x))
        if r is None:
            r = self.dry.real_of.get(id(x))  # the step's input it stands for, or a synthetic one
            if r is None:
                r = real_like(x, self.bound.get(id(x)), self.device, self.cons, self.gen)
            memo[id(x)] = r
        return r

    def _realize(self, pos: list, kw: dict) -> tuple[list, dict]:
        """The trial arguments with real tensors for meta ones (the step's inputs they stand for, or
        synthetic values of the same layout) and the replay device for the meta device."""
        memo: dict[int, Any] = {}
        return [self._real(v, memo) for v in pos], {k: self._real(v, memo) for k, v in kw.items()}

    def _try(self, op: OpRec, fn: Callable, pos: list, kw: dict, why: str | None) -> tuple[Any, list, dict, bool]:
        """``fn`` on the bound arguments: on the meta device first unless ``why`` says it must be real, then
        for real when the meta try cannot answer (the real failure is raised). Returns (result, the arguments
        it ran on, whether it ran for real)."""
        if why is None:
            self.dry.tried += 1
            try:
                return self.dry.call(fn, pos, kw), pos, kw, False
            except Exception as e:
                why = meta_failure(e)
        pos, kw = self._realize(pos, kw)
        self.dry.count_real(op.name, why)
        with grad_context(self.grad_mode):
            return fn(*pos, **kw), pos, kw, True

    def _bind(self, op: OpRec, spec: OpSpec, by_name: bool = False, numbers: frozenset[tuple] = frozenset()
              ) -> tuple[list, dict, list[str], list[str], list[str], list[int]]:
        """The recorded arguments bound by the schema: (positional, kwargs, their source texts, lines to run
        before the call, slots read); ``by_name``: every argument by keyword (a substitute for an op of another
        library, whose schema gains arguments between versions); ``numbers``: keys of recorded tensors passed as
        Python numbers (:meth:`_wrapped_numbers`)."""
        values, texts = [], []
        pre: list[str] = []
        reads: list[int] = []
        unread = UNREAD.get(op.name, frozenset())
        if len(op.inputs) > len(spec.args):
            raise TypeError(f"{len(op.inputs)} recorded arguments for a schema with {len(spec.args)}")
        for a, arg in zip(op.inputs, spec.args, strict=False):
            if a.kind == TENSOR and a.value.key in numbers:
                f = self.cons.factor(a.value)  # a made-up factor near one keeps its value
                t = type(_NUMBER[a.value.dtype])(f) if f is not None and a.value.dtype.is_floating_point \
                    else _NUMBER[a.value.dtype]
                txt = self._const(t)
            elif a.kind == TENSOR:
                t, txt = self._input_tensor(a.value, pre, reads, arg.name in unread)
            elif a.kind == TENSOR_LIST:
                ts, parts = [], []
                for r in a.value:
                    if isinstance(r, TRef):
                        t1, p1 = self._input_tensor(r, pre, reads)
                    else:
                        t1, p1 = None, "None"
                    ts.append(t1)
                    parts.append(p1)
                t, txt = ts, "[" + ", ".join(parts) + "]"
            elif a.kind == DEVICE:
                t = str(self.device) if a.value is not None else None
                txt = self._const(t)
                t = self.dry.device_arg(t)
            elif a.kind == VALUE:
                v = a.value
                if arg.type_str.startswith("Device") and isinstance(v, str):
                    v = str(self.device)
                elif arg.type_str.startswith("Tensor") and v is not None and not isinstance(v, list):
                    raise TypeError(f"argument {arg.name!r} wants a tensor, the trace has {v!r}")
                t, txt = v, self._const(v)
                if arg.type_str.startswith("Device"):
                    t = self.dry.device_arg(v)  # a factory op's default device too: nothing made on the host
            elif a.kind == UNSUPPORTED:
                if arg.type_str.endswith("?"):
                    t, txt = None, "None"
                else:
                    raise TypeError(f"argument {arg.name!r} of type {arg.type_str} cannot be rebuilt ({a.value})")
            else:  # pragma: no cover - defensive
                raise TypeError(f"unknown argument kind {a.kind}")
            values.append(t)
            texts.append(txt)
        if by_name:
            names = [arg.name for arg in spec.args[: len(values)]]
            return ([], dict(zip(names, values, strict=True)), [],
                    [f"{n}={x}" for n, x in zip(names, texts, strict=True)], pre, reads)
        drop = defaulted(spec, values)
        pos, kw = split_args(spec, values, drop)
        ptxt, ktxt = split_args(spec, texts, drop)
        return pos, kw, list(ptxt), [f"{k}={v}" for k, v in ktxt.items()], pre, reads

    # -- outputs -------------------------------------------------------------------------------------------
    def _pin(self, ref: TRef) -> None:
        """A synthetic tensor of the recorded shape stands for this output (persistent)."""
        if ref.dtype is None or storage_less(ref) and ref.tensor_id in self.sparse:
            return  # (a sparse tensor: the ops that read it are not run)
        self._keep(ref.key, ref)

    def _pin_outputs(self, op: OpRec) -> None:
        for a in op.outputs:
            if a.kind == TENSOR:
                self._pin(a.value)
            elif a.kind == TENSOR_LIST:
                for r in a.value:
                    if isinstance(r, TRef):
                        self._pin(r)

    def _outputs(self, op: OpRec, result: Any, pin: bool, skip: tuple | None = None) -> list[tuple[int, str]] | None:
        """Assignments of the op's results to slots; None when results do not match the recorded outputs.
        ``skip``: the key of an output pinned already (:func:`_retyped`)."""
        if pin:
            self._pin_outputs(op)
            return []
        pairs = _pairs(op, result)
        if pairs is None:
            return None
        assigns: list[tuple[int, str]] = []
        for ref, t, acc in pairs:
            if ref.dtype is None or ref.key == skip:
                continue
            s = self._slot_for(ref.key)
            self.env[ref.key] = t
            if has_storage(ref):  # not id 0, which every storage-less tensor shares
                self.produced_storage[ref.storage_id] = ref.key
            self.offsets[ref.key] = ref.offset
            assigns.append((s, acc))
        return assigns

    # -- one op --------------------------------------------------------------------------------------------
    def add(self, idx: int, op: OpRec) -> StepInfo:
        info = StepInfo(index=idx, op=op, replayed=False)
        self.bound = {}
        if idx in self.forced:
            # this op failed when the compiled iteration ran again: give it valid indices, or skip it
            keys = {r.key for a in op.inputs for r in ([a.value] if a.kind == TENSOR else
                                                        (a.value if a.kind == TENSOR_LIST else []))
                    if isinstance(r, TRef) and r.key in self.cons.by_key}
            if not keys:
                return self._skip(info, "fails when the iteration runs again: " + self.forced[idx])
            self.repin |= keys
        if op.name in NO_OPS:
            info.replayed = True
            info.substitute = "nothing: " + NO_OPS[op.name]
            self._pin_outputs(op)
            return info
        if op.name in NOT_REPLAYED:
            return self._skip(info, NOT_REPLAYED[op.name])
        if not op.schema:
            return self._skip(info, "no op schema recorded")
        if self.sparse and any(storage_less(r) and r.tensor_id in self.sparse for r in all_refs(op)):
            return self._skip(info, SPARSE_REASON)
        if op.name.startswith(("c10d::", "c10d_functional::", "_c10d_functional::")):
            if self.comm is None:
                return self._skip(info, "collective communication: it needs the process group of ranks it ran in "
                                  "(replayed as a timed stand-in when Kineto gives its duration); use --ranks N "
                                  "to replay it on a process group")
            return self._collective(idx, info, op)
        try:
            spec = resolve(op.schema)
        except OpUnavailable as e:
            if op.name not in SUBSTITUTES:
                return self._skip(info, str(e))
            return self._substitute(idx, info, op, str(e))
        try:
            pos, kw, ptxt, ktxt, pre, reads = self._bind(op, spec)
        except Exception as e:
            return self._skip(info, "arguments do not bind: " + first_line(e))
        fn = spec.fn
        why = "failed in a real pass over the iteration" if idx in self.forced else \
            self.dry.real_reason(op.name, spec.qualified.removesuffix(".default"), _nbytes(op))
        try:
            result, pos, kw, real = self._try(op, fn, pos, kw, why)
            if not real and op.name not in DATA_DEPENDENT and _pairs(op, result) is None:
                # the meta kernel sizes an output otherwise than the device's kernel did when recorded (an
                # auxiliary output of embedding_bag): the real kernel decides
                result, pos, kw, real = self._try(op, fn, pos, kw, "meta shapes differ from the recorded")
        except Exception as e:
            real = True
            pos, kw = self._realize(pos, kw)
            if op.name in SUBSTITUTES and not op.name.startswith("aten::"):
                # another library's op that fails on this device: its substitute takes arguments by name
                return self._substitute(idx, info, op, first_line(e))
            fixed = self._retry_with_valid_indices(op, spec, e)
            if fixed is not None:
                pos, kw, ptxt, ktxt, pre, reads, result = fixed
            else:
                sub = SUBSTITUTES.get(op.name)
                if sub is None:
                    return self._skip(info, first_line(e))
                fn = sub[0]
                try:
                    with grad_context(self.grad_mode):
                        result = fn(*pos, **kw)
                except Exception as e2:
                    return self._skip(info, f"{first_line(e)}; {sub[1]} instead failed too: {first_line(e2)}")
                info.substitute = sub[1]
        if info.substitute is None and op.name not in DATA_DEPENDENT and _retyped(op, result) is not None:
            again = self._as_wrapped_numbers(op, spec, why)
            if again is not None:
                pos, kw, ptxt, ktxt, pre, reads, result, real = again
        if info.substitute is None:
            fast = self.dry.fast(op.name, spec, pos, kw, result, real)
            if fast is not None:
                fn = fast
        return self._emit(idx, info, op, fn, self.dry.to_trial(result), ptxt, ktxt, pre, reads, spec)

    def _wrapped_numbers(self, op: OpRec) -> frozenset[tuple]:
        """The op's 0-dim tensor inputs that may have been Python numbers: torch wraps a number passed for a
        Tensor argument (``total_norm + 1e-6``, ``clip_coef * max_norm``) into a 0-dim double (int64, complex128,
        bool) tensor marked as a wrapped number, which the trace records as a plain tensor; a wrapped number does
        not take part in type promotion as a 0-dim tensor does (float32 + wrapped double is float32, + a 0-dim
        double tensor is float64). Tensors an earlier op made are left out: they were real tensors."""
        return frozenset(r.key for a in op.inputs if a.kind == TENSOR for r in [a.value]
                         if isinstance(r, TRef) and r.shape == () and r.dtype in _NUMBER
                         and self.produced_storage.get(r.storage_id) != r.key)

    def _as_wrapped_numbers(self, op: OpRec, spec: OpSpec, why: str | None) -> tuple | None:
        """The op bound and tried again with its possible wrapped numbers (:meth:`_wrapped_numbers`) as Python
        numbers, when that gives its first output the recorded dtype (which the tensors did not); else None."""
        numbers = self._wrapped_numbers(op)
        if not numbers:
            return None
        try:
            pos, kw, ptxt, ktxt, pre, reads = self._bind(op, spec, numbers=numbers)
            result, pos, kw, real = self._try(op, spec.fn, pos, kw, why)
        except Exception:
            return None
        if _pairs(op, result) is None or _retyped(op, result) is not None:
            return None
        return pos, kw, ptxt, ktxt, pre, reads, result, real

    def _substitute(self, idx: int, info: StepInfo, op: OpRec, why: str) -> StepInfo:
        """Run the portable substitute of an op this torch build lacks (or that fails on this device),
        binding its recorded arguments by name; an index that falls out of range is given valid values once."""
        fn, what = SUBSTITUTES[op.name]
        try:
            spec = unresolved(op.schema)
        except OpUnavailable as e:
            return self._skip(info, f"{why}; {what} instead cannot bind: {e}")
        for attempt in range(2):
            try:
                pos, kw, ptxt, ktxt, pre, reads = self._bind(op, spec, by_name=True)
                why = "failed in a real pass over the iteration" if idx in self.forced else \
                    "an index out of range: given valid ones" if attempt else \
                    self.dry.real_reason(op.name, None, _nbytes(op))
                result = self._try(op, fn, pos, kw, why)[0]
                break
            except Exception as e:
                keys = self._constrained_inputs(op)
                if attempt == 0 and isinstance(e, IndexError | RuntimeError) and keys - self.repin:
                    self.repin |= keys
                    continue
                return self._skip(info, f"{why}; {what} instead failed: {first_line(e)}")
        info.substitute = what
        return self._emit(idx, info, op, fn, self.dry.to_trial(result), ptxt, ktxt, pre, reads, spec)

    def _collective(self, idx: int, info: StepInfo, op: OpRec) -> StepInfo:
        """A recorded collective, called through the rank's process group (``self.comm``): its tensors are the
        plan's; it does nothing until the timed iterations make the collectives live."""
        try:
            names = [a.name for a in unresolved(op.schema).args]
        except OpUnavailable as e:
            return self._skip(info, str(e))
        values: dict[str, Any] = {}
        texts: dict[str, str] = {}
        pre: list[str] = []
        reads: list[int] = []
        for name, a in zip(names, op.inputs, strict=False):
            if a.kind == TENSOR:
                values[name], texts[name] = self._input_tensor(a.value, pre, reads)
            elif a.kind == TENSOR_LIST and all(isinstance(r, TRef) for r in a.value):
                got = [self._input_tensor(r, pre, reads) for r in a.value]
                values[name] = [t for t, _ in got]
                texts[name] = "[" + ", ".join(x for _, x in got) + "]"
            elif a.kind == VALUE:
                values[name] = a.value
            else:
                values[name] = None
        try:
            # the collective keeps buffers shaped like its tensors for the live iterations: real ones
            values = self._realize([], values)[1]
            m = self.comm.make(idx, op, values)
            args = [values[n] for n in m.tensor_args]
            with grad_context(self.grad_mode):
                result = self.dry.to_trial(m.fn(*args))
        except CommUnavailable as e:
            return self._skip(info, f"collective communication: {e}")
        except Exception as e:
            return self._skip(info, "collective communication: its arguments do not bind: " + first_line(e))
        info.substitute = f"torch.distributed.{m.call} on the {self.comm.backend} process group"
        return self._emit(idx, info, op, m.fn, result, [texts[n] for n in m.tensor_args], [], pre, reads)

    def _constrained_inputs(self, op: OpRec) -> set[tuple]:
        keys = set()
        for a in op.inputs:
            for r in arg_refs(a):
                if r.key in self.cons.by_key and r.key in self.env:
                    keys.add(r.key)
        return keys

    def _with_graph(self, idx: int, op: OpRec, spec: OpSpec | None) -> bool:
        """Whether op ``idx`` runs with autograd recording (:mod:`benchmint.replay.phases`): an op of the
        forward's region, unless it writes through out= (which refuses inputs that require grad: the original
        recorded nothing there) or into a tensor the plan keeps across iterations (with the graph, that tensor
        would carry one iteration's graph into the next), or failed with the graph (``ungraphed``). A
        collective (``spec`` None) runs without it."""
        if self.graph is None or not self.graph.ops[idx]:
            return False
        why = None
        if idx in self.ungraphed:
            why = "failed with the graph"
        elif spec is None:
            why = "collective"
        else:
            for a, arg in zip(op.inputs, spec.args, strict=False):
                if not arg.is_write:
                    continue
                if arg.kwarg_only:
                    why = "writes through out="
                elif any(has_storage(r) and r.storage_id in self.kept_storages for r in arg_refs(a)):
                    why = "writes into a tensor kept across iterations"
        if why is not None:
            self.without_graph[(op.name, why)] += 1
            return False
        self.graph_steps.add(idx)
        return True

    def graph_info(self) -> dict[str, Any]:
        """What the result says of the forward's autograd graph (``Plan.graph``)."""
        if self.graph is None:
            return {"built": False}
        params = [t for t in self.persistent.values() if t.requires_grad]
        return {"built": True, "ops": len(self.graph_steps), "parameters": len(params),
                "parameter_bytes": sum(t.numel() * t.element_size() for t in params),
                "parameters_from": self.graph.parameters_from,
                "ops_without_graph": [{"op": o, "count": n, "why": w}
                                      for (o, w), n in sorted(self.without_graph.items(), key=lambda x: -x[1])]}

    def _emit(self, idx: int, info: StepInfo, op: OpRec, fn: Callable, result: Any, ptxt: list[str],
              ktxt: list[str], pre: list[str], reads: list[int], spec: OpSpec | None = None) -> StepInfo:
        on = self._with_graph(idx, op, spec)
        if on != self.grad_on:
            self.lines.append((-1, f"_grad({on})"))
            self.grad_on = on
        pin = op.name in DATA_DEPENDENT
        retyped = None if pin else _retyped(op, result)
        if retyped is not None:  # later ops read the recorded dtype, not this one
            self._pin(retyped[0])
            info.retyped = retyped[1:]
        assigns = self._outputs(op, result, pin, skip=retyped[0].key if retyped is not None else None)
        if assigns is None:
            # the results differ from the recorded outputs (data-dependent shape): use recorded shapes
            self._pin_outputs(op)
            assigns = []
        fname = f"f{idx}"
        self.consts[fname] = fn
        call = f"{fname}({', '.join(ptxt + ktxt)})"
        for p in pre:
            self.lines.append((-1, p))
        if not assigns:
            line = call
        elif len(assigns) == 1 and assigns[0][1] == "_r":
            line = f"R[{assigns[0][0]}] = {call}"
        else:
            line = f"_r = {call}; " + "; ".join(f"R[{s}] = {acc}" for s, acc in assigns)
        if op.name in FRESH_FROM_DATA and assigns:
            line += self._fresh_values(op, assigns, reads)
        self.lines.append((idx, line))
        self.reads.append(reads)
        info.replayed = True
        return info

    def _fresh_values(self, op: OpRec, assigns: list[tuple[int, str]], reads: list[int]) -> str:
        """Source that writes made-up values (:func:`make_tensor`, kept in their own persistent slot) into the
        tensor ``op`` returned (:data:`FRESH_FROM_DATA`); the try's tensor gets them too."""
        ref = op.outputs[0].value if op.outputs and op.outputs[0].kind == TENSOR else None
        if not isinstance(ref, TRef) or ref.dtype is None or ref.key not in self.env:
            return ""
        key = ("fresh", *ref.key)
        src = self.env.get(key)
        if src is None:
            src = self._keep(key, ref)
        try:
            self.env[ref.key].copy_(src)
        except RuntimeError:
            pass
        s, out = self.slot[key], self.slot[ref.key]
        reads.append(s)
        return f"; R[{out}].copy_(R[{s}])"

    def _retry_with_valid_indices(self, op: OpRec, spec: OpSpec, err: Exception) -> tuple | None:
        """When an index computed in the replay (from synthetic data) is out of range, bind the op's integer
        inputs that have a known valid range to synthetic tensors within it, and try again."""
        msg = str(err)
        if not isinstance(err, IndexError) and "out of range" not in msg and "out of bounds" not in msg:
            return None
        keys = self._constrained_inputs(op)
        if not keys:
            return None
        self.repin |= keys
        try:
            pos, kw, ptxt, ktxt, pre, reads = self._bind(op, spec)
            pos, kw = self._realize(pos, kw)
            with grad_context(self.grad_mode):
                result = spec.fn(*pos, **kw)
        except Exception:
            return None
        finally:
            self.repin -= keys
        return pos, kw, ptxt, ktxt, pre, reads, result

    def _skip(self, info: StepInfo, reason: str) -> StepInfo:
        info.reason = reason
        info.standin_s = info.op.dur_s
        self._pin_outputs(info.op)
        return info


def build_plan(view: TraceView, device: str | torch.device = "cpu", seed: int = 0, progress: Any = None,
               comm: Any = None, *, dry_run: str | None = None, check: int = 1, graph: bool = True) -> Plan:
    """Resolve, bind, dry-run and compile every top-level op of ``view`` for ``device``; the compiled
    iteration is then run ``check`` times for real, and an op that fails there (on values: an index computed
    from synthetic data that falls out of range) is planned again, tried for real, with valid indices, or
    skipped. ``comm``: the rank's :class:`~benchmint.replay.collectives.Collectives` in a multi-rank replay
    (collectives are skipped without it). ``dry_run``: "meta" (the default: nothing computed while
    planning) or "real" (every op computed once, as before; ``BENCHMINT_PLAN_DRY_RUN``), see
    :mod:`benchmint.replay.dryrun`. ``check=0`` returns the plan unchecked (nothing computed when the meta
    tries answered). ``graph``: a training step's forward records autograd's graph, as it did in the
    original (:mod:`benchmint.replay.phases`); an op that fails with it runs without it, and a plan whose kept
    tensors came out of an iteration holding a graph (it would grow from one iteration to the next) is made
    again without any."""
    forced: dict[int, str] = {}
    ungraphed: set[int] = set()
    sg = step_grad(view)  # the same for every attempt
    check_s = 0.0
    for attempt in range(8):
        plan = _build(view, device, seed, progress, forced, sg, graph, ungraphed, comm, dry_run)
        t0 = clock.now_ns()
        bad = _runs_again(plan, check) if check > 0 else None
        check_s += (clock.now_ns() - t0) / 1e9
        plan.check_time_s = check_s
        if graph and check > 0 and plan.graph.get("built") and (bad is not None or _holds_graph(plan)):
            if bad is not None and bad[0] in plan.graph_steps and bad[0] not in ungraphed and attempt < 5:
                ungraphed.add(bad[0])  # an op that fails with the graph: planned again without it
                del plan
                continue
            if bad is None or _AUTOGRAD.search(bad[1]) or attempt >= 5:
                # the graph crosses iterations, breaks an op outside it, or too many ops fail with it: none
                graph = False
                del plan
                continue
        if bad is None or bad[0] in forced:
            if bad is not None:
                raise RuntimeError(f"op {bad[0]} of the trace fails when replayed again: {bad[1]}")
            return plan
        forced[bad[0]] = bad[1]
        if attempt < 7:
            del plan  # its inputs go before the next plan makes its own (a large trace's are gigabytes)
    return plan


# what autograd says when an op cannot run while the graph records (the original ran it otherwise)
_AUTOGRAD = re.compile(r"requires.grad|require.grad|automatic differentiation|autograd|differentiable|in-?place|"
                       r"leaf Variable|grad_fn|derivative", re.IGNORECASE)


def _holds_graph(plan: Plan) -> bool:
    """Whether a tensor the plan keeps across iterations came out of one holding autograd's graph."""
    return any(isinstance(t, torch.Tensor) and t.grad_fn is not None for t in plan.init)


def _runs_again(plan: Plan, times: int = 1) -> tuple[int, str] | None:
    fn = plan.compile(standins=False)
    owner = fn.__globals__["_OWNER"]
    code_name = fn.__code__.co_filename
    for _ in range(times):
        try:
            with plan.grad_context():
                fn(plan.registers())
        except Exception as e:
            tb = e.__traceback__
            line = None
            while tb is not None:
                if tb.tb_frame.f_code.co_filename == code_name:
                    line = tb.tb_lineno
                tb = tb.tb_next
            if line is None or line - 1 >= len(owner) or owner[line - 1] < 0:
                raise
            return owner[line - 1], first_line(e)
    return None


def _build(view: TraceView, device: str | torch.device, seed: int, progress: Any, forced: dict[int, str],
           sg: StepGrad, graph: bool, ungraphed: set[int], comm: Any = None, dry_run: str | None = None) -> Plan:
    """One planning pass. A training step's ops run under no_grad, as they ran outside inference mode in the
    original (``sg``, phases.step_grad); the replay calls the backward's ops itself, and with ``graph`` its
    forward's region records the graph the original's did (but for the ops in ``ungraphed``), which is built
    and dropped."""
    t0 = clock.now_ns()
    dev = torch.device(device)
    mode = sg.mode
    with grad_context(mode):
        b = _Builder(view, dev, seed, comm, dry_run, mode, sg if graph else None, ungraphed)
        b.forced = forced
        steps = []
        for i, op in enumerate(view.ops):
            steps.append(b.add(i, op))
            b.repin.clear()
            b.release(i)
            if progress is not None:
                progress(i + 1)
        if b.grad_on:
            b.lines.append((-1, "_grad(False)"))
    _add_frees(b)
    init: list[Any] = [None] * len(b.slot)
    for s, t in b.persistent.items():
        init[s] = t
    seen: set[int] = set()
    pbytes = 0
    for t in b.persistent.values():
        st = t.untyped_storage()
        p = st.data_ptr()
        if p not in seen:
            seen.add(p)
            pbytes += st.nbytes()
    return Plan(view=view, device=dev, steps=steps, init=init, lines=b.lines, namespace=b.consts,
                persistent_bytes=pbytes, plan_time_s=(clock.now_ns() - t0) / 1e9, n_slots=len(b.slot),
                reads=b.reads, comm=comm, dry_run=b.dry.summary(len(view.ops)), slots=b.slot, cons=b.cons,
                grad_mode=mode, graph=b.graph_info(), graph_steps=frozenset(b.graph_steps))


def _add_frees(b: _Builder) -> None:
    """Release each produced tensor after its last use: insert ``R[s] = None`` lines."""
    persistent = set(b.persistent)
    last: dict[int, int] = {}
    op_line = 0
    for k, reads in enumerate(b.reads):
        for s in reads:
            if s not in persistent:
                last[s] = k
    frees: dict[int, list[int]] = {}
    for s, k in last.items():
        frees.setdefault(k, []).append(s)
    out: list[tuple[int, str]] = []
    for item in b.lines:
        out.append(item)
        if item[0] >= 0:
            fs = frees.get(op_line)
            op_line += 1
            if fs:
                out.append((-1, " = ".join(f"R[{s}]" for s in sorted(fs)) + " = None"))
    b.lines = out

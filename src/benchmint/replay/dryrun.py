"""The dry run of planning: each op is tried once before it goes into the compiled loop.

By default the try runs on the meta device: the op's meta kernel checks that the recorded arguments bind and
that shapes and dtypes fit, and gives the shapes of its results, without computing anything or holding memory
for what it produces. The step's true inputs are made for real (the loop needs them) and tried through meta
twins; device arguments point at the meta device during the try and at the replay device in the loop. Tries
are remembered by the op and the layout of its arguments (the layers of a model repeat the same calls), so a
repeated call costs a lookup. A step recorded on a large GPU (PARAM's GPT-2 training trace) planned this way
takes seconds, where computing it at the recorded shapes took minutes and more memory than the replay.

Where a meta try cannot answer, the op runs for real, once, on synthetic tensors of the shapes it is given
(the step's true inputs as they are), counted and reported (``real_runs``):

- the op's recorded tensors take at most 1 MiB (``SMALL_BYTES``): computing it costs microseconds, less than
  a meta kernel written in Python (an LSTM's meta kernel, unrolled over its time steps, took seconds);

- the op has no kernel for the replay device (a CUDA trace's cuDNN op on the CPU): a meta kernel would accept
  it, the device would not, and its portable substitute is chosen from the real failure;
- the meta try raised: no meta kernel, a data-dependent result (``nonzero``, ``item``), or a genuine error,
  whose message then comes from the real kernel;
- the op failed when the compiled iteration ran for real, and is planned again.

Values are never checked by a meta try: the real pass over the compiled iteration that ends planning
(:func:`benchmint.replay.plan.build_plan`'s ``check``) finds an op that fails on them (an index computed from
synthetic values out of range), and that op is planned again, for real. ``BENCHMINT_PLAN_DRY_RUN=real``
computes every op once at its recorded shapes, as benchmint did before.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

from benchmint.core.errors import UserError
from benchmint.replay.tensors import fill

MODE_ENV = "BENCHMINT_PLAN_DRY_RUN"
#: An op whose recorded tensors take at most this many bytes is computed rather than tried on the meta device:
#: it costs microseconds, where a meta kernel written in Python (an LSTM's, unrolled over its steps) costs
#: milliseconds per call.
SMALL_BYTES = 1 << 20
MODES = ("meta", "real")
META = "meta"


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    if len(msg) > 160:
        msg = msg[:157] + "..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}
_PORTABLE_KEYS = ("CompositeImplicitAutograd", "CompositeExplicitAutograd", "CompositeExplicitAutogradNonFunctional")


def _has_device_kernel(qualified: str, device: torch.device) -> bool:
    """Whether ``aten::name.overload`` has a kernel for the device (or a portable one) in this build."""
    keys = (_DISPATCH_KEYS.get(device.type, device.type.upper()), *_PORTABLE_KEYS)
    try:
        return any(torch._C._dispatch_has_kernel_for_dispatch_key(qualified, k) for k in keys)
    except RuntimeError:
        return True  # not a dispatcher op: the try decides


def _sig(x: Any) -> Any:
    """What a meta try's outcome depends on: a tensor's layout (no values), other arguments as they are."""
    if isinstance(x, torch.Tensor):
        return ("T", tuple(x.shape), x.stride(), x.dtype, x.storage_offset(), x.untyped_storage().nbytes(),
                x.device.type)
    if isinstance(x, list | tuple):
        return (type(x).__name__, *(_sig(v) for v in x))
    if isinstance(x, dict):
        return ("D", *((k, _sig(v)) for k, v in x.items()))
    if isinstance(x, float) and x != x:
        return ("nan",)
    return (type(x).__name__, x)


def _layout(x: Any) -> Any:
    """A result as layouts, to be made again as meta tensors (:func:`_remake`)."""
    if isinstance(x, torch.Tensor):
        return _Layout(tuple(x.shape), x.stride(), x.dtype, x.storage_offset(),
                       x.untyped_storage().nbytes() // max(x.element_size(), 1))
    if isinstance(x, list):
        return [_layout(v) for v in x]
    if isinstance(x, tuple):  # torch.return_types too
        return tuple(_layout(v) for v in x)
    return x


class _Layout(tuple):
    __slots__ = ()

    def __new__(cls, *fields: Any) -> _Layout:
        return super().__new__(cls, fields)


def _remake(x: Any) -> Any:
    if isinstance(x, _Layout):
        shape, stride, dtype, offset, numel = x
        return torch.empty(numel, dtype=dtype, device=META).as_strided(shape, stride, offset)
    if isinstance(x, list):
        return [_remake(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_remake(v) for v in x)
    return x


def meta_like(t: torch.Tensor) -> torch.Tensor:
    """A meta tensor of ``t``'s layout (shape, strides, offset, storage size)."""
    return _remake(_layout(t))


class DryRun:
    """How the planner tries an op: on the meta device (``mode="meta"``, the default, or
    ``BENCHMINT_PLAN_DRY_RUN``) or for real (``mode="real"``)."""

    def __init__(self, device: torch.device, mode: str | None = None):
        mode = mode or os.environ.get(MODE_ENV) or META
        if mode not in MODES:
            raise UserError(f"{MODE_ENV}={mode}: give one of {', '.join(MODES)}")
        self.mode = mode
        self.meta = mode == META
        self.device = device
        self.tried = 0  # ops tried on the meta device
        self.remembered = 0  # of those, answered from an earlier try with the same layouts
        self.real: Counter = Counter()  # (op, why) -> ops run for real while planning
        self._kernel: dict[str, bool] = {}
        self._memo: dict[Any, Any] = {}
        self._bases: dict[tuple, torch.Tensor] = {}
        self._twins: list[tuple[torch.Tensor, torch.Tensor]] = []  # (twin, real): keeps ids stable
        self.real_of: dict[int, torch.Tensor] = {}  # id of a meta twin -> the real tensor it stands for
        self.inputs_ns = 0  # time spent making the step's inputs (real: the loop needs them)
        self._last: Any = None  # the key of the last meta try
        self._fast: dict[Any, Callable | None] = {}

    def is_trial(self, x: Any) -> bool:
        """A tensor of the meta try that stands for one the loop makes."""
        return self.meta and isinstance(x, torch.Tensor) and x.is_meta

    def twin(self, t: torch.Tensor) -> torch.Tensor:
        """What the try sees of a real tensor the loop keeps (an input of the step): a meta tensor of its
        layout, on a meta storage shared with the other views of its storage."""
        if not self.meta:
            return t
        st = t.untyped_storage()
        k = (st.data_ptr(), st.nbytes(), t.dtype)
        base = self._bases.get(k)
        if base is None:
            base = self._bases[k] = torch.empty(st.nbytes() // max(t.element_size(), 1), dtype=t.dtype,
                                                device=META)
        m = base.as_strided(tuple(t.shape), t.stride(), t.storage_offset())
        self._twins.append((m, t))
        self.real_of[id(m)] = t
        return m

    def device_arg(self, value: Any) -> Any:
        """A device argument as the try passes it (the loop passes the replay device)."""
        return META if self.meta else value

    def real_reason(self, name: str, qualified: str | None, nbytes: int) -> str | None:
        """Why ``name``, whose recorded tensors take ``nbytes``, is tried for real (None: a meta try may
        answer)."""
        if not self.meta:
            return "every op is computed"
        if nbytes <= SMALL_BYTES:
            return f"small (tensors of at most {SMALL_BYTES >> 20} MiB): computed"
        if qualified is not None:
            ok = self._kernel.get(qualified)
            if ok is None:
                ok = self._kernel[qualified] = _has_device_kernel(qualified, self.device)
            if not ok:
                return f"no {self.device.type} kernel"
        return None

    def call(self, fn: Callable, pos: list, kw: dict) -> Any:
        """``fn`` on the trial arguments; on the meta device, an outcome seen for the same arguments' layouts
        is given again without calling."""
        if not self.meta:
            return fn(*pos, **kw)
        try:
            key: Any = (id(fn), _sig(pos), _sig(kw))
            hit = self._memo.get(key)
        except TypeError:  # an unhashable argument: tried every time
            key = hit = None
        self._last = key
        if hit is not None:
            self.remembered += 1
            if isinstance(hit, BaseException):
                raise hit
            return _remake(hit)
        try:
            r = fn(*pos, **kw)
        except Exception as e:
            if key is not None:
                self._memo[key] = e
            raise
        if key is not None:
            self._memo[key] = _layout(r)
        return r

    def fast(self, name: str, spec: Any, pos: list, kw: dict, result: Any, real: bool) -> Callable | None:
        """:func:`fast_callable` for the op just tried (``real``: it ran for real); on the meta device the
        answer for the same op and argument layouts is remembered."""
        if real or not self.meta:
            return fast_callable(name, spec, pos, kw, result, real_call)
        key = (name, self._last) if self._last is not None else None
        if key is not None and key in self._fast:
            return self._fast[key]
        f = fast_callable(name, spec, pos, kw, result, self.call)
        if key is not None:
            self._fast[key] = f
        return f

    def count_real(self, name: str, why: str) -> None:
        if self.meta:
            self.real[(name, why)] += 1

    def to_trial(self, result: Any) -> Any:
        """Real tensors of a result as meta ones (their memory is released with them)."""
        if not self.meta:
            return result
        if isinstance(result, torch.Tensor):
            return result if result.is_meta else meta_like(result)
        if isinstance(result, list):
            return [self.to_trial(x) for x in result]
        if isinstance(result, tuple):
            return tuple(self.to_trial(x) for x in result)
        return result

    def summary(self, ops: int) -> dict[str, Any]:
        """What the result says of the dry run (``plan.dry_run``)."""
        rows = [{"op": op, "count": n, "why": why} for (op, why), n in sorted(self.real.items(),
                                                                              key=lambda x: -x[1])]
        how = ("each op tried once on the meta device (its meta kernel checks binding, shapes and dtypes; "
               "nothing computed; a call with the same argument layouts as an earlier one is answered from "
               "it), for real on synthetic tensors where that cannot answer" if self.meta
               else "each op computed once at its recorded shapes")
        return {"mode": self.mode, "ops": ops, "inputs_made_s": self.inputs_ns / 1e9, "tried_meta": self.tried,
                "answered_from_earlier": self.remembered,
                "ran_real": sum(self.real.values()) if self.meta else ops, "real_runs": rows, "how": how}


def meta_failure(e: BaseException) -> str:
    """Why a meta try did not answer, in a few words (the rows of ``real_runs`` group by it)."""
    text = str(e)
    if "cannot be called on meta tensors" in text or "data-independent" in text or "data-dependent" in text:
        return "data-dependent result"
    if isinstance(e, NotImplementedError):
        return "no meta kernel"
    if "meta" in text.lower():
        return "the meta try failed: " + first_line(e)
    return "the meta try failed (the real one decides)"


def real_call(fn: Callable, pos: list, kw: dict) -> Any:
    return fn(*pos, **kw)


def real_like(t: torch.Tensor, ref: Any, device: torch.device, cons: Any, gen: torch.Generator) -> torch.Tensor:
    """A real tensor standing for the trial tensor ``t`` in a real try: its shape, strides and dtype on
    ``device``, with values its consumers accept (``ref``'s constraints when it is a recorded tensor)."""
    c = torch.empty(tuple(t.shape), dtype=t.dtype)
    fill(c, ref, cons, gen)
    if c.stride() == t.stride() or c.numel() == 0:
        return c.to(device)
    r = torch.empty_strided(tuple(t.shape), t.stride(), dtype=t.dtype, device=device)
    try:
        r.copy_(c)
    except RuntimeError:  # an overlapping layout (stride 0): contiguous values serve the try
        return c.to(device)
    return r


_FAST_NAMESPACES = ("_VariableFunctions", "_nn", "_linalg", "_special", "_fft")


def _same_shape(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype
    if isinstance(a, list | tuple):
        return (isinstance(b, list | tuple) and len(a) == len(b)
                and all(_same_shape(x, y) for x, y in zip(a, b, strict=False)))
    return type(a) is type(b)


def fast_callable(name: str, spec: Any, pos: list, kw: dict, result: Any, call: Callable) -> Callable | None:
    """torch's own Python binding of an aten op (``torch.add``, ``torch.Tensor.add_``) when it accepts the
    bound arguments and gives results of the same shapes (tried through ``call``, as the op was): it parses
    arguments in C++ and costs about 1 us less per call than the generic ``torch.ops`` overload, so replayed
    ops cost what the original eager calls cost. None when there is no such binding or it does not agree."""
    ns, _, base = name.partition("::")
    if ns != "aten" or not pos or spec.returns_list and base in ("split", "unbind", "chunk"):
        return None
    cands: list[Callable] = []
    if base.endswith("_") and not base.startswith("_"):
        m = getattr(torch.Tensor, base, None)
        if m is not None:
            cands.append(m)
    for mod in _FAST_NAMESPACES:
        f = getattr(getattr(torch._C, mod, None), base, None)
        if f is not None:
            cands.append(f)
    if not cands and isinstance(pos[0], torch.Tensor):
        m = getattr(torch.Tensor, base, None)
        if m is not None and callable(m):
            cands.append(m)
    for f in cands:
        try:
            with torch.inference_mode():
                r = call(f, pos, kw)
        except Exception:
            continue
        if _same_shape(result, r):
            return f
    return None

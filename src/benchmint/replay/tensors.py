"""Synthetic tensors for a replay: storages sized from offsets and strides, views at recorded offsets, and
integer contents that the consuming ops accept (indices in range, EmbeddingBag offsets, ``tensor_range``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from benchmint.replay.types import TENSOR, TENSOR_LIST, OpRec, TRef

_INDEX_DIM_OPS = {
    # op base name -> (index arg, indexed tensor arg, dim arg)
    "index_select": ("index", "self", "dim"),
    "gather": ("index", "self", "dim"),
    "scatter": ("index", "self", "dim"),
    "scatter_": ("index", "self", "dim"),
    "scatter_add": ("index", "self", "dim"),
    "scatter_add_": ("index", "self", "dim"),
    "scatter_reduce": ("index", "self", "dim"),
    "scatter_reduce_": ("index", "self", "dim"),
    "index_add": ("index", "self", "dim"),
    "index_add_": ("index", "self", "dim"),
    "index_copy": ("index", "self", "dim"),
    "index_copy_": ("index", "self", "dim"),
    "index_fill": ("index", "self", "dim"),
    "index_fill_": ("index", "self", "dim"),
    "index_reduce": ("index", "self", "dim"),
    "index_reduce_": ("index", "self", "dim"),
}


@dataclass
class IntConstraint:
    high: int | None = None  # values in [0, high)
    offsets_of: int | None = None  # EmbeddingBag offsets over this many indices
    include_last: bool = False
    low: int | None = None
    forced: tuple[int, int] | None = None  # recorded tensor_range (min, max)

    def narrow(self, high: int) -> None:
        if high > 0:
            self.high = high if self.high is None else min(self.high, high)


@dataclass
class Constraints:
    by_key: dict[tuple, IntConstraint] = field(default_factory=dict)

    def get(self, ref: TRef) -> IntConstraint:
        c = self.by_key.get(ref.key)
        if c is None:
            c = self.by_key[ref.key] = IntConstraint()
        return c


def _named(op: OpRec, arg_names: list[str]) -> dict[str, object]:
    return {n: a.value for n, a in zip(arg_names, op.inputs, strict=False)}


def _parse_range(text: str | None) -> tuple[int, int] | None:
    """``tensor_range`` is recorded as a JSON-ish "[min, max]" per tensor in some builds; accept a pair."""
    if not text:
        return None
    import re

    nums = re.findall(r"-?\d+", text)
    if len(nums) >= 2:
        return int(nums[0]), int(nums[1])
    return None


def collect_constraints(ops: Iterable[OpRec], arg_names_of) -> Constraints:
    """Walk all ops and note, for each integer tensor, what its consumers need of it."""
    cons = Constraints()
    for op in ops:
        names = arg_names_of(op)
        if names is None:
            continue
        a = _named(op, names)
        base = op.name.split("::", 1)[-1]
        if base in ("embedding",):
            _bound(cons, a.get("indices"), _dim(a.get("weight"), 0))
        elif base in ("embedding_bag", "_embedding_bag", "_embedding_bag_forward_only"):
            idx, off = a.get("indices"), a.get("offsets")
            _bound(cons, idx, _dim(a.get("weight"), 0))
            if isinstance(off, TRef) and isinstance(idx, TRef):
                c = cons.get(off)
                c.offsets_of = idx.numel
                c.include_last = bool(a.get("include_last_offset", False))
        elif base in ("embedding_backward", "embedding_dense_backward", "_embedding_bag_backward",
                      "_embedding_bag_dense_backward", "_embedding_bag_sparse_backward"):
            nw = a.get("num_weights")
            if isinstance(nw, int):
                _bound(cons, a.get("indices"), nw)
            off, idx = a.get("offsets"), a.get("indices")
            if isinstance(off, TRef) and isinstance(idx, TRef):
                cons.get(off).offsets_of = idx.numel
        elif base in _INDEX_DIM_OPS:
            ia, sa, da = _INDEX_DIM_OPS[base]
            d = a.get(da)
            if isinstance(d, int):
                _bound(cons, a.get(ia), _dim(a.get(sa), d))
        elif base in ("index", "_index_put_impl_", "index_put_", "index_put", "_unsafe_index"):
            src = a.get("self")
            lst = a.get("indices")
            if isinstance(src, TRef) and isinstance(lst, list):
                for k, r in enumerate(lst):
                    _bound(cons, r, _dim(src, k))
        elif base in ("nll_loss", "nll_loss_forward", "nll_loss2d", "nll_loss2d_forward", "cross_entropy_loss",
                      "nll_loss_nd", "multi_margin_loss"):
            src = a.get("self")
            if isinstance(src, TRef):
                _bound(cons, a.get("target"), _dim(src, 1 if len(src.shape) > 1 else 0))
        elif base in ("nll_loss_backward", "nll_loss2d_backward"):
            src = a.get("self")
            if isinstance(src, TRef):
                _bound(cons, a.get("target"), _dim(src, 1 if len(src.shape) > 1 else 0))
        elif base == "take":
            src = a.get("self")
            if isinstance(src, TRef):
                _bound(cons, a.get("index"), src.numel)
        # recorded tensor_range: respect it for every integer input of this op
        rng = _parse_range(op.tensor_range)
        if rng is not None:
            for arg in op.inputs:
                if arg.kind == TENSOR and _is_int(arg.value.dtype):
                    cons.get(arg.value).forced = rng
    return cons


def _dim(ref: object, d: int) -> int | None:
    if isinstance(ref, TRef) and ref.shape:
        try:
            return ref.shape[d]
        except IndexError:
            return None
    return None


def _bound(cons: Constraints, ref: object, high: int | None) -> None:
    if isinstance(ref, TRef) and high:
        cons.get(ref).narrow(high)


def _is_int(dtype: torch.dtype | None) -> bool:
    return dtype is not None and not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def fill(t: torch.Tensor, ref: TRef, cons: Constraints, gen: torch.Generator) -> None:
    """Fill a freshly made tensor with values its consumers accept."""
    if t.numel() == 0:
        return
    dtype = t.dtype
    if dtype == torch.bool:
        t.copy_(torch.rand(t.shape, generator=gen) < 0.5)
        return
    if dtype.is_floating_point or dtype.is_complex:
        with torch.inference_mode():
            t.copy_(torch.rand(t.shape, generator=gen, dtype=torch.float32).mul_(0.9).add_(0.05))
        return
    c = cons.by_key.get(ref.key)
    if c is not None and c.offsets_of is not None:
        n = t.numel() - (1 if c.include_last else 0)
        total = c.offsets_of
        if n <= 0:
            t.fill_(total)
            return
        cuts = torch.sort(torch.randint(0, total + 1, (n,), generator=gen)).values
        cuts[0] = 0
        vals = torch.cat([cuts, torch.tensor([total])]) if c.include_last else cuts
        t.copy_(vals.reshape(t.shape))
        return
    if c is not None and c.forced is not None:
        lo, hi = c.forced
        t.copy_(torch.randint(lo, hi + 1, t.shape, generator=gen))
        return
    if c is not None and c.high is not None:
        t.copy_(torch.randint(0, c.high, t.shape, generator=gen))
        return
    t.zero_()  # zero is a valid index and a neutral offset for any consumer we do not know


class StoragePool:
    """One storage per recorded storage id, sized to hold every recorded view of it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.need: dict[tuple[int, torch.dtype], int] = {}
        self.storages: dict[tuple[int, torch.dtype], torch.Tensor] = {}

    def note(self, ref: TRef) -> None:
        if ref.dtype is None:
            return
        k = (ref.storage_id, ref.dtype)
        end = ref.offset + ref.extent()
        if end > self.need.get(k, 0):
            self.need[k] = end

    def view(self, ref: TRef) -> tuple[torch.Tensor, bool]:
        """A tensor at the recorded place in its storage; True when the storage was made just now."""
        assert ref.dtype is not None
        k = (ref.storage_id, ref.dtype)
        base = self.storages.get(k)
        fresh = base is None
        if base is None:
            size = max(self.need.get(k, 0), ref.offset + ref.extent(), 1)
            base = torch.empty(size, dtype=ref.dtype, device=self.device)
            self.storages[k] = base
        strides = ref.strides if ref.strides is not None else None
        if strides is None or len(strides) != len(ref.shape):
            from benchmint.replay.types import _contiguous

            strides = _contiguous(ref.shape)
        return base.as_strided(ref.shape, strides, ref.offset), fresh


def make_tensor(ref: TRef, device: torch.device, cons: Constraints, gen: torch.Generator,
                pool: StoragePool | None = None) -> torch.Tensor:
    """A standalone (or pooled) tensor of the recorded shape, strides and dtype with valid contents."""
    if pool is not None and ref.storage_id > 0:
        t, _ = pool.view(ref)
    else:
        from benchmint.replay.types import _contiguous

        strides = ref.strides if ref.strides is not None and len(ref.strides) == len(ref.shape) else None
        size = max(ref.extent(), 1)
        base = torch.empty(size, dtype=ref.dtype, device=device)
        t = base.as_strided(ref.shape, strides or _contiguous(ref.shape), 0)
    cpu = torch.empty(t.shape, dtype=t.dtype)
    fill(cpu, ref, cons, gen)
    try:
        t.copy_(cpu)
    except RuntimeError:
        # an overlapping view (stride 0, expand): fill the storage span it covers instead
        flat = t.as_strided((max(ref.extent(), 1),), (1,), t.storage_offset())
        span = torch.empty(flat.shape, dtype=t.dtype)
        fill(span, ref, cons, gen)
        flat.copy_(span)
    return t


def all_refs(op: OpRec) -> Iterable[TRef]:
    for a in (*op.inputs, *op.outputs):
        if a.kind == TENSOR:
            yield a.value
        elif a.kind == TENSOR_LIST:
            for r in a.value:
                if isinstance(r, TRef):
                    yield r

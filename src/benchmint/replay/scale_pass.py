"""One walk of :mod:`benchmint.replay.scale` over the step on the meta device: the probe (every size read)
or the final pass (the factors asked for applied)."""

from __future__ import annotations

import itertools
import math
import warnings
from collections import Counter
from dataclasses import replace
from fractions import Fraction
from typing import Any

import torch

from benchmint.core.errors import UserError
from benchmint.replay.ops import OpUnavailable, resolve, split_args
from benchmint.replay.plan import DATA_DEPENDENT
from benchmint.replay.scale_dims import (
    BIG,
    DATA_ARGS,
    EXPANDS,
    RANGES,
    VIEWS,
    Atom,
    Conflict,
    Dim,
    Exps,
    Labels,
    Point,
    _base,
    _Context,
    _dense_strides,
    _exps_sum,
    _plain,
    _scaled_any,
    view_groups,
)
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
)

# scalar arguments that name a dimension or a position, never a size (``_Pass.scalars``)
NOT_SIZES = {"dim", "dim0", "dim1", "dims", "start_dim", "end_dim", "index", "start", "end", "step", "offset",
             "diagonal", "source", "destination", "dimension", "axis", "reduction", "ignore_index", "padding_idx",
             "dtype", "layout", "memory_format", "correction", "unbiased", "k", "p", "ord"}
MAX_SCALAR_READINGS = 64  # readings of one op's scalar sizes tried on the meta device


class _Pass:
    """One walk over the step on the meta device. ``probe``: factors are the probe primes and every size is
    read (recorded in ``self.entries``); otherwise ``entries`` (from the probe) say what each size carries and
    the factors asked for are applied, giving the new view."""

    def __init__(self, view: TraceView, ctx: _Context, decisions: dict[tuple, int], entries: dict | None = None):
        self.view = view
        self.ctx = ctx
        self.probe = entries is None
        self.f = ctx.probe if self.probe else [ctx.factors[k] for k in ctx.kinds]
        self.entries: dict = {} if entries is None else entries
        self.decisions = decisions
        self.points: list[Point] = []
        self.env: dict[tuple, tuple[torch.Tensor, Labels, TRef]] = {}
        self.by_storage: dict[int, tuple[TRef, torch.Tensor, Labels, TRef]] = {}
        # every tensor made on a storage since it was last allocated, by layout: a view made again inside a
        # composite (a new tensor id on the same storage, shape, strides and offset) is the same tensor
        self.layouts: dict[int, dict[tuple, tuple[torch.Tensor, Labels, TRef]]] = {}
        self.ops: list[OpRec] = []
        self.i = 0
        self.rewritten: Counter = Counter()
        self.quiet = False

    # -- sizes --------------------------------------------------------------------------------------------
    def scaled(self, n: int, e: Exps, what: str = "size", delta: int = 0) -> int:
        v = Fraction(n - delta)
        for f, k in zip(self.f, e, strict=True):
            v *= f ** k
        v += delta
        if v.denominator != 1:
            raise UserError(f"--scale: op #{self.i} {self.view.ops[self.i].name}: {what} {n} times the factor is "
                            f"{float(v):g}, not a whole number; choose a factor that keeps it whole")
        return int(v)

    def dim_size(self, dim: Dim) -> int:
        return math.prod(self.scaled(s, e, delta=d) for s, e, d in dim)

    def decide(self, key: tuple, options: int, what: str) -> int:
        self.points.append(Point(key, self.i, options, what))
        return min(self.decisions.get(key, 0), options - 1)

    def by_value(self, tag: tuple, value: Any, what: str) -> Dim:
        """What a size with no tensor to follow carries: a kind when it equals that kind's recorded size."""
        if self.probe:
            cands = [k for k in self.ctx.kinds if isinstance(value, int) and not isinstance(value, bool)
                     and value in self.ctx.values[k]]
            e = self.ctx.zero()
            if cands:
                c = self.decide(("value", self.i, *tag), len(cands) + 1,
                                f"{what} {value} read as the {' or '.join(cands)} size")
                if c < len(cands):
                    e = self.ctx.exps(cands[c])
            d: Dim = ((value, e, 0),)
            self.entries[("v", self.i, *tag)] = d
            return d
        return self.entries.get(("v", self.i, *tag), ((value, self.ctx.zero(), 0),))

    def keep(self, tag: tuple, d: Dim) -> Dim:
        if self.probe:
            self.entries[("v", self.i, *tag)] = d
            return d
        return self.entries.get(("v", self.i, *tag), d)

    def value(self, x: Any, d: Dim) -> Any:
        """A recorded size ``x`` that follows dimension ``d``, scaled (bounds and -1 stay as they are)."""
        if not isinstance(x, int) or isinstance(x, bool) or x < 0 or x >= BIG:
            return x
        if math.prod(a[0] for a in d) != x:
            return x
        return self.dim_size(d)

    # -- tensors --------------------------------------------------------------------------------------------
    def labels_of_input(self, r: TRef, argname: str, op: OpRec, known: list[tuple[TRef, Labels]]) -> Labels:
        """Labels of a tensor no earlier op produced (see the module docstring)."""
        ctx, k = self.ctx, len(self.ctx.kinds)
        plain = tuple(_plain(n, k) for n in r.shape)
        if self.probe is False:
            return self.entries.get(("in", r.key), plain)
        lab = plain
        if r.dtype is None or not r.shape:
            pass
        elif (twin := self.layouts.get(r.storage_id, {}).get(_layout(r))) is not None:
            lab = twin[1]
        elif not r.dtype.is_floating_point and not r.dtype.is_complex and r.shape[0] == ctx.batch:
            dims = list(plain)
            if "batch" in ctx.kinds:
                dims[0] = ((r.shape[0], ctx.exps("batch"), 0),)
            if "seq" in ctx.kinds and len(r.shape) == 2 and r.shape[1] in ctx.seqs:
                dims[1] = ((r.shape[1], ctx.exps("seq"), 0),)
            lab = tuple(dims)
        elif (base := self.by_storage.get(r.storage_id)) is not None and base[0].shape == r.shape:
            lab = base[2]
        elif (not r.dtype.is_floating_point and "bag" in op.name and argname == "indices"
              and len(r.shape) == 1):
            offs = [lb for t, lb in known if t.shape and t.dtype is not None and not t.dtype.is_floating_point]
            if offs and any(_exps_sum(offs[0][0])):
                lab = ((r.shape[0], _exps_sum(offs[0][0]), 0),)
        elif (base is not None and math.prod(base[0].shape) == math.prod(r.shape) and _scaled_any(base[2])
              and (g := self.quiet_view(base[0].shape, base[2], r.shape)) is not None):
            lab = g  # a view of a tensor the step made, taken inside a composite (a saved activation)
        elif not ctx.is_weight(r):
            same = [lb for t, lb in known if t.shape == r.shape and _scaled_any(lb)]
            if same:
                lab = same[0]
            elif (r.dtype.is_floating_point and len(r.shape) >= 2 and argname in DATA_ARGS
                  and r.shape[0] == ctx.batch and "batch" in ctx.kinds):
                lab = (((r.shape[0], ctx.exps("batch"), 0),), *plain[1:])
            elif any(_scaled_any(lb) for _t, lb in known):
                lab = self.saved_labels(r, argname)
        self.entries[("in", r.key)] = lab
        return lab

    def saved_labels(self, r: TRef, argname: str) -> Labels:
        """Labels of a tensor no rule attributes, read by an op beside scaled tensors (a statistic a composite
        saved for its backward: ``group_norm``'s mean and rstd, ``[N, groups]``, on a storage no op of the view
        made): each dimension equal to the recorded batch or sequence size is read as it or as fixed, and the
        shapes that follow decide (the backward checks ``mean.shape == (N, groups)``); refused when they do not."""
        ctx = self.ctx
        dims: list[Dim] = []
        for q, n in enumerate(r.shape):
            cands = [kind for kind in ctx.kinds if n in ctx.values[kind]]
            e = ctx.zero()
            if cands:
                c = self.decide(("saved", self.i, q, *r.key), len(cands) + 1,
                                f"{argname} {list(r.shape)} (a tensor no op of the step made), its dimension {q} "
                                f"read as the {' or '.join(cands)} size")
                if c < len(cands):
                    e = ctx.exps(cands[c])
            dims.append(((n, e, 0),))
        return tuple(dims)

    def quiet_view(self, a: tuple[int, ...], lab: Labels, b: tuple[int, ...]) -> Labels | None:
        """``view_labels`` when it needs no reading of its own, else None."""
        n = len(self.points)
        self.quiet = True
        try:
            out = self.view_labels(a, lab, b)
        except Conflict:
            return None
        finally:
            self.quiet = False
        return out if len(self.points) == n else None

    def tensor(self, r: TRef, argname: str, op: OpRec, known: list[tuple[TRef, Labels]]) -> tuple[Any, Labels]:
        if r.dtype is None:
            return None, ()
        got = self.env.get(r.key)
        if got is not None and tuple(got[0].shape) == tuple(self.scaled_shape(r.shape, got[1])):
            return got[0], got[1]
        lab = self.labels_of_input(r, argname, op, known)
        twin = self.layouts.get(r.storage_id, {}).get(_layout(r))
        if twin is not None and twin[1] == lab:  # the same tensor as one the step made: its scaled layout too
            self.env[r.key] = (twin[0], lab, replace(r, offset=twin[2].offset, shape=twin[2].shape,
                                                      strides=twin[2].strides, numel=twin[2].numel))
            return twin[0], lab
        shape = self.scaled_shape(r.shape, lab)
        base = self.by_storage.get(r.storage_id)
        new: TRef | None = None
        if base is not None and _scaled_any(lab) and math.prod(base[0].shape) == math.prod(r.shape):
            old, bt, _bl, bnew = base
            off = bnew.offset + self._offset_delta(old, bnew, r.offset - old.offset)
            strides = bnew.strides if base[0].shape == r.shape and base[0].strides == r.strides else \
                _dense_strides(shape, r.strides)
            try:
                t = bt.as_strided(shape, strides, bt.storage_offset() + off - bnew.offset)
                new = replace(r, offset=off, shape=tuple(shape), strides=tuple(strides), numel=math.prod(shape))
            except RuntimeError:
                new = None
        if new is None:
            strides = _dense_strides(shape, r.strides) if shape != r.shape or r.strides is None else r.strides
            extent = 1 + sum((n - 1) * s for n, s in zip(shape, strides, strict=True)) if all(shape) else 0
            t = torch.empty(r.offset + extent, dtype=r.dtype, device="meta").as_strided(shape, strides, r.offset)
            new = replace(r, shape=tuple(shape), strides=tuple(strides), numel=math.prod(shape))
        self.env[r.key] = (t, lab, new)
        self.enter(r, t, lab, new)
        return t, lab

    def enter(self, r: TRef, t: torch.Tensor, lab: Labels, new: TRef) -> None:
        """A tensor no op of the trace produced (a step input, a saved activation) is on its storage as an
        output is: a later view of it (``nn.Linear`` on a ``[B, S, F]`` input keeps the ``[B * S, F]`` view for
        its backward) takes its labels and its scaled layout from it. The first tensor seen on a storage stays
        its base (the one its views are taken from); an op's output replaces it (``output``)."""
        if not r.storage_id:  # (storage-less tensors share id 0)
            return
        self.by_storage.setdefault(r.storage_id, (r, t, lab, new))
        self.layouts.setdefault(r.storage_id, {}).setdefault(_layout(r), (t, lab, new))

    def _offset_delta(self, old: TRef, new: TRef, delta: int) -> int:
        """An offset ``delta`` elements into ``old``, moved to the same index of ``new`` (scaled strides)."""
        if delta == 0 or old.strides is None or new.strides is None:
            return delta
        out = 0
        for d in sorted(range(len(old.shape)), key=lambda d: -old.strides[d]):
            s = old.strides[d]
            if s <= 0:
                continue
            idx, delta = divmod(delta, s)
            out += idx * new.strides[d]
        return out + delta

    def scaled_shape(self, shape: tuple[int, ...], lab: Labels) -> tuple[int, ...]:
        if not lab:
            return tuple(shape)
        return tuple(self.dim_size(d) for d in lab)

    def new_ref(self, r: TRef) -> TRef:
        got = self.env.get(r.key)
        return got[2] if got is not None else r

    # -- the walk ------------------------------------------------------------------------------------------------
    def run(self) -> list[OpRec]:
        specs: dict = {}
        for i, op in enumerate(self.view.ops):
            self.i = i
            self.ops.append(self.op(op, specs))
        return self.ops

    def op(self, op: OpRec, specs: dict) -> OpRec:
        try:
            spec = resolve(op.schema) if op.schema else None
        except OpUnavailable:
            spec = None
        names = [a.name for a in spec.args] if spec else []
        types = [a.type_str for a in spec.args] if spec else []
        known: list[tuple[TRef, Labels]] = []
        vals: list[Any] = []
        labs: dict[int, Any] = {}
        for k, a in enumerate(op.inputs):
            if a.kind == TENSOR and isinstance(a.value, TRef):
                t, lb = self.tensor(a.value, names[k] if k < len(names) else "", op, known)
                known.append((a.value, lb))
                vals.append(t)
                labs[k] = lb
            elif a.kind == TENSOR_LIST:
                ts = []
                for r in a.value:
                    if isinstance(r, TRef):
                        t, lb = self.tensor(r, names[k] if k < len(names) else "", op, known)
                        known.append((r, lb))
                        ts.append(t)
                    else:
                        ts.append(None)
                vals.append(ts)
            elif a.kind == DEVICE or (a.kind == VALUE and k < len(types) and types[k].startswith("Device")):
                vals.append("meta" if a.value is not None else None)
            elif a.kind == UNSUPPORTED:
                vals.append(None)
            else:
                vals.append(a.value)
        new_vals, hints = self.sizes(op, names, types, vals, labs, known)
        for k, v in new_vals.items():
            vals[k] = v
        if spec is not None and "Device" in " ".join(types) and not any(v == "meta" for v in vals):
            for k, ty in enumerate(types):  # a creation op with no device recorded: make it on meta
                if ty.startswith("Device") and k >= len(vals):
                    vals.extend([None] * (k - len(vals)) + ["meta"])
                    break
        for k, v in self.scalars(op, spec, names, types, vals, known, set(new_vals)).items():
            vals[k] = new_vals[k] = v
        inputs = []
        for k, a in enumerate(op.inputs):
            if a.kind == TENSOR and isinstance(a.value, TRef):
                inputs.append(Arg(TENSOR, self.new_ref(a.value)))
            elif a.kind == TENSOR_LIST:
                inputs.append(Arg(TENSOR_LIST, [self.new_ref(r) if isinstance(r, TRef) else None for r in a.value]))
            elif k in new_vals:
                inputs.append(Arg(a.kind, new_vals[k]))
                if new_vals[k] != a.value:
                    self.rewritten[op.name] += 1
            else:
                inputs.append(a)
        self.check_bags(op, names, inputs)
        self.check_masks(op, names, inputs)
        outputs = self.outputs(op, spec, vals, known, hints)
        return replace(op, inputs=inputs, outputs=outputs)

    def check_bags(self, op: OpRec, names: list[str], inputs: list[Arg]) -> None:
        """An op of bags over packed indices (``embedding_bag``: ``indices`` and ``offsets``) whose bags follow the
        scale while its indices' count does not (the count is the sum of the bags' lengths, which the trace does
        not record: scaling the offsets alone would replay more bags over the same indices, silently), or whose
        indices follow a batch scale while its bags do not (the batch read off the packed indices)."""
        if "indices" not in names or "offsets" not in names:
            return
        ki, ko = names.index("indices"), names.index("offsets")
        if max(ki, ko) >= len(op.inputs) or any(op.inputs[k].kind != TENSOR or not isinstance(op.inputs[k].value, TRef)
                                               for k in (ki, ko)):
            return
        bags = inputs[ko].value.shape != op.inputs[ko].value.shape
        packed = inputs[ki].value.shape != op.inputs[ki].value.shape
        if bags and not packed:
            raise Conflict(self.i, f"its bags (offsets, {list(op.inputs[ko].value.shape)}) follow the scale but the "
                                   f"count of the indices they pack ({list(op.inputs[ki].value.shape)}, the sum of the "
                                   "bags' lengths) does not")
        if packed and not bags and self.ctx.kinds == ["batch"]:  # (a longer sequence: longer bags, as many)
            raise Conflict(self.i, f"its packed indices ({list(op.inputs[ki].value.shape)}) follow the batch but its "
                                   f"bags (offsets, {list(op.inputs[ko].value.shape)}) do not")

    def check_masks(self, op: OpRec, names: list[str], inputs: list[Arg]) -> None:
        """A boolean index (``x[mask]``, ``x[mask] = v``) must have the shape of the dimensions it indexes; torch
        checks it when the op runs, not on the meta device, so a mask that does not follow the scale while the
        tensor it indexes does (or the other way round) is caught here."""
        if "indices" not in names or not names or names[0] != "self":
            return
        k = names.index("indices")
        if k >= len(inputs) or inputs[k].kind != TENSOR_LIST or inputs[0].kind != TENSOR:
            return
        me = inputs[0].value
        if not isinstance(me, TRef):
            return
        at = 0
        for r in inputs[k].value:
            if isinstance(r, TRef) and r.dtype in (torch.bool, torch.uint8):
                n = len(r.shape)
                if tuple(r.shape) != tuple(me.shape[at:at + n]):
                    raise Conflict(self.i, f"a boolean index of shape {list(r.shape)} over dimensions "
                                           f"{list(me.shape[at:at + n])} of the tensor it indexes")
                at += n
            else:
                at += 1

    # -- size arguments -------------------------------------------------------------------------------------------
    def sizes(self, op: OpRec, names: list[str], types: list[str], vals: list[Any], labs: dict[int, Any],
              known: list[tuple[TRef, Labels]]) -> tuple[dict[int, Any], dict[int, Labels]]:
        """New values of the op's size arguments; and, for views, expands and slices, the output's labels."""
        base = _base(op.name)
        kz = len(self.ctx.kinds)
        new: dict[int, Any] = {}
        hints: dict[int, Labels] = {}
        self_lab = labs.get(0)
        self_ref = op.inputs[0].value if op.inputs and op.inputs[0].kind == TENSOR else None
        out0 = op.outputs[0].value if op.outputs and op.outputs[0].kind == TENSOR else None
        idx = {n: k for k, n in enumerate(names) if k < len(vals)}

        def apply(k: int, dims: list[Dim]) -> None:
            v = vals[k]
            if isinstance(v, list):
                new[k] = [self.value(x, d) for x, d in zip(v, dims, strict=True)]
            else:
                new[k] = self.value(v, dims[0])

        if base in VIEWS and self_ref is not None and out0 is not None and ("size" in idx or "shape" in idx):
            k = idx.get("size", idx.get("shape"))
            lab = self.view_labels(self_ref.shape, self_lab or (), out0.shape)
            if base == "_reshape_alias" and _scaled_any(lab):
                raise Conflict(self.i, "an as-strided view (_reshape_alias) of a scaled tensor")
            hints[0] = lab
            if isinstance(vals[k], list) and len(vals[k]) == len(lab):
                apply(k, [self.keep((k, j), d) for j, d in enumerate(lab)])
        elif base in EXPANDS and self_ref is not None and "size" in idx and isinstance(vals[idx["size"]], list):
            k = idx["size"]
            sz = vals[k]
            lab_in = self_lab or ()
            off = len(sz) - len(self_ref.shape)
            dims: list[Dim] = []
            for j, x in enumerate(sz):
                d = j - off
                if d >= 0 and (x == -1 or self_ref.shape[d] == x):
                    dims.append(lab_in[d] if d < len(lab_in) else _plain(self_ref.shape[d], kz))
                else:
                    dims.append(self.by_value((k, j), x, f"{op.name} size"))
            hints[0] = tuple(dims)
            apply(k, [self.keep((k, j), d) for j, d in enumerate(dims)])
        elif base in RANGES:
            for n in ("start", "end"):
                if n in idx and isinstance(vals[idx[n]], int):
                    apply(idx[n], [self.by_value((idx[n],), vals[idx[n]], f"{op.name} {n}")])
        elif base in ("slice", "narrow", "split", "split_with_sizes", "unflatten") and self_ref is not None:
            self.along(op, base, idx, vals, self_ref, self_lab or (), apply, hints)
        else:
            for k, (n, ty) in enumerate(zip(names, types, strict=False)):
                if k >= len(vals) or not ty.startswith("SymInt[]") or not isinstance(vals[k], list):
                    continue
                v = vals[k]
                if out0 is not None and tuple(v) == tuple(out0.shape) and (n.endswith(("size", "sizes", "shape"))
                                                                          or not known):
                    dims = []
                    cut = vals[idx["dim"]] if "dim" in idx and v else None
                    cut = cut % len(v) if isinstance(cut, int) and not isinstance(cut, bool) else None
                    for j, x in enumerate(v):
                        d = None
                        for r, lb in known:
                            if len(r.shape) == len(v) and len(lb) == len(v) and r.shape[j] == x:
                                d = lb[j]
                                break
                            # a grad of one rank less, without the dimension the forward op took away
                            # (select_backward's input_sizes: the gradient's shape with ``dim`` put back)
                            jj = j - (cut is not None and j > cut)
                            if (cut is not None and j != cut and len(r.shape) == len(v) - 1 == len(lb)
                                    and r.shape[jj] == x and tuple(r.shape) == tuple(v[:cut] + v[cut + 1:])):
                                d = lb[jj]
                                break
                        dims.append(self.keep((k, j), d) if d is not None and any(_exps_sum(d)) else
                                    self.by_value((k, j), x, f"{op.name} {n}"))
                    hints[0] = tuple(dims)
                    apply(k, dims)
                elif n == "size" and not known:
                    apply(k, [self.by_value((k, j), x, f"{op.name} size") for j, x in enumerate(v)])
        return new, hints

    def scalars(self, op: OpRec, spec: Any, names: list[str], types: list[str], vals: list[Any],
                known: list[tuple[TRef, Labels]], done: set[int]) -> dict[int, Any]:
        """New values of the op's scalar size arguments (``int`` / ``SymInt``: ``native_group_norm``'s ``N`` and
        ``HxW``): one equal to the recorded size of a scaled dimension of the op's tensors may carry it. Each
        reading (every such scalar fixed, or following that dimension) is run on the meta device here, and only
        those the op's own shape checks accept are kept: one is taken, several are decided by the shapes that
        follow (and refused when they do not tell), none is left to fail in ``outputs`` naming the op. Arguments
        that name a dimension or a position (``dim``, ``index``, ...) are not sizes, nor those ``sizes`` read."""
        if not self.probe:
            return {k: self.value(vals[k], d) for k in range(len(vals))
                    if (d := self.entries.get(("v", self.i, "int", k))) is not None}
        if spec is None or op.name in DATA_DEPENDENT or not op.schema:
            return {}
        cands: list[tuple[int, list[Dim]]] = []
        for k, (n, ty) in enumerate(zip(names, types, strict=False)):
            x = vals[k] if k < len(op.inputs) else None
            if (ty.rstrip("?") not in ("int", "SymInt") or n in NOT_SIZES or not isinstance(x, int)
                    or isinstance(x, bool) or x < 2 or op.inputs[k].kind != VALUE or k in done):
                continue
            dims: list[Dim] = []
            for r, lb in known:
                for q, d in enumerate(lb):
                    if q < len(r.shape) and r.shape[q] == x and any(_exps_sum(d)) and d not in dims:
                        dims.append(d)
            if dims:
                cands.append((k, dims))
        if not cands:
            return {}
        if math.prod(len(dims) + 1 for _k, dims in cands) > MAX_SCALAR_READINGS:
            raise Conflict(self.i, f"its scalar sizes can be read {MAX_SCALAR_READINGS} ways or more")
        combos = list(itertools.product(*[[None, *dims] for _k, dims in cands]))
        ok = [c for c in combos if self.runs(spec, vals, {k: self.value(vals[k], d) for (k, _), d
                                                           in zip(cands, c, strict=True) if d is not None})]
        if not ok:  # no reading fits: the op fails in ``outputs``, naming the shapes that disagree
            return {}
        c = 0
        if len(ok) > 1:
            what = ", ".join(f"{names[k]} {vals[k]}" for k, _ in cands)
            c = self.decide(("int", self.i), len(ok), f"its scalar sizes ({what}) each equal a scaled dimension "
                            "of its tensors")
        kz = len(self.ctx.kinds)
        out: dict[int, Any] = {}
        for (k, _), d in zip(cands, ok[c], strict=True):
            d = d if d is not None else _plain(vals[k], kz)
            self.entries[("v", self.i, "int", k)] = d
            out[k] = self.value(vals[k], d)
        return out

    def runs(self, spec: Any, vals: list[Any], change: dict[int, Any]) -> bool:
        """Whether the op runs on the meta device with ``change`` applied to its arguments (on aliases of its
        tensors: an in-place op must not change the pass's own)."""
        def alias(v: Any) -> Any:
            if isinstance(v, torch.Tensor):
                return v.detach()
            if isinstance(v, list):
                return [alias(x) for x in v]
            return v

        trial = [change.get(k, alias(v)) for k, v in enumerate(vals)]
        try:
            pos, kw = split_args(spec, trial)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                spec.overload(*pos, **kw)
        except Exception:  # noqa: BLE001 - the shapes disagree under this reading
            return False
        return True

    def along(self, op: OpRec, base: str, idx: dict[str, int], vals: list[Any], ref: TRef, lab: Labels,
              apply: Any, hints: dict[int, Labels]) -> None:
        """Split sizes and slice bounds: along a scaled dimension a bound at its end follows it and one at a
        fixed distance stays (``[:, :-1]`` is ``S - 1`` long); along another, a bound equal to a recorded batch
        or sequence size is read as one (a buffer sliced to the sequence length)."""
        if "dim" not in idx or not isinstance(vals[idx["dim"]], int) or not ref.shape:
            return
        kz = len(self.ctx.kinds)
        d = vals[idx["dim"]] % len(ref.shape)
        n = ref.shape[d]
        dim = lab[d] if d < len(lab) else _plain(n, kz)
        scaled = any(_exps_sum(dim))
        z = _plain(0, kz)
        if base in ("slice", "narrow"):
            if not scaled:
                for name in ("start", "end", "length"):
                    k = idx.get(name)
                    if k is not None and isinstance(vals[k], int) and not isinstance(vals[k], bool) and vals[k] > 0:
                        apply(k, [self.by_value((k,), vals[k], f"{op.name} {name}")])
                return
            if len(dim) != 1:
                raise Conflict(self.i, f"a slice of a flattened scaled dimension of {n}")
            if "step" in idx and vals[idx["step"]] not in (1, None):
                raise Conflict(self.i, "a strided slice of a scaled dimension")
            if base == "narrow":
                self.narrow(op, idx, vals, d, n, dim, lab, apply, hints)
                return
            k_s, k_e = idx.get("start"), idx.get("end")
            s0 = vals[k_s] if k_s is not None and vals[k_s] is not None else 0
            e0 = vals[k_e] if k_e is not None and vals[k_e] is not None else BIG
            s0 = s0 + n if s0 < 0 else s0
            to_end = e0 >= n
            if not to_end and e0 > 0 and self.probe:
                c = self.decide(("bound", self.i), 2, f"{op.name} end {e0} of a dimension of {n}")
                to_end = c == 1
            elif not to_end and e0 > 0:
                to_end = self.entries.get(("v", self.i, "to_end"), False)
            if self.probe:
                self.entries[("v", self.i, "to_end")] = to_end
            if k_e is not None and 0 < e0 < BIG:
                if to_end and e0 >= n:
                    apply(k_e, [self.keep((k_e,), dim)])
                elif to_end:  # the same distance from the end: end - n, written as n' - (n - end)
                    size, e, delta = dim[0]
                    apply(k_e, [self.keep((k_e,), ((e0, e, delta - (n - e0)),))])
            e1 = min(e0 + n if e0 < 0 else e0, n)
            out_n = max(0, e1 - s0)
            size, e, delta = dim[0]
            if to_end or e0 < 0:
                out = ((out_n, e, delta - (n - out_n)),)
            else:
                out = _plain(out_n, kz)
            if out0 := (op.outputs[0].value if op.outputs and op.outputs[0].kind == TENSOR else None):
                hints[0] = tuple(out if m == d else (lab[m] if m < len(lab) else _plain(x, kz))
                                 for m, x in enumerate(out0.shape))
        elif base in ("split", "split_with_sizes") and scaled:
            k = idx.get("split_size", idx.get("split_sizes"))
            if k is not None:
                v = vals[k]
                if len(dim) != 1 or dim[0][2]:
                    raise Conflict(self.i, f"a split of a flattened or offset scaled dimension of {n}")
                e = dim[0][1]
                apply(k, [self.keep((k, j), ((x, e, 0),)) for j, x in enumerate(v)] if isinstance(v, list)
                      else [self.keep((k,), ((v, e, 0),))])
        elif base == "unflatten" and "sizes" in idx and isinstance(vals[idx["sizes"]], list):
            k = idx["sizes"]
            parts = self.split_dim(dim, list(vals[k]), (k,))
            apply(k, [self.keep((k, j), x) for j, x in enumerate(parts)])
        del z

    def narrow(self, op: OpRec, idx: dict[str, int], vals: list[Any], d: int, n: int, dim: Dim, lab: Labels,
               apply: Any, hints: dict[int, Labels]) -> None:
        """``narrow(dim, start, length)`` along a scaled dimension: a length reaching its end follows it."""
        kz = len(self.ctx.kinds)
        k_l = idx.get("length")
        start = vals[idx["start"]] if "start" in idx and isinstance(vals[idx["start"]], int) else 0
        length = vals[k_l] if k_l is not None else None
        if not isinstance(length, int) or start < 0:
            raise Conflict(self.i, "a narrow of a scaled dimension with bounds that cannot be followed")
        _s, e, delta = dim[0]
        out: Dim = ((length, e, delta - start),) if start + length == n else _plain(length, kz)
        apply(k_l, [self.keep((k_l,), out)])
        if op.outputs and op.outputs[0].kind == TENSOR:
            hints[0] = tuple(out if m == d else (lab[m] if m < len(lab) else _plain(x, kz))
                             for m, x in enumerate(op.outputs[0].value.shape))

    def view_labels(self, a: tuple[int, ...], lab: Labels, b: tuple[int, ...]) -> Labels:
        k = len(self.ctx.kinds)
        if len(lab) != len(a):
            lab = tuple(_plain(n, k) for n in a)
        groups = view_groups(tuple(a), tuple(b))
        if groups is None:
            if any(any(_exps_sum(d)) for d in lab):
                raise Conflict(self.i, f"a view from {list(a)} to {list(b)} that cannot be followed")
            return tuple(_plain(n, k) for n in b)
        out: list[Dim | None] = [None] * len(b)
        for gi, gj in groups:
            atoms: Dim = tuple(x for d in gi for x in lab[d])
            if not gj:
                if any(any(a[1]) for a in atoms):
                    raise Conflict(self.i, "a view drops a scaled dimension")
                continue
            if len(gj) == 1:
                out[gj[0]] = atoms or _plain(b[gj[0]], k)
                continue
            for j, d in zip(gj, self.split_dim(atoms, [b[j] for j in gj], ("view", gj[0])), strict=True):
                out[j] = d
        return tuple(d if d is not None else _plain(b[j], k) for j, d in enumerate(out))

    def split_dim(self, atoms: Dim, sizes: list[int], tag: tuple) -> list[Dim]:
        """Distribute a dimension's atoms over ``sizes`` (a split): along the atoms when they line up, else
        each scaled kind goes to a part of its recorded size (the shapes that follow decide between several)."""
        k = len(self.ctx.kinds)
        out: list[list[Atom]] = [[] for _ in sizes]
        j, acc = 0, 1
        ok = True
        for a in atoms:
            if j >= len(sizes):
                ok = False
                break
            out[j].append(a)
            acc *= a[0]
            while j < len(sizes) and acc == sizes[j]:
                j, acc = j + 1, 1
            if j < len(sizes) and acc > sizes[j]:
                ok = False
                break
        if ok and j == len(sizes):
            return [tuple(x) if x else _plain(sizes[m], k) for m, x in enumerate(out)]
        total = _exps_sum(atoms) if atoms else self.ctx.zero()
        res = [[0] * k for _ in sizes]
        for q, kind in enumerate(self.ctx.kinds):
            c = total[q]
            if c == 0:
                continue
            if c > 1:
                raise Conflict(self.i, f"a dimension holding the {kind} size {c} times is split")
            vals = self.ctx.values[kind]
            exact = [m for m, s in enumerate(sizes) if s in vals]
            multiple = [m for m, s in enumerate(sizes) if m not in exact and any(s % v == 0 for v in vals)]
            cands = exact + multiple
            if not cands:
                raise Conflict(self.i, f"no part of the split {sizes} can hold the {kind} size")
            ch = 0
            if len(cands) > 1 and self.quiet:
                raise Conflict(self.i, "a split with more than one reading")
            if len(cands) > 1:
                ch = self.decide(("split", self.i, *tag, kind), len(cands),
                                 f"split into {sizes}, the {kind} size fitting more than one part")
            res[cands[ch]][q] = 1
        return [((s, tuple(res[m]), 0),) for m, s in enumerate(sizes)]

    # -- outputs -------------------------------------------------------------------------------------------------
    def outputs(self, op: OpRec, spec: Any, vals: list[Any], known: list[tuple[TRef, Labels]],
                hints: dict[int, Labels]) -> list[Arg]:
        result = None
        fallback = spec is None or op.name in DATA_DEPENDENT or not op.schema
        if not fallback:
            try:
                pos, kw = split_args(spec, vals)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = spec.overload(*pos, **kw)
            except Exception as e:  # noqa: BLE001 - a shape error or an op with no meta kernel
                if self.meta_runs_unscaled(op, spec):
                    raise Conflict(self.i, f"its shapes disagree once scaled ({_first(e)})") from None
                fallback = True
        rets = list(result) if isinstance(result, tuple) else [result]
        out: list[Arg] = []
        for j, a in enumerate(op.outputs):
            if a.kind == TENSOR and isinstance(a.value, TRef):
                t = rets[j] if not fallback and j < len(rets) else None
                out.append(Arg(TENSOR, self.output(op, a.value, t, known, hints.get(j), fallback, j)))
            elif a.kind == TENSOR_LIST:
                ts = rets[j] if not fallback and j < len(rets) and isinstance(rets[j], list | tuple) else None
                refs = []
                for m, r in enumerate(a.value):
                    if isinstance(r, TRef):
                        t = ts[m] if ts is not None and m < len(ts) else None
                        refs.append(self.output(op, r, t, known, None, ts is None, (j, m)))
                    else:
                        refs.append(None)
                out.append(Arg(TENSOR_LIST, refs))
            else:
                out.append(a)
        return out

    def meta_runs_unscaled(self, op: OpRec, spec: Any) -> bool:
        """Whether the op runs on the meta device at its recorded shapes (then a failure once scaled is the
        scaling's, not a missing meta kernel)."""
        vals: list[Any] = []
        for k, a in enumerate(op.inputs):
            ty = spec.args[k].type_str if k < len(spec.args) else ""
            if a.kind == TENSOR and isinstance(a.value, TRef):
                vals.append(_meta(a.value))
            elif a.kind == TENSOR_LIST:
                vals.append([_meta(r) if isinstance(r, TRef) else None for r in a.value])
            elif a.kind == DEVICE or ty.startswith("Device"):
                vals.append("meta" if a.value is not None else None)
            elif a.kind == UNSUPPORTED:
                vals.append(None)
            else:
                vals.append(a.value)
        try:
            pos, kw = split_args(spec, vals)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                spec.overload(*pos, **kw)
        except Exception:  # noqa: BLE001
            return False
        return True

    def output(self, op: OpRec, r: TRef, t: Any, known: list[tuple[TRef, Labels]], hint: Labels | None,
               fallback: bool, j: Any) -> TRef:
        if r.dtype is None:
            return r
        kz = len(self.ctx.kinds)
        if fallback or not isinstance(t, torch.Tensor):
            lab = self.entries.get(("out", self.i, j)) if not self.probe else None
            if lab is None:
                lab = self.fallback_labels(op, r, known)
            shape = self.scaled_shape(r.shape, lab)
            strides = _dense_strides(shape, r.strides) if shape != r.shape or r.strides is None else r.strides
            t = torch.empty_strided(shape, strides, dtype=r.dtype, device="meta")
            new = replace(r, shape=shape, strides=strides, numel=math.prod(shape))
            if op.name in DATA_DEPENDENT and shape != r.shape:
                self.rewritten["(data-dependent sizes)"] += 1
        else:
            shape = tuple(t.shape)
            if len(shape) != len(r.shape):
                raise Conflict(self.i, f"an output of rank {len(shape)} where the trace has {len(r.shape)}")
            if self.probe:
                lab = tuple(self.pick(n, n2, hint, m, r, known)
                            for m, (n, n2) in enumerate(zip(r.shape, shape, strict=True)))
            else:
                lab = self.entries[("out", self.i, j)]
                want = self.scaled_shape(r.shape, lab)
                if any(w != x and n and x for w, x, n in zip(want, shape, r.shape, strict=True)):
                    raise Conflict(self.i, f"an output of shape {list(shape)} where the scale gives {list(want)}")
            t = _recorded_layout(r, t, known)
            new = replace(r, shape=shape, strides=tuple(t.stride()), offset=int(t.storage_offset()),
                          numel=math.prod(shape))
        if self.probe:
            self.entries[("out", self.i, j)] = lab
        del kz
        self.env[r.key] = (t, lab, new)
        self.by_storage[r.storage_id] = (r, t, lab, new)
        if r.storage_id:  # (storage-less tensors, sparse or nested, share id 0: no layout tells them apart)
            if not any(x.storage_id == r.storage_id for x, _ in known):  # a new allocation: its views are gone
                self.layouts[r.storage_id] = {}
            self.layouts.setdefault(r.storage_id, {})[_layout(r)] = (t, lab, new)
        return new

    def ratio(self, n2: int, n: int) -> Exps:
        if n == 0 or n2 == 0:  # an optional output left empty on one side (an embedding bag's offset2bag)
            return self.ctx.zero()
        if n2 % n:
            raise Conflict(self.i, f"a dimension of {n} became {n2}, not a multiple of it")
        r = n2 // n
        out = []
        for f in self.f:
            c = 0
            p = int(f)
            while p > 1 and r % p == 0:
                r //= p
                c += 1
            out.append(c)
        if r != 1:
            raise Conflict(self.i, f"a dimension of {n} became {n2}, which the scale does not explain")
        return tuple(out)

    def pick(self, n: int, n2: int, hint: Labels | None, m: int, r: TRef, known: list[tuple[TRef, Labels]]) -> Dim:
        """An output dimension's atoms (recorded ``n``, ``n2`` on the meta device): the view's, expand's or
        slice's when torch agrees, else those of an input dimension of the same sizes (the same position in an
        input of the same shape first), else one atom from the ratio."""
        if hint is not None and m < len(hint) and math.prod(a[0] for a in hint[m]) == n \
                and self.dim_size(hint[m]) == n2:
            return hint[m]
        cands = sorted(known, key=lambda x: x[0].shape != r.shape)
        for t, lb in cands:
            if len(lb) != len(t.shape):
                continue
            order = [m] + [q for q in range(len(lb)) if q != m] if t.shape == r.shape else range(len(lb))
            for q in order:
                if q < len(lb) and t.shape[q] == n and any(_exps_sum(lb[q])) and self.dim_size(lb[q]) == n2:
                    return lb[q]
        for t, lb in cands:  # padded or cut by a fixed amount: S + 1 after a pad, S - 1 after a slice
            for q in range(min(len(lb), len(t.shape))):
                if len(lb[q]) == 1 and any(lb[q][0][1]) and n2 - self.dim_size(lb[q]) == n - t.shape[q] != 0:
                    _s, e, delta = lb[q][0]
                    return ((n, e, delta + n - t.shape[q]),)
        for t, lb in cands:  # consecutive input dimensions merged into one (a flatten): their atoms, in order
            if len(lb) != len(t.shape):
                continue
            for q in range(len(lb)):
                size, atoms = 1, []
                for q2 in range(q, len(lb)):
                    size *= t.shape[q2]
                    atoms.extend(lb[q2])
                    if size >= n:
                        break
                if (size == n and q2 > q and any(_exps_sum(tuple(atoms))) and len(atoms) > 1
                        and self.dim_size(tuple(atoms)) == n2):
                    return tuple(atoms)
        return ((n, self.ratio(n2, n), 0),)

    def fallback_labels(self, op: OpRec, r: TRef, known: list[tuple[TRef, Labels]]) -> Labels:
        kz = len(self.ctx.kinds)
        scaled = [(t, lb) for t, lb in known if lb and any(any(_exps_sum(d)) for d in lb)]
        for t, lb in scaled:
            if t.shape == r.shape:
                return lb
        if not scaled:
            return tuple(_plain(n, kz) for n in r.shape)
        if op.name in DATA_DEPENDENT and r.shape:
            tot = tuple(sum(x) for x in zip(*(_exps_sum(d) for d in scaled[0][1]), strict=True))
            return (((r.shape[0], tot, 0),), *(_plain(n, kz) for n in r.shape[1:]))
        raise Conflict(self.i, "the op has no shape function on the meta device to scale its outputs with")


def _recorded_layout(r: TRef, t: torch.Tensor, known: list[tuple[TRef, Labels]]) -> torch.Tensor:
    """``t`` (an op's output on the meta device) laid out in the dimension order the trace recorded, where the
    op made a new dense tensor and the meta kernel chose another order than the device's kernel did: CPU
    ``scaled_dot_product_attention`` returns ``[B, H, S, D]`` over a ``[B, S, H, D]`` buffer, its meta kernel a
    contiguous one, and the views after it (transpose, reshape) would then have strides the real model's do
    not have (a reshape that copies where the real one is a view). Views and outputs on an input's storage
    keep what the meta kernel gave."""
    if r.strides is None or r.offset or len(r.strides) != len(r.shape) or t._is_view() or t.storage_offset():
        return t
    if any(k.storage_id == r.storage_id for k, _lb in known):
        return t  # in place or out=: the input's own layout
    if tuple(r.strides) != _dense_strides(r.shape, r.strides):
        return t  # not a dense layout the order of its strides describes (overlapping, padded, size-1 dims)
    want = _dense_strides(tuple(t.shape), r.strides)
    if tuple(t.stride()) == want:
        return t
    return torch.empty_strided(tuple(t.shape), want, dtype=t.dtype, device="meta")


def _layout(r: TRef) -> tuple:
    return (r.shape, r.strides, r.offset, r.dtype)


def _meta(r: TRef) -> torch.Tensor:
    strides = r.strides if r.strides is not None else _dense_strides(r.shape, None)
    extent = 1 + sum((n - 1) * s for n, s in zip(r.shape, strides, strict=True)) if all(r.shape) else 0
    return torch.empty(r.offset + extent, dtype=r.dtype or torch.float32, device="meta").as_strided(
        r.shape, strides, r.offset)


def _first(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    msg = lines[0] if lines else type(e).__name__
    return msg if len(msg) <= 140 else msg[:137] + "..."


"""Synthetic tensors for a replay: storages sized from offsets and strides, views at recorded offsets, and
integer contents that the consuming ops accept (indices in range, EmbeddingBag offsets, ``tensor_range``,
fbgemm's jagged lengths, permutations and table-batched embedding geometry).

What a consumer needs of an integer tensor is also needed of the tensor it was made from when only its
shape or integer type changed (``view``, ``to`` ...), or when it is the complete cumsum (lengths summing to
the offsets' end) or a row permutation of it: those needs are carried back to the true inputs of the step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import torch

from benchmint.replay.types import TENSOR, TENSOR_LIST, Arg, OpRec, TRef

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
    values: tuple[int, ...] | None = None  # exactly these values (a table-batched embedding's geometry)
    sums_to: int | None = None  # non-negative lengths summing to this (jagged lengths of that many values)
    permutation: bool = False  # a permutation of range(numel) (fbgemm's permute of rows)
    rows_of: tuple | None = None  # rows per table of the lookup reading this indices tensor (bounds_check)
    longest: int | None = None  # with sums_to: sequence lengths in [1, longest], the longest present, descending
    mask: bool = False  # cast to bool: a padding or attention mask, made up as ones (every position present)
    # exactly this many non-zero (True) elements: what a consumer's recorded output size says (nonzero,
    # argwhere, masked_select, a boolean index), so that the replayed op returns the recorded shape
    nonzeros: int | None = None

    def empty(self) -> bool:
        return self == IntConstraint()

    def empty_but_counted(self) -> bool:
        """Nothing asked of the values but how many are non-zero."""
        return replace(self, nonzeros=None).empty()

    def narrow(self, high: int) -> None:
        if high > 0:
            self.high = high if self.high is None else min(self.high, high)


@dataclass
class Constraints:
    by_key: dict[tuple, IntConstraint] = field(default_factory=dict)
    # float tensors (by key, and their storages: an in-place update or a view reads the same values) whose
    # consumers need positive values: made-up floats are otherwise centred on zero
    positive_keys: set[tuple] = field(default_factory=set)
    positive_storages: set[int] = field(default_factory=set)
    # one-element float tensors that scale a tensor in place (``x.mul_(beta)``: a Python float reaches the op
    # as a 0-dim tensor whose value the trace does not record): made up as this value (:func:`_note_factors`)
    factors: dict[tuple, float] = field(default_factory=dict)

    def needs_positive(self, ref: TRef | None) -> bool:
        if ref is None:
            return False
        return ref.key in self.positive_keys or (ref.storage_id > 0 and ref.storage_id in self.positive_storages)

    def want_positive(self, ref: object) -> None:
        for r in ref if isinstance(ref, list) else [ref]:
            if isinstance(r, TRef) and r.dtype is not None and (r.dtype.is_floating_point or r.dtype.is_complex):
                self.positive_keys.add(r.key)
                if r.storage_id > 0:
                    self.positive_storages.add(r.storage_id)

    def factor(self, ref: TRef | None) -> float | None:
        """The value a one-element float ``ref`` is made up as (None: as any other)."""
        return self.factors.get(ref.key) if ref is not None else None

    def want_factor(self, ref: object, value: float) -> None:
        for r in ref if isinstance(ref, list) else [ref]:
            if (isinstance(r, TRef) and r.numel == 1 and r.dtype is not None
                    and (r.dtype.is_floating_point or r.dtype.is_complex)):
                self.factors[r.key] = value

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
    ops = list(ops)
    named: list[dict[str, object] | None] = []
    rows_by_indices: dict[tuple, list[int]] = {}  # indices key -> rows per table of the lookup that reads them
    upper: dict[tuple, int] = {}  # produced integer tensor -> its values are below this (positions along a dim)
    divisions: list[tuple[str, object, object, object]] = []  # (op base, dividend, divisor, quotient)
    scalings: list[int] = []  # ops that scale a tensor in place
    for op in ops:
        names = arg_names_of(op)
        named.append(None if names is None else _named(op, names))
        if names is None:
            continue
        a = named[-1]
        assert a is not None
        base = op.name.split("::", 1)[-1]
        _note_positions(op, base, a, upper)
        if base in _DIVISIONS and op.name.startswith("aten::"):
            out = op.outputs[0].value if op.outputs and op.outputs[0].kind == TENSOR else None
            divisions.append((base, a.get("self"), a.get("other"), out))
        _note_positive(cons, op, base, a)
        if base in _SCALINGS:
            scalings.append(len(named) - 1)
        if op.name.startswith("fbgemm::"):
            _fbgemm_constraints(cons, base, a, rows_by_indices)
        elif base in ("embedding",):
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
        elif base == "_pack_padded_sequence":
            # lengths of padded sequences: the packed data's rows are their sum, batch_sizes' length the longest
            lengths = a.get("lengths")
            outs = [o.value for o in op.outputs if o.kind == TENSOR]
            if isinstance(lengths, TRef) and len(outs) == 2 and all(isinstance(o, TRef) and o.shape for o in outs):
                c = cons.get(lengths)
                c.sums_to, c.longest = outs[0].shape[0], outs[1].shape[0]
        elif base == "take":
            src = a.get("self")
            if isinstance(src, TRef):
                _bound(cons, a.get("index"), src.numel)
        elif base in ("to", "_to_copy") and op.name.startswith("aten::"):
            _note_mask(cons, op, a.get("self"))
        if op.name.startswith("aten::") and base in _COUNTED:
            _note_nonzeros(cons, op, base, a)
        # recorded tensor_range: respect it for every integer input of this op
        rng = _parse_range(op.tensor_range)
        if rng is not None:
            for arg in op.inputs:
                if arg.kind == TENSOR and _is_int(arg.value.dtype):
                    cons.get(arg.value).forced = rng
    # bounds_check_indices: rows per table as the lookup reading the same indices has them
    for c in list(cons.by_key.values()):
        if c.rows_of is not None:
            rows = rows_by_indices.get(c.rows_of)
            c.rows_of = None
            if rows is not None:
                c.values = tuple(rows)
    _note_factors(cons, ops, named, scalings)
    _carry_back(cons, ops, named)
    _carry_back_positive(cons, ops, named)
    for base, num, den, out in divisions:
        _divisor(cons, base, num, den, out, upper)
    return cons


# float arguments that must hold positive values (made-up ones are otherwise centred on zero): the domain of
# sqrt, log and their kin; a divisor; probabilities and soft targets; a variance (batch norm's running one, an optimizer's second
# moment: Adam's ``sqrt(exp_avg_sq)`` over a negative state is NaN from then on)
_POSITIVE_ARGS: dict[str, tuple[str, ...]] = {
    **{b: ("self",) for b in ("sqrt", "sqrt_", "rsqrt", "rsqrt_", "log", "log_", "log2", "log2_", "log10",
                              "log10_", "log1p", "log1p_", "reciprocal", "reciprocal_", "lgamma", "lgamma_",
                              "digamma", "digamma_", "polygamma", "polygamma_", "mvlgamma", "logit", "logit_",
                              "multinomial", "bernoulli", "poisson", "_standard_gamma", "_sample_dirichlet",
                              "_foreach_sqrt", "_foreach_sqrt_", "_foreach_rsqrt", "_foreach_rsqrt_",
                              "_foreach_log", "_foreach_log_", "_foreach_log2", "_foreach_log2_", "_foreach_log10",
                              "_foreach_log10_", "_foreach_log1p", "_foreach_log1p_", "_foreach_reciprocal",
                              "_foreach_reciprocal_", "_foreach_lgamma", "_foreach_lgamma_")},
    "bernoulli_": ("p",),
    "normal": ("std",),  # a negative standard deviation is an error ("normal expects all elements of std >= 0")
    # a loss over probabilities: a target outside [0, 1] makes the loss unbounded below, and a replayed
    # training step then drives its weights to infinity
    "binary_cross_entropy": ("self", "target"),
    "binary_cross_entropy_backward": ("self", "target"),
    "binary_cross_entropy_with_logits": ("target", "pos_weight"),
    "binary_cross_entropy_with_logits_backward": ("target", "pos_weight"),
    **{b: ("target",) for b in ("cross_entropy_loss", "kl_div", "poisson_nll_loss", "multilabel_soft_margin_loss",
                                "_softmax_cross_entropy")},
    **{b: ("other",) for b in ("div", "div_", "_foreach_div", "_foreach_div_", "true_divide", "true_divide_")},
    **{b: ("tensor2",) for b in ("addcdiv", "addcdiv_", "_foreach_addcdiv", "_foreach_addcdiv_")},
    **{b: ("running_var",) for b in ("native_batch_norm", "_native_batch_norm_legit",
                                      "_native_batch_norm_legit_no_training", "batch_norm", "_batch_norm_impl_index",
                                      "instance_norm", "cudnn_batch_norm", "miopen_batch_norm",
                                      "_batch_norm_with_update", "_batch_norm_no_update")},
    **{b: ("running_var", "save_invstd", "save_var") for b in ("native_batch_norm_backward",
                                                              "batch_norm_backward",
                                                              "cudnn_batch_norm_backward",
                                                              "_batch_norm_impl_index_backward")},
    **{b: ("exp_avg_sqs", "max_exp_avg_sqs") for b in ("_fused_adam_", "_fused_adamw_", "_fused_adam",
                                                        "_fused_adamw")},
    "_fused_adagrad_": ("state_sums",),
}


# the factor of an in-place scaling, made up as :func:`_note_factors` says
_SCALINGS: dict[str, tuple[str, ...]] = {b: ("other",) for b in ("mul_", "div_", "true_divide_", "_foreach_mul_",
                                                                  "_foreach_div_")}


def _storages(ref: object) -> set[int]:
    return {r.storage_id for r in (ref if isinstance(ref, list) else [ref]) if isinstance(r, TRef) and r.storage_id > 0}


# the weight of what an in-place accumulation adds (``addcmul_(g, g, value=1 - beta2)``, ``add_(g, alpha=...)``)
_ADDED_WEIGHT = {"add_": "alpha", "sub_": "alpha", "addcmul_": "value", "addcdiv_": "value", "lerp_": "weight",
                 "_foreach_add_": "alpha", "_foreach_addcmul_": "value", "_foreach_addcdiv_": "value",
                 "_foreach_lerp_": "weight"}


def _note_factors(cons: Constraints, ops: list[OpRec], named: list[dict[str, object] | None],
                  scalings: list[int]) -> None:
    """The made-up factor of each in-place scaling (:data:`_SCALINGS`). The state it scales is carried from one
    replayed iteration to the next, so a factor drawn in [0.05, 0.95] shrank it geometrically: within tens of
    iterations a replayed AdamW step's weights (``mul_(1 - lr * wd)``) and second moment were denormal, and its
    sqrt ran 11x slower than the original's. So a factor is near one, as the recorded ones are:

    * 1.0 for a plain scaling (a weight decay: 0.99999 recorded);
    * where the next op accumulates into the scaled tensor in place, a moving average (``exp_avg_sq.mul_(beta2)
      .addcmul_(g, g, value=1 - beta2)``, ``buf.mul_(momentum).add_(grad)``), 1.0 would sum every increment (a
      replayed SGD step with momentum diverged to inf) and a small factor decays the entries that get none (a
      dead unit's second moment went denormal): one minus the weight added when that is below one (Adam's
      0.001 gives its 0.999), else any made-up scalar's (SGD's ``add_(grad)`` says nothing of its momentum:
      0.9 made a replayed CNN's training step diverge within 70 iterations, the made-up factors within 300)."""
    for i in scalings:
        a = named[i]
        assert a is not None
        value = 1.0
        nxt = named[i + 1] if i + 1 < len(ops) else None
        scaled = _storages(a.get("self"))
        if nxt is not None and scaled and scaled & _storages(nxt.get("self")):
            base = ops[i + 1].name.split("::", 1)[-1]
            if base.endswith("_"):  # (every op of _ADDED_WEIGHT is in place)
                w = nxt.get(_ADDED_WEIGHT.get(base, ""))
                if not (isinstance(w, float | int) and 0 < w < 1):
                    continue
                value = 1.0 - w
        for arg in _SCALINGS[ops[i].name.split("::", 1)[-1]]:
            cons.want_factor(a.get(arg), value)


def _note_positive(cons: Constraints, op: OpRec, base: str, a: dict[str, object]) -> None:
    """Note the float inputs of ``op`` that must be positive (:data:`_POSITIVE_ARGS`; a ``pow`` whose
    exponent is not a whole number)."""
    for arg in _POSITIVE_ARGS.get(base, ()):
        cons.want_positive(a.get(arg))
    if base in ("pow", "pow_", "_foreach_pow", "_foreach_pow_", "float_power", "float_power_"):
        e = a.get("exponent")
        if not (isinstance(e, int) or (isinstance(e, float) and e.is_integer())):
            cons.want_positive(a.get("self"))


# integer division and remainder: a divisor the replay makes up must not be zero (a scalar divisor, ``x // 2``,
# is recorded as a 0-dim tensor without its value)
_DIVISIONS = {"floor_divide", "floor_divide_", "div", "div_", "remainder", "remainder_", "fmod", "fmod_"}
# ops whose integer output (index ``j`` of the outputs) holds positions along the input's dim ``dim`` arg
_POSITIONS = {"argsort": 0, "sort": 1, "topk": 1, "argmax": 0, "argmin": 0, "kthvalue": 1, "mode": 1,
              "max": 1, "min": 1, "median": 1, "cummax": 1, "cummin": 1}


def _note_positions(op: OpRec, base: str, a: dict[str, object], upper: dict[tuple, int]) -> None:
    """Note the bound of a produced integer tensor whose values are positions: sort and top-k indices
    (below the size of the sorted dim), ``arange(n)`` and ``randperm(n)`` (below n)."""
    if not op.outputs:
        return
    if base in _SAME_VALUES and op.name.startswith("aten::"):  # positions seen through a view or a copy
        src, out = a.get("self"), op.outputs[0].value if op.outputs[0].kind == TENSOR else None
        if isinstance(src, TRef) and isinstance(out, TRef) and src.key in upper and _is_int(out.dtype):
            upper[out.key] = upper[src.key]
        return
    if base in ("arange", "randperm"):
        out = op.outputs[0].value if op.outputs[0].kind == TENSOR else None
        if isinstance(out, TRef) and _is_int(out.dtype) and out.numel > 0:
            end = a.get("end") if base == "arange" else None  # arange(start, end[, step]) reaches end - 1
            upper[out.key] = max(out.numel, end) if type(end) is int else out.numel
        return
    j = _POSITIONS.get(base)
    src = a.get("self")
    if j is None or len(op.outputs) <= j or op.outputs[j].kind != TENSOR or not isinstance(src, TRef):
        return
    out = op.outputs[j].value
    d = a.get("dim", -1 if base in ("argsort", "sort", "topk") else None)
    if isinstance(out, TRef) and _is_int(out.dtype):
        n = src.numel if d is None else _dim(src, d) if isinstance(d, int) else None
        if n:
            upper[out.key] = n


def _divisor(cons: Constraints, base: str, num: object, den: object, out: object, upper: dict[tuple, int]) -> None:
    """What an integer divisor the replay makes up holds: never zero; for ``positions // k`` whose quotient
    indexes something (a mixture of experts' slot // top-k -> token), the k that maps the dividend's range onto
    the quotient's valid range; for ``x % k`` feeding an index, that index's range."""
    if not (isinstance(den, TRef) and _is_int(den.dtype)) or den.numel == 0:
        return
    c = cons.get(den)
    if c.values is not None or c.forced is not None:
        return
    need = cons.by_key.get(out.key) if isinstance(out, TRef) else None
    high = need.high if need is not None else None
    d = 1
    if base.startswith(("remainder", "fmod")):
        d = high or 1
    elif high and isinstance(num, TRef) and num.key in upper:
        d = max(1, -(-upper[num.key] // high))
    if den.numel == 1:
        c.values = (d,)
    elif base.startswith(("remainder", "fmod")):
        c.forced = (1, max(1, d))  # any k up to the index's range keeps x % k in it
    else:
        c.forced = (d, d)  # a smaller k in any element would run that element's quotient past the range


# ops whose output holds the input's integer values in the same order (only the shape or the type changes)
_SAME_VALUES = {"view", "reshape", "_reshape_alias", "_unsafe_view", "flatten", "contiguous", "clone", "detach",
                "detach_", "alias", "to", "_to_copy", "lift_fresh", "lift_fresh_copy", "squeeze", "unsqueeze",
                "view_as", "reshape_as", "ravel"}


# ops whose recorded output size counts the non-zero elements of an input: nonzero / argwhere ([K, ndim]),
# masked_select ([K] of the mask broadcast over self), a boolean index (K along the mask's first dimension)
_COUNTED = {"nonzero", "argwhere", "masked_select", "index", "_unsafe_index"}


def _note_nonzeros(cons: Constraints, op: OpRec, base: str, a: dict[str, object]) -> None:
    """An input whose number of non-zero elements a consumer's recorded output size gives: made up with exactly
    that many (:func:`fill`), so the replayed op computes and returns what the original did (a boolean index
    over a made-up mask of random halves, or of all ones, selects another number of rows than recorded)."""
    out = op.outputs[0].value if op.outputs and op.outputs[0].kind == TENSOR else None
    if not isinstance(out, TRef) or not out.shape:
        return
    if base in ("nonzero", "argwhere"):
        src = a.get("self")
        if _countable(src) and len(out.shape) == 2 and out.shape[1] == max(len(src.shape), 1):
            cons.get(src).nonzeros = out.shape[0]
    elif base == "masked_select":
        src, mask = a.get("self"), a.get("mask")
        if (isinstance(src, TRef) and _countable(mask) and mask.numel
                and tuple(mask.shape) == tuple(torch.broadcast_shapes(src.shape, mask.shape))):
            cons.get(mask).nonzeros = out.shape[0]
    else:
        src, lst = a.get("self"), a.get("indices")
        if not isinstance(src, TRef) or not isinstance(lst, list):
            return
        given = [(k, r) for k, r in enumerate(lst) if r is not None]
        if len(given) != 1:
            return
        k, r = given[0]
        if (isinstance(r, TRef) and r.dtype == torch.bool and r.shape
                and tuple(src.shape[k:k + len(r.shape)]) == tuple(r.shape) and len(out.shape) > k):
            cons.get(r).nonzeros = out.shape[k]


def _countable(r: object) -> bool:
    """A tensor made up through the integer constraints (an integer or a boolean one)."""
    return isinstance(r, TRef) and (r.dtype == torch.bool or _is_int(r.dtype))


def _note_mask(cons: Constraints, op: OpRec, src: object) -> None:
    """An integer tensor cast to bool is a mask (a tokenizer's ``attention_mask`` of ones and zeros, turned into
    the attention's boolean mask): made up as ones, every position present. Zeros, the made-up value of an
    integer nothing else constrains, would mask every position, and attention over nothing takes a degenerate
    path of the kernel (scaled_dot_product_attention ran 25% faster on a BERT step's fully masked rows)."""
    out = op.outputs[0].value if op.outputs and op.outputs[0].kind == TENSOR else None
    if isinstance(src, TRef) and _is_int(src.dtype) and isinstance(out, TRef) and out.dtype == torch.bool:
        cons.get(src).mask = True


# ops whose output holds some of the input's values, or repeats them: a bound on the values carries back, a
# total or an exact list does not
_SOME_VALUES = {"slice", "select", "narrow", "expand", "expand_as", "t", "transpose", "permute", "movedim"}


def _carry_back(cons: Constraints, ops: list[OpRec], named: list[dict[str, object] | None]) -> None:
    """Carry each produced integer tensor's needs back to the tensor it was made from, last op first (so
    chains reach the step's true inputs): through value-preserving ops, fbgemm's complete cumsum (offsets
    ending at N come from lengths summing to N) and permute_2D_sparse_data (lengths and values move whole)."""
    for op, a in zip(reversed(ops), reversed(named), strict=True):
        if a is None or not op.outputs:
            continue
        base = op.name.split("::", 1)[-1]
        out = op.outputs[0].value if op.outputs[0].kind == TENSOR else None
        if not isinstance(out, TRef):
            continue
        if base in _SAME_VALUES and op.name.startswith("aten::"):
            src = a.get("self")
            c = cons.by_key.get(out.key)
            if (c is not None and isinstance(src, TRef) and src.key != out.key and src.numel == out.numel
                    and _is_int(src.dtype) and _is_int(out.dtype)):
                _inherit(cons, src, c)
            elif (c is not None and c.nonzeros is not None and isinstance(src, TRef) and src.key != out.key
                  and src.numel == out.numel and _countable(src) and _countable(out)):
                # a cast to or from bool (an integer attention mask turned boolean) keeps which elements are
                # non-zero, and only that carries (a bound on a boolean index is not one on the integers)
                _inherit(cons, src, IntConstraint(nonzeros=c.nonzeros))
        elif base in _SOME_VALUES and op.name.startswith("aten::"):
            # a part of the input, or its values repeated: the part's range and mask-ness hold for the whole
            # (a model's position-ids buffer, sliced to the sequence and read by the position embedding)
            src, c = a.get("self"), cons.by_key.get(out.key)
            if (c is not None and isinstance(src, TRef) and src.key != out.key and _is_int(src.dtype)
                    and _is_int(out.dtype) and (c.high is not None or c.mask)):
                _inherit(cons, src, IntConstraint(high=c.high, mask=c.mask))
        elif base == "sort" and op.name.startswith("aten::"):
            # the sorted values are the input's in another order: a range, a total and a longest carry over
            src, c = a.get("self"), cons.by_key.get(out.key)
            if (c is not None and isinstance(src, TRef) and src.numel == out.numel and _is_int(src.dtype)
                    and c.values is None and not c.permutation):
                _inherit(cons, src, IntConstraint(high=c.high, sums_to=c.sums_to, longest=c.longest,
                                                  forced=c.forced))
        elif op.name == "fbgemm::asynchronous_complete_cumsum":
            src, c = a.get("t_in"), cons.by_key.get(out.key)
            if isinstance(src, TRef) and c is not None and c.offsets_of is not None:
                _inherit(cons, src, IntConstraint(sums_to=c.offsets_of))
        elif op.name in ("fbgemm::permute_2D_sparse_data", "fbgemm::permute_1D_sparse_data"):
            for j, arg in ((0, "lengths"), (1, "values")):
                o = op.outputs[j].value if len(op.outputs) > j and op.outputs[j].kind == TENSOR else None
                src = a.get(arg)
                c = cons.by_key.get(o.key) if isinstance(o, TRef) else None
                if c is not None and isinstance(src, TRef) and _is_int(src.dtype):
                    # a permutation keeps the total and each value: the sum and the index range carry over
                    _inherit(cons, src, IntConstraint(sums_to=c.sums_to, high=c.high))


def _carry_back_positive(cons: Constraints, ops: list[OpRec], named: list[dict[str, object] | None]) -> None:
    """A float tensor that must be positive (or a factor near one) needs it of the tensor it is a copy or
    reshape of (last op first, so chains reach the step's true inputs)."""
    for op, a in zip(reversed(ops), reversed(named), strict=True):
        if a is None or not op.outputs or not op.name.startswith("aten::"):
            continue
        if op.name.split("::", 1)[-1] not in _SAME_VALUES:
            continue
        out = op.outputs[0].value if op.outputs[0].kind == TENSOR else None
        if isinstance(out, TRef) and cons.needs_positive(out):
            cons.want_positive(a.get("self"))
        f = cons.factor(out) if isinstance(out, TRef) else None
        if f is not None:
            cons.want_factor(a.get("self"), f)


def _inherit(cons: Constraints, src: TRef, c: IntConstraint) -> None:
    """``src`` needs what ``c`` asks, unless its own consumers already asked for something."""
    mine = cons.by_key.get(src.key)
    if mine is None or mine.empty():
        cons.by_key[src.key] = replace(c)
        return
    if c.high is not None and mine.values is None:
        mine.narrow(c.high)
    if c.nonzeros is not None and mine.nonzeros is None:
        mine.nonzeros = c.nonzeros


def _tbe_geometry(a: dict[str, object]) -> tuple[list[int], list[int], list[int]] | None:
    """(D per feature, rows per feature, offset of each feature's table in the packed weights) for a
    table-batched embedding lookup whose geometry tensors were not recorded: the tables share the packed
    weights' size alike, each feature its own table."""
    d_off, w_off = a.get("D_offsets"), a.get("weights_offsets")
    weights = a.get("dev_weights")
    uvm = a.get("uvm_weights")
    if isinstance(weights, TRef) and weights.numel == 0 and isinstance(uvm, TRef):
        weights = uvm
    total_D = a.get("total_D")
    if not (isinstance(d_off, TRef) and isinstance(weights, TRef) and isinstance(total_D, int)):
        return None
    T = d_off.numel - 1
    if T <= 0 or total_D < T:
        return None
    if isinstance(w_off, TRef) and w_off.numel != T:
        return None
    dims = [total_D // T + (1 if t < total_D % T else 0) for t in range(T)]
    rows = [weights.numel // total_D] * T
    rows[-1] = (weights.numel - sum(r * d for r, d in zip(rows[:-1], dims[:-1], strict=True))) // dims[-1]
    if min(rows) <= 0:
        return None
    offsets = [0]
    for r, d in zip(rows[:-1], dims[:-1], strict=True):
        offsets.append(offsets[-1] + r * d)
    return dims, rows, offsets


def _fbgemm_constraints(cons: Constraints, base: str, a: dict[str, object],
                        rows_by_indices: dict[tuple, list[int]]) -> None:
    if base in ("permute_2D_sparse_data", "permute_1D_sparse_data"):
        perm, lengths, values = a.get("permute"), a.get("lengths"), a.get("values")
        if isinstance(lengths, TRef) and lengths.shape:
            n_rows = lengths.shape[0]
            if isinstance(perm, TRef):
                c = cons.get(perm)
                if perm.numel == n_rows:
                    c.permutation = True
                else:
                    c.narrow(n_rows)
            if isinstance(values, TRef):
                cons.get(lengths).sums_to = values.numel
    elif base == "bounds_check_indices":
        rows, idx, off = a.get("rows_per_table"), a.get("indices"), a.get("offsets")
        if isinstance(idx, TRef) and isinstance(off, TRef):
            c = cons.get(off)
            c.offsets_of, c.include_last = idx.numel, True
        if isinstance(rows, TRef) and isinstance(idx, TRef):
            cons.get(rows).rows_of = idx.key
    elif base == "dense_embedding_codegen_lookup_function" or (
            base.startswith("split_embedding_codegen_lookup_") and base.endswith("_function")):
        idx, off = a.get("indices"), a.get("offsets")
        if isinstance(idx, TRef) and isinstance(off, TRef):
            c = cons.get(off)
            c.offsets_of, c.include_last = idx.numel, True
        geo = _tbe_geometry(a)
        if geo is None:
            return
        dims, rows, w_offsets = geo
        d_offsets = [0]
        for d in dims:
            d_offsets.append(d_offsets[-1] + d)
        h_cumsum = [0]
        for r in rows:
            h_cumsum.append(h_cumsum[-1] + r)
        exact = {"D_offsets": d_offsets, "weights_offsets": w_offsets, "hash_size_cumsum": h_cumsum,
                 "weights_placements": [0] * len(rows)}
        uvm = a.get("uvm_weights")
        dev = a.get("dev_weights")
        if isinstance(dev, TRef) and dev.numel == 0 and isinstance(uvm, TRef) and uvm.numel > 0:
            exact["weights_placements"] = [1] * len(rows)  # all tables in managed memory
        for name, vals in exact.items():
            r = a.get(name)
            if isinstance(r, TRef) and r.numel == len(vals):
                cons.get(r).values = tuple(vals)
        if isinstance(idx, TRef):
            cons.get(idx).narrow(min(rows))
            rows_by_indices[idx.key] = rows


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


_BIG = 1 << 16  # float tensors above this many elements are filled by repeating a block of random values
_BLOCK = 1 << 20
_blocks: dict[int, tuple[torch.Generator, torch.Tensor]] = {}


def _random_block(gen: torch.Generator) -> torch.Tensor:
    """2 x _BLOCK random values of magnitude in [0.05, 0.95] and random sign, drawn once per generator (one
    per plan): centred on zero, and never near it (no denormal, whatever the scale)."""
    got = _blocks.get(id(gen))
    if got is None or got[0] is not gen:
        if len(_blocks) >= 8:
            _blocks.clear()
        mag = torch.rand(2 * _BLOCK, generator=gen).mul_(0.9).add_(0.05)
        sign = torch.randint(0, 2, (2 * _BLOCK,), generator=gen).mul_(2).sub_(1)
        got = _blocks[id(gen)] = (gen, mag.mul_(sign))
    return got[1]


def float_scale(shape: tuple[int, ...] | torch.Size, positive: bool) -> float | None:
    """How made-up float values of a tensor of ``shape`` are spread: None for magnitudes in [0.05, 0.95]
    (a tensor whose consumers need positive values, or a scalar: a step count, a learning rate, a loss
    scale), else the bound of values centred on zero, ``1/sqrt(fan_in)`` as torch initialises a weight
    (fan-in: the elements of one row, ``prod(shape[1:])``; 1 for a vector). All-positive weights and inputs
    made every layer's output grow with its width, and a replayed training step's weights reached infinity
    within a few iterations (its ``sqrt`` and ``exp`` over infinity and NaN then ran 4-350x slower)."""
    if positive or len(shape) == 0 or int(torch.Size(shape).numel()) == 1:
        return None
    fan_in = 1
    for n in shape[1:]:
        fan_in *= int(n)
    return 1.0 / max(fan_in, 1) ** 0.5


def _scaled(block: torch.Tensor, scale: float | None) -> torch.Tensor:
    return block.abs() if scale is None else block.mul(scale)


def fill(t: torch.Tensor, ref: TRef | None, cons: Constraints, gen: torch.Generator) -> None:
    """Fill a freshly made tensor with values its consumers accept (``ref``: the recorded tensor it stands
    for, None for one the replay made up). Floats: see :func:`float_scale`."""
    if t.numel() == 0:
        return
    dtype = t.dtype
    c = cons.by_key.get(ref.key) if ref is not None else None
    if c is not None and c.nonzeros is not None and 0 <= c.nonzeros <= t.numel() and (dtype == torch.bool or c.mask
                                                                                   or c.empty_but_counted()):
        t.copy_(_with_nonzeros(t.shape, c.nonzeros, dtype, gen))
        return
    if dtype == torch.bool:
        t.copy_(torch.rand(t.shape, generator=gen) < 0.5)
        return
    f = cons.factor(ref) if t.numel() == 1 else None
    if f is not None and (dtype.is_floating_point or dtype.is_complex):
        t.fill_(f)
        return
    if dtype.is_floating_point or dtype.is_complex:
        scale = float_scale(ref.shape if ref is not None else t.shape, cons.needs_positive(ref))
        with torch.inference_mode():
            if t.numel() > _BIG and t.is_contiguous():
                # a large tensor (a model's weights and optimizer state, a recommendation model's embeddings:
                # gigabytes in all): a block of random values repeated from a random start, so that filling it
                # costs a memory copy rather than a random number per element
                start = int(torch.randint(0, _BLOCK, (1,), generator=gen))
                block = _scaled(_random_block(gen)[start : start + _BLOCK], scale)
                flat = t.view(-1)
                # one copy from the block seen as repeated rows (a Python loop of 1-MiB copies cost twice as
                # much: most of the time of planning a large trace goes into touching its inputs' pages)
                rows, tail = divmod(flat.numel(), _BLOCK)
                if rows:
                    flat[: rows * _BLOCK].view(rows, _BLOCK).copy_(block.expand(rows, _BLOCK))
                if tail:
                    flat[rows * _BLOCK :].copy_(block[:tail])
                return
            if t.numel() <= _BLOCK:
                # a slice of the same block from a random start (a random number per element took about a
                # second of planning GPT-2, for its thousands of small tensors)
                start = int(torch.randint(0, _BLOCK, (1,), generator=gen))
                t.copy_(_scaled(_random_block(gen)[start : start + t.numel()], scale).view(t.shape))
                return
            mag = torch.rand(t.shape, generator=gen, dtype=torch.float32).mul_(0.9).add_(0.05)
            if scale is not None:
                mag.mul_(torch.randint(0, 2, t.shape, generator=gen).mul_(2).sub_(1)).mul_(scale)
            t.copy_(mag)
        return
    if c is not None and c.values is not None and len(c.values) == t.numel():
        t.copy_(torch.tensor(c.values).reshape(t.shape))
        return
    if c is not None and c.permutation:
        t.copy_(torch.randperm(t.numel(), generator=gen).reshape(t.shape))
        return
    if c is not None and c.sums_to is not None and c.longest is not None:
        t.copy_(_sequence_lengths(t.numel(), c.sums_to, c.longest, gen).reshape(t.shape))
        return
    if c is not None and c.sums_to is not None:
        # non-negative lengths summing to the total: the gaps between sorted cut points
        n, total = t.numel(), max(c.sums_to, 0)
        cuts = torch.sort(torch.randint(0, total + 1, (n - 1,), generator=gen)).values
        edges = torch.cat([torch.tensor([0]), cuts, torch.tensor([total])])
        t.copy_((edges[1:] - edges[:-1]).reshape(t.shape))
        return
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
    if c is not None and c.mask and (c.high is None or c.high > 1):
        t.fill_(1)
        return
    if c is not None and c.high is not None:
        t.copy_(torch.randint(0, c.high, t.shape, generator=gen))
        return
    t.zero_()  # zero is a valid index and a neutral offset for any consumer we do not know


def _with_nonzeros(shape: tuple[int, ...] | torch.Size, k: int, dtype: torch.dtype,
                   gen: torch.Generator) -> torch.Tensor:
    """Ones (True) at exactly ``k`` of the positions, zeros elsewhere. With rows (two or more dimensions: a
    padding mask's batch of sequences) each row holds a leading run of ones, the ``k`` shared as evenly as the
    rows allow, as a tokenizer's right-padded mask has them; a vector holds its ``k`` at random positions (a
    routing or selection mask)."""
    n = math.prod(shape)
    if len(shape) >= 2 and shape[-1] > 0:
        rows, width = n // shape[-1], shape[-1]
        per = torch.full((rows,), k // rows, dtype=torch.long)
        per[: k % rows] += 1
        out = torch.arange(width).expand(rows, width) < per.unsqueeze(1)
    else:
        out = torch.zeros(n, dtype=torch.bool)
        out[torch.randperm(n, generator=gen)[:k]] = True
    return out.reshape(shape).to(dtype)


def _sequence_lengths(n: int, total: int, longest: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` lengths in [1, longest], descending, the first ``longest``, summing to ``total`` (as near as the
    bounds allow): padded sequences that pack into the recorded data and batch sizes."""
    longest = max(longest, 1)
    out = torch.ones(n, dtype=torch.long)
    out[0] = longest
    room = total - int(out.sum())
    if n > 1 and room > 0:
        # spread what is left at random over the others, none past the longest
        weights = torch.rand(n - 1, generator=gen) + 0.05
        add = torch.minimum((weights / weights.sum() * room).floor().long(), torch.full((n - 1,), longest - 1))
        out[1:] += add
        left = total - int(out.sum())
        k = 1
        while left > 0 and k < n:  # the rounding's remainder, first come first served
            step = min(left, longest - int(out[k]))
            out[k] += step
            left -= step
            k += 1
    return torch.sort(out, descending=True).values


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
                pool: StoragePool | None = None, fill_values: bool = True) -> torch.Tensor:
    """A standalone (or pooled) tensor of the recorded shape, strides and dtype with valid contents
    (``fill_values=False``: allocated only, for a tensor whose contents no replayed op reads)."""
    if pool is not None and ref.storage_id > 0 and cons.factor(ref) is None:
        # (a factor made up near one has a storage of its own: the recorded storage id of a short-lived scalar is
        # reused by the next one at that address, which the pool would give the same storage, and whichever
        # was filled last would set both)
        t, _ = pool.view(ref)
    else:
        from benchmint.replay.types import _contiguous

        strides = ref.strides if ref.strides is not None and len(ref.strides) == len(ref.shape) else None
        size = max(ref.extent(), 1)
        base = torch.empty(size, dtype=ref.dtype, device=device)
        t = base.as_strided(ref.shape, strides or _contiguous(ref.shape), 0)
    if not fill_values:
        return t
    if t.device.type == "cpu" and t.is_contiguous():
        fill(t, ref, cons, gen)  # in place: no second copy of a large tensor
        return t
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


def arg_refs(a: Arg) -> list[TRef]:
    """The tensors of one argument: a tensor, or a tensor list's (empty entries left out)."""
    refs = [a.value] if a.kind == TENSOR else (a.value if a.kind == TENSOR_LIST else [])
    return [r for r in refs if isinstance(r, TRef)]


def all_refs(op: OpRec) -> Iterable[TRef]:
    for a in (*op.inputs, *op.outputs):
        yield from arg_refs(a)


def last_reads(ops: list[OpRec]) -> dict[tuple, int]:
    """Per tensor key, the index of the last op that reads it; for a tensor an op produced, the last op that
    reads any tensor on its storage while that storage lasts, and never before the op that produced it (a
    tensor no op reads dies where it is made).

    A backward op reads what its forward saved through a tensor of another id on the same storage (autograd
    unpacks a saved tensor as a new tensor object): the produced tensor stays alive until then, and the
    reader is a view of it, not a new input made up with values of its own (a log-softmax backward given a
    made-up output, a threshold or convolution backward given made-up activations, computes gradients that
    are not the step's; SGD on them made a CNN's weights grow 1e5-fold in 100 replayed iterations). A
    recorded storage id is an allocator address, reused once a storage is freed: an op that writes a new
    tensor to an address it does not read starts a new storage there."""
    out: dict[tuple, int] = {}
    current: dict[int, int] = {}  # storage id -> the storage (its index in ``end``) now at that address
    end: list[int] = []  # per storage, the last op that reads a tensor on it
    on: dict[tuple, set[int]] = {}  # produced tensor key -> the storages it was produced on
    for i, op in enumerate(ops):
        read: set[int] = set()
        for a in op.inputs:
            for r in arg_refs(a):
                out[r.key] = i
                if not has_storage(r):
                    continue
                read.add(r.storage_id)
                s = current.get(r.storage_id)
                if s is not None:
                    end[s] = i
        for a in op.outputs:
            for r in arg_refs(a):
                out[r.key] = max(out.get(r.key, -1), i)
                if not has_storage(r):
                    continue
                if r.storage_id not in read or r.storage_id not in current:
                    current[r.storage_id] = len(end)
                    end.append(i)
                    read.add(r.storage_id)  # the op's other outputs on this address share the new storage
                on.setdefault(r.key, set()).add(current[r.storage_id])
    for k, ss in on.items():
        out[k] = max(out.get(k, -1), *(end[s] for s in ss))
    return out


def has_storage(r: TRef) -> bool:
    """A tensor with an address of its own: the trace gives storage id 0 to an undefined tensor and to one
    without storage (sparse, nested, a wrapper subclass), which all share it."""
    return r.storage_id > 0 and r.dtype is not None

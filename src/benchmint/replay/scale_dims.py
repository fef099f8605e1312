"""The vocabulary of :mod:`benchmint.replay.scale`: what a dimension carries (atoms of batch and sequence
sizes), how views regroup dimensions, and what the step's batch and sequence sizes are."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from benchmint.core.errors import UserError
from benchmint.replay.ops import OpUnavailable, resolve
from benchmint.replay.types import TENSOR, TENSOR_LIST, Arg, OpRec, TraceView, TRef

KINDS = ("batch", "seq")
PROBE = {"batch": 2, "seq": 3}  # distinct primes: an output's size ratio says which dimensions it carries
WEIGHT_ARGS = {"weight", "bias", "weight_ih", "weight_hh", "bias_ih", "bias_hh", "params", "running_mean",
               "running_var"}
DATA_ARGS = {"input", "self"}
VIEWS = {"view", "reshape", "_unsafe_view", "view_copy", "_reshape_alias"}
EXPANDS = {"expand", "expand_copy", "broadcast_to"}
RANGES = {"arange", "linspace", "range"}
# ops that make a step's data up inside the step (a synthetic-data loop): where the step reads no data from
# outside, their outputs' leading size is the batch (their size arguments follow it by value; not randperm: a
# sampler's permutation is the dataset's size)
RANDOM_DATA = {"aten::randint", "aten::randn", "aten::rand", "aten::normal"}

# the readings are searched pass by pass (a pass of a small training step on the meta device takes tens of
# milliseconds; of GPT-2's, seconds): at most MAX_PASSES, and past MIN_PASSES no longer than SEARCH_BUDGET_S,
# before refusing. A batch equal to another dimension (3 and multi-head attention's stacked q, k and v; 4 and
# its head count) gives every layer's backward a few sizes to decide: a 2-layer step needed 37 passes to find
# its reading and as many to check it
MIN_PASSES, MAX_PASSES = 48, 600
SEARCH_BUDGET_S = 30.0
BIG = 2**62  # a slice bound this large means "to the end"

Exps = tuple[int, ...]  # per scaled kind, the power of its factor a size carries
# (recorded size, exps, delta): scaled to (size - delta) * F**exps + delta (``S - 1`` after ``[:, :-1]`` has delta
# -1); a dimension is a product of atoms (a flattened ``batch * seq`` has two)
Atom = tuple[int, Exps, int]
Dim = tuple[Atom, ...]
Labels = tuple[Dim, ...]


class Conflict(Exception):
    """The shapes disagree at op ``index`` under the current reading of the sizes."""

    def __init__(self, index: int, why: str):
        super().__init__(why)
        self.index = index
        self.why = why


@dataclass
class Point:
    """A size that can be read more than one way: the options, and the op it belongs to."""

    key: tuple
    index: int
    options: int
    what: str


@dataclass
class Scaling:
    """The scaled view and what was done (the result's ``scale`` block)."""

    view: TraceView
    info: dict[str, Any] = field(default_factory=dict)


def parse_scale(specs: list[str] | tuple[str, ...]) -> dict[str, Fraction]:
    """``["batch=2", "seq=0.5"]`` -> factors by kind; refuses a malformed or repeated spec (one line)."""
    out: dict[str, Fraction] = {}
    for spec in specs:
        kind, sep, value = spec.partition("=")
        kind = kind.strip()
        if not sep or kind not in KINDS:
            raise UserError(f"--scale {spec}: give batch=F or seq=F (F a positive number, e.g. batch=2)")
        try:
            f = Fraction(value.strip()).limit_denominator(1000)
        except (ValueError, ZeroDivisionError):
            raise UserError(f"--scale {spec}: {value!r} is not a number; give e.g. {kind}=2") from None
        if f <= 0:
            raise UserError(f"--scale {spec}: the factor must be positive")
        if kind in out:
            raise UserError(f"--scale {spec}: {kind} is scaled twice; give it once")
        out[kind] = f
    return out


def _exps_sum(dim: Dim) -> Exps:
    if not dim:
        return ()
    return tuple(sum(e) for e in zip(*(a[1] for a in dim), strict=True))


def _scaled_any(lab: Labels) -> bool:
    return any(any(a[1]) for d in lab for a in d)


def _plain(n: int, k: int) -> Dim:
    return ((n, (0,) * k, 0),)


def _dense_strides(shape: tuple[int, ...], strides: tuple[int, ...] | None) -> tuple[int, ...]:
    """Strides of a dense tensor of ``shape`` laid out in the order of the recorded ``strides``."""
    order = list(range(len(shape)))
    if strides is not None and len(strides) == len(shape):
        order.sort(key=lambda d: (-strides[d], d))
    out = [0] * len(shape)
    acc = 1
    for d in reversed(order):
        out[d] = acc
        acc *= max(shape[d], 1)
    return tuple(out)


def view_groups(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """The dimensions of ``a`` and ``b`` grouped as a view regroups them (equal products); None if none."""
    if math.prod(a) != math.prod(b) or 0 in a or 0 in b:
        return None
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(a) or j < len(b):
        if i < len(a) and a[i] == 1 and (j >= len(b) or b[j] != 1):
            groups.append(([i], []))
            i += 1
            continue
        if j < len(b) and b[j] == 1 and (i >= len(a) or a[i] != 1):
            groups.append(([], [j]))
            j += 1
            continue
        if i >= len(a) or j >= len(b):
            return None
        gi, gj, pa, pb = [i], [j], a[i], b[j]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb:
                if i >= len(a):
                    return None
                pa *= a[i]
                gi.append(i)
                i += 1
            else:
                if j >= len(b):
                    return None
                pb *= b[j]
                gj.append(j)
                j += 1
        groups.append((gi, gj))
    return groups


class _Context:
    """What the passes share: the kinds scaled, the step's batch and sequence sizes, which storages hold
    parameters and optimizer state."""

    def __init__(self, view: TraceView, factors: dict[str, Fraction], phases: list[str] | None):
        self.kinds = [k for k in KINDS if k in factors]
        self.factors = factors
        self.weight_storages: set[int] = set()
        # per weight storage, the (numel, dtype) of the tensors read on it as a weight or by the optimizer
        self.weight_reads: dict[int, set[tuple]] = {}
        firsts: list[tuple[TRef, str, int]] = []
        seen: set[tuple] = set()
        produced: set[tuple] = set()
        specs = {}
        for i, op in enumerate(view.ops):
            names = _arg_names(op, specs)
            opt = phases is not None and phases[i] == "optimizer"
            for k, a in enumerate(op.inputs):
                name = names[k] if k < len(names) else ""
                for r in _refs(a):
                    if opt or name in WEIGHT_ARGS:
                        self.weight_storages.add(r.storage_id)
                        self.weight_reads.setdefault(r.storage_id, set()).add((r.numel, r.dtype))
                    if r.key not in produced and r.key not in seen:
                        seen.add(r.key)
                        firsts.append((r, name, i))
            for a in op.outputs:
                for r in _refs(a):
                    produced.add(r.key)
        ints = [r for r, _n, _i in firsts if r.dtype is not None and not r.dtype.is_floating_point
                and not r.dtype.is_complex and len(r.shape) >= 1 and r.shape[0] > 1]
        # data a step makes up itself (torch.randint token ids and labels, randn images in the loop)
        made = [r for op in view.ops if op.name in RANDOM_DATA for a in op.outputs for r in _refs(a)
                if r.dtype is not None and len(r.shape) >= 1 and r.shape[0] > 1]
        if not ints:
            ints = [r for r in made if not r.dtype.is_floating_point]
        lead = Counter(r.shape[0] for r in ints)
        batch = lead.most_common(1)[0][0] if lead else None
        if batch is None:
            for r, name, _i in firsts:
                if (r.dtype is not None and r.dtype.is_floating_point and len(r.shape) >= 2 and name in DATA_ARGS
                        and r.storage_id not in self.weight_storages and r.shape[0] > 1):
                    batch = r.shape[0]
                    break
        if batch is None:  # ... or its made-up float data
            batch = next((r.shape[0] for r in made if r.dtype.is_floating_point and len(r.shape) >= 2), None)
        self.batch = batch
        self.seqs = sorted({r.shape[1] for r in ints if len(r.shape) == 2 and r.shape[0] == batch
                            and r.shape[1] > 1})
        if batch is None:
            raise UserError("--scale: the step has no input with a batch dimension (no integer input such as token "
                            "ids or labels, no float input read as an op's input, none made up by torch.randint or "
                            "randn in the step); it cannot be scaled")
        if batch == 1 and "batch" in factors:
            raise UserError("--scale batch: the step's batch size is 1, which cannot be told apart from the other "
                            "dimensions of size 1; capture the step at batch size 2 or more")
        if "seq" in factors and not self.seqs:
            raise UserError("--scale seq: the step has no [batch, seq] token input (integer ids, labels or mask) to "
                            "take the sequence length from; it cannot be scaled by sequence")
        self.values = {"batch": {batch}, "seq": set(self.seqs)}
        # the probe pass runs at the factors asked for when they are whole and tell the kinds apart (then a
        # buffer that holds the scaled size fits in the probe too), else at distinct primes
        fs = [factors[k] for k in self.kinds]
        whole = all(f.denominator == 1 and f >= 2 for f in fs) and (len(fs) < 2 or math.gcd(*map(int, fs)) == 1)
        self.probe = fs if whole else [Fraction(PROBE[k]) for k in self.kinds]

    def is_weight(self, r: TRef) -> bool:
        """Whether ``r`` is a weight (or optimizer state): on a storage read as one, with the element count and
        dtype of a tensor read there as one. Recorded storage ids are addresses the allocator reuses: a group
        norm's saved rstd (``[N, groups]``, float32) sat at the address the optimizer later read a 0-d float64
        at, and was taken for optimizer state (never scaled)."""
        return r.storage_id in self.weight_storages and (r.numel, r.dtype) in self.weight_reads.get(r.storage_id, ())

    def exps(self, kind: str) -> Exps:
        return tuple(1 if k == kind else 0 for k in self.kinds)

    def zero(self) -> Exps:
        return (0,) * len(self.kinds)


def _refs(a: Arg) -> list[TRef]:
    vals = [a.value] if a.kind == TENSOR else (a.value if a.kind == TENSOR_LIST else [])
    return [r for r in vals if isinstance(r, TRef)]


def _arg_names(op: OpRec, cache: dict) -> list[str]:
    if op.schema not in cache:
        try:
            cache[op.schema] = [a.name for a in resolve(op.schema).args]
        except OpUnavailable:
            cache[op.schema] = []
    return cache[op.schema]


def _base(name: str) -> str:
    return name.partition("::")[2] if "::" in name else name


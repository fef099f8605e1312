"""Scale a recorded step: ``--scale batch=F`` (the batch size, the leading dimension of the step's inputs) and
``--scale seq=F`` (the sequence length, the second dimension of its ``[batch, seq]`` token tensors).

The step's tensors and every recorded size that follows a scaled dimension are rewritten consistently, and
torch itself says what follows what: each op is run on the ``meta`` device (shapes, no data), first with the
scaled dimensions multiplied by a probe factor (2 for batch, 3 for seq: the ratio of an output dimension to
its recorded size then says which scaled dimensions it carries, a flattened ``batch * seq`` included), then
once more with the factors asked for, which gives every produced tensor its new shape, strides and offset.

Where the dimensions come from:

* the step's inputs: integer tensors (token ids, labels, masks, offsets) whose leading size is the batch
  size ``B`` (the most common leading size of the step's integer inputs), their second dimension the
  sequence when they are ``[B, S]``; float inputs of size ``B`` read as an op's ``input`` / ``self`` that
  are neither read as a ``weight`` / ``bias`` / ``mat2`` nor touched by the optimizer (images, dense
  features); an embedding bag's flat ``indices`` grow with its scaled ``offsets`` (the same mean bag length);
* tensors that enter the step later (saved activations an op of the trace did not return): the labels of
  the tensor on the same storage (a step input's too: ``nn.Linear`` on a ``[B, S, F]`` input keeps its
  ``[B * S, F]`` view for the weight gradient), or of an input of the same op with the same recorded shape;
  else, beside scaled tensors, each dimension equal to the batch or sequence size is read as it or as fixed
  and the shapes that follow decide (``group_norm``'s saved mean and rstd, ``[N, groups]``);
* sizes written into an op's arguments: ``view`` / ``reshape`` sizes by the grouping of dimensions torch's
  own view uses, ``expand`` sizes by aligning with the input, split sizes and slice bounds along scaled
  dimensions, a size argument that is the output's shape by the op's inputs; a size with no tensor to
  follow (``arange``, ``zeros``, ``full``, a new ``expand`` dimension, a slice bound of a buffer) is the
  batch or sequence when it equals its recorded value; a scalar ``int`` / ``SymInt`` argument equal to a scaled
  dimension of the op's tensors (``native_group_norm(_backward)``'s ``N``, ``HxW``) follows it where the op's
  own shape checks on the meta device accept only that, and is decided by the shapes that follow where they
  accept more than one reading;
* outputs of data-dependent ops (``nonzero``, ``masked_select``, ...) grow with their input.

A size that could be read more than one way (a sequence length equal to the hidden size, a flattened dim
split in two with the batch size fitting either part) is decided by the shapes that follow: each reading is
propagated through the whole step, and one that makes a later op's shapes disagree is ruled out. When more
than one reading stays consistent, or none does, the scale is refused in one line naming the op.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import replace

from benchmint.core.errors import UserError
from benchmint.replay.scale_dims import (
    MAX_PASSES,
    MIN_PASSES,
    SEARCH_BUDGET_S,
    Conflict,
    Scaling,
    _Context,
    _exps_sum,
    parse_scale,
)
from benchmint.replay.scale_pass import _Pass
from benchmint.replay.types import TENSOR, TraceView, TRef

__all__ = ["Scaling", "parse_scale", "scale_view"]


_NAMES = {"batch": "batch", "seq": "sequence length"}


def _size_text(size: object) -> str:
    """A recorded size as the message shows it: 512, or 32 and 48."""
    sizes = size if isinstance(size, list) else [size]
    return " and ".join(str(int(x)) if float(x).is_integer() else str(x) for x in sizes)


def _fail(view: TraceView, specs: list[str], c: Conflict, extra: str = "") -> UserError:
    op = view.ops[c.index]
    return UserError(f"--scale {' '.join(specs)}: cannot be applied at op #{c.index} {op.name} (node {op.node_id}): "
                     f"{c.why}{extra}; the step's sizes cannot be scaled consistently")


def scale_view(view: TraceView, specs: list[str] | tuple[str, ...], phases: list[str] | None = None) -> Scaling:
    """The step of ``view`` with its batch and/or sequence sizes scaled (``specs``: ``batch=F``, ``seq=F``);
    ``phases``: per op forward/backward/optimizer (the optimizer's tensors are never data). Refuses, in one
    line naming the op, a size that cannot be attributed unambiguously or a scale that cannot be applied."""
    specs = list(specs)
    factors = parse_scale(specs)
    ctx = _Context(view, factors, phases)
    decisions: dict[tuple, int] = {}
    probe: _Pass | None = None
    worst: Conflict | None = None
    passes = 0
    started = time.perf_counter()

    def spent() -> bool:  # the search's budget (scale_dims.MAX_PASSES, SEARCH_BUDGET_S) is used up
        return passes >= MAX_PASSES or (passes >= MIN_PASSES and time.perf_counter() - started > SEARCH_BUDGET_S)

    def searched() -> str:
        return f" (searched {passes} readings in {time.perf_counter() - started:.0f} s)"

    while probe is None:
        passes += 1
        p = _Pass(view, ctx, decisions)
        t0 = time.perf_counter()
        try:
            p.run()
            if os.environ.get("BENCHMINT_SCALE_DEBUG"):
                print(f"scale: pass {passes} ok in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
            probe = p
        except Conflict as c:
            if os.environ.get("BENCHMINT_SCALE_DEBUG"):
                print(f"scale: pass {passes} {decisions}: op #{c.index} {view.ops[c.index].name}: {c.why}",
                      file=sys.stderr)
            open_ = [pt for pt in p.points if pt.index <= c.index and decisions.get(pt.key, 0) + 1 < pt.options]
            if worst is None or c.index >= worst.index:
                worst = c
            if not open_ or spent():
                raise _fail(view, specs, worst, searched() if open_ else "") from None
            last = open_[-1]
            order = [pt.key for pt in p.points]
            cut = order.index(last.key)
            decisions = {k: v for k, v in decisions.items() if k in order[:cut]}
            decisions[last.key] = decisions.get(last.key, 0) + 1 if last.key in decisions else 1
    # every size read one way must be the only reading the shapes allow
    chosen = dict(decisions)
    for pt in probe.points:
        if pt.options < 2:
            continue
        mine = chosen.get(pt.key, 0)
        for alt in range(pt.options):
            if alt == mine:
                continue
            if spent():
                raise UserError(f"--scale {' '.join(specs)}: too many sizes of the step can be read more than one way "
                                f"(first: op #{pt.index} {view.ops[pt.index].name}){searched()}; it cannot be scaled "
                                "safely")
            passes += 1
            try:
                _Pass(view, ctx, {**chosen, pt.key: alt}).run()
            except Conflict:
                continue
            op = view.ops[pt.index]
            if pt.key[0] == "value" and alt == pt.options - 1:  # the other reading: a fixed size
                other = ("but reading it as a fixed size gives consistent shapes too: the ops that follow it do not "
                         "tell (it feeds only values, e.g. an index or a mask built from it, which torch checks "
                         "when the op runs, not by shape)")
            else:
                other = ("and the shapes allow more than one reading (a batch or sequence size equal to another "
                         "dimension)")
            raise UserError(f"--scale {' '.join(specs)}: op #{pt.index} {op.name} (node {op.node_id}): {pt.what}, "
                            f"{other}; the size cannot be attributed unambiguously, so the step is not scaled")
    final = _Pass(view, ctx, chosen, probe.entries)
    try:
        ops = final.run()
    except Conflict as c:
        raise _fail(view, specs, c) from None
    changed = sum(1 for a, b in zip(view.ops, ops, strict=True)
                  if [x.value.shape for x in a.outputs if x.kind == TENSOR and isinstance(x.value, TRef)]
                  != [x.value.shape for x in b.outputs if x.kind == TENSOR and isinstance(x.value, TRef)])
    if not changed and any(f != 1 for f in factors.values()) and worst is not None:
        # the one consistent reading scales nothing: every reading that scales the step disagreed somewhere
        raise _fail(view, specs, worst, " (every reading that scales the step disagrees somewhere; the one that went furthest, here)")
    if not changed and any(f != 1 for f in factors.values()):  # the size read is not one the step's ops follow
        read = "; ".join(f"the {_NAMES[k]} read from the step's data, {_size_text(ctx.batch if k == 'batch' else ctx.seqs)}"
                         for k in ctx.kinds)
        raise UserError(f"--scale {' '.join(specs)}: no op of the step would change shape ({read}, is a size none of "
                        "its ops' outputs follow: a step that builds its batch inside, e.g. stacking the rows a "
                        "DataLoader picked from a dataset, or slices its sequence, e.g. ids[:, :-1]); the step "
                        "cannot be scaled from its trace")
    seeded = Counter()
    for key, lab in probe.entries.items():
        if key[0] == "in" and any(any(_exps_sum(d)) for d in lab):
            seeded["inputs"] += 1
    sizes = {"batch": ctx.batch, "seq": ctx.seqs}
    info = {
        "specs": specs,
        "factors": {k: float(v) for k, v in factors.items()},
        "recorded": {k: sizes[k] for k in ctx.kinds},
        "scaled": {k: ([float(x * factors[k]) for x in sizes[k]] if isinstance(sizes[k], list)
                       else float(sizes[k] * factors[k])) for k in ctx.kinds},
        "ops": len(ops),
        "ops_with_new_shapes": changed,
        "size_arguments_rewritten": sum(final.rewritten.values()),
        "size_arguments_by_op": dict(final.rewritten.most_common(10)),
        "inputs_scaled": seeded["inputs"],
        "readings_checked": sum(1 for pt in probe.points if pt.options > 1),
        "passes": passes + 1,
        "how": ("every op run on the meta device with the scaled shapes (torch's own shape functions); sizes in "
                "arguments attributed by the tensors they follow, or by value where none, each reading checked "
                "against the shapes that follow"),
    }
    new_view = replace(view, ops=ops)
    return Scaling(view=new_view, info=info)

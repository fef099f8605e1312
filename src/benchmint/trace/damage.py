"""What an execution trace lost while it was recorded, and the likely cause, in one sentence.

PyTorch's execution-trace observer records each op's arguments at its entry and writes the node at its exit.
When it cannot read an argument (a nested tensor: the observer asks for its sizes, which a nested tensor does
not have, and C++ prints the exception), it records the op with no inputs, and ops whose record it abandoned
leave their children hanging from a parent that is not in the trace. Such a trace loads and replays, but what
it replays is not the step: the parts the observer lost run at the shapes it guessed (dense, padded), or not at
all. ``nn.TransformerEncoder``'s fast path in inference with a padding mask is the common case: it packs the
batch into a nested tensor.

A sparse (COO) tensor has no storage either: the observer records it as a storage-less tensor of its dense
shape (storage id 0, no element size, no device; its layout, nonzeros' count, positions and values are not
in the op's record). A replay would run its ops on a dense stand-in (``torch.sparse.mm`` as a dense matmul, 10x
the recorded time in one probe): :func:`sparse_tensors` finds them, the replay does not run the ops that read
them (``replay/plan.py``: timed stand-ins of their recorded durations), and :func:`find` says so.

:func:`find` says so, or returns None for a whole trace. It reads only names and parents unless one of them
looks wrong, so it costs next to nothing on a healthy trace.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from benchmint.core.errors import TraceError
from benchmint.trace.model import Node, Trace
from benchmint.trace.values import TensorRef

__all__ = ["SPARSE", "by_rank", "find", "sparse_ops", "sparse_tensors", "storage_less"]

#: Ops that take or make nested tensors (``_nested_*``, the padding round trip). Not the fused transformer
#: layers (``_transformer_encoder_layer_fwd``): they run on dense tensors too, and are then recorded whole.
NESTED = re.compile(r"nested|::to_padded_tensor\b")
#: Ops that only take sparse tensors (or say so by name): what tells a sparse tensor from another storage-less one.
SPARSE = re.compile(r"sparse|coalesce|::_?indices\b|::_?values\b|::_nnz\b|::to_dense\b|::crow_indices\b"
                    r"|::col_indices\b")
_SHOW = 3  # op names named in the sentence


def _takes_arguments(n: Node) -> bool:
    """Whether the op's schema declares at least one argument."""
    s = n.op_schema
    i = s.find("(")
    return i >= 0 and not s.startswith("()", i)


def _lost_arguments(n: Node) -> bool:
    """An op whose schema takes arguments but that recorded none (a node whose arguments cannot be read is
    not counted: the replay says what is wrong with it)."""
    try:
        return _takes_arguments(n) and not n.input_types
    except TraceError:
        return False


def storage_less(r: Any) -> bool:
    """A defined tensor of a known shape that the trace records without storage (id 0, no element size, no
    device): a sparse tensor's record (a nested one records no sizes; an undefined one no dtype)."""
    return (getattr(r, "storage_id", None) == 0 and not r.itemsize and not r.device and r.dtype is not None
            and len(r.shape) > 0)


def sparse_tensors(ops: Iterable[tuple[str, list[Any], list[Any]]]) -> set[int]:
    """Ids of the sparse tensors among ``ops`` (name, input tensors, output tensors; in execution order):
    storage-less tensors (:func:`storage_less`) that an op named for sparse tensors (:data:`SPARSE`) reads or
    makes, and the storage-less tensors that ops reading one of those make (``t()`` of a sparse matrix)."""
    ops = list(ops)
    ids = {r.tensor_id for name, ins, outs in ops if SPARSE.search(name) for r in (*ins, *outs)
           if storage_less(r)}
    if not ids:
        return ids
    for _, ins, outs in ops:
        if any(storage_less(r) and r.tensor_id in ids for r in ins):
            ids.update(r.tensor_id for r in outs if storage_less(r))
    return ids


def _tensors(values: Iterable[Any]) -> list[Any]:
    out = []
    for v in values:
        if isinstance(v, list | tuple):
            out.extend(x for x in v if isinstance(x, TensorRef))
        elif isinstance(v, TensorRef):
            out.append(v)
    return out


def sparse_ops(trace: Trace) -> Counter[str] | None:
    """The ops on sparse tensors among the trace's top-level ops (those a replay runs), by name; None when the
    trace names no op for sparse tensors (a name test: no argument is decoded then)."""
    nodes = [n for n in trace.nodes if n.op_schema]
    if not any(SPARSE.search(n.name) for n in nodes):
        return None
    try:
        ops = [(n.name, _tensors(n.inputs), _tensors(n.outputs)) for n in nodes]
    except TraceError:
        return None
    ids = sparse_tensors(ops)
    top = {n.id for n in trace.top_level_ops()}
    c = Counter(name for n, (name, ins, _) in zip(nodes, ops, strict=True)
                if n.id in top and any(storage_less(r) and r.tensor_id in ids for r in ins))
    return c or None


def _names(c: Counter[str]) -> str:
    shown = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in c.most_common(_SHOW))
    return shown + (f" and {len(c) - _SHOW} more" if len(c) > _SHOW else "")


def find(trace: Trace) -> str | None:
    """One sentence on what the recording lost (ops with no recorded arguments, ops hanging from a parent that
    is not in the trace) and, where the trace names nested-tensor ops, that they are the likely cause and how to
    capture without them; None when nothing was lost. A trace cut out of a longer one (its top-level ops' parents
    left behind) is told apart by its having no ops with lost arguments and no nested-tensor ops."""
    by_id = trace.by_id
    ops = [n for n in trace.nodes if n.op_schema]
    nested_ops = [n for n in ops if NESTED.search(n.name)]
    nested = Counter(n.name for n in nested_ops)
    # ops whose parent is not in the trace; parent 0 counts here (an op the observer left at the root) but not
    # as hanging, as the loader counts dangling parents
    loose = [n for n in ops if n.parent not in by_id and n.parent != n.id]
    hanging = [n for n in loose if n.parent != 0]
    sparse = sparse_ops(trace)
    said_sparse = None
    if sparse:
        said_sparse = (f"the step ran {sum(sparse.values())} op(s) on sparse tensors ({_names(sparse)}), which the "
                       "execution-trace observer records as storage-less tensors of their dense shape (no layout, "
                       "nonzeros or values): the replay does not run them (timed stand-ins of their recorded "
                       "durations where Kineto gives them), so its time is not the step's for them")
    if not nested and not hanging:
        return said_sparse
    # only where the observer can have failed (ops left loose, nested-tensor ops): a whole trace's arguments
    # are not decoded here
    suspects = {n.id: n for n in loose}
    suspects.update((n.id, n) for n in nested_ops)
    lost = Counter(n.name for n in suspects.values() if _lost_arguments(n))
    if not lost and not (hanging and nested):
        return said_sparse  # a partial trace (the loader says so)
    parts = []
    if lost:
        parts.append(f"{sum(lost.values())} op(s) have no recorded arguments ({_names(lost)})")
    if hanging:
        parts.append(f"{len(hanging)} op(s) hang from a parent that is not in the trace")
    said = "the execution-trace observer lost part of the step while it recorded: " + " and ".join(parts)
    if nested:
        said += (f"; the step ran nested-tensor ops ({_names(nested)}), which the observer cannot record (it "
                 "fails on a nested tensor's sizes): the replay runs what was recorded, not the step. Capture "
                 "the step without nested tensors (nn.TransformerEncoder(..., enable_nested_tensor=False) keeps "
                 "its fast path on dense tensors, which the observer records whole) to replay it")
    else:
        said += "; the replay runs what was recorded, not the step"
    return f"{said}; {said_sparse}" if said_sparse else said


def by_rank(said: list[str | None]) -> str | None:
    """Each rank's :func:`find` (``said[r]``: rank r's) in one text: ranks that lost the same are named together
    (``ranks 0-3, 6: ...``), so that a sentence is not repeated once per rank."""
    ranks: dict[str, list[int]] = {}
    for r, s in enumerate(said):
        if s:
            ranks.setdefault(s, []).append(r)
    return "; ".join(f"rank{'s' if len(rs) > 1 else ''} {_spans(rs)}: {s}" for s, rs in ranks.items()) or None


def _spans(ranks: list[int]) -> str:
    """Ascending rank numbers as runs: ``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    runs: list[list[int]] = []
    for r in ranks:
        if runs and r == runs[-1][1] + 1:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)

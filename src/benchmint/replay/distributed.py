"""Multi-rank replay: one process per rank of a multi-rank trace, its collectives run on a real process group.

``replay_ranks`` (``benchmint replay TRACE --ranks N``) starts N worker processes on this machine
(``python -m benchmint.replay.distributed SPEC``). Each loads the ET (and Kineto trace) of its rank, plans and
calibrates its replay as a single-process replay does, with the recorded ``c10d::`` collectives mapped to
``torch.distributed`` calls (:class:`Collectives`). While planning, calibrating and measuring memory, the
collectives do nothing (each rank plans at its own pace, and the number of calibration runs depends on the
rank's measurements); they run for real only in the timed iterations, which every rank runs the same number of
times with a barrier before each. The process group (gloo over 127.0.0.1, or NCCL with ``--device cuda`` and
a GPU per rank) is formed once every rank has planned, after the ranks have checked, through the store, that
they will issue the same collectives in the same order with sizes that fit together: a mismatch is an error,
not a hang. The parent watches the workers with an overall timeout, stops them all when one fails, and joins
their results into one.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from benchmint.core import clock
from benchmint.core.errors import UserError
from benchmint.core.jsonio import read_json, write_json
from benchmint.replay import memory
from benchmint.replay.types import TENSOR, TENSOR_LIST, VALUE, OpRec, TRef, is_collective
from benchmint.trace.load import archive_ranks

# functional-collective ops that move no data (the wait, the autograd wrapper): replayed as the identity and
# left out of the ranks' sequence check (a rank records them or not, depending on when its result was used)
LOCAL = {"wait_tensor", "_wrap_tensor_autograd"}
USE_RANKS = "use --ranks N to replay it on a process group"


class CommUnavailable(Exception):
    """A recorded collective that has no mapping to a torch.distributed call (the reason says why)."""


# -- what a recorded collective is: name and tensor sizes (the same on every rank, or fitting together) -------
def _arg_names(op: OpRec) -> list[str]:
    from benchmint.replay.ops import OpUnavailable, unresolved

    try:
        return [a.name for a in unresolved(op.schema).args]
    except OpUnavailable:
        return [f"arg{i}" for i in range(len(op.inputs))]


def _refs(a: Any) -> list[TRef]:
    if a.kind == TENSOR and isinstance(a.value, TRef):
        return [a.value]
    if a.kind == TENSOR_LIST:
        return [r for r in a.value if isinstance(r, TRef)]
    return []


def signature(op: OpRec) -> dict[str, Any]:
    """The recorded collective as JSON: op, each tensor argument's (numel, dtype), split sizes; for
    point-to-point ops also the peer rank and the tag."""
    names = _arg_names(op)
    tensors, values = [], {}
    for n, a in zip(names, op.inputs, strict=False):
        for r in _refs(a):
            tensors.append([n, r.numel, str(r.dtype).replace("torch.", "")])
        if a.kind == VALUE and n.endswith("split_sizes"):
            values[n] = list(a.value or [])
        if a.kind == VALUE and n in ("dstRank", "srcRank", "dst", "src"):
            values["peer"] = a.value
        if a.kind == VALUE and n == "tag":
            values["tag"] = a.value
    return {"op": op.name, "tensors": tensors, **values}


def _chunks(numel: int, splits: list[int], world: int, rows: int) -> list[int] | None:
    """Elements exchanged with each peer (splits are in rows of dim 0; empty: equal split)."""
    per_row = numel // rows if rows else 0
    if splits:
        return [s * per_row for s in splits] if len(splits) == world else None
    return [numel // world] * world if numel % world == 0 else None


def _p2p_kind(sig: dict[str, Any]) -> str | None:
    base = sig["op"].partition("::")[2]
    return base if base in ("send", "recv_") else None


def disagreement(seqs: list[list[dict[str, Any]]]) -> str | None:
    """Why the ranks' collective sequences (one list of :func:`signature` per rank, in order) cannot be
    replayed together, or None when they fit: the same collectives in the same order, the same tensor sizes
    (all-reduce, broadcast, all-gather ...) or, for all-to-all, what each rank sends to a peer is what that
    peer expects from it; and every send pairs with a receive (see :func:`_p2p_disagreement`)."""
    colls = [[c for c in s if _p2p_kind(c) is None] for s in seqs]
    return _collective_disagreement(colls) or _p2p_disagreement(seqs)


def _collective_disagreement(seqs: list[list[dict[str, Any]]]) -> str | None:
    world = len(seqs)
    n0 = len(seqs[0]) if seqs else 0
    for r, s in enumerate(seqs):
        if len(s) != n0:
            return (f"rank {r} issues {len(s)} collectives and rank 0 {n0}; the ranks would wait for each other "
                    "forever")
    for k in range(n0):
        col = [s[k] for s in seqs]
        head = f"collective #{k + 1} ({col[0]['op']})"
        for r, c in enumerate(col):
            if c["op"] != col[0]["op"]:
                return f"{head}: rank {r} issues {c['op']} there instead; the ranks' collectives do not match"
        dtypes = {t[2] for c in col for t in c["tensors"]}
        if len(dtypes) > 1:
            return f"{head}: the ranks' tensors have different dtypes ({', '.join(sorted(dtypes))})"
        if col[0]["op"].endswith("::alltoall_base_"):
            send, recv = [], []
            for c in col:
                numels = {t[0]: t[1] for t in c["tensors"]}
                rows = c.get("rows", {})
                if "output" not in numels or "input" not in numels:
                    return f"{head}: no output/input tensor recorded"
                recv.append(_chunks(numels["output"], c.get("output_split_sizes", []), world,
                                    rows.get("output") or numels["output"]))
                send.append(_chunks(numels["input"], c.get("input_split_sizes", []), world,
                                    rows.get("input") or numels["input"]))
            for r in range(world):
                if send[r] is None or recv[r] is None:
                    return f"{head}: rank {r}'s split sizes are not for {world} ranks"
            for r in range(world):
                for p in range(world):
                    if send[r][p] != recv[p][r]:  # type: ignore[index]
                        return (f"{head}: rank {r} sends {send[r][p]} elements to rank {p}, which expects "  # type: ignore[index]
                                f"{recv[p][r]}; the trace's ranks are not of one run")  # type: ignore[index]
        else:
            sizes = [[t[1] for t in c["tensors"]] for c in col]
            for r, s in enumerate(sizes):
                if s != sizes[0]:
                    return f"{head}: rank {r}'s tensors have {s} elements, rank 0's {sizes[0]}"
    return None


def _p2p_disagreement(seqs: list[list[dict[str, Any]]]) -> str | None:
    """Rank r's k-th send to rank p (with a tag) must meet p's k-th receive from r (with that tag): the same
    tensor sizes and dtypes, and between the same two collectives, since the replay issues point-to-point ops
    without blocking and waits for them before the next collective (or at the end of the iteration)."""
    world = len(seqs)
    ends: dict[str, dict[tuple[int, int, int], list[tuple[int, list]]]] = {"send": {}, "recv_": {}}
    for r, s in enumerate(seqs):
        after = 0  # collectives before this op
        for c in s:
            kind = _p2p_kind(c)
            if kind is None:
                after += 1
                continue
            peer = c.get("peer")
            if not isinstance(peer, int) or not 0 <= peer < world or peer == r:
                return f"rank {r}'s {c['op']} names peer rank {peer!r}, not another rank of {world}"
            tag = int(c.get("tag") or 0)
            key = (r, peer, tag) if kind == "send" else (peer, r, tag)
            ends[kind].setdefault(key, []).append((after, [(t[1], t[2]) for t in c["tensors"]]))
    for key in sorted(set(ends["send"]) | set(ends["recv_"])):
        src, dst, tag = key
        sends, recvs = ends["send"].get(key, []), ends["recv_"].get(key, [])
        tagged = f" (tag {tag})" if tag else ""
        if len(sends) != len(recvs):
            return (f"rank {src} sends {len(sends)} time(s) to rank {dst}{tagged} but rank {dst} receives "
                    f"{len(recvs)} time(s) from rank {src}; an unpaired send or receive would wait forever")
        for k, ((a_after, a), (b_after, b)) in enumerate(zip(sends, recvs, strict=True)):
            head = f"send #{k + 1} from rank {src} to rank {dst}{tagged}"
            if a != b:
                return (f"{head} carries {_fmt_tensors(a)}, rank {dst}'s matching receive expects "
                        f"{_fmt_tensors(b)}")
            if a_after != b_after:
                return (f"{head} follows collective #{a_after} on rank {src}, its matching receive collective "
                        f"#{b_after} on rank {dst}; the ranks would wait for each other")
    return None


def _fmt_tensors(ts: list) -> str:
    return ", ".join(f"{n} {d}" for n, d in ts) or "no tensor"


def _with_rows(op: OpRec, sig: dict[str, Any]) -> dict[str, Any]:
    """Add the dim-0 length of all-to-all tensors (split sizes count rows)."""
    if op.name.endswith("::alltoall_base_"):
        rows = {}
        for n, a in zip(_arg_names(op), op.inputs, strict=False):
            if a.kind == TENSOR and isinstance(a.value, TRef):
                rows[n] = a.value.shape[0] if a.value.shape else 1
        sig["rows"] = rows
    return sig


def sequence(ops: list[OpRec]) -> list[dict[str, Any]]:
    """The collective signatures of ``ops`` in order, point-to-point ops included (receives from any source,
    never replayed, and the local functional ops left out)."""
    return [_with_rows(o, signature(o)) for o in ops
            if is_collective(o.name) and o.name.split("::", 1)[1] not in LOCAL | {"recv_any_source_"}]


# -- the mapping of recorded collectives to torch.distributed calls -------------------------------------------
_FUNCTIONAL_OPS = {"sum": "SUM", "product": "PRODUCT", "min": "MIN", "max": "MAX", "avg": "SUM"}
# tests only: "RANK" or "RANK:OP" makes that rank's first live collective (of that op, e.g. c10d::allreduce_)
# raise, to check how a failing rank is reported
FAIL_ENV = "BENCHMINT_TEST_FAIL_RANK"


def _noop(*_: Any) -> None:
    return None


@dataclass
class Mapped:
    index: int
    op: str
    call: str
    tensor_args: list[str]  # argument names passed at run time, in order
    bytes_in: int
    bytes_out: int
    fn: Callable = _noop
    peer: str = ""  # " to rank 1" / " from rank 0" for point-to-point ops
    calls: int = 0
    ns: int = 0

    @property
    def where(self) -> str:
        return f"step {self.index} ({self.op}{self.peer})"


class CommFailed(Exception):
    """A live collective failed; ``where`` names the step, the op and the peer."""

    def __init__(self, where: str, why: str):
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why


def _nbytes(ts: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


def _receives_in_place(t: torch.Tensor) -> bool:
    """Whether what other ranks send may overwrite ``t`` (floating point data); integer tensors (indices,
    lengths, offsets) keep the values the plan was checked with, and receive into a scratch copy."""
    return t.is_floating_point() or t.is_complex()


@dataclass
class Collectives:
    """The process group one rank replays on, and the mapping of its recorded collectives."""

    rank: int
    world: int
    backend: str
    store_path: str | None = None
    start_timeout_s: float = 1800.0
    timeout_s: float = 60.0
    live: bool = False
    counting: bool = False
    group: Any = None
    mapped: dict[int, Mapped] = field(default_factory=dict)
    started: bool = False
    store: Any = None
    iterations: int = 0
    pending: list[tuple[Mapped, Any]] = field(default_factory=list)  # point-to-point work not waited on yet
    fail: str | None = None  # tests only, see FAIL_ENV

    # -- planning --------------------------------------------------------------------------------------------
    def make(self, index: int, op: OpRec, args: dict[str, Any]) -> Mapped:
        """The call standing for ``op`` (step ``index``); ``args``: its recorded arguments by name (tensors as
        the plan's tensors, values as recorded, None for opaque objects: process group, reduce op, work).
        Raises :class:`CommUnavailable`."""
        ns, _, base = op.name.partition("::")
        m = Mapped(index, op.name, "", [], 0, 0)
        if ns != "c10d":
            self._functional(m, base, args)
        else:
            self._c10d(m, base, args)
        self.mapped[index] = m
        return m

    def _call(self, m: Mapped, body: Callable[[], Any]) -> None:
        """Run one live collective (nothing while not live); ``body`` returns the Work objects of
        point-to-point ops, waited on before the next collective (:meth:`drain`)."""
        if not self.live:
            return
        if not m.peer:
            self.drain()
        t0 = clock.now_ns()
        try:
            if self.fail is not None and self.fail in ("", m.op):
                self.fail = None
                raise RuntimeError(f"failure injected by {FAIL_ENV}")
            works = body()
        except Exception as e:
            raise self._failed(m, e) from e
        if m.peer and works:
            self.pending.extend((m, w) for w in works if w is not None)
        if self.counting:
            m.ns += clock.now_ns() - t0
            m.calls += 1

    def drain(self) -> None:
        """Wait for the point-to-point ops issued since the last collective (their wait counts as theirs)."""
        while self.pending:
            m, w = self.pending.pop(0)
            t0 = clock.now_ns()
            try:
                w.wait()
            except Exception as e:
                self.pending.clear()
                raise self._failed(m, e) from e
            if self.counting:
                m.ns += clock.now_ns() - t0

    def _failed(self, m: Mapped, e: Exception) -> CommFailed:
        text = str(e).strip()
        if "timed out" in text.lower() or "timeout" in type(e).__name__.lower():
            why = f"timed out after {self.timeout_s:g} s"
        else:
            why = f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
        return CommFailed(m.where, why)

    def _c10d(self, m: Mapped, base: str, a: dict[str, Any]) -> None:
        import torch.distributed as dist

        def tensors(name: str) -> list[torch.Tensor]:
            v = a.get(name)
            if isinstance(v, torch.Tensor):
                return [v]
            if isinstance(v, list) and v and all(isinstance(t, torch.Tensor) for t in v):
                return v
            raise CommUnavailable(f"its {name!r} argument is not a recorded tensor (list)")

        def value(*names: str, default: Any = None) -> Any:
            for n in names:
                if n in a and a[n] is not None:
                    return a[n]
            return default

        def root_rank() -> int:
            root = int(value("root_rank", "root", default=0))
            if not 0 <= root < self.world:
                raise CommUnavailable(f"its root rank {root} is not in a group of {self.world}")
            return root

        if base in ("allreduce_", "allreduce_coalesced_"):
            ts = tensors("tensors")
            scratch = [None if _receives_in_place(t) else torch.empty_like(t) for t in ts]

            def all_reduce(tl: list[torch.Tensor]) -> None:
                for t, s in zip(tl, scratch, strict=True):
                    if s is not None:
                        s.copy_(t)
                    dist.all_reduce(t if s is None else s, group=self.group)

            def allreduce(tl: list[torch.Tensor]) -> tuple | None:
                self._call(m, lambda: all_reduce(tl))
                return (tl, None) if base == "allreduce_" else None

            m.call, m.tensor_args, m.fn = ("all_reduce (SUM: the recorded reduce op is an opaque object)",
                                           ["tensors"], allreduce)
            m.bytes_in = m.bytes_out = _nbytes(ts)
        elif base == "alltoall_base_":
            out, inp = tensors("output")[0], tensors("input")[0]
            osp = list(value("output_split_sizes", default=[]))
            isp = list(value("input_split_sizes", default=[]))
            for what, t, sp in (("output", out, osp), ("input", inp, isp)):
                if sp and len(sp) != self.world:
                    raise CommUnavailable(f"its {what} split sizes are for {len(sp)} ranks, the group has "
                                          f"{self.world}")
                rows = t.shape[0] if t.dim() else 1
                if sp and sum(sp) != rows or not sp and rows % self.world:
                    raise CommUnavailable(f"its {what} split sizes {sp} do not fit its {rows} rows")
            scratch_out = None if _receives_in_place(out) else torch.empty_like(out)

            def alltoall(o: torch.Tensor, i: torch.Tensor) -> None:
                self._call(m, lambda: dist.all_to_all_single(o if scratch_out is None else scratch_out, i,
                                                             osp or None, isp or None, group=self.group))

            m.call = "all_to_all_single" + (" (recorded split sizes)" if osp or isp else "")
            m.tensor_args, m.fn, m.bytes_in, m.bytes_out = ["output", "input"], alltoall, _nbytes([inp]), \
                _nbytes([out])
        elif base == "alltoall_":
            outs, ins = tensors("output_tensors"), tensors("input_tensors")
            if len(outs) != self.world or len(ins) != self.world:
                raise CommUnavailable(f"it was recorded for {len(outs)} ranks, the group has {self.world}")
            scratch_outs = [None if _receives_in_place(o) else torch.empty_like(o) for o in outs]

            def alltoall_list(ol: list[torch.Tensor], il: list[torch.Tensor]) -> tuple:
                d = [o if s is None else s for o, s in zip(ol, scratch_outs, strict=True)]
                self._call(m, lambda: dist.all_to_all(d, il, group=self.group))
                return (ol, None)

            m.call, m.tensor_args, m.fn = "all_to_all", ["output_tensors", "input_tensors"], alltoall_list
            m.bytes_in, m.bytes_out = _nbytes(ins), _nbytes(outs)
        elif base in ("_allgather_base_", "_reduce_scatter_base_"):
            out, inp = tensors("output_tensor")[0], tensors("input_tensor")[0]
            gather = base == "_allgather_base_"
            if gather and out.numel() != inp.numel() * self.world or not gather and \
                    inp.numel() != out.numel() * self.world:
                raise CommUnavailable(f"its tensors ({inp.numel()} -> {out.numel()} elements) are not for "
                                      f"{self.world} ranks")
            f = (getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor) if gather else \
                (getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor)
            scratch_out = None if _receives_in_place(out) else torch.empty_like(out)

            def base_call(o: torch.Tensor, i: torch.Tensor) -> tuple:
                self._call(m, lambda: f(o if scratch_out is None else scratch_out, i, group=self.group))
                return (o, None)

            m.call, m.tensor_args, m.fn = f.__name__, ["output_tensor", "input_tensor"], base_call
            m.bytes_in, m.bytes_out = _nbytes([inp]), _nbytes([out])
        elif base == "broadcast_":
            ts = tensors("tensors")
            root = root_rank()
            scratch = [None if _receives_in_place(t) or self.rank == root else torch.empty_like(t) for t in ts]

            def broadcast(tl: list[torch.Tensor]) -> tuple:
                def go() -> None:
                    for t, s in zip(tl, scratch, strict=True):
                        dist.broadcast(t if s is None else s, src=root, group=self.group)
                self._call(m, go)
                return (tl, None)

            m.call, m.tensor_args, m.fn = f"broadcast from rank {root}", ["tensors"], broadcast
            m.bytes_in = m.bytes_out = _nbytes(ts)
        elif base == "reduce_":
            ts = tensors("tensors")
            root = root_rank()
            scratch = [None if _receives_in_place(t) else torch.empty_like(t) for t in ts]

            def reduce(tl: list[torch.Tensor]) -> None:
                def go() -> None:
                    for t, s in zip(tl, scratch, strict=True):
                        if s is not None:
                            s.copy_(t)
                        dist.reduce(t if s is None else s, dst=root, group=self.group)
                self._call(m, go)

            m.call, m.tensor_args, m.fn = f"reduce (SUM) to rank {root}", ["tensors"], reduce
            m.bytes_in = m.bytes_out = _nbytes(ts)
        elif base in ("barrier", "monitored_barrier_"):
            def barrier(*_: Any) -> None:
                self._call(m, lambda: dist.barrier(group=self.group))

            m.call, m.fn = "barrier", barrier
            m.tensor_args = [n for n in ("tensor",) if isinstance(a.get(n), torch.Tensor)]
        elif base in ("send", "recv_"):
            # issued without blocking (isend / irecv) and waited on before the next collective or at the end of
            # the iteration: a recorded exchange where both ranks send first must not wait for each other
            ts = tensors("tensors")
            peer = value("dstRank", "dst", "srcRank", "src")
            tag = int(value("tag", default=0))
            if not isinstance(peer, int) or not 0 <= peer < self.world or peer == self.rank:
                raise CommUnavailable(f"its peer rank {peer!r} is not another rank of a group of {self.world}")
            if base == "send":
                def send(tl: list[torch.Tensor]) -> None:
                    self._call(m, lambda: [dist.isend(t, dst=peer, group=self.group, tag=tag) for t in tl])

                m.call, m.peer, m.fn, m.bytes_in = f"send to rank {peer}", f" to rank {peer}", send, _nbytes(ts)
            else:
                scratch = [None if _receives_in_place(t) else torch.empty_like(t) for t in ts]

                def recv(tl: list[torch.Tensor]) -> None:
                    self._call(m, lambda: [dist.irecv(t if s is None else s, src=peer, group=self.group, tag=tag)
                                           for t, s in zip(tl, scratch, strict=True)])

                m.call, m.peer, m.fn, m.bytes_out = (f"recv from rank {peer}", f" from rank {peer}", recv,
                                                     _nbytes(ts))
            m.tensor_args = ["tensors"]
        elif base in ("allgather_", "reduce_scatter_", "gather_", "scatter_", "allgather_coalesced_"):
            raise CommUnavailable("its nested tensor lists (Tensor[][]) are not recorded in a form the replay "
                                  "can rebuild")
        else:
            raise CommUnavailable(f"no torch.distributed mapping for c10d::{base}")

    def _functional(self, m: Mapped, base: str, a: dict[str, Any]) -> None:
        """Functional collectives (``_c10d_functional::``, torch.compile): out-of-place, they return tensors."""
        import torch.distributed as dist

        name = "input" if isinstance(a.get("input"), torch.Tensor) else "tensor"
        inp = a.get(name)
        if not isinstance(inp, torch.Tensor):
            raise CommUnavailable("its input is not a recorded tensor")
        if base in LOCAL:
            m.call, m.tensor_args, m.fn = "nothing (the collectives are synchronous)", [name], lambda t: t
            return
        size = a.get("group_size")
        if size is None and isinstance(a.get("ranks"), list):
            size = len(a["ranks"])
        if size is not None and int(size) != self.world:
            raise CommUnavailable(f"it ran on a group of {size} ranks; sub-groups are not replayed")
        red = str(a.get("reduce_op") or "sum").lower()
        if red not in _FUNCTIONAL_OPS:
            raise CommUnavailable(f"reduce op {red!r} is not known")
        op = getattr(dist.ReduceOp, _FUNCTIONAL_OPS[red])
        w = self.world
        n = _nbytes([inp])
        m.tensor_args = ["input"]
        if base in ("all_reduce", "all_reduce_"):
            inplace = base.endswith("_")

            def all_reduce(t: torch.Tensor) -> torch.Tensor:
                o = t if inplace else t.clone()
                self._call(m, lambda: dist.all_reduce(o, op=op, group=self.group))
                return o

            m.call, m.fn, m.bytes_in, m.bytes_out = "all_reduce", all_reduce, n, n
        elif base in ("all_gather_into_tensor", "reduce_scatter_tensor"):
            gather = base == "all_gather_into_tensor"
            if not gather and (not inp.dim() or inp.shape[0] % w):
                raise CommUnavailable(f"its input's {inp.shape[0] if inp.dim() else 0} rows do not split {w} ways")
            f = (getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor) if gather else \
                (getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor)

            def gather_scatter(t: torch.Tensor) -> torch.Tensor:
                shape = (t.shape[0] * w if gather else t.shape[0] // w, *t.shape[1:])
                o = t.new_empty(shape)
                self._call(m, lambda: f(o, t, group=self.group) if gather else f(o, t, op=op, group=self.group))
                return o

            m.call, m.fn, m.bytes_in, m.bytes_out = f.__name__, gather_scatter, n, n * w if gather else n // w
        elif base == "all_to_all_single":
            osp, isp = list(a.get("output_split_sizes") or []), list(a.get("input_split_sizes") or [])
            if osp and len(osp) != w or isp and len(isp) != w:
                raise CommUnavailable(f"its split sizes are not for {w} ranks")

            def a2a(t: torch.Tensor) -> torch.Tensor:
                rows = sum(osp) if osp else t.shape[0]
                o = t.new_empty((rows, *t.shape[1:]))
                self._call(m, lambda: dist.all_to_all_single(o, t, osp or None, isp or None, group=self.group))
                return o

            m.call, m.fn, m.bytes_in, m.bytes_out = "all_to_all_single", a2a, n, n
        elif base == "broadcast" or base == "broadcast_":
            src = int(a.get("src") or 0)
            inplace = base.endswith("_")

            def bcast(t: torch.Tensor) -> torch.Tensor:
                o = t if inplace else t.clone()
                self._call(m, lambda: dist.broadcast(o, src=src, group=self.group))
                return o

            m.call, m.fn, m.bytes_in, m.bytes_out = f"broadcast from rank {src}", bcast, n, n
        else:
            raise CommUnavailable(f"no torch.distributed mapping for {base}")

    # -- running ---------------------------------------------------------------------------------------------
    def begin(self, plan: Any) -> None:
        """Before the first live iteration: wait until every rank has planned, check that their collectives
        fit together (the same on every rank, through the store), form the process group; then go live."""
        if not self.started:
            self._start(plan)
        self.live = True

    def keep_planned(self, plan: Any) -> list[Any]:
        """The plan's replayed collective steps; forget the mappings of any other step (build_plan may plan
        more than once, and a collective a later pass skipped must not count in :meth:`stats`)."""
        steps = [s for s in plan.steps if s.replayed and is_collective(s.op.name)]
        self.mapped = {s.index: self.mapped[s.index] for s in steps if s.index in self.mapped}
        return steps

    def _start(self, plan: Any) -> None:
        import torch.distributed as dist

        steps = self.keep_planned(plan)
        mine = sequence([s.op for s in steps])
        if self.store is None:
            if self.store_path is None:
                raise RuntimeError("no store to meet the other ranks in")
            self.store = dist.FileStore(self.store_path, self.world)
        self.store.set(f"benchmint/planned/{self.rank}", json.dumps(mine))
        keys = [f"benchmint/planned/{r}" for r in range(self.world)]
        try:
            self.store.wait(keys, timedelta(seconds=self.start_timeout_s))
        except Exception as e:
            raise RuntimeError(f"the other ranks did not finish planning within {self.start_timeout_s:.0f} s")\
                from e
        seqs = [json.loads(self.store.get(k)) for k in keys]
        why = disagreement(seqs)
        if why is not None:
            raise UserError(f"the ranks' replayed collectives do not fit together: {why}")
        dist.init_process_group(self.backend, store=dist.PrefixStore("benchmint/pg", self.store), rank=self.rank,
                                world_size=self.world, timeout=timedelta(seconds=self.timeout_s))
        self.group = dist.group.WORLD
        self.started = True

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier(group=self.group)

    def end(self) -> None:
        self.live = False
        self.counting = False
        self.pending.clear()

    def close(self) -> None:
        import torch.distributed as dist

        if self.started and dist.is_initialized():
            dist.destroy_process_group()
        self.started = False

    def stats(self) -> dict[str, Any]:
        """Per-iteration figures of the replayed collectives (timed iterations only)."""
        ms = sorted((m for m in self.mapped.values() if m.op.partition("::")[2] not in LOCAL), key=lambda m: m.index)
        n = max(self.iterations, 1)
        per = [{"op": m.op, "step": m.index, "call": m.call, "bytes_in": m.bytes_in, "bytes_out": m.bytes_out,
                "time_s": m.ns / 1e9 / max(m.calls, 1)} for m in ms]
        return {
            "count": len(ms),
            "backend": self.backend,
            "bytes_in": sum(m.bytes_in for m in ms),
            "bytes_out": sum(m.bytes_out for m in ms),
            "time_s": sum(m.ns for m in ms) / 1e9 / n,
            "ops": per,
        }


# -- worker process ------------------------------------------------------------------------------------------
def _peak_rss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def _die_with_parent(parent: int) -> None:
    """A rank ends when the parent does (killed, not only stopped cleanly): on Linux through the kernel's
    parent-death signal; a rank whose parent is already gone exits at once."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        sys.exit(1)


def _worker(spec_path: str) -> int:
    spec = read_json(spec_path)
    _die_with_parent(spec["parent"])
    rank, world = spec["rank"], spec["world"]

    def say(msg: str) -> None:
        print(f"rank {rank}: {msg}", file=sys.stderr, flush=True)

    comm = Collectives(rank=rank, world=world, backend=spec["backend"], store_path=spec["store"],
                       start_timeout_s=spec["timeout_s"], timeout_s=spec["collective_timeout_s"])
    seen: set[str] = set()

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in seen:
            seen.add(stage)
            say({"plan": "planning", "time": "timing"}.get(stage, stage))

    from benchmint.replay.api import replay_trace

    fail = os.environ.get(FAIL_ENV)
    if fail is not None and fail.partition(":")[0] == str(rank):
        comm.fail = fail.partition(":")[2]

    def failed(record: dict[str, Any], code: int) -> int:
        traceback.print_exc()  # into the rank's log, kept with --debug
        write_json(spec["out"], {"rank": rank, "failed_at": time.time(), **record})
        say(f"failed: {record['error']}")
        return code

    try:
        dev = spec["device"]
        if dev.startswith("cuda"):  # one GPU per rank; NCCL and the current-device allocations follow it
            dev = f"cuda:{rank}"
            torch.cuda.set_device(rank)
        res = replay_trace(spec["trace"], spec["kineto"], device=dev, threads=spec["threads"],
                           warmup=spec["warmup"], iters=spec["iters"], seed=spec["seed"], gaps=spec["gaps"],
                           target=spec["target"], iteration=spec["iteration"], rank=spec["trace_rank"],
                           comm=comm, progress=progress, memory_check=spec.get("memory_check", True))
        r = dict(res.result)
        r["rank"] = rank
        r["collectives"] = comm.stats()
        r["peak_rss_bytes"] = _peak_rss_bytes()
        r["per_op_type"] = res.per_op_type
        write_json(spec["out"], r)
        say(f"done: {r['ops_replayed']}/{r['ops_total']} ops, {r['iter_time_s']['median'] * 1e3:.1f} ms/iter")
        return 0
    except UserError as e:
        return failed({"error": str(e), "user_error": True}, 2)
    except CommFailed as e:
        return failed({"error": f"failed in {e.where}: {e.why}"}, 1)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which stops the other ranks
        text = str(e).strip()
        return failed({"error": f"failed: {type(e).__name__}" + (f": {text.splitlines()[0]}" if text else "")}, 1)
    finally:
        try:
            comm.close()
        except Exception:  # noqa: BLE001
            pass


# -- parent ----------------------------------------------------------------------------------------------------
@dataclass
class RanksResult:
    """The joined result of a multi-rank replay (``result`` is what ``--json`` writes, ``per_op_type`` the
    slowest rank's table); :func:`benchmint.replay.api.run_record` takes it as it takes a ReplayResult."""

    result: dict[str, Any]
    per_op_type: list[dict[str, Any]]


def _loopback_ifname() -> str | None:
    try:
        names = [n for _, n in socket.if_nameindex()]
    except OSError:
        return None
    for n in ("lo", "lo0"):
        if n in names:
            return n
    return None


def _backend_for(device: str, ranks: int) -> str:
    """NCCL (or gloo where torch has no NCCL) with a GPU per rank for cuda, gloo for cpu."""
    import torch.distributed as dist

    if device.startswith("cuda"):
        have = torch.cuda.device_count()
        if have < ranks:
            raise UserError(f"--device {device} with --ranks {ranks} needs a GPU per rank (rank r on cuda:r); this "
                            f"machine has {have}; use --device cpu")
        return "nccl" if dist.is_nccl_available() else "gloo"
    return "gloo"


def replay_ranks(
    trace: str | os.PathLike,
    kineto: str | os.PathLike | None = None,
    *,
    ranks: int,
    device: str | None = None,
    threads: int | None = None,
    warmup: int = 3,
    iters: int = 20,
    seed: int = 0,
    gaps: str | None = None,
    target: str = "auto",
    iteration: int | None = None,
    timeout_s: float = 1800.0,
    collective_timeout_s: float = 60.0,
    echo: Callable[[str], None] | None = None,
    keep_logs: bool | None = None,
    memory_check: bool = True,
) -> RanksResult:
    """Replay a multi-rank trace with one process per rank on this machine, its collectives on a real
    process group; see the module's doc. ``threads``: intra-op threads per rank (default 1); ``timeout_s``:
    the whole run, after which every rank is stopped; ``collective_timeout_s``: the process group's timeout
    for one collective. ``echo``: where the ranks' progress lines go (default stderr). ``keep_logs``: when a
    rank fails, keep the ranks' logs (with tracebacks) and name their folder in the error (default: when
    BENCHMINT_DEBUG is set; the CLI passes --debug)."""
    from benchmint.replay.api import find_inputs, last_whole_iteration
    from benchmint.replay.source import default_device, view_from_trace
    from benchmint.trace import load

    say = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    if ranks < 1:
        raise UserError(f"--ranks {ranks}: must be at least 1")
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: must be at least 1")
    if warmup < 0 or iters < 1:
        raise UserError("--iters must be >= 1 and --warmup >= 0")
    if not timeout_s > 0 or not collective_timeout_s > 0:
        raise UserError(f"--timeout {timeout_s:g} / --comm-timeout {collective_timeout_s:g}: both must be positive "
                        "numbers of seconds")
    inp = find_inputs(trace, kineto)
    have = archive_ranks(inp.trace)
    if have is not None:
        if ranks != len(have):
            raise UserError(f"{inp.trace}: the trace has {len(have)} ranks; --ranks must equal it")
        if have != list(range(len(have))):
            raise UserError(f"{inp.trace}: the archive's ranks are {have}, not 0..{len(have) - 1}")
    trace_rank = (lambda r: r) if have is not None else (lambda r: None)
    if device is None:
        tr0 = load(inp.trace, rank=trace_rank(0))
        device = default_device(tr0.devices)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    backend = _backend_for(device, ranks)
    # the ranks must issue the same collectives in the same order: check the traces before starting anything
    # (one trace for all ranks is read once; a rank replays the step capture.json says was whole)
    seqs, ests = [], []
    for r in range(ranks):
        if r == 0 or have is not None:
            tr = load(inp.trace, rank=trace_rank(r))
            it = iteration if iteration is not None else last_whole_iteration(tr, inp.capture)
            view = view_from_trace(tr, iteration=it, device=device)
            seq, est = sequence(view.ops), memory.tensor_bytes(view)
            del tr, view
        seqs.append(seq)
        ests.append(est)
    why = disagreement(seqs)
    if why is not None:
        more = " (every rank replays the same single trace)" if have is None and ranks > 1 else ""
        raise UserError(f"{inp.trace}: its collectives cannot be replayed on {ranks} ranks{more}: {why}")
    if memory_check and ranks > 1 and not device.startswith("cuda"):
        # the ranks share this host's memory: each rank's own check would pass where all of them cannot
        total = {k: sum(e[k] for e in ests) for k in ests[0]}
        memory.check_fits(total, torch.device("cpu"), str(inp.trace), ranks=ranks)

    old_sigterm = _stop_on_sigterm(say)
    try:
        return _run_ranks(inp, ranks, trace_rank, device, backend, threads, warmup, iters, seed, gaps, target,
                          iteration, timeout_s, collective_timeout_s, keep_logs, say, memory_check)
    finally:
        if old_sigterm is not None:
            signal.signal(signal.SIGTERM, old_sigterm)


def _stop_on_sigterm(say: Callable[[str], None]) -> Any:
    """While the ranks run, SIGTERM raises SystemExit (exit code 143) so that the ranks are stopped and the
    temporary folder removed on the way out; returns the handler to restore (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_sigterm(signum: int, _frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: let the clean-up finish
        say("terminated (SIGTERM): stopping the ranks")
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, on_sigterm)


def _run_ranks(inp: Any, ranks: int, trace_rank: Callable[[int], int | None], device: str, backend: str,
               threads: int | None, warmup: int, iters: int, seed: int, gaps: str | None, target: str,
               iteration: int | None, timeout_s: float, collective_timeout_s: float, keep_logs: bool | None,
               say: Callable[[str], None], memory_check: bool = True) -> RanksResult:
    tmp = Path(tempfile.mkdtemp(prefix="benchmint-ranks-"))
    env = dict(os.environ)
    lo = _loopback_ifname()
    if lo and backend == "gloo":
        env.setdefault("GLOO_SOCKET_IFNAME", lo)
    env["MASTER_ADDR"] = "127.0.0.1"
    env["PYTHONUNBUFFERED"] = "1"
    th = threads or 1
    env["OMP_NUM_THREADS"] = str(th)
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    kept = False
    t0 = time.monotonic()
    say(f"replaying {ranks} ranks of {inp.trace} ({backend}, {device}, {th} thread(s) per rank)")
    try:
        for r in range(ranks):
            spec = {"rank": r, "world": ranks, "trace_rank": trace_rank(r), "trace": str(inp.trace),
                    "kineto": str(inp.kineto) if inp.kineto else None, "device": device,
                    "backend": backend, "threads": th, "warmup": warmup,
                    "iters": iters, "seed": seed, "gaps": gaps, "target": target, "iteration": iteration,
                    "store": str(tmp / "store"), "out": str(tmp / f"rank{r}.result.json"), "timeout_s": timeout_s,
                    "collective_timeout_s": collective_timeout_s, "parent": os.getpid(),
                    "memory_check": memory_check}
            sp = tmp / f"rank{r}.spec.json"
            write_json(sp, spec)
            log = tmp / f"rank{r}.log"
            logs.append(log)
            with open(log, "wb") as fh:
                procs.append(subprocess.Popen([sys.executable, "-m", "benchmint.replay.distributed", str(sp)],
                                              stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              env=env))
        _watch(procs, logs, tmp, t0 + timeout_s, timeout_s, say)
        wall = time.monotonic() - t0
        per = [read_json(tmp / f"rank{r}.result.json") for r in range(ranks)]
    except RankFailed as e:
        kept = keep_logs if keep_logs is not None else bool(os.environ.get("BENCHMINT_DEBUG"))
        raise RankFailed(f"{e} (" + (f"the ranks' logs: {tmp}" if kept else "--debug keeps the ranks' logs")
                         + ")") from e
    finally:
        _stop(procs)
        if not kept:
            shutil.rmtree(tmp, ignore_errors=True)
    return _join(per, ranks, backend, wall, inp)


def _watch(procs: list[subprocess.Popen], logs: list[Path], tmp: Path, deadline: float, timeout_s: float,
           say: Callable[[str], None]) -> None:
    """Forward the ranks' progress lines; return when all have exited 0; on the first failure or at the
    deadline stop them all and raise, naming the rank."""
    pos = [0] * len(procs)
    last = [""] * len(procs)

    def forward() -> None:
        for r, log in enumerate(logs):
            try:
                with open(log, "rb") as fh:
                    fh.seek(pos[r])
                    chunk = fh.read()
            except OSError:
                continue
            end = chunk.rfind(b"\n")
            if end < 0:
                continue
            pos[r] += end + 1
            for line in chunk[: end + 1].decode(errors="replace").splitlines():
                if line.startswith(f"rank {r}: "):
                    last[r] = line
                    say(line)

    while True:
        forward()
        codes = [p.poll() for p in procs]
        bad = [r for r, c in enumerate(codes) if c not in (None, 0)]
        if bad:
            _stop(procs)
            forward()
            raise _failure(bad, codes, tmp, last)
        if all(c == 0 for c in codes):
            return
        if time.monotonic() > deadline:
            waiting = [r for r, c in enumerate(codes) if c is None]
            _stop(procs)
            where = "; ".join(f"rank {r} last said {last[r][len(f'rank {r}: '):]!r}" if last[r] else f"rank {r}: "
                              "no progress" for r in waiting[:4])
            raise RankFailed(f"the replay did not finish within {timeout_s:.0f} s: rank(s) "
                            f"{', '.join(map(str, waiting))} still running ({where}); stopped them all; "
                            "give more time (--timeout) or fewer --iters")
        time.sleep(0.2)


class RankFailed(UserError):
    """A rank of a multi-rank replay failed: one line naming the rank, the step, the op and its peer."""


def _failure(bad: list[int], codes: list[int | None], tmp: Path, last: list[str]) -> UserError:
    """The first failure: of the ranks that reported one, the earliest (a rank that fails makes its peers
    fail after it); else the first rank that exited with an error code."""
    reports = []
    for r in range(len(codes)):
        res = tmp / f"rank{r}.result.json"
        try:
            info = read_json(res) if res.exists() else {}
        except (OSError, ValueError):
            info = {}
        if info.get("error"):
            reports.append((info.get("failed_at", float("inf")), r, info))
    if reports:
        _, r, info = min(reports, key=lambda x: (x[0], x[1]))
        if info.get("user_error"):
            return UserError(f"rank {r}: {info['error']}")
        return RankFailed(f"rank {r} {info['error']}")
    r = bad[0]
    said = last[r][len(f"rank {r}: "):] if last[r] else "nothing"
    return RankFailed(f"rank {r} exited with code {codes[r]} (it last said {said!r})")


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    end = time.monotonic() + 5
    for p in procs:
        try:
            p.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _join(per: list[dict[str, Any]], ranks: int, backend: str, wall: float, inp: Any) -> RanksResult:
    """One result of the ranks' results: coverage is the lowest rank's, the iteration time the slowest rank's
    (every rank timed the same iterations, a barrier before each), skipped ops with the ranks they were
    skipped on."""
    slow = max(range(ranks), key=lambda r: per[r]["iter_time_s"]["median"] or 0.0)
    low = min(range(ranks), key=lambda r: (per[r]["coverage"], r))
    base = {k: v for k, v in per[slow].items() if k not in ("rank", "per_op_type", "collectives", "peak_rss_bytes")}
    skipped: dict[tuple[str, str], dict[str, Any]] = {}
    substituted: dict[tuple[str, str], dict[str, Any]] = {}
    for r, p in enumerate(per):
        for s in p["skipped"]:
            e = skipped.setdefault((s["op"], s["reason"]), {**s, "count": 0, "ranks": []})
            e["count"] += s["count"]
            e["ranks"].append(r)
        for s in p["substituted"]:
            if is_collective(s["op"]):
                continue
            e = substituted.setdefault((s["op"], s["replacement"]), {**s, "count": 0, "ranks": []})
            e["count"] += s["count"]
            e["ranks"].append(r)
    col = [p["collectives"] for p in per]
    by_name: dict[str, int] = {}
    for o in col[0]["ops"]:
        by_name[o["op"]] = by_name.get(o["op"], 0) + 1
    base.update({
        "trace": str(inp.trace),
        "kineto": str(inp.kineto) if inp.kineto else None,
        "ranks": ranks,
        "backend": backend,
        "ops_total": per[low]["ops_total"],
        "ops_replayed": per[low]["ops_replayed"],
        "coverage": per[low]["coverage"],
        "coverage_rank": low,
        "coverage_time": min((p["coverage_time"] for p in per if p["coverage_time"] is not None), default=None),
        "slowest_rank": slow,
        "skipped": sorted(skipped.values(), key=lambda s: -s["count"]),
        "substituted": sorted(substituted.values(), key=lambda s: -s["count"]),
        "peak_memory_bytes": max(p["peak_memory_bytes"] for p in per),
        "peak_rss_bytes": max(p["peak_rss_bytes"] for p in per),
        "peak_rss_sum_bytes": sum(p["peak_rss_bytes"] for p in per),
        "wall_time_s": wall,
        "collectives": {
            "replayed_per_rank": col[0]["count"],
            "by_name": by_name,
            "backend": backend,
            "bytes_in_per_rank": [c["bytes_in"] for c in col],
            "bytes_out_per_rank": [c["bytes_out"] for c in col],
            "time_s_per_rank": [c["time_s"] for c in col],
            "how_measured": "per iteration: payload bytes of each call's input and output tensors on the rank "
                            "(not wire traffic), and wall time inside the calls (time.perf_counter_ns), "
                            "including waiting for the other ranks, mean over the timed iterations",
        },
        "per_rank": [{
            "rank": r, "trace": p["trace"], "coverage": p["coverage"], "ops_replayed": p["ops_replayed"],
            "ops_total": p["ops_total"], "iter_time_s": p["iter_time_s"], "replay_ops_only_s": p["replay_ops_only_s"],
            "gap_time_s": p["gap_time_s"], "peak_memory_bytes": p["peak_memory_bytes"],
            "peak_rss_bytes": p["peak_rss_bytes"], "collectives": {k: v for k, v in p["collectives"].items()
                                                                   if k != "ops"},
            "collective_ops": p["collectives"]["ops"],
        } for r, p in enumerate(per)],
        "error_note": per[slow].get("error_note"),
        "how_measured": (per[slow]["how_measured"] + f"; {ranks} ranks, one process each on this machine, "
                         f"collectives on a {backend} process group; a barrier before each iteration, so the "
                         f"ranks time the same iterations; iter_time_s is the slowest rank's (rank {slow})"),
    })
    aimed = [p.get("gap_target") for p in per if p.get("gap_target")]
    if aimed:
        # the gaps were calibrated with the collectives doing nothing, to make the iteration as long as the
        # original step, which includes the original's communication; the timed iterations then add this
        # machine's collectives on top: the replayed time is not comparable with the original's
        base["error"] = None
        base["error_note"] = (f"no error: the gaps between ops were aimed at the original step time ({aimed[0]}) "
                              "with the collectives doing nothing, and the timed iterations add the real "
                              "collectives on top, so the time counts communication twice; --gaps none compares "
                              "the ops and the real collectives back to back with the original")
        base["how_measured"] += ("; error: none, the gaps were calibrated without communication (see "
                                 "error_note)")
    elif base.get("error") is not None:
        base["how_measured"] += ("; error: the slowest rank's iteration, ops back to back with this machine's "
                                 "collectives, against the original step time")
    return RanksResult(result=base, per_op_type=per[slow].get("per_op_type", []))


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))

"""The mapping of a rank's recorded collectives to ``torch.distributed`` calls (:class:`Collectives`): planned
with the replay, doing nothing until the timed iterations make them live, on a process group formed once every
rank has planned and the ranks' sequences were checked to fit together."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch

from benchmint.core import clock
from benchmint.core.errors import UserError
from benchmint.replay.collective_sequence import disagreement, sequence
from benchmint.replay.types import LOCAL_COLLECTIVES, CommUnavailable, OpRec, is_collective

_FUNCTIONAL_OPS = {"sum": "SUM", "product": "PRODUCT", "min": "MIN", "max": "MAX", "avg": "SUM"}


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
        if base in LOCAL_COLLECTIVES:
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

    def ready(self, plan: Any) -> None:
        """Form the process group (as :meth:`begin`) with the collectives still doing nothing: the ranks can
        then start iterations together (:meth:`barrier`) while they measure their ops alone."""
        if not self.started:
            self._start(plan)

    def phase(self, name: str) -> None:
        """Wait until every rank has reached the phase ``name`` of its replay (measuring the ops alone,
        recording them, settling the gaps), through the store and within the planning timeout, so that each
        phase is measured while the other ranks do the same work, as the original's ranks did."""
        if self.store is None or not self.started:
            return
        self.store.set(f"benchmint/phase/{name}/{self.rank}", "1")
        keys = [f"benchmint/phase/{name}/{r}" for r in range(self.world)]
        try:
            self.store.wait(keys, timedelta(seconds=self.start_timeout_s))
        except Exception as e:
            raise RuntimeError(f"the other ranks did not reach {name!r} within {self.start_timeout_s:.0f} s") from e

    def gather(self, name: str, value: str) -> list[str]:
        """Every rank's ``value`` for ``name``, by rank, through the store (within the planning timeout): what the
        ranks must agree on before a collective step that depends on it, such as how they settle their gaps.
        Outside a formed group, only this rank's."""
        if self.store is None or not self.started:
            return [value]
        self.store.set(f"benchmint/gather/{name}/{self.rank}", value)
        keys = [f"benchmint/gather/{name}/{r}" for r in range(self.world)]
        try:
            self.store.wait(keys, timedelta(seconds=self.start_timeout_s))
        except Exception as e:
            raise RuntimeError(f"the other ranks did not report {name!r} within {self.start_timeout_s:.0f} s") from e
        return [bytes(self.store.get(k)).decode() for k in keys]

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
        ms = sorted((m for m in self.mapped.values() if m.op.partition("::")[2] not in LOCAL_COLLECTIVES),
                    key=lambda m: m.index)
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

"""Join a Kineto (PyTorch profiler) trace to an execution trace.

Each ET node is matched to its Kineto CPU event (``cpu_op`` / ``user_annotation``):

* by record-function id: ET ``rf_id`` == Kineto ``args["Record function id"]`` (every trace written by a recent
  PyTorch, torch 2.13 on CPU included; ET and Kineto recorded in the same profiling session);
* when the Kineto trace has no record-function ids (PyTorch <= 2.0, e.g. the PARAM example traces), by
  aligning, thread by thread, the sequence of ET node names with the sequence of Kineto event names (the ET of
  one step is located inside a Kineto trace that may hold several steps). :attr:`KinetoJoin.method` says
  which was used.

A matched op gets its start time and duration; each top-level op gets the CPU gap since the end of the
previous top-level op on its thread; device activity (``kernel``, ``gpu_memcpy``, ``gpu_memset``) is attributed
to the CPU op that launched it: device event -> runtime call by ``correlation``, runtime call -> innermost
enclosing CPU op on the same thread (or the op with the runtime call's ``External id``). How many ops matched is
reported (:attr:`KinetoJoin.matched_fraction`); a missing or partial match is never an error.

Times are Kineto's microseconds (``*_us``); :meth:`KinetoJoin.to_dict` reports seconds (``*_s``).
"""

from __future__ import annotations

import bisect
import collections
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from benchmint.core.errors import TraceError
from benchmint.trace.load import read_bytes
from benchmint.trace.model import Node, Trace
from benchmint.trace.validate import field_error

__all__ = ["DeviceEvent", "KinetoEvent", "KinetoJoin", "KinetoTrace", "OpTime", "join_kineto", "load_kineto"]

_CPU_CATS = ("cpu_op", "user_annotation", "Operator", "python_function_disabled")
_RUNTIME_CATS = ("cuda_runtime", "cuda_driver", "hip_runtime", "hip_driver", "xpu_runtime", "privateuse1_runtime",
                 "mtia_runtime")
_DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset", "Kernel", "Memcpy", "Memset", "mtia_ccp_events")


# The fields the join reads are typed: a value of the wrong type (a string time, an object as an id) is an
# error naming the field; fields the join does not read are ignored, whatever they hold.
_Time = Annotated[float, msgspec.Meta(ge=-1e18, le=1e18)]  # microseconds; also bounds 1e999 (inf)


class _Args(msgspec.Struct, gc=False):
    rf_id: int | None = msgspec.field(default=None, name="Record function id")
    external_id: int | None = msgspec.field(default=None, name="External id")
    correlation: int | None = None
    stream: int | str | None = None
    device: int | str | None = None


class _Event(msgspec.Struct, gc=False):
    ph: str | None = None
    cat: str | None = None
    name: str = ""
    pid: int | str | None = None
    tid: int | str | None = None
    ts: _Time | None = None
    dur: _Time | None = None
    args: _Args | None = None


class _KinetoFile(msgspec.Struct):
    traceEvents: list[_Event]  # noqa: N815 (Kineto's key)
    distributedInfo: Any = None  # noqa: N815
    deviceProperties: Any = None  # noqa: N815


_kdecoder = msgspec.json.Decoder(_KinetoFile)


class _Span:
    """A start and a duration in microseconds (``ts_us``, ``dur_us``), and their end."""

    __slots__ = ()
    ts_us: float
    dur_us: float

    @property
    def end_us(self) -> float:
        return self.ts_us + self.dur_us


class KinetoEvent(_Span):
    """A CPU event (op or annotation) of a Kineto trace; ``ts_us``/``dur_us`` in microseconds."""

    __slots__ = ("name", "cat", "pid", "tid", "ts_us", "dur_us", "rf_id", "external_id", "index")

    def __init__(self, name: str, cat: str, pid: Any, tid: Any, ts_us: float, dur_us: float, rf_id: int | None,
                 external_id: int | None, index: int):
        self.name = name
        self.cat = cat
        self.pid = pid
        self.tid = tid
        self.ts_us = ts_us
        self.dur_us = dur_us
        self.rf_id = rf_id
        self.external_id = external_id
        self.index = index

    def __repr__(self) -> str:
        return f"KinetoEvent({self.name!r}, ts={self.ts_us}, dur={self.dur_us})"


class DeviceEvent:
    """Device activity launched by a CPU op: a kernel, memcpy or memset (``cat``), with its stream and device."""

    __slots__ = ("name", "cat", "stream", "device", "ts_us", "dur_us", "correlation")

    def __init__(self, name: str, cat: str, stream: Any, device: Any, ts_us: float, dur_us: float,
                 correlation: Any):
        self.name = name
        self.cat = cat
        self.stream = stream
        self.device = device
        self.ts_us = ts_us
        self.dur_us = dur_us
        self.correlation = correlation

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cat": self.cat, "stream": self.stream, "device": self.device,
                "start_us": self.ts_us, "dur_s": self.dur_us * 1e-6}

    def __repr__(self) -> str:
        return f"DeviceEvent({self.name[:40]!r}, stream={self.stream}, dur_us={self.dur_us})"


@dataclass(eq=False, repr=False)
class KinetoTrace:
    """The parts of a Kineto trace the join needs: CPU events sorted by start, runtime calls, device events."""

    path: str
    cpu: list[KinetoEvent]
    """CPU events (``cpu_op``, ``user_annotation``), sorted by (start, -duration)."""
    runtime: list[tuple[Any, Any, float, Any, Any]]
    """Runtime calls: (pid, tid, ts_us, correlation, external_id)."""
    device: list[DeviceEvent]
    distributed: Any = None
    """Kineto's ``distributedInfo`` (backend, rank, world_size) when present."""

    @property
    def has_rf_ids(self) -> bool:
        return any(e.rf_id is not None for e in self.cpu)

    @property
    def rank(self) -> int | None:
        d = self.distributed
        return d.get("rank") if isinstance(d, dict) and isinstance(d.get("rank"), int) else None


def _num(x: Any) -> float | None:
    if type(x) in (int, float):
        return float(x)
    return None


def _int(x: Any) -> int | None:
    return x if type(x) is int else None


def _key(x: Any) -> Any:
    """A pid/tid/stream/correlation as a hashable scalar (Kineto writes ints or strings)."""
    return x if x is None or type(x) in (int, str, float, bool) else repr(x)


def load_kineto(path: str | os.PathLike | bytes, *, rank: int | None = None) -> KinetoTrace:
    """Read a Kineto trace (``.json``, ``.json.gz``, ``.tar.gz`` with one trace per rank: ``rank`` picks one,
    default the first). Raises TraceError when the file is not a readable Kineto trace."""
    if isinstance(path, bytes | bytearray | memoryview):
        data, name = bytes(path), "<bytes>"
    else:
        data, name = read_bytes(path, rank=rank)
    if not data.strip():
        raise TraceError(name, "empty file")
    try:
        raw = _kdecoder.decode(data)
    except msgspec.ValidationError as e:
        try:
            obj = msgspec.json.decode(data)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            obj = None
        if isinstance(obj, dict) and "nodes" in obj and "schema" in obj:
            raise TraceError(name, "this is an execution trace, not a Kineto trace; pass it as the trace") from None
        if not isinstance(obj, dict) or "traceEvents" not in obj:
            raise TraceError(name, "not a Kineto trace (no 'traceEvents' list)") from None
        raise TraceError(name, f"malformed Kineto trace ({field_error(str(e))})") from None
    except msgspec.DecodeError as e:
        msg = str(e)
        if "truncated" in msg:
            raise TraceError(name, "truncated JSON (the file ends early)") from None
        raise TraceError(name, f"corrupt JSON ({msg})") from None
    except UnicodeDecodeError as e:
        raise TraceError(name, f"corrupt JSON (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except RecursionError:
        raise TraceError(name, "corrupt JSON (nested too deeply)") from None

    cpu: list[KinetoEvent] = []
    runtime: list[tuple[Any, Any, float, Any, Any]] = []
    device: list[DeviceEvent] = []
    for e in raw.traceEvents:
        if e.ph != "X":
            continue
        cat = e.cat
        ts = _num(e.ts)
        if ts is None or not isinstance(cat, str):
            continue
        dur = _num(e.dur) or 0.0
        a = e.args
        if cat in _CPU_CATS:
            ename = e.name if isinstance(e.name, str) else str(e.name)
            cpu.append(KinetoEvent(ename, cat, _key(e.pid), _key(e.tid), ts, dur, _int(a.rf_id) if a else None,
                                   _int(a.external_id) if a else None, 0))
        elif cat in _RUNTIME_CATS:
            if a is not None and a.correlation is not None:
                runtime.append((_key(e.pid), _key(e.tid), ts, _key(a.correlation), _int(a.external_id)))
        elif cat in _DEVICE_CATS:
            ename = e.name if isinstance(e.name, str) else str(e.name)
            device.append(DeviceEvent(ename, cat, _key(a.stream) if a else None, _key(a.device) if a else None,
                                      ts, dur, _key(a.correlation) if a else None))
    cpu.sort(key=lambda k: (k.ts_us, -k.dur_us))
    for i, k in enumerate(cpu):
        k.index = i
    return KinetoTrace(name, cpu, runtime, device, raw.distributedInfo)


class OpTime(_Span):
    """Timing of one ET node from Kineto: start and duration (microseconds), thread, and the device activity
    its own CPU event launched (see :meth:`KinetoJoin.kernels_of` for a whole subtree)."""

    __slots__ = ("ts_us", "dur_us", "tid", "kernels")

    def __init__(self, ts_us: float, dur_us: float, tid: Any):
        self.ts_us = ts_us
        self.dur_us = dur_us
        self.tid = tid
        self.kernels: list[DeviceEvent] = []

    def __repr__(self) -> str:
        return f"OpTime(ts_us={self.ts_us}, dur_us={self.dur_us}, kernels={len(self.kernels)})"


class KinetoJoin:
    """The result of :func:`join_kineto`.

    ``times`` maps ET node id -> :class:`OpTime` for every matched node; ``gaps_us`` maps each matched
    top-level op id -> CPU gap (microseconds) since the end of the previous matched top-level op on the same
    thread (absent for the first op of a thread). ``matched_fraction`` is over top-level ops.
    """

    def __init__(self, trace: Trace, kineto: KinetoTrace, method: str):
        self.trace = trace
        self.kineto = kineto
        self.method = method
        """``"rf_id"`` (record-function ids) or ``"sequence"`` (name alignment), ``"none"`` if nothing matched."""
        self.times: dict[int, OpTime] = {}
        self.gaps_us: dict[int, float] = {}
        self.warnings: list[str] = []
        self.unattributed_device_events = 0
        self.other_process: tuple[Any, Any] | None = None
        """(the execution trace's pid, the Kineto trace's) when they differ: the two were recorded by different
        processes, so they are of different runs (the profiler writes both from one process)."""
        self.rf_id_mismatch: tuple[int, int] | None = None
        """(ops whose record-function id names the same op in both, ops with an id in both) when under half
        agree: the two files are of different profiling sessions (another run), aligned by op sequence."""

    # --- counts
    @property
    def top_level(self) -> list[Node]:
        return self.trace.top_level_ops()

    @property
    def matched_top_level(self) -> int:
        return sum(1 for n in self.top_level if n.id in self.times)

    @property
    def matched_fraction(self) -> float:
        """Matched top-level ops / top-level ops (0.0 when the trace has none)."""
        top = self.top_level
        return self.matched_top_level / len(top) if top else 0.0

    @property
    def matched_nodes(self) -> int:
        return len(self.times)

    @property
    def candidate_nodes(self) -> int:
        """ET nodes that can appear in Kineto (everything except the process/thread roots)."""
        return sum(1 for n in self.trace.nodes if not (n.is_thread_root or n.is_process_root))

    # --- per node
    def time_of(self, node: Node | int) -> OpTime | None:
        return self.times.get(node if isinstance(node, int) else node.id)

    def duration_s(self, node: Node | int) -> float | None:
        t = self.time_of(node)
        return None if t is None else t.dur_us * 1e-6

    def gap_before_s(self, node: Node | int) -> float | None:
        g = self.gaps_us.get(node if isinstance(node, int) else node.id)
        return None if g is None else g * 1e-6

    def kernels_of(self, node: Node | int) -> list[DeviceEvent]:
        """Device activity launched by the node and everything under it, in start order."""
        nid = node if isinstance(node, int) else node.id
        out: list[DeviceEvent] = []
        t = self.times.get(nid)
        if t is not None:
            out.extend(t.kernels)
        for d in self.trace.descendants(nid):
            td = self.times.get(d.id)
            if td is not None:
                out.extend(td.kernels)
        out.sort(key=lambda k: k.ts_us)
        return out

    # --- aggregates
    def time_by_op(self, nodes: Iterable[Node] | None = None) -> dict[str, dict[str, float]]:
        """Per op name over ``nodes`` (default: top-level ops): matched count, total CPU time and device time
        (seconds), sorted by total CPU time."""
        acc: dict[str, list[float]] = {}
        for n in (self.top_level if nodes is None else nodes):
            t = self.times.get(n.id)
            if t is None:
                continue
            a = acc.setdefault(n.name, [0, 0.0, 0.0])
            a[0] += 1
            a[1] += t.dur_us
            a[2] += sum(k.dur_us for k in self.kernels_of(n))
        return {k: {"count": int(v[0]), "total_s": v[1] * 1e-6, "device_s": v[2] * 1e-6}
                for k, v in sorted(acc.items(), key=lambda kv: -kv[1][1])}

    def to_dict(self, top: int = 20) -> dict[str, Any]:
        top_ops = self.top_level
        matched = [n for n in top_ops if n.id in self.times]
        total_us = sum(self.times[n.id].dur_us for n in matched)
        gaps = sum(self.gaps_us.values())
        kern = [k for n in matched for k in self.kernels_of(n)]
        by_op = self.time_by_op()
        return {
            "path": self.kineto.path,
            "method": self.method,
            "top_level_ops": len(top_ops),
            "matched_top_level_ops": len(matched),
            "matched_fraction": self.matched_fraction,
            "matched_nodes": self.matched_nodes,
            "candidate_nodes": self.candidate_nodes,
            "top_level_time_s": total_us * 1e-6,
            "cpu_gap_s": gaps * 1e-6,
            "device_events": len(kern),
            "device_time_s": sum(k.dur_us for k in kern) * 1e-6,
            "unattributed_device_events": self.unattributed_device_events,
            "time_by_op": dict(list(by_op.items())[:top]) if top else by_op,
            "warnings": list(self.warnings),
        }


# ------------------------------------------------------------------------------------------------- join


def join_kineto(trace: Trace, kineto: KinetoTrace | str | os.PathLike, *, rank: int | None = None
                ) -> KinetoJoin:
    """Join a Kineto trace (path or :class:`KinetoTrace`) to ``trace``; see the module docstring.

    ``rank`` picks the rank's trace from an archive holding several (default: the first)."""
    kt = kineto if isinstance(kineto, KinetoTrace) else load_kineto(kineto, rank=rank)
    candidates = [n for n in trace.nodes if not (n.is_thread_root or n.is_process_root)]
    pids = collections.Counter(e.pid for e in kt.cpu if e.pid is not None)
    k_pid = pids.most_common(1)[0][0] if pids else None
    other = (trace.pid is not None and k_pid is not None and str(k_pid).strip() != str(trace.pid).strip())
    if kt.has_rf_ids:
        join = KinetoJoin(trace, kt, "rf_id")
        by_rf: dict[int, KinetoEvent] = {}
        for e in kt.cpu:
            if e.rf_id is not None and e.rf_id not in by_rf:
                by_rf[e.rf_id] = e
        pairs = [(n, by_rf[n.rf_id]) for n in candidates if n.rf_id is not None and n.rf_id in by_rf]
        # a name mismatch means the rf ids come from another session: fall back to alignment
        same = sum(1 for n, e in pairs if n.name == e.name)
        if pairs and same < 0.5 * len(pairs):
            join.rf_id_mismatch = (same, len(pairs))
            join.warnings.append(f"record-function ids match names for only {same} of {len(pairs)} ops; "
                                 "aligned by op sequence instead")
            pairs = _align(candidates, kt)
            join.method = "sequence"
    else:
        join = KinetoJoin(trace, kt, "sequence")
        pairs = _align(candidates, kt)
    if not pairs:
        join.method = "none"
        join.warnings.append("no ET op could be matched to the Kineto trace (different run or rank?)")
    if other:  # another run of the same script aligns op for op (and even its record-function ids agree)
        join.other_process = (trace.pid, k_pid)
        join.warnings.append(f"the execution trace was recorded by process {trace.pid} and the Kineto trace by "
                             f"process {k_pid}: they are of different runs")
    ev_node: dict[int, int] = {}
    for n, e in pairs:
        join.times[n.id] = OpTime(e.ts_us, e.dur_us, e.tid)
        ev_node[e.index] = n.id
    _attribute_device(join, kt, ev_node)
    _gaps(join)
    top = join.top_level
    if top and join.matched_top_level < len(top):
        join.warnings.append(f"{len(top) - join.matched_top_level} of {len(top)} top-level ops have no Kineto "
                             "event")
    return join


def _align(nodes: list[Node], kt: KinetoTrace) -> list[tuple[Node, KinetoEvent]]:
    """Match ET nodes to Kineto CPU events by name sequence, per ET thread, against the best Kineto thread."""
    et_threads: dict[Any, list[Node]] = {}
    for n in nodes:  # id order = entry order
        et_threads.setdefault(n.tid, []).append(n)
    k_threads: dict[Any, list[KinetoEvent]] = {}
    for e in kt.cpu:  # start order
        k_threads.setdefault((e.pid, e.tid), []).append(e)
    pairs: list[tuple[Node, KinetoEvent]] = []
    used: set[Any] = set()
    # biggest ET threads first, each to the Kineto thread where it aligns best
    for _tid, seq in sorted(et_threads.items(), key=lambda kv: -len(kv[1])):
        best: tuple[int, Any, list[tuple[Node, KinetoEvent]]] = (0, None, [])
        for kkey, kseq in k_threads.items():
            if kkey in used:
                continue
            start = _best_start(seq, kseq)
            if start is None:
                continue
            m = _greedy(seq, kseq, start)
            if len(m) > best[0]:
                best = (len(m), kkey, m)
        if best[1] is not None and best[0] >= max(1, min(3, len(seq))):
            used.add(best[1])
            pairs.extend(best[2])
    return pairs


def _best_start(seq: list[Node], kseq: list[KinetoEvent], probe: int = 64, max_candidates: int = 400,
                finalists: int = 12) -> int | None:
    """Where in ``kseq`` the ET sequence most likely starts. Positions whose name equals one of the first ET
    names are scored on the ET's first ``probe`` names; the best few (spread over the Kineto trace, which may
    hold several steps that differ, e.g. a first step without gradients to zero) are then scored on the whole
    sequence."""
    if not seq or not kseq:
        return None
    knames = [e.name for e in kseq]
    head = [n.name for n in seq[:probe]]
    scored: list[tuple[int, int]] = []
    for lead in range(min(4, len(head))):
        first = head[lead]
        cands = [i for i, nm in enumerate(knames) if nm == first]
        if len(cands) > max_candidates:
            step = len(cands) / max_candidates
            cands = [cands[int(i * step)] for i in range(max_candidates)]
        scored.extend((_score(head[lead:], knames, c), c) for c in cands)
        if scored and max(scored)[0] >= 0.8 * len(head[lead:]):
            break
    if not scored:
        return None
    top = max(scored)[0]
    if top == 0:
        return None
    good = sorted(c for sc, c in scored if sc >= 0.9 * top)
    if len(good) == 1:
        return good[0]
    if len(good) > finalists:
        step = len(good) / finalists
        good = [good[int(i * step)] for i in range(finalists)]
    return max(good, key=lambda c: (len(_greedy(seq, kseq, c)), -c))


def _score(head: list[str], knames: list[str], start: int, window: int = 8) -> int:
    i, j, s = 0, start, 0
    n, m = len(head), len(knames)
    while i < n and j < m:
        if head[i] == knames[j]:
            s += 1
            i += 1
            j += 1
            continue
        # skip ahead in Kineto (events the ET does not record) or in the ET
        for d in range(1, window):
            if j + d < m and knames[j + d] == head[i]:
                j += d
                break
            if i + d < n and head[i + d] == knames[j]:
                i += d
                break
        else:
            i += 1
            j += 1
    return s


def _greedy(seq: list[Node], kseq: list[KinetoEvent], start: int, window: int = 32
            ) -> list[tuple[Node, KinetoEvent]]:
    out: list[tuple[Node, KinetoEvent]] = []
    i, j = 0, start
    n, m = len(seq), len(kseq)
    # the first ET nodes may precede the chosen start; skip to the one that matches it
    while i < n and seq[i].name != kseq[j].name:
        i += 1
    while i < n and j < m:
        a, b = seq[i].name, kseq[j].name
        if a == b:
            out.append((seq[i], kseq[j]))
            i += 1
            j += 1
            continue
        moved = False
        for d in range(1, window):
            if j + d < m and kseq[j + d].name == a:
                j += d
                moved = True
                break
            if i + d < n and seq[i + d].name == b:
                i += d
                moved = True
                break
        if not moved:
            i += 1
            j += 1
    return out


def _attribute_device(join: KinetoJoin, kt: KinetoTrace, ev_node: dict[int, int]) -> None:
    """Device event -> runtime call (correlation) -> innermost enclosing CPU event on that thread -> ET node."""
    if not kt.device:
        return
    by_corr: dict[Any, tuple[Any, Any, float, Any, Any]] = {}
    for r in kt.runtime:
        by_corr.setdefault(r[3], r)
    # CPU events per thread, for containment lookups
    per_thread: dict[Any, list[KinetoEvent]] = {}
    for e in kt.cpu:
        per_thread.setdefault((e.pid, e.tid), []).append(e)
    starts = {k: [e.ts_us for e in v] for k, v in per_thread.items()}
    by_ext: dict[int, KinetoEvent] = {}
    for e in kt.cpu:
        if e.external_id is not None and e.cat == "cpu_op":
            by_ext.setdefault(e.external_id, e)
    unattributed = 0
    for d in kt.device:
        r = by_corr.get(d.correlation)
        nid = None
        if r is not None:
            pid, tid, ts, corr, ext = r
            evs = per_thread.get((pid, tid))
            if evs:
                # innermost enclosing event that maps to an ET node: scan back from the last start <= ts
                i = bisect.bisect_right(starts[(pid, tid)], ts) - 1
                best = None
                steps = 0
                while i >= 0 and steps < 256:
                    e = evs[i]
                    if e.ts_us <= ts <= e.end_us:
                        if e.index in ev_node:
                            best = e
                            break
                    i -= 1
                    steps += 1
                if best is not None:
                    nid = ev_node[best.index]
            if nid is None and ext is not None and ext != corr:
                e = by_ext.get(ext)
                if e is not None:
                    nid = ev_node.get(e.index)
        if nid is None:
            unattributed += 1
            continue
        join.times[nid].kernels.append(d)
    join.unattributed_device_events = unattributed


def _gaps(join: KinetoJoin) -> None:
    """Gap before a top-level op: its start minus the end of the previous top-level op of its thread (in ET
    order), when both are matched and in order in the Kineto trace."""
    prev: dict[Any, OpTime | None] = {}
    for n in join.top_level:  # id order
        t = join.times.get(n.id)
        p = prev.get(n.tid)
        if t is not None and p is not None and t.ts_us >= p.ts_us:
            join.gaps_us[n.id] = max(0.0, t.ts_us - p.end_us)
        prev[n.tid] = t

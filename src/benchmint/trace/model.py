"""The normalized, typed, in-memory model of a PyTorch execution trace (ET).

Every schema version PyTorch has written (1.0.1 with flat ``parent``/``inputs``/``input_shapes``/``input_types``;
1.0.2, 1.0.3 and 1.1.0 with ``ctrl_deps`` and ``inputs``/``outputs`` objects; 1.1.1 adding ``strides``; each with
or without a ``-chakra.X.Y.Z`` suffix) loads into the same classes:

:class:`Trace`
    The whole trace: header (schema, pid, time, start/finish timestamps), ``nodes`` ordered by id (id order is
    the order ops were entered, PyTorch writes nodes at op exit), ``by_id``, the tree (:meth:`Trace.children`,
    :meth:`Trace.parent_of`, :meth:`Trace.descendants`), the thread roots, ``ProfilerStep#N`` iterations and
    user ``record_function`` scopes, :meth:`Trace.top_level_ops` (what a replay runs) and the derived
    :meth:`Trace.tensor_table`.
:class:`Node`
    One ET node: ``id``, ``name``, ``parent``, ``op_schema`` and the standard attributes as plain fields
    (``rf_id``, ``fw_parent``, ``seq_id``, ``scope``, ``tid``, ``fw_tid``); every attribute by name in
    :attr:`Node.attrs` (``kernel_backend``, ``kernel_file``, ``tensor_range``, the communication attributes such
    as ``collective_name``, ``pg_name``, ``in_msg_nelems`` ... and any attribute a newer PyTorch adds);
    typed :attr:`Node.inputs` / :attr:`Node.outputs`.
:class:`TensorRef`
    A tensor argument: tensor id, storage id, element offset, numel, itemsize, device, shape, strides, dtype.

Typed values (what :attr:`Node.inputs` and :attr:`Node.outputs` hold, one per argument): see
:mod:`benchmint.trace.values` (the value types) and :mod:`benchmint.trace.et_types` (the ET type-string
decoder); :mod:`benchmint.trace` exports them with this module's classes.

Speed and memory: a trace is decoded with msgspec straight into compact structs; each node's ``inputs`` and
``outputs`` stay as zero-copy views of the file's bytes until first asked for, then are decoded and cached.
So loading a large trace costs less than a plain ``orjson.loads`` of it, and a consumer that walks every
argument (a replay planner) pays for the decoding once. A malformed argument list is reported as a
:class:`~benchmint.core.errors.TraceError` when it is first decoded (call :meth:`Trace.validate` to decode
and check everything up front).

Nothing in this module imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec

from benchmint.core.errors import TraceError
from benchmint.core.gcpause import gc_paused
from benchmint.trace.et_types import BadValue, io_decoder, list_decoder, typed_value, types_decoder
from benchmint.trace.values import (
    TensorRef,
    Value,
    et_type_of,
    freeze,
    iter_tensors,
    shape_of,
    strides_of,
)

# what this module defines (the value types it uses come from .values, the public API is benchmint.trace)
__all__ = ["KNOWN_SCHEMAS", "Iteration", "Node", "StorageInfo", "TensorInfo", "TensorTable", "Trace", "parse_schema_version"]

#: Schema versions PyTorch has written (without the optional ``-chakra.X.Y.Z`` suffix).
KNOWN_SCHEMAS: tuple[str, ...] = ("1.0.1", "1.0.2", "1.0.3", "1.1.0", "1.1.1")

#: RecordScope values written in the ``scope`` attribute (c10/core/... RecordScope enum).
SCOPE_FUNCTION = 0
SCOPE_BACKWARD_FUNCTION = 1
SCOPE_USER = 7

_THREAD_NAMES = ("[pytorch|profiler|execution_trace|thread]", "[pytorch|profiler|execution_graph|thread]")
_PROCESS_NAMES = ("[pytorch|profiler|execution_trace|process]", "[pytorch|profiler|execution_graph|process]")
_STEP_RE = re.compile(r"^ProfilerStep#(\d+)$")
_SCHEMA_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-chakra\.(\d+\.\d+\.\d+))?$")
# names of communication ops (the c10d op, its nccl/gloo child, the record_param_comms record)
_STD_ATTRS = ("rf_id", "fw_parent", "seq_id", "scope", "tid", "fw_tid")
_COMM_ATTRS = ("collective_name", "pg_name", "pg_desc", "pg_size", "in_msg_nelems", "out_msg_nelems",
               "in_split_size", "out_split_size", "global_rank_start", "global_rank_stride", "dtype")
_COMM_PREFIXES = ("c10d::", "c10d_functional::", "_c10d_functional::", "nccl:", "gloo:", "record_param_comms")


def parse_schema_version(schema: str) -> tuple[tuple[int, int, int], str | None] | None:
    """``"1.1.0-chakra.0.0.4"`` -> ``((1, 1, 0), "0.0.4")``; ``None`` when it is not a version string."""
    m = _SCHEMA_RE.match(schema.strip()) if isinstance(schema, str) else None
    if not m:
        return None
    return (int(m[1]), int(m[2]), int(m[3])), m[4]


# ------------------------------------------------------------------------------------------------- node


class _Source:
    """What a node needs to report a decoding problem and to decode its raw arguments."""

    __slots__ = ("path", "flat")

    def __init__(self, path: str, flat: bool):
        self.path = path
        self.flat = flat  # schema 1.0.0/1.0.1: separate inputs / input_shapes / input_types lists


_EMPTY: tuple = ()


class _Args:
    """A read-only field of a node's decoded arguments: ``side`` 0 (inputs) or 1 (outputs), ``part`` 0 values,
    1 ET type strings, 2 shapes, 3 strides (shapes and strides frozen into nested tuples)."""

    def __init__(self, side: int, part: int, doc: str):
        self.side, self.part, self.__doc__ = side, part, doc

    def __get__(self, node: Node | None, owner: type | None = None) -> Any:
        if node is None:
            return self
        got = (node._ins() if self.side == 0 else node._outs())[self.part]
        return got if self.part < 2 else tuple(map(freeze, got))


class Node:
    """One ET node.

    Plain fields (always present): ``id``, ``name``, ``parent`` (the parent node id: ``ctrl_deps`` in schema
    >= 1.0.2, ``parent`` in 1.0.1; 0 for the process root), ``op_schema`` (``""`` for nodes that are not
    operators: thread/process roots, ``record_function`` scopes, autograd wrappers), and the standard attributes
    ``rf_id``, ``fw_parent``, ``seq_id``, ``scope``, ``tid``, ``fw_tid`` (``None`` when the trace lacks them).

    Every attribute, standard or not, is in :attr:`attrs` (a dict by name). Arguments are typed on first access:
    :attr:`inputs`/:attr:`outputs` (tuples of typed values), with the ET strings in :attr:`input_types`,
    :attr:`input_shapes`, :attr:`input_strides` (and the ``output_*`` equivalents).
    """

    __slots__ = ("id", "name", "parent", "op_schema", "rf_id", "fw_parent", "seq_id", "scope", "tid", "fw_tid",
                 "_src", "_attrs", "_in", "_out", "_in_dec", "_out_dec")

    def __init__(self, id: int, name: str, parent: int = 0, op_schema: str = "", *, rf_id: int | None = None,
                 fw_parent: int | None = None, seq_id: int | None = None, scope: int | None = None,
                 tid: int | None = None, fw_tid: int | None = None, attrs: dict[str, Any] | None = None,
                 inputs: Iterable[Value] = (), outputs: Iterable[Value] = (),
                 input_types: Iterable[str] | None = None, output_types: Iterable[str] | None = None):
        """Build a node by hand (tests, synthetic traces); the loader builds them without this constructor."""
        self.id = id
        self.name = name
        self.parent = parent
        self.op_schema = op_schema
        self.rf_id = rf_id
        self.fw_parent = fw_parent
        self.seq_id = seq_id
        self.scope = scope
        self.tid = tid
        self.fw_tid = fw_tid
        self._src = None
        self._attrs = dict(attrs) if attrs else {}
        for k in ("rf_id", "fw_parent", "seq_id", "scope", "tid", "fw_tid"):
            if getattr(self, k) is not None:
                self._attrs.setdefault(k, getattr(self, k))
        if op_schema:
            self._attrs.setdefault("op_schema", op_schema)
        ins, outs = tuple(inputs), tuple(outputs)
        self._in = None
        self._out = None
        self._in_dec = (ins, tuple(input_types) if input_types is not None else tuple(et_type_of(v) for v in ins),
                        tuple(shape_of(v) for v in ins), tuple(strides_of(v) for v in ins))
        self._out_dec = (outs,
                         tuple(output_types) if output_types is not None else tuple(et_type_of(v) for v in outs),
                         tuple(shape_of(v) for v in outs), tuple(strides_of(v) for v in outs))

    # --- attributes
    @property
    def attrs(self) -> dict[str, Any]:
        """All attributes by name (``rf_id``, ``op_schema``, ``kernel_backend``, ``collective_name`` ...)."""
        a = self._attrs
        if type(a) is dict:
            return a
        d: dict[str, Any] = {}
        if a is None:  # schema 1.0.1: just the standard attributes
            for k in _STD_ATTRS:
                v = getattr(self, k)
                if v is not None:
                    d[k] = v
            if self.op_schema:
                d["op_schema"] = self.op_schema
        else:
            for x in a:  # list of attribute structs (schema >= 1.0.2)
                d[x.name] = x.value
        self._attrs = d
        return d

    def attr(self, name: str, default: Any = None) -> Any:
        """One attribute by name, ``default`` when absent."""
        return self.attrs.get(name, default)

    @property
    def kernel_backend(self) -> str | None:
        return self.attrs.get("kernel_backend")

    @property
    def kernel_file(self) -> str | None:
        return self.attrs.get("kernel_file")

    @property
    def tensor_range(self) -> str | None:
        return self.attrs.get("tensor_range")

    # --- classification
    @property
    def is_op(self) -> bool:
        """True for an operator node (it carries an op schema)."""
        return bool(self.op_schema)

    @property
    def op_name(self) -> str:
        """The operator's overload name from its schema (``"aten::add.Tensor"``), else the node name."""
        s = self.op_schema
        if s:
            i = s.find("(")
            return s[:i] if i > 0 else s
        return self.name

    @property
    def is_thread_root(self) -> bool:
        return self.name in _THREAD_NAMES

    @property
    def is_process_root(self) -> bool:
        return self.name in _PROCESS_NAMES

    @property
    def iteration(self) -> int | None:
        """N for a ``ProfilerStep#N`` node, else None."""
        if self.name.startswith("ProfilerStep#"):
            m = _STEP_RE.match(self.name)
            if m:
                return int(m[1])
        return None

    @property
    def is_user_scope(self) -> bool:
        """A user ``record_function`` scope (RecordScope USER_SCOPE), not a root nor a ProfilerStep."""
        return (self.scope == SCOPE_USER and not self.op_schema and not self.is_thread_root
                and not self.is_process_root and self.iteration is None and not self.is_comm)

    @property
    def is_comm(self) -> bool:
        """A communication op or record (``c10d::...``, ``nccl:...``, ``record_param_comms``) or a node with
        the ``collective_name`` attribute."""
        return self.name.startswith(_COMM_PREFIXES) or "collective_name" in self.attrs

    @property
    def comm_info(self) -> dict[str, Any] | None:
        """For a collective record (``record_param_comms``, ``nccl:...``): its communication attributes
        (``collective_name``, ``pg_name``, ``in_msg_nelems``, ``out_msg_nelems``, ``dtype`` ...). Schema 1.0.1
        has no such attributes; they are read from the record's arguments (the collective's name is its string
        argument, followed by the in/out split sizes). ``None`` for other nodes."""
        a = self.attrs
        info = {k: a[k] for k in _COMM_ATTRS if k in a}
        if info:
            return info
        if self.name != "record_param_comms":
            return None
        try:
            ins = self.inputs
        except TraceError:
            return None
        for i, v in enumerate(ins):
            if isinstance(v, str):
                info["collective_name"] = v
                rest = ins[i + 1:i + 3]
                if len(rest) == 2 and all(isinstance(x, list) for x in rest):
                    info["in_split_size"], info["out_split_size"] = rest
                break
        tensors = self.input_tensors()
        if tensors:
            info["in_msg_nelems"] = sum(t.numel for t in tensors)
            info["dtype"] = tensors[0].dtype
        return info or None

    # --- arguments
    def _decode(self, which: str) -> tuple[tuple, tuple, tuple, tuple]:
        raw = self._in if which == "inputs" else self._out
        src = self._src
        try:
            if src.flat:  # the raw node of schema 1.0.1
                if which == "inputs":
                    rv, rs, rt = raw.inputs, raw.input_shapes, raw.input_types
                else:
                    rv, rs, rt = raw.outputs, raw.output_shapes, raw.output_types
                values = list_decoder.decode(rv) if rv else []
                shapes = list_decoder.decode(rs) if rs else None
                types = types_decoder.decode(rt) if rt else None
                strides = None
            else:
                if not raw:  # absent (an empty Raw) or built by hand
                    values, shapes, types, strides = [], [], [], None
                else:
                    io = io_decoder.decode(raw)
                    values, shapes, types, strides = io.values, io.shapes, io.types, io.strides
            if types is None:
                if values:
                    raise BadValue(f"has {which} but no {which[:-1]}_types")
                types = []
            if len(types) != len(values):
                raise BadValue(f"{which}: {len(values)} values but {len(types)} types")
            if shapes is None or len(shapes) != len(values):
                shapes = [None] * len(values)
            if strides is None or len(strides) != len(values):
                strides = [None] * len(values)
            typed = tuple([typed_value(t, v, s, st) for t, v, s, st in zip(types, values, shapes, strides, strict=True)])
        except (msgspec.DecodeError, msgspec.ValidationError, BadValue, TypeError, ValueError, OverflowError,
                RecursionError) as e:
            raise TraceError(src.path, f"node {self.id} ({self.name}): bad {which}: {e}") from None
        dec = (typed, tuple(types), shapes, strides)  # shapes/strides frozen by the properties
        if which == "inputs":
            self._in_dec = dec
            self._in = None
        else:
            self._out_dec = dec
            self._out = None
        return dec

    def _ins(self) -> tuple:
        return self._in_dec or self._decode("inputs")

    def _outs(self) -> tuple:
        return self._out_dec or self._decode("outputs")

    # decoded on first access: (values, ET type strings, shapes, strides) of each side
    inputs = _Args(0, 0, "Typed input values, one per argument (see :mod:`benchmint.trace.values`).")
    outputs = _Args(1, 0, "Typed output values.")
    input_types = _Args(0, 1, 'ET type strings of the inputs (``"Tensor(float)"``, ``"GenericList[Int,Int]"``, ...).')
    output_types = _Args(1, 1, "ET type strings of the outputs.")
    input_shapes = _Args(0, 2, "Shapes as written (nested tuples; ``()`` for scalars; ``None`` when absent).")
    output_shapes = _Args(1, 2, "Output shapes as written.")
    input_strides = _Args(0, 3, "Strides as written (schema >= 1.1.1), else ``None`` per argument.")
    output_strides = _Args(1, 3, "Output strides as written.")

    def input_tensors(self) -> list[TensorRef]:
        """Every tensor among the inputs, including those inside lists and tuples, in argument order."""
        return list(iter_tensors(self.inputs))

    def output_tensors(self) -> list[TensorRef]:
        return list(iter_tensors(self.outputs))

    def __repr__(self) -> str:
        return f"Node(id={self.id}, name={self.name!r}, parent={self.parent})"


# ------------------------------------------------------------------------------------ tensor table


class TensorInfo:
    """One distinct tensor (by :attr:`TensorRef.key`) seen in the arguments of the nodes considered.

    ``producer`` is the id of the first node that outputs it before any node reads it (``None``: it comes
    from outside the nodes considered, e.g. a parameter or a data-loader batch, and a replay must create it);
    ``first_use`` the id of the first node that touches it; ``uses`` how many argument slots name it.
    """

    __slots__ = ("ref", "producer", "first_use", "last_use", "uses")

    def __init__(self, ref: TensorRef, producer: int | None, first_use: int):
        self.ref = ref
        self.producer = producer
        self.first_use = first_use
        self.last_use = first_use
        self.uses = 0

    @property
    def is_external(self) -> bool:
        """Read before any considered node produced it."""
        return self.producer is None

    def __repr__(self) -> str:
        return f"TensorInfo({self.ref!r}, producer={self.producer}, first_use={self.first_use})"


class StorageInfo:
    """One storage ``(storage_id, device)``: ``nbytes`` is the furthest byte any tensor on it reaches
    (``(offset + span) * itemsize``, see :attr:`TensorRef.span`; a lower bound of the real allocation when
    strides are known, an upper bound for expanded views before schema 1.1.1); ``tensors`` how many distinct
    tensors live on it. PyTorch derives storage ids from allocation addresses, so the sum over storages is a
    rough measure of the memory the recorded ops touched, not a peak."""

    __slots__ = ("storage_id", "device", "nbytes", "tensors")

    def __init__(self, storage_id: int, device: str):
        self.storage_id = storage_id
        self.device = device
        self.nbytes = 0
        self.tensors = 0

    def __repr__(self) -> str:
        return f"StorageInfo(id={self.storage_id}, device={self.device!r}, nbytes={self.nbytes})"


class TensorTable:
    """Tensors and storages of a set of nodes (by default a trace's top-level ops)."""

    __slots__ = ("tensors", "storages")

    def __init__(self) -> None:
        self.tensors: dict[tuple, TensorInfo] = {}
        self.storages: dict[tuple[int, str], StorageInfo] = {}

    @classmethod
    def build(cls, nodes: Iterable[Node]) -> TensorTable:
        with gc_paused():
            return cls._build(nodes)

    @classmethod
    def _build(cls, nodes: Iterable[Node]) -> TensorTable:
        table = cls()
        tensors, storages = table.tensors, table.storages
        for n in nodes:
            for side, values in ((0, n.inputs), (1, n.outputs)):
                for t in iter_tensors(values):
                    if t.dtype is None:
                        continue
                    k = t.key
                    info = tensors.get(k)
                    if info is None:
                        info = tensors[k] = TensorInfo(t, n.id if side == 1 else None, n.id)
                        sk = (t.storage_id, t.device)
                        st = storages.get(sk)
                        if st is None:
                            st = storages[sk] = StorageInfo(t.storage_id, t.device)
                        st.tensors += 1
                        end = (t.offset + (t.numel if t.strides is None else t.span)) * t.itemsize
                        if end > st.nbytes:
                            st.nbytes = end
                    info.uses += 1
                    info.last_use = n.id
        return table

    @property
    def storage_bytes(self) -> int:
        """Sum of :attr:`StorageInfo.nbytes` over all storages."""
        return sum(s.nbytes for s in self.storages.values())

    def external(self) -> list[TensorInfo]:
        """Tensors read before being produced (inputs a replay must create), in first-use order."""
        return [t for t in self.tensors.values() if t.producer is None]

    def bytes_by_device(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.storages.values():
            out[s.device] = out.get(s.device, 0) + s.nbytes
        return out

    def __len__(self) -> int:
        return len(self.tensors)


# ------------------------------------------------------------------------------------------------- trace


class Iteration:
    """A ``ProfilerStep#N`` node: ``number`` N and the ``node``; :meth:`Trace.top_level_ops` with
    ``within=iteration.node`` gives its ops."""

    __slots__ = ("number", "node")

    def __init__(self, number: int, node: Node):
        self.number = number
        self.node = node

    def __repr__(self) -> str:
        return f"Iteration({self.number}, node={self.node.id})"


class Trace:
    """A loaded execution trace (see the module docstring). Build one with :func:`benchmint.trace.load`."""

    def __init__(self, nodes: list[Node], *, schema: str = "1.1.1-chakra.0.0.4", path: str = "<memory>",
                 pid: int | None = None, time: str | None = None, start_ts: int | None = None,
                 finish_ts: int | None = None, warnings: list[str] | None = None, sort: bool = True):
        if sort:
            nodes = sorted(nodes, key=_node_id)
        self.nodes: list[Node] = nodes
        """All nodes, ordered by id (the order ops were entered)."""
        self.schema = schema
        parsed = parse_schema_version(schema)
        self.version: tuple[int, int, int] | None = parsed[0] if parsed else None
        """Schema version as a tuple, e.g. ``(1, 1, 1)``."""
        self.chakra_version: str | None = parsed[1] if parsed else None
        self.path = path
        self.pid = pid
        self.time = time
        self.start_ts = start_ts
        self.finish_ts = finish_ts
        self.warnings: list[str] = list(warnings or [])
        """Problems that did not stop loading (newer schema, dangling parents ...)."""
        self.by_id: dict[int, Node] = {n.id: n for n in nodes}
        self._children: dict[int, list[Node]] | None = None
        self._top: list[Node] | None = None
        self._tables: dict[Any, TensorTable] = {}

    # --- tree
    def _tree(self) -> dict[int, list[Node]]:
        ch = self._children
        if ch is None:
            ch = {}
            for n in self.nodes:  # id order, so each child list is in execution order
                if n.parent == n.id:  # a root that names itself as parent
                    continue
                lst = ch.get(n.parent)
                if lst is None:
                    ch[n.parent] = [n]
                else:
                    lst.append(n)
            self._children = ch
        return ch

    def node(self, node_id: int) -> Node:
        """The node with this id (KeyError when absent)."""
        return self.by_id[node_id]

    def children(self, node: Node | int) -> list[Node]:
        """Direct children, in id order."""
        nid = node if isinstance(node, int) else node.id
        return self._tree().get(nid, [])

    def parent_of(self, node: Node) -> Node | None:
        return self.by_id.get(node.parent) if node.parent != node.id else None

    def ancestors(self, node: Node) -> Iterator[Node]:
        """Parent, grandparent ... up to the root."""
        seen = {node.id}
        p = self.parent_of(node)
        while p is not None and p.id not in seen:
            seen.add(p.id)
            yield p
            p = self.parent_of(p)

    def descendants(self, node: Node | int) -> Iterator[Node]:
        """All nodes under ``node``, depth first, in execution order."""
        tree = self._tree()
        yield from _depth_first(tree.get(node if isinstance(node, int) else node.id, []), lambda n: tree.get(n.id, []))

    def roots(self) -> list[Node]:
        """Nodes whose parent is not in the trace (normally just the process root)."""
        return [n for n in self.nodes if n.parent not in self.by_id or n.parent == n.id]

    # --- structure
    @property
    def process(self) -> Node | None:
        """The ``[pytorch|profiler|execution_trace|process]`` root node."""
        for n in reversed(self.nodes):
            if n.is_process_root:
                return n
        return None

    @property
    def threads(self) -> list[Node]:
        """Thread root nodes (``[pytorch|profiler|execution_trace|thread]``), one per recorded thread."""
        return [n for n in self.nodes if n.is_thread_root]

    @property
    def thread_ids(self) -> list[int]:
        """Distinct ``tid`` values of the nodes."""
        return sorted({n.tid for n in self.nodes if n.tid is not None and not n.is_process_root})

    @property
    def iterations(self) -> list[Iteration]:
        """``ProfilerStep#N`` nodes, in order."""
        out = []
        for n in self.nodes:
            k = n.iteration
            if k is not None:
                out.append(Iteration(k, n))
        return out

    @property
    def scopes(self) -> list[Node]:
        """User ``record_function`` scopes (not ProfilerStep, not roots), in order."""
        return [n for n in self.nodes if n.is_user_scope]

    def top_level_ops(self, within: Node | int | None = None) -> list[Node]:
        """The highest nodes that carry an op schema, in id order: walking down from the roots (or from
        ``within``), a node with an op schema is selected and its subtree is not entered (its children ran as
        part of it and would be replayed twice). One exception: a ``c10d::`` op found inside another is
        selected too: torch records an op issued while an isend/irecv is in flight (its record ends when the
        transfer completes) as that op's child, e.g. the irecv after an isend, which ran on its own."""
        if within is None and self._top is not None:
            return self._top
        tree = self._tree()

        def below(n: Node) -> list[Node]:
            if not n.op_schema:
                return tree.get(n.id, [])
            return _nested_collectives(tree, n) if n.name.startswith("c10d::") else []

        start = self.roots() if within is None else tree.get(within if isinstance(within, int) else within.id, [])
        out = [n for n in _depth_first(start, below) if n.op_schema]
        out.sort(key=_node_id)
        if within is None:
            self._top = out
        return out

    def ops(self) -> list[Node]:
        """Every node that carries an op schema (top-level or nested)."""
        return [n for n in self.nodes if n.op_schema]

    def comm_ops(self) -> list[Node]:
        """Communication nodes: ``c10d::``/``nccl:`` ops, ``record_param_comms`` records and nodes with a
        ``collective_name`` attribute."""
        return [n for n in self.nodes if n.is_comm]

    def tensor_table(self, nodes: Iterable[Node] | None = None) -> TensorTable:
        """Tensors and storages of ``nodes`` (default: the top-level ops); cached for the default."""
        if nodes is None:
            t = self._tables.get("top")
            if t is None:
                t = self._tables["top"] = TensorTable.build(self.top_level_ops())
            return t
        return TensorTable.build(nodes)

    @property
    def devices(self) -> list[str]:
        """Devices of the tensors of the top-level ops (``"cpu"``, ``"cuda:0"``)."""
        return sorted({s.device for s in self.tensor_table().storages.values() if s.device})

    def validate(self) -> Trace:
        """Decode every node's arguments and attributes now (the fastest way to decode them all, before a
        consumer walks every node); raises TraceError on the first malformed one."""
        return self.decode(self.nodes)

    def decode(self, nodes: Iterable[Node] | None = None) -> Trace:
        """Decode the arguments and attributes of ``nodes`` (default: the top-level ops) in one pass."""
        with gc_paused():
            for n in self.top_level_ops() if nodes is None else nodes:
                n.inputs  # noqa: B018
                n.outputs  # noqa: B018
                n.attrs  # noqa: B018
        return self

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __repr__(self) -> str:
        return f"Trace({self.path!r}, schema={self.schema!r}, nodes={len(self.nodes)})"


def _node_id(n: Node) -> int:
    return n.id


def _nested_collectives(tree: dict[int, list[Node]], op: Node) -> list[Node]:
    """The ``c10d::`` ops recorded inside the collective ``op`` (not inside one of them), in id order."""
    out: list[Node] = []
    stack = list(tree.get(op.id, []))
    while stack:
        n = stack.pop()
        if n.op_schema and n.name.startswith("c10d::"):
            out.append(n)
        else:
            stack.extend(tree.get(n.id, []))
    return sorted(out, key=_node_id)


def _depth_first(start: list[Node], below: Callable[[Node], list[Node]]) -> Iterator[Node]:
    """The nodes from ``start`` down, depth first in execution order, each once (a cycle closed by a duplicate
    id is walked once); ``below(n)``: the nodes to visit under ``n``."""
    stack = list(reversed(start))
    seen: set[int] = set()
    while stack:
        n = stack.pop()
        if n.id in seen:
            continue
        seen.add(n.id)
        yield n
        stack.extend(reversed(below(n)))

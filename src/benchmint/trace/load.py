"""Read an execution trace file (plain JSON, ``.gz``, or ``.tar.gz``/``.tgz`` holding one or several traces)
into a :class:`~benchmint.trace.model.Trace`.

Every problem with the input becomes a :class:`~benchmint.core.errors.TraceError` naming the file and the
problem; a well-formed trace of a newer schema version than the ones known loads with a warning
(:class:`TraceWarning`, also kept in ``Trace.warnings``).
"""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
import warnings
import zlib
from typing import Any

import msgspec

from benchmint.core.errors import TraceError
from benchmint.core.gcpause import gc_paused
from benchmint.trace.model import KNOWN_SCHEMAS, Node, Trace, _Source, parse_schema_version
from benchmint.trace.validate import check_tree

__all__ = ["LIMIT_ENV", "RATIO_ENV", "TraceWarning", "load", "max_trace_bytes", "read_bytes"]


class TraceWarning(UserWarning):
    """A trace loaded, with something worth knowing (a newer schema version, dangling parents ...)."""


_NO_RAW = msgspec.Raw()  # an absent field (len 0)


class _Attr(msgspec.Struct, gc=False):
    name: str
    value: Any = None


class _RawNode(msgspec.Struct, gc=False):
    """One node of any schema version; arguments are kept as zero-copy views of the file's bytes."""

    id: int
    name: str
    # schema >= 1.0.2
    ctrl_deps: int | None = None
    attrs: list[_Attr] | None = None
    inputs: msgspec.Raw = _NO_RAW
    outputs: msgspec.Raw = _NO_RAW
    # schema 1.0.0 / 1.0.1 (flat)
    parent: int | None = None
    input_shapes: msgspec.Raw = _NO_RAW
    input_types: msgspec.Raw = _NO_RAW
    output_shapes: msgspec.Raw = _NO_RAW
    output_types: msgspec.Raw = _NO_RAW
    rf_id: int | None = None
    fw_parent: int | None = None
    seq_id: int | None = None
    scope: int | None = None
    tid: int | None = None
    fw_tid: int | None = None
    op_schema: str | None = None


class _RawTrace(msgspec.Struct):
    schema: str
    nodes: list[_RawNode]
    pid: int | None = None
    time: str | None = None
    start_ts: int | None = None
    finish_ts: int | None = None


class _Probe(msgspec.Struct):
    """Just enough to tell what a JSON document is, for a precise error."""

    schema: Any = None
    nodes: Any = None
    traceEvents: Any = None  # noqa: N815 (Kineto's key)


_decoder = msgspec.json.Decoder(_RawTrace)
_probe = msgspec.json.Decoder(_Probe)
_NUM_RE = re.compile(r"(\d+)")


#: Environment variables that bound what a trace file may inflate to (bytes, ``16G``/``500M`` accepted) and the
#: compression ratio that marks a decompression bomb (execution and Kineto traces compress 10-30x).
LIMIT_ENV = "BENCHMINT_TRACE_MAX_BYTES"
RATIO_ENV = "BENCHMINT_TRACE_MAX_RATIO"
DEFAULT_MAX_BYTES = 4 << 30
DEFAULT_MAX_RATIO = 200
_RATIO_FROM = 64 << 20  # the ratio is judged once this much is inflated
_CHUNK = 8 << 20
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _env_number(var: str, default: int, units: bool) -> int:
    text = os.environ.get(var, "").strip()
    if not text:
        return default
    m = re.fullmatch(r"(\d{1,15})\s*([KMGT]?)(?:i?B)?", text, re.IGNORECASE) if units else re.fullmatch(r"\d{1,9}", text)
    if not m:
        raise TraceError(var, f"{text[:40]!r} is not a {'size such as 8G or 500000000' if units else 'whole number'}")
    return int(m[1]) * _UNITS[m[2].upper()] if units else int(text)


def max_trace_bytes() -> int:
    """The most bytes a trace may hold once decompressed (``BENCHMINT_TRACE_MAX_BYTES``, default 4 GiB)."""
    return _env_number(LIMIT_ENV, DEFAULT_MAX_BYTES, True)


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def _check_ratio(path: str, inflated: int, compressed: int, what: str = "the file") -> None:
    ratio = _env_number(RATIO_ENV, DEFAULT_MAX_RATIO, False)
    if ratio and inflated > _RATIO_FROM and inflated > ratio * max(compressed, 1):
        raise TraceError(path, f"{what} inflates over {inflated // max(compressed, 1)}x ({_size(compressed)} to "
                               f"{_size(inflated)}), beyond the {ratio}x of any real trace: a decompression bomb? "
                               f"(set {RATIO_ENV}=0 to read it anyway)")


def _gunzip(fh: Any, path: str) -> bytes:
    """Inflate a gzip stream in chunks, refusing it as soon as it passes the size limit or inflates more than
    any real trace does (a file of zeros), before it takes the memory."""
    limit = max_trace_bytes()
    parts: list[bytes] = []
    total = 0
    with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
        while True:
            chunk = gz.read(_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise TraceError(path, f"the compressed trace inflates to over {_size(limit)}, the limit on a trace; "
                                       f"raise it with {LIMIT_ENV}=<bytes, e.g. 16G> if the trace is real")
            _check_ratio(path, total, fh.tell())
            parts.append(chunk)
    return b"".join(parts)


def _tar_members(path: str, tf: tarfile.TarFile) -> list[tarfile.TarInfo]:
    limit = max_trace_bytes()
    compressed = os.path.getsize(path) if not path.endswith(".tar") else None
    members = []
    for m in tf:  # each member is checked as its header is read, before the archive is read past its data
        if not (m.isfile() and m.name.endswith(".json") and not os.path.basename(m.name).startswith("._")):
            continue
        if m.size > limit:
            raise TraceError(path, f"member {m.name} holds {_size(m.size)}, over the {_size(limit)} limit on a "
                                   f"trace; raise it with {LIMIT_ENV}=<bytes, e.g. 16G> if the trace is real")
        if compressed is not None:
            _check_ratio(path, m.size, compressed, f"member {m.name}")
        members.append(m)
    if not members:
        raise TraceError(path, "the archive holds no .json trace")
    return sorted(members, key=lambda m: m.name)


_RANK_RE = re.compile(r"(?:rank|worker)[_-]?(\d+)", re.IGNORECASE)


def _member_rank(name: str) -> int | None:
    """The rank in a member's name: ``worker3_step_12...json`` / ``rank3.json`` -> 3, else the last number of
    the name (``dlrm_eg_3.json`` -> 3)."""
    base = os.path.basename(name)
    m = _RANK_RE.search(base)
    if m:
        return int(m[1])
    nums = _NUM_RE.findall(base.split(".", 1)[0])
    return int(nums[-1]) if nums else None


def _pick_member(path: str, members: list[tarfile.TarInfo], rank: int | None, member: str | None
                 ) -> tarfile.TarInfo:
    if member is not None:
        for m in members:
            if m.name == member or os.path.basename(m.name) == member:
                return m
        raise TraceError(path, f"no member {member!r} in the archive (it has: "
                               f"{', '.join(m.name for m in members[:8])})")
    if rank is not None:
        if len(members) == 1:  # one trace: the rank is for archives with one trace per rank
            return members[0]
        for m in members:
            if _member_rank(m.name) == rank:
                return m
        raise TraceError(path, f"no trace of rank {rank} in the archive (it has: "
                               f"{', '.join(m.name for m in members[:8])})")
    return members[0]


def archive_ranks(path: str | os.PathLike) -> list[int] | None:
    """The ranks of an archive that holds one trace per rank (``dlrm_eg_3.json``, ``rank3.json``), or None for
    a single trace (a plain file, or an archive of one)."""
    p = str(path)
    if not p.endswith((".tar.gz", ".tgz", ".tar")):
        return None
    try:
        with tarfile.open(p, "r:*") as tf:
            members = _tar_members(p, tf)
    except tarfile.TarError as e:
        raise TraceError(p, f"not a readable archive ({e})") from e
    if len(members) < 2:
        return None
    ranks = [_member_rank(m.name) for m in members]
    if any(r is None for r in ranks) or len(set(ranks)) != len(ranks):
        raise TraceError(p, "the archive's traces are not named by rank (rank0.json, worker_1..., dlrm_eg_2.json); "
                         "name them so, one per rank")
    return sorted(r for r in ranks if r is not None)


def read_bytes(path: str | os.PathLike, *, rank: int | None = None, member: str | None = None) -> tuple[bytes, str]:
    """The decompressed bytes of a trace file and the name to report in errors.

    ``.gz`` is gunzipped; a ``.tar.gz``/``.tgz``/``.tar`` archive yields its one ``.json`` member, or the one for
    ``rank`` (a number in the member's name: ``dlrm_eg_3.json``, ``worker3_step_12.pt.trace.json``) or named
    ``member``; with several and neither given, the first by name.
    """
    p = str(path)
    try:
        if p.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(p, "r:*") as tf:
                members = _tar_members(p, tf)
                m = _pick_member(p, members, rank, member)
                f = tf.extractfile(m)
                if f is None:
                    raise TraceError(p, f"cannot read {m.name} in the archive")
                data = f.read()
                name = f"{p}:{m.name}" if len(members) > 1 or rank is not None else p
            return data, name
        with open(p, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head == b"\x1f\x8b":
                return _gunzip(fh, p), p
            size = os.fstat(fh.fileno()).st_size
            if size > max_trace_bytes():
                raise TraceError(p, f"the file holds {_size(size)}, over the {_size(max_trace_bytes())} limit on a "
                                    f"trace; raise it with {LIMIT_ENV}=<bytes, e.g. 16G> if the trace is real")
            data = fh.read()
        return data, p
    except TraceError:
        raise
    except FileNotFoundError:
        raise TraceError(p, "no such file") from None
    except IsADirectoryError:
        raise TraceError(p, "is a directory; pass a trace file") from None
    except PermissionError:
        raise TraceError(p, "permission denied") from None
    except tarfile.TarError as e:
        raise TraceError(p, f"truncated or corrupt archive ({e or type(e).__name__})") from None
    except EOFError:
        raise TraceError(p, "truncated compressed data (the file ends early)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        raise TraceError(p, f"corrupt compressed data ({e})") from None


def _bad_json(name: str, data: bytes, e: Exception) -> TraceError:
    msg = str(e)
    if isinstance(e, msgspec.ValidationError):
        # it is JSON: say what kind of document it is
        try:
            probe = _probe.decode(data)
        except msgspec.ValidationError:
            return TraceError(name, "not an execution trace (the JSON is not an object with 'schema' and 'nodes')")
        except msgspec.DecodeError as e2:  # not JSON after all (cut short, or corrupt): say which
            return _bad_json(name, data, e2)
        except (UnicodeDecodeError, RecursionError):
            return TraceError(name, "corrupt JSON")
        if probe.traceEvents is not None and probe.nodes is None:
            return TraceError(name, "this is a Kineto (profiler) trace, not an execution trace; "
                                    "pass it with --kineto / join_kineto()")
        if probe.nodes is None or probe.schema is None:
            missing = [k for k in ("schema", "nodes") if getattr(probe, k) is None]
            fields = " and ".join(f"'{k}'" for k in missing)
            return TraceError(name, f"not an execution trace (no {fields} field{'s' if len(missing) > 1 else ''})")
        return TraceError(name, f"malformed execution trace: {msg}")
    if "truncated" in msg:
        return TraceError(name, "truncated JSON (the file ends early; was the trace fully written?)")
    return TraceError(name, f"corrupt JSON ({msg})")


def load_bytes(data: bytes, name: str = "<bytes>") -> Trace:
    """Parse and normalize the (decompressed) bytes of an execution trace; ``name`` is used in messages."""
    if not data.strip():
        raise TraceError(name, "empty file")
    with gc_paused():
        try:
            raw = _decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise _bad_json(name, data, e) from None
        except UnicodeDecodeError as e:
            raise TraceError(name, f"corrupt JSON (not UTF-8 text: {e.reason} at byte {e.start})") from None
        except RecursionError:
            raise TraceError(name, "corrupt JSON (nested too deeply)") from None
        return _normalize(raw, name)


def _normalize(raw: _RawTrace, name: str) -> Trace:
    warn: list[str] = []
    if len(raw.schema) > 64:  # a version string is short; int() of thousands of digits is an error of its own
        raise TraceError(name, f"unknown schema version {raw.schema!r:.40}... ({len(raw.schema)} characters; "
                               f"expected one of {', '.join(KNOWN_SCHEMAS)}, optionally with a -chakra.X.Y.Z suffix)")
    parsed = parse_schema_version(raw.schema)
    if parsed is None:
        raise TraceError(name, f"unknown schema version {raw.schema!r:.60} (expected one of "
                               f"{', '.join(KNOWN_SCHEMAS)}, optionally with a -chakra.X.Y.Z suffix)")
    version = parsed[0]
    base = ".".join(map(str, version))
    if version[0] != 1:
        raise TraceError(name, f"unknown schema version {raw.schema!r} (major version {version[0]}; "
                               f"this benchmint reads 1.x)")
    if base not in KNOWN_SCHEMAS:
        if version > (1, 1, 1):
            msg = f"schema version {raw.schema} is newer than the newest known ({KNOWN_SCHEMAS[-1]}); loaded as 1.1.1"
            warn.append(msg)
            warnings.warn(f"{name}: {msg}", TraceWarning, stacklevel=3)
        elif version < (1, 0, 1):
            pass  # 1.0.0 (execution_graph) has the flat layout of 1.0.1

    flat = version <= (1, 0, 1)
    src = _Source(name, flat)
    nodes: list[Node] = []
    append = nodes.append
    new = Node.__new__
    missing_parent = 0
    if flat:
        for r in raw.nodes:
            n = new(Node)
            n.id = r.id
            n.name = r.name
            p = r.parent if r.parent is not None else r.ctrl_deps
            if p is None:
                missing_parent += 1
                p = 0
            n.parent = p
            n.op_schema = r.op_schema or ""
            n.rf_id = r.rf_id
            n.fw_parent = r.fw_parent
            n.seq_id = r.seq_id
            n.scope = r.scope
            n.tid = r.tid
            n.fw_tid = r.fw_tid
            n._attrs = None  # schema 1.0.1: the attributes are the standard fields above
            n._src = src
            n._in = r  # the raw node: inputs / input_shapes / input_types, decoded on first access
            n._out = r
            n._in_dec = None
            n._out_dec = None
            append(n)
    else:
        for r in raw.nodes:
            n = new(Node)
            n.id = r.id
            n.name = r.name
            p = r.ctrl_deps
            if p is None:
                p = r.parent
                if p is None:
                    missing_parent += 1
                    p = 0
            n.parent = p
            op_schema = ""
            rf_id = fw_parent = seq_id = scope = tid = fw_tid = None
            attrs = r.attrs
            if attrs is None:
                attrs = []
            for a in attrs:
                k = a.name
                if k == "rf_id":
                    rf_id = a.value
                elif k == "op_schema":
                    op_schema = a.value
                elif k == "tid":
                    tid = a.value
                elif k == "scope":
                    scope = a.value
                elif k == "seq_id":
                    seq_id = a.value
                elif k == "fw_parent":
                    fw_parent = a.value
                elif k == "fw_tid":
                    fw_tid = a.value
            n.op_schema = op_schema if type(op_schema) is str else _bad_attr(name, r, "op_schema", op_schema)
            n.rf_id = rf_id if rf_id is None or type(rf_id) is int else _bad_attr(name, r, "rf_id", rf_id)
            n.fw_parent = fw_parent
            n.seq_id = seq_id
            n.scope = scope
            n.tid = tid if tid is None or type(tid) is int else _bad_attr(name, r, "tid", tid)
            n.fw_tid = fw_tid
            n._attrs = attrs
            n._src = src
            n._in = r.inputs
            n._out = r.outputs
            n._in_dec = None
            n._out_dec = None
            append(n)
    if missing_parent:
        raise TraceError(name, f"{missing_parent} node(s) have no parent field "
                               f"({'parent' if flat else 'ctrl_deps'}), e.g. node "
                               f"{next(r.id for r in raw.nodes if r.parent is None and r.ctrl_deps is None)}")
    if not nodes:
        warn.append("the trace has no nodes")
    # PyTorch writes nodes at op exit; order them by id (op entry order)
    ids_sorted = True
    prev = -(1 << 62)
    for n in nodes:
        if n.id < prev:
            ids_sorted = False
            break
        prev = n.id
    if not ids_sorted:
        nodes.sort(key=_node_id)
    check_tree(nodes, name)  # before anything walks the tree: a duplicate id or a cycle would loop it
    trace = Trace(nodes, schema=raw.schema, path=name, pid=raw.pid, time=raw.time, start_ts=raw.start_ts,
                  finish_ts=raw.finish_ts, warnings=warn, sort=False)
    by_id = trace.by_id
    dangling = sum(1 for n in nodes if n.parent not in by_id and n.parent != 0 and not n.is_process_root)
    if dangling:
        trace.warnings.append(f"{dangling} node(s) have a parent that is not in the trace (a partial trace?)")
    return trace


def _bad_attr(name: str, r: _RawNode, key: str, value: Any) -> Any:
    raise TraceError(name, f"malformed execution trace: node {r.id} ({r.name}): attribute {key!r} has a "
                           f"{type(value).__name__} value")


def _node_id(n: Node) -> int:
    return n.id


def load(path: str | os.PathLike | bytes, *, rank: int | None = None, member: str | None = None) -> Trace:
    """Load a PyTorch execution trace of any schema version into a :class:`~benchmint.trace.model.Trace`.

    ``path`` is a ``.json``, ``.json.gz`` or ``.tar.gz`` file (or the bytes of a JSON trace). For an archive
    with one trace per rank (as PARAM's DLRM example), ``rank`` picks one (default: the first by name) and
    ``member`` names one. Raises :class:`~benchmint.core.errors.TraceError` (file + problem) for anything that
    is not a readable execution trace; warns (:class:`TraceWarning`) for a newer schema version.
    """
    if isinstance(path, bytes | bytearray | memoryview):
        data = bytes(path)
        if data[:2] == b"\x1f\x8b":
            try:
                data = _gunzip(io.BytesIO(data), "<bytes>")
            except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
                raise TraceError("<bytes>", f"truncated or corrupt compressed data ({e})") from None
        return load_bytes(data)
    data, name = read_bytes(path, rank=rank, member=member)
    return load_bytes(data, name)


def is_execution_trace(path: str | os.PathLike) -> bool:
    """True when the file looks like an ET (has ``schema`` and ``nodes``), without loading it fully."""
    try:
        data, _ = read_bytes(path)
        probe = _probe.decode(data)
    except (TraceError, msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return False
    return probe.schema is not None and probe.nodes is not None


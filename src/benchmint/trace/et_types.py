"""The ET type-string decoder: an argument's ET type (``"Tensor(float)"``, ``"GenericList[Int,Tensor(float)]"``,
``"Device"`` ...), its JSON value, shape and strides in, one typed value (:mod:`benchmint.trace.values`) out;
a malformed argument raises :class:`BadValue`, which the model turns into a TraceError naming the file and the
node. Parsed type strings are cached."""

from __future__ import annotations

from typing import Any

import msgspec

from benchmint.trace.values import Device, Generator, Opaque, TensorRef, Value, dtype_from_et


class _IO(msgspec.Struct, gc=False):
    """The ``inputs``/``outputs`` object of schema >= 1.0.2, decoded on first access."""

    values: list[Any] = []
    shapes: list[Any] = []
    types: list[str] = []
    strides: list[Any] | None = None


io_decoder = msgspec.json.Decoder(_IO)
list_decoder = msgspec.json.Decoder(list[Any])
types_decoder = msgspec.json.Decoder(list[str])

# parsed ET type strings: "GenericList[Int,Tensor(float)]" -> ("list", ("Int", "Tensor(float)"))
_TYPE_CACHE: dict[str, tuple[str, Any]] = {}


def _split_top(s: str) -> list[str]:
    """Split a comma-separated list of types at bracket/paren depth 0."""
    out: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(s):
        if ch in "[(<":
            depth += 1
        elif ch in "])>":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(s[start:i].strip())
            start = i + 1
    last = s[start:].strip()
    if last:
        out.append(last)
    return out


def _parse_type(t: str) -> tuple[str, Any]:
    r = _TYPE_CACHE.get(t)
    if r is not None:
        return r
    if t.startswith("Tensor"):
        r = ("tensor", dtype_from_et(t))
    elif t in ("Int", "SymInt"):
        r = ("int", None)
    elif t in ("Double", "SymFloat", "Float"):
        r = ("float", None)
    elif t in ("Bool", "SymBool"):
        r = ("bool", None)
    elif t == "String":
        r = ("str", None)
    elif t == "None":
        r = ("none", None)
    elif t == "Device":
        r = ("device", None)
    elif t == "Generator":
        r = ("generator", None)
    elif t.startswith("GenericList[") and t.endswith("]"):
        r = ("list", tuple(_split_top(t[12:-1])))
    elif t.startswith("Tuple[") and t.endswith("]"):
        r = ("tuple", tuple(_split_top(t[6:-1])))
    else:
        r = ("opaque", None)
    if len(_TYPE_CACHE) < 100_000:
        _TYPE_CACHE[t] = r
    return r


class BadValue(Exception):
    """Internal: a malformed argument; turned into a TraceError naming the file and the node."""


_INT_ONLY = frozenset((int,))


def _as_int_tuple(x: Any) -> tuple[int, ...]:
    if type(x) is not list:
        raise BadValue(f"expected a shape list, got {type(x).__name__}")
    if x and not _INT_ONLY.issuperset(map(type, x)):
        raise BadValue(f"expected integers in a shape, got {x!r:.60}")
    return tuple(x)


def _tensor(t: str, dtype: str | None, v: Any, shape: Any, stride: Any) -> TensorRef:
    if type(v) is not list or len(v) not in (5, 6):
        raise BadValue(f"a {t} value must be [tensor_id, storage_id, offset, numel, itemsize, device], got {v!r:.80}")
    if not _INT_ONLY.issuperset(map(type, v[:5])):
        raise BadValue(f"a {t} value must start with 5 integers, got {v!r:.80}")
    dev = v[5] if len(v) == 6 else ""
    if type(dev) is not str:
        raise BadValue(f"a {t} device must be a string, got {dev!r:.40}")
    r = TensorRef.__new__(TensorRef)
    r.tensor_id, r.storage_id, r.offset, r.numel, r.itemsize = v[0], v[1], v[2], v[3], v[4]
    r.device = dev
    r.shape = _as_int_tuple(shape) if shape is not None else ()
    r.strides = _as_int_tuple(stride) if type(stride) is list else None
    r.dtype = dtype
    r.type = t
    return r


_NON_FINITE = frozenset(("inf", "infinity", "nan"))


def typed_value(t: str, v: Any, shape: Any, stride: Any) -> Value:
    r = _TYPE_CACHE.get(t) if type(t) is str else None
    if r is None:
        r = _parse_type(t) if isinstance(t, str) else ("bad", None)
    kind, extra = r
    if kind == "tensor":
        return _tensor(t, extra, v, shape, stride)
    if kind == "int":
        if type(v) is int:
            return v
        if type(v) is bool:
            return int(v)
        if type(v) is float and v.is_integer():
            return int(v)
        raise BadValue(f"an {t} value must be an integer, got {v!r:.40}")
    if kind == "float":
        if type(v) in (int, float):
            return float(v)
        if isinstance(v, str) and v.lower().removeprefix("-").removeprefix("+") in _NON_FINITE:
            return float(v)  # the observer writes a non-finite double as text: "nan", "-nan", "inf"
        raise BadValue(f"a {t} value must be a number, got {v!r:.40}")
    if kind == "bool":
        if type(v) is bool:
            return v
        if type(v) is int and v in (0, 1):
            return bool(v)
        raise BadValue(f"a {t} value must be a boolean, got {v!r:.40}")
    if kind == "str":
        if isinstance(v, str):
            return v
        raise BadValue(f"a String value must be a string, got {v!r:.40}")
    if kind == "none":
        return None
    if kind == "device":
        if isinstance(v, str):
            return Device(v)
        raise BadValue(f"a Device value must be a string, got {v!r:.40}")
    if kind == "generator":
        return Generator(v)
    if kind in ("list", "tuple"):
        elems = extra
        if not isinstance(v, list):
            raise BadValue(f"a {t} value must be a list, got {v!r:.40}")
        if len(elems) != len(v):
            raise BadValue(f"a {t} value has {len(v)} elements")
        shapes = shape if isinstance(shape, list) and len(shape) == len(v) else [None] * len(v)
        strides = stride if isinstance(stride, list) and len(stride) == len(v) else [None] * len(v)
        out = [typed_value(et, ev, es, est) for et, ev, es, est in zip(elems, v, shapes, strides, strict=True)]
        return out if kind == "list" else tuple(out)
    if kind == "bad":
        raise BadValue(f"a type must be a string, got {t!r:.40}")
    return Opaque(t, v)

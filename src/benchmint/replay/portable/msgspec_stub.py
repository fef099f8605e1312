"""The part of msgspec that benchmint's trace loader uses, on the standard library (an exported benchmark's
runner, where msgspec is not installed): ``Struct`` with defaults and renamed fields, ``field``, ``Meta``
constraints, ``Raw``, ``json.Decoder(type).decode`` / ``json.decode``, ``DecodeError`` and ``ValidationError``
(no ``json.encode``: the multi-rank replay, which encodes the ranks' specs with it, is not part of an exported
runner).

Slower than msgspec (the document is parsed by :mod:`json`, a ``Raw`` field is written back to JSON text
and keeps its parsed value for the next decode), which is fine for one exported step and the replay's own
recordings of it."""

from __future__ import annotations

import copy
import json as _json
import sys
import types
import typing
from typing import Any


class MsgspecError(Exception):
    pass


class DecodeError(MsgspecError, ValueError):
    pass


class ValidationError(MsgspecError, ValueError):
    pass


_NODEFAULT = object()


class _Field:
    __slots__ = ("default", "name")

    def __init__(self, default: Any, name: str | None):
        self.default = default
        self.name = name


def field(*, default: Any = _NODEFAULT, name: str | None = None) -> Any:
    return _Field(default, name)


class Meta:
    """A constraint on an ``Annotated`` value: ``ge``, ``le``, ``max_length`` and ``pattern`` are checked."""

    def __init__(self, *, ge: Any = None, le: Any = None, max_length: int | None = None,
                 pattern: str | None = None, **_other: Any):
        self.ge, self.le, self.max_length, self.pattern = ge, le, max_length, pattern

    def check(self, value: Any, path: str) -> None:
        import re

        if self.ge is not None and value < self.ge:
            raise ValidationError(f"Expected `{type(value).__name__}` >= {self.ge} - at `{path}`")
        if self.le is not None and value > self.le:
            raise ValidationError(f"Expected `{type(value).__name__}` <= {self.le} - at `{path}`")
        if self.max_length is not None and len(value) > self.max_length:
            raise ValidationError(f"Expected `str` of length <= {self.max_length} - at `{path}`")
        if self.pattern is not None and not re.search(self.pattern, value):
            raise ValidationError(f"Expected `str` matching regex {self.pattern!r} - at `{path}`")


class Raw(bytes):
    """JSON text of a value left undecoded; ``Raw()`` is empty (an absent field)."""


def _raw_of(value: Any) -> Raw:
    r = Raw(_json.dumps(value).encode())
    r._value = value  # type: ignore[attr-defined]
    return r


class Struct:
    """Fields from the class annotations, in order; a class attribute is the field's default."""

    __fields: tuple = ()

    def __init_subclass__(cls, **_options: Any) -> None:  # gc=False, frozen ... : no meaning here
        super().__init_subclass__()
        fields = []
        seen = set()
        for klass in reversed(cls.__mro__):
            for attr in klass.__dict__.get("__annotations__", {}):
                if attr in seen or attr.startswith("_"):
                    continue
                seen.add(attr)
                d = klass.__dict__.get(attr, _NODEFAULT)
                key = attr
                if isinstance(d, _Field):
                    key = d.name or attr
                    d = d.default
                    setattr(klass, attr, d)
                fields.append((attr, key, d))
        cls._Struct__fields = tuple(fields)
        cls._hints = None

    def __init__(self, *args: Any, **kwargs: Any):
        fields = type(self)._Struct__fields
        for (attr, _key, _d), v in zip(fields, args, strict=False):
            kwargs.setdefault(attr, v)
        for attr, _key, d in fields:
            if attr in kwargs:
                setattr(self, attr, kwargs[attr])
            elif d is _NODEFAULT:
                raise TypeError(f"missing required argument '{attr}'")
            else:
                setattr(self, attr, copy.copy(d) if isinstance(d, list | dict) else d)

    def __repr__(self) -> str:
        inner = ", ".join(f"{a}={getattr(self, a)!r}" for a, _k, _d in type(self)._Struct__fields)
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, a) == getattr(other, a)
                                                 for a, _k, _d in type(self)._Struct__fields)


def _hints(cls: type) -> dict[str, Any]:
    if cls.__dict__.get("_hints") is None:
        mod = sys.modules.get(cls.__module__)
        cls._hints = typing.get_type_hints(cls, vars(mod) if mod else None, include_extras=True)
    return cls._hints


def _convert(obj: Any, tp: Any, path: str) -> Any:
    if tp is Any or tp is object:
        return obj
    if tp is Raw:
        return _raw_of(obj)
    if isinstance(tp, type) and issubclass(tp, Struct):
        if not isinstance(obj, dict):
            raise ValidationError(f"Expected `object`, got `{type(obj).__name__}` - at `{path}`")
        hints = _hints(tp)
        kw = {}
        for attr, key, d in tp._Struct__fields:
            if key in obj:
                kw[attr] = _convert(obj[key], hints.get(attr, Any), f"{path}.{key}")
            elif d is _NODEFAULT:
                raise ValidationError(f"Object missing required field `{key}` - at `{path}`")
        return tp(**kw)
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *extras = typing.get_args(tp)
        value = _convert(obj, base, path)
        for m in extras:
            if isinstance(m, Meta):
                m.check(value, path)
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if obj is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _convert(obj, opt, path)
            except ValidationError as e:
                errors.append(e)
        raise errors[0] if errors else ValidationError(f"Expected `null`, got `{type(obj).__name__}` - at `{path}`")
    if origin is list or tp is list:
        if not isinstance(obj, list):
            raise ValidationError(f"Expected `array`, got `{type(obj).__name__}` - at `{path}`")
        (item,) = typing.get_args(tp) or (Any,)
        return [_convert(x, item, f"{path}[{i}]") for i, x in enumerate(obj)]
    if origin is dict or tp is dict:
        if not isinstance(obj, dict):
            raise ValidationError(f"Expected `object`, got `{type(obj).__name__}` - at `{path}`")
        return obj
    if tp is type(None):
        if obj is not None:
            raise ValidationError(f"Expected `null`, got `{type(obj).__name__}` - at `{path}`")
        return None
    if tp is float:
        if isinstance(obj, int | float) and not isinstance(obj, bool):
            return float(obj)
    elif tp is int:
        if isinstance(obj, int) and not isinstance(obj, bool):
            return obj
    elif tp in (str, bool):
        if type(obj) is tp:
            return obj
    else:
        return obj
    raise ValidationError(f"Expected `{tp.__name__}`, got `{type(obj).__name__}` - at `{path}`")


def _no_constant(name: str) -> Any:
    raise DecodeError(f"JSON is malformed: invalid character ({name} is not JSON, as msgspec also says)")


def _loads(data: Any) -> Any:
    if isinstance(data, Raw) and hasattr(data, "_value"):
        return data._value
    if isinstance(data, memoryview):
        data = bytes(data)
    try:
        return _json.loads(data, parse_constant=_no_constant)
    except _json.JSONDecodeError as e:
        msg = str(e)
        if e.pos >= len(data.rstrip()):
            msg = f"Input data was truncated ({msg})"
        raise DecodeError(msg) from None


class Decoder:
    def __init__(self, type: Any = Any):
        self.type = type

    def decode(self, data: Any) -> Any:
        return _convert(_loads(data), self.type, "$")


def _decode(data: Any, *, type: Any = Any) -> Any:
    return _convert(_loads(data), type, "$")


json = types.SimpleNamespace(Decoder=Decoder, decode=_decode)

"""Op callables from recorded op schemas, and binding of recorded arguments by the schema.

An op schema string (``aten::add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor``) is parsed
with ``torch._C.parse_schema`` and resolved to ``torch.ops.<ns>.<name>.<overload>``; the raw C++ callable of
that overload is kept so the replay loop calls it with no Python layer in between. Recorded arguments are
bound by the schema: positional ones in order, kwarg-only ones by name, trailing arguments that equal their
default are dropped; values are converted to what the schema wants (a device to the replay device, a recorded
ScalarType/Layout/MemoryFormat integer is passed through, which torch accepts, an ``int`` list stays a list).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch


class OpUnavailable(Exception):
    """The op cannot be called on this torch build (unknown namespace, name or overload)."""


@dataclass(frozen=True)
class ArgSpec:
    name: str
    type_str: str  # declared type as in the schema, e.g. "Tensor?", "SymInt[]", "ScalarType?"
    kwarg_only: bool
    has_default: bool
    default: Any
    is_write: bool  # Tensor(a!)


@dataclass(frozen=True)
class OpSpec:
    qualified: str  # aten::add.Tensor
    fn: Any  # the callable overload (raw C++ entry when available)
    overload: Any  # torch._ops.OpOverload
    args: tuple[ArgSpec, ...]
    n_returns: int
    returns_list: bool  # returns Tensor[] (one list of tensors)
    inplace: bool


def _declared_types(schema_text: str) -> list[str]:
    """The declared type of each argument, in order, read from the schema text (parse_schema maps
    ScalarType/Layout/MemoryFormat to int, and we need to know which is which)."""
    start = schema_text.index("(")
    depth = 0
    end = start
    for i in range(start, len(schema_text)):
        c = schema_text[i]
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
            if depth == 0:
                end = i
                break
    inner = schema_text[start + 1 : end]
    parts, cur, depth = [], [], 0
    for c in inner:
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
    if cur and "".join(cur).strip():
        parts.append("".join(cur).strip())
    out = []
    for p in parts:
        if p == "*":
            continue
        decl = p.split("=", 1)[0].strip().rsplit(" ", 1)[0].strip()
        # drop alias annotations: Tensor(a!) -> Tensor, Tensor(a)[] -> Tensor[]
        if decl.startswith("Tensor("):
            rest = decl[decl.index(")") + 1 :]
            decl = "Tensor" + rest
        out.append(decl)
    return out


def _parse(schema_text: str) -> Any:
    try:
        return torch._C.parse_schema(schema_text)
    except Exception as e:  # malformed or uses types this torch does not know
        raise OpUnavailable(f"schema does not parse on torch {torch.__version__}: {str(e).splitlines()[0]}") from e


@functools.lru_cache(maxsize=4096)
def resolve(schema_text: str) -> OpSpec:
    """Parse a recorded op schema and find its overload in ``torch.ops``; raises :class:`OpUnavailable`."""
    schema = _parse(schema_text)
    ns, _, name = schema.name.partition("::")
    overload_name = schema.overload_name or "default"
    try:
        packet = getattr(getattr(torch.ops, ns), name)
        overload = getattr(packet, overload_name)
    except (AttributeError, RuntimeError) as e:
        raise OpUnavailable(f"{schema.name}.{overload_name} is not an op in torch {torch.__version__}") from e
    return _spec(schema_text, schema, overload)


@functools.lru_cache(maxsize=256)
def unresolved(schema_text: str) -> OpSpec:
    """The argument binding of an op this torch build does not have (``fn`` and ``overload`` are None): enough
    to bind its recorded arguments for a stand-in that implements it; raises :class:`OpUnavailable` when the
    schema does not parse."""
    return _spec(schema_text, _parse(schema_text), None)


def _spec(schema_text: str, schema: Any, overload: Any) -> OpSpec:
    overload_name = schema.overload_name or "default"
    try:
        declared = _declared_types(schema_text)
    except ValueError:
        declared = [str(a.type) for a in schema.arguments]
    if len(declared) != len(schema.arguments):
        declared = [str(a.type) for a in schema.arguments]
    args = []
    for a, decl in zip(schema.arguments, declared, strict=True):
        has_default = a.has_default_value()
        args.append(
            ArgSpec(
                name=a.name,
                type_str=decl,
                kwarg_only=a.kwarg_only,
                has_default=has_default,
                default=a.default_value if has_default else None,
                is_write=bool(a.alias_info is not None and a.alias_info.is_write),
            )
        )
    rets = schema.returns
    returns_list = len(rets) == 1 and str(rets[0].type).startswith("List[Tensor]")
    fn = getattr(overload, "_op", overload) if overload is not None else None
    inplace = any(x.is_write for x in args) and not any(x.kwarg_only and x.is_write for x in args)
    return OpSpec(
        qualified=f"{schema.name}.{overload_name}",
        fn=fn,
        overload=overload,
        args=tuple(args),
        n_returns=len(rets),
        returns_list=returns_list,
        inplace=inplace,
    )


def is_device_type(type_str: str) -> bool:
    return type_str.startswith("Device")


def defaulted(spec: OpSpec, values: list[Any]) -> frozenset[int]:
    """The recorded arguments a call can leave out because they hold their default (same type and value, not
    written to): the kwarg-only ones, and the positional ones at the end. A keyword argument costs a Python
    call about half a microsecond (``alpha=1`` on every ``add_``), which the original, calling the op from
    C++ inside a composite or the autograd engine, did not pay."""
    def default(i: int) -> bool:
        a = spec.args[i]
        v = values[i]
        # a device stays: the dry run hands the op its own device (meta), the generated line the recorded one
        if not a.has_default or a.is_write or is_device_type(a.type_str) or type(v) is not type(a.default):
            return False
        try:
            same = v == a.default
        except Exception:  # a list holding tensors: not a default
            return False
        return same is True

    drop = {i for i, a in enumerate(spec.args[: len(values)]) if a.kwarg_only and default(i)}
    for i in reversed([i for i, a in enumerate(spec.args[: len(values)]) if not a.kwarg_only]):
        if not default(i):
            break
        drop.add(i)
    return frozenset(drop)


def split_args(spec: OpSpec, values: list[Any], drop: frozenset[int] = frozenset()) -> tuple[list[Any], dict[str, Any]]:
    """Bind recorded argument values by the schema: (positional, kwargs).

    ``values`` holds one entry per recorded input, in schema order. Missing trailing arguments take their
    defaults; kwarg-only ones are passed by name; the arguments in ``drop`` (:func:`defaulted`) are left out.
    Raises ``TypeError`` when there are more values than the schema has arguments.
    """
    if len(values) > len(spec.args):
        raise TypeError(f"{len(values)} recorded arguments for a schema with {len(spec.args)}")
    pos: list[Any] = []
    kw: dict[str, Any] = {}
    for i, a in enumerate(spec.args):
        if i >= len(values):
            if not a.has_default:
                raise TypeError(f"argument {a.name!r} was not recorded and has no default")
            continue
        if i in drop:
            continue
        v = values[i]
        if a.kwarg_only:
            kw[a.name] = v
        else:
            pos.append(v)
    return pos, kw

"""JSON read/write with orjson; atomic writes so a result survives an interrupted run.

:func:`write_json` records: what it writes has its credentials redacted (:mod:`benchmint.core.redact`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import orjson

_OPTS = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def dumps(obj: Any, indent: bool = True) -> bytes:
    return orjson.dumps(obj, default=_default, option=_OPTS if indent else orjson.OPT_SERIALIZE_NUMPY)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared like any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically, with every credential in it replaced by ``***``."""
    from benchmint.core.redact import redact

    # plain JSON values first (to_dict, paths, numpy), so that objects are redacted too
    data = orjson.loads(orjson.dumps(obj, default=_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))
    return atomic_write_bytes(path, dumps(redact(data)) + b"\n")


def read_json(path: str | os.PathLike) -> Any:
    return orjson.loads(Path(path).read_bytes())

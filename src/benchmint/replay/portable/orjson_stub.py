"""The part of orjson that benchmint's JSON helpers use, on the standard library (an exported benchmark's
runner, where orjson is not installed)."""

from __future__ import annotations

import json
from typing import Any

OPT_INDENT_2 = 1
OPT_SERIALIZE_NUMPY = 2
OPT_NON_STR_KEYS = 4
JSONDecodeError = json.JSONDecodeError
JSONEncodeError = TypeError


def dumps(obj: Any, default: Any = None, option: int = 0) -> bytes:
    return json.dumps(obj, default=default, indent=2 if option & OPT_INDENT_2 else None).encode()


def loads(data: bytes | str) -> Any:
    return json.loads(data)

"""Check a LoadGen ``user.conf`` before LoadGen reads it.

LoadGen parses ``model.scenario.key = value`` lines itself and takes what it is given: ``nan`` or a
100,000-digit QPS, a ``min_query_count`` of 10**26. Every value is checked here first: it must be a finite
number of sane size for its key (a count at most :data:`MAX_QUERY_COUNT`, a QPS above 0 and at most
:data:`MAX_QPS`, durations and latencies at most a year); anything else is a
:class:`~benchmint.core.errors.UserError` naming the file, the line and the key.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from benchmint.core.errors import UserError

__all__ = ["MAX_QPS", "MAX_QUERY_COUNT", "check_user_conf", "check_value"]

MAX_QUERY_COUNT = 1 << 32  # ~4.3e9 queries: days at a million QPS
MAX_QPS = 1e9
_YEAR_MS = 365 * 24 * 3600 * 1000
_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
_LINE = re.compile(r"^\s*([^=\s]+)\s*=\s*(.*?)\s*$")


def _kind(key: str) -> tuple[str, float, float]:
    """(integer | number, lowest, highest) for a setting's last name part."""
    if key.endswith("qps"):
        return "number", 0.0, MAX_QPS
    if "count" in key or key in ("samples_per_query", "max_async_queries") or key.startswith("performance_issue"):
        return "integer", 0, MAX_QUERY_COUNT
    if key.endswith("duration"):
        return "integer", 0, _YEAR_MS
    if key in ("ttft_latency", "tpot_latency"):  # nanoseconds
        return "integer", 0, _YEAR_MS * 1_000_000
    if key.endswith("latency"):  # milliseconds
        return "number", 0, _YEAR_MS
    if key.endswith("percentile"):
        return "number", 0, 100
    if key.endswith("seed"):
        return "integer", 0, (1 << 64) - 1
    return "number", -(2.0**63), 2.0**63


def check_value(key: str, text: str, where: str) -> float:
    """The value of setting ``key`` (its last name part: ``target_qps``) written as ``text``; a
    :class:`UserError` naming ``where`` when it is not a finite number in range for that key."""
    kind, lo, hi = _kind(key)
    shown = text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"
    if not _NUMBER.match(text):
        raise UserError(f"{where}: {key} = {shown} is not a number; write a plain number such as 10 or 2.5")
    x = float(text)  # a numeral of thousands of digits is inf here, out of every range
    if kind == "integer" and math.isfinite(x) and x != int(x):
        raise UserError(f"{where}: {key} = {shown} must be a whole number")
    if key.endswith("qps") and x <= 0:
        raise UserError(f"{where}: {key} = {shown} must be greater than 0")
    if not (math.isfinite(x) and lo <= x <= hi):
        raise UserError(f"{where}: {key} = {shown} is out of range ({lo:g} to {hi:g})")
    return x


def check_user_conf(path: str | os.PathLike) -> None:
    """Raise a one-line :class:`UserError` for the first line of a user.conf LoadGen would misread: not
    ``model.scenario.key = value``, or a value that is not a sane number for its key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"--user-conf {p}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise UserError(f"--user-conf {p}: not a text file; give a LoadGen user.conf") from None
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _LINE.match(line)
        where = f"{p}:{n}"
        if not m or m[1].count(".") < 2:
            raise UserError(f"{where}: {line[:60]!r} is not a 'model.scenario.key = value' line")
        check_value(m[1].rsplit(".", 1)[1], m[2], where)

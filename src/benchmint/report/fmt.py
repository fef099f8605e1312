"""Human-readable numbers for the report: durations in µs/ms/s/min, bytes in KiB/MiB/GiB, counts as 182 K /
1.3 M / 7 B, rates with their unit, fractions as percentages. Every function takes what a record holds
(seconds, bytes, plain counts; possibly ``None`` or text) and returns a short string; ``""`` for nothing."""

from __future__ import annotations

import math
from typing import Any

SIG = 3  # significant digits of a formatted figure


def as_float(v: Any) -> float | None:
    """A finite float, or ``None`` (booleans, text, NaN and infinities are no numbers here)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _sig(f: float, digits: int = SIG) -> str:
    """``f`` to ``digits`` significant digits, without an exponent for ordinary magnitudes and without
    trailing zeros (12.0 -> "12", 0.01234 -> "0.0123", 1234.5 -> "1,234")."""
    if f == 0:
        return "0"
    if abs(f) >= 1000 or abs(f) >= 10 ** digits:
        return f"{f:,.0f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(f))))
    text = f"{f:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    # rounding may carry into one more digit (9.996 -> "10.00"): fine, the zeros were stripped
    return text


def number(v: Any, digits: int = SIG) -> str:
    """A plain number: integers as they are (with thousands separators), others to ``digits`` significant
    digits; text is returned unchanged."""
    f = as_float(v)
    if f is None:
        return "" if v is None else str(v)
    if f.is_integer() and abs(f) < 1e15:
        return f"{int(f):,}"
    return _sig(f, digits)


def duration(seconds: Any) -> str:
    """12.3 ms, 450 µs, 5.82 s, 2 min 5 s, 1 h 3 min."""
    f = as_float(seconds)
    if f is None:
        return "" if seconds is None else str(seconds)
    a = abs(f)
    sign = "-" if f < 0 else ""
    if a == 0:
        return "0 s"
    if a < 1e-6:
        return f"{_sig(f * 1e9)} ns"
    if a < 1e-3:
        return f"{_sig(f * 1e6)} µs"
    if a < 1:
        return f"{_sig(f * 1e3)} ms"
    if a < 60:
        return f"{_sig(f)} s"
    if a < 3600:
        m, s = divmod(round(a), 60)
        return f"{sign}{m} min {s} s" if s else f"{sign}{m} min"
    h, rest = divmod(round(a), 3600)
    m = rest // 60
    return f"{sign}{h} h {m} min" if m else f"{sign}{h} h"


_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(n_bytes: Any) -> str:
    """Bytes in powers of 1024: 5.69 MiB, 23.5 GiB, 512 B."""
    f = as_float(n_bytes)
    if f is None:
        return "" if n_bytes is None else str(n_bytes)
    i = 0
    a = abs(f)
    while a >= 1024 and i < len(_BYTE_UNITS) - 1:
        a /= 1024
        f /= 1024
        i += 1
    return f"{int(f)} B" if i == 0 else f"{_sig(f)} {_BYTE_UNITS[i]}"


_COUNT_UNITS = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))


def count(v: Any) -> str:
    """A large count the way model sizes are said: 182 K, 1.3 M, 7 B (below 1,000 as it is)."""
    f = as_float(v)
    if f is None:
        return "" if v is None else str(v)
    for scale, unit in _COUNT_UNITS:
        if abs(f) >= scale:
            return f"{_sig(f / scale)} {unit}"
    return number(f)


def rate(v: Any, unit: str = "/s") -> str:
    """A rate with its unit: ``rate(109.97, "tok/s")`` -> "110 tok/s", ``rate(12345.6, "tok/s")`` ->
    "12,346 tok/s", ``rate(2.5e6, "tok/s")`` -> "2.5 M tok/s"."""
    f = as_float(v)
    if f is None:
        return "" if v is None else str(v)
    text = count(f) if abs(f) >= 1e6 else _sig(f)
    return f"{text} {unit}".strip()


def percent(v: Any, signed: bool = False, decimals: int = 1) -> str:
    """A fraction as a percentage: 0.95 -> "95.0%"; ``signed``: -0.031 -> "-3.1%", 0.04 -> "+4.0%"."""
    f = as_float(v)
    if f is None:
        return "" if v is None else str(v)
    return f"{f:+.{decimals}%}" if signed else f"{f:.{decimals}%}"


def yes_no(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return "" if v is None else str(v)


def fmt_value(key: str, v: Any) -> str:
    """Format a flattened column's value (``metrics__ttft_s__p99`` ...) by the unit its name carries:
    ``_s`` -> a duration, ``per_s`` -> a rate, ``_bytes`` -> KiB/MiB/GiB, ``parameter_count`` -> 182 K,
    error -> signed %, coverage and fractions -> %, lists joined with "; "."""
    if v is None or v == "":
        return ""
    if isinstance(v, bool):
        return yes_no(v)
    if isinstance(v, list | tuple):
        return "; ".join(fmt_value(key, x) for x in v)
    f = as_float(v)
    if f is None:
        return str(v)
    last = key.rsplit("__", 1)[-1]
    if last == "error" or key.endswith("__error"):
        return percent(f, signed=True)
    if "coverage" in key or last in ("fraction", "kineto_matched") or last.endswith("_fraction"):
        return percent(f)
    if "per_s" in key:
        return rate(f, "")
    if key.endswith("_bytes") or "_bytes__" in key:
        return size(f)
    if key.endswith("parameter_count"):
        return count(f)
    if key.endswith("_s") or "_s__" in key:
        return duration(f)
    return number(f)


def by_unit(unit: str, v: Any, key: str = "") -> str:
    """Format ``v`` by the unit a metric declares (results/metric_table.py): "s" -> a duration, "fraction" ->
    a percentage (signed for an error), "bytes" -> KiB/MiB/GiB, rates ("req/s", "tokens/s") and counts -> a
    number (the column's title names the rate's unit)."""
    if as_float(v) is None or isinstance(v, bool):
        return fmt_value(key, v)
    if unit == "s":
        return duration(v)
    if unit == "fraction":
        return percent(v, signed=key.endswith("error"))
    if unit == "bytes":
        return size(v)
    if unit.endswith("/s"):
        return rate(v, "")
    return number(v)

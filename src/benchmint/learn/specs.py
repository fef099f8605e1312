"""The accelerator spec table shipped in ``benchmint/data/accelerators.csv`` and the normalizer that maps free-text
accelerator names (MLPerf submissions, ``nvidia-smi``, user input) to the table's names.

Every figure is a vendor's public spec-sheet value for dense math, per accelerator; an empty cell is unknown
(never a guess). ``normalize_accelerator("NVIDIA H100-SXM-80GB")`` -> ``"NVIDIA H100 SXM 80GB"``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

NUMERIC = ("fp4_tflops", "fp8_tflops", "fp16_tflops", "bf16_tflops", "int8_tops", "memory_gb", "memory_bw_gbs",
           "interconnect_gbs", "tdp_w")
# the precision a model runs in -> the spec column that bounds its matrix math
PRECISION_COLUMN = {"fp4": "fp4_tflops", "int4": "int8_tops", "fp8": "fp8_tflops", "int8": "int8_tops",
                    "fp16": "fp16_tflops", "bf16": "bf16_tflops", "fp32": "fp16_tflops"}
# when the precision's own figure is unknown, the next one up (what a kernel would fall back to)
FALLBACK = {"fp4_tflops": "fp8_tflops", "fp8_tflops": "fp16_tflops", "int8_tops": "fp16_tflops",
            "bf16_tflops": "fp16_tflops", "fp16_tflops": "bf16_tflops"}


@dataclass(frozen=True)
class Accelerator:
    name: str
    vendor: str
    kind: str
    specs: dict[str, float | None]
    launch_date: str
    aliases: tuple[str, ...]
    source: str
    transcribed: str

    def peak_tflops(self, precision: str | None) -> float | None:
        """Dense matrix TFLOP/s at a precision (``fp8``, ``bf16``, ...), falling back one step up when the sheet
        gives no figure for it (fp4 -> fp8 -> fp16)."""
        col = PRECISION_COLUMN.get(normalize_precision(precision) or "fp16", "fp16_tflops")
        seen = set()
        while col and col not in seen:
            seen.add(col)
            v = self.specs.get(col)
            if v:
                return v
            col = FALLBACK.get(col)
        return None


def normalize_text(text: str) -> str:
    """Lower case, every run of non-alphanumeric characters one space."""
    return re.sub(r"[^a-z0-9+]+", " ", str(text).lower()).strip()


def data_rows(name: str) -> csv.DictReader:
    """The rows of the shipped table ``benchmint/data/NAME`` (blank and ``#`` lines skipped)."""
    text = resources.files("benchmint").joinpath(f"data/{name}").read_text(encoding="utf-8")
    return csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#"))


def name_patterns(aliases: str, name: str) -> list[re.Pattern[str]]:
    """Whole-word patterns for a row: its ``|``-separated alias regexes and its normalized name."""
    return [re.compile(rf"(?<![a-z0-9])(?:{alias})(?![a-z0-9])")
            for alias in (*[a for a in aliases.split("|") if a], re.escape(normalize_text(name)))]


def name_table(name: str, name_column: str, make: Callable[[dict[str, str]], Any]) -> tuple[tuple[re.Pattern[str], Any], ...]:
    """(pattern, row) pairs for :func:`longest_match` from the shipped table ``name``: ``make`` turns a CSV row
    into the row object, matched by the row's aliases and its ``name_column``."""
    out = []
    for r in data_rows(name):
        row = make(r)
        out.extend((pat, row) for pat in name_patterns(r["aliases"], r[name_column]))
    return tuple(out)


def longest_match(text: str, table: tuple[tuple[re.Pattern, Any], ...]) -> Any:
    """The row of ``table`` ((pattern, row) pairs) whose pattern matches the longest part of ``text``; None."""
    best: tuple[int, Any] | None = None
    for pat, row in table:
        m = pat.search(text)
        if m and (best is None or len(m.group(0)) > best[0]):
            best = (len(m.group(0)), row)
    return best[1] if best else None


def normalize_precision(text: Any) -> str | None:
    """``bfloat16`` -> ``bf16``, ``float16`` -> ``fp16``, ``FP8`` -> ``fp8``; None when unknown."""
    if text is None or (isinstance(text, float) and text != text):
        return None
    t = str(text).strip().lower().replace("_", "").replace("-", "")
    table = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "half": "fp16",
             "float32": "fp32", "fp32": "fp32", "float": "fp32", "fp8": "fp8", "float8": "fp8", "int8": "int8",
             "fp4": "fp4", "nvfp4": "fp4", "mxfp4": "fp4", "int4": "int4", "w4a16": "int4", "w8a8": "int8"}
    if t in table:
        return table[t]
    for key in ("fp4", "fp8", "int4", "int8", "bf16", "fp16", "fp32"):
        if key in t:
            return key
    return None


def _num(v: str) -> float | None:
    v = (v or "").strip()
    return float(v) if v else None


@lru_cache(maxsize=1)
def spec_table() -> tuple[Accelerator, ...]:
    rows = data_rows("accelerators.csv")
    return tuple(
        Accelerator(
            name=r["name"], vendor=r["vendor"], kind=r["kind"], specs={k: _num(r[k]) for k in NUMERIC},
            launch_date=r["launch_date"], aliases=tuple(a for a in r["aliases"].split("|") if a),
            source=r["source"], transcribed=r["transcribed"],
        )
        for r in rows
    )


@lru_cache(maxsize=1)
def _patterns() -> tuple[tuple[re.Pattern[str], Accelerator], ...]:
    out = []
    for acc in spec_table():
        for alias in (*acc.aliases, re.escape(normalize_text(acc.name))):
            out.append((re.compile(rf"(?<![a-z0-9])(?:{alias})(?![a-z0-9])"), acc))
    return tuple(out)


@lru_cache(maxsize=4096)
def find_accelerator(name: str | None) -> Accelerator | None:
    """The table's row for a free-text accelerator name (the longest alias match wins); None when no row
    matches."""
    if not name or (isinstance(name, float) and name != name):
        return None
    return longest_match(normalize_text(name), _patterns())


def normalize_accelerator(name: str | None) -> str | None:
    """The table's name for a free-text accelerator name, or None."""
    acc = find_accelerator(name)
    return acc.name if acc else None


def by_name() -> dict[str, Accelerator]:
    return {a.name: a for a in spec_table()}

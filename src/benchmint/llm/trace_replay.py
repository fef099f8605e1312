"""Arrival-trace replay: ``--trace PATH`` sends requests at the trace's recorded times with its recorded lengths.

Formats (picked by the file's suffix):

- Mooncake (``.jsonl``; the format of the FAST'25 Mooncake traces): one JSON object a line with ``timestamp``
  (milliseconds from the trace start), ``input_length``, ``output_length`` and ``hash_ids`` (ids of the
  prompt's blocks of ``--trace-block-tokens`` tokens, 512 in Mooncake's traces; requests listing the same id
  share that block of their prompt);
- BurstGPT (``.csv``; the format of the BurstGPT Azure OpenAI traces): columns ``Timestamp`` (seconds from the
  trace start), ``Request tokens``, ``Response tokens`` (others, such as ``Model`` and ``Log Type``, are kept
  out). It has no block ids: prompts share nothing.

Prompts are synthesized to the recorded input length from whole tokens (:mod:`benchmint.llm.tokentext`):
block ``h`` is the same text in every request that lists ``h`` (drawn from a generator seeded by the run's
seed and ``h``); the rest of a prompt is the request's own. ``max_tokens`` is the recorded output length (at
least 1; a recorded prompt of 0 tokens is sent as 1 token). The schedule is the trace's: request ``i`` is
sent at ``(t_i - t_first) / speed`` seconds after the run's start, where ``t_first`` is the first timestamp in ``--trace-window START:END`` (seconds of trace time,
end excluded). Timestamps must be non-negative and sorted.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmint.core.errors import UserError
from benchmint.llm.schedule import Schedule
from benchmint.llm.tokentext import TokenText
from benchmint.llm.types import GenRequest
from benchmint.llm.workload import Workload

MOONCAKE_BLOCK_TOKENS = 512


@dataclass(frozen=True)
class TraceRow:
    t_s: float
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ShapedSchedule(Schedule):
    """A precomputed schedule that describes itself with its own fields (trace replay, rate ramp)."""

    info: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> dict:
        d = super().describe()
        d.update(dict(self.info))
        return d


def load_trace(path: str | Path) -> tuple[list[TraceRow], str]:
    """Rows of a Mooncake JSONL or BurstGPT CSV trace, checked: (rows, format)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--trace {p}: no such file")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows, fmt = _mooncake(p), "mooncake"
    elif suffix == ".csv":
        rows, fmt = _burstgpt(p), "burstgpt"
    else:
        raise UserError(f"--trace {p}: unknown trace format {suffix!r}; use a Mooncake .jsonl or a BurstGPT .csv")
    if not rows:
        raise UserError(f"--trace {p}: the trace has no requests")
    prev = None
    for i, r in enumerate(rows, 1):
        where = f"--trace {p} ({'line' if fmt == 'mooncake' else 'row'} {i})"
        if not math.isfinite(r.t_s) or r.t_s < 0:
            raise UserError(f"{where}: timestamp {r.t_s:g} is negative; timestamps count from the trace start")
        if prev is not None and r.t_s < prev:
            raise UserError(f"{where}: timestamp {r.t_s:g} s comes before the previous one ({prev:g} s); sort the trace by time")
        if r.input_tokens < 0:
            raise UserError(f"{where}: input length {r.input_tokens} is negative")
        prev = r.t_s
    return rows, fmt


def _mooncake(p: Path) -> list[TraceRow]:
    rows = []
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                o = json.loads(line)
                rows.append(TraceRow(float(o["timestamp"]) / 1000.0, _len(o["input_length"]),
                                     max(1, int(o["output_length"])), tuple(int(h) for h in o.get("hash_ids") or ())))
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:  # 1e400 -> int(inf)
                what = f"missing field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
                raise UserError(f"--trace {p} (line {i}): not a Mooncake record ({what}); each line needs "
                                "timestamp (ms), input_length, output_length, hash_ids") from None
    return rows


def _burstgpt(p: Path) -> list[TraceRow]:
    import pandas as pd

    try:
        df = pd.read_csv(p)
    except (OSError, ValueError) as e:
        raise UserError(f"--trace {p}: cannot read the CSV ({type(e).__name__}: {e})") from None
    need = ("Timestamp", "Request tokens", "Response tokens")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise UserError(f"--trace {p}: no column {', '.join(repr(c) for c in missing)}; a BurstGPT trace has "
                        "Timestamp, Request tokens, Response tokens")
    try:
        return [TraceRow(float(t), _len(i), max(1, int(o)))
                for t, i, o in zip(df["Timestamp"], df["Request tokens"], df["Response tokens"], strict=True)]
    except (ValueError, TypeError, OverflowError) as e:
        raise UserError(f"--trace {p}: a value is not a finite number ({e})") from None


def _len(v: Any) -> int:
    """A recorded prompt length; 0 (BurstGPT logs some failed requests so) is sent as a 1-token prompt."""
    n = int(v)
    return n if n < 0 else max(1, n)


def parse_window(spec: str | None) -> tuple[float, float]:
    if not spec:
        return 0.0, math.inf
    a, sep, b = spec.partition(":")
    try:
        lo = float(a) if a.strip() else 0.0
        hi = float(b) if b.strip() else math.inf
    except ValueError:
        lo, hi = -1.0, -1.0
    if not sep or lo < 0 or hi <= lo:
        raise UserError(f"--trace-window {spec!r}: use START:END in seconds of trace time, START < END (either may be empty)")
    return lo, hi


def select(rows: list[TraceRow], window: str | None, speed: float, num_requests: int | None,
           duration_s: float | None) -> tuple[list[TraceRow], np.ndarray]:
    """The rows replayed and their send offsets (seconds from the run's start)."""
    if not speed or speed <= 0 or not math.isfinite(speed):
        raise UserError("--trace-speed must be > 0 (2 replays twice as fast, 0.5 at half speed)")
    lo, hi = parse_window(window)
    sel = [r for r in rows if lo <= r.t_s < hi]
    if not sel:
        raise UserError(f"--trace-window {window}: no request of the trace falls in it "
                        f"(the trace spans {rows[0].t_s:g} to {rows[-1].t_s:g} s)")
    if num_requests is not None:
        sel = sel[:num_requests]
    t0 = sel[0].t_s
    offs = np.array([(r.t_s - t0) / speed for r in sel], dtype=np.float64)
    if duration_s is not None:
        keep = int(np.searchsorted(offs, duration_s, side="left"))
        sel, offs = sel[:keep], offs[:keep]
    return sel, offs


def trace_schedule(path: str, *, speed: float = 1.0, window: str | None = None, num_requests: int | None = None,
                   duration_s: float | None = None, seed: int = 0) -> tuple[ShapedSchedule, list[TraceRow], str]:
    rows, fmt = load_trace(path)
    sel, offs = select(rows, window, speed, num_requests, duration_s)
    span = float(offs[-1]) if len(offs) else 0.0
    info = (("arrival", f"trace ({fmt})"), ("trace_path", str(path)), ("trace_format", fmt),
            ("trace_speed", speed), ("trace_window", window), ("trace_rows", len(rows)),
            ("trace_sha256", hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()[:16]),
            ("offered_rate_per_s", (len(offs) - 1) / span if span > 0 else None))
    return ShapedSchedule("trace", offs, 0, len(offs), duration_s, None, 1.0, seed, info=info), sel, fmt


def trace_workload(rows: list[TraceRow], tokenizer: Any, *, seed: int = 0, block_tokens: int = MOONCAKE_BLOCK_TOKENS,
                   api: str = "completions", ignore_eos: bool = True, fmt: str = "mooncake") -> Workload:
    """One request per trace row, prompts synthesized to the recorded lengths with shared blocks shared."""
    if block_tokens < 1:
        raise UserError("--trace-block-tokens must be at least 1")
    tt = TokenText.of(tokenizer)
    blocks: dict[int, list[int]] = {}
    reqs = []
    shared = 0
    for i, r in enumerate(rows):
        idx: list[int] = []
        for h in r.hash_ids:
            if len(idx) >= r.input_tokens:
                break
            if h not in blocks:
                blocks[h] = tt.random(block_tokens, np.random.default_rng([seed, 1, h]))
            else:
                shared += min(block_tokens, r.input_tokens - len(idx))
            idx.extend(blocks[h])
        idx = idx[: r.input_tokens]
        idx.extend(tt.random(r.input_tokens - len(idx), np.random.default_rng([seed, 2, i])))
        text = tt.text(idx)
        prompt: str | list[dict[str, str]] = [{"role": "user", "content": text}] if api == "chat" else text
        reqs.append(GenRequest(id=i, prompt=prompt, max_tokens=r.output_tokens,
                               input_tokens=r.input_tokens if tt.exact and api != "chat" else None,
                               ignore_eos=ignore_eos))
    total = sum(r.input_tokens for r in rows)
    source = {"trace_format": fmt, "trace_block_tokens": block_tokens, "input_tokens_exact": tt.exact,
              "api": api, "trace_blocks": len(blocks),
              "trace_shared_block_tokens": shared,
              "expected_cacheable_fraction": shared / total if total else None}
    return Workload(name=f"trace:{fmt}", requests=reqs, source=source)

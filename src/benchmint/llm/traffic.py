"""The shapes of traffic ``llm bench`` drives beyond independent prompts, joined to the benchmark's run.

:mod:`benchmint.llm.bench` calls in here at four points: the schedule (:func:`schedule_for`: trace replay,
ramps, sessions' arrivals), the workload (:func:`workload_for` and :func:`prompt_hook`: trace prompts,
sessions, shared prefixes), the driver (:func:`drive` for sessions and the concurrency ramp) and the extra
result blocks (:func:`after_run`: ``sessions``, ``windows``, ``prefix_cache``; :func:`fingerprint`: the
workload's hash and the parameters that regenerate it).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from benchmint.core.errors import UserError
from benchmint.core.gcpause import gc_paused
from benchmint.llm import prefixes, ramp, sessions, trace_replay
from benchmint.llm.requests_driver import generate
from benchmint.llm.schedule import Schedule, make_schedule
from benchmint.llm.types import Backend, GenRequest, RequestRecord
from benchmint.llm.windows import window_metrics
from benchmint.llm.workload import Workload, parse_length

BenchConfig = Any  # benchmint.llm.bench.BenchConfig (not imported: bench imports this module)

MAX_LAZY_SESSIONS = 4096  # synthetic sessions made for a duration-bound closed-loop run
WINDOWED = ("ramp", "concurrency-ramp", "trace")
PARAM_KEYS = (
    "dataset", "input_tokens", "output_tokens", "seed", "scenario", "rate", "burstiness", "concurrency",
    "num_requests", "duration_s", "api", "system_prompt", "sessions", "num_sessions", "session_turns", "think_time",
    "prefix_groups", "prefix_tokens", "trace", "trace_speed", "trace_window", "trace_block_tokens", "rate_start",
    "rate_end", "ramp_duration_s", "concurrency_start", "concurrency_end",
)


@dataclass
class SessionWorkload(Workload):
    sessions: list[sessions.Session] = field(default_factory=list)


def kind(cfg: BenchConfig) -> str:
    if cfg.trace:
        return "trace"
    if cfg.sessions:
        return "sessions"
    if cfg.prefix_groups:
        return "prefix-groups"
    return "dataset"


def check(cfg: BenchConfig) -> None:
    prefixes.check_prefix_args(cfg.prefix_groups, cfg.prefix_tokens)
    given = [n for n, v in (("--trace", cfg.trace), ("--sessions", cfg.sessions), ("--prefix-groups", cfg.prefix_groups)) if v]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)} cannot be combined in one run; pick one workload shape")
    if cfg.prefix_groups and cfg.dataset == "synthetic":  # before any model is loaded, where the lengths tell
        d = parse_length(cfg.input_tokens or "128", "--input-tokens")
        if d is not None and d.kind != "normal" and d.a <= (cfg.prefix_tokens or 0):
            raise UserError(f"--prefix-tokens {cfg.prefix_tokens} is as long as the prompt or longer (--input-tokens "
                            f"{d.spec}); use a shorter prefix or longer prompts")
    if cfg.sessions and cfg.num_requests is not None:
        raise UserError("--num-requests counts single requests; with --sessions give --num-sessions (or --duration)")
    if cfg.sessions and cfg.scenario.replace("_", "-") == "concurrency-ramp":
        raise UserError("--sessions runs under server, constant, offline, ramp, single-stream or concurrency, "
                        "not concurrency-ramp")


def schedule_for(cfg: BenchConfig) -> Schedule:
    """The run's schedule; for sessions, one entry per session (turns follow answers, not the schedule)."""
    check(cfg)
    sc = cfg.scenario.lower().replace("_", "-")
    if cfg.trace:
        return trace_replay.trace_schedule(cfg.trace, speed=cfg.trace_speed, window=cfg.trace_window,
                                           num_requests=cfg.num_requests, duration_s=cfg.duration_s, seed=cfg.seed)[0]
    n = cfg.num_requests
    if cfg.sessions:
        cfg.api = "chat"  # a session is a conversation: its history goes as chat messages
        if cfg.sessions == "synthetic":
            # a duration-bound run or a ramp: as many sessions as arrive
            n = cfg.num_sessions or (None if cfg.duration_s or sc == "ramp" else 8)
        else:
            n = cfg.num_sessions or len(_session_file(cfg))
    if sc == "ramp":
        sched: Schedule = ramp.rate_ramp_schedule(cfg.rate_start, cfg.rate_end, cfg.ramp_duration_s, cfg.seed, n)
    elif sc == "concurrency-ramp":
        sched = ramp.concurrency_ramp_schedule(cfg.concurrency_start, cfg.concurrency_end, cfg.ramp_duration_s, cfg.seed)
    else:
        sched = make_schedule(cfg.scenario, num_requests=n, duration_s=cfg.duration_s, rate=cfg.rate,
                              burstiness=cfg.burstiness, concurrency=cfg.concurrency, seed=cfg.seed)
    if cfg.sessions == "synthetic" and not cfg.num_sessions:
        cfg.num_sessions = min(sched.count, MAX_LAZY_SESSIONS)
    return sched


def _session_file(cfg: BenchConfig) -> list[sessions.Session]:
    return sessions.load_session_file(cfg.sessions, cfg.output_tokens, cfg.think_time, cfg.seed, cfg.num_sessions)


def prompt_hook(cfg: BenchConfig, tokenizer: Any) -> Any:
    if not cfg.prefix_groups:
        return None
    return prefixes.prefix_hook(cfg.prefix_groups, cfg.prefix_tokens or 0, tokenizer, cfg.seed,
                                cfg.dataset == "synthetic", cfg.input_tokens)


def workload_for(cfg: BenchConfig, api: str, tokenizer: Any) -> Workload | None:
    """The trace's or the sessions' workload; None for the ordinary datasets (prefixes go through prompt_hook)."""
    if cfg.trace:
        rows, fmt = trace_replay.load_trace(cfg.trace)
        sel, _ = trace_replay.select(rows, cfg.trace_window, cfg.trace_speed, cfg.num_requests, cfg.duration_s)
        return trace_replay.trace_workload(sel, tokenizer, seed=cfg.seed, block_tokens=cfg.trace_block_tokens,
                                           api=api, ignore_eos=cfg.ignore_eos, fmt=fmt)
    if cfg.sessions:
        if cfg.sessions == "synthetic":
            ss = sessions.synthetic_sessions(cfg.num_sessions or 8, cfg.session_turns, cfg.input_tokens,
                                             cfg.output_tokens, cfg.think_time, tokenizer, cfg.seed)
            src = {"session_turns": cfg.session_turns, "user_tokens": cfg.input_tokens or "64"}
        else:
            ss = _session_file(cfg)
            src = {"dataset_path": cfg.sessions,
                   "dataset_hash": hashlib.sha256(Path(cfg.sessions).expanduser().read_bytes()).hexdigest()[:16]}
        src.update(think_time=sessions.parse_think(cfg.think_time).spec, output_tokens=cfg.output_tokens)
        base = sessions.sessions_workload(ss, name=f"sessions:{cfg.sessions}", ignore_eos=cfg.ignore_eos, source=src)
        return SessionWorkload(base.name, base.requests, base.source, sessions=ss)
    return None


def drives(cfg: BenchConfig, sched: Schedule) -> bool:
    return bool(cfg.sessions) or sched.scenario == "concurrency-ramp"


async def drive(cfg: BenchConfig, backend: Backend, sched: Schedule, wl: Workload, warm: list[GenRequest],
                stop: asyncio.Event, after_warmup: Any = None) -> tuple[list[RequestRecord], int, bool]:
    """Warm-up, then the sessions or the concurrency ramp; (records, start_ns, interrupted); ``after_warmup``
    is called between the two (a server-metrics snapshot)."""
    records: list[RequestRecord] = []
    for req in warm:
        if stop.is_set():  # Ctrl-C during the warm-up: no more warm-up, and the measured requests are cancelled
            break
        rec = await generate(backend.generate, req)
        rec.warmup, rec.scheduled_ns = True, rec.sent_ns
        records.append(rec)
    if warm and after_warmup is not None:
        after_warmup()
    with gc_paused(freeze=True):  # as llm bench's own drivers: no collector pass while requests are in flight
        if isinstance(wl, SessionWorkload):
            start = await sessions.drive_sessions(backend, wl.sessions, sched, stop, records, cfg.ignore_eos)
        else:
            start = await ramp.drive_concurrency_ramp(backend, sched, wl.requests, stop, records)  # type: ignore[arg-type]
    return records, start, stop.is_set()


async def before_run(cfg: BenchConfig, http: bool, scraping: bool = False) -> dict[str, float] | None:
    """The prefix-cache counters before the run, when no server-metrics scraper reads them (``scraping``)."""
    if http and (cfg.prefix_groups or cfg.trace) and not scraping:
        return await prefixes.scrape_prefix_counters(cfg.url, api_key=cfg.api_key)
    return None


def planned_load(cfg: BenchConfig, scenario: str) -> tuple[str, Any] | None:
    """What a ramp planned at each time from the start (:mod:`benchmint.llm.ramp`): its rate, or its requests in
    flight; None for a schedule that plans no load curve (an arrival trace)."""
    s = cfg.ramp_duration_s
    if not s or s <= 0:
        return None
    if scenario == "ramp" and cfg.rate_start is not None and cfg.rate_end is not None:
        a, b = float(cfg.rate_start), float(cfg.rate_end)
        return "planned_rate_per_s", lambda t: ramp.planned_rate_per_s(t, a, b, s)
    if scenario == "concurrency-ramp" and cfg.concurrency_start is not None and cfg.concurrency_end is not None:
        c0, c1 = int(cfg.concurrency_start), int(cfg.concurrency_end)
        return "planned_concurrency", lambda t: ramp.planned_concurrency(t, c0, c1, s)
    return None


async def after_run(cfg: BenchConfig, records: list[RequestRecord], start: int, sched: Schedule, wl: Workload,
                    measured: list[GenRequest], before: dict[str, float] | None, http: bool,
                    server_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The extra result blocks of this run's shape; ``server_metrics``: the run's scraper's block, when it ran
    (the prefix-cache hit rate comes from it rather than from a second scrape)."""
    out: dict[str, Any] = {}
    if isinstance(wl, SessionWorkload):
        out["sessions"] = sessions.session_metrics(records, wl.sessions, cfg.anchor)
    if sched.scenario in WINDOWED:
        span = cfg.ramp_duration_s if sched.scenario != "trace" else None
        out["windows"] = window_metrics(records, start, 10, cfg.anchor, span, planned_load(cfg, sched.scenario))
    if cfg.prefix_groups or cfg.trace:
        if cfg.trace:
            exp = {k: wl.source.get(k) for k in ("trace_block_tokens", "trace_shared_block_tokens",
                                                 "expected_cacheable_fraction")}
        else:
            exp = prefixes.cacheable_fraction(measured, len(wl.requests), cfg.prefix_groups or 1, cfg.prefix_tokens or 0)
        if http and server_metrics is not None:
            server = prefixes.hit_rate_from_server_metrics(server_metrics)
        elif http:
            after = await prefixes.scrape_prefix_counters(cfg.url, api_key=cfg.api_key)
            server = prefixes.measured_hit_rate(before, after)
        else:
            server = {"measured_hit_rate": None,
                      "source": "benchmint's in-process engine has no prefix cache: every prompt is prefilled in full"}
        out["prefix_cache"] = {**exp, **server}
    return out


def fingerprint(cfg: BenchConfig, wl: Workload, sched: Schedule) -> dict[str, Any]:
    """A hash of everything the run sends (prompts, lengths, think times, send offsets) and its parameters."""
    params = {k: getattr(cfg, k, None) for k in PARAM_KEYS}
    h = hashlib.sha256()
    h.update(orjson.dumps(params, option=orjson.OPT_SORT_KEYS))
    for r in wl.requests:
        h.update(orjson.dumps([r.prompt, r.max_tokens]))
    for s in getattr(wl, "sessions", ()):
        h.update(orjson.dumps([s.system, [[t.user, t.max_tokens, round(t.think_s, 9)] for t in s.turns]]))
    if sched.offsets_s is not None:
        h.update(np.round(np.asarray(sched.offsets_s, dtype=np.float64), 9).tobytes())
    return {"workload_kind": kind(cfg), "workload_hash": h.hexdigest()[:32], "workload_params": params}


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Console lines for the extra blocks (sessions, windows, prefix cache)."""
    lines = []
    s = result.get("sessions")
    if s:
        d = s["session_duration_s"]
        lines.append(f"sessions: {s['completed']}/{s['planned']} completed, {s['turns_sent']} turns; session duration "
                     f"p50 {_f(d.get('p50'))} s")
        lines.append("TTFT p50 by turn: " + ", ".join(
            f"{t['turn']}: {_f(t['ttft_s'].get('p50'), 1000)} ms ({_f(t['input_tokens_mean'], 1, 0)} tok)" for t in s["by_turn"]))
        g = s["ttft_growth"]
        if g.get("slope_s_per_1k_input_tokens") is not None:
            lines.append(f"TTFT growth with history: {g['slope_s_per_1k_input_tokens'] * 1000:.2f} ms per 1k prompt tokens")
    w = result.get("windows")
    if w and w.get("windows"):
        ws = w["windows"]
        key, what = (("planned_rate_per_s", "planned req/s") if "planned_rate_per_s" in ws[0] else
                     ("planned_concurrency", "planned in flight") if "planned_concurrency" in ws[0] else
                     ("offered_rate_per_s", "offered req/s"))
        lines.append(f"TTFT p50 over time, {len(ws)} windows of {_f(w.get('width_s'), 1, 2)} s ({what}: ms, "
                     "requests): " + ", ".join(f"{_f(x[key], 1, 1)}: {_f(x['ttft_s']['p50'], 1000)} ({x['scheduled']})"
                                               for x in ws))
        b = w.get("latency_bend")
        lines.append("latency bend: " + (f"window {b['window']} at {b['start_s']:.1f} s ({what} "
                                         f"{_f(b.get(key), 1, 1)})" if b else "none (TTFT p50 never doubled)"))
    p = result.get("prefix_cache")
    if p:
        lines.append(f"prefix cache: expected cacheable fraction {_f(p.get('expected_cacheable_fraction'), 1, 3)}, "
                     f"measured hit rate {_f(p.get('measured_hit_rate'), 1, 3)} ({p.get('source')})")
    return lines


def _f(v: Any, scale: float = 1.0, nd: int = 2) -> str:
    return "-" if v is None else f"{v * scale:.{nd}f}"

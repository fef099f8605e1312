"""Multi-turn sessions: ``--sessions PATH|synthetic``. Each request carries the conversation so far.

A session is a list of user turns. Turn ``k`` is sent with the chat history: the system message (if any),
every earlier user turn and the answer the server actually gave to it, then the new user turn; it is
scheduled at the end of the previous answer plus the turn's think time, and sent only then. Sessions start
by the chosen scenario: open loop (``server``/``constant``/``offline``) gives each session a start time, closed
loop (``single-stream``/``concurrency``) keeps N sessions going at once. A failed turn ends its session.

Sources:

- a ShareGPT-style file (``.json`` list or ``.jsonl``): each item holds ``conversations`` (``from``:
  ``human``/``gpt``/``system``, ``value``) or ``messages`` (``role``, ``content``); the user turns are sent in
  order, the recorded answers are replaced by the live ones; ``max_tokens`` of each turn is drawn from
  ``--output-tokens``. A conversation without a user turn is an error.
- ``synthetic``: ``--session-turns`` turns a session (N, MEAN:STD or LO-HI), user turns of ``--input-tokens``
  tokens (whole tokens of the model's vocabulary, :mod:`benchmint.llm.tokentext`), answers of
  ``--output-tokens``.

Think time (``--think-time``, seconds): ``1`` (fixed), ``0.5-2`` (uniform), ``1:0.3`` (normal, at least 0),
``exp:1`` (exponential with that mean). Every length and think time is drawn before the run from the seed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmint.core.clock import now_ns
from benchmint.core.errors import UserError
from benchmint.llm.metrics import stats
from benchmint.llm.requests_driver import cancelled, generate, wait_or_cancel
from benchmint.llm.schedule import Schedule
from benchmint.llm.tokentext import TokenText
from benchmint.llm.types import Backend, GenRequest, RequestRecord
from benchmint.llm.workload import Workload, parse_length

USER_ROLES = ("user", "human")
ASSISTANT_ROLES = ("assistant", "gpt", "chatgpt", "bard", "bing", "model")


@dataclass
class Turn:
    user: str
    max_tokens: int
    think_s: float  # wait after the previous answer before this turn is sent (0 for the first turn)


@dataclass
class Session:
    id: int
    turns: list[Turn]
    system: str | None = None
    source_id: str | None = None


@dataclass(frozen=True)
class ThinkTime:
    spec: str
    kind: str  # fixed | uniform | normal | exp
    a: float
    b: float = 0.0

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, self.a)
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b, n)
        if self.kind == "normal":
            return np.maximum(0.0, rng.normal(self.a, self.b, n))
        return rng.exponential(self.a, n)


def parse_think(spec: str | float | None) -> ThinkTime:
    s = "0" if spec is None or spec == "" else str(spec).strip()
    try:
        if s.startswith("exp:"):
            t = ThinkTime(s, "exp", float(s[4:]))
        elif ":" in s:
            m, sd = s.split(":", 1)
            t = ThinkTime(s, "normal", float(m), float(sd))
        elif "-" in s[1:]:
            lo, hi = s.split("-", 1)
            t = ThinkTime(s, "uniform", float(lo), float(hi))
            if t.b < t.a:
                raise ValueError
        else:
            t = ThinkTime(s, "fixed", float(s))
    except ValueError:
        raise UserError(f"--think-time {s!r}: use SECONDS, LO-HI, MEAN:STD or exp:MEAN") from None
    if t.a < 0 or t.b < 0:
        raise UserError(f"--think-time {s!r}: think times are seconds >= 0")
    return t


# ---------------------------------------------------------------- building sessions
def synthetic_sessions(n: int, turns: str, input_tokens: str | None, output_tokens: str | None, think: str | None,
                       tokenizer: Any, seed: int = 0) -> list[Session]:
    rng = np.random.default_rng([seed, 0x5E55])
    tdist = parse_length(turns or "4", "--session-turns")
    idist = parse_length(input_tokens or "64", "--input-tokens")
    odist = parse_length(output_tokens or "64", "--output-tokens")
    th = parse_think(think)
    assert tdist and idist and odist
    tt = TokenText.of(tokenizer)
    out = []
    for sid in range(n):
        k = int(tdist.sample(1, rng)[0])
        ins, outs, waits = idist.sample(k, rng), odist.sample(k, rng), th.sample(k, rng)
        out.append(Session(sid, [Turn(tt.text(tt.random(int(ins[j]), rng)), int(outs[j]), 0.0 if j == 0 else float(waits[j]))
                                 for j in range(k)]))
    return out


def load_session_file(path: str | Path, output_tokens: str | None, think: str | None, seed: int = 0,
                      limit: int | None = None) -> list[Session]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--sessions {p}: no such file; give a ShareGPT-style .json/.jsonl file or 'synthetic'")
    try:
        if p.suffix.lower() in (".jsonl", ".ndjson"):
            with open(p, encoding="utf-8") as f:
                items = [json.loads(line) for line in f if line.strip()]
        else:
            data = json.loads(p.read_text(encoding="utf-8"))
            items = data if isinstance(data, list) else (
                data.get("data") or data.get("conversations") or [] if isinstance(data, dict) else None)
    except (OSError, ValueError) as e:
        raise UserError(f"--sessions {p}: cannot read it ({type(e).__name__}: {e})") from None
    if not isinstance(items, list):
        raise UserError(f"--sessions {p}: not a list of conversations (a JSON list, an object with a 'data' or "
                        "'conversations' list, or JSONL with one conversation a line)")
    if not items:
        raise UserError(f"--sessions {p}: no conversations in it")
    if limit:
        items = items[:limit]
    odist = parse_length(output_tokens or "64", "--output-tokens")
    th = parse_think(think)
    assert odist
    rng = np.random.default_rng([seed, 0x5E55])
    out = []
    for i, it in enumerate(items):
        conv = it.get("conversations", it.get("messages", it.get("conversation"))) if isinstance(it, dict) else it
        sid = str(it.get("id", it.get("conversation_id", i))) if isinstance(it, dict) else str(i)
        if not isinstance(conv, list):
            raise UserError(f"--sessions {p}: conversation {i + 1} (id {sid}) has no 'conversations' or 'messages' list")
        system, users = None, []
        for m in conv:
            if not isinstance(m, dict):
                continue
            role = str(m.get("role", m.get("from", ""))).lower()
            text = m.get("content", m.get("value"))
            if role == "system" and text:
                system = str(text)
            elif role in USER_ROLES and text:
                users.append(str(text))
        if not users:
            raise UserError(f"--sessions {p}: conversation {i + 1} (id {sid}) is empty (no user turn); remove it or fix the file")
        outs, waits = odist.sample(len(users), rng), th.sample(len(users), rng)
        out.append(Session(i, [Turn(u, int(outs[j]), 0.0 if j == 0 else float(waits[j])) for j, u in enumerate(users)],
                           system=system, source_id=sid))
    return out


def sessions_workload(sessions: list[Session], *, name: str, ignore_eos: bool, source: dict[str, Any]) -> Workload:
    """First turns as the workload's templates (for warm-up and describe); the sessions ride in ``source``."""
    reqs = [GenRequest(id=s.id, prompt=_messages(s, [], s.turns[0].user), max_tokens=s.turns[0].max_tokens,
                       ignore_eos=ignore_eos) for s in sessions]
    turns = [len(s.turns) for s in sessions]
    src = {"sessions": len(sessions), "turns_total": int(sum(turns)), "turns_per_session_mean": float(np.mean(turns)),
           "api": "chat", **source}
    return Workload(name=name, requests=reqs, source=src)


def _messages(s: Session, history: list[dict[str, str]], user: str) -> list[dict[str, str]]:
    head = [{"role": "system", "content": s.system}] if s.system else []
    return head + history + [{"role": "user", "content": user}]


# ---------------------------------------------------------------- driving them
async def _sleep_until(target: int, stop: asyncio.Event) -> None:
    delay = target - now_ns()
    while delay > 0 and not stop.is_set():
        if delay > 20_000_000:
            try:
                await asyncio.wait_for(stop.wait(), delay / 1e9)
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(delay / 1e9)
        delay = target - now_ns()


async def drive_sessions(backend: Backend, sessions: list[Session], sched: Schedule, stop: asyncio.Event,
                         records: list[RequestRecord], ignore_eos: bool = True) -> int:
    """Run every session (turn after answer + think time); returns the run's start (ns)."""
    seq = itertools.count()
    start = now_ns() + 5_000_000
    deadline = start + int(sched.duration_s * 1e9) if sched.duration_s else None

    def unsent(s: Session, target: int) -> None:
        # a session Ctrl-C stopped before its first turn went: that turn was scheduled, so it is recorded as
        # cancelled; its later turns depend on answers never given and are not scheduled requests
        req = GenRequest(id=next(seq), prompt=_messages(s, [], s.turns[0].user), max_tokens=s.turns[0].max_tokens,
                         ignore_eos=ignore_eos)
        rec = cancelled(req, target, sent=False)
        rec.session_id, rec.turn = s.id, 0
        records.append(rec)

    async def run_one(s: Session, t0: int) -> None:
        history: list[dict[str, str]] = []
        target, prev_end = t0, t0
        for k, turn in enumerate(s.turns):
            if k:
                target = prev_end + int(turn.think_s * 1e9)
            if deadline is not None and target >= deadline:
                return
            try:
                await _sleep_until(target, stop)
            except asyncio.CancelledError:
                if k == 0:
                    unsent(s, target)
                raise
            if stop.is_set():
                if k == 0:
                    unsent(s, target)
                return
            req = GenRequest(id=next(seq), prompt=_messages(s, history, turn.user), max_tokens=turn.max_tokens,
                             ignore_eos=ignore_eos)
            try:
                rec = await generate(backend.generate, req)
            except asyncio.CancelledError as e:  # Ctrl-C while in flight (or waiting for a connection)
                rec = cancelled(req, target, sent=e)
                rec.session_id, rec.turn = s.id, k
                records.append(rec)
                raise
            rec.scheduled_ns, rec.session_id, rec.turn = target, s.id, k
            records.append(rec)
            if not rec.ok:
                return
            history += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": rec.text}]
            prev_end = rec.end_ns or now_ns()

    if sched.open_loop:
        offs = (np.asarray(sched.offsets_s) * 1e9).astype("int64").tolist()
        tasks = [asyncio.ensure_future(run_one(s, start + o)) for s, o in zip(sessions, offs, strict=False)]
    else:
        it = iter(sessions[: sched.count])

        async def worker() -> None:
            for s in it:
                if deadline is not None and now_ns() >= deadline:
                    return
                if stop.is_set():
                    if deadline is None:  # a count-bound run: this session was scheduled
                        unsent(s, 0)
                    return
                await run_one(s, max(start, now_ns()))

        tasks = [asyncio.ensure_future(worker()) for _ in range(sched.concurrency)]
    await wait_or_cancel(tasks, stop)
    if stop.is_set() and not sched.open_loop and deadline is None:
        for s in it:  # the sessions no worker reached: their first turns were scheduled
            unsent(s, 0)
    return start


# ---------------------------------------------------------------- per-turn and per-session metrics
def session_metrics(records: list[RequestRecord], sessions: list[Session], anchor: str = "scheduled") -> dict[str, Any]:
    from benchmint.llm.metrics import record_metrics

    # a first turn Ctrl-C stopped before it was sent is a scheduled request, but its session never started
    recs = [r for r in records if not r.warmup and r.session_id is not None
            and (r.sent_ns or r.error_kind != "cancelled")]
    by_s: dict[int, list[RequestRecord]] = {}
    for r in recs:
        by_s.setdefault(r.session_id, []).append(r)  # type: ignore[arg-type]
    planned = {s.id: len(s.turns) for s in sessions}
    done_d, turns_d = [], []
    completed = 0
    for sid, rs in by_s.items():
        rs.sort(key=lambda r: r.turn or 0)
        turns_d.append(len(rs))
        if len(rs) == planned.get(sid) and all(r.ok for r in rs):
            completed += 1
            done_d.append((rs[-1].end_ns - rs[0].scheduled_ns) / 1e9)  # type: ignore[operator]
    per = {id(r): record_metrics(r, anchor) for r in recs if r.ok}
    max_turn = max((r.turn or 0 for r in recs), default=-1)
    by_turn = []
    for k in range(max_turn + 1):
        rk = [r for r in recs if r.turn == k]
        ok = [r for r in rk if r.ok]
        ins = [r.input_tokens for r in ok if r.input_tokens is not None]
        by_turn.append({
            "turn": k,
            "requests": len(rk),
            "failed": len(rk) - len(ok),
            "input_tokens_mean": float(np.mean(ins)) if ins else None,
            "ttft_s": stats([per[id(r)]["ttft_s"] for r in ok if per[id(r)]["ttft_s"] is not None]),
            "e2e_s": stats([per[id(r)]["e2e_s"] for r in ok if per[id(r)]["e2e_s"] is not None]),
        })
    return {
        "planned": len(sessions),
        "started": len(by_s),
        "completed": completed,
        "turns_sent": len(recs),
        "turns_planned": int(sum(planned.values())),
        "turns_per_session": stats(turns_d),
        "session_duration_s": stats(done_d),
        "by_turn": by_turn,
        "ttft_growth": _growth(recs, per),
        "definitions": {
            "session_duration_s": "last answer's end - first turn's scheduled send, completed sessions",
            "ttft_growth": "least-squares line of TTFT against the turn's prompt tokens (history included)",
        },
    }


def _growth(recs: list[RequestRecord], per: dict[int, dict[str, Any]]) -> dict[str, Any]:
    pts = [(r.input_tokens, per[id(r)]["ttft_s"]) for r in recs
           if r.ok and r.input_tokens is not None and per[id(r)]["ttft_s"] is not None]
    out: dict[str, Any] = {"points": len(pts), "slope_s_per_1k_input_tokens": None, "intercept_s": None, "r": None}
    xs = np.array([p[0] for p in pts], dtype=float)
    if len(pts) >= 3 and np.ptp(xs) > 0:
        from scipy.stats import linregress

        fit = linregress(xs, [p[1] for p in pts])
        out.update(slope_s_per_1k_input_tokens=float(fit.slope) * 1000, intercept_s=float(fit.intercept),
                   r=float(fit.rvalue))
    return out


__all__ = ["Session", "ThinkTime", "Turn", "drive_sessions", "load_session_file", "parse_think", "session_metrics",
           "sessions_workload", "synthetic_sessions"]

"""Load from several processes (``llm bench --workers N``) or Ray actors (``--ray``), merged into one result.

One schedule and one workload are made in the driving process, seeded, before any worker starts. They are
sharded round-robin by request index (worker ``k`` of ``N`` sends requests ``k, k+N, k+2N, ...``), so the
union of the shards is the single-process schedule. Each worker keeps the absolute scheduled send times of
its requests, relative to one common start: once every worker is ready (backend up, its share of the warm-up
done), the driver picks the start a little ahead on its own clock and sends it to each worker as a reading
of that worker's own clock (the start plus the worker's measured clock offset; zero on the driver's host,
where ``time.perf_counter_ns`` is the system-wide ``CLOCK_MONOTONIC``). A worker then runs the ordinary
driver of :mod:`benchmint.llm.bench` in its own event loop; every latency of a request is a difference of two
readings of that worker's own clock, so no cross-host clock enters a latency. Records stream back to the
driver every :data:`FLUSH_S` seconds (msgpack, :mod:`msgspec`), so that what a worker measured before it was
lost is kept; they are put on the driver's time line (shifted by the worker's offset, which changes no
latency) and the metrics are computed once, over all of them, by the same code as a one-process run.

A worker that dies (killed, out of memory, its node lost) is named in ``workers`` with ``status`` ``lost``;
its requests that never came back are in the records as failed with kind ``worker_lost``, so that
``requests.scheduled`` stays completed + failed + cancelled. Ctrl-C stops every worker; each cancels its own
requests in flight and sends what it has, and the merged partial result is written as for one process.

The worker side never imports the bench: the driving code hands it a :class:`DriveKit` (the bench's own
functions, pickled by reference), so that the layers stay one-way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from typing import Any

from benchmint.core.clock import now_ns
from benchmint.core.errors import UserError
from benchmint.llm.schedule import Schedule
from benchmint.llm.types import GenRequest, RequestRecord
from benchmint.llm.worker_run import FLUSH_S, DriveKit, WorkerSpec, decode_records

SETUP_TIMEOUT_S = 300.0  # spawn, imports, tokenizer, warm-up
STOP_GRACE_S = 30.0  # after Ctrl-C, how long a worker may take to cancel and send what it has
WORKER_LOST = "worker_lost"
SHARDING = ("round-robin by request index (worker k sends requests k, k+N, ...); every worker keeps the absolute "
            "scheduled send times, relative to one common start")


def check(cfg: Any) -> None:
    """The flags that cannot be run from workers, as one line each (before anything starts)."""
    if cfg.workers is not None and cfg.workers < 1:
        raise UserError(f"--workers {cfg.workers}: give at least 1 (the number of load-generating processes)")
    from benchmint.llm.backends import backend_entry

    entry = backend_entry(cfg.backend)
    if not entry.server:  # each worker would build its own engine: N times the capacity being measured
        raise UserError(f"--workers and --ray send load to a server at --url; --backend {entry.kind} runs in this "
                        "process (drop --workers/--ray, or serve the model with `benchmint llm serve`)")
    if cfg.sessions or cfg.scenario.lower().replace("_", "-") == "concurrency-ramp":
        raise UserError("--sessions and --scenario concurrency-ramp run in one process; drop --workers/--ray")


def shard(cfg: Any, kit: DriveKit, sched: Schedule, measured: list[GenRequest], warm: list[GenRequest],
          tpl: list[GenRequest], n: int, tokenizer: Any = None) -> list[WorkerSpec]:
    """``n`` shards whose union is the schedule: request ``i`` (and its scheduled time) goes to worker ``i % n``."""
    specs = []
    if not sched.open_loop and sched.concurrency < n:
        raise UserError(f"--workers {n} is more than the {sched.concurrency} requests in flight of --scenario "
                        f"{sched.scenario}; use at most {sched.concurrency} workers")
    for k in range(n):
        mine = measured[k::n]
        if sched.open_loop:
            s = dataclasses.replace(sched, offsets_s=sched.offsets_s[k::n], count=len(mine))
            lazy = False
        else:
            conc = sched.concurrency // n + (k < sched.concurrency % n)
            lazy = not measured and sched.duration_s is not None  # made lazily, ids renumbered per worker
            s = dataclasses.replace(sched, concurrency=conc, count=sched.count if lazy else len(mine))
        specs.append(WorkerSpec(k, n, cfg, kit, s, mine, warm[k::n], tpl, lazy, tokenizer))
    return specs


# ---------------------------------------------------------------- the driving side
class FleetDriver:
    """Runs the measured requests of ``llm bench`` from worker processes or Ray actors (see the module doc)."""

    def __init__(self, cfg: Any, kit: DriveKit):
        check(cfg)
        self.cfg, self.kit = cfg, kit
        self.ray: dict[str, Any] | None = None
        if cfg.ray is not None:
            from benchmint.llm.ray_workers import connect

            self.ray = connect(cfg.ray)  # one line and exit 2 when Ray is missing or the cluster unreachable
        self.n = cfg.workers or (self.ray or {}).get("alive_nodes") or 1
        self.summaries: list[dict[str, Any]] = []
        self.adaptations: list[dict[str, Any]] = []
        self.clocks: dict[int, dict[str, Any]] = {}
        self.fleet: Any = None

    def _fleet(self) -> Any:
        if self.ray is not None:
            from benchmint.llm.ray_workers import RayFleet

            return RayFleet(self.ray)
        from benchmint.llm.worker_procs import ProcessFleet

        return ProcessFleet()

    async def drive(self, sched: Schedule, measured: list[GenRequest], warm: list[GenRequest],
                    tpl: list[GenRequest], stop: asyncio.Event, tokenizer: Any = None,
                    after_warmup: Any = None) -> tuple[list[RequestRecord], int, bool]:
        """``after_warmup``: called once every worker is ready (their warm-ups done), before the common start
        (a server-metrics snapshot)."""
        specs = shard(self.cfg, self.kit, sched, measured, warm, tpl, self.n, tokenizer)
        self.fleet = fleet = self._fleet()
        try:
            return await self._run(fleet, specs, stop, after_warmup if warm else None)
        finally:
            await fleet.close()

    async def _run(self, fleet: Any, specs: list[WorkerSpec], stop: asyncio.Event, after_warmup: Any = None
                   ) -> tuple[list[RequestRecord], int, bool]:
        n = len(specs)
        fleet.launch(specs)
        ready: dict[int, dict[str, Any]] = {}
        t_end = time.monotonic() + SETUP_TIMEOUT_S
        while len(ready) < n:
            for kind, k, payload in await fleet.poll(0.2):
                if kind == "ready":
                    ready[k] = payload
                elif kind in ("error", "lost"):
                    raise UserError(f"load worker {k} did not start: {payload}")
            if stop.is_set():  # Ctrl-C before the start: every measured request is cancelled, none sent
                from benchmint.llm.requests_driver import cancelled

                fleet.stop_all()
                per = {s.index: [cancelled(r, 0, sent=False) for r in s.measured] for s in specs}
                self._summarize(specs, per, {k: {"interrupted": True} for k in per}, {}, ready)
                return [r for k in range(n) for r in per[k]], now_ns(), True
            if time.monotonic() > t_end:
                raise UserError(f"{n - len(ready)} of {n} load workers were not ready after {SETUP_TIMEOUT_S:g} s; "
                                + fleet.not_ready_hint())
        if after_warmup is not None:
            after_warmup()
        self.clocks = await fleet.clock_offsets(ready)
        start = now_ns() + fleet.lead_ns
        fleet.go(start, {k: c["applied_offset_ns"] for k, c in self.clocks.items()})
        batches: dict[int, list[bytes]] = {k: [] for k in range(n)}
        finals: dict[int, dict[str, Any]] = {}
        lost: dict[int, str] = {}
        stopped_at: float | None = None
        while len(finals) + len(lost) < n:
            for kind, k, payload in await fleet.poll(FLUSH_S):
                if kind == "records":
                    batches[k].append(payload)
                elif kind == "done":
                    finals[k] = payload
                elif k not in finals and k not in lost:  # lost or error
                    lost[k] = payload
            if stop.is_set() and stopped_at is None:
                fleet.stop_all()
                stopped_at = time.monotonic()
            if stopped_at is not None and time.monotonic() - stopped_at > STOP_GRACE_S:
                for k in range(n):
                    if k not in finals and k not in lost:
                        lost[k] = f"did not answer within {STOP_GRACE_S:g} s of Ctrl-C"
        per_worker = self._merge(specs, batches, lost, ready)
        self._summarize(specs, per_worker, finals, lost, ready)
        self.adaptations = [f["adaptation"] for f in finals.values() if f.get("adaptation")]
        records = [r for k in range(n) for r in per_worker[k]]
        interrupted = stop.is_set() or any(f.get("interrupted") for f in finals.values())
        return records, start, interrupted

    def _merge(self, specs: list[WorkerSpec], batches: dict[int, list[bytes]], lost: dict[int, str],
               ready: dict[int, dict[str, Any]]) -> dict[int, list[RequestRecord]]:
        """Each worker's records on the driver's time line, with a ``worker_lost`` record for every request a
        lost worker never reported."""
        out: dict[int, list[RequestRecord]] = {}
        for s in specs:
            k = s.index
            recs = [r for b in batches[k] for r in decode_records(b)]
            off = self.clocks.get(k, {}).get("applied_offset_ns", 0)
            if off:
                for r in recs:
                    _shift(r, -off)
            if k in lost:
                seen = {r.id for r in recs if not r.warmup}
                info = ready.get(k, {})
                where = f"pid {info.get('pid')} on {info.get('node_id') or info.get('host')}"
                for req in s.measured:
                    if req.id not in seen:
                        rec = RequestRecord(id=req.id, input_tokens=req.input_tokens)
                        rec.error_kind = WORKER_LOST
                        rec.error = f"load worker {k} ({where}) was lost before it reported this request: {lost[k]}"
                        recs.append(rec)
            out[k] = recs
        return out

    def _summarize(self, specs: list[WorkerSpec], per_worker: dict[int, list[RequestRecord]],
                   finals: dict[int, dict[str, Any]], lost: dict[int, str], ready: dict[int, dict[str, Any]]) -> None:
        from benchmint.llm.metrics import stats

        self.summaries = []
        for s in specs:
            k = s.index
            recs = [r for r in per_worker.get(k, []) if not r.warmup]
            info = ready.get(k, {})
            lag = stats([(r.sent_ns - r.scheduled_ns) / 1e9 for r in recs
                         if r.scheduled_ns and r.sent_ns and r.error_kind != "cancelled"])
            entry = {
                "index": k, "host": info.get("host"), "pid": info.get("pid"),
                "status": "lost" if k in lost else "interrupted" if (finals.get(k) or {}).get("interrupted") else "ok",
                "requests_scheduled": len(s.measured) if not s.lazy_ids else len(recs),
                "completed": sum(1 for r in recs if r.ok),
                "failed": sum(1 for r in recs if not r.ok and r.error_kind != "cancelled"),
                "cancelled": sum(1 for r in recs if r.error_kind == "cancelled"),
                "errors": dict(Counter(r.error_kind for r in recs if not r.ok and r.error_kind != "cancelled")),
                "send_lag_s": {"p50": lag["p50"], "p99": lag["p99"]},
                "warmup_requests": len(s.warm),
                # time between the worker taking up its run and the common start (negative: it began late)
                "start_margin_s": (finals.get(k) or {}).get("start_margin_s"),
                # the worker process's CPU time (user + system, every thread) from its start to its last answer
                "cpu_s": (finals.get(k) or {}).get("cpu_s"),
                "requests_waited_for_connection": (finals.get(k) or {}).get("requests_waited"),
                "clock": _clock_entry(self.clocks.get(k)),
            }
            if self.ray is not None:
                entry["node_id"] = info.get("node_id")
                entry["node_ip"] = info.get("node_ip")
            if k in lost:
                entry["lost_reason"] = lost[k]
            self.summaries.append(entry)

    def annotate(self, result: dict[str, Any]) -> None:
        """The ``workers`` block, how the load was spread and the clocks aligned, the merged request adaptation."""
        result["workers"] = self.summaries
        kind = "Ray actors" if self.ray is not None else "processes (multiprocessing, spawn)"
        m = result.setdefault("measurement", {})
        client = m.get("client", "benchmint asyncio + aiohttp").removesuffix(", one process")
        m["client"] = f"{client}, {self.n} worker {kind}, one event loop each"
        m["workers"] = {
            "count": self.n, "kind": "ray" if self.ray is not None else "processes", "sharding": SHARDING,
            "latency_clock": "each request's times are readings of its worker's own monotonic clock",
            "alignment": ("records are shifted by their worker's applied clock offset onto the driver's time line "
                          "(durations and rates); no latency is affected"),
            "lost": sum(1 for w in self.summaries if w["status"] == "lost"),
        }
        if self.ray is not None:
            m["workers"]["ray"] = self.ray
        waited = [w["requests_waited_for_connection"] for w in self.summaries
                  if w.get("requests_waited_for_connection") is not None]
        if waited:  # the workers' clients held the connections, not the driver's
            m["requests_waited_for_connection"] = sum(waited)
        if self.adaptations:
            result["request_adaptation"] = merge_adaptations(self.adaptations)


def _clock_entry(c: dict[str, Any] | None) -> dict[str, Any] | None:
    """A worker's clock facts as the result records them (seconds)."""
    if c is None:
        return None
    out = {k: v for k, v in c.items() if k != "applied_offset_ns"}
    out["applied_offset_s"] = c.get("applied_offset_ns", 0) / 1e9
    return out


def _shift(r: RequestRecord, d: int) -> None:
    for a in ("scheduled_ns", "sent_ns", "end_ns", "first_token_ns"):
        v = getattr(r, a)
        if v:
            setattr(r, a, v + d)
    if r.chunk_ns:
        r.chunk_ns = [t + d for t in r.chunk_ns]


def merge_adaptations(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``request_adaptation`` block from each worker's: fields dropped by any worker, counts summed."""
    out = dict(blocks[0])
    out["by_field"] = {}
    for b in blocks:
        for f, v in (b.get("by_field") or {}).items():
            out["by_field"].setdefault(f, v)
    out["dropped_fields"] = sorted(out["by_field"])
    for key in ("retried_requests", "retried_completed"):
        out[key] = sum(b.get(key) or 0 for b in blocks)
    out["retried_examples"] = [x for b in blocks for x in (b.get("retried_examples") or [])][:10]
    out["enabled"] = any(b.get("enabled") for b in blocks)
    return out


def workers_lines(result: dict[str, Any]) -> list[str]:
    """Console lines for a result's ``workers`` block (none for a one-process run)."""
    ws = result.get("workers")
    if not ws:
        return []

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{1000 * v:.2f}"

    lines = [f"workers: {len(ws)} ({(result.get('measurement') or {}).get('workers', {}).get('kind', '')})"]
    for w in ws:
        errs = ", ".join(f"{k}: {v}" for k, v in sorted(w["errors"].items())) or "none"
        where = w.get("node_ip") or w.get("host")
        line = (f"  worker {w['index']} ({where}, pid {w['pid']}): {w['completed']} completed, {w['failed']} failed "
                f"({errs}), send lag p50 {ms(w['send_lag_s']['p50'])} ms, p99 {ms(w['send_lag_s']['p99'])} ms")
        if w["status"] == "lost":
            line += f" [red]LOST: {w.get('lost_reason')}[/]"
        lines.append(line)
    return lines

"""One load worker's side of ``llm bench --workers`` / ``--ray`` (:mod:`benchmint.llm.workers`): what it is
given (:class:`WorkerSpec`, with the bench's own functions in a :class:`DriveKit`) and its run
(:class:`WorkerRun`): backend, warm-up, then its shard of the schedule from the common start, its finished
records handed back every :data:`FLUSH_S` seconds as msgpack (:mod:`msgspec`). The same code runs in a worker
process (:mod:`benchmint.llm.worker_procs`) and in a Ray actor (:mod:`benchmint.llm.ray_workers`).
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from benchmint.core.clock import now_ns
from benchmint.llm.schedule import Schedule
from benchmint.llm.types import GenRequest, RequestRecord

FLUSH_S = 0.25  # how often a worker sends the records it finished

_encode = msgspec.msgpack.Encoder().encode
decode_records = msgspec.msgpack.Decoder(list[RequestRecord]).decode


@dataclass(frozen=True)
class DriveKit:
    """What a worker runs, handed down by the bench (:func:`benchmint.llm.bench.drive` and friends)."""

    drive: Callable[..., Any]
    warm_up: Callable[..., Any]
    make_backend: Callable[[Any, Any], Any]


@dataclass
class WorkerSpec:
    index: int
    count: int
    cfg: Any  # BenchConfig
    kit: DriveKit
    sched: Schedule
    measured: list[GenRequest]
    warm: list[GenRequest]
    tpl: list[GenRequest]
    lazy_ids: bool = False  # a duration-bound closed loop: requests are made as slots free up
    tokenizer: Any = None  # the driver's tokenizer (pickled), for counting answers that come without usage


def clock_facts() -> dict[str, Any]:
    info = time.get_clock_info("perf_counter")
    return {"clock": "time.perf_counter_ns", "implementation": info.implementation, "monotonic": info.monotonic,
            "resolution_s": info.resolution}


class WorkerRun:
    """One worker's run, in its own event loop: backend, warm-up, then its shard from the common start."""

    def __init__(self, spec: WorkerSpec):
        self.spec = spec
        self.records: list[RequestRecord] = []
        self.taken = 0
        self.stop = asyncio.Event()
        self.backend: Any = None
        self.interrupted = False
        self.margin_ns: int | None = None  # how long before the common start the worker began its run
        self.cpu_s: float | None = None  # CPU time (user + system, all threads) of this process during its run

    async def setup(self) -> dict[str, Any]:
        s, kit = self.spec, self.spec.kit
        # no model or tokenizer is loaded here: the driver's tokenizer comes pickled in the spec
        self.backend = kit.make_backend(s.cfg, s.tokenizer)
        await self.backend.start()
        if s.warm:
            await kit.warm_up(self.backend, s.warm, s.sched.concurrency, self.stop, self.records)
        # collect and freeze now: the driver's own collection at its start then has (almost) nothing to walk,
        # so that it does not eat into the lead before the common start
        gc.collect()
        gc.freeze()
        return {"index": s.index, "host": socket.gethostname(), "pid": os.getpid(), **clock_facts(),
                "ready_ns": now_ns()}

    async def run(self, start_ns: int | None) -> None:
        """The shard from ``start_ns`` (this worker's clock); None: stopped before the start."""
        s = self.spec
        try:
            if start_ns is None:
                from benchmint.llm.requests_driver import cancelled

                self.records.extend(cancelled(r, 0, sent=False) for r in s.measured)
                self.interrupted = True
                return
            self.margin_ns = start_ns - now_ns()
            cpu0 = time.process_time()
            _, _, self.interrupted = await s.kit.drive(self.backend, s.sched, s.measured, [], s.tpl, stop=self.stop,
                                                       records=self.records, start_ns=start_ns)
            self.cpu_s = time.process_time() - cpu0
        finally:
            await self.backend.close()

    async def run_streaming(self, start_ns: int | None, emit: Callable[[bytes], None]) -> None:
        """:meth:`run`, handing each :data:`FLUSH_S` the records finished since the last time to ``emit``."""
        task = asyncio.ensure_future(self.run(start_ns))
        while not task.done():
            await asyncio.wait((task,), timeout=FLUSH_S)
            b = self.take()
            if b is not None:
                emit(b)
        task.result()

    def take(self) -> bytes | None:
        """The records finished since the last call, encoded; None when there are none."""
        new = self.records[self.taken:]
        if not new:
            return None
        self.taken += len(new)
        if self.spec.lazy_ids:  # each worker numbered its lazily made requests 0, 1, ...: make them unique
            for r in new:
                if not r.warmup:
                    r.id = r.id * self.spec.count + self.spec.index
        return _encode(new)

    def final(self) -> dict[str, Any]:
        adapter = getattr(self.backend, "adapter", None)
        return {"interrupted": self.interrupted, "adaptation": adapter.describe() if adapter is not None else None,
                "start_margin_s": None if self.margin_ns is None else self.margin_ns / 1e9, "cpu_s": self.cpu_s,
                # requests that found every connection this process may hold taken (its open-files limit)
                "requests_waited": getattr(self.backend, "requests_waited", None)}

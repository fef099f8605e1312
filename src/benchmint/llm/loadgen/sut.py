"""The system under test LoadGen drives: ``issue_queries`` only hands queries to an asyncio loop thread.

LoadGen calls :meth:`AsyncSUT.issue_queries` from its own issuing thread; the call returns at once after
scheduling each query on the event loop, so LoadGen's timing is never held up by the backend. Each query
becomes one :class:`~benchmint.llm.types.GenRequest`; the backend's first-token hook reports
``lg.FirstTokenComplete`` and the end of the stream reports ``lg.QuerySamplesComplete`` with the output token
count (``n_tokens``), which LoadGen needs for TTFT/TPOT when ``use_token_latencies`` is on.

The response data handed to LoadGen is the generated text as UTF-8 bytes (what ``mlperf_log_accuracy.json``
then holds, hex-encoded); :mod:`benchmint.llm.accuracy` decodes it, and also reads token-id logs of
official harnesses when given a tokenizer.
"""

from __future__ import annotations

import array
import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmint.core.clock import now_ns
from benchmint.llm.token_counts import count_pending, pending
from benchmint.llm.types import Backend, GenRequest, RequestRecord

_FIRST_TOKEN_PLACEHOLDER = array.array("B", b"\0\0\0\0")


@dataclass
class Sample:
    """One entry of the query sample library (QSL)."""

    prompt: str | list[dict[str, str]]
    max_tokens: int
    input_tokens: int | None = None
    reference: str | None = None
    ignore_eos: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class LoopThread:
    """An asyncio event loop (uvloop when installed, unless ``kind="asyncio"``) running in a daemon thread."""

    def __init__(self, kind: str = "uvloop") -> None:
        self.kind = "asyncio"
        if kind == "uvloop":
            try:
                import uvloop

                self.loop = uvloop.new_event_loop()
                self.kind = "uvloop"
            except ImportError:
                self.loop = asyncio.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="benchmint-sut-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


class AsyncSUT:
    """Adapter between LoadGen's callbacks and an async :class:`Backend`."""

    def __init__(self, backend: Backend, samples: Sequence[Sample], loop: LoopThread, max_concurrency: int = 0,
                 sink: Callable[[int, RequestRecord], None] | None = None):
        import mlperf_loadgen as lg

        self._lg = lg
        self.backend = backend
        self.samples = samples
        self.loop = loop
        self.max_concurrency = max_concurrency
        self._sem: asyncio.Semaphore | None = None
        self._next_id = 0
        self._tasks: set[asyncio.Task] = set()
        self.records: list[tuple[int, RequestRecord]] = []  # (qsl index, record), in completion order
        self.sink = sink  # called with each completed record (the worker streams them to disk)
        self.issued = 0
        self.completed = 0

    # ---- called by LoadGen, on its threads -------------------------------------------------------------
    def issue_queries(self, query_samples: list) -> None:
        t = now_ns()
        batch = [(q.id, q.index, t) for q in query_samples]
        self.issued += len(batch)
        self.loop.loop.call_soon_threadsafe(self._spawn, batch)

    def flush_queries(self) -> None:  # nothing is buffered: every query is in flight once issued
        pass

    # ---- on the event loop ------------------------------------------------------------------------------
    def _spawn(self, batch: list[tuple[int, int, int]]) -> None:
        if self.max_concurrency and self._sem is None:
            self._sem = asyncio.Semaphore(self.max_concurrency)
        for resp_id, index, issued_ns in batch:
            task = self.loop.loop.create_task(self._serve(resp_id, index, issued_ns))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, resp_id: int, index: int, issued_ns: int) -> None:
        lg = self._lg
        s = self.samples[index]
        rid = self._next_id
        self._next_id += 1
        req = GenRequest(
            id=rid,
            prompt=s.prompt,
            max_tokens=s.max_tokens,
            input_tokens=s.input_tokens,
            reference=s.reference,
            ignore_eos=s.ignore_eos,
            extra=dict(s.extra),
        )
        first_sent = False

        def on_first(_rec: RequestRecord) -> None:
            nonlocal first_sent
            if not first_sent:
                first_sent = True
                addr, n = _FIRST_TOKEN_PLACEHOLDER.buffer_info()
                lg.FirstTokenComplete([lg.QuerySampleResponse(resp_id, addr, n)])

        try:
            if self._sem is not None:
                async with self._sem:
                    rec = await self.backend.generate(req, on_first)
            else:
                rec = await self.backend.generate(req, on_first)
        except Exception as e:  # a backend bug must not hang LoadGen: complete the query, count the error
            rec = RequestRecord(id=rid, error_kind="other", error=f"{type(e).__name__}: {e}", end_ns=now_ns())
        rec.scheduled_ns = issued_ns
        if not rec.sent_ns:
            rec.sent_ns = issued_ns
        if not first_sent:  # failed before any token: LoadGen still needs the first-token report
            on_first(rec)
        if pending(rec):  # no usage: LoadGen needs the count now; the tokenizer runs off the event loop
            await asyncio.to_thread(count_pending, [rec], getattr(self.backend, "tokenizer", None))
        payload = array.array("B", rec.text.encode("utf-8") if rec.ok else b"")
        n_tokens = rec.output_tokens if rec.output_tokens is not None else rec.chunk_count
        addr, n = payload.buffer_info()
        # LoadGen copies the bytes it logs inside this call, so ``payload`` may go after it returns
        lg.QuerySamplesComplete([lg.QuerySampleResponse(resp_id, addr, n, max(1, int(n_tokens or 0)))])
        self.records.append((index, rec))
        self.completed += 1
        if self.sink is not None:
            self.sink(index, rec)

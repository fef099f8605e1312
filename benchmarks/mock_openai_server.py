"""A fast OpenAI-compatible streaming mock server (raw asyncio protocol) that can record its own per-request times.

The one mock of the benchmarks: ``llm_client.py`` measures the client against it and ``peers.py`` judges load
generators by the times it records (the server-side truth).

It answers ``POST /v1/completions`` and ``/v1/chat/completions`` (streamed SSE with ``"stream": true``, else one
JSON body), ``GET /v1/models`` (listing ``--model``), ``/health`` and ``/metrics`` (an empty Prometheus page).
HTTP/1.1 keep-alive, chunked transfer encoding. A streamed answer is ``--tokens`` chunks (fewer when
``max_tokens`` is smaller), each the text ``" the"`` (one token for benchmint's tiny tokenizer and for the common
BPE vocabularies), the first ``--ttft-ms`` after the request was read and the next ones ``--itl-ms`` apart (0 and
0: all written at once), then a usage chunk and ``[DONE]``. It parses only what it needs (headers,
Content-Length, max_tokens, stream), so that one process serves well over a thousand streamed requests per second
on one core.

Recording (``--record`` or ``--log FILE``), on ``time.monotonic_ns()`` (CLOCK_MONOTONIC, one clock for every
process on the host, so the figures line up with a client's ``time.monotonic()`` / ``perf_counter()``), per
streamed request: ``t_in`` when the whole request had been read, ``t_first`` / ``t_last`` when the first / last
content chunk was written to the socket, ``t_done`` after ``[DONE]``, ``t_chunks`` (every content chunk's write),
``n`` (chunks) and ``w_in``, the read on the wall clock (``time.time_ns()``), to pair requests with a client that
logs wall-clock send times. The server's own TTFT of a request is ``t_first - t_in``, its TPOT
``(t_last - t_first) / (n - 1)``.

- ``--record``: ``GET /truth`` hands out ``{"ttft_ns": [...]}`` of the requests answered since the last call.
- ``--log FILE``: one JSON line per streamed request, appended as its answer ends (memory stays bounded however
  long the server runs); the file is complete once the server has exited on SIGTERM or SIGINT.

    python benchmarks/mock_openai_server.py --port 8123 [--tokens 16] [--itl-ms 0] [--ttft-ms 0]
        [--record] [--log truth.jsonl] [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import time
from typing import IO

now_ns = time.monotonic_ns

_MAX_TOKENS = re.compile(rb'"max_(?:completion_)?tokens"\s*:\s*(\d+)')
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
WORD = b" the"
SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _plain(status: bytes, body: bytes, ctype: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (
        status, ctype, len(body), body)


class Canned:
    """The answers' bytes, built once per (chat, length)."""

    def __init__(self, tokens: int, model: str):
        self.tokens, self.model = tokens, model.encode()
        self.cache: dict[tuple[bool, int], tuple[list[bytes], bytes]] = {}

    def stream(self, chat: bool, n: int) -> tuple[list[bytes], bytes]:
        """The ``n`` content chunks and the tail (usage chunk, ``[DONE]``, end of the chunked body)."""
        key = (chat, n)
        if key not in self.cache:
            obj = b"chat.completion.chunk" if chat else b"text_completion"
            head = b'{"id":"cmpl-mock","object":"%s","created":0,"model":"%s","choices":[' % (obj, self.model)
            evs = []
            for i in range(n):
                fr = b'"length"' if i == n - 1 else b"null"
                c = (b'{"index":0,"delta":{"role":"assistant","content":"%s"},"finish_reason":%s}' if chat
                     else b'{"index":0,"text":"%s","finish_reason":%s}') % (WORD, fr)
                evs.append(_chunk(b"data: " + head + c + b"]}\n\n"))
            usage = b'{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d}' % (n, n + 8)
            tail = _chunk(b"data: " + head + b'],"usage":' + usage + b"}\n\n") + _chunk(b"data: [DONE]\n\n")
            self.cache[key] = (evs, tail + b"0\r\n\r\n")
        return self.cache[key]

    def full(self, chat: bool, n: int) -> bytes:
        text = WORD * n
        ch = (b'{"index":0,"message":{"role":"assistant","content":"%s"},"finish_reason":"length"}' if chat
              else b'{"index":0,"text":"%s","finish_reason":"length"}') % text
        return (b'{"id":"cmpl-mock","object":"x","created":0,"model":"%s","choices":[' % self.model + ch +
                b'],"usage":{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d}}' % (n, n + 8))


class Recorder:
    """Per-request times: the TTFTs ``GET /truth`` hands out, and the ``--log`` lines."""

    def __init__(self, record: bool, log: IO[str] | None):
        self.record, self.log = record, log
        self.ttft_ns: list[int] = []

    @property
    def on(self) -> bool:
        return self.record or self.log is not None

    def done(self, row: dict) -> None:
        if self.record and row["t_first"] is not None:
            self.ttft_ns.append(row["t_first"] - row["t_in"])
        if self.log is not None:
            self.log.write(json.dumps(row) + "\n")


class MockProtocol(asyncio.Protocol):
    def __init__(self, canned: Canned, itl_s: float, ttft_s: float, rec: Recorder):
        self.canned, self.itl_s, self.ttft_s, self.rec = canned, itl_s, ttft_s, rec
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            clen = 0
            i = head.lower().find(b"content-length:")
            if i >= 0:
                j = head.find(b"\r\n", i)
                clen = int(head[i + 15 : j if j > 0 else None])
            if len(self.buf) < end + 4 + clen:
                return
            body = self.buf[end + 4 : end + 4 + clen]
            self.buf = self.buf[end + 4 + clen :]
            self.handle(head.split(b" ", 2), body, now_ns(), time.time_ns())

    def handle(self, first: list[bytes], body: bytes, t_in: int, w_in: int) -> None:
        t = self.transport
        assert t is not None
        method, path = first[0], first[1] if len(first) > 1 else b"/"
        if method != b"POST":
            if path == b"/truth" and self.rec.record:
                out = json.dumps({"ttft_ns": self.rec.ttft_ns}).encode()
                self.rec.ttft_ns = []
                t.write(_plain(b"200 OK", out))
            elif path.endswith(b"/models"):
                t.write(_plain(b"200 OK", b'{"object":"list","data":[{"id":"%s","object":"model","created":0,'
                                          b'"owned_by":"benchmint"}]}' % self.canned.model))
            elif path.startswith(b"/metrics"):
                t.write(_plain(b"200 OK", b"", b"text/plain; version=0.0.4"))
            else:
                t.write(_plain(b"200 OK", b'{"status":"ok"}'))
            return
        chat = b"/chat/completions" in path
        m = _MAX_TOKENS.search(body)
        n = max(1, min(self.canned.tokens, int(m.group(1))) if m else self.canned.tokens)
        if not _STREAM_TRUE.search(body):
            t.write(_plain(b"200 OK", self.canned.full(chat, n)))
            return
        evs, tail = self.canned.stream(chat, n)
        row = None
        if self.rec.on:
            row = {"path": path.decode(errors="replace"), "t_in": t_in, "w_in": w_in, "t_first": None,
                   "t_last": None, "t_done": None, "n": n, "t_chunks": []}
        if self.itl_s <= 0 and self.ttft_s <= 0:
            t.write(SSE_HEAD + b"".join(evs))
            if row is not None:
                row["t_first"] = row["t_last"] = now_ns()
                row["t_chunks"] = [row["t_first"]] * n
            t.write(tail)
            if row is not None:
                row["t_done"] = now_ns()
                self.rec.done(row)
            return
        t.write(SSE_HEAD)
        loop = asyncio.get_running_loop()
        start = loop.time() + self.ttft_s
        loop.call_at(start, self._drip, t, evs, tail, 0, start, row)

    def _drip(self, t: asyncio.Transport, evs: list[bytes], tail: bytes, k: int, start: float,
              row: dict | None) -> None:
        """Chunk ``k`` of an answer, at ``start + k * itl`` (each write schedules the next, so that the writes of
        one answer stay in order however late the loop runs; a late one is not caught up)."""
        if t.is_closing():
            if row is not None:
                self.rec.done(row)  # the client went away: the row keeps what was written
            return
        if k == len(evs):
            t.write(tail)
            if row is not None:
                row["t_done"] = now_ns()
                self.rec.done(row)
            return
        t.write(evs[k])
        if row is not None:
            w = now_ns()
            row["t_chunks"].append(w)
            if k == 0:
                row["t_first"] = w
            row["t_last"] = w
        loop = asyncio.get_running_loop()
        loop.call_at(max(start + (k + 1) * self.itl_s, loop.time()), self._drip, t, evs, tail, k + 1, start, row)


async def serve(host: str, port: int, tokens: int, itl_ms: float, ttft_ms: float, record: bool = False,
                log: str | None = None, model: str = "mock") -> None:
    loop = asyncio.get_running_loop()
    canned = Canned(tokens, model)
    with open(log, "w") if log else contextlib.nullcontext() as f:
        rec = Recorder(record, f)
        server = await loop.create_server(
            lambda: MockProtocol(canned, itl_ms / 1000, ttft_ms / 1000, rec), host, port, backlog=4096,
            reuse_address=True,
        )
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"mock OpenAI server on http://{host}:{port}/v1 (model {model!r})" + (f", log {log}" if log else ""),
              flush=True)
        async with server:
            await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--model", default="mock", help="model name listed by /v1/models and put in the answers")
    ap.add_argument("--tokens", type=int, default=16, help="chunks per streamed answer (at most max_tokens)")
    ap.add_argument("--itl-ms", type=float, default=0.0, help="time between chunks (0 with --ttft-ms 0: all at once)")
    ap.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first chunk")
    ap.add_argument("--record", action="store_true", help="keep the server's own TTFT per request (GET /truth)")
    ap.add_argument("--log", default=None, help="JSON-lines file, one line per streamed request as it ends")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                    help="event loop; uvloop's timers have a 1 ms granularity, which lumps chunks under --itl-ms "
                         "of a few ms: asyncio there (uvloop falls back to asyncio when it is not installed)")
    a = ap.parse_args()
    coro = serve(a.host, a.port, a.tokens, a.itl_ms, a.ttft_ms, a.record, a.log, a.model)
    if a.loop == "uvloop":
        try:
            import uvloop

            uvloop.run(coro)
            return
        except ImportError:
            pass
    asyncio.run(coro)


if __name__ == "__main__":
    main()

"""A streaming OpenAI-compatible mock that records its own per-request times: the server-side truth.

Used by ``benchmarks/peers.py`` to judge load generators. It answers ``POST /v1/completions`` and
``/v1/chat/completions`` (streamed SSE with ``"stream": true``, else one JSON body), ``GET /v1/models``,
``/health`` and ``/metrics`` (an empty Prometheus page). A streamed answer is ``--tokens`` chunks (fewer when
``max_tokens`` is smaller), each the text ``" the"`` (one token for benchmint's tiny tokenizer and for the
common BPE vocabularies), the first ``--ttft-ms`` after the request was read and the next ones ``--itl-ms``
apart, then a usage chunk and ``[DONE]``.

For every streamed request it records, on ``time.monotonic_ns()`` (CLOCK_MONOTONIC, one clock for every
process on the host, so the figures line up with a client's ``time.monotonic()``): ``t_in`` when the whole
request had been read, ``t_first`` / ``t_last`` when the first / last content chunk was written to the socket,
``t_done`` after ``[DONE]``, ``t_chunks`` (every content chunk's write) and ``n`` (chunks); ``w_in`` is the
read on the wall clock (``time.time_ns()``), to pair requests with a client that logs wall-clock send times. On SIGTERM or
SIGINT it writes them to ``--log`` as JSON lines and exits. The server's own TTFT of a request is ``t_first - t_in``, its TPOT
``(t_last - t_first) / (n - 1)``.

    python benchmarks/truth_server.py --port 8123 --log truth.jsonl [--tokens 16] [--itl-ms 2] [--ttft-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import time

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


def _events(chat: bool, n: int, prompt_tokens: int = 8) -> tuple[list[bytes], bytes]:
    """The ``n`` content chunks and the tail (usage chunk, ``[DONE]``, end of the chunked body)."""
    obj = b"chat.completion.chunk" if chat else b"text_completion"
    head = b'{"id":"cmpl-truth","object":"%s","created":0,"model":"truth","choices":[' % obj
    evs = []
    for i in range(n):
        fr = b'"length"' if i == n - 1 else b"null"
        c = (b'{"index":0,"delta":{"role":"assistant","content":"%s"},"finish_reason":%s}' if chat
             else b'{"index":0,"text":"%s","finish_reason":%s}') % (WORD, fr)
        evs.append(_chunk(b"data: " + head + c + b"]}\n\n"))
    usage = b'{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}' % (prompt_tokens, n, n + prompt_tokens)
    tail = _chunk(b"data: " + head + b'],"usage":' + usage + b"}\n\n") + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    return evs, tail


def _full(chat: bool, n: int) -> bytes:
    text = WORD * n
    ch = (b'{"index":0,"message":{"role":"assistant","content":"%s"},"finish_reason":"length"}' if chat
          else b'{"index":0,"text":"%s","finish_reason":"length"}') % text
    return (b'{"id":"cmpl-truth","object":"x","created":0,"model":"truth","choices":[' + ch +
            b'],"usage":{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d}}' % (n, n + 8))


class Recorder:
    def __init__(self) -> None:
        self.rows: list[dict] = []


class TruthProtocol(asyncio.Protocol):
    def __init__(self, rec: Recorder, tokens: int, itl_s: float, ttft_s: float, model: str):
        self.rec, self.tokens, self.itl_s, self.ttft_s, self.model = rec, tokens, itl_s, ttft_s, model
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

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
                clen = int(head[i + 15: j if j > 0 else None])
            if len(self.buf) < end + 4 + clen:
                return
            body = self.buf[end + 4: end + 4 + clen]
            self.buf = self.buf[end + 4 + clen:]
            self.handle(head.split(b" ", 2), body, time.monotonic_ns(), time.time_ns())

    def handle(self, first: list[bytes], body: bytes, t_in: int, w_in: int) -> None:
        t = self.transport
        assert t is not None
        method, path = first[0], first[1] if len(first) > 1 else b"/"
        if method != b"POST":
            if path.endswith(b"/models"):
                t.write(_plain(b"200 OK", b'{"object":"list","data":[{"id":"%s","object":"model","created":0,'
                                          b'"owned_by":"benchmint"}]}' % self.model.encode()))
            elif path.startswith(b"/metrics"):
                t.write(_plain(b"200 OK", b"", b"text/plain; version=0.0.4"))
            else:
                t.write(_plain(b"200 OK", b'{"status":"ok"}'))
            return
        chat = b"/chat/completions" in path
        m = _MAX_TOKENS.search(body)
        n = max(1, min(self.tokens, int(m.group(1))) if m else self.tokens)
        if not _STREAM_TRUE.search(body):
            t.write(_plain(b"200 OK", _full(chat, n)))
            return
        evs, tail = _events(chat, n)
        row = {"path": path.decode(errors="replace"), "t_in": t_in, "w_in": w_in, "t_first": None, "t_last": None,
               "t_done": None, "n": n, "t_chunks": []}
        self.rec.rows.append(row)
        t.write(SSE_HEAD)
        loop = asyncio.get_running_loop()

        def write(k: int) -> None:
            if t.is_closing():
                return
            t.write(evs[k])
            now = time.monotonic_ns()
            row["t_chunks"].append(now)
            if k == 0:
                row["t_first"] = now
            if k == n - 1:
                row["t_last"] = now
                t.write(tail)
                row["t_done"] = time.monotonic_ns()

        if self.itl_s <= 0 and self.ttft_s <= 0:
            for k in range(n):
                write(k)
            return
        for k in range(n):
            loop.call_at(loop.time() + self.ttft_s + k * self.itl_s, write, k)


async def serve(host: str, port: int, tokens: int, itl_ms: float, ttft_ms: float, log: str, model: str) -> None:
    loop = asyncio.get_running_loop()
    rec = Recorder()
    server = await loop.create_server(
        lambda: TruthProtocol(rec, tokens, itl_ms / 1000, ttft_ms / 1000, model), host, port, backlog=4096,
        reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"truth server on http://{host}:{port}/v1 (model {model!r}), log {log}", flush=True)
    async with server:
        await stop.wait()
    with open(log, "w") as f:
        for row in rec.rows:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--log", required=True, help="JSON-lines file written at exit (one line per streamed request)")
    ap.add_argument("--model", default="tiny", help="model name listed by /v1/models")
    ap.add_argument("--tokens", type=int, default=16, help="chunks per streamed answer (at most max_tokens)")
    ap.add_argument("--itl-ms", type=float, default=2.0, help="time between chunks (0 with --ttft-ms 0: all at once)")
    ap.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first chunk")
    a = ap.parse_args()
    # the standard loop, not uvloop: uvloop's timers have a 1 ms granularity, which would lump the chunks
    asyncio.run(serve(a.host, a.port, a.tokens, a.itl_ms, a.ttft_ms, a.log, a.model))


if __name__ == "__main__":
    main()

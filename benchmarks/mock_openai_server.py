"""A minimal, fast OpenAI-compatible streaming mock server (raw asyncio protocol on uvloop), for client tests.

It answers ``POST /v1/completions`` and ``/v1/chat/completions`` with canned SSE chunks (``--tokens`` of them,
honouring ``max_tokens`` when smaller), a usage chunk and ``[DONE]``; ``GET /v1/models`` and ``/health``.
HTTP/1.1 keep-alive, chunked transfer encoding. ``--itl-ms`` spaces the chunks out (0: written at once);
``--ttft-ms`` delays the first one. ``--record`` keeps the server's own time to first token of each streamed
request (from the request's last byte read to its first content chunk written, ``time.perf_counter_ns``: the
same monotonic clock as the client's on this host) and hands them out at ``GET /truth`` (JSON, those recorded
since the last call, in arrival order). It parses only what it needs (headers, Content-Length, max_tokens, stream),
so that one process can serve well over a thousand streamed requests per second on one core.

    python benchmarks/mock_openai_server.py --port 8123 [--tokens 16] [--itl-ms 0] [--ttft-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time

now_ns = time.perf_counter_ns

_MAX_TOKENS = re.compile(rb'"max_(?:completion_)?tokens"\s*:\s*(\d+)')
_STREAM_FALSE = re.compile(rb'"stream"\s*:\s*false')


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: bytes) -> bytes:
    return b"data: " + obj + b"\n\n"


class Canned:
    def __init__(self, tokens: int):
        self.tokens = tokens
        self.cache: dict[tuple[bool, int], tuple[list[bytes], bytes]] = {}

    def stream(self, chat: bool, n: int) -> tuple[list[bytes], bytes]:
        key = (chat, n)
        if key not in self.cache:
            head = b'{"id":"cmpl-mock","object":"%s","created":0,"model":"mock","choices":[' % (
                b"chat.completion.chunk" if chat else b"text_completion"
            )
            evs = []
            for i in range(n):
                fr = b'"length"' if i == n - 1 else b"null"
                c = (b'{"index":0,"delta":{"content":" tok%d"},"finish_reason":%s}' if chat
                     else b'{"index":0,"text":" tok%d","finish_reason":%s}') % (i, fr)
                evs.append(_chunk(_event(head + c + b"]}")))
            usage = b'{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d}' % (n, n + 8)
            tail = _chunk(_event(head + b'],"usage":' + usage + b"}")) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
            self.cache[key] = (evs, tail)
        return self.cache[key]

    def full(self, chat: bool, n: int) -> bytes:
        text = b"".join(b" tok%d" % i for i in range(n))
        ch = (b'{"index":0,"message":{"role":"assistant","content":"%s"},"finish_reason":"length"}' if chat
              else b'{"index":0,"text":"%s","finish_reason":"length"}') % text
        return (b'{"id":"cmpl-mock","object":"x","created":0,"model":"mock","choices":[' + ch +
                b'],"usage":{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d}}' % (n, n + 8))


SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n")


def _plain(status: bytes, body: bytes, ctype: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (
        status, ctype, len(body), body)


class MockProtocol(asyncio.Protocol):
    def __init__(self, canned: Canned, itl_s: float, ttft_s: float, truth: list[tuple[int, int]] | None = None):
        self.canned, self.itl_s, self.ttft_s = canned, itl_s, ttft_s
        self.truth = truth  # (request read, first chunk written) per streamed request, when recording
        self.t_read = 0
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.t_read = now_ns()
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
            self.handle(head.split(b" ", 2), body)

    def handle(self, first: list[bytes], body: bytes) -> None:
        t = self.transport
        assert t is not None
        method, path = first[0], first[1] if len(first) > 1 else b"/"
        if method == b"GET":
            if path == b"/truth" and self.truth is not None:
                body = json.dumps({"ttft_ns": [b - a for a, b in self.truth]}).encode()
                self.truth.clear()
                t.write(_plain(b"200 OK", body))
            elif path.endswith(b"/models"):
                t.write(_plain(b"200 OK", b'{"object":"list","data":[{"id":"mock","object":"model"}]}'))
            else:
                t.write(_plain(b"200 OK", b'{"status":"ok"}'))
            return
        chat = path.endswith(b"/chat/completions")
        m = _MAX_TOKENS.search(body)
        n = min(self.canned.tokens, int(m.group(1))) if m else self.canned.tokens
        n = max(n, 1)
        if _STREAM_FALSE.search(body) or b'"stream"' not in body:
            t.write(_plain(b"200 OK", self.canned.full(chat, n)))
            return
        evs, tail = self.canned.stream(chat, n)
        if self.itl_s <= 0 and self.ttft_s <= 0:
            if self.truth is not None:
                self.truth.append((self.t_read, now_ns()))
            t.write(SSE_HEAD + b"".join(evs) + tail)
            return
        t.write(SSE_HEAD)
        loop = asyncio.get_running_loop()
        start = loop.time() + self.ttft_s
        loop.call_at(start, self._drip, t, evs, tail, 0, start, self.t_read)

    def _drip(self, t: asyncio.Transport, evs: list[bytes], tail: bytes, k: int, start: float, t_read: int) -> None:
        """Chunk ``k`` of an answer, at ``start + k * itl`` (each write schedules the next, so that the writes of
        one answer stay in order however late the loop runs; a late one is not caught up)."""
        if t.is_closing():
            return
        if k == len(evs):
            t.write(tail)
            return
        if k == 0 and self.truth is not None:
            self.truth.append((t_read, now_ns()))
        t.write(evs[k])
        loop = asyncio.get_running_loop()
        loop.call_at(max(start + (k + 1) * self.itl_s, loop.time()), self._drip, t, evs, tail, k + 1, start, t_read)


async def serve(host: str, port: int, tokens: int, itl_ms: float, ttft_ms: float, record: bool = False) -> None:
    loop = asyncio.get_running_loop()
    canned = Canned(tokens)
    truth: list[tuple[int, int]] | None = [] if record else None
    server = await loop.create_server(
        lambda: MockProtocol(canned, itl_ms / 1000, ttft_ms / 1000, truth), host, port, backlog=4096,
        reuse_address=True,
    )
    print(f"mock OpenAI server on http://{host}:{port}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--tokens", type=int, default=16, help="chunks per streamed answer (at most max_tokens)")
    ap.add_argument("--itl-ms", type=float, default=0.0, help="time between chunks (0: all at once)")
    ap.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first chunk")
    ap.add_argument("--record", action="store_true", help="keep the server's own TTFT per request (GET /truth)")
    a = ap.parse_args()
    args = (a.host, a.port, a.tokens, a.itl_ms, a.ttft_ms, a.record)
    try:
        import uvloop

        uvloop.run(serve(*args))
    except ImportError:
        asyncio.run(serve(*args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

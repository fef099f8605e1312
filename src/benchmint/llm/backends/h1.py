"""A lean HTTP/1.1 client transport for plain ``http://`` servers: asyncio protocols, httptools' parser, a
keep-alive pool per event loop.

The load generator's own cost per request is what bounds how fast one process can offer load and how close its
timestamps are to the wire. A general client (aiohttp) spends most of a small streamed request on its request
and response machinery; here a request is one prebuilt head plus the body in one ``write``, and the response
is parsed by llhttp (through httptools, the parser uvicorn uses), whose callbacks hand each body piece to the
request's :class:`Exchange` straight from ``data_received``, stamped with the monotonic time of that read: no
task wakes up per chunk. :class:`benchmint.llm.backends.http.HttpBackend` uses it for ``http://`` URLs and keeps
aiohttp for everything else (TLS, a connection limit, ``transport=aiohttp``).

What it does: ``POST`` with ``Content-Length``; responses framed by ``Content-Length``, chunked encoding or
the connection's close; keep-alive as the response allows (``Connection: close``, HTTP/1.0); one request at a
time per connection, no pipelining. It does not retry: a connection the server closed before or during the
response is :class:`Closed` (the request's ``reset``), as with aiohttp, which retries no ``POST`` either.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import httptools

from benchmint.core.clock import now_ns


class Exchange(Protocol):
    """One request's side of a connection: the parser's events for its response."""

    def headers(self, status: int) -> None: ...

    def body(self, piece: bytes, t: int) -> None:
        """A piece of the (de-chunked) body, read at monotonic ``t`` (ns)."""

    def end(self, t: int) -> None:
        """The response is complete."""

    def lost(self, exc: Exception) -> None:
        """The connection broke (closed, reset, unparseable) before the response was complete."""


class ConnectError(Exception):
    def __init__(self, os_error: BaseException):
        super().__init__(str(os_error))
        self.os_error = os_error


class Closed(Exception):
    """The server closed the connection before the response was complete."""


class BadResponse(Exception):
    """The server's bytes are not an HTTP/1.1 response."""


class Connection(asyncio.Protocol):
    __slots__ = ("pool", "parser", "transport", "ex", "t", "framed", "head_done", "open", "pending")

    def __init__(self, pool: Pool):
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.ex: Exchange | None = None
        self.t = 0
        self.framed = False  # Content-Length or Transfer-Encoding: else the body ends with the connection
        self.head_done = False
        self.open = True
        self.pending: list[bytes] = []  # body pieces of the current read, handed over once per read

    def send(self, ex: Exchange, data: bytes) -> None:
        self.ex = ex
        self.head_done = False
        self.transport.write(data)  # type: ignore[union-attr]

    def abort(self) -> None:
        """Drop the connection (a request cancelled, timed out or abandoned mid-response)."""
        self.open = False
        self.ex = None
        if self.transport is not None:
            self.transport.abort()

    # ---- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.t = now_ns()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self.pending = []
            why = e.__context__ or e
            self._broken(BadResponse(f"the server's answer is not HTTP/1.1 ({type(why).__name__}: {why})"))
            return
        except httptools.HttpParserUpgrade:  # not a subclass of the above: it escaped to the loop's error log
            self.pending = []
            self._broken(BadResponse("the server switched protocols (101) instead of answering the request"))
            return
        if self.pending:
            self._hand_over()

    def _hand_over(self) -> None:
        """The body read by one ``data_received`` (every HTTP chunk of it), to the exchange in one piece."""
        parts, self.pending = self.pending, []
        if self.ex is not None:
            self.ex.body(parts[0] if len(parts) == 1 else b"".join(parts), self.t)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.pool.forget(self)
        if self.pending:
            self._hand_over()
        ex, self.ex = self.ex, None
        if ex is None:
            return
        if self.head_done and not self.framed:  # a body read to the connection's close is complete
            ex.end(now_ns())
        else:
            where = "in the middle of the response" if self.head_done else "before the response"
            ex.lost(Closed(f"{where}" + (f" ({type(exc).__name__}: {exc})" if exc else "")))

    def _broken(self, err: Exception) -> None:
        ex = self.ex
        self.abort()
        self.pool.forget(self)
        if ex is not None:
            ex.lost(err)

    # ---- httptools callbacks
    def on_message_begin(self) -> None:
        self.framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if n == b"content-length" or n == b"transfer-encoding":
            self.framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx (100 Continue, 103 Early Hints): the answer follows
            self.head_done = False
            return
        self.head_done = True
        if self.ex is not None:
            self.ex.headers(status)

    def on_body(self, body: bytes) -> None:
        self.pending.append(body)

    def on_message_complete(self) -> None:
        if not self.head_done:  # the end of a 1xx answer: the request's own answer is still to come
            return
        if self.pending:
            self._hand_over()
        ex, self.ex = self.ex, None
        if ex is None:  # an answer nobody asked for: the connection is out of step
            self.abort()
            self.pool.forget(self)
            return
        ex.end(self.t)
        if self.open and self.parser.should_keep_alive():
            self.pool.idle.append(self)
        elif self.open:
            self.open = False
            self.transport.close()  # type: ignore[union-attr]


class Pool:
    """Keep-alive connections to one ``host:port``, for one event loop; the most recently used first."""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self.idle: list[Connection] = []
        self.conns: set[Connection] = set()

    def take(self) -> Connection | None:
        idle = self.idle
        while idle:
            c = idle.pop()
            if c.open:
                return c
        return None

    async def connect(self, timeout_s: float) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Connection(self), self.host, self.port), timeout_s
            )
        except OSError as e:
            raise ConnectError(e) from None
        self.conns.add(conn)
        return conn

    def forget(self, c: Connection) -> None:
        self.conns.discard(c)
        if c in self.idle:
            self.idle.remove(c)

    def close(self) -> None:
        for c in list(self.conns):
            c.abort()
        self.conns.clear()
        self.idle.clear()


def request_head(method: str, host: str, path: str, headers: dict[str, str]) -> bytes:
    """Everything of a request before its ``Content-Length`` value."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "User-Agent: benchmint", "Accept: */*"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")

"""OpenAI-compatible HTTP backend: ``/v1/completions`` and ``/v1/chat/completions``, streamed (SSE) or not.

Two transports, one per event loop each (so each worker process/loop reuses its keep-alive connections):
``h1`` (``h1.py``: asyncio protocols, httptools' parser, a keep-alive pool), the default for ``http://``, and
an aiohttp session for ``https://``, a connection limit (``max_connections``) or ``transport="aiohttp"``. Both
read the answer with the same code (``answer.py``), which is deliberately cheap: it decodes the byte stream into
SSE events as the spec says (``sse.py``: lines of one event's ``data:`` fields joined with a newline), stamps
each event with the monotonic clock of the read that completed it (on ``h1``, taken in the socket callback)
and decodes a read's events of the usual shape in one msgspec call, any other event alone with orjson.
Timeouts (``timeout_s`` for the whole request, ``connect_timeout_s`` for a new connection) and error kinds are
the same on both. Server quirks handled:

- ``data:`` with or without a space (TGI's axum writes ``data:{...}``), CRLF or CR line ends, SSE comments
  (``: ping``) and ``event:`` lines are skipped, and a last event with no closing blank line still counts;
- usage in a final chunk with empty ``choices`` (vLLM, SGLang, OpenAI with ``stream_options.include_usage``),
  or on every chunk / in the chunk carrying ``finish_reason`` (TGI, llama.cpp): the last usage seen wins;
- chat deltas in ``content`` or ``reasoning_content`` (reasoning models), role-only first chunks (not tokens);
- in-stream errors (``{"error": ...}`` data, or llama.cpp's ``error:`` event) count as ``stream_error``;
- a stream that ends without ``[DONE]`` is accepted when it delivered content, a ``finish_reason`` or usage
  (TGI's native route and ``transformers serve`` send none); one that finished with no content (the model's
  first token was end-of-sequence) is a completed request with zero output tokens, not a failure;
- a 400/422 naming an extension field (``ignore_eos``, ``stream_options``, ``min_tokens``) drops that field
  from later requests and sends the rejected one again, once (``adapt.py``).

Output tokens come from ``usage`` when the server gives it; otherwise from the tokenizer (``tokenizer=``)
counting the returned text after the run (the record is left with ``output_tokens`` None and source
``tokenizer`` for ``llm.token_counts.count_after_run``; nothing is tokenized on the event loop), else the
number of content chunks; ``output_tokens_source`` says which. When the
server's usage is known, more content chunks than usage tokens is flagged (``token_count_flag``): a chunk
holds at least one token, so that means a broken usage figure or chunking. A usage figure that is not a
token count (2**64-1, ``"many"``, ``"usage": "lots"``) is ignored and flagged; the answer is kept.

What a server sends never escapes a request: a malformed answer is a ``malformed`` failure whose message says
what the answer lacked (``response has no choices``, ``stream event is null, not a JSON object``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from yarl import URL

from benchmint.core.clock import now_ns
from benchmint.core.errors import UserError
from benchmint.llm.backends import h1
from benchmint.llm.backends.adapt import RequestAdapter
from benchmint.llm.backends.answer import AnswerError, JSONDecodeError, StreamRead, parse_full, short
from benchmint.llm.backends.open_files import connection_cap
from benchmint.llm.token_counts import PENDING_SOURCE
from benchmint.llm.types import FirstTokenHook, GenRequest, RequestRecord, mark_not_sent

TRANSPORTS = ("auto", "h1", "aiohttp")  # auto: h1 for http:// without a connection limit, else aiohttp


class HttpBackend:
    kind = "openai-http"

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000/v1",
        model: str | None = None,
        api: str = "completions",
        stream: bool = True,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        api_key: str | None = None,
        tokenizer: Any = None,
        include_usage: bool = True,
        send_ignore_eos: bool = True,
        temperature: float | None = 0.0,
        extra_body: dict[str, Any] | None = None,
        max_connections: int = 0,
        adapt: bool = True,
        transport: str = "auto",
    ):
        if api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' or 'chat', not {api!r}")
        if transport not in TRANSPORTS:
            raise UserError(f"--backend-option transport={transport}: choose one of {', '.join(TRANSPORTS)}")
        self.base = normalize_base_url(url)
        self.api = api
        self.endpoint = URL(self.base + ("/chat/completions" if api == "chat" else "/completions"))
        self.model = model
        self.stream = stream
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.tokenizer = tokenizer
        self.include_usage = include_usage
        self.send_ignore_eos = send_ignore_eos
        self.temperature = temperature
        self.extra_body = dict(extra_body or {})
        self.max_connections = max_connections
        self.adapter = RequestAdapter(enabled=adapt)  # extensions the server rejected (adapt.py)
        self.transport = _choose_transport(transport, self.endpoint, max_connections)
        if self.transport == "h1" and (self.endpoint.scheme != "http" or max_connections or self.endpoint.user):
            # h1 speaks plain HTTP and has no connection limit: it would send cleartext to a TLS port, or
            # ignore the limit asked for or the URL's credentials
            why = (f"{self.endpoint.scheme}:// URLs" if self.endpoint.scheme != "http" else
                   "max_connections" if max_connections else "credentials in the URL")
            raise UserError(f"--backend-option transport=h1 cannot serve {why}; use transport=aiohttp or auto")
        # requests holding a connection at once: what the open-files limit allows, or max_connections
        self.connection_cap = connection_cap(max_connections)
        self.requests_waited = 0  # requests that found every connection taken and waited for one
        self._slots: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Semaphore]] = {}
        self._sessions: dict[int, tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession]] = {}
        self._pools: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}
        if self.transport == "h1":
            e = self.endpoint
            host = e.raw_host or "127.0.0.1"
            self._h1_addr = (host, e.port or 80)
            netloc = f"[{host}]" if ":" in host else host
            self._h1_head = h1.request_head(
                "POST", netloc + ("" if e.explicit_port is None else f":{e.port}"), e.raw_path_qs, self.headers
            )

    # ---- lifecycle
    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        entry = self._sessions.get(id(loop))
        if entry is not None and entry[0] is loop and not entry[1].closed:
            return entry[1]
        conn = aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300, force_close=False)
        timeout = aiohttp.ClientTimeout(
            total=self.timeout_s, sock_connect=self.connect_timeout_s, connect=self.connect_timeout_s
        )
        s = aiohttp.ClientSession(
            connector=conn,
            timeout=timeout,
            headers=self.headers,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # no per-request cookie work
        )
        self._sessions[id(loop)] = (loop, s)  # the loop is kept so that its id cannot be reused
        return s

    def _pool(self) -> Any:
        loop = asyncio.get_running_loop()
        entry = self._pools.get(id(loop))
        if entry is not None and entry[0] is loop:
            return entry[1]
        pool = h1.Pool(*self._h1_addr)
        self._pools[id(loop)] = (loop, pool)  # the loop is kept so that its id cannot be reused
        return pool

    async def start(self) -> None:
        if self.transport == "aiohttp":
            self._session()
        else:
            self._pool()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        entry = self._sessions.pop(id(loop), None)
        if entry is not None and entry[0] is loop:
            await entry[1].close()
        pool = self._pools.pop(id(loop), None)
        if pool is not None and pool[0] is loop:
            pool[1].close()
        self._slots.pop(id(loop), None)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its per-loop state (sessions, pools, gates): a copy in another process makes its own."""
        state = dict(self.__dict__)
        state.update(_sessions={}, _pools={}, _slots={})
        return state

    def describe_client(self) -> str:
        """The client, for a result's ``measurement.client``."""
        cap = f", at most {self.connection_cap} requests on the wire at once" if self.connection_cap else ""
        if self.transport == "h1":
            return f"benchmint asyncio + httptools HTTP/1.1 (keep-alive pool{cap})"
        return f"benchmint asyncio + aiohttp{f' ({cap[2:]})' if cap else ''}"

    # ---- request body
    def body(self, req: GenRequest) -> bytes:
        b: dict[str, Any] = {"model": self.model, "max_tokens": req.max_tokens, "stream": self.stream}
        if self.api == "chat":
            msgs = req.prompt if isinstance(req.prompt, list) else [{"role": "user", "content": req.prompt}]
            b["messages"] = msgs
        else:
            b["prompt"] = req.prompt if isinstance(req.prompt, str) else _messages_as_text(req.prompt)
        if self.stream and self.include_usage:
            b["stream_options"] = {"include_usage": True}
        if self.temperature is not None:
            b["temperature"] = self.temperature
        if req.ignore_eos and self.send_ignore_eos:
            b["ignore_eos"] = (
                True  # vLLM, SGLang, llama.cpp, benchmint; others ignore or reject (then turn it off)
            )
        if self.extra_body:
            b.update(self.extra_body)
        if req.extra:
            b.update(req.extra)
        if self.adapter.dropped:
            self.adapter.strip(b)
        return orjson.dumps(b)

    # ---- one request
    async def generate(self, req: GenRequest, on_first_token: FirstTokenHook | None = None) -> RequestRecord:
        data = self.body(req)
        rec = await self._send(req, data, on_first_token)
        if rec.error_kind == "http_4xx" and self.adapter.learn(rec.http_status, rec.error or "", data, req.id):
            rec = await self._send(req, self.body(req), on_first_token)  # once, without what it rejected
            self.adapter.note_retry(req.id, rec.error_kind is None)
        return rec

    def _slot(self) -> asyncio.Semaphore | None:
        """This loop's gate on requests holding a connection (:mod:`open_files`); None without a cap."""
        if self.connection_cap is None:
            return None
        loop = asyncio.get_running_loop()
        entry = self._slots.get(id(loop))
        if entry is None or entry[0] is not loop:
            entry = self._slots[id(loop)] = (loop, asyncio.Semaphore(self.connection_cap))
        return entry[1]

    async def _send(self, req: GenRequest, data: bytes, on_first_token: FirstTokenHook | None) -> RequestRecord:
        slot = self._slot()
        if slot is None:
            return await self._send_now(req, data, on_first_token)
        if slot.locked():
            self.requests_waited += 1
        try:  # sent once a connection is free: the wait is the client's lag, not the server's latency
            await slot.acquire()
        except asyncio.CancelledError as e:
            mark_not_sent(e)  # Ctrl-C while it waited: it was never sent
            raise
        try:
            return await self._send_now(req, data, on_first_token)
        finally:
            slot.release()

    async def _send_now(self, req: GenRequest, data: bytes, on_first_token: FirstTokenHook | None) -> RequestRecord:
        rec = RequestRecord(id=req.id, input_tokens=req.input_tokens)
        usage: Any = None
        rec.sent_ns = now_ns()
        try:
            if self.transport == "h1":
                usage = await self._exchange_h1(rec, data, on_first_token)
            else:
                usage = await self._exchange_aiohttp(rec, data, on_first_token)
        except asyncio.CancelledError:
            rec.end_ns = now_ns()
            rec.error_kind, rec.error = "cancelled", "cancelled before completion"
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError):
            rec.error_kind, rec.error = "timeout", f"no complete response within {self.timeout_s:g} s"
        except aiohttp.ClientConnectorError as e:
            rec.error_kind, rec.error = "connect", f"cannot connect to {self.base}: {e.os_error or e}"
        except h1.ConnectError as e:
            rec.error_kind, rec.error = "connect", f"cannot connect to {self.base}: {e.os_error}"
        except h1.Closed as e:
            rec.error_kind, rec.error = "reset", f"connection closed by the server {e}"
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, ConnectionResetError) as e:
            rec.error_kind, rec.error = "reset", f"connection closed by the server: {type(e).__name__}: {e}"
        except aiohttp.ClientOSError as e:
            rec.error_kind, rec.error = "reset", f"{type(e).__name__}: {e}"
        except JSONDecodeError as e:
            rec.error_kind, rec.error = "malformed", f"response is not JSON ({e})"
        except AnswerError as e:
            rec.error_kind, rec.error = e.kind, str(e)
        except (aiohttp.ClientError, h1.BadResponse) as e:
            rec.error_kind, rec.error = "other", f"{type(e).__name__}: {e}"
        except Exception as e:  # a server answer must never escape the request's error handling
            rec.error_kind, rec.error = "malformed", f"response could not be read ({type(e).__name__})"
        if rec.error_kind is not None:
            if rec.end_ns is None:
                rec.end_ns = now_ns()
            return rec
        self._count_tokens(rec, usage)
        return rec

    def _http_error(self, rec: RequestRecord, status: int, raw: bytes) -> None:
        text = raw[:300].decode("utf-8", "replace")
        rec.end_ns = now_ns()
        rec.error_kind = "http_4xx" if status < 500 else "http_5xx"
        rec.http_status = status
        rec.error = f"HTTP {status}: {' '.join(text.split())}"

    async def _exchange_aiohttp(self, rec: RequestRecord, data: bytes, hook: FirstTokenHook | None) -> Any:
        async with self._session().post(self.endpoint, data=data) as resp:
            if resp.status >= 400:
                return self._http_error(rec, resp.status, await resp.read())
            if not self.stream:
                raw = await resp.read()
                rec.end_ns = now_ns()
                return parse_full(raw, rec, hook, self.api == "chat")
            read = StreamRead(rec, hook, self.api == "chat")
            content = resp.content
            while True:
                piece = await content.readany()
                if read.feed(piece, now_ns()) or not piece:
                    break
            rec.end_ns = now_ns()
            return read.finish()

    async def _exchange_h1(self, rec: RequestRecord, data: bytes, hook: FirstTokenHook | None) -> Any:
        pool = self._pool()
        conn = pool.take()
        if conn is None:
            conn = await pool.connect(min(self.connect_timeout_s, self.timeout_s))
        loop = asyncio.get_running_loop()
        ex = _H1Answer(loop.create_future(), rec, hook, self.api == "chat", self.stream, conn)
        timer = loop.call_later(max(0.0, self.timeout_s - (now_ns() - rec.sent_ns) / 1e9), ex.expire)
        conn.send(ex, b"%s%d\r\n\r\n%s" % (self._h1_head, len(data), data))
        try:
            out = await ex.fut
        except asyncio.CancelledError:
            conn.abort()
            raise
        finally:
            timer.cancel()
        if ex.status >= 400:
            return self._http_error(rec, ex.status, out)
        if ex.status >= 300:  # aiohttp follows a redirect; this transport says so rather than read it as the answer
            rec.end_ns = now_ns()
            rec.error_kind, rec.http_status = "other", ex.status
            rec.error = (f"HTTP {ex.status}: the server redirects; give --url the address it redirects to, or "
                         "--backend-option transport=aiohttp to follow it")
            return None
        if not self.stream:
            rec.end_ns = now_ns()
            return parse_full(out, rec, hook, self.api == "chat")
        return out

    def _count_tokens(self, rec: RequestRecord, usage: Any) -> None:
        bad: list[str] = []
        if usage is not None and not isinstance(usage, dict):
            bad.append(f"usage is {_show(usage)}, not an object")
        elif usage:
            for name in ("completion_tokens", "prompt_tokens"):
                got = usage.get(name)
                n = None if got is None else _token_count(got)
                if n is None:
                    if got is not None:
                        bad.append(f"usage.{name} is {_show(got)}, not a token count")
                elif name == "prompt_tokens":
                    rec.input_tokens = n
                else:
                    rec.output_tokens, rec.output_tokens_source = n, "usage"
        if bad:  # the answer itself arrived: keep it, count its tokens another way and say why
            rec.token_count_flag = "usage ignored: " + "; ".join(bad)
        if rec.output_tokens is None:
            if self.tokenizer is not None:  # counted after the run, off the event loop (llm/token_counts.py)
                rec.output_tokens_source = PENDING_SOURCE
            else:
                rec.output_tokens, rec.output_tokens_source = rec.chunk_count, "chunks"
        elif self.stream and rec.chunk_count > rec.output_tokens and rec.token_count_flag is None:
            rec.token_count_flag = (
                f"chunks>usage ({rec.chunk_count} content chunks, usage says {rec.output_tokens})"
            )


def _choose_transport(transport: str, endpoint: URL, max_connections: int) -> str:
    if transport != "auto":
        return transport
    # aiohttp for what h1 does not do: TLS, a connection limit, credentials in the URL (sent as Basic auth)
    return "h1" if endpoint.scheme == "http" and not max_connections and endpoint.user is None else "aiohttp"


class _H1Answer:
    """One request's answer on a lean connection (:class:`benchmint.llm.backends.h1.Exchange`): a streamed
    answer is read as its pieces arrive, in the connection's callback; anything else is gathered whole. ``fut``
    gets the usage (streamed) or the body's bytes; or the error, which ``_send`` sorts into its kind."""

    __slots__ = ("fut", "rec", "hook", "chat", "stream", "conn", "status", "read", "parts")

    def __init__(self, fut: asyncio.Future, rec: RequestRecord, hook: FirstTokenHook | None, chat: bool,
                 stream: bool, conn: Any):
        self.fut = fut
        self.rec = rec
        self.hook = hook
        self.chat = chat
        self.stream = stream
        self.conn = conn
        self.status = 0
        self.read: StreamRead | None = None
        self.parts: list[bytes] = []

    def headers(self, status: int) -> None:
        self.status = status
        if self.stream and status < 300:
            self.read = StreamRead(self.rec, self.hook, self.chat)

    def body(self, piece: bytes, t: int) -> None:
        if self.fut.done():  # after [DONE], an error or the timeout: the rest is not read
            return
        read = self.read
        if read is None:
            self.parts.append(piece)
            return
        try:
            if read.feed(piece, t):
                self._finish()
        except Exception as e:
            self._fail(e)

    def end(self, t: int) -> None:
        if self.fut.done():
            return
        read = self.read
        if read is None:
            self.fut.set_result(b"".join(self.parts))
            return
        try:
            read.feed(b"", t)
            self._finish()
        except Exception as e:
            self._fail(e)

    def _finish(self) -> None:
        self.rec.end_ns = now_ns()
        self.fut.set_result(self.read.finish())  # type: ignore[union-attr]

    def _fail(self, e: Exception) -> None:
        self.conn.abort()  # the rest of a broken answer is not read: the connection is not reused
        if not self.fut.done():
            self.fut.set_exception(e)

    def lost(self, exc: Exception) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)

    def expire(self) -> None:
        if not self.fut.done():
            self.conn.abort()
            self.fut.set_exception(TimeoutError())


MAX_TOKEN_COUNT = 2**31 - 1  # larger than any context; a larger "count" is a broken server, not a measurement


def _token_count(v: Any) -> int | None:
    """A usage figure as a token count: an integer (or integral float) in [0, MAX_TOKEN_COUNT], else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, int) and 0 <= v <= MAX_TOKEN_COUNT:
        return v
    return None


def _show(v: Any) -> str:
    """A JSON value, short, for an error text (``"many"``, ``18446744073709551615``, ``[...]``)."""
    return short(repr(v) if not isinstance(v, str) else '"' + v + '"', 40)


def _messages_as_text(msgs: list[dict[str, str]]) -> str:
    return "\n".join(m.get("content", "") for m in msgs)


def normalize_base_url(url: str) -> str:
    """``http://h:p`` -> ``http://h:p/v1``; ``.../v1/`` -> ``.../v1``; a full endpoint URL loses its endpoint."""
    u = url.strip().rstrip("/")
    if "://" not in u:
        u = "http://" + u
    scheme = u.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise UserError(f"--url {url}: an OpenAI-compatible server is reached over http:// or https://, not {scheme}://")
    for tail in ("/chat/completions", "/completions"):
        if u.endswith(tail):
            u = u[: -len(tail)]
    if not u.rstrip("/").split("://", 1)[1].count("/"):
        u += "/v1"
    return u

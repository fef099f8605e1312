"""OpenAI-compatible HTTP backend: ``/v1/completions`` and ``/v1/chat/completions``, streamed (SSE) or not.

One pooled aiohttp session per event loop (so each worker process/loop reuses its keep-alive connections).
The streaming reader is deliberately cheap: it decodes the byte stream into SSE events as the spec says
(``sse.py``: lines of one event's ``data:`` fields joined with a newline), stamps each event with the monotonic
clock of the read that completed it and parses its data with orjson. Server quirks handled:

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
from benchmint.llm.backends.adapt import RequestAdapter
from benchmint.llm.backends.sse import SSEDecoder
from benchmint.llm.token_counts import PENDING_SOURCE
from benchmint.llm.types import FirstTokenHook, GenRequest, RequestRecord

_loads = orjson.loads


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
    ):
        if api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' or 'chat', not {api!r}")
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
        self._sessions: dict[int, tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession]] = {}

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

    async def start(self) -> None:
        self._session()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        entry = self._sessions.pop(id(loop), None)
        if entry is not None and entry[0] is loop:
            await entry[1].close()

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

    async def _send(self, req: GenRequest, data: bytes, on_first_token: FirstTokenHook | None) -> RequestRecord:
        rec = RequestRecord(id=req.id, input_tokens=req.input_tokens)
        session = self._session()
        usage: Any = None
        rec.sent_ns = now_ns()
        try:
            async with session.post(self.endpoint, data=data) as resp:
                if resp.status >= 400:
                    text = (await resp.read())[:300].decode("utf-8", "replace")
                    rec.end_ns = now_ns()
                    rec.error_kind = "http_4xx" if resp.status < 500 else "http_5xx"
                    rec.http_status = resp.status
                    rec.error = f"HTTP {resp.status}: {' '.join(text.split())}"
                    return rec
                if self.stream:
                    usage = await self._read_stream(resp, rec, on_first_token)
                else:
                    raw = await resp.read()
                    rec.end_ns = now_ns()
                    usage = self._parse_full(raw, rec, on_first_token)
        except asyncio.CancelledError:
            rec.end_ns = now_ns()
            rec.error_kind, rec.error = "cancelled", "cancelled before completion"
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError):
            rec.error_kind, rec.error = "timeout", f"no complete response within {self.timeout_s:g} s"
        except aiohttp.ClientConnectorError as e:
            rec.error_kind, rec.error = "connect", f"cannot connect to {self.base}: {e.os_error or e}"
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, ConnectionResetError) as e:
            rec.error_kind, rec.error = "reset", f"connection closed by the server: {type(e).__name__}: {e}"
        except aiohttp.ClientOSError as e:
            rec.error_kind, rec.error = "reset", f"{type(e).__name__}: {e}"
        except orjson.JSONDecodeError as e:
            rec.error_kind, rec.error = "malformed", f"response is not JSON ({e})"
        except _StreamError as e:
            rec.error_kind, rec.error = e.kind, str(e)
        except aiohttp.ClientError as e:
            rec.error_kind, rec.error = "other", f"{type(e).__name__}: {e}"
        except Exception as e:  # a server answer must never escape the request's error handling
            rec.error_kind, rec.error = "malformed", f"response could not be read ({type(e).__name__})"
        if rec.error_kind is not None:
            if rec.end_ns is None:
                rec.end_ns = now_ns()
            return rec
        self._count_tokens(rec, usage)
        return rec

    async def _read_stream(self, resp: Any, rec: RequestRecord, hook: FirstTokenHook | None) -> Any:
        chat = self.api == "chat"
        chunk_ns = rec.chunk_ns
        texts: list[str] = []
        usage = None
        sse = SSEDecoder()
        done = False
        saw_data = False
        saw_choices = False
        finished = False  # a choice carried a finish_reason: the server says the answer is complete
        content = resp.content
        ended = False
        while not done:
            piece = await content.readany()
            t = now_ns()
            if piece:
                events = sse.feed(piece)
            else:
                ended, events = True, sse.finish()
            for field, payload in events:
                if field == "error":  # llama.cpp's SSE error event
                    raise _StreamError("stream_error", "server error in stream: " + _short(payload))
                payload = payload.strip()
                if payload == b"[DONE]":
                    done = True
                    break
                saw_data = True
                obj = _loads(payload)
                if not isinstance(obj, dict):
                    raise _StreamError("malformed", f"stream event is {_json_kind(obj)}, not a JSON object")
                err = obj.get("error")
                if err:
                    raise _StreamError("stream_error", "server error in stream: " + _short(err))
                u = obj.get("usage")
                if u:
                    usage = u
                choices = obj.get("choices")
                if choices is not None:
                    saw_choices = True
                if not choices:
                    continue
                s = _choice_text(choices, chat, "delta")
                if s:
                    if not chunk_ns:
                        rec.first_token_ns = t
                        if hook is not None:
                            hook(rec)
                    chunk_ns.append(t)
                    texts.append(s)
                elif not finished:
                    finished = _has_finish(choices)
            if ended:
                break
        rec.end_ns = now_ns()
        if sse.partial.strip() and not done:
            raise _StreamError("malformed", "stream ended in the middle of an event: " + _short(sse.partial))
        if not done and not chunk_ns and not (finished or usage):  # finished or counted: complete, maybe empty
            what = "no data events" if not saw_data else "no content and no [DONE]"
            raise _StreamError("malformed", f"stream ended with {what}")
        if not chunk_ns and not saw_choices and not usage:
            raise _StreamError("malformed", "stream has no choices" if saw_data else "stream has no data events")
        rec.chunk_count = len(chunk_ns)
        rec.text = "".join(texts)
        return usage

    def _parse_full(self, raw: bytes, rec: RequestRecord, hook: FirstTokenHook | None) -> Any:
        obj = _loads(raw)
        if not isinstance(obj, dict):
            raise _StreamError("malformed", f"response is {_json_kind(obj)}, not a JSON object")
        if obj.get("error"):
            raise _StreamError("stream_error", "server error: " + _short(obj["error"]))
        choices = obj.get("choices")
        if not choices:
            raise _StreamError("malformed", "response has no choices")
        rec.text = _choice_text(choices, self.api == "chat", "message")
        # without streaming the first token is only seen with the whole answer
        rec.first_token_ns = rec.end_ns
        rec.chunk_ns.append(rec.end_ns or now_ns())
        rec.chunk_count = 1
        if hook is not None:
            hook(rec)
        return obj.get("usage")

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


class _StreamError(Exception):
    def __init__(self, kind: str, msg: str):
        super().__init__(msg)
        self.kind = kind


MAX_TOKEN_COUNT = 2**31 - 1  # larger than any context; a larger "count" is a broken server, not a measurement


def _has_finish(choices: list[Any]) -> bool:
    c = choices[0]
    return isinstance(c, dict) and bool(c.get("finish_reason"))


def _token_count(v: Any) -> int | None:
    """A usage figure as a token count: an integer (or integral float) in [0, MAX_TOKEN_COUNT], else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, int) and 0 <= v <= MAX_TOKEN_COUNT:
        return v
    return None


def _json_kind(v: Any) -> str:
    kinds = {type(None): "null", list: "a list", dict: "an object", str: "a string", bool: "a boolean"}
    return kinds.get(type(v), "a number")


def _show(v: Any) -> str:
    """A JSON value, short, for an error text (``"many"``, ``18446744073709551615``, ``[...]``)."""
    return _short(repr(v) if not isinstance(v, str) else '"' + v + '"', 40)


def _choice_text(choices: Any, chat: bool, field: str) -> str:
    """The text of the first choice (``field``: ``delta`` when streamed, ``message`` when not); a choice that
    is not shaped like OpenAI's raises a ``malformed`` error saying what it lacked."""
    if not isinstance(choices, list):
        raise _StreamError("malformed", f"choices is {_json_kind(choices)}, not a list")
    c = choices[0]
    if not isinstance(c, dict):
        raise _StreamError("malformed", f"choice is {_json_kind(c)}, not an object")
    if chat:
        d = c.get(field)
        if d is None:
            return ""
        if not isinstance(d, dict):
            raise _StreamError("malformed", f"choice's {field} is {_json_kind(d)}, not an object")
        s = d.get("content") or d.get("reasoning_content") or d.get("reasoning")
    else:
        s = c.get("text")
    if s is None:
        return ""
    if not isinstance(s, str):
        where = f"{field}.content" if chat else "text"
        raise _StreamError("malformed", f"choice's {where} is {_json_kind(s)}, not text")
    return s


def _short(x: Any, n: int = 200) -> str:
    s = x.decode("utf-8", "replace") if isinstance(x, bytes | bytearray) else str(x)
    s = " ".join(s.split())
    return s if len(s) <= n else s[:n] + "..."


def _messages_as_text(msgs: list[dict[str, str]]) -> str:
    return "\n".join(m.get("content", "") for m in msgs)


def normalize_base_url(url: str) -> str:
    """``http://h:p`` -> ``http://h:p/v1``; ``.../v1/`` -> ``.../v1``; a full endpoint URL loses its endpoint."""
    u = url.strip().rstrip("/")
    if "://" not in u:
        u = "http://" + u
    for tail in ("/chat/completions", "/completions"):
        if u.endswith(tail):
            u = u[: -len(tail)]
    if not u.rstrip("/").split("://", 1)[1].count("/"):
        u += "/v1"
    return u

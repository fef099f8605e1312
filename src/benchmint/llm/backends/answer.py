"""Reading an OpenAI-compatible answer into a request record, whichever transport carried its bytes.

:class:`StreamRead` takes a streamed (SSE) answer's bytes as they arrive (``feed(piece, t)``, ``t`` the
monotonic time of the read that delivered them) and fills the record: the time of each content chunk, the text,
the usage the server reported; :func:`parse_full` reads a whole (non-streamed) answer. Both the aiohttp path and
the lean HTTP/1.1 transport (:mod:`benchmint.llm.backends.h1`) of :mod:`benchmint.llm.backends.http` use them, so
the two read an answer the same way. What a malformed answer lacked is said by :class:`AnswerError`.

Per event the work is one orjson parse and a few dict lookups; nothing else runs per chunk.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from benchmint.core.clock import now_ns
from benchmint.llm.backends.sse import SSEDecoder
from benchmint.llm.types import FirstTokenHook, RequestRecord

_loads = orjson.loads
JSONDecodeError = orjson.JSONDecodeError


class AnswerError(Exception):
    """A server's answer that is not a usable completion: ``kind`` is ``malformed`` or ``stream_error``."""

    def __init__(self, kind: str, msg: str):
        super().__init__(msg)
        self.kind = kind


class _Delta(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class _Choice(msgspec.Struct):
    text: str | None = None
    delta: _Delta | None = None
    finish_reason: Any = None


class _Event(msgspec.Struct):
    choices: list[_Choice] | None = None
    usage: Any = None


# a read's events decoded in one call, into the fields used (the rest is skipped); an event of any other shape
# fails the decode and the read is done event by event, which says what was wrong
_decode_events = msgspec.json.Decoder(list[_Event]).decode
_DECODE_FAILED = (msgspec.DecodeError, msgspec.ValidationError)


class StreamRead:
    """One streamed answer, read as its bytes arrive. ``feed`` returns True once ``[DONE]`` was read (what
    follows is not read); ``finish`` (at ``[DONE]`` or the end of the stream) checks that the answer was an
    answer and returns the usage the server reported (None when it sent none)."""

    __slots__ = ("rec", "hook", "chat", "sse", "texts", "usage", "done", "saw_data", "saw_choices", "finished")

    def __init__(self, rec: RequestRecord, hook: FirstTokenHook | None, chat: bool):
        self.rec = rec
        self.hook = hook
        self.chat = chat
        self.sse = SSEDecoder()
        self.texts: list[str] = []
        self.usage: Any = None
        self.done = False
        self.saw_data = False
        self.saw_choices = False
        self.finished = False  # a choice carried a finish_reason: the server says the answer is complete

    def feed(self, piece: bytes, t: int) -> bool:
        """The events completed by ``piece`` (read at ``t``); ``b""`` is the end of the stream."""
        if piece:
            joined = self.sse.simple(piece)
            if joined is not None and self._fast(joined, t):
                return self.done
            events = self.sse.feed(piece)
        else:
            events = self.sse.finish()
        return self._events(events, t)

    def _fast(self, body: bytes, t: int) -> bool:
        """A read of whole data events of the usual shape (their data joined with commas), decoded in one call;
        False (nothing changed) when the read has anything else: an error, a ``[DONE]`` before its end, an event
        of another shape."""
        done = body.endswith(b"[DONE]")
        if done:
            if body == b"[DONE]":
                body = b""
            elif body.endswith(b",[DONE]"):
                body = body[:-7]
            else:
                return False
        elif not body:  # an empty data event: not JSON (the slow path says so)
            return False
        if body:
            if b"[DONE]" in body or b'"error"' in body:
                return False
            try:
                evs = _decode_events(b"[" + body + b"]")
            except _DECODE_FAILED:
                return False
            rec = self.rec
            chunk_ns = rec.chunk_ns
            chat = self.chat
            self.saw_data = True
            for ev in evs:
                if ev.usage:
                    self.usage = ev.usage
                cs = ev.choices
                if cs is None:
                    continue
                self.saw_choices = True
                if not cs:
                    continue
                c = cs[0]
                if chat:
                    d = c.delta
                    s = None if d is None else (d.content or d.reasoning_content or d.reasoning)
                else:
                    s = c.text
                if s:
                    if not chunk_ns:
                        rec.first_token_ns = t
                        if self.hook is not None:
                            self.hook(rec)
                    chunk_ns.append(t)
                    self.texts.append(s)
                elif not self.finished:
                    self.finished = bool(c.finish_reason)
        self.done = done
        return True

    def _events(self, events: list[tuple[str, bytes]], t: int) -> bool:
        chunk_ns = self.rec.chunk_ns
        for field, payload in events:
            if field == "error":  # llama.cpp's SSE error event
                raise AnswerError("stream_error", "server error in stream: " + short(payload))
            payload = payload.strip()
            if payload == b"[DONE]":
                self.done = True
                return True
            self.saw_data = True
            obj = _loads(payload)
            if type(obj) is not dict:
                raise AnswerError("malformed", f"stream event is {json_kind(obj)}, not a JSON object")
            err = obj.get("error")
            if err:
                raise AnswerError("stream_error", "server error in stream: " + short(err))
            u = obj.get("usage")
            if u:
                self.usage = u
            choices = obj.get("choices")
            if choices is not None:
                self.saw_choices = True
            if not choices:
                continue
            s = choice_text(choices, self.chat, "delta")
            if s:
                if not chunk_ns:
                    self.rec.first_token_ns = t
                    if self.hook is not None:
                        self.hook(self.rec)
                chunk_ns.append(t)
                self.texts.append(s)
            elif not self.finished:
                self.finished = has_finish(choices)
        return False

    def finish(self) -> Any:
        """Check the whole answer (at ``[DONE]`` or the end of the stream); its usage."""
        rec = self.rec
        if not self.done:
            if self.sse.partial.strip():
                raise AnswerError("malformed", "stream ended in the middle of an event: " + short(self.sse.partial))
            if not rec.chunk_ns and not (self.finished or self.usage):  # finished or counted: complete, maybe empty
                what = "no data events" if not self.saw_data else "no content and no [DONE]"
                raise AnswerError("malformed", f"stream ended with {what}")
        if not rec.chunk_ns and not self.saw_choices and not self.usage:
            raise AnswerError("malformed", "stream has no choices" if self.saw_data else "stream has no data events")
        rec.chunk_count = len(rec.chunk_ns)
        rec.text = "".join(self.texts)
        return self.usage


def parse_full(raw: bytes, rec: RequestRecord, hook: FirstTokenHook | None, chat: bool) -> Any:
    """A whole (non-streamed) answer into the record (its first token is seen with the whole answer, at
    ``rec.end_ns``); its usage."""
    obj = _loads(raw)
    if not isinstance(obj, dict):
        raise AnswerError("malformed", f"response is {json_kind(obj)}, not a JSON object")
    if obj.get("error"):
        raise AnswerError("stream_error", "server error: " + short(obj["error"]))
    choices = obj.get("choices")
    if not choices:
        raise AnswerError("malformed", "response has no choices")
    rec.text = choice_text(choices, chat, "message")
    rec.first_token_ns = rec.end_ns
    rec.chunk_ns.append(rec.end_ns or now_ns())
    rec.chunk_count = 1
    if hook is not None:
        hook(rec)
    return obj.get("usage")


def has_finish(choices: list[Any]) -> bool:
    c = choices[0]
    return isinstance(c, dict) and bool(c.get("finish_reason"))


def json_kind(v: Any) -> str:
    kinds = {type(None): "null", list: "a list", dict: "an object", str: "a string", bool: "a boolean"}
    return kinds.get(type(v), "a number")


def choice_text(choices: Any, chat: bool, field: str) -> str:
    """The text of the first choice (``field``: ``delta`` when streamed, ``message`` when not); a choice that
    is not shaped like OpenAI's raises a ``malformed`` error saying what it lacked."""
    if type(choices) is not list:
        raise AnswerError("malformed", f"choices is {json_kind(choices)}, not a list")
    c = choices[0]
    if type(c) is not dict:
        raise AnswerError("malformed", f"choice is {json_kind(c)}, not an object")
    if chat:
        d = c.get(field)
        if d is None:
            return ""
        if type(d) is not dict:
            raise AnswerError("malformed", f"choice's {field} is {json_kind(d)}, not an object")
        s = d.get("content") or d.get("reasoning_content") or d.get("reasoning")
    else:
        s = c.get("text")
    if s is None:
        return ""
    if type(s) is not str:
        where = f"{field}.content" if chat else "text"
        raise AnswerError("malformed", f"choice's {where} is {json_kind(s)}, not text")
    return s


def short(x: Any, n: int = 200) -> str:
    s = x.decode("utf-8", "replace") if isinstance(x, bytes | bytearray) else str(x)
    s = " ".join(s.split())
    return s if len(s) <= n else s[:n] + "..."

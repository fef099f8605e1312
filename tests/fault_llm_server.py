"""A fault-injecting OpenAI-compatible server (aiohttp, 127.0.0.1 only) that mixes bad answers with good ones.

Each POST to ``/v1/completions`` or ``/v1/chat/completions`` gets the next kind of answer from a fixed cycle
(``--faults``), so that a test knows how many of each it sent; ``GET /stats`` says how many requests arrived
and of which kind. Kinds:

- ``good``: a normal answer (streamed: two content chunks, a usage chunk, ``[DONE]``);
- ``usage_huge``: ``usage.completion_tokens`` = 2**64-1; ``usage_str``: ``"many"``; ``usage_not_dict``:
  ``"usage": "lots"``; ``usage_negative``: -3;
- ``null_json``: the JSON ``null`` (as the body, or as each stream event); ``no_choices``: ``{}`` / events
  without choices; ``choice_null``: ``{"choices": [null]}``; ``bad_json``: ``{oops``;
- ``http_500``: a 500 answer.

Every answer is small and the server holds nothing per request, so it is bounded. ``--delay-ms`` delays each
answer (a run interrupted mid-flight has requests in flight).

    python tests/fault_llm_server.py --port 8124 [--faults good,usage_huge,...] [--delay-ms 0]

In tests: ``with FaultLLMServer(kinds) as s: ... s.url ... s.received``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
from typing import Any

import orjson
from aiohttp import web
from fake_llm_server import AppThread, LLMApp

KINDS = ("good", "usage_huge", "usage_str", "usage_not_dict", "usage_negative", "null_json", "no_choices",
         "choice_null", "bad_json", "http_500")
DEFAULT_MIX = ("good", "good", "usage_huge", "good", "usage_str", "good", "usage_not_dict", "null_json",
               "good", "no_choices", "choice_null", "good", "bad_json", "http_500", "usage_negative")


def _usage(kind: str) -> Any:
    return {"usage_huge": {"prompt_tokens": 4, "completion_tokens": 2**64 - 1},
            "usage_str": {"prompt_tokens": "many", "completion_tokens": "many"},
            "usage_not_dict": "lots",
            "usage_negative": {"prompt_tokens": 4, "completion_tokens": -3}}.get(
        kind, {"prompt_tokens": 4, "completion_tokens": 2})


def _choice(chat: bool, text: str, stream: bool) -> dict:
    if chat:
        return {"index": 0, ("delta" if stream else "message"): {"content": text}, "finish_reason": None}
    return {"index": 0, "text": text, "finish_reason": None}


def _events(kind: str, chat: bool) -> list[bytes]:
    """The data payloads of a streamed answer of this kind."""
    if kind == "null_json":
        return [b"null", b"null"]
    if kind == "bad_json":
        return [b"{oops"]
    if kind == "no_choices":
        return [b'{"id":"x","object":"chunk"}', b"[DONE]"]
    if kind == "choice_null":
        return [b'{"choices":[null]}', b"[DONE]"]
    chunks = [orjson.dumps({"choices": [_choice(chat, t, True)]}) for t in (" a", " b")]
    return [*chunks, orjson.dumps({"choices": [], "usage": _usage(kind)}), b"[DONE]"]


def _full(kind: str, chat: bool) -> bytes:
    if kind == "null_json":
        return b"null"
    if kind == "bad_json":
        return b"{oops"
    if kind == "no_choices":
        return b"{}"
    if kind == "choice_null":
        return b'{"choices":[null]}'
    return orjson.dumps({"choices": [_choice(chat, " a b", False)], "usage": _usage(kind)})


class FaultApp(LLMApp):
    def __init__(self, kinds: tuple[str, ...] | list[str] = DEFAULT_MIX, delay_s: float = 0.0):
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ValueError(f"unknown fault kinds {bad}; choose from {', '.join(KINDS)}")
        self.kinds = list(kinds)
        self.delay_s = delay_s
        self.received = 0
        self.answered = 0  # answers handed to the connection: a test waits on these, not on arrivals
        self.probes = 0  # GET /v1/models: a client has started
        self.authorization: collections.Counter[str] = collections.Counter()  # Authorization headers received
        self.by_kind: collections.Counter[str] = collections.Counter()

    def routes(self, a: web.Application) -> None:
        a.router.add_get("/stats", self.stats)

    async def models(self, request: web.Request) -> web.Response:
        self.probes += 1
        return await super().models(request)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"received": self.received, "probes": self.probes, "by_kind": dict(self.by_kind)})

    async def complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.authorization[request.headers.get("Authorization", "")] += 1
        kind = self.kinds[self.received % len(self.kinds)]
        self.received += 1
        self.by_kind[kind] += 1
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            req = {}
        chat = request.path.endswith("/chat/completions")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if kind == "http_500" or not req.get("stream"):
            resp = (web.Response(status=500, text="injected fault", content_type="text/plain") if kind == "http_500"
                    else web.Response(body=_full(kind, chat), content_type="application/json"))
            await resp.prepare(request)
            await resp.write_eof()
            self.answered += 1
            return resp
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for ev in _events(kind, chat):
            await resp.write(b"data: " + ev + b"\n\n")
        await resp.write_eof()
        self.answered += 1
        return resp


class FaultLLMServer(AppThread):
    """The fault app on 127.0.0.1 (a free port) in a thread of its own; a context manager."""

    def __init__(self, kinds: tuple[str, ...] | list[str] = DEFAULT_MIX, delay_s: float = 0.0):
        self.fault = FaultApp(kinds, delay_s)
        super().__init__(self.fault.app)

    @property
    def received(self) -> int:
        return self.fault.received

    @property
    def answered(self) -> int:
        return self.fault.answered


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8124)
    ap.add_argument("--faults", default=",".join(DEFAULT_MIX), help="comma-separated cycle of answer kinds")
    ap.add_argument("--delay-ms", type=float, default=0.0)
    a = ap.parse_args()
    fault = FaultApp(a.faults.split(","), a.delay_ms / 1000)
    print(f"fault server on http://127.0.0.1:{a.port}/v1", flush=True)
    web.run_app(fault.app(), host="127.0.0.1", port=a.port, print=None, access_log=None)


if __name__ == "__main__":
    main()

"""A strict OpenAI-compatible server (aiohttp, 127.0.0.1 only) shaped like ``transformers serve``.

- A request with a field outside ``accepted`` gets ``422 {"detail": "Unexpected fields in the request: {...}"}``
  (transformers serve's own answer), so a client that sends ``ignore_eos`` or ``stream_options`` is refused.
- Streams end with a chunk carrying ``finish_reason`` and usage and no ``[DONE]``; every ``empty_every``-th
  answer has no content at all (the model's first token was end-of-sequence): a finish chunk with 0 tokens.
- ``GET /metrics`` answers ``metrics_text`` (a text, or a function of the number of requests answered so far)
  when given, else 404.

In tests: ``with StrictLLMServer() as s: ... s.url ... s.received ... s.rejected``.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from fake_llm_server import AppThread, LLMApp

ACCEPTED = frozenset({"model", "prompt", "messages", "max_tokens", "stream", "temperature", "top_p", "seed",
                      "stop", "n", "user", "frequency_penalty", "presence_penalty"})


class StrictLLMServer(LLMApp, AppThread):
    def __init__(self, accepted: frozenset[str] = ACCEPTED, empty_every: int = 3, metrics_text: Any = None,
                 tokens: int = 3):
        self.accepted = accepted
        self.empty_every = empty_every
        self.metrics_text = metrics_text
        self.tokens = tokens
        self.received = 0
        self.rejected = 0
        self.scrapes = 0
        AppThread.__init__(self, self.app)

    def routes(self, a: web.Application) -> None:
        a.router.add_get("/metrics", self.metrics)

    async def metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        if self.metrics_text is None:
            return web.Response(status=404, text="Not Found")
        text = self.metrics_text(self.received) if callable(self.metrics_text) else self.metrics_text
        return web.Response(text=text, content_type="text/plain")

    async def complete(self, request: web.Request) -> web.StreamResponse:
        req = orjson.loads(await request.read())
        unexpected = set(req) - self.accepted
        if unexpected:
            self.rejected += 1
            return web.json_response({"detail": f"Unexpected fields in the request: {unexpected}"}, status=422)
        n = self.received
        self.received += 1
        chat = request.path.endswith("/chat/completions")
        empty = self.empty_every and n % self.empty_every == self.empty_every - 1
        texts = [] if empty else [f" t{i}" for i in range(self.tokens)]
        usage = {"prompt_tokens": 4, "completion_tokens": len(texts), "total_tokens": 4 + len(texts)}
        if not req.get("stream"):
            choice = {"index": 0, "finish_reason": "stop" if empty else "length"}
            choice.update({"message": {"role": "assistant", "content": "".join(texts)}} if chat
                          else {"text": "".join(texts)})
            return web.json_response({"choices": [choice], "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for t in texts:
            c = {"index": 0, "delta": {"content": t}} if chat else {"index": 0, "text": t}
            await resp.write(b"data: " + orjson.dumps({"choices": [c]}) + b"\n\n")
        last = {"index": 0, "finish_reason": "stop" if empty else "length"}
        last.update({"delta": {}} if chat else {"text": ""})
        await resp.write(b"data: " + orjson.dumps({"choices": [last], "usage": usage}) + b"\n\n")
        await resp.write_eof()  # no [DONE], as transformers serve
        return resp

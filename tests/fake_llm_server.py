"""What the fake OpenAI-compatible test servers share (``fault_llm_server``, ``strict_llm_server``).

:class:`LLMApp`: an aiohttp app answering ``GET /v1/models`` with one model ``m`` and both completion routes
with the subclass's ``complete``; ``routes`` adds a server's own. :class:`AppThread`: an app on 127.0.0.1 (a
free port) in a thread of its own, as a context manager with ``url``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from aiohttp import web


class LLMApp:
    def app(self) -> web.Application:
        a = web.Application()
        a.router.add_get("/v1/models", self.models)
        self.routes(a)
        a.router.add_post("/v1/completions", self.complete)
        a.router.add_post("/v1/chat/completions", self.complete)
        return a

    def routes(self, a: web.Application) -> None:
        """A server's own routes (``/stats``, ``/metrics``)."""

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def complete(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError


class AppThread:
    def __init__(self, make_app: Callable[[], web.Application]):
        self._make_app = make_app
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(self._make_app(), access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())
        self.loop.close()

    def __enter__(self):
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

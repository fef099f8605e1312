"""A no-op streaming OpenAI-compatible server for calibrating the client: it does no work, it answers every
``/v1/completions`` or ``/v1/chat/completions`` at once with ``chunks`` content chunks, a usage chunk and
``[DONE]``. It runs in a process of its own (so it does not share the client's interpreter) on 127.0.0.1.

    python -m benchmint.llm.noop_server --port 8199 [--chunks 16]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request

from aiohttp import web


def make_app(chunks: int = 16) -> web.Application:
    body = b"".join(b'data: {"choices":[{"index":0,"text":"x"}]}\n\n' for _ in range(chunks))
    body += b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":%d}}\n\ndata: [DONE]\n\n' % chunks

    async def complete(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="text/event-stream")

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "noop", "object": "model"}]})

    a = web.Application()
    a.router.add_get("/v1/models", models)
    a.router.add_post("/v1/completions", complete)
    a.router.add_post("/v1/chat/completions", complete)
    return a


class NoopServerProcess:
    """The no-op server in a child process on a free loopback port; a context manager."""

    def __init__(self, chunks: int = 16):
        self.chunks = chunks
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> NoopServerProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmint.llm.noop_server", "--port", str(self.port),
                                      "--chunks", str(self.chunks)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=1):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("the no-op calibration server did not start") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8199)
    ap.add_argument("--chunks", type=int, default=16)
    a = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    web.run_app(make_app(a.chunks), host="127.0.0.1", port=a.port, print=None, access_log=None)


if __name__ == "__main__":
    main()

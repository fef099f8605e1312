"""benchmint's own OpenAI-compatible server over the in-process batching engine (starlette + uvicorn).

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (streamed as SSE with ``stream: true``; usage
in a final chunk with ``stream_options.include_usage``), ``GET /v1/models``, ``GET /health`` and Prometheus
``GET /metrics`` (requests, prompt/generation tokens, queue depth, running requests).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from benchmint.core.errors import UserError
from benchmint.llm.engine import AsyncEngine


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _error(msg: str, status: int = 400, kind: str = "invalid_request_error") -> Response:
    return _json({"error": {"message": msg, "type": kind, "code": status}}, status)


def create_app(engine: AsyncEngine, model_name: str = "tiny") -> Starlette:
    """The ASGI app serving ``engine`` under the model name ``model_name``."""
    created = int(time.time())
    counters = {"requests_received": 0, "requests_failed": 0}

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok", "model": model_name})

    async def models(_: Request) -> Response:
        return _json(
            {
                "object": "list",
                "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "benchmint"}],
            }
        )

    async def metrics(_: Request) -> Response:
        st = engine.engine.stats
        lines = [
            "# HELP benchmint_requests_received_total Requests received by the HTTP API.",
            "# TYPE benchmint_requests_received_total counter",
            f"benchmint_requests_received_total {counters['requests_received']}",
            "# HELP benchmint_requests_rejected_total Requests rejected before reaching the engine.",
            "# TYPE benchmint_requests_rejected_total counter",
            f"benchmint_requests_rejected_total {counters['requests_failed']}",
            "# HELP benchmint_requests_finished_total Requests finished by the engine, by reason.",
            "# TYPE benchmint_requests_finished_total counter",
        ]
        for reason, n in sorted(st.requests_finished.items()):
            lines.append(f'benchmint_requests_finished_total{{reason="{reason}"}} {n}')
        lines += [
            "# HELP benchmint_prompt_tokens_total Prompt tokens processed.",
            "# TYPE benchmint_prompt_tokens_total counter",
            f"benchmint_prompt_tokens_total {st.prompt_tokens_total}",
            "# HELP benchmint_generation_tokens_total Tokens generated.",
            "# TYPE benchmint_generation_tokens_total counter",
            f"benchmint_generation_tokens_total {st.generation_tokens_total}",
            "# HELP benchmint_batches_total Engine batches run.",
            "# TYPE benchmint_batches_total counter",
            f"benchmint_batches_total {st.batches_total}",
            "# HELP benchmint_queue_depth Requests waiting for the engine.",
            "# TYPE benchmint_queue_depth gauge",
            f"benchmint_queue_depth {st.waiting}",
            "# HELP benchmint_batch_size_peak Largest batch the engine has run.",
            "# TYPE benchmint_batch_size_peak gauge",
            f"benchmint_batch_size_peak {st.peak_running}",
            "# HELP benchmint_requests_running Requests in the batch being run.",
            "# TYPE benchmint_requests_running gauge",
            f"benchmint_requests_running {st.running}",
        ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def _generate(request: Request, chat: bool) -> Response:
        counters["requests_received"] += 1
        try:
            body = orjson.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            if chat:
                prompt = body["messages"]
                if not isinstance(prompt, list):
                    raise ValueError("'messages' must be a list")
            else:
                prompt = body["prompt"]
                if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
                    pass  # token ids
                elif isinstance(prompt, list):
                    if len(prompt) != 1:
                        raise ValueError("only one prompt per request is supported")
                    prompt = prompt[0]
            mt = body.get("max_completion_tokens", body.get("max_tokens"))
            max_tokens = 16 if mt is None else int(mt)
            if max_tokens < 1:
                raise ValueError("'max_tokens' must be at least 1")
            stream = bool(body.get("stream", False))
            include_usage = bool((body.get("stream_options") or {}).get("include_usage", False))
            ignore_eos = bool(body.get("ignore_eos", False))
            temperature = float(body.get("temperature") or 0.0)
            seed = body.get("seed")
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as e:
            counters["requests_failed"] += 1
            msg = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            return _error(f"bad request: {msg}")
        asked = body.get("model")
        if asked is not None and asked != model_name:  # as vLLM does: a wrong name is an error, not a fallback
            counters["requests_failed"] += 1
            return _error(f"the model `{asked}` does not exist; this server serves `{model_name}`", 404,
                          "NotFoundError")
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:16]
        obj_kind = "chat.completion" if chat else "text_completion"
        gen = engine.stream(prompt, max_tokens, ignore_eos=ignore_eos, temperature=temperature, seed=seed)

        if not stream:
            parts: list[str] = []
            n_out = n_in = 0
            reason = "length"
            async for ev in gen:
                parts.append(ev.text)
                n_out += ev.tokens
                n_in = ev.prompt_tokens or n_in
                if ev.finished:
                    reason = ev.finish_reason or reason
                    if ev.error:
                        return _error(f"generation failed: {ev.error}", 500, "server_error")
            text = "".join(parts)
            choice: dict[str, Any] = {"index": 0, "finish_reason": reason}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            return _json(
                {
                    "id": rid,
                    "object": obj_kind,
                    "created": int(time.time()),
                    "model": model_name,
                    "choices": [choice],
                    "usage": {
                        "prompt_tokens": n_in,
                        "completion_tokens": n_out,
                        "total_tokens": n_in + n_out,
                    },
                }
            )

        async def sse():
            head = {
                "id": rid,
                "object": obj_kind + ".chunk" if chat else obj_kind,
                "created": int(time.time()),
                "model": model_name,
            }
            n_out = n_in = 0
            if chat:
                first = dict(
                    head,
                    choices=[
                        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                    ],
                )
                yield b"data: " + orjson.dumps(first) + b"\n\n"
            async for ev in gen:
                n_out += ev.tokens
                n_in = ev.prompt_tokens or n_in
                if ev.error:
                    yield (
                        b"data: "
                        + orjson.dumps({"error": {"message": ev.error, "type": "server_error"}})
                        + b"\n\n"
                    )
                    return
                if ev.text or ev.finished:
                    fr = ev.finish_reason if ev.finished else None
                    c = {"index": 0, "delta": {"content": ev.text}} if chat else {"index": 0, "text": ev.text}
                    c["finish_reason"] = fr
                    yield b"data: " + orjson.dumps(dict(head, choices=[c])) + b"\n\n"
            if include_usage:
                u = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
                yield b"data: " + orjson.dumps(dict(head, choices=[], usage=u)) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def completions(request: Request) -> Response:
        return await _generate(request, chat=False)

    async def chat_completions(request: Request) -> Response:
        return await _generate(request, chat=True)

    routes = [
        Route("/health", health),
        Route("/v1/models", models),
        Route("/metrics", metrics),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]
    return Starlette(routes=routes)


class ServerThread:
    """Runs the built-in server with uvicorn on a background thread (for tests and the demo).

    ``with ServerThread(engine, port=0) as srv: srv.url`` gives ``http://127.0.0.1:PORT/v1``.
    """

    def __init__(self, engine: AsyncEngine, model_name: str = "tiny", host: str = "127.0.0.1", port: int = 0):
        import socket

        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.host, self.port = host, port
        cfg = uvicorn.Config(
            create_app(engine, model_name),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, name="benchmint-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"built-in server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    model: str = "tiny",
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch_size: int = 16,
    device: str = "cpu",
    dtype: str = "auto",
    served_name: str | None = None,
    on_ready: Any = None,
) -> None:
    """Serve ``model`` until interrupted (``benchmint llm serve``); ``on_ready()`` runs once the model is
    loaded, just before the server starts listening."""
    import socket

    import uvicorn

    if not 0 < port < 65536:
        raise UserError(f"--port {port}: a port is a number from 1 to 65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:  # before loading the model: a busy port should fail in a second, not after the load
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port") from None
    engine = AsyncEngine.create(model, device=device, dtype=dtype, max_batch_size=max_batch_size)
    if on_ready is not None:
        on_ready()
    try:
        uvicorn.run(
            create_app(engine, served_name or model), host=host, port=port, log_level="info", access_log=False
        )
    finally:
        engine.close()

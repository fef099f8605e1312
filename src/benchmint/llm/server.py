"""benchmint's own OpenAI-compatible server over the in-process batching engine (starlette + uvicorn).

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (streamed as SSE with ``stream: true``; usage
in a final chunk with ``stream_options.include_usage``), ``GET /v1/models``, ``GET /health`` and Prometheus
``GET /metrics`` (requests, prompt/generation tokens, queue depth, running requests).

Every request is checked before it reaches the engine (typed models in ``server_requests``: types, ranges,
vocabulary, context length; 400 with an OpenAI-style error body), its prompt is tokenized off the event loop,
and a request body over ``max_body_bytes`` is refused (413). A client that disconnects, streaming or not,
cancels its request. ``/health`` answers 503 when the engine's worker is gone or stuck in one step for more
than ``health_stall_s``. SIGINT / SIGTERM end the requests in flight at once and stop the server.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from benchmint.core.errors import UserError
from benchmint.llm.engine import AsyncEngine, TokenEvent
from benchmint.llm.server_requests import RequestError, decode_request

MAX_BODY_BYTES = 16 << 20


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _error(msg: str, status: int = 500, kind: str = "server_error") -> Response:
    return _json({"error": {"message": msg, "type": kind, "param": None, "code": status}}, status)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it exceeds ``limit`` bytes."""
    too_big = RequestError(f"the request body exceeds this server's limit of {limit:,} bytes", None,
                           "request_too_large", 413)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def _disconnected(request: Request) -> None:
    """Returns when the client of ``request`` (its body already read) disconnects."""
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            return


def create_app(
    engine: AsyncEngine,
    model_name: str = "tiny",
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    health_stall_s: float = 30.0,
    request_log: Callable[[dict[str, Any]], None] | None = None,
) -> Starlette:
    """The ASGI app serving ``engine`` under the model name ``model_name``. ``request_log``: called with one entry
    per streamed request once its answer has ended (completed, failed or dropped by the client), the server's own times on ``time.monotonic_ns()`` (CLOCK_MONOTONIC, the
    clock a client on the same host measures with): ``t_in`` when the request had been read, ``t_first`` /
    ``t_last`` when the first / last content chunk had been handed to the connection, ``t_done`` after
    ``[DONE]``, ``t_chunks`` (every content chunk's), ``n`` (content chunks), ``w_in`` (``t_in`` on the wall
    clock, to pair with a client's log). The server's own TTFT of a request is ``t_first - t_in``."""
    created = int(time.time())
    counters = {"requests_received": 0, "requests_failed": 0}
    eng = engine.engine
    limits = eng.limits
    # one thread tokenizes prompts, in order, off the event loop (a long prompt never blocks other requests)
    tokenize_pool = ThreadPoolExecutor(1, thread_name_prefix="benchmint-tokenize")

    async def health(_: Request) -> Response:
        st = eng.stats
        info = {"model": model_name, "running": st.running, "waiting": st.waiting}
        started = eng.step_started
        if not eng.alive or eng.stopping:
            return JSONResponse({"status": "unavailable", "reason": "the engine is not running", **info}, 503)
        if started is not None and time.monotonic() - started > health_stall_s:
            stuck = time.monotonic() - started
            return JSONResponse({"status": "stalled", "reason": f"the engine has spent {stuck:.0f} s in one step "
                                 f"(limit {health_stall_s:g} s)", **info}, 503)
        return JSONResponse({"status": "ok", **info})

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
            body = await _read_body(request, max_body_bytes)
            t_in, w_in = time.monotonic_ns(), time.time_ns()
            req = decode_request(body, chat)
            if req.model is not None and req.model != model_name:  # as vLLM: a wrong name is an error
                raise RequestError(f"the model `{req.model}` does not exist; this server serves `{model_name}`",
                                   "model", 404, 404, "NotFoundError")
            prompt = limits.precheck(req)
            if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
                ids: list[int] = prompt  # type: ignore[assignment]
            else:
                ids = await asyncio.get_running_loop().run_in_executor(tokenize_pool, eng.encode_prompt, prompt)
            max_tokens = limits.max_tokens(req, len(ids))
        except RequestError as e:
            counters["requests_failed"] += 1
            return _json(e.body(), e.status)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:16]
        obj_kind = "chat.completion" if chat else "text_completion"
        gen = engine.stream(ids, max_tokens, ignore_eos=req.ignore_eos, temperature=req.temperature or 0.0,
                            seed=req.seed)
        include_usage = req.include_usage

        if not req.stream:
            parts: list[str] = []
            last: list[TokenEvent] = []

            async def collect() -> None:
                async for ev in gen:
                    parts.append(ev.text)
                    last.append(ev)

            work = asyncio.ensure_future(collect())
            gone = asyncio.ensure_future(_disconnected(request))
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():  # the client left: cancel its generation (frees its place in the batch)
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                return _error("the client disconnected", 499, "client_closed")
            gone.cancel()
            work.result()
            n_out = sum(e.tokens for e in last)
            n_in = next((e.prompt_tokens for e in reversed(last) if e.prompt_tokens), len(ids))
            end_ev = last[-1] if last else TokenEvent("", 0, True, "error", len(ids), "no answer from the engine")
            if end_ev.error:
                if eng.stopping:
                    return _error(f"generation stopped: {end_ev.error}", 503, "service_unavailable")
                return _error(f"generation failed: {end_ev.error}", 500, "server_error")
            reason = end_ev.finish_reason or "length"
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

        entry: dict[str, Any] | None = None
        if request_log is not None:
            entry = {"t_in": t_in, "w_in": w_in, "t_first": None, "t_last": None, "t_done": None, "t_chunks": [],
                     "n": 0}

        async def sse_logged():
            try:
                async for b in sse():
                    yield b
            finally:
                if request_log is not None and entry is not None:
                    request_log(entry)

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
                    kind = "service_unavailable" if eng.stopping else "server_error"
                    err = {"error": {"message": ev.error, "type": kind, "param": None, "code": None}}
                    yield b"data: " + orjson.dumps(err) + b"\n\n"
                    return
                if ev.text or ev.finished:
                    fr = ev.finish_reason if ev.finished else None
                    c = {"index": 0, "delta": {"content": ev.text}} if chat else {"index": 0, "text": ev.text}
                    c["finish_reason"] = fr
                    yield b"data: " + orjson.dumps(dict(head, choices=[c])) + b"\n\n"
                    if entry is not None and ev.text:  # resumed once the chunk was handed to the connection
                        t = time.monotonic_ns()
                        entry["t_chunks"].append(t)
                        entry["n"] += 1
                        entry["t_last"] = t
                        if entry["t_first"] is None:
                            entry["t_first"] = t
            if include_usage:
                u = {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}
                yield b"data: " + orjson.dumps(dict(head, choices=[], usage=u)) + b"\n\n"
            yield b"data: [DONE]\n\n"
            if entry is not None:
                entry["t_done"] = time.monotonic_ns()

        return StreamingResponse(sse_logged() if entry is not None else sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

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

    def __init__(self, engine: AsyncEngine, model_name: str = "tiny", host: str = "127.0.0.1", port: int = 0,
                 **app_opts: Any):
        import socket

        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.host, self.port, self.engine = host, port, engine
        cfg = uvicorn.Config(
            create_app(engine, model_name, **app_opts),
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
        from benchmint.llm.backends.open_files import raise_soft_limit

        raise_soft_limit()  # the server's connections share this process's descriptors with its client
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
    max_model_len: int | None = None,
    request_log: str | None = None,
) -> None:
    """Serve ``model`` until interrupted (``benchmint llm serve``); ``on_ready()`` runs once the model is
    loaded, just before the server starts listening. ``request_log``: a JSON-lines file, one line per streamed
    request with the server's own times (see :func:`create_app`), appended as each answer ends (nothing is kept in
    memory, however long the server runs); complete once the server has stopped."""
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
    if max_model_len is not None and max_model_len < 2:
        raise UserError(f"--max-model-len {max_model_len}: give at least 2 tokens (prompt and output)")
    from benchmint.llm.backends.open_files import raise_soft_limit

    raise_soft_limit()  # a connection per request in flight: LoadGen's Offline opens thousands at once
    # unbuffered: a line is in the file as soon as its answer has ended (a user can follow it while it runs);
    # opened before loading the model: a path that cannot be written should fail in a second, not after the load
    try:
        log_file = open(request_log, "wb", buffering=0) if request_log else None  # noqa: SIM115 - close_log()
    except OSError as e:
        raise UserError(f"--request-log {request_log}: cannot write it ({e.strerror}); give a writable path") \
            from None
    try:
        engine = AsyncEngine.create(model, device=device, dtype=dtype, max_batch_size=max_batch_size,
                                    max_model_len=max_model_len)
    except BaseException:
        if log_file is not None:
            log_file.close()
        raise
    if on_ready is not None:
        on_ready()

    def log_line(entry: dict[str, Any]) -> None:
        if log_file is not None and not log_file.closed:
            log_file.write(orjson.dumps(entry) + b"\n")

    def close_log() -> None:
        if log_file is not None:
            log_file.close()  # a second call does nothing

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            engine.engine.request_stop()  # end the requests in flight now instead of waiting for them
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets)
            # here, not after run(): uvicorn raises a captured SIGTERM again once it is done, which ends the
            # process before any code after run() could flush the log
            close_log()

    cfg = uvicorn.Config(create_app(engine, served_name or model, request_log=log_line if log_file else None),
                         host=host, port=port,
                         log_level="info",
                         access_log=False, timeout_graceful_shutdown=5)
    try:
        _Server(cfg).run()
    finally:
        engine.close()
        close_log()
        # the process ends next: without this, the collector's pass at interpreter exit over the model's and
        # tokenizer's objects takes seconds (7.7 s measured with the tiny model), and Ctrl-C seems to hang
        gc.freeze()

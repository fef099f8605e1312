"""The built-in OpenAI-compatible server on the tiny model: routes, streaming, batching, metrics."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from benchmint.llm.backends import create_backend
from benchmint.llm.engine import AsyncEngine
from benchmint.llm.types import GenRequest

SERVER_ENGINE = {"batch_wait_s": 0.01}


def get(url: str) -> tuple[int, bytes]:
    async def go():
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            return r.status, await r.read()

    return asyncio.run(go())


def post(url: str, body: dict) -> tuple[int, bytes]:
    async def go():
        async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
            return r.status, await r.read()

    return asyncio.run(go())


def test_health_models_metrics(server):
    root = server.url.removesuffix("/v1")
    assert get(root + "/health")[0] == 200
    st, body = get(server.url + "/models")
    assert st == 200 and orjson.loads(body)["data"][0]["id"] == "tiny"
    post(server.url + "/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 3, "ignore_eos": True})
    st, text = get(root + "/metrics")
    text = text.decode()
    assert st == 200
    for name in ("benchmint_requests_received_total", "benchmint_generation_tokens_total",
                 "benchmint_prompt_tokens_total", "benchmint_queue_depth", "benchmint_requests_running"):
        assert name in text
    gen = int(next(line.split()[-1] for line in text.splitlines() if line.startswith("benchmint_generation_tokens_total")))
    assert gen >= 3


def test_non_streaming_completion_exact_tokens(server):
    st, body = post(server.url + "/completions", {"model": "tiny", "prompt": "hello", "max_tokens": 5, "ignore_eos": True})
    d = orjson.loads(body)
    assert st == 200 and d["usage"]["completion_tokens"] == 5 and d["choices"][0]["finish_reason"] == "length"
    assert isinstance(d["choices"][0]["text"], str)


def test_prompt_as_token_ids(server):
    st, body = post(server.url + "/completions", {"prompt": [5, 6, 7], "max_tokens": 2, "ignore_eos": True})
    d = orjson.loads(body)
    assert st == 200 and d["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_streaming_chat_with_usage(server):
    st, body = post(server.url + "/chat/completions", {
        "model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True,
        "stream_options": {"include_usage": True}, "ignore_eos": True,
    })
    events = [line[6:] for line in body.decode().split("\n") if line.startswith("data: ")]
    assert st == 200 and events[-1] == "[DONE]"
    usage = orjson.loads(events[-2])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 4
    assert orjson.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"


def test_bad_requests_get_400(server):
    assert post(server.url + "/completions", {"model": "tiny"})[0] == 400
    assert post(server.url + "/chat/completions", {"messages": "x", "max_tokens": 2})[0] == 400
    assert post(server.url + "/completions", {"prompt": "x", "max_tokens": 0})[0] == 400


def test_concurrent_requests_are_batched_and_streamed(server):
    async def go():
        b = create_backend("openai-http", url=server.url, model="tiny")
        await b.start()
        try:
            return await asyncio.gather(*(b.generate(GenRequest(i, f"prompt {i}", 6)) for i in range(6)))
        finally:
            await b.close()

    before = get(server.url.removesuffix("/v1") + "/metrics")[1].decode()
    recs = asyncio.run(go())
    after = get(server.url.removesuffix("/v1") + "/metrics")[1].decode()

    def val(text, name):
        return int(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))

    assert all(r.ok and r.output_tokens == 6 and r.output_tokens_source == "usage" for r in recs)
    assert all(r.first_token_ns < r.chunk_ns[-1] for r in recs)  # tokens arrived over time, not at once
    assert val(after, "benchmint_batch_size_peak") >= 2  # concurrent requests ran in one batch
    assert val(after, "benchmint_batches_total") > val(before, "benchmint_batches_total")


def test_in_process_backend_generates_exact_tokens():
    async def go():
        b = create_backend("transformers", model="tiny", max_batch_size=4)
        await b.start()
        try:
            return await asyncio.gather(*(b.generate(GenRequest(i, [{"role": "user", "content": "hi"}], 3)) for i in range(3)))
        finally:
            await b.close()

    recs = asyncio.run(go())
    assert all(r.ok and r.output_tokens == 3 and r.output_tokens_source == "engine" and r.input_tokens for r in recs)


def test_continuous_batching_gives_the_same_greedy_tokens_as_running_alone():
    """Requests joining a running batch at different times (different prompt and output lengths) must get
    exactly the tokens they get alone: padding, masks, positions and cache trimming are right."""
    from benchmint.models.tiny_llm import tiny_llm_path

    eng = AsyncEngine.create(str(tiny_llm_path()), max_batch_size=4, batch_wait_s=0.0)
    prompts = [("Hello there", 12), ("What is the capital of France? Tell me", 5), ("x", 20),
               ("Sort these words: apple, river", 9), ("one two", 7), ("a b c d e f g", 15)]

    async def one(p, n, delay):
        await asyncio.sleep(delay)
        out = [ev async for ev in eng.stream(p, n)]
        return sum(e.tokens for e in out), "".join(e.text for e in out)

    async def alone():
        return [await one(p, n, 0) for p, n in prompts]

    async def together():
        return await asyncio.gather(*(one(p, n, 0.002 * i) for i, (p, n) in enumerate(prompts)))

    try:
        solo, joint = asyncio.run(alone()), asyncio.run(together())
    finally:
        eng.close()
    assert [t for t, _ in joint] == [n for _, n in prompts]
    assert joint == solo
    assert eng.engine.stats.peak_running >= 2


def test_a_model_the_server_does_not_serve_is_a_404(server):
    st, body = post(server.url + "/completions", {"model": "nosuch", "prompt": "hi", "max_tokens": 2})
    assert st == 404 and b"nosuch" in body
    st, _ = post(server.url + "/completions", {"prompt": "hi", "max_tokens": 2})  # no model named: served one
    assert st == 200


def test_serve_on_a_busy_port_is_a_one_line_error(tmp_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "benchmint.cli.main", "llm", "serve", "--port", str(port)],
                           capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "cannot listen on 127.0.0.1" in p.stderr and "Traceback" not in p.stderr


def test_unwritable_request_log_is_one_line_error_before_the_model_loads(tmp_path, monkeypatch):
    import socket

    import pytest

    from benchmint.core.errors import UserError
    from benchmint.llm import server as srv

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the request log was opened")

    monkeypatch.setattr(srv.AsyncEngine, "create", no_load)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="--request-log"):
        srv.serve("tiny", port=port, request_log=str(tmp_path / "missing" / "log.jsonl"))

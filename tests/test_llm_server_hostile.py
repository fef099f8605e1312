"""The built-in server under hostile clients (issue 16): bad requests answer 400 with an OpenAI-style error while
good streams beside them complete, the context limit is a sentence, one failing request fails alone, a client
that leaves frees its place, a 1 MB prompt is refused at once, SIGINT stops the server promptly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import aiohttp
import orjson
import pytest
from local_port import free_port, wait_port

from benchmint.llm.engine import AsyncEngine, BatchingEngine, TokenEvent, _Request
from benchmint.llm.server import ServerThread

CTX = 4096  # the tiny model's context length
GOOD = {"prompt": "Tell me a story", "max_tokens": 4, "ignore_eos": True}
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "ignore_eos": True}


SERVER_ENGINE = {"batch_wait_s": 0.01}
SERVER_OPTIONS = {"max_body_bytes": 4 << 20}


def body(**kw) -> bytes:
    return json.dumps({**GOOD, **kw}).encode()  # the json module writes 2**70 as it is


def chat(**kw) -> bytes:
    return json.dumps({**CHAT, **kw}).encode()


# (label, route, body, the param the error must name)
BAD = [
    ("prompt 5", "completions", body(prompt=5), "prompt"),
    ("prompt {}", "completions", body(prompt={}), "prompt"),
    ("prompt null", "completions", body(prompt=None), "prompt"),
    ("prompt [2**70]", "completions", body(prompt=[2**70]), "prompt"),
    ('prompt ""', "completions", body(prompt=""), "prompt"),
    ("prompt [999999]", "completions", body(prompt=[999999]), "prompt"),
    ("prompt [-1]", "completions", body(prompt=[-1]), "prompt[0]"),
    ('messages ["hi"]', "chat/completions", chat(messages=["hi"]), "messages[0]"),
    ("message without content", "chat/completions", chat(messages=[{"role": "user"}]), "messages[0]"),
    ('stream_options "yes"', "completions", body(stream=True, stream_options="yes"), "stream_options"),
    ("stream_options 1", "chat/completions", chat(stream=True, stream_options=1), "stream_options"),
    ('seed "abc"', "completions", body(seed="abc", temperature=1.0), "seed"),
    ("seed 2**70", "completions", body(seed=2**70, temperature=1.0), "seed"),
    ("temperature -1", "completions", body(temperature=-1), "temperature"),
    ("temperature 1e300", "completions", body(temperature=1e300), "temperature"),
    ("max_tokens 1e300", "completions", body(max_tokens=1e300), "max_tokens"),
    ("max_tokens 1.5", "completions", body(max_tokens=1.5), "max_tokens"),
    ("max_tokens 0", "completions", body(max_tokens=0), "max_tokens"),
    ("max_tokens -5", "completions", body(max_tokens=-5), "max_tokens"),
    ("body a list", "completions", b"[1, 2]", None),
    ("body not JSON", "completions", b"{prompt: hi", None),
]


async def post(s: aiohttp.ClientSession, url: str, data: bytes, timeout: float = 60) -> tuple[int, bytes]:
    async with s.post(url, data=data, headers={"Content-Type": "application/json"},
                      timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        return r.status, await r.read()


def stream_tokens(data: bytes) -> int | None:
    """Completion tokens of a finished SSE answer (from its usage chunk), None when it did not finish."""
    events = [line[6:] for line in data.decode().split("\n") if line.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        return None
    return orjson.loads(events[-2])["usage"]["completion_tokens"]


def good_stream(n: int) -> bytes:
    return body(max_tokens=n, stream=True, stream_options={"include_usage": True})


def test_each_bad_request_is_a_400_while_good_streams_complete(server):
    async def go():
        async with aiohttp.ClientSession() as s:
            good = [asyncio.create_task(post(s, server.url + "/completions", good_stream(40))) for _ in range(8)]
            await asyncio.sleep(0.05)
            bad = await asyncio.gather(*(post(s, f"{server.url}/{route}", data) for _, route, data, _ in BAD))
            return await asyncio.gather(*good), bad

    good, bad = asyncio.run(go())
    for (label, _, _, param), (st, data) in zip(BAD, bad, strict=True):
        assert st == 400, (label, st, data)
        err = orjson.loads(data)["error"]
        assert err["type"] == "invalid_request_error" and isinstance(err["message"], str), label
        assert err["param"] == param and err["code"] == "invalid_value", (label, err)
        assert "Traceback" not in err["message"] and "Error:" not in err["message"], (label, err)
    assert [st for st, _ in good] == [200] * 8
    assert [stream_tokens(d) for _, d in good] == [40] * 8


def test_error_sentences_name_the_rule(server):
    async def go():
        async with aiohttp.ClientSession() as s:
            return [orjson.loads((await post(s, server.url + "/completions", d))[1])["error"]["message"]
                    for d in (body(prompt=[999999]), body(temperature=-1), body(max_tokens=1.5))]

    vocab, temp, mt = asyncio.run(go())
    assert "token id 999999" in vocab and "vocabulary" in vocab
    assert "from 0 to 2" in temp
    assert "an integer >= 1" in mt


def test_a_tiny_temperature_samples_like_greedy(server):
    """temperature 1e-300 is inside the API's range (0 to 2): it answers 200 with the greedy tokens (it failed
    the whole batch with 'probability tensor contains inf/nan' before)."""
    async def go():
        async with aiohttp.ClientSession() as s:
            a = await post(s, server.url + "/completions", body(temperature=1e-300, max_tokens=8, seed=3))
            b = await post(s, server.url + "/completions", body(max_tokens=8))
            return a, b

    (sa, da), (sb, db) = asyncio.run(go())
    assert sa == sb == 200
    assert orjson.loads(da)["choices"][0]["text"] == orjson.loads(db)["choices"][0]["text"]


def test_the_context_limit_is_a_sentence(server):
    long_prompt = "word " * (CTX + 100)
    mb_prompt = ("lorem ipsum dolor sit amet " * 40000)[: 1 << 20]

    async def go():
        async with aiohttp.ClientSession() as s:
            url = server.url + "/completions"
            long = await post(s, url, body(prompt=long_prompt))
            ids = await post(s, url, body(prompt=[5] * (CTX + 1)))
            room = await post(s, url, body(prompt=[5] * 100, max_tokens=CTX))
            chat_long = await post(s, server.url + "/chat/completions",
                                   chat(messages=[{"role": "user", "content": long_prompt}]))
            mb = asyncio.create_task(post(s, url, body(prompt=mb_prompt)))
            small = await post(s, url, body())  # beside the 1 MB prompt
            huge = await post(s, url, body(prompt="x" * (5 << 20)))  # over the body limit
            async with s.get(server.url.removesuffix("/v1") + "/health") as r:
                health = r.status
            return long, ids, room, chat_long, await mb, small, huge, health

    long, ids, room, chat_long, mb, small, huge, health = asyncio.run(go())
    for st, data in (long, ids, chat_long, mb):
        err = orjson.loads(data)["error"]
        assert st == 400 and err["code"] == "context_length_exceeded", err
        assert f"maximum context length is {CTX} tokens" in err["message"]
    assert "characters" in orjson.loads(mb[1])["error"]["message"]  # refused before tokenizing
    err = orjson.loads(room[1])["error"]
    assert room[0] == 400 and err["param"] == "max_tokens" and f"at most {CTX - 100}" in err["message"]
    assert small[0] == 200 and health == 200
    assert huge[0] == 413 and "limit" in orjson.loads(huge[1])["error"]["message"]


def test_default_max_tokens_is_capped_at_the_context_left(server):
    async def go():
        async with aiohttp.ClientSession() as s:
            return await post(s, server.url + "/completions",
                              json.dumps({"prompt": [5] * (CTX - 3), "ignore_eos": True}).encode())

    st, data = asyncio.run(go())
    assert st == 200 and orjson.loads(data)["usage"]["completion_tokens"] == 3


def test_a_request_that_fails_in_the_engine_fails_alone(server):
    """A request that cannot run (a token id beyond the vocabulary, slipped past every check) and one whose
    consumer is gone join the batch of six good requests: only they end; the six get all their tokens."""
    engine: AsyncEngine = server_engine(server)
    eng: BatchingEngine = engine.engine
    bad_events: list[TokenEvent] = []

    def broken(_: TokenEvent) -> None:
        raise RuntimeError("event loop is closed")

    async def one(i: int):
        return [ev async for ev in engine.stream(f"prompt {i}", 20)]

    async def go():
        tasks = [asyncio.create_task(one(i)) for i in range(6)]
        eng.submit(_Request(prompt_ids=[999999], max_tokens=4, emit=bad_events.append))
        gone = _Request(prompt_ids=[5, 6], max_tokens=50, emit=broken)
        eng.submit(gone)
        return await asyncio.gather(*tasks), gone

    before = dict(eng.stats.requests_finished)
    good, gone = asyncio.run(go())
    assert [sum(e.tokens for e in evs) for evs in good] == [20] * 6
    assert all(evs[-1].finish_reason == "length" and evs[-1].error is None for evs in good)
    assert bad_events[-1].finish_reason == "error" and "IndexError" in bad_events[-1].error
    assert gone.done and gone.cancelled and len(gone.out_ids) < 50
    assert eng.stats.requests_finished["error"] == before.get("error", 0) + 1


def server_engine(server: ServerThread) -> AsyncEngine:
    return server.engine


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_frees_its_place(server, stream):
    eng = server_engine(server).engine
    t0 = time.monotonic()  # the engine counts its batch again after the step that finished the last test's
    while (eng.stats.running or eng.stats.waiting) and time.monotonic() - t0 < 30:  # requests has returned
        time.sleep(0.02)

    async def go():
        async with aiohttp.ClientSession() as s:
            req = asyncio.create_task(post(s, server.url + "/completions", body(max_tokens=4000, stream=stream)))
            t0 = time.monotonic()
            while eng.stats.running == 0 and time.monotonic() - t0 < 30:
                await asyncio.sleep(0.02)
            assert eng.stats.running == 1
            req.cancel()  # the client leaves
            await asyncio.gather(req, return_exceptions=True)

    cancelled = eng.stats.requests_finished.get("cancelled", 0)
    asyncio.run(go())
    t0 = time.monotonic()
    while eng.stats.running and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    assert eng.stats.running == 0
    assert eng.stats.requests_finished.get("cancelled", 0) == cancelled + 1
    assert eng.stats.generation_tokens_total < 10**6


def test_health_says_when_the_engine_is_stuck_or_gone(server):
    engine = server_engine(server)
    eng = engine.engine

    def health(srv: ServerThread) -> tuple[int, dict]:
        async def go():
            async with aiohttp.ClientSession() as s, s.get(srv.url.removesuffix("/v1") + "/health") as r:
                return r.status, await r.json()
        return asyncio.run(go())

    with ServerThread(engine, health_stall_s=5) as srv:
        assert health(srv)[0] == 200
        eng.step_started = time.monotonic() - 100
        try:
            st, d = health(srv)
        finally:
            eng.step_started = None
        assert st == 503 and d["status"] == "stalled" and "one step" in d["reason"]
    stopped = AsyncEngine(BatchingEngine("tiny", loaded=(eng.model, eng.tokenizer)))  # never started
    with ServerThread(stopped) as srv:
        st, d = health(srv)
    assert st == 503 and d["status"] == "unavailable"


def test_sigint_stops_the_server_while_a_request_runs(tmp_path):
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "benchmint.cli.main", "llm", "serve", "--port", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        wait_port(port, p, timeout_s=240)
        first = threading.Event()
        got: list[bytes] = []

        def client():
            async def go():
                async with aiohttp.ClientSession() as s, s.post(
                    f"http://127.0.0.1:{port}/v1/completions", json={**GOOD, "max_tokens": 4000, "stream": True}
                ) as r:
                    async for chunk in r.content.iter_any():
                        got.append(chunk)
                        first.set()
            try:
                asyncio.run(go())
            except Exception:
                pass
            first.set()

        th = threading.Thread(target=client, daemon=True)
        th.start()
        assert first.wait(120) and got, "no token streamed"
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        p.wait(timeout=40)
        took = time.monotonic() - t0
        th.join(10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert took < 30  # bounded (the drain, the engine's join and the exit with torch loaded: a loaded host is slow)
    assert p.returncode in (0, 130, -signal.SIGINT)
    stderr = p.stderr.read() if p.stderr else ""
    assert "Traceback" not in stderr
    assert b"shutting down" in b"".join(got)  # the stream in flight was told why it ended

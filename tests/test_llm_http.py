"""The OpenAI HTTP backend against small fault/quirk servers on 127.0.0.1 (started and stopped here)."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
import time
from collections.abc import Callable

import pytest

from benchmint.llm.backends import backend_kinds, create_backend
from benchmint.llm.backends.http import normalize_base_url
from benchmint.llm.types import GenRequest

Handler = Callable[[socket.socket, bytes, bytes], None]  # (sock, request head, body)


class FaultServer:
    """A tiny threaded HTTP server whose behaviour per request is given by a function."""

    def __init__(self, handle: Handler):
        outer = self

        class H(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.conns += 1
                sock = self.request
                sock.settimeout(5)
                buf = b""
                try:
                    while True:
                        while b"\r\n\r\n" not in buf:
                            d = sock.recv(65536)
                            if not d:
                                return
                            buf += d
                        head, _, rest = buf.partition(b"\r\n\r\n")
                        n = 0
                        for line in head.split(b"\r\n"):
                            if line.lower().startswith(b"content-length:"):
                                n = int(line.split(b":")[1])
                        while len(rest) < n:
                            rest += sock.recv(65536)
                        body, buf = rest[:n], rest[n:]
                        outer.count += 1
                        if handle(sock, head, body) == "close":
                            return
                except OSError:
                    return

        class S(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.count = 0  # requests
        self.conns = 0  # connections
        self.srv = S(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.srv.shutdown()
        self.srv.server_close()


def sse_response(events: list[bytes], sep: bytes = b"\n\n") -> bytes:
    body = b"".join(e + sep for e in events)
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body


def plain(status: str, body: bytes) -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


TRANSPORT = {"name": "h1"}  # the HTTP backend's transport the tests of this module (and of test_llm_sse) run on


@pytest.fixture(autouse=True, params=["h1", "aiohttp"])
def transport(request):
    """Every test here runs against both transports: the lean HTTP/1.1 one and aiohttp."""
    TRANSPORT["name"] = request.param
    yield request.param
    TRANSPORT["name"] = "h1"


def run_one(url: str, api: str = "completions", stream: bool = True, timeout_s: float = 5.0, **kw):
    kw.setdefault("transport", TRANSPORT["name"])

    async def go():
        b = create_backend("openai-http", url=url, model="m", api=api, stream=stream, timeout_s=timeout_s, **kw)
        await b.start()
        try:
            return await b.generate(GenRequest(id=1, prompt="hi", max_tokens=3))
        finally:
            await b.close()

    return asyncio.run(go())


CHUNK = b'data: {"choices":[{"index":0,"text":"%s"}]}'


def test_registry_knows_both_backends():
    kinds = backend_kinds()
    assert {"openai-http", "http", "transformers"} <= set(kinds)
    from benchmint.core.errors import UserError

    with pytest.raises(UserError, match="unknown backend"):
        create_backend("nope")


def test_a_transport_that_cannot_serve_the_url_is_refused():
    """h1 speaks cleartext HTTP without a connection limit: asked for it with https or a limit, every request
    failed (TLS port) or the limit was silently ignored; now the option is refused in one line."""
    from benchmint.core.errors import UserError

    with pytest.raises(UserError, match="transport=h1 cannot serve https://"):
        create_backend("openai-http", url="https://h:1/v1", model="m", transport="h1")
    with pytest.raises(UserError, match="max_connections"):
        create_backend("openai-http", url="http://h:1/v1", model="m", transport="h1", max_connections=4)
    with pytest.raises(UserError, match="credentials in the URL"):
        create_backend("openai-http", url="http://u:p@h:1/v1", model="m", transport="h1")
    with pytest.raises(UserError, match="choose one of auto, h1, aiohttp"):
        create_backend("openai-http", url="http://h:1/v1", model="m", transport="h2")
    assert create_backend("openai-http", url="https://h:1/v1", model="m").transport == "aiohttp"


def test_base_url_normalization():
    assert normalize_base_url("http://h:1") == "http://h:1/v1"
    assert normalize_base_url("h:1/v1/") == "http://h:1/v1"
    assert normalize_base_url("http://h:1/v1/chat/completions") == "http://h:1/v1"
    assert normalize_base_url("http://h:1/openai/v1") == "http://h:1/openai/v1"


def test_stream_with_usage_counts_tokens_from_usage():
    def h(sock, head, body):
        assert b'"include_usage":true' in body and b'"stream":true' in body
        sock.sendall(sse_response([CHUNK % b"a", CHUNK % b"b", b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":3}}', b"data: [DONE]"]))

    with FaultServer(h) as s:
        r = run_one(s.url)
    assert r.ok and r.text == "ab" and r.chunk_count == 2
    assert (r.output_tokens, r.output_tokens_source, r.input_tokens) == (3, "usage", 4)
    assert r.first_token_ns is not None and r.first_token_ns <= r.end_ns and r.token_count_flag is None


def test_tgi_and_llamacpp_quirks_no_space_crlf_comments_usage_on_last_chunk():
    events = [
        b": keep-alive",
        b'data:{"choices":[{"index":0,"delta":{"role":"assistant"}}]}',
        b'data:{"choices":[{"index":0,"delta":{"content":"x"}}]}',
        b"event: message",
        b'data:{"choices":[{"index":0,"delta":{"content":"yz"},"finish_reason":"length"}],"usage":{"completion_tokens":3}}',
    ]  # no [DONE]: accepted because content came
    with FaultServer(lambda sock, h, b: sock.sendall(sse_response(events, b"\r\n\r\n"))) as s:
        r = run_one(s.url, api="chat")
    assert r.ok, r.error
    assert r.text == "xyz" and r.chunk_count == 2 and r.output_tokens == 3 and r.output_tokens_source == "usage"


def test_no_usage_falls_back_to_tokenizer_then_chunks():
    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": list(text)}

    resp = sse_response([CHUNK % b"ab", CHUNK % b"c", b"data: [DONE]"])
    with FaultServer(lambda sock, h, b: sock.sendall(resp)) as s:
        r1 = run_one(s.url, tokenizer=Tok())
        r2 = run_one(s.url)
    assert (r1.output_tokens, r1.output_tokens_source) == (None, "tokenizer")  # counted after the run
    from benchmint.llm.token_counts import count_after_run

    count_after_run([r1], lambda texts, add_special_tokens=False: {"input_ids": [list(t) for t in texts]})
    assert (r1.output_tokens, r1.output_tokens_source) == (3, "tokenizer")
    assert (r2.output_tokens, r2.output_tokens_source) == (2, "chunks")


def test_more_chunks_than_usage_is_flagged():
    resp = sse_response([CHUNK % b"a", CHUNK % b"b", CHUNK % b"c", b'data: {"choices":[],"usage":{"completion_tokens":2}}', b"data: [DONE]"])
    with FaultServer(lambda sock, h, b: sock.sendall(resp)) as s:
        r = run_one(s.url)
    assert r.ok and r.token_count_flag and "chunks>usage" in r.token_count_flag


def test_non_streaming_completion_and_chat():
    body_c = b'{"choices":[{"text":"hello"}],"usage":{"completion_tokens":2,"prompt_tokens":1}}'
    body_m = b'{"choices":[{"message":{"content":"hey"}}],"usage":{"completion_tokens":1}}'
    with FaultServer(lambda sock, h, b: sock.sendall(plain("200 OK", body_m if b"messages" in b else body_c))) as s:
        r1 = run_one(s.url, stream=False)
        r2 = run_one(s.url, api="chat", stream=False)
    assert r1.ok and r1.text == "hello" and r1.output_tokens == 2 and r1.chunk_count == 1
    assert r2.ok and r2.text == "hey" and r2.output_tokens == 1


@pytest.mark.parametrize(
    "reply,kind",
    [
        (plain("404 Not Found", b'{"error":"no such model"}'), "http_4xx"),
        (plain("503 Service Unavailable", b"overloaded"), "http_5xx"),
        (sse_response([b"data: {not json"]), "malformed"),
        (sse_response([b'data: {"error":{"message":"boom"}}']), "stream_error"),
        (sse_response([b'error: {"message":"llama.cpp failed"}']), "stream_error"),
        (sse_response([]), "malformed"),
    ],
)
def test_error_replies_are_counted_by_kind(reply, kind):
    with FaultServer(lambda sock, h, b: sock.sendall(reply)) as s:
        r = run_one(s.url)
    assert not r.ok and r.error_kind == kind and r.error
    if kind.startswith("http"):
        assert reply.split(b" ")[1].decode() in r.error


def test_connection_reset_mid_stream():
    def h(sock, head, body):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 500\r\n\r\n" + CHUNK % b"a" + b"\n\n")
        sock.shutdown(socket.SHUT_RDWR)
        return "close"

    with FaultServer(h) as s:
        r = run_one(s.url)
    assert r.error_kind == "reset", (r.error_kind, r.error)


def test_closed_without_reply_is_reset():
    with FaultServer(lambda sock, h, b: "close") as s:
        r = run_one(s.url)
    assert r.error_kind == "reset", (r.error_kind, r.error)


def test_timeout():
    stop = threading.Event()

    def h(sock, head, body):
        stop.wait(3)  # never answers within the client's timeout
        return "close"

    with FaultServer(h) as s:
        r = run_one(s.url, timeout_s=0.3)
        stop.set()
    assert r.error_kind == "timeout"


def test_server_down_is_connect_error():
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    r = run_one(f"http://127.0.0.1:{port}/v1")
    assert r.error_kind == "connect" and str(port) in r.error


def test_one_backend_serves_several_event_loops():
    resp = sse_response([CHUNK % b"a", b"data: [DONE]"])
    with FaultServer(lambda sock, h, body: sock.sendall(resp)) as s:
        b = create_backend("openai-http", url=s.url, model="m", transport=TRANSPORT["name"])

        async def go():
            return await b.generate(GenRequest(id=1, prompt="hi", max_tokens=1))  # no start(): made on demand

        r1 = asyncio.run(go())  # first loop: its session is left open on purpose (the loop closes)
        r2 = asyncio.run(go())  # a new loop gets its own session
        assert r1.ok and r2.ok


def chunked_head(extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n" + extra + b"\r\n"


def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_ttft_is_from_send_and_each_chunk_has_its_arrival_time():
    """The server waits 0.2 s before its first token and 0.1 s between the next ones: the record's TTFT is
    measured from the send, each content chunk carries the time it arrived."""

    def h(sock, head, body):
        sock.sendall(chunked_head())
        time.sleep(0.2)
        for i in range(3):
            sock.sendall(http_chunk(CHUNK % b"x%d" % i + b"\n\n"))
            time.sleep(0.1)
        sock.sendall(http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    with FaultServer(h) as s:
        r = run_one(s.url)
    assert r.ok, r.error
    assert r.text == "x0x1x2" and r.chunk_count == 3 and r.first_token_ns == r.chunk_ns[0]
    assert 0.2 <= (r.first_token_ns - r.sent_ns) / 1e9 < 2.0
    # arrival times, not the server's clock: a chunk read late can sit close to the next (0.091 s apart under
    # load), and two read at once share a time. What no delay can do is make a chunk arrive before the server
    # sent it: chunk k is sent 0.2 + 0.1 k s after the request, the end 0.5 s after
    assert all((t - r.sent_ns) / 1e9 >= 0.2 + 0.1 * k - 0.005 for k, t in enumerate(r.chunk_ns)), r.chunk_ns
    assert (r.end_ns - r.sent_ns) / 1e9 >= 0.495 and r.chunk_ns == sorted(r.chunk_ns)
    assert r.chunk_ns[-1] - r.chunk_ns[0] > 0  # times per chunk, not one time for the whole answer


def test_events_cut_across_http_chunks_and_reads():
    """Chunked encoding whose chunks cut events (and lines) anywhere, sent in separate writes."""
    stream = b"".join(CHUNK % b"%d" % i + b"\n\n" for i in range(5)) + b"data: [DONE]\n\n"
    pieces = [stream[i:i + 7] for i in range(0, len(stream), 7)]

    def h(sock, head, body):
        sock.sendall(chunked_head())
        for p in pieces:
            sock.sendall(http_chunk(p))
            time.sleep(0.001)
        sock.sendall(b"0\r\n\r\n")

    with FaultServer(h) as s:
        r = run_one(s.url)
    assert r.ok, r.error
    assert r.text == "01234" and r.chunk_count == 5 and r.chunk_ns == sorted(r.chunk_ns)


def run_many(url: str, n: int) -> list:
    async def go():
        b = create_backend("openai-http", url=url, model="m", transport=TRANSPORT["name"])
        await b.start()
        try:
            return [await b.generate(GenRequest(id=i, prompt="hi", max_tokens=1)) for i in range(n)]
        finally:
            await b.close()

    return asyncio.run(go())


def test_keep_alive_reuses_the_connection_unless_the_server_closes_it():
    resp = sse_response([CHUNK % b"a", b"data: [DONE]"])
    with FaultServer(lambda sock, h, b: sock.sendall(resp)) as s:
        recs = run_many(s.url, 5)
        assert all(r.ok for r in recs) and s.count == 5 and s.conns == 1
    close = resp.replace(b"Content-Length", b"Connection: close\r\nContent-Length")

    def h(sock, head, body):
        sock.sendall(close)
        return "close"

    with FaultServer(h) as s:
        recs = run_many(s.url, 3)
        assert all(r.ok for r in recs), [r.error for r in recs]
        assert s.count == 3 and s.conns == 3


def test_an_informational_answer_before_the_answer_is_skipped():
    resp = sse_response([CHUNK % b"a", b"data: [DONE]"])
    with FaultServer(lambda sock, h, b: sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" + resp)) as s:
        r = run_one(s.url)
    assert r.ok and r.text == "a", r.error


def test_a_body_that_ends_with_the_connection_is_complete():
    events = CHUNK % b"a" + b"\n\n" + b'data: {"choices":[],"usage":{"completion_tokens":1}}\n\n' + b"data: [DONE]\n\n"

    def h(sock, head, body):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n" + events)
        return "close"

    with FaultServer(h) as s:
        r = run_one(s.url)
    assert r.ok, r.error
    assert r.text == "a" and r.output_tokens == 1


def test_not_http_is_an_error_of_its_own_kind():
    with FaultServer(lambda sock, h, b: (sock.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), "close")[1]) as s:
        r = run_one(s.url)
    assert not r.ok and r.error_kind == "other" and "HTTP/" in r.error, (r.error_kind, r.error)


@pytest.mark.parametrize("stream", [True, False])
def test_a_redirect_on_the_lean_transport_says_where_to_point_the_url(stream):
    """aiohttp follows a 307/308; the lean transport does not, and read the redirect's body as the answer
    ("malformed: stream ended with no data events"), which hid what to change."""
    if TRANSPORT["name"] != "h1":
        pytest.skip("aiohttp follows redirects")

    def h(sock, head, body):
        sock.sendall(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: https://x/v1/completions\r\n"
                     b"Content-Length: 0\r\n\r\n")

    with FaultServer(h) as s:
        r = run_one(s.url, stream=stream)
    assert r.error_kind == "other" and r.http_status == 307, (r.error_kind, r.error)
    assert "redirect" in r.error and "transport=aiohttp" in r.error, r.error


def test_credentials_in_the_url_are_sent():
    """``http://user:pass@host`` : aiohttp sends them as Basic auth; the lean transport (the default for http://)
    dropped them and every request got the server's 401."""

    def h(sock, head, body):
        if b"Basic dTpw" not in head:  # base64 of u:p
            sock.sendall(plain("401 Unauthorized", b'{"error":"auth"}'))
        else:
            sock.sendall(sse_response([b'data: {"choices":[{"text":"a"}]}', b"data: [DONE]"]))

    with FaultServer(h) as s:
        r = run_one(s.url.replace("http://", "http://u:p@"), transport="auto")
    assert r.ok, (r.error_kind, r.error)


def test_a_switch_of_protocols_is_an_error_of_its_own_kind(caplog):
    """A 101 answer made httptools raise its upgrade signal, which is no parser error: it reached the event
    loop's error log with a traceback and the request counted as a reset."""

    def h(sock, head, body):
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nxx")

    with FaultServer(h) as s:
        r = run_one(s.url, timeout_s=2)
    assert not r.ok and r.error_kind in ("other", "malformed"), (r.error_kind, r.error)
    assert "Fatal error" not in caplog.text

"""The SSE decoder follows the spec (multi-line data joined with a newline, blank line ends an event, CR/LF/CRLF
line ends) however the stream is cut into reads, and the HTTP backend reads such events whole."""

from __future__ import annotations

from test_llm_http import FaultServer, run_one, transport  # noqa: F401  (transport: both transports)

from benchmint.llm.backends.sse import SSEDecoder

STREAM = (
    b": comment\r\n"
    b"event: message\r\n"
    b"data: first\r\n"
    b"data:second\r\n"
    b"data:  third\r\n"
    b"\r\n"
    b"id: 3\n"
    b"data: {\"a\": 1}\n"
    b"\n"
    b"data: lone cr\r"
    b"\r"
    b"data: [DONE]\n\n"
)
EVENTS = [("data", b"first\nsecond\n third"), ("data", b'{"a": 1}'), ("data", b"lone cr"), ("data", b"[DONE]")]


def decode(pieces: list[bytes]) -> list[tuple[str, bytes]]:
    d = SSEDecoder()
    out = [e for p in pieces for e in d.feed(p)]
    return out + d.finish()


def test_events_join_multi_line_data_per_the_spec():
    assert decode([STREAM]) == EVENTS


def test_events_are_the_same_however_the_stream_is_cut():
    for i in range(1, len(STREAM)):
        assert decode([STREAM[:i], STREAM[i:]]) == EVENTS, i
    assert decode([STREAM[i:i + 1] for i in range(len(STREAM))]) == EVENTS


def test_last_event_without_blank_line_and_a_cut_off_line():
    d = SSEDecoder()
    assert d.feed(b"data: a\ndata: b\n") == []
    assert d.finish() == [("data", b"a\nb")]
    d = SSEDecoder()
    assert d.feed(b"data: a\n\ndata: {\"cho") == [("data", b"a")]
    assert d.partial == b'data: {"cho' and d.finish() == []
    assert SSEDecoder().feed(b"error: {\"message\": \"x\"}\n") == [("error", b'{"message": "x"}')]


def test_backend_reads_an_event_whose_json_spans_several_data_lines():
    event = (b'data: {"choices":[{"index":0,\n'
             b'data:   "text":"a"}]}\n\n'
             b'data: {"choices":[{"index":0,"text":"b"}],\n'
             b'data: "usage":{"completion_tokens":2}}\n\n'
             b"data: [DONE]\n\n")
    resp = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(event)) + event
    with FaultServer(lambda sock, h, b: sock.sendall(resp)) as s:
        r = run_one(s.url)
    assert r.ok, r.error
    assert r.text == "ab" and r.chunk_count == 2 and (r.output_tokens, r.output_tokens_source) == (2, "usage")

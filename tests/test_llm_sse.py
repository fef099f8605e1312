"""The SSE decoder follows the spec (multi-line data joined with a newline, blank line ends an event, CR/LF/CRLF
line ends) however the stream is cut into reads, and the HTTP backend reads such events whole."""

from __future__ import annotations

import pytest
from test_llm_http import FaultServer, run_one, transport  # noqa: F401  (transport: both transports)

from benchmint.llm.backends.answer import AnswerError, StreamRead
from benchmint.llm.backends.sse import SSEDecoder
from benchmint.llm.types import RequestRecord

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


C = b'data: {"choices":[{"index":0,"text":"%s","finish_reason":null}]}\n\n'
D = b'data: {"choices":[{"index":0,"delta":{"%s":"%s"}}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"completion_tokens":2}}\n\n'
DONE = b"data: [DONE]\n\n"
STREAMS = [
    (False, C % b"a" + C % b"b" + USAGE + DONE),
    (False, C % b"a" + DONE + C % b"after done"),  # what follows [DONE] is not read
    (False, C % b"a" + b"data: \n\n" + DONE),  # an empty data event
    (False, b"data: \n\n"),
    (False, C % b"a" + b'data: {"error":{"message":"boom"}}\n\n'),
    (False, C % b"a" + b'data: {"choices":[{"text":5}]}\n\n'),
    (False, C % b"a" + b'data: {"choices":"x"}\n\n'),
    (False, C % b"a" + b"data: [1,2]\n\n"),
    (False, C % b'a\\n[DONE] \\"error\\"' + DONE),  # the markers inside a text
    (False, b'data: {"choices":[{"text":"","finish_reason":"stop"}]}\n\n'),  # finished, no content
    (False, C % b"a" + b": ping\n\nevent: x\n" + C % b"b" + DONE),
    (True, D % (b"role", b"assistant") + D % (b"content", b"x") + D % (b"reasoning_content", b"r") + DONE),
    (True, D % (b"content", b"x") + b'data: {"choices":[{"delta":7}]}\n\n'),
]


def read_stream(chat: bool, pieces: list[bytes]) -> tuple:
    rec = RequestRecord(id=0)
    r = StreamRead(rec, None, chat)
    try:
        for i, p in enumerate(pieces):
            if r.feed(p, i + 1):
                break
        else:
            r.feed(b"", len(pieces) + 1)
        usage = r.finish()
    except AnswerError as e:
        return ("error", e.kind, str(e))
    except ValueError as e:  # orjson's JSONDecodeError
        return ("json", type(e).__name__)
    return (rec.text, rec.chunk_count, usage, r.finished, len({t for t in rec.chunk_ns}))


@pytest.mark.parametrize("chat,stream", STREAMS)
def test_a_read_of_whole_events_reads_as_event_by_event(chat, stream):
    """The one-call decode of a read's usual events gives what the event-by-event reading gives (byte by byte,
    no read is ever whole events), errors and their words included."""
    whole = read_stream(chat, [stream])
    by_byte = read_stream(chat, [stream[i:i + 1] for i in range(len(stream))])
    assert whole[:-1] == by_byte[:-1] if whole[0] not in ("error", "json") else whole == by_byte
    if whole[0] not in ("error", "json"):
        assert whole[-1] <= 1  # one read: every chunk has its time


def test_fast_path_is_taken_for_the_usual_read():
    assert SSEDecoder().simple(C % b"a" + C % b"b" + DONE) is not None
    assert SSEDecoder().simple(C % b"a" + b": ping\n\n") is None
    assert SSEDecoder().simple(C.replace(b"\n", b"\r\n") % b"a") is None

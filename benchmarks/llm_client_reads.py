"""The HTTP client's own Python cost per read and per answer, with no network and no server (issue 14).

Feeds the lean HTTP/1.1 transport's connection (``benchmint.llm.backends.h1``) and the answer reader
(``benchmint.llm.backends.answer``) canned bytes: a streamed answer of ``--chunks`` content events (as the
mock server writes them) read in one piece, and the same answer read one event per ``data_received`` (a
server that spaces its chunks out). Prints CPU microseconds (process time) per answer and per read. What it
leaves out is what the kernel and the event loop cost per read (a socket read, an epoll wake-up):
``benchmarks/llm_client.py`` measures the whole.

    .venv/bin/python benchmarks/llm_client_reads.py [--answers 2000] [--chunks 16]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from benchmint.llm.backends import h1
from benchmint.llm.backends.answer import StreamRead
from benchmint.llm.backends.http import _H1Answer
from benchmint.llm.types import RequestRecord

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def event(i: int) -> bytes:
    return (b'data: {"id":"cmpl-mock","object":"text_completion","created":0,"model":"mock","choices":'
            b'[{"index":0,"text":" tok%d","finish_reason":null}]}\n\n' % i)


def http_chunk(b: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(b), b)


class _Sink:
    def write(self, data: bytes) -> None: ...

    def abort(self) -> None: ...

    def close(self) -> None: ...


def per_answer(reads: list[bytes], answers: int) -> float:
    """CPU seconds per answer of the connection + reader fed ``reads`` (the request head is not counted)."""
    loop = asyncio.new_event_loop()
    pool = h1.Pool("127.0.0.1", 1)
    conn = h1.Connection(pool)
    conn.connection_made(_Sink())  # type: ignore[arg-type]
    t0 = time.process_time()
    for _ in range(answers):
        fut = loop.create_future()
        conn.send(_H1Answer(fut, RequestRecord(id=0), None, False, True, conn), b"")
        for r in reads:
            conn.data_received(r)
        assert fut.done() and fut.exception() is None
        pool.idle.clear()
    loop.close()
    return (time.process_time() - t0) / answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", type=int, default=2000)
    ap.add_argument("--chunks", type=int, default=16)
    a = ap.parse_args()
    evs = [event(i) for i in range(a.chunks)]
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":%d}}\n\n' % a.chunks
    tail = http_chunk(usage) + http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    whole = HEAD + b"".join(http_chunk(e) for e in evs) + tail
    one = per_answer([whole], a.answers)
    spaced = [HEAD] + [http_chunk(e) for e in evs] + [tail]
    many = per_answer(spaced, a.answers)
    t0 = time.process_time()
    for _ in range(a.answers):
        r = StreamRead(RequestRecord(id=0), None, False)
        r.feed(b"".join(evs) + usage + b"data: [DONE]\n\n", 1)
        r.finish()
    reader = (time.process_time() - t0) / a.answers
    print(f"{a.chunks} content chunks per answer, {a.answers} answers")
    print(f"  answer in one read:        {one * 1e6:7.1f} us per answer (reader alone {reader * 1e6:.1f} us)")
    print(f"  one event per read:        {many * 1e6:7.1f} us per answer, {many / len(spaced) * 1e6:.2f} us per read")


if __name__ == "__main__":
    main()

"""Server-sent events, decoded incrementally as the HTTP backend reads a stream.

As the SSE specification (WHATWG HTML, "Server-sent events", interpreting an event stream) says: lines end in
CRLF, LF or CR; an event is the lines up to a blank line; each ``data:`` line adds its value (one leading space
removed) to the event's data, the lines of one event joined with ``"\\n"``; lines starting with ``:`` are
comments; other fields (``event:``, ``id:``, ``retry:``) are read and not needed here. Two leniencies for real
servers: the last event is dispatched at the end of the stream even without its closing blank line (the spec
would drop it; servers such as TGI's native route end without one), and llama.cpp's non-standard ``error:``
line is handed over at once, as an ``error`` event.

It is a small hand-written decoder because the load generator reads every chunk on its event loop: splitting
bytes on newlines is the cheapest thing that is correct, and the libraries that decode SSE are tied to a
client (httpx-sse) or read a whole response.
"""

from __future__ import annotations


class SSEDecoder:
    """``feed(bytes)`` returns the events completed by those bytes as ``(field, data)`` pairs: ``("data", b"...")``
    for an event's joined data, ``("error", b"...")`` for an ``error:`` line; ``finish()`` returns the last event
    when the stream ended without its blank line; ``partial`` holds a line the stream ended in the middle of."""

    __slots__ = ("_buf", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] | None = None  # the data lines of the event being read

    @property
    def partial(self) -> bytes:
        """What was read after the last line end (non-empty at the end of the stream: a cut-off line)."""
        return self._buf.rstrip(b"\r")

    def simple(self, piece: bytes) -> bytes | None:
        """The data of the events in ``piece``, joined with commas, when ``piece`` is nothing but whole one-line
        ``data: `` events (LF line ends) and nothing is pending: the common case, read without going line by line
        (an event ends at a blank line and a line at a line feed, so once the separators are replaced no line
        feed may be left). None otherwise, and nothing is consumed: then ``feed`` reads it."""
        if self._buf or self._data is not None or piece[:6] != b"data: " or piece[-2:] != b"\n\n" or b"\r" in piece:
            return None
        joined = piece[6:-2].replace(b"\n\ndata: ", b",")
        return None if b"\n" in joined else joined

    def feed(self, piece: bytes) -> list[tuple[str, bytes]]:
        buf = self._buf + piece if self._buf else piece
        held = b""
        if b"\r" in buf:
            if buf[-1:] == b"\r":  # a CR at the end may be the first half of a CRLF: decide with the next piece
                buf, held = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in buf:
            self._buf = buf + held
            return []
        lines = buf.split(b"\n")
        self._buf = lines.pop() + held
        out: list[tuple[str, bytes]] = []
        for line in lines:
            if not line:  # blank line: dispatch
                if self._data is not None:
                    out.append(("data", b"\n".join(self._data)))
                    self._data = None
                continue
            if line[:5] == b"data:":
                v = line[5:]
                if v[:1] == b" ":
                    v = v[1:]
                if self._data is None:
                    self._data = [v]
                else:
                    self._data.append(v)
            elif line[:6] == b"error:":
                out.append(("error", line[6:].strip()))
            # comments (":") and the other fields are skipped
        return out

    def finish(self) -> list[tuple[str, bytes]]:
        """The events the end of the stream completes: the one left open (data lines with no blank line after
        them), if any."""
        out = self.feed(b"\n") if self._buf[-1:] == b"\r" else []  # a last line ended by a lone CR
        data, self._data = self._data, None
        return out if data is None else [*out, ("data", b"\n".join(data))]

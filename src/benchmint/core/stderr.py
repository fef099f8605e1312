"""Keep native libraries' chatter off the console: Kineto prints ``USDT: ... profiler_start`` and
``profiler_stop`` lines straight to file descriptor 2 each time a profiler session starts or stops, and no
environment variable silences them (TORCH_CPP_LOG_LEVEL does not reach its logger)."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

NATIVE_NOISE = (re.compile(r"^USDT:.*\] profiler_(start|stop)\s*$"),)


@contextmanager
def filtered_native_stderr(drop: tuple[re.Pattern[str], ...] = NATIVE_NOISE) -> Iterator[None]:
    """Run a short block with file descriptor 2 captured; afterwards, write back every line that matches none
    of ``drop`` (so a real error a native library prints is still seen, only later). Keep the block short:
    Python's own writes to stderr are held back too while it runs."""
    fd = 2  # native libraries write to the descriptor, whatever Python's sys.stderr is
    try:
        sys.stderr.flush()
        saved = os.dup(fd)
    except (AttributeError, OSError, ValueError):  # no descriptor 2 to capture
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            finally:
                os.dup2(saved, fd)
                os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", errors="replace")
            kept = [ln for ln in text.splitlines(keepends=True) if not any(p.search(ln) for p in drop)]
            if kept:
                os.write(fd, "".join(kept).encode("utf-8", errors="replace"))

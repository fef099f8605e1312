"""Keep native libraries' chatter off the console: Kineto prints ``USDT: ... profiler_start`` and
``profiler_stop`` lines straight to file descriptor 2 each time a profiler session starts or stops, and no
environment variable silences them (TORCH_CPP_LOG_LEVEL does not reach its logger); the ExecutionTraceObserver
logs "Enabling/Disabling Execution Trace Observer" at each start and stop (TORCH_CPP_LOG_LEVEL would, but only
when set before torch loads, and for every other warning of torch's C++ code too)."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

NATIVE_NOISE = (
    re.compile(rb"^USDT:.*\] profiler_(start|stop)\s*$"),
    # torch 2.13's ExecutionTraceObserver logs each start() and stop() as a warning on descriptor 2
    # (under torchrun, prefixed with the rank: "[rank0]:[W1204 ...")
    re.compile(rb"^(\[rank\d+\]:)?\[W\d+ [\d:.]+ execution_trace_observer\.cpp:\d+\] (Enabling|Disabling) "
               rb"Execution Trace Observer\s*$"),
)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:  # a closed or broken stderr: nothing more can be shown
        pass


@contextmanager
def filtered_native_stderr(drop: tuple[re.Pattern[bytes], ...] = NATIVE_NOISE) -> Iterator[None]:
    """Run a short block with file descriptor 2 going through a pipe; a reader thread forwards, as they
    arrive, the lines that match none of ``drop`` (so a real error, or a crash report, still shows). Python's
    own writes to stderr in the block pass the same way."""
    fd = 2  # native libraries write to the descriptor, whatever Python's sys.stderr is
    try:
        sys.stderr.flush()
        saved = os.dup(fd)
    except (AttributeError, OSError, ValueError):
        saved = -1
    if saved < 0:  # no descriptor 2 to capture
        yield
        return
    try:
        r, w = os.pipe()
    except OSError:
        os.close(saved)
        yield
        return

    def forward() -> None:
        buf = b""
        with os.fdopen(r, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                keep = b"".join(ln + b"\n" for ln in lines if not any(p.search(ln) for p in drop))
                if keep:
                    _write_all(saved, keep)
        if buf and not any(p.search(buf) for p in drop):
            _write_all(saved, buf)

    reader = threading.Thread(target=forward, name="benchmint-stderr", daemon=True)
    reader.start()
    try:
        os.dup2(w, fd)
    finally:
        os.close(w)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        os.dup2(saved, fd)  # closes the pipe's last write end: the reader sees the end and stops
        reader.join(timeout=5)
        os.close(saved)

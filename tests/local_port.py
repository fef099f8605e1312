"""A free loopback port, and waiting until a server started on it (a child process) accepts connections; for the
tests and the ``benchmarks/`` scripts that start servers."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout_s: float = 20.0) -> float:
    """Seconds until 127.0.0.1:``port`` accepts a connection; RuntimeError (with the tail of the child's stderr,
    when it is a pipe) when ``proc`` exits first or ``timeout_s`` passes."""
    t0 = time.monotonic()
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return time.monotonic() - t0
        except OSError:
            if (proc is not None and proc.poll() is not None) or time.monotonic() - t0 > timeout_s:
                err = proc.stderr.read() if proc is not None and proc.stderr is not None and proc.poll() is not None else ""
                tail = (err.decode(errors="replace") if isinstance(err, bytes) else err)[-2000:]
                raise RuntimeError(f"server did not start on port {port}" + (f": {tail}" if tail else "")) from None
            time.sleep(0.05)

"""Keep Ctrl-C from cutting a result in half."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def sigint_deferred(reraise: bool = True) -> Iterator[None]:
    """While the block runs (writing a result, storing a run), Ctrl-C is held back, then raised at its end
    (``reraise``) or dropped (when the block is already the way out after a first Ctrl-C): a second Ctrl-C
    must not leave a result file without its run record. A no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, _frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if got and reraise:
        raise KeyboardInterrupt

"""Python's cyclic garbage collector paused around work that builds many acyclic objects or must not stall."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused(freeze: bool = False) -> Iterator[None]:
    """Pause the cyclic collector: a collection pass walks every live object, so with a large trace in memory
    (decoding) or requests in flight (measuring) the collector, not the work, would set the time. ``freeze``:
    collect once first and move the survivors out of the collector's reach (``gc.freeze``) until the end, so
    that no pass over them can start inside. Re-entrant; restores the previous state."""
    was = gc.isenabled()
    if freeze:
        gc.collect()
        gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.unfreeze()
        if was:
            gc.enable()

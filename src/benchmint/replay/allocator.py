"""The host allocator a replay times its iterations under: glibc malloc's thresholds fixed where a long-running
process's settle.

glibc returns freed memory to the system when a freed block is large (above the mmap threshold, it was mapped
on its own) or when the free space at the top of the heap exceeds the trim threshold; both thresholds start
low (128 KiB, 256 KiB) and rise as the process frees large blocks, to at most 32 MiB and 64 MiB. A training
process that has run for a while has freed its gradients and activations many times and sits at or near the
top: its steps reuse heap memory and take no page faults. A replay is a fresh process with another order of
frees (a tensor is freed at its last use, several gradients together), and its thresholds can stay low: an
embedding-bag training step measured here took 6,000-9,000 page faults and 2x the original's time per
replayed iteration, none with the thresholds fixed. :func:`settle_malloc` fixes them at glibc's own maximums, the
state the original's process reaches; ``BENCHMINT_REPLAY_MALLOC=default`` leaves them alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where the dynamic threshold stops
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # the dynamic rule: twice the mmap threshold

_done: str | None = None


def settle_malloc() -> str:
    """Fix glibc's mmap and trim thresholds for this process (once); returns what the replay ran under, in
    words, for the result (``allocator``)."""
    global _done
    if _done is not None:
        return _done
    if os.environ.get("BENCHMINT_REPLAY_MALLOC", "").strip().lower() == "default":
        _done = "default: malloc thresholds left as the process had them (BENCHMINT_REPLAY_MALLOC=default)"
        return _done
    if not sys.platform.startswith("linux"):
        _done = "default: not glibc"
        return _done
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        ok = bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                  and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        ok = False
    _done = (f"glibc malloc settled: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold "
             f"{TRIM_THRESHOLD >> 20} MiB (a long-running process's)") if ok else "default: not glibc"
    return _done

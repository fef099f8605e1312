"""How benchmint starts a torch profiler session.

CUPTI, the CUDA profiling interface that Kineto records GPU activity through, stays attached to the process
after a session ends unless Kineto is told to tear it down (``TEARDOWN_CUPTI=1``, read as each session ends).
On an H200 the un-observed steps of a small training loop after its recording ran 17% and 38% slower than
the steps before it, with CUPTI left attached; in three alternating rounds after, left attached read +34%,
+27%, +13% and released -22%, +25%, +5%: as noisy as the effect, so the cure is not yet shown, but the
mechanism is Kineto's own. A session with CUDA activity therefore has Kineto release CUPTI, unless the user
chose (``TEARDOWN_CUPTI`` already set) and only with CUDA 12.6 or later: before it, a CUDA graph crashed at
CUPTI's re-initialization after a teardown (torch itself turns teardown off there under torch.compile), and
``capture --every N`` re-initializes it at every recording. Kineto leaves the teardown to the next CUDA call:
the caller makes one (a synchronize) before its clock starts again.

torch's profiler may also warn, once per process, that it "clears events at the end of each cycle":
benchmint's sessions are one cycle each, so the warning is silenced while the session starts, and only then.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from benchmint.core.stderr import filtered_native_stderr


def _teardown_safe() -> bool:
    try:
        import torch

        major, minor = (int(x) for x in (torch.version.cuda or "0.0").split(".")[:2])
    except (ImportError, ValueError):
        return False
    return (major, minor) >= (12, 6)


def start(prof: Any, cuda: bool) -> None:
    """Enter the profiler ``prof`` (``cuda``: it records CUDA activity), Kineto's start-up line kept off the
    console."""
    if cuda and _teardown_safe():
        os.environ.setdefault("TEARDOWN_CUPTI", "1")
    with filtered_native_stderr(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Warning: Profiler clears events", category=UserWarning)
        prof.__enter__()

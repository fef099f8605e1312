"""What a torch profiler session that benchmint opens sets in the process first.

CUPTI, the CUDA profiling interface that Kineto records GPU activity through, stays attached to the process
after a session ends unless Kineto is told to tear it down (``TEARDOWN_CUPTI=1``, read as each session ends).
Attached, it slows every later CUDA launch: on an H200, the un-observed steps of a small training loop after
its recording ran 17% and 38% slower than before it, which a capture's idle-recorder check and a replay timed
after its own recording both pay. So a session with CUDA activity releases it, unless the user chose otherwise
(``TEARDOWN_CUPTI`` already set; torch sets 0 itself for CUDA graphs under torch.compile, which do not survive
a teardown).

torch's profiler also warns, once per process, that it "clears events at the end of each cycle": benchmint's
sessions are one cycle each, so the warning says nothing to its users and is silenced.
"""

from __future__ import annotations

import os
import warnings


def prepare(cuda: bool) -> None:
    """Before a profiler session (``cuda``: with CUDA activity)."""
    warnings.filterwarnings("ignore", message="Warning: Profiler clears events", category=UserWarning)
    if cuda:
        os.environ.setdefault("TEARDOWN_CUPTI", "1")

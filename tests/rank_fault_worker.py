"""A multi-rank replay worker with a fault injected, for tests only (never imported by benchmint).

``BENCHMINT_TEST_FAIL_RANK`` = ``RANK`` or ``RANK:OP`` (``OP`` e.g. ``c10d::allreduce_``) makes that rank's first
live collective (of that op) raise, to check how a failing rank is reported. The tests point the launcher at this
module (``benchmint.replay.distributed.WORKER``) with the tests folder on the ranks' PYTHONPATH.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from benchmint.replay import collectives, rank_worker

ENV = "BENCHMINT_TEST_FAIL_RANK"
_rank, _, _op = os.environ.get(ENV, "").partition(":")
_armed = [True]
_call = collectives.Collectives._call


def _failing_call(self: collectives.Collectives, m: collectives.Mapped, body: Any) -> None:
    if self.live and _armed[0] and str(self.rank) == _rank and _op in ("", m.op):
        _armed[0] = False

        def boom() -> None:
            raise RuntimeError(f"failure injected by {ENV}")

        return _call(self, m, boom)
    return _call(self, m, body)


collectives.Collectives._call = _failing_call  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(rank_worker._worker(sys.argv[1]))

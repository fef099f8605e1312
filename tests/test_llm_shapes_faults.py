"""Sessions, ramps and their warm-up under a faulty backend and Ctrl-C: every request is in the records."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from benchmint.core.clock import now_ns
from benchmint.llm.types import GenRequest, RequestRecord


class Raising:
    """Raises on every request whose id is in ``bad`` (a third-party backend's bug); answers the rest."""

    kind = "raising"

    def __init__(self, bad=lambda i: True, delay_s: float = 0.0):
        self.bad, self.delay_s = bad, delay_s

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def generate(self, req: GenRequest, on_first_token=None) -> RequestRecord:
        await asyncio.sleep(self.delay_s)
        if self.bad(req.id):
            raise OverflowError("Python int too large to convert to C long")
        t = now_ns()
        return RequestRecord(id=req.id, sent_ns=t, first_token_ns=t, end_ns=t, text=" ok", output_tokens=1)


def test_a_raising_backend_fails_the_session_turn_not_the_run():
    from benchmint.llm.schedule import make_schedule
    from benchmint.llm.sessions import drive_sessions, synthetic_sessions

    ss = synthetic_sessions(3, "2", "4", "2", "0", None, seed=1)
    recs: list[RequestRecord] = []
    sched = make_schedule("concurrency", concurrency=2, num_requests=3)
    asyncio.run(drive_sessions(Raising(), ss, sched, asyncio.Event(), recs))
    # each session's first turn fails (kind other) and ends its session
    assert len(recs) == 3 and {r.error_kind for r in recs} == {"other"}
    assert "OverflowError" in recs[0].error and {r.session_id for r in recs} == {0, 1, 2}


def test_a_raising_backend_fails_ramp_requests_not_the_run():
    from benchmint.llm.ramp import concurrency_ramp_schedule, drive_concurrency_ramp

    sched = concurrency_ramp_schedule(1, 2, 0.2)
    recs: list[RequestRecord] = []
    tpl = [GenRequest(id=0, prompt="x", max_tokens=1)]
    asyncio.run(drive_concurrency_ramp(Raising(lambda i: i % 2 == 1, 0.005), sched, tpl, asyncio.Event(), recs))
    failed = [r for r in recs if not r.ok]
    assert failed and len(failed) < len(recs) and {r.error_kind for r in failed} == {"other"}


def test_a_raising_backend_fails_a_warmup_request_not_the_run():
    from benchmint.llm import traffic
    from benchmint.llm.ramp import concurrency_ramp_schedule
    from benchmint.llm.workload import Workload

    sched = concurrency_ramp_schedule(1, 1, 0.05)
    tpl = [GenRequest(id=0, prompt="x", max_tokens=1)]
    warm = [GenRequest(id=-1, prompt="w", max_tokens=1)]
    cfg = SimpleNamespace(ignore_eos=True)
    recs, _, _ = asyncio.run(traffic.drive(cfg, Raising(lambda i: i == -1), sched, Workload("t", tpl), warm,
                                           asyncio.Event()))
    w = [r for r in recs if r.warmup]
    assert len(w) == 1 and w[0].error_kind == "other"

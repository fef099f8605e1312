"""One request through a backend, always as a record; the record of a request Ctrl-C stopped.

Every driver (:mod:`benchmint.llm.bench`'s open and closed loops, :mod:`benchmint.llm.sessions`, the
concurrency ramp in :mod:`benchmint.llm.ramp`, the warm-up in :mod:`benchmint.llm.traffic`) sends through
:func:`generate`, so a backend's exception is a failed record (kind ``other``) rather than a lost request or a
crashed run, and records what Ctrl-C stops with :func:`cancelled`, so ``requests.scheduled`` stays
completed + failed + cancelled.
"""

from __future__ import annotations

import asyncio
from typing import Any

from benchmint.core.clock import now_ns
from benchmint.llm.types import GenRequest, RequestRecord


async def generate(gen: Any, req: GenRequest) -> RequestRecord:
    """One request through the backend, always as a record: an exception a backend lets out gives a failed
    record, so that no answer can take a request out of the records or stop a worker."""
    sent = now_ns()
    try:
        return await gen(req)
    except Exception as e:  # a third-party backend's bug must not lose the request, nor the run
        rec = RequestRecord(id=req.id, input_tokens=req.input_tokens, sent_ns=sent, end_ns=now_ns())
        rec.error_kind, rec.error = "other", f"the backend failed: {type(e).__name__}: {e}"
        return rec


def cancelled(req: GenRequest, scheduled_ns: int, *, sent: bool | BaseException) -> RequestRecord:
    """The record of a request that Ctrl-C stopped: in flight (``sent``; its send time is the scheduled one,
    the backend's own record is lost with the cancelled task) or before it was sent. ``sent`` may be the
    cancellation the backend let out: one that reached it while it waited for a connection
    (:func:`~benchmint.llm.types.mark_not_sent`) was not sent. No end time: a cancelled request does not stretch
    the run's duration."""
    if isinstance(sent, BaseException):
        sent = not getattr(sent, "benchmint_not_sent", False)
    rec = RequestRecord(id=req.id, input_tokens=req.input_tokens, scheduled_ns=scheduled_ns)
    rec.sent_ns = scheduled_ns if sent else 0
    rec.error_kind = "cancelled"
    rec.error = "stopped by Ctrl-C while in flight" if sent else "stopped by Ctrl-C before it was sent"
    return rec


async def wait_or_cancel(tasks: list[Any], stop: asyncio.Event) -> None:
    """Wait for ``tasks``; when ``stop`` is set (Ctrl-C), cancel those still running."""
    waiter = asyncio.ensure_future(stop.wait())
    pending: set[Any] = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending | {waiter}, return_when=asyncio.FIRST_COMPLETED)
        pending.discard(waiter)
        if waiter in done:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            break
    waiter.cancel()
    for t in tasks:  # a bug in a task must not vanish
        if t.done() and not t.cancelled() and t.exception() is not None:
            raise t.exception()

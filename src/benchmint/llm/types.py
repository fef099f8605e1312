"""The contract between workloads, the scheduler, backends, metrics and the LoadGen adapter.

A backend turns a :class:`GenRequest` into a :class:`RequestRecord`. All times are monotonic nanoseconds from
:func:`benchmint.core.clock.now_ns`. The scheduler fills ``scheduled_ns``; the backend fills the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


def mark_not_sent(e: asyncio.CancelledError) -> asyncio.CancelledError:
    """Mark a cancellation (Ctrl-C) that reached a request while it waited in the client for a connection (the
    process's cap on open connections, ``llm/backends/open_files.py``): it was never sent, and its record says
    so (:func:`benchmint.llm.requests_driver.cancelled`). The same exception goes on, so that asyncio's own
    handling of a cancellation (timeouts, task groups) is unchanged."""
    e.benchmint_not_sent = True  # type: ignore[attr-defined]
    return e


@dataclass
class GenRequest:
    id: int
    prompt: str | list[dict[str, str]]  # a completion prompt, or chat messages
    max_tokens: int
    input_tokens: int | None = None  # known prompt length in tokens, when the workload tokenized it
    reference: str | None = None  # reference answer, for accuracy
    ignore_eos: bool = True  # ask the server to generate exactly max_tokens when it supports it
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RequestRecord:
    id: int
    scheduled_ns: int = 0
    sent_ns: int = 0
    first_token_ns: int | None = None
    chunk_ns: list[int] = field(default_factory=list)  # arrival time of each streamed chunk with content
    end_ns: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    output_tokens_source: str | None = None  # usage | tokenizer | chunks | engine
    chunk_count: int = 0
    text: str = ""
    # connect | timeout | http_4xx | http_5xx | reset | malformed | stream_error | cancelled | other
    # | worker_lost (a load worker of llm bench --workers/--ray died before it reported the request)
    error_kind: str | None = None
    error: str | None = None
    warmup: bool = False
    token_count_flag: str | None = None  # set when chunk count, server usage and tokenizer disagree
    tokenizer_tokens: int | None = None  # output text re-counted with the tokenizer after the run, when checked
    session_id: int | None = None  # multi-turn sessions (llm.sessions): the session and the turn's index in it
    turn: int | None = None
    http_status: int | None = None  # the status of an HTTP error answer

    @property
    def ok(self) -> bool:
        return self.error_kind is None


FirstTokenHook = Callable[[RequestRecord], None]


class Backend(Protocol):
    """What the scheduler and the LoadGen adapter drive. Implementations are registered by ``kind``."""

    kind: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def generate(self, req: GenRequest, on_first_token: FirstTokenHook | None = None) -> RequestRecord:
        """Send one request; call ``on_first_token`` as soon as the first token arrives."""
        ...

"""A simulated LLM engine: a fixed number of slots, a prefill time and a per-token time, no model.

It implements the :class:`benchmint.llm.types.Backend` protocol with ``asyncio.sleep``, so a LoadGen setup,
``--plan`` and the peak search can be checked in seconds, and it behaves like a real engine under load:
requests beyond ``slots`` wait in a queue, so TTFT grows as the offered rate nears capacity
(``slots / (ttft_s + tpot_s * (tokens - 1))`` requests per second).
"""

from __future__ import annotations

import asyncio
from typing import Any

from benchmint.core.clock import now_ns
from benchmint.core.errors import UserError
from benchmint.llm.types import FirstTokenHook, GenRequest, RequestRecord


class SimulatedBackend:
    kind = "sim"

    def __init__(self, ttft_s: float = 0.02, tpot_s: float = 0.002, slots: int = 64, fail_every: int = 0):
        self.ttft_s = float(ttft_s)
        self.tpot_s = float(tpot_s)
        self.slots = int(slots)
        self.fail_every = int(fail_every)  # every n-th request fails (0: never), to exercise error paths
        self._sem: asyncio.Semaphore | None = None
        self._n = 0

    async def start(self) -> None:
        self._sem = asyncio.Semaphore(self.slots)

    async def close(self) -> None:
        self._sem = None

    async def generate(self, req: GenRequest, on_first_token: FirstTokenHook | None = None) -> RequestRecord:
        if self._sem is None:
            await self.start()
        assert self._sem is not None
        rec = RequestRecord(id=req.id, sent_ns=now_ns(), input_tokens=req.input_tokens)
        self._n += 1
        nth = self._n
        async with self._sem:
            await asyncio.sleep(self.ttft_s)
            if self.fail_every and nth % self.fail_every == 0:
                rec.error_kind, rec.error, rec.end_ns = "other", "simulated failure", now_ns()
                return rec
            words = []
            n = max(1, req.max_tokens)
            for i in range(n):
                if i:
                    await asyncio.sleep(self.tpot_s)
                t = now_ns()
                words.append(f"w{i}")
                rec.chunk_ns.append(t)
                if i == 0:
                    rec.first_token_ns = t
                    if on_first_token is not None:
                        on_first_token(rec)
            rec.end_ns = now_ns()
            rec.chunk_count = n
            rec.output_tokens = n
            rec.output_tokens_source = "engine"
            rec.text = " ".join(words)
        return rec


def parse_sim(spec: str | None) -> dict[str, Any]:
    """``--sim ttft=0.02,tpot=0.005,slots=4`` -> options of the simulated engine."""
    out: dict[str, Any] = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        k, _, v = part.partition("=")
        k = k.strip()
        try:
            if k in ("ttft", "tpot"):
                out[f"{k}_s"] = float(v)
            elif k in ("slots", "fail_every"):
                out[k] = int(v)
            else:
                raise ValueError
        except ValueError:
            raise UserError(f"--sim {spec!r}: use ttft=SECONDS,tpot=SECONDS,slots=N") from None
    return out

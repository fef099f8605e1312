"""Learn which OpenAI-API extensions a server accepts, from its own rejections, and say what dropping them means.

benchmint asks for more than the OpenAI API by default: ``ignore_eos`` (exactly ``max_tokens`` tokens, as
vLLM, SGLang, llama.cpp and the built-in server take), ``stream_options.include_usage`` (the token counts in
the stream) and, when a workload or ``extra_body`` asks, ``min_tokens``. A strict server (``transformers
serve``, a pydantic model with ``extra="forbid"``) answers such a request with a 400/422 that names the field.
:class:`RequestAdapter` reads that answer: the extension fields it names are dropped from every later request,
and the rejected request is sent once more without them. What was dropped, when, what the server said and what
it means for the figures is kept for the result (``request_adaptation``) and the console.

Only the extension fields below are ever dropped: a rejected ``model``, ``prompt`` or a field the user set on
purpose stays a failed request with the server's own words.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

# extension field -> what the run's figures mean once the server has refused it
EXTENSIONS: dict[str, str] = {
    "ignore_eos": "output lengths are no longer fixed: the model may stop at its end-of-sequence token before "
    "max_tokens, so output tokens per request vary and TPOT/throughput are over the lengths it chose",
    "min_tokens": "no minimum output length: requests may end after fewer tokens than asked",
    "stream_options": "usage is no longer asked for in the stream: output tokens are counted from usage only if "
    "the server sends it anyway, else with the tokenizer, else as content chunks",
}
REJECTION_STATUSES = (400, 422)
MAX_EXAMPLES = 5


class RequestAdapter:
    """Extension fields this server has rejected (shared by every request of one backend)."""

    def __init__(self, enabled: bool = True, fields: tuple[str, ...] = tuple(EXTENSIONS)):
        self.enabled = enabled
        self.fields = fields
        self.dropped: dict[str, dict[str, Any]] = {}
        self.retried = 0
        self.retried_ok = 0
        self.retried_ids: list[int] = []
        self._patterns = {f: re.compile(r"(?<![A-Za-z0-9_])" + re.escape(f) + r"(?![A-Za-z0-9_])") for f in fields}

    def strip(self, body: dict[str, Any]) -> None:
        """Remove the fields the server rejected from a request body (in place)."""
        for k in self.dropped:
            body.pop(k, None)

    def learn(self, status: int, text: str, sent: bytes, request_id: int) -> list[str]:
        """The extension fields a rejection names among those sent; recorded as dropped. [] when the answer is
        not such a rejection (other status, no named extension, adaptation off)."""
        if not self.enabled or status not in REJECTION_STATUSES:
            return []
        try:
            body = orjson.loads(sent)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(body, dict):
            return []
        named = [f for f in self.fields if f in body and self._patterns[f].search(text)]
        for f in named:
            self.dropped.setdefault(f, {
                "meaning": EXTENSIONS.get(f, "the server does not take this field"),
                "server_said": " ".join(text.split())[:300],
                "first_rejected_request": request_id,
            })
        return named

    def note_retry(self, request_id: int, ok: bool) -> None:
        self.retried += 1
        self.retried_ok += ok
        if len(self.retried_ids) < MAX_EXAMPLES:
            self.retried_ids.append(request_id)

    def describe(self) -> dict[str, Any]:
        """The ``request_adaptation`` block of a result."""
        return {
            "enabled": self.enabled,
            "how": "learned from the server's 400/422 answers naming an extension field; the rejected request is "
            "sent once more without it (its send lag and anchored latencies include the rejection)",
            "dropped_fields": sorted(self.dropped),
            "by_field": self.dropped,
            "retried_requests": self.retried,
            "retried_completed": self.retried_ok,
            "retried_examples": self.retried_ids,
        }


def adaptation_lines(block: dict[str, Any] | None) -> list[str]:
    """Console lines for a result's ``request_adaptation`` block (none when nothing was adapted)."""
    if not block or not block.get("dropped_fields"):
        return []
    lines = [
        f"adapted to the server: dropped {', '.join(block['dropped_fields'])} "
        f"({block['retried_requests']} rejected requests sent again, {block['retried_completed']} completed)"
    ]
    for f in block["dropped_fields"]:
        lines.append(f"  without {f}: {block['by_field'][f]['meaning']}")
    return lines

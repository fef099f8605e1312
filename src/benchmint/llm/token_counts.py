"""Output token counts that need the tokenizer, made after the run, never on the event loop while requests are
in flight (a tokenizer call holds the loop, and every other stream's chunk timestamps with it).

During the run the HTTP backend only marks an answer the server sent no usage for (``output_tokens`` None,
``output_tokens_source`` ``"tokenizer"``, see :func:`pending`); :func:`count_after_run` then counts all of them
in one batched tokenizer call, and re-counts the usage-counted answers to compare with the server's figure.
The LoadGen SUT, which must give LoadGen each answer's token count as the answer completes, counts a pending
answer in a worker thread (``asyncio.to_thread``), off the event loop.

What is flagged (``token_count_flag``, counted in ``token_counts.flagged``) is what means something:

- the server's own figures contradict each other: more streamed content chunks than its usage says (each
  chunk holds at least one token; ``chunks>usage``, set by the backend), or its usage is not a token count
  (``usage ignored``);
- its usage claims more tokens than the answer's text holds: the tokenizer's re-count is below usage by more
  than max(2 tokens, 10 %) (``usage>text``): the usage figure counts something else (the prompt too, a fixed
  ``max_tokens`` for an answer that stopped early) or ``--tokenizer`` is not the model's.

A re-count *above* usage is not flagged: decoding token ids and encoding the text again gives more tokens, not
fewer (bytes of a split character come back as U+FFFD, the pre-tokenizer splits where the model did not). On
the tiny model's random output the re-count was 17-25 % above usage in the median and up to 75 % above, and
never below it (150 answers of 16-64 random ids); on a real model's text the two nearly agree. Every re-count
is still in ``requests.parquet`` (``tokenizer_tokens``) and summarized in ``token_counts.tokenizer_vs_usage``
(``mismatched``: beyond the tolerance either way; ``usage_over_text``: the flagged ones; the median
relative difference).
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmint.llm.types import RequestRecord

PENDING_SOURCE = "tokenizer"  # output_tokens None with this source: to be counted after the run
REL_TOL = 0.1  # per answer: a difference within max(2 tokens, 10 %) is the re-tokenization's own


def pending(r: RequestRecord) -> bool:
    """An answer whose output tokens are still to be counted with the tokenizer."""
    return r.ok and r.output_tokens is None and r.output_tokens_source == PENDING_SOURCE


def _count(tokenizer: Any, texts: list[str]) -> list[int]:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [len(x) for x in ids]


def count_pending(records: list[RequestRecord], tokenizer: Any) -> int:
    """Count the pending answers with the tokenizer (one batched call); where that fails, fall back to one
    token per content chunk, as without a tokenizer. Returns how many were counted with the tokenizer."""
    recs = [r for r in records if pending(r)]
    if not recs:
        return 0
    try:
        counts = _count(tokenizer, [r.text for r in recs]) if tokenizer is not None else None
    except Exception:  # a tokenizer that cannot batch or count: the chunks are still a lower bound
        counts = None
    if counts is None:
        for r in recs:
            r.output_tokens, r.output_tokens_source = r.chunk_count, "chunks"
        return 0
    for r, n in zip(recs, counts, strict=True):
        r.output_tokens = n
    return len(recs)


def check_usage(records: list[RequestRecord], tokenizer: Any, rel_tol: float = REL_TOL) -> dict | None:
    """Re-count each usage-counted answer with the tokenizer (``tokenizer_tokens``) and compare with the
    server's usage; flag the answers whose usage claims more tokens than their text holds (see the module's
    docstring for why only those)."""
    if tokenizer is None:
        return None
    recs = [r for r in records if r.ok and r.output_tokens_source == "usage" and r.text]
    if not recs:
        return {"checked": 0, "mismatched": 0, "usage_over_text": 0}
    try:
        counts = _count(tokenizer, [r.text for r in recs])
    except Exception as e:  # a tokenizer that cannot batch or count: say so rather than fail the run
        return {"checked": 0, "mismatched": 0, "usage_over_text": 0, "error": f"{type(e).__name__}: {e}"}
    mismatched = over = 0
    rel: list[float] = []
    for r, n in zip(recs, counts, strict=True):
        r.tokenizer_tokens = n
        usage = r.output_tokens or 0
        rel.append((n - usage) / max(usage, 1))
        tol = max(2, rel_tol * usage)
        if abs(n - usage) > tol:
            mismatched += 1
        if usage - n > tol:
            over += 1
            if r.token_count_flag is None:
                r.token_count_flag = f"usage>text (usage says {usage}, the tokenizer counts {n} in the text)"
    return {"checked": len(recs), "mismatched": mismatched, "usage_over_text": over,
            "median_relative_difference": statistics.median(rel),
            "tolerance": f"more than max(2, {rel_tol:g} x usage) tokens; flagged only where usage is the larger"}


def count_after_run(records: list[RequestRecord], tokenizer: Any) -> dict | None:
    """The post-run pass: count the answers the server sent no usage for, then check the usage figures.
    Returns the ``token_counts.tokenizer_vs_usage`` block (None without a tokenizer)."""
    count_pending(records, tokenizer)
    return check_usage(records, tokenizer)

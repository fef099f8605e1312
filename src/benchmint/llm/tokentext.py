"""Text built from whole tokens, so that synthesized prompts have exact token counts and exact shared prefixes.

The vocabulary is the model's own tokens that decode to a space followed by ASCII letters (`` the``,
`` cache``) and encode back to that one token: a pre-tokenizer that splits on spaces (byte-level BPE, the
GPT-2/Llama-3 family, benchmint's tiny model) then keeps every piece whole, so ``k`` pieces joined are exactly
``k`` tokens and two prompts that start with the same ``P`` pieces share exactly ``P`` tokens. Without a
tokenizer the pieces are words of the shipped sample text and counts are words, not tokens (``exact`` says
which).

Pieces are chosen by a seeded numpy generator over the vocabulary sorted by token id: the same seed and the
same tokenizer give the same text on any machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmint.core.errors import UserError

_CACHE: dict[int, tuple[Any, TokenText]] = {}


class TokenText:
    def __init__(self, tokenizer: Any = None):
        self.exact = tokenizer is not None
        self.pieces: list[str] = _safe_pieces(tokenizer) if tokenizer is not None else _sample_words()
        if len(self.pieces) < 16:
            raise UserError("the tokenizer has too few plain-word tokens to synthesize prompts from")

    @classmethod
    def of(cls, tokenizer: Any) -> TokenText:
        """One instance per tokenizer (finding the vocabulary costs a pass over it)."""
        hit = _CACHE.get(id(tokenizer))
        if hit is not None and hit[0] is tokenizer:
            return hit[1]
        tt = cls(tokenizer)
        _CACHE[id(tokenizer)] = (tokenizer, tt)
        return tt

    @property
    def size(self) -> int:
        return len(self.pieces)

    def random(self, n: int, rng: np.random.Generator) -> list[int]:
        """``n`` piece indices drawn uniformly."""
        return rng.integers(0, self.size, max(0, int(n))).tolist()

    def text(self, idx: list[int]) -> str:
        return "".join(self.pieces[i] for i in idx)


def _safe_pieces(tok: Any) -> list[str]:
    n = int(getattr(tok, "vocab_size", 0) or len(tok))
    ids = list(range(n))
    strs = tok.batch_decode([[i] for i in ids])
    cand = [(i, s) for i, s in zip(ids, strs, strict=True)
            if len(s) >= 3 and s[0] == " " and s[1:].isascii() and s[1:].isalpha()]
    if not cand:
        return []
    enc = tok([s for _, s in cand], add_special_tokens=False)["input_ids"]
    return [s for (i, s), e in zip(cand, enc, strict=True) if list(e) == [i]]


def _sample_words() -> list[str]:
    from benchmint.llm.workload import sample_rows

    words: set[str] = set()
    for r in sample_rows():
        for k in ("instruction", "input", "reference"):
            words.update(w for w in str(r.get(k) or "").split() if w.isascii() and w.isalpha())
    return [" " + w for w in sorted(words)]

"""Model facts (parameters, layers, heads, experts) from ``benchmint/data/models.csv``, matched by name.

Records carry a free-text model name (``llama2-70b-99.9``, ``Llama-3.3-70B-Instruct-FP8-dynamic``); the family's
architecture figures come from this table, and a record's own figures (``workload.parameter_count``, ...) win
when it has them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from benchmint.learn.specs import longest_match, name_table, normalize_text

FIELDS = ("params_b", "active_params_b", "layers", "hidden", "heads", "kv_heads", "head_dim", "kv_elems", "experts",
          "active_experts")


@dataclass(frozen=True)
class ModelFacts:
    family: str
    facts: dict[str, float | None]
    architecture: str
    source: str


@lru_cache(maxsize=1)
def model_table() -> tuple[tuple[re.Pattern[str], ModelFacts], ...]:
    return name_table("models.csv", "family", lambda r: ModelFacts(
        r["family"], {k: float(r[k]) if r[k].strip() else None for k in FIELDS}, r["architecture"], r["source"]))


@lru_cache(maxsize=4096)
def find_model(name: str | None) -> ModelFacts | None:
    if not name or not isinstance(name, str):
        return None
    return longest_match(normalize_text(name), model_table())


def model_family(name: str | None) -> str | None:
    """The family a model name belongs to (``llama2-70b-interactive-99.9`` -> ``llama2-70b``); for a name not
    in the table, the name without MLPerf's accuracy and variant suffixes."""
    facts = find_model(name)
    if facts:
        return facts.family
    if not name or not isinstance(name, str):
        return None
    base = re.sub(r"[-_](interactive|99\.9|99|fp8\w*|fp4\w*|int[48]\w*)(?=$|[-_])", "", name.lower())
    return re.sub(r"[-_](interactive|99\.9|99)$", "", base) or None

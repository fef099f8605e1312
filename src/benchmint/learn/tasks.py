"""Benchmark tasks (``benchmint/data/tasks.csv``): the token lengths each MLPerf LLM task feeds the model.

A result's task is its MLPerf benchmark name (``llama2-70b-interactive-99.9`` -> ``llama2-70b``), or, when the
record has none, its model name (an official result of ``gptj-99`` runs the gptj task). The lengths matter for the
roofline prior: gptj summarizes ~800-token articles into ~70 tokens (prefill-heavy, compute-bound) while
deepseek-r1 writes ~3900 tokens per question (decode-heavy, memory-bound). A run's own recorded lengths win.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from benchmint.learn.specs import longest_match, name_table, normalize_text


@dataclass(frozen=True)
class Task:
    task: str
    input_tokens: float | None
    output_tokens: float | None
    input_basis: str
    source: str


def _num(v: str | None) -> float | None:
    v = (v or "").strip()
    return float(v) if v else None


@lru_cache(maxsize=1)
def task_table() -> tuple[tuple[re.Pattern[str], Task], ...]:
    return name_table("tasks.csv", "task", lambda r: Task(
        r["task"], _num(r["input_tokens_mean"]), _num(r["output_tokens_mean"]), r["input_basis"], r["source"]))


@lru_cache(maxsize=4096)
def find_task(name: str | None) -> Task | None:
    """The task row for an MLPerf benchmark (or model) name; None when no row matches."""
    if not name or not isinstance(name, str):
        return None
    return longest_match(normalize_text(name), task_table())

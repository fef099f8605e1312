"""Small data samples shipped with benchmint (no downloads needed).

``instruct_sample.jsonl``: 130 instruction-following prompts with reference answers (open questions,
arithmetic, sorting, rewriting, counting), written for benchmint and released under the project's licence
(Apache-2.0). Columns: ``id``, ``instruction``, ``input``, ``reference``, ``category``.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).parent
INSTRUCT_SAMPLE = DATA_DIR / "instruct_sample.jsonl"


def instruct_sample_path() -> Path:
    """Path of the shipped instruction-following sample (JSONL)."""
    return INSTRUCT_SAMPLE

"""Workloads: the prompts a run sends, with their token lengths and reference answers.

Sources: ``sample`` (the instruction sample shipped in :mod:`benchmint.data`), ``synthetic`` (prompts with
input/output token lengths drawn from distributions), a local ``.jsonl``/``.json``/``.csv``/``.parquet`` file,
or a Hugging Face dataset name (through ``datasets``; needs network unless cached). A column mapping picks the
prompt, optional extra input and reference columns; ShareGPT-style ``conversations``/``messages`` lists use
their first user turn. For the completions API the tokenizer's chat template is applied when it has one.

Token-length distributions (``--input-tokens``/``--output-tokens``): ``128`` (fixed), ``128:32`` (normal,
mean:std, at least 1), ``64-256`` (uniform integers, inclusive).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmint.core.errors import UserError
from benchmint.llm.types import GenRequest

PROMPT_COLUMNS = ("prompt", "instruction", "question", "query", "input", "text", "conversations", "messages")
REFERENCE_COLUMNS = ("reference", "output", "response", "answer", "completion", "target")


@dataclass(frozen=True)
class LengthDist:
    spec: str
    kind: str  # fixed | normal | uniform
    a: float
    b: float = 0.0

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, int(self.a), dtype=np.int64)
        if self.kind == "normal":
            return np.maximum(1, np.rint(rng.normal(self.a, self.b, n))).astype(np.int64)
        return rng.integers(int(self.a), int(self.b) + 1, n).astype(np.int64)

    @property
    def mean(self) -> float:
        return self.a if self.kind != "uniform" else (self.a + self.b) / 2


def parse_length(spec: str | int | None, what: str = "--input-tokens") -> LengthDist | None:
    """``128`` | ``128:32`` (normal mean:std) | ``64-256`` (uniform)."""
    if spec is None or spec == "":
        return None
    s = str(spec).strip()
    try:
        if ":" in s:
            m, sd = s.split(":", 1)
            d = LengthDist(s, "normal", float(m), float(sd))
        elif "-" in s:
            lo, hi = s.split("-", 1)
            d = LengthDist(s, "uniform", float(lo), float(hi))
            if d.b < d.a:
                raise ValueError
        else:
            d = LengthDist(s, "fixed", float(int(s)))
    except ValueError:
        raise UserError(f"{what} {s!r}: use N, MEAN:STD or LO-HI (token counts)") from None
    if d.a < 1:
        raise UserError(f"{what} {s!r}: token counts must be at least 1")
    return d


@dataclass
class Workload:
    name: str
    requests: list[GenRequest]  # templates; the runner cycles through them
    source: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        ins = [r.input_tokens for r in self.requests if r.input_tokens is not None]
        outs = [r.max_tokens for r in self.requests]
        return {
            "dataset": self.name,
            "prompts": len(self.requests),
            "input_tokens_mean": float(np.mean(ins)) if ins else None,
            "max_tokens_mean": float(np.mean(outs)) if outs else None,
            **self.source,
        }


def sample_rows() -> list[dict[str, Any]]:
    from benchmint.data import instruct_sample_path

    with open(instruct_sample_path(), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")


def _read_rows(dataset: str, split: str, config: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    p = Path(dataset).expanduser()
    if p.exists():
        suffix = p.suffix.lower()
        try:
            if suffix in (".jsonl", ".ndjson"):
                with open(p, encoding="utf-8") as f:
                    rows = [json.loads(line) for line in f if line.strip()]
            elif suffix == ".json":
                data = json.loads(p.read_text(encoding="utf-8"))
                rows = data if isinstance(data, list) else data.get("data") or data.get("rows") or []
            elif suffix in (".csv", ".tsv"):
                import pandas as pd

                rows = pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",").to_dict("records")
            elif suffix == ".parquet":
                import pyarrow.parquet as pq

                rows = pq.read_table(p).to_pylist()
            else:
                raise UserError(f"{p}: unknown dataset format {suffix!r}; use .jsonl, .json, .csv or .parquet")
        except (OSError, ValueError) as e:
            raise UserError(f"{p}: cannot read the dataset ({type(e).__name__}: {e})") from None
        h = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        return rows, {"dataset_path": str(p), "dataset_hash": h}
    if p.suffix.lower() in DATA_SUFFIXES or dataset.startswith(("./", "../", "/", "~")):
        # a file that is not there: no hub dataset is named so (a misspelled path spent 30 s in the hub's retries)
        raise UserError(f"dataset {dataset!r}: no such file; give an existing .jsonl/.json/.csv/.parquet file, "
                        "'sample', 'synthetic' or a Hugging Face dataset name")
    try:
        import datasets

        ds = datasets.load_dataset(dataset, config, split=split)
    except Exception as e:  # hub errors come in many types
        raise UserError(
            f"dataset {dataset!r} is neither a local file nor a loadable Hugging Face dataset "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); give a .jsonl/.csv/.parquet path, 'sample' or 'synthetic'"
        ) from None
    return [dict(r) for r in ds], {"dataset_hf": dataset, "dataset_config": config, "split": split}


def _first_user_turn(v: Any) -> str | None:
    if isinstance(v, list):
        for m in v:
            if isinstance(m, dict):
                role = m.get("role") or m.get("from")
                if role in ("user", "human"):
                    return str(m.get("content") or m.get("value") or "")
    return None


def _prompt_of(row: dict[str, Any], col: str, input_col: str | None) -> str:
    v = row.get(col)
    if isinstance(v, list):
        t = _first_user_turn(v)
        if t is None:
            raise UserError(f"column {col!r} holds a list without a user turn; pick another with --prompt-column")
        return t
    text = "" if v is None else str(v)
    if input_col and row.get(input_col):
        text = f"{text}\n\n{row[input_col]}"
    return text


def load_workload(
    dataset: str = "sample",
    *,
    api: str = "completions",
    tokenizer: Any = None,
    num_prompts: int | None = None,
    input_tokens: str | int | None = None,
    output_tokens: str | int | None = 64,
    prompt_column: str | None = None,
    input_column: str | None = None,
    reference_column: str | None = None,
    system_prompt: str | None = None,
    chat_template: bool = True,
    split: str = "train",
    dataset_config: str | None = None,
    seed: int = 0,
    ignore_eos: bool = True,
    prompt_hook: Any = None,
) -> Workload:
    """Build the workload's request templates (ids 0..n-1)."""
    rng = np.random.default_rng(seed)
    out_dist = parse_length(output_tokens, "--output-tokens") or parse_length(64)
    assert out_dist is not None
    if dataset == "synthetic":
        in_dist = parse_length(input_tokens, "--input-tokens") or parse_length(128)
        assert in_dist is not None
        n = num_prompts or 256
        prompts, counts = _synthetic_prompts(n, in_dist, tokenizer, rng)
        refs: list[str | None] = [None] * n
        source = {"synthetic_input_tokens": in_dist.spec, "input_tokens_exact": tokenizer is not None}
        name = "synthetic"
    else:
        if dataset == "sample":
            rows, source = sample_rows(), {"dataset_path": "benchmint/data/instruct_sample.jsonl"}
            prompt_column = prompt_column or "instruction"
            input_column = input_column or "input"
            reference_column = reference_column or "reference"
        else:
            rows, source = _read_rows(dataset, split, dataset_config)
        if not rows:
            raise UserError(f"dataset {dataset!r} has no rows")
        cols = list(rows[0].keys())
        pc = prompt_column or next((c for c in PROMPT_COLUMNS if c in cols), None)
        if pc is None or pc not in cols:
            raise UserError(
                f"dataset {dataset!r}: no prompt column {prompt_column or ''!s} (columns: {', '.join(map(str, cols))}); "
                "name it with --prompt-column"
            )
        if pc == "instruction" and input_column is None and "input" in cols:
            input_column = "input"
        rc = reference_column or next((c for c in REFERENCE_COLUMNS if c in cols and c != pc), None)
        if num_prompts:
            rows = rows[:num_prompts]
        prompts = [_prompt_of(r, pc, input_column) for r in rows]
        refs = [str(r[rc]) if rc and r.get(rc) is not None else None for r in rows]
        counts = None
        name = dataset
        source = {**source, "prompt_column": pc, "reference_column": rc}
    if prompt_hook is not None:  # e.g. shared prefixes (llm.prefixes): (prompts, counts) -> (prompts, counts)
        prompts, counts = prompt_hook(prompts, counts if dataset == "synthetic" else None)
    max_toks = out_dist.sample(len(prompts), rng)
    use_template = api == "completions" and chat_template and dataset != "synthetic"
    use_template = use_template and tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
    reqs: list[GenRequest] = []
    for i, (p, ref) in enumerate(zip(prompts, refs, strict=True)):
        msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": p}]
        if api == "chat":
            prompt: str | list[dict[str, str]] = msgs
        elif use_template:
            prompt = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        else:
            prompt = p if not system_prompt else f"{system_prompt}\n\n{p}"
        reqs.append(GenRequest(id=i, prompt=prompt, max_tokens=int(max_toks[i]), reference=ref, ignore_eos=ignore_eos))
    if counts is None and tokenizer is not None:
        counts = _count_prompt_tokens(tokenizer, [r.prompt for r in reqs])
    if counts is not None:
        for r, c in zip(reqs, counts, strict=True):
            r.input_tokens = int(c)
    source.update({"output_tokens": out_dist.spec, "chat_template_applied": use_template, "api": api})
    return Workload(name=name, requests=reqs, source=source)


def _count_prompt_tokens(tokenizer: Any, prompts: list[Any]) -> list[int]:
    out = []
    for p in prompts:
        if isinstance(p, list):
            try:
                ids = tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True)
                ids = ids["input_ids"] if hasattr(ids, "keys") else ids
                out.append(len(ids))
                continue
            except Exception:
                p = "\n".join(m["content"] for m in p)
        out.append(len(tokenizer(p, add_special_tokens=False)["input_ids"]))
    return out


def _synthetic_prompts(
    n: int, dist: LengthDist, tokenizer: Any, rng: np.random.Generator
) -> tuple[list[str], list[int] | None]:
    """Prompts cut from the shipped text at random offsets, ``dist`` tokens long (words when no tokenizer)."""
    corpus = " ".join(
        " ".join(str(r.get(k) or "") for k in ("instruction", "input", "reference")) for r in sample_rows()
    )
    lengths = dist.sample(n, rng)
    if tokenizer is None:
        words = corpus.split()
        prompts = []
        for k in lengths:
            start = int(rng.integers(0, len(words)))
            prompts.append(" ".join(words[(start + j) % len(words)] for j in range(int(k))))
        return prompts, None
    ids = tokenizer(corpus, add_special_tokens=False)["input_ids"]
    prompts, counts = [], []
    for k in lengths:
        start = int(rng.integers(0, len(ids)))
        piece = [ids[(start + j) % len(ids)] for j in range(int(k))]
        text = tokenizer.decode(piece)
        prompts.append(text)
        counts.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return prompts, counts

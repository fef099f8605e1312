"""Accuracy of generated text: ROUGE-1/2/L/Lsum, exact match, tokens per sample, MLPerf targets.

ROUGE is computed the way the MLPerf LLM reference evaluations do: ``rouge-score`` with the Porter stemmer,
per-sample F-measures averaged and scaled by 100, and for ROUGE-Lsum the text split into sentences (one per
line) with nltk's punkt model. punkt's data is a download, so when it is absent a rule-based splitter is used
and the result says which splitter ran (only ROUGE-Lsum depends on it).

``mlperf_log_accuracy.json`` may hold a sample more than once (LoadGen logs every response of an accuracy
run, and a run can issue a sample again); :func:`read_accuracy_log` keeps the first response per ``qsl_idx``
in ``seq_id`` order, as the reference evaluation does, and reports how many it dropped.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmint.core.errors import UserError

# Official accuracy targets (MLPerf Inference submission checker / reference READMEs). ``tokens_per_sample``
# is the mean generated tokens per sample of the reference run; valid submissions stay within the bounds.
ACCURACY_TARGETS: dict[str, dict[str, Any]] = {
    "llama2-70b": {
        "reference": {"rouge1": 44.4312, "rouge2": 22.0352, "rougeL": 28.6162},
        "tokens_per_sample": 294.45,
        "tokens_per_sample_bounds": (0.9, 1.1),
        "levels": (0.99, 0.999),
        "source": "mlcommons/inference tools/submission/submission_checker.py (llama2-70b-99, -99.9)",
    },
    "llama3_1-8b": {
        "reference": {"rouge1": 38.7792, "rouge2": 15.9075, "rougeL": 24.4957, "rougeLsum": 35.793},
        "tokens_per_sample": 8167644 / 13368,  # gen_len 8,167,644 over the 13,368 CNN-DailyMail samples
        "tokens_per_sample_bounds": (0.9, None),
        "levels": (0.99,),
        "source": "mlcommons/inference language/llama3.1-8b reference accuracy (ROUGE on CNN-DailyMail)",
    },
}
ACCURACY_TARGETS["llama2-70b-interactive"] = ACCURACY_TARGETS["llama2-70b"]
ACCURACY_TARGETS["llama3_1-8b-interactive"] = ACCURACY_TARGETS["llama3_1-8b"]

SHORT_ANSWER_WORDS = 5  # references this short are judged by exact match as well


# -- sentence splitting -------------------------------------------------------------------------------------
_ABBREV = {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "u.s", "inc", "ltd", "no"}
_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def _fallback_sentences(text: str) -> list[str]:
    parts = _SPLIT.split(text.strip())
    out: list[str] = []
    for p in parts:
        if out:
            last_word = out[-1].rsplit(None, 1)[-1].rstrip(".").lower() if out[-1].split() else ""
            if last_word in _ABBREV or re.fullmatch(r"[a-z]", last_word):
                out[-1] = out[-1] + " " + p
                continue
        out.append(p)
    return [s for s in out if s]


def sentence_splitter() -> tuple[Callable[[str], list[str]], str]:
    """nltk punkt when its data is installed, else a rule-based splitter; returns (function, name)."""
    try:
        import nltk

        for res in ("tokenizers/punkt_tab", "tokenizers/punkt"):
            try:
                nltk.data.find(res)
                return nltk.sent_tokenize, "nltk-punkt"
            except LookupError:
                continue
    except ImportError:
        pass
    return _fallback_sentences, "rule-based (nltk punkt data not installed)"


# -- metrics --------------------------------------------------------------------------------------------------
def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Mean ROUGE-1/2/L/Lsum F-measures x 100, MLPerf style."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    split, splitter_name = sentence_splitter()
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0, "rougeLsum": 0.0}
    for pred, ref in zip(predictions, references, strict=True):
        pred_s, ref_s = "\n".join(split(pred.strip())), "\n".join(split(ref.strip()))
        scores = scorer.score(ref_s, pred_s)  # rouge-score takes (target, prediction)
        for k in sums:
            sums[k] += scores[k].fmeasure
    n = max(1, len(predictions))
    out: dict[str, Any] = {k: round(v / n * 100, 4) for k, v in sums.items()}
    out["sentence_splitter"] = splitter_name
    out["samples"] = len(predictions)
    return out


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any] | None:
    """Exact match (SQuAD normalization) over samples whose reference is a short answer; None if there are none."""
    pairs = [(p, r) for p, r in zip(predictions, references, strict=True) if len(r.split()) <= SHORT_ANSWER_WORDS]
    if not pairs:
        return None
    exact = sum(normalize_answer(p) == normalize_answer(r) for p, r in pairs)
    contains = sum(normalize_answer(r) in normalize_answer(p) for p, r in pairs if normalize_answer(r))
    return {
        "exact_match": round(100 * exact / len(pairs), 4),
        "answer_contained": round(100 * contains / len(pairs), 4),
        "samples": len(pairs),
        "short_answer_max_words": SHORT_ANSWER_WORDS,
    }


def check_targets(model_key: str | None, scores: dict[str, Any], tokens_per_sample: float | None) -> dict | None:
    """Compare scores with the official targets of an MLPerf model key, at each accuracy level (99%, 99.9%)."""
    t = ACCURACY_TARGETS.get(model_key or "")
    if t is None:
        return None
    levels: dict[str, Any] = {}
    for level in t["levels"]:
        checks = []
        for metric, ref in t["reference"].items():
            need = ref * level
            got = scores.get(metric)
            checks.append({"metric": metric, "value": got, "min": round(need, 4),
                           "passed": got is not None and got >= need})
        lo, hi = t["tokens_per_sample_bounds"]
        tps_ref = t["tokens_per_sample"]
        checks.append({
            "metric": "tokens_per_sample", "value": tokens_per_sample,
            "min": round(tps_ref * lo, 4), "max": round(tps_ref * hi, 4) if hi else None,
            "passed": tokens_per_sample is not None and tokens_per_sample >= tps_ref * lo
            and (hi is None or tokens_per_sample <= tps_ref * hi),
        })
        levels[f"{level * 100:g}%"] = {"passed": all(c["passed"] for c in checks), "checks": checks}
    return {"model_key": model_key, "source": t["source"], "levels": levels}


# -- the accuracy log ---------------------------------------------------------------------------------------
@dataclass
class AccuracyEntries:
    by_index: dict[int, tuple[bytes, int | None]]  # qsl_idx -> (data, token_count)
    total: int
    duplicates_removed: int


def read_accuracy_log(path: str | Path) -> AccuracyEntries:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no accuracy log; run with --mode accuracy first")
    try:
        entries = orjson.loads(p.read_bytes() or b"[]")
    except orjson.JSONDecodeError as e:
        raise UserError(f"{p}: not a LoadGen accuracy log ({e})") from None
    entries = sorted(entries, key=lambda e: e.get("seq_id", 0))
    by_index: dict[int, tuple[bytes, int | None]] = {}
    dup = 0
    for e in entries:
        idx = int(e["qsl_idx"])
        if idx in by_index:
            dup += 1
            continue
        by_index[idx] = (bytes.fromhex(e.get("data", "")), e.get("token_count"))
    return AccuracyEntries(by_index=by_index, total=len(entries), duplicates_removed=dup)


def decode_data(data: bytes, encoding: str = "utf8", tokenizer: Any = None) -> tuple[str, int | None]:
    """Text and token count of one response: UTF-8 text (benchmint's SUT) or int32/int64 token ids."""
    if encoding == "utf8":
        return data.decode("utf-8", "replace"), None
    import numpy as np

    ids = np.frombuffer(data, dtype=np.int32 if encoding == "int32" else np.int64).tolist()
    if tokenizer is None:
        raise UserError("the accuracy log holds token ids: give a tokenizer (the model) to decode them")
    return tokenizer.decode(ids, skip_special_tokens=True), len(ids)


def evaluate(
    predictions: Sequence[str],
    references: Sequence[str | None],
    output_tokens: Sequence[int | None] | None = None,
    model_key: str | None = None,
    reference_tokens_per_sample: float | None = None,
) -> dict[str, Any]:
    """All accuracy figures for aligned predictions and references (samples without a reference are skipped)."""
    pairs = [(p, r, (output_tokens[i] if output_tokens else None))
             for i, (p, r) in enumerate(zip(predictions, references, strict=True)) if r is not None]
    if not pairs:
        raise UserError("no sample has a reference answer; use a dataset with references for accuracy")
    preds = [p for p, _, _ in pairs]
    refs = [r for _, r, _ in pairs]
    toks = [t for _, _, t in pairs if t is not None]
    out: dict[str, Any] = {"samples": len(pairs)}
    out["rouge"] = rouge(preds, refs)
    em = exact_match(preds, refs)
    if em is not None:
        out["exact_match"] = em
    tps = sum(toks) / len(toks) if toks else None
    out["tokens_per_sample"] = tps
    ref_tps = reference_tokens_per_sample
    if ref_tps is None and model_key in ACCURACY_TARGETS:
        ref_tps = ACCURACY_TARGETS[model_key]["tokens_per_sample"]
    out["reference_tokens_per_sample"] = ref_tps
    out["tokens_per_sample_ratio"] = (tps / ref_tps) if (tps and ref_tps) else None
    targets = check_targets(model_key, out["rouge"], tps)
    if targets is not None:
        out["targets"] = targets
    return out


def evaluate_accuracy_log(
    path: str | Path,
    references: Sequence[str | None],
    model_key: str | None = None,
    encoding: str = "utf8",
    tokenizer: Any = None,
    token_counts: dict[int, int] | None = None,
    reference_tokens_per_sample: float | None = None,
) -> dict[str, Any]:
    """Score ``mlperf_log_accuracy.json`` against the dataset's references (indexed by ``qsl_idx``)."""
    log = read_accuracy_log(path)
    preds, refs, toks = [], [], []
    for idx in sorted(log.by_index):
        if idx >= len(references):
            raise UserError(f"{path}: qsl_idx {idx} is outside the dataset ({len(references)} samples)")
        data, token_count = log.by_index[idx]
        text, n_ids = decode_data(data, encoding, tokenizer)
        preds.append(text)
        refs.append(references[idx])
        toks.append(token_count if token_count is not None else (n_ids if n_ids is not None else
                                                                 (token_counts or {}).get(idx)))
    out = evaluate(preds, refs, toks, model_key=model_key, reference_tokens_per_sample=reference_tokens_per_sample)
    out["log"] = {"path": str(path), "entries": log.total, "unique_samples": len(log.by_index),
                  "duplicates_removed": log.duplicates_removed, "encoding": encoding}
    return out

"""Accuracy: ROUGE the MLPerf way, exact match, tokens per sample, official targets, accuracy-log dedup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmint.core.errors import UserError
from benchmint.llm import accuracy as acc

LOGS = Path(__file__).parent / "data" / "loadgen"


def _log(tmp_path: Path, entries: list[dict]) -> Path:
    p = tmp_path / "mlperf_log_accuracy.json"
    p.write_text(json.dumps(entries))
    return p


def test_rouge_identical_and_disjoint_texts():
    same = acc.rouge(["The cat sat on the mat."], ["The cat sat on the mat."])
    assert same["rouge1"] == same["rouge2"] == same["rougeL"] == same["rougeLsum"] == 100.0
    none = acc.rouge(["zebra quantum"], ["The cat sat on the mat."])
    assert none["rouge1"] == 0.0 and none["rougeL"] == 0.0


def test_rouge_uses_stemming_and_averages_per_sample():
    # "running" and "runs" share the stem "run" under rouge-score's Porter stemmer
    r = acc.rouge(["dogs running"], ["dog runs"])
    assert r["rouge1"] == 100.0
    two = acc.rouge(["a b", "zebra"], ["a b", "cat"])  # mean of per-sample F1: (100 + 0) / 2
    assert two["rouge1"] == 50.0 and two["samples"] == 2


def test_rougelsum_depends_on_sentence_split_and_fallback_is_named():
    split, name = acc.sentence_splitter()
    assert callable(split) and name
    assert acc._fallback_sentences("Dr. Smith went home. He ate. Then 3 more came!") == [
        "Dr. Smith went home.", "He ate.", "Then 3 more came!"]
    pred = "The cat sat. The dog ran."
    ref = "The dog ran. The cat sat."
    r = acc.rouge([pred], [ref])
    assert r["rougeLsum"] == 100.0 and r["rougeL"] < 100.0  # order matters to ROUGE-L, not to Lsum per sentence


def test_exact_match_only_on_short_answers():
    em = acc.exact_match(["Paris.", "The answer is 42", "long text here"],
                         ["paris", "42", "a reference much longer than five words here"])
    assert em["samples"] == 2
    assert em["exact_match"] == 50.0
    assert em["answer_contained"] == 100.0
    assert acc.exact_match(["x"], ["one two three four five six"]) is None


def test_llama2_targets_pass_and_fail_at_each_level():
    scores = {"rouge1": 44.40, "rouge2": 22.02, "rougeL": 28.60}
    t = acc.check_targets("llama2-70b", scores, tokens_per_sample=294.0)
    assert t["levels"]["99%"]["passed"] is True
    assert t["levels"]["99.9%"]["passed"] is True  # 44.40 >= 44.4312 * 0.999 = 44.387
    t = acc.check_targets("llama2-70b", {"rouge1": 44.0, "rouge2": 22.02, "rougeL": 28.60}, 294.0)
    assert t["levels"]["99%"]["passed"] and not t["levels"]["99.9%"]["passed"]
    checks = {c["metric"]: c for c in t["levels"]["99%"]["checks"]}
    assert checks["rouge1"]["min"] == pytest.approx(44.4312 * 0.99, abs=1e-4)
    assert checks["tokens_per_sample"]["min"] == pytest.approx(294.45 * 0.9, abs=1e-3)
    assert checks["tokens_per_sample"]["max"] == pytest.approx(294.45 * 1.1, abs=1e-3)
    too_long = acc.check_targets("llama2-70b", scores, tokens_per_sample=330.0)
    assert not too_long["levels"]["99%"]["passed"]
    assert acc.check_targets("my-model", scores, 10.0) is None


def test_duplicates_keep_the_first_response_per_sample(tmp_path):
    entries = [
        {"seq_id": 2, "qsl_idx": 0, "data": b"second".hex(), "token_count": 1},
        {"seq_id": 0, "qsl_idx": 0, "data": b"first".hex(), "token_count": 1},
        {"seq_id": 1, "qsl_idx": 1, "data": b"other".hex(), "token_count": 1},
    ]
    log = acc.read_accuracy_log(_log(tmp_path, entries))
    assert log.total == 3 and log.duplicates_removed == 1
    assert log.by_index[0][0] == b"first"
    res = acc.evaluate_accuracy_log(_log(tmp_path, entries), ["first", "other"])
    assert res["rouge"]["rouge1"] == 100.0  # had the later duplicate been kept, sample 0 would score 0
    assert res["log"]["duplicates_removed"] == 1 and res["log"]["unique_samples"] == 2


def test_recorded_loadgen_accuracy_log_with_duplicates():
    refs = ["w0 w1 w2"] * 8
    res = acc.evaluate_accuracy_log(LOGS / "accuracy_duplicates" / "mlperf_log_accuracy.json", refs)
    assert res["log"]["entries"] == 24
    assert res["log"]["unique_samples"] == 8 and res["log"]["duplicates_removed"] == 16
    assert res["tokens_per_sample"] == 6  # LoadGen's token_count per response
    assert res["rouge"]["rouge1"] == pytest.approx(100 * 2 * 3 / (6 + 3), abs=1e-3)  # 3 of 6 words match


def test_token_id_logs_need_a_tokenizer(tmp_path):
    import numpy as np

    class Tok:
        vocab = {1: "hello", 2: "world"}

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(self.vocab[i] for i in ids)

    data = np.array([1, 2], dtype=np.int32).tobytes().hex()
    p = _log(tmp_path, [{"seq_id": 0, "qsl_idx": 0, "data": data}])
    res = acc.evaluate_accuracy_log(p, ["hello world"], encoding="int32", tokenizer=Tok())
    assert res["rouge"]["rouge1"] == 100.0 and res["tokens_per_sample"] == 2
    with pytest.raises(UserError, match="tokenizer"):
        acc.evaluate_accuracy_log(p, ["hello world"], encoding="int32")


def test_tokens_per_sample_ratio_and_missing_references():
    res = acc.evaluate(["a b c", "d"], ["a b c", None], output_tokens=[30, 10], reference_tokens_per_sample=15.0)
    assert res["samples"] == 1 and res["tokens_per_sample"] == 30 and res["tokens_per_sample_ratio"] == 2.0
    with pytest.raises(UserError, match="reference"):
        acc.evaluate(["a"], [None])


def test_bad_log_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no accuracy log"):
        acc.read_accuracy_log(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not a LoadGen accuracy log"):
        acc.read_accuracy_log(tmp_path / "bad.json")
    with pytest.raises(UserError, match="outside the dataset"):
        acc.evaluate_accuracy_log(_log(tmp_path, [{"seq_id": 0, "qsl_idx": 5, "data": "61"}]), ["a"])

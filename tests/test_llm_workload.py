"""Workloads: the shipped sample, synthetic lengths, local files with a column mapping, chat templates."""

from __future__ import annotations

import json

import pytest

from benchmint.core.errors import UserError
from benchmint.llm.workload import load_workload, parse_length


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from benchmint.models.tiny_llm import tiny_llm_path

    return AutoTokenizer.from_pretrained(tiny_llm_path())


def test_sample_has_prompts_and_references():
    wl = load_workload("sample", output_tokens="8")
    assert len(wl.requests) >= 100
    assert all(r.reference for r in wl.requests) and all(r.max_tokens == 8 for r in wl.requests)
    assert "Paris" in wl.requests[0].reference


def test_completions_apply_the_chat_template_and_count_tokens(tok):
    wl = load_workload("sample", tokenizer=tok, output_tokens="4")
    p = wl.requests[0].prompt
    assert isinstance(p, str) and p.startswith("<|bos|><|user|>") and p.endswith("<|assistant|>\n")
    assert wl.requests[0].input_tokens == len(tok(p, add_special_tokens=False)["input_ids"])
    raw = load_workload("sample", tokenizer=tok, chat_template=False)
    assert raw.requests[0].prompt == "What is the capital of France?"
    chat = load_workload("sample", api="chat", tokenizer=tok, system_prompt="Be brief.")
    assert chat.requests[0].prompt[0] == {"role": "system", "content": "Be brief."}


def test_synthetic_lengths(tok):
    wl = load_workload("synthetic", tokenizer=tok, input_tokens="32", output_tokens="10-20", num_prompts=50, seed=1)
    ins = [r.input_tokens for r in wl.requests]
    outs = [r.max_tokens for r in wl.requests]
    assert abs(sum(ins) / len(ins) - 32) <= 3  # decoded then re-encoded: close to the asked length
    assert min(outs) >= 10 and max(outs) <= 20 and len(set(outs)) > 1
    again = load_workload("synthetic", tokenizer=tok, input_tokens="32", output_tokens="10-20", num_prompts=50, seed=1)
    assert [r.prompt for r in again.requests] == [r.prompt for r in wl.requests]


def test_local_files_with_column_mapping(tmp_path):
    import pandas as pd

    rows = [{"q": f"question {i}", "a": f"answer {i}"} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.csv", "d.parquet"):
        wl = load_workload(str(tmp_path / name), prompt_column="q", reference_column="a")
        assert [r.prompt for r in wl.requests][:2] == ["question 0", "question 1"]
        assert wl.requests[4].reference == "answer 4" and wl.source["dataset_hash"]
    with pytest.raises(UserError, match="--prompt-column"):
        load_workload(str(tmp_path / "d.jsonl"))


def test_sharegpt_conversations(tmp_path):
    row = {"conversations": [{"from": "human", "value": "hello?"}, {"from": "gpt", "value": "hi"}]}
    (tmp_path / "s.jsonl").write_text(json.dumps(row))
    assert load_workload(str(tmp_path / "s.jsonl")).requests[0].prompt == "hello?"


def test_missing_dataset_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="no such file"):  # a path: refused before any hub lookup
        load_workload(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="neither a local file"):  # a name: the hub (offline here) did not have it
        load_workload("no-such-org/no-such-dataset")


def test_length_specs():
    assert parse_length("128").kind == "fixed"
    assert parse_length("100:10").kind == "normal"
    assert parse_length("5-9").kind == "uniform"
    for bad in ("abc", "9-5", "0"):
        with pytest.raises(UserError):
            parse_length(bad)

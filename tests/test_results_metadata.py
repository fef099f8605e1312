"""Helpers that fill a RunRecord's system, workload and provenance blocks."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from benchmint.results.metadata import (
    accelerator_summary,
    dataset_hash,
    git_revision,
    provenance,
    system_block,
    workload_from_model,
)
from benchmint.results.record import RunRecord


def test_dataset_hash_follows_content_and_names(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_text('{"p": 1}\n')
    h1 = dataset_hash(tmp_path / "d")
    assert h1.startswith("sha256:") and dataset_hash(tmp_path / "d") == h1
    (tmp_path / "d" / "a.jsonl").write_text('{"p": 2}\n')
    assert dataset_hash(tmp_path / "d") != h1
    assert dataset_hash(tmp_path / "d" / "a.jsonl") != dataset_hash(tmp_path / "d")
    assert dataset_hash(tmp_path / "missing") is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_revision_of_a_repo_and_dirty_flag(tmp_path):
    run = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "f.txt").write_text("x")
    run("add", "f.txt")
    run("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "x")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert git_revision(tmp_path / "f.txt") == head
    assert git_revision(tmp_path.parent / "not-a-repo-xyz") in (None, git_revision(tmp_path.parent))
    prov = provenance(["benchmint", "llm", "bench"], repo=tmp_path)
    assert prov["command_line"] == ["benchmint", "llm", "bench"] and prov["git_revision"] == head


@pytest.mark.slow  # importing transformers takes seconds on a busy machine
def test_workload_from_a_transformers_model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    w = workload_from_model("tiny-llama", model=model, dataset="sample")
    assert w["architecture"] == "LlamaForCausalLM"
    assert w["parameter_count"] == sum(p.numel() for p in model.parameters())
    assert w["dtype"] == "bfloat16" and w["dataset"] == "sample"
    assert set(w) >= {"model_name", "architecture", "parameter_count", "dtype", "dataset", "dataset_hash"}


def test_system_block_has_host_facts_and_accelerator():
    s = system_block(engine="vllm", engine_version="0.6.3")
    assert s["cpu_model"] and s["memory_bytes"] > 0 and s["python"] and "torch" in s["packages"]
    assert s["engine"] == "vllm" and s["engine_version"] == "0.6.3"
    assert s["accelerator"]["count"] == len(s["gpus"])
    gpus = [{"index": 0, "name": "NVIDIA H100", "memory_bytes": 80 * 10**9, "driver": "550"}] * 2
    assert accelerator_summary(gpus) == {"name": "NVIDIA H100", "count": 2, "vendor": "NVIDIA",
                                         "memory_bytes": 80 * 10**9, "driver": "550"}
    RunRecord(kind="llm", system=s)  # JSON-ready enough for a record

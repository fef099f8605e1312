"""A tiny Llama-architecture model with random weights and a locally trained tokenizer.

Everything is built on this machine, no network: a byte-level BPE tokenizer is trained with ``tokenizers`` on
the shipped instruction sample, wrapped as a ``PreTrainedTokenizerFast`` with a chat template, and a
``LlamaForCausalLM`` is made from a small config with seeded random weights. The folder loads with
``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` like any hub model.

Use :func:`tiny_llm_path` (builds once, then reuses the cache) or :func:`build_tiny_llm` (into a given folder).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from benchmint.models.hf_progress import no_progress_bars

VERSION = "v1"
NAME = "benchmint-tiny-llm"
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
# small enough to run fast on 2 CPU cores, big enough to have real attention/KV-cache work
CONFIG = dict(
    hidden_size=64,
    intermediate_size=172,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=True,
    initializer_range=0.5,  # random weights with enough spread that greedy decoding varies its tokens
)
VOCAB_SIZE = 2048


def default_cache_dir() -> Path:
    base = os.environ.get("BENCHMINT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "benchmint"
    )
    return Path(base) / f"tiny-llm-{VERSION}"


def _training_text() -> list[str]:
    from benchmint.data import instruct_sample_path

    lines: list[str] = []
    with open(instruct_sample_path(), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            lines.extend(v for k, v in row.items() if k in ("instruction", "input", "reference") and v)
    # make every digit/letter/punctuation appear so the merges cover ordinary text
    lines.append("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"()[]{}-+*/=%$#@&_")
    return lines


def build_tokenizer():
    """Train a byte-level BPE tokenizer on the shipped text and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        model_max_length=CONFIG["max_position_embeddings"],
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_llm(out_dir: str | Path, seed: int = 0) -> Path:
    """Build the tokenizer and a randomly initialised tiny Llama model into ``out_dir``; returns the path."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **CONFIG,
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        model = LlamaForCausalLM(config)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with no_progress_bars():  # "Writing model shards" bar of a one-shard toy model: noise in the demo
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    (out_dir / "benchmint.json").write_text(
        json.dumps({"name": NAME, "version": VERSION, "seed": seed, "weights": "random", "config": CONFIG}) + "\n"
    )
    return out_dir


def tiny_llm_path(cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Path of the cached tiny model, building it first when missing (safe when several processes race)."""
    target = Path(cache_dir) if cache_dir else default_cache_dir()
    if seed:
        target = target.with_name(f"{target.name}-seed{seed}")
    if (target / "benchmint.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build_tiny_llm(tmp, seed=seed)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first (target exists and is not empty)
            if not (target / "benchmint.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(model: str) -> str:
    """``tiny`` -> the cached tiny model folder; anything else is returned unchanged (a folder or hub name)."""
    return str(tiny_llm_path()) if model == "tiny" else model

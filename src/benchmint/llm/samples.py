"""The samples of an MLPerf LoadGen run (its query sample library) from a workload, and the tokenizer that
builds them (chat templates, prompt lengths)."""

from __future__ import annotations

from typing import Any


def tokenizer_for(backend: str, model: str | None, tokenizer: str | None = None) -> Any:
    """The tokenizer for chat templates and prompt lengths (``tiny`` and local folders work offline); None for a
    backend that needs none (the registry entry's ``tokenizer``)."""
    from benchmint.llm.backends.registry import backend_entry

    entry = backend_entry(backend)
    if entry.tokenizer == "none":
        return None
    from benchmint.llm.bench import load_tokenizer

    name = tokenizer or model or entry.default_model
    return load_tokenizer(name) if name else None


def samples_of(requests: list[Any]) -> list[Any]:
    """LoadGen samples of a workload's requests (prompt, token counts, reference, extras)."""
    from benchmint.llm.loadgen.sut import Sample

    return [Sample(prompt=r.prompt, max_tokens=r.max_tokens, input_tokens=r.input_tokens, reference=r.reference,
                   ignore_eos=r.ignore_eos, extra=dict(r.extra)) for r in requests]


def build_samples(dataset: str, api: str, tokenizer: Any, num_samples: int | None, input_tokens: str | None,
                  output_tokens: str | None, seed: int, **workload_opts: Any) -> tuple[list, dict[str, Any]]:
    """The samples of ``dataset`` (see :func:`benchmint.llm.workload.load_workload`) and its description."""
    from benchmint.llm.workload import load_workload

    wl = load_workload(dataset, api=api, tokenizer=tokenizer, num_prompts=num_samples, input_tokens=input_tokens,
                       output_tokens=output_tokens, seed=seed, **workload_opts)
    return samples_of(wl.requests), wl.describe()

"""Shared prefixes: ``--prefix-groups N --prefix-tokens P``, to measure prefix (KV) caching.

Prompt ``i`` belongs to group ``i % N`` (groups interleave, so a cache must hold all ``N`` prefixes at once).
Every prompt of a group starts with the group's ``P``-token prefix (:mod:`benchmint.llm.tokentext`: whole
tokens, exact under the model's tokenizer) and the next token differs between the prompts of a group, so a
group's prompts share exactly ``P`` tokens.

- synthetic dataset: the prompt is ``--input-tokens`` long in all, the prefix included (a prefix as long as
  the prompt or longer is an error);
- file datasets: the prefix is put before each prompt's text (before any chat template is applied).

The expected cacheable fraction is the share of the measured prompt tokens a perfect prefix cache would not
recompute: every request but the first of its group reuses ``P`` tokens. Tokens a chat template puts before
the prefix are shared too but not counted (the figure is a lower bound then). The server's measured hit rate
is read from its Prometheus ``/metrics`` before and after the run where it reports prefix-cache counters
(vLLM's ``prefix_cache_queries``/``prefix_cache_hits``, SGLang's ``cache_hit_rate``); benchmint's own engine
has no prefix cache (every prompt is prefilled in full), so no hit rate is reported for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from benchmint.core.errors import UserError
from benchmint.llm.tokentext import TokenText
from benchmint.llm.types import GenRequest
from benchmint.llm.workload import LengthDist, parse_length


def check_prefix_args(groups: int | None, tokens: int | None) -> None:
    if groups is None and tokens is None:
        return
    if not groups or groups < 1:
        raise UserError("--prefix-groups must be at least 1 (and goes with --prefix-tokens)")
    if not tokens or tokens < 1:
        raise UserError("--prefix-tokens must be at least 1 (and goes with --prefix-groups)")


def prefix_hook(
    groups: int, prefix_tokens: int, tokenizer: Any, seed: int, synthetic: bool, input_tokens: str | None
) -> Callable[[list[str], list[int] | None], tuple[list[str], list[int] | None]]:
    """The ``prompt_hook`` of :func:`benchmint.llm.workload.load_workload` that puts the prefixes in."""
    tt = TokenText.of(tokenizer)
    in_dist: LengthDist | None = parse_length(input_tokens, "--input-tokens") or parse_length(128)

    def hook(prompts: list[str], counts: list[int] | None) -> tuple[list[str], list[int] | None]:
        rng = np.random.default_rng([seed, 0x5EED])
        starts = rng.permutation(tt.size)  # first pieces: distinct across groups, and across a group's members
        prefixes = [[int(starts[g % tt.size])] + tt.random(prefix_tokens - 1, rng) for g in range(groups)]
        n = len(prompts)
        if synthetic:
            assert in_dist is not None
            lengths = in_dist.sample(n, rng)
            if int(lengths.min()) <= prefix_tokens:
                raise UserError(
                    f"--prefix-tokens {prefix_tokens} is as long as the prompt or longer (--input-tokens "
                    f"{in_dist.spec} gives prompts of {int(lengths.min())} tokens); use a shorter prefix or longer prompts"
                )
            out, cnt = [], []
            for i in range(n):
                g, k = i % groups, i // groups
                body = [int(starts[(k + 1) % tt.size])] + tt.random(int(lengths[i]) - prefix_tokens - 1, rng)
                out.append(tt.text(prefixes[g] + body))
                cnt.append(int(lengths[i]))
            return out, (cnt if tt.exact else None)
        return [tt.text(prefixes[i % groups]) + "\n\n" + p for i, p in enumerate(prompts)], None

    return hook


def cacheable_fraction(measured: list[GenRequest], templates: int, groups: int, prefix_tokens: int) -> dict[str, Any]:
    """The share of measured prompt tokens a perfect prefix cache would reuse (see the module doc)."""
    seen: set[int] = set()
    reusable = 0
    total = 0
    known = True
    for j, r in enumerate(measured):
        g = (j % templates) % groups
        if g in seen:
            reusable += prefix_tokens
        seen.add(g)
        if r.input_tokens is None:
            known = False
        total += r.input_tokens or 0
    return {
        "groups": groups,
        "prefix_tokens": prefix_tokens,
        "requests": len(measured),
        "reusable_prompt_tokens": reusable,
        "expected_cacheable_fraction": (reusable / total) if known and total else None,
        "definition": "prefix tokens of every request but the first of its group / all prompt tokens sent",
    }


# ---------------------------------------------------------------- the server's own figure
_VLLM = ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits")


async def scrape_prefix_counters(base_url: str, timeout_s: float = 3.0, api_key: str | None = None
                                 ) -> dict[str, float] | None:
    """Prefix-cache counters from ``/metrics`` at the server root; None when it reports none. Used only when
    ``--no-server-metrics`` turned the run's own scraper off (else :func:`hit_rate_from_server_metrics`)."""
    import aiohttp

    root = base_url.rstrip("/").removesuffix("/v1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}  # a server behind a key guards /metrics too
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
            async with s.get(root + "/metrics", headers=headers) as r:
                if r.status != 200:
                    return None
                text = await r.text()
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):  # ValueError: an answer that is not text
        return None
    return parse_prefix_counters(text)


def hit_rate_from_server_metrics(block: dict[str, Any]) -> dict[str, Any]:
    """The measured hit rate out of the run's ``server_metrics`` block (its scraper read the same /metrics,
    first snapshot before the run, last after it), in :func:`measured_hit_rate`'s keys."""
    h = (block.get("summary") or {}).get("prefix_cache_hit_rate")
    src = (block.get("sources") or {}).get("prefix_cache_hit_rate")
    if not h:
        return {"measured_hit_rate": None, "source": "the server's /metrics reports no prefix-cache counters"}
    if "over_run" in h:
        return {"measured_hit_rate": h["over_run"], "queried_tokens": h["queries"], "hit_tokens": h["hits"],
                "source": f"{src} over the run (server_metrics scrapes)"}
    return {"measured_hit_rate": h["last"], "source": f"{src} at the end (server_metrics scrapes)"}


def parse_prefix_counters(text: str) -> dict[str, float] | None:
    from prometheus_client.parser import text_string_to_metric_families

    vals: dict[str, float] = {}
    try:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                name = s.name.removesuffix("_total")
                if name in _VLLM:
                    vals[name] = vals.get(name, 0.0) + float(s.value)
                elif name == "sglang:cache_hit_rate":
                    vals["sglang:cache_hit_rate"] = float(s.value)
    except ValueError:
        return None
    return vals or None


def measured_hit_rate(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, Any]:
    if after is None:
        return {"measured_hit_rate": None, "source": "the server's /metrics reports no prefix-cache counters"}
    if all(k in after for k in _VLLM) and before is not None and all(k in before for k in _VLLM):
        q = after[_VLLM[0]] - before[_VLLM[0]]
        h = after[_VLLM[1]] - before[_VLLM[1]]
        return {"measured_hit_rate": h / q if q > 0 else None, "queried_tokens": q, "hit_tokens": h,
                "source": "vllm:prefix_cache_hits / vllm:prefix_cache_queries over the run"}
    if "sglang:cache_hit_rate" in after:
        return {"measured_hit_rate": after["sglang:cache_hit_rate"], "source": "sglang:cache_hit_rate at the end"}
    return {"measured_hit_rate": None, "source": "the server's /metrics reports no prefix-cache counters"}

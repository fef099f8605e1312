"""A backend spec (``{"kind": ..., "options": {...}}``, what the MLPerf LoadGen adapter and the sweeps take) from
the command line's backend flags."""

from __future__ import annotations

from typing import Any

from benchmint.core.errors import UserError


def parse_sim(spec: str | None) -> dict[str, Any]:
    """``--sim ttft=0.02,tpot=0.005,slots=4`` -> options of the simulated engine."""
    out: dict[str, Any] = {}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        k, _, v = part.partition("=")
        k = k.strip()
        try:
            if k in ("ttft", "tpot"):
                out[f"{k}_s"] = float(v)
            elif k in ("slots", "fail_every"):
                out[k] = int(v)
            else:
                raise ValueError
        except ValueError:
            raise UserError(f"--sim {spec!r}: use ttft=SECONDS,tpot=SECONDS,slots=N") from None
    return out


def build_backend_spec(backend: str, url: str | None, model: str | None, api: str, device: str,
                       max_batch_size: int, sim: str | None = None, api_key: str | None = None,
                       tokenizer: str | None = None, include_usage: bool = True) -> dict[str, Any]:
    """The spec of ``--backend`` sim, transformers (hf) or openai-http (http, openai) with its options."""
    if backend == "sim":
        return {"kind": "sim", "options": parse_sim(sim)}
    if backend in ("transformers", "hf"):
        return {"kind": "transformers", "options": {"model": model or "tiny", "device": device,
                                                     "max_batch_size": max_batch_size}}
    if backend in ("http", "openai", "openai-http"):
        if not url:
            raise UserError("--backend http needs --url http://HOST:PORT/v1 of an OpenAI-compatible server")
        opts: dict[str, Any] = {"url": url, "model": model, "api": api, "include_usage": include_usage}
        if api_key:
            opts["api_key"] = api_key
        if tokenizer or not include_usage:  # counts output tokens when the server reports no usage
            opts["tokenizer"] = tokenizer or model
        return {"kind": "openai-http", "options": opts}
    raise UserError(f"--backend {backend!r}: use openai-http (a server), transformers (in-process) or sim")

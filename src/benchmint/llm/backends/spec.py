"""A backend spec (``{"kind": ..., "options": {...}}``, what the MLPerf LoadGen adapter and the sweeps take) from
the command line's backend flags, through the backend's registry entry."""

from __future__ import annotations

from typing import Any

from benchmint.core.errors import UserError
from benchmint.llm.backends.registry import backend_entry


def parse_backend_options(pairs: list[str] | None) -> dict[str, Any]:
    """``--backend-option KEY=VALUE`` (repeatable) -> options; a value is read as JSON when it parses
    (``4``, ``0.5``, ``true``, ``{"top_p": 0.9}``), else kept as text (``bfloat16``)."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--backend-option {pair!r}: use KEY=VALUE, e.g. --backend-option dtype=bfloat16")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def build_backend_spec(backend: str, url: str | None, model: str | None, api: str, device: str,
                       max_batch_size: int, sim: str | None = None, api_key: str | None = None,
                       tokenizer: str | None = None, include_usage: bool = True,
                       options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec of ``--backend KIND`` with the flags that are options of that backend, plus ``options``
    (``--backend-option``); an option the backend does not take is a UserError."""
    entry = backend_entry(backend)
    flags = {"url": url, "model": model, "api": api, "device": device, "max_batch_size": max_batch_size, "sim": sim,
             "api_key": api_key, "include_usage": include_usage,
             # a tokenizer counts output tokens when the server is not asked for usage
             "tokenizer": tokenizer or (None if include_usage else model)}
    opts = {k: v for k, v in entry.options_from(flags).items() if v is not None or k == "model"}
    opts.update(options or {})
    entry.check_options(opts)
    return {"kind": entry.kind, "options": opts}

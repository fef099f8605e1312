"""Backends by ``kind``: what the scheduler and the MLPerf LoadGen adapter drive.

``create_backend("openai-http", url=..., model=..., api="completions"|"chat", stream=True, ...)`` talks to
any OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, benchmint's own); ``create_backend("transformers",
model="tiny"|PATH, ...)`` runs the model in this process on the batching engine; ``create_backend("sim")`` is a
simulated engine with no model. Every backend follows :class:`benchmint.llm.types.Backend`: ``await start()``,
``await generate(req, on_first_token)``, ``await close()``. The registry and what each entry can do are in
:mod:`.registry`.
"""

from __future__ import annotations

from typing import Any

from benchmint.llm.backends.registry import (
    BackendEntry,
    backend_entry,
    backend_help,
    backend_kinds,
    known_backends,
    register_backend,
)
from benchmint.llm.types import Backend


def backend_class(kind: str) -> type:
    return backend_entry(kind).load()


def create_backend(kind: str, **opts: Any) -> Backend:
    """Make a backend of the given kind; an option its class does not take is a UserError."""
    return backend_entry(kind).create(**opts)


__all__ = ["BackendEntry", "backend_class", "backend_entry", "backend_help", "backend_kinds", "create_backend",
           "known_backends", "register_backend"]

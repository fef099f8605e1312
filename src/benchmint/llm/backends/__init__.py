"""Backends by ``kind``: what the scheduler and the MLPerf LoadGen adapter drive.

``create_backend("openai-http", url=..., model=..., api="completions"|"chat", stream=True, ...)`` talks to
any OpenAI-compatible server (vLLM, SGLang, TGI, llama.cpp, benchmint's own); ``create_backend("transformers",
model="tiny"|PATH, ...)`` runs the model in this process on the batching engine. Every backend follows
:class:`benchmint.llm.types.Backend`: ``await start()``, ``await generate(req, on_first_token)``, ``await close()``.
"""

from __future__ import annotations

import importlib
from typing import Any

from benchmint.core.errors import UserError
from benchmint.llm.types import Backend

# kind -> "module:Class"; imported lazily so that using one backend never imports another's dependencies
_REGISTRY: dict[str, str] = {
    "openai-http": "benchmint.llm.backends.http:HttpBackend",
    "http": "benchmint.llm.backends.http:HttpBackend",
    "openai": "benchmint.llm.backends.http:HttpBackend",
    "transformers": "benchmint.llm.backends.inprocess:TransformersBackend",
    "hf": "benchmint.llm.backends.inprocess:TransformersBackend",
}


def register_backend(kind: str, target: str | type) -> None:
    """Add a backend kind: ``target`` is a class or a ``"module:Class"`` string."""
    if isinstance(target, type):
        target = f"{target.__module__}:{target.__qualname__}"
    _REGISTRY[kind] = target


def backend_kinds() -> list[str]:
    return sorted(_REGISTRY)


def backend_class(kind: str) -> type:
    try:
        target = _REGISTRY[kind]
    except KeyError:
        raise UserError(f"unknown backend {kind!r}; choose one of {', '.join(backend_kinds())}") from None
    mod, _, cls = target.partition(":")
    return getattr(importlib.import_module(mod), cls)


def create_backend(kind: str, **opts: Any) -> Backend:
    """Make a backend of the given kind; options are the backend class's keyword arguments."""
    return backend_class(kind)(**opts)


__all__ = ["backend_class", "backend_kinds", "create_backend", "register_backend"]

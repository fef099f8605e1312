"""Build the backend a LoadGen worker drives from a JSON-ready spec.

``{"kind": KIND, "options": {...}}`` goes to the LLM layer's backend registry (``openai-http``, ``transformers``,
``sim``, the simulated engine of :mod:`.sim`); ``{"factory": "module:callable", "options": {...}}``
calls a user's own factory, for backends benchmint does not ship.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from benchmint.core.errors import UserError
from benchmint.llm.types import Backend


def make_backend(spec: dict[str, Any]) -> Backend:
    options = dict(spec.get("options") or {})
    if spec.get("factory"):
        mod_name, _, attr = str(spec["factory"]).partition(":")
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise UserError(f"backend factory {spec['factory']!r} cannot be imported ({e}); use module:callable") from e
        return factory(**options)
    from benchmint.llm.backends.registry import backend_entry  # the LLM layer's registry

    entry = backend_entry(spec.get("kind", "sim"))
    names = entry.option_names()
    key = os.environ.get("BENCHMINT_BACKEND_API_KEY")  # set by the runner: spec.json holds no secret
    if key and not options.get("api_key") and "api_key" in names:
        options["api_key"] = key
    if isinstance(options.get("tokenizer"), str):  # a name crosses the process boundary, not an object
        from benchmint.llm.bench import load_tokenizer

        options["tokenizer"] = load_tokenizer(options["tokenizer"])
    return entry.create(**options)

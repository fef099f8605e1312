"""The one registry of LLM backends, keyed by ``kind``; each entry says what its backend can do.

Code that drives a backend asks the entry (``entry.server``, ``entry.tokenizer``, ``entry.usage`` ...) and never
compares backend names: a new backend is one :func:`register_backend` call. Entries name their class as
``"module:Class"`` so that using one backend never imports another's dependencies (aiohttp, torch).

An entry turns the command line's generic flags (``url``, ``model``, ``device`` ...) into its backend's options
(:meth:`BackendEntry.options_from`), and :meth:`BackendEntry.check_options` refuses an option the backend's
class does not take, with the options it does take.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from benchmint.core.errors import UserError

# request extensions an OpenAI-compatible server may refuse (llm/backends/adapt.py drops them)
EXTENSIONS = ("ignore_eos", "min_tokens", "stream_options")


@dataclass(frozen=True)
class BackendEntry:
    kind: str
    target: str  # "module:Class", imported on first use
    summary: str  # what it drives, for --help and errors
    aliases: tuple[str, ...] = ()
    server: bool = False  # talks to a server at --url: served-models probe, reachability, client-bound verdict
    server_metrics: bool = False  # the server has a Prometheus /metrics to scrape beside the run
    in_process: bool = False  # the model runs in this process (its facts are read from the engine)
    usage: bool = False  # the answer carries token usage (tokenizer counts are checked against it)
    extensions: tuple[str, ...] = ()  # request extensions it sends, dropped when the server refuses one
    tokenizer: str = "load"  # prompt lengths and counts: "load" (--tokenizer/--model), "backend" (its own), "none"
    apis: tuple[str, ...] = ("completions", "chat")
    default_model: str | None = None  # the model when none is named
    flags: tuple[str, ...] = ()  # the command line's generic flags that are options of this backend
    from_flags: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None  # own mapping, instead of ``flags``

    def load(self) -> type:
        mod, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(mod), cls)

    def option_names(self) -> tuple[str, ...]:
        """The keyword options its class takes (with those it passes on, ``passes_options_to``)."""
        return _option_names(self.load())

    def check_options(self, opts: Mapping[str, Any]) -> None:
        """A UserError naming the first option the backend does not take, and the options it does take."""
        known = self.option_names()
        bad = [k for k in opts if k not in known]
        if bad:
            raise UserError(f"backend {self.kind} has no option {bad[0]!r}; its options: {', '.join(known)}")

    def options_from(self, flags: Mapping[str, Any]) -> dict[str, Any]:
        """This backend's options from generic flags (those it does not take are left out)."""
        if self.from_flags is not None:
            return self.from_flags(flags)
        opts = {k: flags[k] for k in self.flags if k in flags}
        if "model" in self.flags and self.default_model and not opts.get("model"):
            opts["model"] = self.default_model
        if self.server and not opts.get("url"):
            raise UserError(f"--backend {self.kind} needs --url http://HOST:PORT/v1 of an OpenAI-compatible server")
        return opts

    def create(self, **opts: Any) -> Any:
        self.check_options(opts)
        return self.load()(**opts)


@cache
def _option_names(cls: type) -> tuple[str, ...]:
    names: list[str] = []
    for c in (cls, getattr(cls, "passes_options_to", None)):
        if c is None:
            continue
        for p in inspect.signature(c).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in getattr(cls, "internal_options", ()):
                names.append(p.name)
    return tuple(sorted(set(names)))


def _sim_options(flags: Mapping[str, Any]) -> dict[str, Any]:
    from benchmint.llm.loadgen.sim import parse_sim

    return parse_sim(flags.get("sim"))


_ENTRIES: dict[str, BackendEntry] = {}
_ALIASES: dict[str, str] = {}


def register_backend(entry: BackendEntry | str, target: str | type | None = None, **caps: Any) -> BackendEntry:
    """Add a backend: a :class:`BackendEntry`, or a kind, its class (or ``"module:Class"``) and its capabilities."""
    if not isinstance(entry, BackendEntry):
        if isinstance(target, type):
            target = f"{target.__module__}:{target.__qualname__}"
        entry = BackendEntry(kind=entry, target=str(target), summary=caps.pop("summary", entry), **caps)
    _ENTRIES[entry.kind] = entry
    for name in (entry.kind, *entry.aliases):
        _ALIASES[name] = entry.kind
    return entry


def backend_entry(kind: str) -> BackendEntry:
    """The entry of a kind or alias; an unknown one is a UserError listing the known ones."""
    try:
        return _ENTRIES[_ALIASES[kind]]
    except KeyError:
        raise UserError(f"unknown backend {kind!r}; choose one of {known_backends()}") from None


def backend_kinds() -> list[str]:
    """Every name a backend answers to (kinds and aliases), sorted."""
    return sorted(_ALIASES)


def known_backends() -> str:
    """``openai-http (or http, openai), transformers (or hf), sim``: for errors and --help."""
    return ", ".join(e.kind + (f" (or {', '.join(e.aliases)})" if e.aliases else "") for e in _ENTRIES.values())


def backend_help() -> str:
    return "; ".join(f"{e.kind}: {e.summary}" for e in _ENTRIES.values()) + "."


register_backend(BackendEntry(
    kind="openai-http", target="benchmint.llm.backends.http:HttpBackend", aliases=("http", "openai"),
    summary="an OpenAI-compatible server at --url (vLLM, SGLang, TGI, llama.cpp, llm serve)",
    server=True, server_metrics=True, usage=True, extensions=EXTENSIONS,
    flags=("url", "model", "api", "stream", "timeout_s", "api_key", "tokenizer", "include_usage", "extra_body",
           "adapt"),
))
register_backend(BackendEntry(
    kind="transformers", target="benchmint.llm.backends.inprocess:TransformersBackend", aliases=("hf",),
    summary="a transformers model in this process (--model tiny or a folder)", in_process=True,
    tokenizer="backend", default_model="tiny", flags=("model", "device", "max_batch_size"),
))
register_backend(BackendEntry(
    kind="sim", target="benchmint.llm.loadgen.sim:SimulatedBackend", tokenizer="none", from_flags=_sim_options,
    summary="a simulated engine, no model (--backend-option ttft_s=S, tpot_s=S, slots=N; llm mlperf: --sim)",
))

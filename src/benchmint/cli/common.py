"""Shared CLI state and consoles."""

from __future__ import annotations

from dataclasses import dataclass

import typer
from rich.console import Console

from benchmint.llm.backends.registry import backend_help

console = Console(emoji=False)  # user text (a pattern, a path) is printed as written: ":x:" is not an emoji
err_console = Console(stderr=True, emoji=False)


@dataclass
class _State:
    debug: bool = False
    interrupt_said: bool = False  # a command caught Ctrl-C and said what it kept (see interrupted_exit)


state = _State()


def interrupted_exit() -> typer.Exit:
    """The exit (130) of a command that caught Ctrl-C and has said what it kept: ``raise interrupted_exit()``.
    Any other Ctrl-C reaches the entry point as the same 130 (typer turns it into one), which then says
    "interrupted" itself."""
    state.interrupt_said = True
    return typer.Exit(130)


def run_kind(value: str | None) -> str | None:
    """typer callback for ``--kind``: a kind no run can have is an error, not an empty answer."""
    from benchmint.core.errors import UserError
    from benchmint.results.record import KINDS

    if value is not None and value not in KINDS:
        raise UserError(f"--kind {value!r}: runs are of kind {', '.join(KINDS)}")
    return value


def group(name: str, doc: str | None) -> typer.Typer:
    """A command group (``benchmint results``, ``benchmint learn``): help from the module's docstring."""
    return typer.Typer(name=name, help=doc, no_args_is_help=True, add_completion=False,
                       context_settings={"help_option_names": ["-h", "--help"]})


# Options several commands take (one definition each: the same flag, env variable and help everywhere).
ResultsOpt = typer.Option(
    None, "--results", envvar="BENCHMINT_RESULTS",
    help="Results store folder (default: ./benchmint-results; env BENCHMINT_RESULTS).",
)
BackendOpt = typer.Option("openai-http", "--backend", help=f"The backend: {backend_help()}")
BackendOptionOpt = typer.Option(
    None, "--backend-option", metavar="KEY=VALUE",
    help="An option of the backend, repeatable (e.g. dtype=bfloat16, temperature=0.7); one it does not take is an error.",
)
# the prompts and the server of `llm bench` and `llm mlperf`
PromptColumnOpt = typer.Option(None, "--prompt-column", help="Dataset column holding the prompt.")
InputColumnOpt = typer.Option(None, "--input-column", help="Optional column appended to the prompt.")
SystemPromptOpt = typer.Option(None, "--system-prompt", help="System message added to every prompt.")
ChatTemplateOpt = typer.Option(
    True, "--chat-template/--raw-prompt", help="Apply the tokenizer's chat template to completions prompts."
)
ApiKeyOpt = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY", help="Bearer token for the server.")


def option_panels(fn, panels: dict[str, tuple[str, ...]]) -> None:
    """Group a command's options under titled panels in its ``--help`` (``panels``: title -> parameter names, in
    the order shown). Each option is copied first: an option object shared with other commands keeps their
    grouping."""
    import copy
    import inspect

    title_of = {name: title for title, names in panels.items() for name in names}
    params = list(inspect.signature(fn).parameters.values())
    unknown = set(title_of) - {p.name for p in params}
    if unknown:
        raise ValueError(f"{fn.__name__} has no parameters {sorted(unknown)}")
    defaults = list(fn.__defaults__ or ())
    first = len(params) - len(defaults)  # the parameters with defaults are the last ones
    for i, p in enumerate(params[first:]):
        if p.name in title_of:
            d = copy.copy(defaults[i])
            d.rich_help_panel = title_of[p.name]
            defaults[i] = d
    fn.__defaults__ = tuple(defaults)

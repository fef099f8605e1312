"""Entry point of the ``benchmint`` command.

Each command group lives in its own module (``cli/<group>.py``) and is registered here. User errors
(:class:`benchmint.core.errors.UserError`) print one line and exit 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from typing import NoReturn

import typer

from benchmint import __version__
from benchmint.cli import env as env_cmd
from benchmint.cli.common import console, err_console, state
from benchmint.core.errors import UserError

app = typer.Typer(
    name="benchmint",
    help="Benchmarks minted from real workloads, LLM inference benchmarking, and a results dataset to learn from.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        console.print(f"benchmint {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """benchmint: record, replay and measure AI workloads; keep every run; learn from the results."""
    state.debug = debug or bool(os.environ.get("BENCHMINT_DEBUG"))


app.command("env", help=env_cmd.__doc__)(env_cmd.env)


def _register() -> None:
    """Command groups are added here, one module each."""
    from benchmint.cli import demo

    app.command("demo", help=demo.__doc__)(demo.demo)

    from benchmint.cli import trace as trace_cli

    app.command("inspect", help=trace_cli.__doc__)(trace_cli.inspect)

    from benchmint.cli import capture as capture_cli
    from benchmint.cli import replay as replay_cli

    app.command("capture", help=capture_cli.HELP,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(capture_cli.capture)
    app.command("replay", help=replay_cli.__doc__)(replay_cli.replay)
    from benchmint.cli import export as export_cli

    app.command("export", help=export_cli.__doc__)(export_cli.export)

    from benchmint.cli import results as results_cli

    app.add_typer(results_cli.app, name="results", help=results_cli.__doc__)

    from benchmint.cli import report as report_cli

    app.command("report", help=report_cli.__doc__)(report_cli.report)

    from benchmint.cli import learn as learn_cli

    app.add_typer(learn_cli.app, name="learn", help=learn_cli.__doc__)
    app.command("recommend", help=learn_cli.recommend.__doc__)(learn_cli.recommend)

    from benchmint.cli import learn_next

    app.command("next", help=learn_next.__doc__)(learn_next.next_cmd)

    from benchmint.cli import llm, llm_mlperf

    llm.app.command("mlperf", help=llm_mlperf.mlperf.__doc__)(llm_mlperf.mlperf)
    from benchmint.cli.optional_value import OptionalValueCommand

    llm.app.command("sweep", help=llm_mlperf.sweep.__doc__, cls=OptionalValueCommand)(llm_mlperf.sweep)
    from benchmint.cli import llm_calibrate

    llm.app.command("calibrate", help=llm_calibrate.calibrate.__doc__)(llm_calibrate.calibrate)
    app.add_typer(llm.app, name="llm")


_register()


def _is_click_error(e: BaseException) -> bool:
    """A usage or parameter error raised by click (vendored by typer or not)."""
    return callable(getattr(e, "format_message", None)) and isinstance(getattr(e, "exit_code", None), int)


def _take_debug(argv: list[str]) -> tuple[list[str], bool]:
    """``--debug`` anywhere before a ``--`` (``benchmint llm bench ... --debug`` as well as ``benchmint --debug
    llm bench ...``): moved to the front, where the top-level option takes it, so that no subcommand refuses
    it. What follows ``--`` (a captured script's own arguments) is left alone, and so is everything after
    ``capture``, which takes the script's arguments without ``--`` as well."""
    end = argv.index("--") if "--" in argv else len(argv)
    command = next((i for i, a in enumerate(argv[:end]) if not a.startswith("-")), None)
    if command is not None and argv[command] == "capture":  # it takes a script's arguments without "--" too
        end = command
    head = [a for a in argv[:end] if a != "--debug"]
    found = len(head) < end
    return (["--debug", *head, *argv[end:]] if found else argv), found


def run(argv: list[str] | None = None) -> None:
    """Console-script entry: runs the app and turns user errors into one line and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # torch's C++ log prints a warning line each time the execution-trace observer starts and stops; keep
    # the console for benchmint's own output (a user's TORCH_CPP_LOG_LEVEL still wins). Set before torch loads.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    argv, debug = _take_debug(argv)
    debug = debug or bool(os.environ.get("BENCHMINT_DEBUG"))
    state.interrupt_said = False
    try:
        # not standalone: click hands usage errors to us, printed on one line like every other user error
        rv = app(args=argv, prog_name="benchmint", standalone_mode=False)
    except UserError as e:
        if debug:  # the traceback, and still the user-error exit code
            traceback.print_exc()
        from rich.markup import escape

        # the message is text, not markup: "pip install 'benchmint[ray]'" keeps its brackets
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("interrupted")
        _exit_interrupted()
    except Exception as e:
        if _is_click_error(e):  # bad usage: unknown option, missing argument, a value of the wrong type
            if debug:
                traceback.print_exc()
            msg = e.format_message()  # type: ignore[attr-defined]
            if not msg.strip():  # a group called with nothing: click has printed its help
                sys.exit(e.exit_code)  # type: ignore[attr-defined]
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            err_console.print(f"[bold red]error:[/] {msg}{hint}", highlight=False, soft_wrap=True)
            sys.exit(e.exit_code)  # type: ignore[attr-defined]
        if debug:  # an unexpected failure: still one line unless --debug
            raise
        err_console.print(
            f"[bold red]error:[/] {type(e).__name__}: {e} (run with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    if rv == 130:
        # a command that caught Ctrl-C has said what it kept (a sweep's finished trials); typer turns any other
        # Ctrl-C into the same 130, and it printed nothing at all
        if not state.interrupt_said:
            err_console.print("interrupted")
        _exit_interrupted()
    sys.exit(rv if isinstance(rv, int) else 0)


def _exit_interrupted() -> NoReturn:
    """Exit 130 after Ctrl-C. The results are written: another Ctrl-C on the way out (while modules'
    finalizers run) ends the process at once, where Python would print it as a traceback from whatever
    finalizer it landed in."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(130)


if __name__ == "__main__":
    run()

"""Run the whole loop on this machine, offline: capture a trace of a small transformer step, inspect and
replay it, benchmark a tiny LLM over HTTP and in-process, store the runs and write a report."""

from __future__ import annotations

from pathlib import Path

import typer

from benchmint.cli.common import ResultsOpt, console


def demo(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for everything the demo writes."),
    results: Path = ResultsOpt,
    quick: bool = typer.Option(False, "--quick", help="Fewer iterations and requests (used by the tests)."),
) -> None:
    """Run the whole loop on this machine, offline: capture, inspect and replay a trace of a small
    transformer step; benchmark a tiny LLM over HTTP and in-process; store the runs; write a report."""
    from benchmint.demo import run_demo

    run_demo(out, results or Path("benchmint-results"), console=console, quick=quick)

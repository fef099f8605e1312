"""Show what an execution trace holds: schema, nodes, top-level ops, op histogram, tensors and storage, threads,
iterations, devices, communication; with --kineto, time by op type and how many ops matched."""

from __future__ import annotations

from pathlib import Path

import typer

from benchmint.cli.common import console
from benchmint.core.jsonio import dumps
from benchmint.trace.console import print_summary


def inspect(
    trace: Path = typer.Argument(..., help="Execution trace: .json, .json.gz or .tar.gz."),
    kineto: Path = typer.Option(None, "--kineto", "-k", help="Kineto trace of the same run to join (.json, "
                                                              ".json.gz, .tar.gz)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON (with schema_version)."),
    rank: int = typer.Option(None, "--rank", help="Rank to pick from an archive with one trace per rank."),
    top: int = typer.Option(15, "--top", min=0, help="Rows in the op tables (0: all)."),
) -> None:
    """Show what an execution trace holds: schema, nodes, top-level ops, op histogram, tensors and storage,
    threads, iterations, devices, communication; with --kineto, time by op type and how many ops matched."""
    from benchmint.trace.summary import inspect_trace

    if trace.is_dir():  # a capture folder, as replay takes it
        from benchmint.core.errors import UserError
        from benchmint.trace.capture_file import folder_refusal

        # an --every capture's or a multi-rank capture's folder, an incomplete capture: what is there, what to pass
        why = folder_refusal(trace, "inspect")
        if why is not None:
            raise UserError(why)
        if kineto is None and (trace / "kineto.json").exists():
            kineto = trace / "kineto.json"
        trace = trace / "et.json"
    s = inspect_trace(trace, kineto, rank=rank, top=top)
    if json_out:
        typer.echo(dumps(s).decode())
        return
    print_summary(s, console)

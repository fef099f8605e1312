"""Export a recorded step as a self-contained benchmark folder that runs with PyTorch alone."""

from __future__ import annotations

from pathlib import Path

import typer

from benchmint.cli.common import console


def export(
    trace: Path = typer.Argument(..., help="Execution trace or a capture folder (et.json, kineto.json, "
                                 "capture.json)."),
    out: Path = typer.Option(..., "--out", help="Folder to write the benchmark into (must be new or empty)."),
    kineto: Path = typer.Option(None, "--kineto", help="Kineto trace of the same step (default: kineto.json "
                                "beside an et.json)."),
    select: str = typer.Option(None, "--select", help="Export part of the step (as benchmint replay --select): "
                               "scope:NAME, op:PATTERN or phase:forward|backward|optimizer."),
    what_if: list[str] = typer.Option(None, "--what-if", help="Export the step changed (as benchmint replay "
                                      "--what-if): drop:OP_PATTERN or repeat:OP_PATTERN=N (repeatable)."),
    iteration: int = typer.Option(None, "--iteration", help="Export ProfilerStep#N (default: the last whole one)."),
    scale: list[str] = typer.Option(None, "--scale", help="Export the step at another size (as benchmint replay "
                                    "--scale): batch=F or seq=F (repeatable)."),
    gaps_from: Path = typer.Option(None, "--gaps-from", help="A gaps file from benchmint replay --save-gaps of "
                                   "the same step (and --select/--what-if/--scale): the runner spends that CPU "
                                   "work between the ops by default instead of calibrating its own."),
    index_spread: str = typer.Option("auto", "--index-spread", help="How the runner spreads the made-up indices "
                                     "of lookups by default (as benchmint replay --index-spread): auto, uniform "
                                     "or zipf:E."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier export in --out (a folder of other files is refused)."),
) -> None:
    """Export a recorded step as a benchmark folder: the trace trimmed to the replayed iteration, a runner
    that needs only PyTorch (python OUT/run.py [--device cpu|cuda] [--threads N] [--warmup N] [--iters N]
    [--json PATH]) with benchmint's replay engine inside the folder, and a README saying what was captured, on
    what, what the original measured and how to run it.
    """
    from benchmint.replay.export import export_benchmark

    meta = export_benchmark(trace, out, kineto, select=select, what_if=what_if, iteration=iteration, force=force,
                            scale=list(scale or ()) or None, gaps_from=gaps_from,
                            index_spread=index_spread)
    nodes = meta["nodes"]
    trim = (f"not trimmed: {meta['trim_note']}" if not meta["trimmed"]
            else f"ProfilerStep#{meta['iteration']}, the trace's only step ({nodes['exported']} nodes)"
            if nodes["exported"] == nodes["original"]
            else f"trimmed to ProfilerStep#{meta['iteration']} ({nodes['exported']} of {nodes['original']} nodes)")
    adapted = [f"{flag} {v}" for flag, vs in (("--select", [select] if select else []), ("--what-if", what_if or []),
                                              ("--scale", scale or [])) for v in vs]
    after = meta.get("ops_replayed_after_adaptation")
    of = f" ({after} of the {meta['ops']} ops)" if adapted and after is not None and after != meta["ops"] else ""
    console.print(f"exported {meta['ops']} ops to {out} ({trim})"
                  + (f"; run.py replays the step with {', '.join(adapted)}{of}" if adapted else ""), highlight=False)
    console.print(f"run it with: python {out / 'run.py'} --json result.json", highlight=False)

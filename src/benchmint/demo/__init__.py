"""``benchmint demo``: the whole loop on this machine, offline, in a few minutes.

Each step is a function of a :class:`DemoContext`; steps run in the order of :data:`STEPS`. A step adds the
RunRecords it produced to ``ctx.records`` and the files it wrote to ``ctx.artifacts``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console


@dataclass
class DemoContext:
    out: Path
    console: Console
    results_dir: Path
    quick: bool = False
    records: list = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)
    predictions: list = field(default_factory=list)  # JSON documents for the report's Predictions section


Step = Callable[[DemoContext], None]


def run_demo(out: Path, results_dir: Path, console: Console | None = None, quick: bool = False) -> DemoContext:
    console = console or Console(emoji=False)
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out=out, console=console, results_dir=results_dir, quick=quick)
    for i, (title, step) in enumerate(STEPS, 1):
        console.rule(f"[bold]step {i}/{len(STEPS)}: {title}")
        t0 = time.perf_counter()
        step(ctx)
        console.print(f"[dim]step {i} took {time.perf_counter() - t0:.1f} s[/]")
    console.rule("[bold green]demo done")
    for name, path in ctx.artifacts.items():
        console.print(f"  {name}: {path}")
    return ctx


def _lazy(module: str, name: str) -> Step:
    """A step whose module is imported only when it runs (``benchmint --help`` stays light)."""

    def step(ctx: DemoContext) -> None:
        getattr(importlib.import_module(module), name)(ctx)

    return step


# (title, function) in the order they run; each step lives in a module of this package.
STEPS: list[tuple[str, Step]] = [
    ("capture a small transformer training step on CPU, inspect it, replay it",
     _lazy("benchmint.demo.capture_replay", "capture_replay_demo_step")),
    ("benchmark a tiny LLM: built-in server over HTTP (Server) and in-process (Offline)",
     _lazy("benchmint.demo.llm", "llm_demo_step")),
    ("MLPerf LoadGen Server run against the built-in server, with its validity line",
     _lazy("benchmint.demo.mlperf", "mlperf_demo_step")),
    ("learn: predict throughput with an interval and recommend a configuration",
     _lazy("benchmint.demo.learn", "learn_demo_step")),
    # stays last: it stores and reports what the steps above produced
    ("store the runs and write the report", _lazy("benchmint.demo.report", "store_and_report")),
]

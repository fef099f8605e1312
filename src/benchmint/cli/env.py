"""Print what benchmint sees of this machine: CPU, cores, memory, GPUs, OS, Python, torch and key packages."""

from __future__ import annotations

import typer
from rich.table import Table

from benchmint.cli.common import console
from benchmint.core.jsonio import dumps
from benchmint.core.system import host_summary


def env(json_out: bool = typer.Option(False, "--json", help="Print the facts as JSON.")) -> None:
    """Print what benchmint sees of this machine: CPU, cores, memory, GPUs, OS, Python, torch and key packages."""
    info = host_summary()
    if json_out:
        typer.echo(dumps(info).decode())
        return
    t = Table(title="benchmint env", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    mem = info["memory_bytes"]
    t.add_row("CPU", info["cpu_model"])
    t.add_row("cores", f"{info['cpu_cores_logical']} logical, {info['cpu_cores_physical']} physical, "
              f"{info['cpu_affinity']} usable")
    t.add_row("memory", f"{mem / 2**30:.1f} GiB" if mem else "unknown")
    if info["gpus"]:
        for g in info["gpus"]:
            t.add_row(f"GPU {g['index']}", f"{g['name']}, {g['memory_bytes'] / 2**30:.0f} GiB, driver {g['driver']}")
    else:
        t.add_row("GPUs", "none (NVML not available)")
    t.add_row("OS", info["platform"])
    t.add_row("Python", info["python"])
    t.add_row("torch threads", str(info["torch_threads"]))
    for name, ver in info["packages"].items():
        t.add_row(name, ver)
    console.print(t)

"""A trace summary (:func:`benchmint.trace.summary.inspect_trace`) as tables on a rich console: what
``benchmint trace inspect`` and the demo print."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def print_summary(s: dict, console: Console) -> None:
    """Print a trace summary (:func:`benchmint.trace.summary.inspect_trace`) as tables on ``console``."""
    console.print(f"[bold]execution trace[/] {s['path']}", soft_wrap=True, highlight=False)
    t = Table(show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    t.add_row("schema", s["et_schema"])
    t.add_row("nodes", f"{s['nodes']} ({s['ops']} ops, {s['top_level_ops']} top-level, "
                       f"{s['distinct_top_level_ops']} distinct)")
    t.add_row("tensors", f"{s['tensors']} ({s['external_tensors']} from outside the trace)")
    by_dev = ", ".join(f"{d}: {_bytes(b)}" for d, b in s["storage_bytes_by_device"].items())
    t.add_row("storage", f"{s['storages']} storages, {_bytes(s['storage_bytes'])}" + (f" ({by_dev})" if by_dev
                                                                                       else ""))
    t.add_row("threads", ", ".join(f"tid {th['tid']}: {th['top_level_ops']} top-level ops" for th in s["threads"])
              or "none")
    its = s["iterations"]
    t.add_row("iterations", ", ".join(f"ProfilerStep#{i['number']} ({i['top_level_ops']} ops)" for i in its)
              if its else "none marked (no ProfilerStep#N)")
    scopes = s["scopes"]
    t.add_row("scopes", f"{scopes['count']}" + (": " + ", ".join(list(scopes["by_name"])[:6]) if scopes["count"]
                                                else ""))
    t.add_row("devices", ", ".join(s["devices"]) or "none")
    comm = s["communication"]
    if comm["nodes"]:
        names = ", ".join(f"{k} x{v}" for k, v in list(comm["by_name"].items())[:6])
        t.add_row("communication", f"{comm['top_level_ops']} top-level ops, {len(comm['collectives'])} "
                                   f"collectives ({names})")
    else:
        t.add_row("communication", "none")
    for w in s["warnings"]:
        t.add_row("[yellow]warning[/]", w)
    console.print(t)

    h = Table(title="top-level ops", title_justify="left")
    h.add_column("op")
    h.add_column("count", justify="right")
    for name, n in s["op_histogram"].items():
        h.add_row(name, str(n))
    console.print(h)

    k = s.get("kineto")
    if k:
        console.print(f"[bold]kineto[/] {k['path']}", soft_wrap=True, highlight=False)
        kt = Table(show_header=False)
        kt.add_column("what", style="bold")
        kt.add_column("value")
        kt.add_row("matched", f"{k['matched_top_level_ops']} of {k['top_level_ops']} top-level ops "
                              f"({100 * k['matched_fraction']:.1f}%), {k['matched_nodes']} of "
                              f"{k['candidate_nodes']} nodes, by {k['method']}")
        kt.add_row("top-level op time", f"{k['top_level_time_s'] * 1e3:.3f} ms")
        kt.add_row("CPU gaps", f"{k['cpu_gap_s'] * 1e3:.3f} ms")
        kt.add_row("device activity", f"{k['device_events']} events, {k['device_time_s'] * 1e3:.3f} ms")
        for w in k["warnings"]:
            kt.add_row("[yellow]warning[/]", w)
        console.print(kt)
        bt = Table(title="time by op type (top-level ops)", title_justify="left")
        bt.add_column("op")
        bt.add_column("count", justify="right")
        bt.add_column("CPU ms", justify="right")
        bt.add_column("device ms", justify="right")
        for name, v in k["time_by_op"].items():
            bt.add_row(name, str(v["count"]), f"{v['total_s'] * 1e3:.3f}", f"{v['device_s'] * 1e3:.3f}")
        console.print(bt)

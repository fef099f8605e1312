"""A trace summary (:func:`benchmint.trace.summary.inspect_trace`) as tables on a rich console: what
``benchmint trace inspect`` and the demo print."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _facts(rows: list[tuple[str, str]], warnings: list[str]) -> Table:
    """A two-column table of (what, value) rows, the warnings last. The values quote the trace's own names (op
    names, scopes, paths): escaped, never read as markup (``aten::_nested_[/x]`` stopped ``inspect``)."""
    t = Table(show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    for what, value in [*rows, *(("[yellow]warning[/]", w) for w in warnings)]:
        t.add_row(what, escape(value))
    return t


def _by_op(title: str, rows: list[tuple[str, ...]], *figures: str) -> Table:
    """Op, count and the ``figures`` columns, one row an op type."""
    t = Table(title=title, title_justify="left")
    t.add_column("op")
    for c in ("count", *figures):
        t.add_column(c, justify="right")
    for row in rows:
        t.add_row(*(escape(c) for c in row))  # op names as the trace spells them
    return t


def print_summary(s: dict, console: Console) -> None:
    """Print a trace summary (:func:`benchmint.trace.summary.inspect_trace`) as tables on ``console``."""
    console.print(f"[bold]execution trace[/] {escape(str(s['path']))}", soft_wrap=True, highlight=False)
    by_dev = ", ".join(f"{d}: {_bytes(b)}" for d, b in s["storage_bytes_by_device"].items())
    its, scopes, comm = s["iterations"], s["scopes"], s["communication"]
    names = ", ".join(f"{k} x{v}" for k, v in list(comm["by_name"].items())[:6])
    console.print(_facts([
        ("schema", s["et_schema"]),
        ("nodes", f"{s['nodes']} ({s['ops']} ops, {s['top_level_ops']} top-level, "
                  f"{s['distinct_top_level_ops']} distinct)"),
        ("tensors", f"{s['tensors']} ({s['external_tensors']} from outside the trace)"),
        ("storage", f"{s['storages']} storages, {_bytes(s['storage_bytes'])}" + (f" ({by_dev})" if by_dev else "")),
        ("threads", ", ".join(f"tid {th['tid']}: {th['top_level_ops']} top-level ops" for th in s["threads"])
         or "none"),
        ("iterations", ", ".join(f"ProfilerStep#{i['number']} ({i['top_level_ops']} ops)" for i in its)
         if its else "none marked (no ProfilerStep#N)"),
        ("scopes", f"{scopes['count']}" + (": " + ", ".join(list(scopes["by_name"])[:6]) if scopes["count"] else "")),
        ("devices", ", ".join(s["devices"]) or "none"),
        ("communication", f"{comm['top_level_ops']} top-level ops ({names}), {len(comm['collectives'])} with their "
                          "collective's parameters recorded"
         if comm["nodes"] else "none"),
    ], s["warnings"]))
    console.print(_by_op("top-level ops", [(name, str(n)) for name, n in s["op_histogram"].items()]))

    k = s.get("kineto")
    if k:
        console.print(f"[bold]kineto[/] {escape(str(k['path']))}", soft_wrap=True, highlight=False)
        console.print(_facts([
            ("matched", f"{k['matched_top_level_ops']} of {k['top_level_ops']} top-level ops "
                        f"({100 * k['matched_fraction']:.1f}%), {k['matched_nodes']} of "
                        f"{k['candidate_nodes']} nodes, by {k['method']}"),
            ("top-level op time", f"{k['top_level_time_s'] * 1e3:.3f} ms"),
            ("CPU gaps", f"{k['cpu_gap_s'] * 1e3:.3f} ms"),
            ("device activity", f"{k['device_events']} events, {k['device_time_s'] * 1e3:.3f} ms"),
        ], k["warnings"]))
        console.print(_by_op("time by op type (top-level ops)", [
            (name, str(v["count"]), f"{v['total_s'] * 1e3:.3f}", f"{v['device_s'] * 1e3:.3f}")
            for name, v in k["time_by_op"].items()], "CPU ms", "device ms"))

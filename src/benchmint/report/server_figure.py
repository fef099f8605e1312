"""The server's own view of an LLM run in the report: running and waiting requests and KV-cache usage over
the run, from the ``server_metrics.json`` that ``llm bench`` writes beside the result (llm/server_metrics.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from benchmint.core.jsonio import read_json
from benchmint.report.data import label, resolve_artifact
from benchmint.results.record import RunRecord

SERIES = (("running_requests", "running requests", 1), ("waiting_requests", "waiting requests", 1),
          ("kv_cache_usage", "KV-cache usage (%)", 2))


def server_series(rec: RunRecord, base_dirs: list[Path]) -> dict[str, Any] | None:
    path = resolve_artifact(rec, "server_metrics", base_dirs)
    if path is None:
        return None
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("t_s") else None


def server_metrics_figure(rec: RunRecord, base_dirs: list[Path]) -> go.Figure | None:
    """Gauges the server reported during one run against the run's time (client clock); None without any."""
    data = server_series(rec, base_dirs)
    if data is None:
        return None
    t = data["t_s"]
    gauges = data.get("gauges") or {}
    if not any(k in gauges for k, _, _ in SERIES):
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=["requests at the server", "KV-cache usage"])
    for key, name, col in SERIES:
        ys = gauges.get(key)
        if not ys or len(ys) != len(t):
            continue
        if key == "kv_cache_usage":
            ys = [None if y is None else 100 * y for y in ys]
        fig.add_scatter(x=t, y=ys, mode="lines+markers", name=name, row=1, col=col, line={"shape": "hv"})
    fig.update_layout(template="plotly_white", height=360, margin={"t": 70},
                      title=f"Server metrics (its /metrics, scraped on the client's clock): {label(rec)}",
                      legend={"orientation": "h", "y": -0.25})
    fig.update_xaxes(title_text="s from the run's start")
    return fig

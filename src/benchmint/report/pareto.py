"""Throughput against latency across LLM runs, with the Pareto frontier marked: output tokens/s against TTFT
p99 and against TPOT p99, one marker per run. A run is on the frontier when no other run has both a lower
(or equal) latency and a higher (or equal) throughput, one of them strictly.

Only complete, real measurements compete for the frontier: a partial run (interrupted, or with failed requests:
its figures are those of the few requests that finished), a failed or invalid one, or a run of the simulated
engine (``--backend sim``) is still drawn, as a cross, and named as left off the frontier."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from benchmint.report.data import label, percentiles, throughput
from benchmint.results.measured import REASONS, record_reason
from benchmint.results.record import RunRecord

TEMPLATE = "plotly_white"
PANELS = (("ttft_s", "TTFT p99"), ("tpot_s", "TPOT p99"))
FRONTIER_COLOR = "#444444"


def left_off_frontier(rec: RunRecord) -> str | None:
    """Why a run may not sit on the frontier (it is no complete, real measurement), or None."""
    why = record_reason(rec)
    return None if why is None else REASONS.get(why, why)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, throughput) points that no other point dominates (lower latency is better,
    higher throughput is better), ordered by latency."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def points(records: list[RunRecord], metric: str) -> list[tuple[RunRecord, float, float]]:
    """(run, p99 latency in s, output tokens/s) of the runs that have both."""
    out = []
    for r in records:
        y = throughput(r).get("output_tokens_per_s")
        x = percentiles(r).get(metric, {}).get("p99")
        if x is not None and y is not None:
            out.append((r, x, y))
    return out


def pareto_figure(records: list[RunRecord], color: dict[str, str]) -> go.Figure | None:
    """The two panels; ``None`` unless at least two runs have a throughput and a p99 latency."""
    if max(len(points(records, m)) for m, _ in PANELS) < 2:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"output tokens/s vs {t}" for _, t in PANELS])
    legend: set[str] = set()
    for col, (metric, title) in enumerate(PANELS, start=1):
        pts = points(records, metric)
        if not pts:
            continue
        why = [left_off_frontier(r) for r, _, _ in pts]
        eligible = [i for i, w in enumerate(why) if w is None]
        front = [eligible[k] for k in pareto_front([(pts[i][1], pts[i][2]) for i in eligible])]
        on_front = set(front)
        for i, (r, x, y) in enumerate(pts):
            where = (f"left off the Pareto frontier: {why[i]}" if why[i] else
                     "on the Pareto frontier" if i in on_front else "dominated")
            marker = {"color": color.get(r.id), "size": 11}
            if why[i]:
                marker["symbol"] = "x"
            fig.add_scatter(x=[x * 1e3], y=[y], mode="markers",
                            name=label(r) + (f" [{r.status if r.status != 'ok' else 'sim'}]" if why[i] else ""),
                            legendgroup=r.id, showlegend=r.id not in legend, marker=marker,
                            row=1, col=col,
                            hovertemplate=f"{title} %{{x:.4g}} ms<br>%{{y:.4g}} output tokens/s<br>{where}"
                                          "<extra>%{fullData.name}</extra>")
            legend.add(r.id)
        fx = [pts[i][1] * 1e3 for i in front]
        fy = [pts[i][2] for i in front]
        fig.add_scatter(x=fx, y=fy, mode="lines+markers", name="Pareto frontier", legendgroup="frontier",
                        showlegend=col == 1, line={"color": FRONTIER_COLOR, "dash": "dash", "shape": "hv"},
                        marker={"symbol": "circle-open", "size": 18, "color": FRONTIER_COLOR}, hoverinfo="skip",
                        row=1, col=col)
        fig.update_xaxes(title_text=f"{title} (ms)", row=1, col=col)
    fig.update_layout(template=TEMPLATE, title="Throughput vs latency across LLM runs (Pareto frontier dashed)",
                      height=440, legend={"orientation": "h", "y": -0.25}, margin={"t": 70})
    fig.update_yaxes(title_text="output tokens/s", col=1)
    return fig

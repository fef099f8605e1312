"""Figures of workload shapes (see docs/workloads.md): TTFT by turn for multi-turn session runs, and latency
over time (with the offered load beside it) for ramps and trace replays. Built from the ``sessions`` and
``windows`` blocks the run stored in its metrics; ``None`` when no run has them."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from benchmint.report.data import label, metrics, num
from benchmint.results.record import RunRecord

TEMPLATE = "plotly_white"


def _block(rec: RunRecord, key: str) -> dict | None:
    b = metrics(rec).get(key)
    return b if isinstance(b, dict) else None


def session_runs(records: list[RunRecord]) -> list[RunRecord]:
    return [r for r in records if (_block(r, "sessions") or {}).get("by_turn")]


def window_runs(records: list[RunRecord]) -> list[RunRecord]:
    return [r for r in records if (_block(r, "windows") or {}).get("windows")]


def turn_figure(records: list[RunRecord], color: dict[str, str]) -> go.Figure | None:
    """TTFT p50 and p90 (ms) against the turn's index in its session, one line per session run."""
    runs = session_runs(records)
    if not runs:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=["TTFT by turn (p50 solid, p90 dotted)",
                                                        "prompt tokens by turn (history included)"])
    for r in runs:
        turns = [t for t in _block(r, "sessions")["by_turn"] if isinstance(t, dict)]
        x = [t.get("turn") for t in turns]
        c = color.get(r.id)
        for stat, dash, show in (("p50", "solid", True), ("p90", "dot", False)):
            y = [None if num((t.get("ttft_s") or {}).get(stat)) is None else num(t["ttft_s"][stat]) * 1e3 for t in turns]
            fig.add_scatter(x=x, y=y, mode="lines+markers", name=label(r), legendgroup=r.id, showlegend=show,
                            line={"color": c, "dash": dash}, row=1, col=1)
        fig.add_scatter(x=x, y=[num(t.get("input_tokens_mean")) for t in turns], mode="lines+markers",
                        name=label(r), legendgroup=r.id, showlegend=False, line={"color": c}, row=1, col=2)
    fig.update_layout(template=TEMPLATE, title="Multi-turn sessions", height=400,
                      legend={"orientation": "h", "y": -0.25}, margin={"t": 70})
    fig.update_xaxes(title_text="turn", dtick=1)
    fig.update_yaxes(title_text="ms", col=1)
    fig.update_yaxes(title_text="tokens", col=2)
    return fig


def windows_figure(records: list[RunRecord], color: dict[str, str]) -> go.Figure | None:
    """TTFT p50 (ms) and offered load (requests/s) per time window, one line per ramp or trace run."""
    runs = window_runs(records)
    if not runs:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=["TTFT p50 over the run", "offered load over the run"])
    for r in runs:
        b = _block(r, "windows")
        ws = [w for w in b["windows"] if isinstance(w, dict)]
        x = [(num(w.get("start_s")) + num(w.get("end_s"))) / 2 for w in ws]
        y = [None if num((w.get("ttft_s") or {}).get("p50")) is None else num(w["ttft_s"]["p50"]) * 1e3 for w in ws]
        c = color.get(r.id)
        fig.add_scatter(x=x, y=y, mode="lines+markers", name=label(r), legendgroup=r.id, line={"color": c},
                        row=1, col=1)
        fig.add_scatter(x=x, y=[num(w.get("offered_rate_per_s")) for w in ws], mode="lines+markers", name=label(r),
                        legendgroup=r.id, showlegend=False, line={"color": c}, row=1, col=2)
        bend = b.get("latency_bend")
        if isinstance(bend, dict) and num(bend.get("start_s")) is not None:
            fig.add_vline(x=num(bend["start_s"]), line={"dash": "dash", "color": c, "width": 1}, row=1, col=1)
    fig.update_layout(template=TEMPLATE, title="Latency over time (ramps, trace replays)", height=400,
                      legend={"orientation": "h", "y": -0.25}, margin={"t": 70})
    fig.update_xaxes(title_text="seconds from the run's start (scheduled send)")
    fig.update_yaxes(title_text="ms", col=1)
    fig.update_yaxes(title_text="requests/s", col=2)
    return fig

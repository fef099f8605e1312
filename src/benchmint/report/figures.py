"""Plotly figures of the report: replay fidelity per op type, latency CDFs, TTFT/TPOT percentiles,
throughput against offered load and the trials of a peak search. Each builder returns ``None`` when there is
nothing to draw."""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from benchmint.report.data import (
    LatencySamples,
    is_loadgen_run,
    label,
    latency_samples,
    loadgen_percentiles,
    num,
    offered_load,
    per_op_rows,
    percentiles,
    sweep,
    throughput,
)
from benchmint.results.record import RunRecord

PALETTE = qualitative.Plotly + qualitative.D3
TEMPLATE = "plotly_white"
MAX_OPS = 25
MAX_CDF_POINTS = 2000
METRIC_TITLES = {"ttft_s": "TTFT", "tpot_s": "TPOT", "e2e_s": "E2E latency"}
PASS_COLOR, FAIL_COLOR = "#2CA02C", "#D62728"
# p99 of each sweep trial: the verdict's own figure (LoadGen's, or llm bench's), else the client-side one
SWEEP_METRICS = (("TTFT p99", ("ttft_p99_s", "client_ttft_p99_s")),
                 ("TPOT p99", ("tpot_p99_s", "client_tpot_p99_s")))


def colors(records: list[RunRecord]) -> dict[str, str]:
    return {r.id: PALETTE[i % len(PALETTE)] for i, r in enumerate(records)}


def fidelity_figure(rec: RunRecord) -> go.Figure | None:
    """Original vs replayed time per op type (top ops by original time), with the relative error."""
    rows = per_op_rows(rec)[:MAX_OPS]
    rows = [r for r in rows if r.original_s is not None or r.replay_s is not None]
    if not rows:
        return None
    ops = [r.op for r in rows][::-1]
    rows = rows[::-1]
    err_text = [f"{r.error:+.1%}" if r.error is not None else "" for r in rows]
    fig = go.Figure()
    fig.add_bar(y=ops, x=[(r.original_s or 0) * 1e3 for r in rows], orientation="h", name="original",
                marker_color="#636EFA",
                customdata=[[r.count] for r in rows],
                hovertemplate="%{y}<br>original %{x:.4g} ms<br>count %{customdata[0]}<extra></extra>")
    fig.add_bar(y=ops, x=[(r.replay_s or 0) * 1e3 for r in rows], orientation="h", name="replay",
                marker_color="#EF553B", text=err_text, textposition="outside",
                hovertemplate="%{y}<br>replay %{x:.4g} ms<br>error %{text}<extra></extra>")
    fig.update_layout(
        template=TEMPLATE, barmode="group", title=f"Replay fidelity per op type: {label(rec)}",
        xaxis_title="time per iteration (ms)", height=max(320, 26 * len(rows) + 140),
        legend={"orientation": "h", "y": -0.15}, margin={"l": 10, "r": 40, "t": 60, "b": 40},
    )
    fig.update_yaxes(automargin=True)
    return fig


def _cdf_points(values: list[float]) -> tuple[list[float], list[float]]:
    n = len(values)
    if n > MAX_CDF_POINTS:  # keep the shape and the tail: evenly spaced ranks plus the last one
        step = n / MAX_CDF_POINTS
        idx = sorted({int(i * step) for i in range(MAX_CDF_POINTS)} | {n - 1})
    else:
        idx = list(range(n))
    return [values[i] * 1e3 for i in idx], [(i + 1) / n for i in idx]


def latency_cdf_figure(records: list[RunRecord], base_dirs: list[Path],
                       color: dict[str, str]) -> tuple[go.Figure | None, dict[str, str]]:
    """CDFs of TTFT, TPOT and E2E per run; from the per-request file, else from stored percentiles.
    Returns the figure and, per run id, where its curve came from."""
    sources: dict[str, str] = {}
    fig = make_subplots(rows=1, cols=3, subplot_titles=[METRIC_TITLES[m] for m in METRIC_TITLES])
    drawn = 0
    for rec in records:
        samples: LatencySamples = latency_samples(rec, base_dirs)
        sources[rec.id] = samples.source
        pct = percentiles(rec)
        name = label(rec) + (" (client)" if is_loadgen_run(rec) else "")  # the requests' own times, not LoadGen's
        first = True
        for col, metric in enumerate(METRIC_TITLES, start=1):
            vals = samples.values.get(metric)
            if vals:
                x, y = _cdf_points(vals)
                fig.add_scatter(x=x, y=y, mode="lines", line={"color": color[rec.id], "shape": "hv"},
                                name=name, legendgroup=rec.id, showlegend=first, row=1, col=col,
                                hovertemplate="%{x:.4g} ms<br>P(≤x) = %{y:.3f}<extra>" + name + "</extra>")
            elif metric in pct:
                pts = sorted(
                    (v * 1e3, float(k[1:]) / 100 if k.startswith("p") else 1.0)
                    for k, v in pct[metric].items() if k != "mean"
                )
                if not pts:
                    continue
                fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                line={"color": color[rec.id], "dash": "dot"},
                                name=name + " (from percentiles)", legendgroup=rec.id,
                                showlegend=first, row=1, col=col,
                                hovertemplate="%{x:.4g} ms at quantile %{y}<extra>" + name + "</extra>")
            else:
                continue
            first = False
            drawn += 1
    if not drawn:
        return None, sources
    fig.update_layout(template=TEMPLATE, title="Latency CDFs", height=420,
                      legend={"orientation": "h", "y": -0.25}, margin={"t": 70})
    fig.update_xaxes(title_text="ms")
    fig.update_yaxes(title_text="fraction of requests", range=[0, 1.02], col=1)
    return fig, sources


def percentile_figure(records: list[RunRecord], color: dict[str, str]) -> go.Figure | None:
    """TTFT and TPOT percentiles (p50, p90, p99) per run, grouped bars in ms."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["TTFT", "TPOT"])
    drawn = 0
    for rec in records:
        # an MLPerf run has two sets: LoadGen's own (hatched) and the client's of the same requests
        sets = [(percentiles(rec), "")]
        if is_loadgen_run(rec):
            sets = [(loadgen_percentiles(rec), " (LoadGen)"), (sets[0][0], " (client)")]
        for pct, source in sets:
            first = True
            name = label(rec) + source
            for col, metric in enumerate(("ttft_s", "tpot_s"), start=1):
                block = pct.get(metric) or {}
                keys = [k for k in ("p50", "p90", "p99") if k in block]
                if not keys:
                    continue
                fig.add_bar(x=keys, y=[block[k] * 1e3 for k in keys], name=name, legendgroup=rec.id + source,
                            showlegend=first, marker_color=color[rec.id], row=1, col=col,
                            marker_pattern_shape="/" if source == " (LoadGen)" else "",
                            hovertemplate="%{x}: %{y:.4g} ms<extra>" + name + "</extra>")
                first = False
                drawn += 1
    if not drawn:
        return None
    fig.update_layout(template=TEMPLATE, title="TTFT and TPOT percentiles", barmode="group", height=420,
                      legend={"orientation": "h", "y": -0.2}, margin={"t": 70})
    fig.update_yaxes(title_text="ms", col=1)
    return fig


def throughput_figure(records: list[RunRecord]) -> go.Figure | None:
    """Requests/s and output tokens/s against the offered load (rate or concurrency), one line per model
    and backend."""
    series: dict[str, list[tuple[float, RunRecord]]] = defaultdict(list)
    x_titles: set[str] = set()
    for rec in records:
        load = offered_load(rec)
        if load is None or not throughput(rec):
            continue
        x_titles.add(load[1])
        w, c = rec.workload or {}, rec.config or {}
        key = " / ".join(str(v) for v in (w.get("model_name") or rec.kind, c.get("backend") or c.get("engine"),
                                          c.get("scenario")) if v)
        series[key].append((load[0], rec))
    if not series:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=["requests/s", "output tokens/s"])
    for i, (key, pts) in enumerate(sorted(series.items())):
        pts.sort(key=lambda p: p[0])
        color = PALETTE[i % len(PALETTE)]
        for col, metric in enumerate(("requests_per_s", "output_tokens_per_s"), start=1):
            xs = [x for x, r in pts if metric in throughput(r)]
            ys = [throughput(r)[metric] for _, r in pts if metric in throughput(r)]
            if not xs:
                continue
            fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=key, legendgroup=key,
                            showlegend=col == 1, line={"color": color}, row=1, col=col,
                            hovertemplate="load %{x}<br>%{y:.4g}<extra>" + key + "</extra>")
    fig.update_layout(template=TEMPLATE, title="Throughput vs offered load", height=420,
                      legend={"orientation": "h", "y": -0.25}, margin={"t": 70})
    fig.update_xaxes(title_text=" or ".join(sorted(x_titles)))
    return fig


def official_figure(records: list[RunRecord], max_models: int = 4, max_systems: int = 12) -> go.Figure | None:
    """Imported official MLPerf results: the best output tokens/s (or samples/s) per accelerator for each
    accelerator, for the models with the most results, one panel per model and scenario."""
    groups: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    unit: dict[tuple[str, str], str] = {}
    for rec in records:
        if rec.kind != "imported":
            continue
        tp = throughput(rec)
        for metric, what in (("output_tokens_per_s_per_accelerator", "output tokens/s per accelerator"),
                             ("samples_per_s_per_accelerator", "samples/s per accelerator")):
            if metric in tp:
                key = (str((rec.workload or {}).get("model_name")), str((rec.config or {}).get("scenario")))
                acc = str(((rec.system or {}).get("accelerator") or {}).get("name") or "unknown")
                groups[key][acc] = max(groups[key].get(acc, 0.0), tp[metric])
                unit[key] = what
                break
    if not groups:
        return None
    keys = sorted(groups, key=lambda k: (-len(groups[k]), k))[:max_models]
    fig = make_subplots(rows=len(keys), cols=1, subplot_titles=[f"{m} ({s}): {unit[(m, s)]}" for m, s in keys],
                        vertical_spacing=0.35 / len(keys))
    for row, key in enumerate(keys, start=1):
        best = sorted(groups[key].items(), key=lambda kv: -kv[1])[:max_systems][::-1]
        fig.add_bar(y=[a for a, _ in best], x=[v for _, v in best], orientation="h", showlegend=False,
                    marker_color=PALETTE[row - 1], row=row, col=1,
                    hovertemplate="%{y}<br>%{x:.4g}<extra></extra>")
    fig.update_layout(template=TEMPLATE, title="Official MLPerf results: best per accelerator",
                      height=max(360, 300 * len(keys)), margin={"l": 10, "r": 20, "t": 80, "b": 40})
    fig.update_yaxes(automargin=True)
    return fig


def sweep_figure(rec: RunRecord) -> go.Figure | None:
    """One peak search: p99 TTFT and TPOT (ms) of each trial against its rate, markers green where the trial
    passed and red where it failed, and a dashed line at the peak (the highest passing rate)."""
    sw = sweep(rec)
    if sw is None:
        return None
    trials = [t for t in sw["curve"] if isinstance(t, dict) and num(t.get("rate")) is not None]
    trials.sort(key=lambda t: num(t["rate"]))
    if not trials:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=[t for t, _ in SWEEP_METRICS])
    drawn = 0
    legend_shown: set[bool] = set()
    for col, (title, keys) in enumerate(SWEEP_METRICS, start=1):
        pts = []
        for t in trials:
            m = t.get("metrics") if isinstance(t.get("metrics"), dict) else {}
            v = next((num(m.get(k)) for k in keys if num(m.get(k)) is not None), None)
            if v is not None:
                reason = html.escape(str(t.get("reason") or ""), quote=False)  # hover text is plotly's HTML
                pts.append((num(t["rate"]), v * 1e3, bool(t.get("passed")), reason))
        if not pts:
            continue
        drawn += len(pts)
        fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", showlegend=False,
                        line={"color": "#BBBBBB", "width": 1}, hoverinfo="skip", row=1, col=col)
        for passed, name, color in ((True, "passed", PASS_COLOR), (False, "failed", FAIL_COLOR)):
            sel = [p for p in pts if p[2] is passed]
            if not sel:
                continue
            fig.add_scatter(
                x=[p[0] for p in sel], y=[p[1] for p in sel], mode="markers", name=name, legendgroup=name,
                showlegend=passed not in legend_shown, marker={"color": color, "size": 10}, row=1, col=col,
                customdata=[[name, "<br>" + p[3] if p[3] else ""] for p in sel],
                hovertemplate="rate %{x:.4g}<br>" + title + " %{y:.4g} ms<br>%{customdata[0]}%{customdata[1]}"
                              "<extra></extra>",
            )
            legend_shown.add(passed)
    if not drawn:
        return None
    peak = num(sw.get("peak_rate"))
    if peak is not None:
        fig.add_vline(x=peak, line={"dash": "dash", "color": PASS_COLOR, "width": 1},
                      annotation_text=f"{'highest passing so far' if sw.get('interrupted') else 'peak'} {peak:.4g}",
                      annotation_position="top left",
                      annotation_font_color=PASS_COLOR)
    fig.update_layout(template=TEMPLATE, title=f"Peak search: {label(rec)}", height=420,
                      legend={"orientation": "h", "y": -0.25}, margin={"t": 70})
    fig.update_xaxes(title_text=str(sw.get("unit") or "rate"))
    fig.update_yaxes(title_text="ms", col=1)
    return fig

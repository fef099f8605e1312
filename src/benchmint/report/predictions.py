"""The report's "Predictions" section, from the JSON that ``benchmint learn eval --json`` and ``benchmint
recommend --json`` write (plain dicts: the report layer does not import the learn layer).

- predicted vs measured, with each row's 90% interval, for one split of an evaluation;
- the per-group error table (worst group first) and the overall line of every split;
- the recommendation table.
"""

from __future__ import annotations

import html
import math
from typing import Any

import plotly.graph_objects as go


def _esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _pct(v: Any) -> str:
    return "-" if not isinstance(v, int | float) or not math.isfinite(v) else f"{v * 100:.1f}%"


def _num(v: Any) -> str:
    return "-" if not isinstance(v, int | float) or not math.isfinite(v) else f"{v:.4g}"


def kind_of(doc: dict[str, Any]) -> str | None:
    if "splits" in doc or ("split" in doc and "overall" in doc):
        return "evaluation"
    if "configurations" in doc:
        return "recommendation"
    return None


def _splits(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return doc["splits"] if "splits" in doc else {doc["split"]: doc}


def error_table(doc: dict[str, Any], max_groups: int = 12) -> str:
    cols = ("split / group", "n", "MAPE", "median APE", "P90 APE", "bias", "R² log", "90% coverage")
    rows = []
    for split, res in _splits(doc).items():
        o = res.get("overall", {})
        nf = (res.get("noise_floor") or {}).get("median_ape")
        r2 = o.get("r2_log")
        rows.append(f"<tr class='bm-split'><td><b>{_esc(split)}</b> (all; noise floor {_pct(nf)})</td>"
                    f"<td>{o.get('n', 0)}</td><td>{_pct(o.get('mape'))}</td><td>{_pct(o.get('median_ape'))}</td>"
                    f"<td>{_pct(o.get('p90_ape'))}</td><td>{_pct(o.get('bias'))}</td>"
                    f"<td>{'-' if r2 is None else f'{r2:.3f}'}</td><td>{_pct(o.get('coverage'))}</td></tr>")
        for g in (res.get("groups") or [])[:max_groups]:
            r2 = g.get("r2_log")
            rows.append(f"<tr><td>&nbsp;&nbsp;{_esc(res.get('group_by'))}={_esc(g.get('group'))}</td>"
                        f"<td>{g.get('n', 0)}</td><td>{_pct(g.get('mape'))}</td><td>{_pct(g.get('median_ape'))}</td>"
                        f"<td>{_pct(g.get('p90_ape'))}</td><td>{_pct(g.get('bias'))}</td>"
                        f"<td>{'-' if r2 is None else f'{r2:.3f}'}</td><td>{_pct(g.get('coverage'))}</td></tr>")
    head = "".join(f"<th>{c}</th>" for c in cols)
    return f"<table class='bm-pred-errors'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def predicted_vs_measured(doc: dict[str, Any]) -> go.Figure | None:
    """Log-log scatter of one split's held-out predictions with their 90% intervals (the first split that
    carries per-row predictions)."""
    for split, res in _splits(doc).items():
        pts = [p for p in res.get("predictions") or [] if p.get("prediction") and p.get("measured")]
        if not pts:
            continue
        x = [p["measured"] for p in pts]
        y = [p["prediction"] for p in pts]
        up = [(p["upper"] or p["prediction"]) - p["prediction"] for p in pts]
        down = [p["prediction"] - (p["lower"] or p["prediction"]) for p in pts]
        fig = go.Figure()
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="markers", name="held-out rows", text=[p.get("group") for p in pts],
            error_y={"type": "data", "symmetric": False, "array": up, "arrayminus": down, "thickness": 0.6},
            marker={"size": 5, "opacity": 0.7},
            hovertemplate="%{text}<br>measured %{x:.4g}<br>predicted %{y:.4g}<extra></extra>"))
        lo, hi = min(x + y), max(x + y)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="predicted = measured",
                                 line={"dash": "dot", "color": "gray"}))
        fig.update_layout(title=f"{res.get('target')}: predicted vs measured, split {split} (90% intervals)",
                          xaxis={"title": f"measured ({res.get('unit')})", "type": "log"},
                          yaxis={"title": f"predicted ({res.get('unit')})", "type": "log"}, height=480)
        return fig
    return None


def recommendation_table(doc: dict[str, Any]) -> str:
    cols = ("#", "accelerator", "n", "precision", "tokens/s [90%]", "$/M tokens [90%]", "J/token at TDP", "note")
    rows = []
    for i, c in enumerate(doc.get("configurations") or [], 1):
        def rng(k: str, c: dict = c) -> str:
            v = c.get(k)
            return "-" if v is None else f"{_num(v)} [{_num(c.get(k + '_lower'))}-{_num(c.get(k + '_upper'))}]"

        rows.append(f"<tr><td>{i}</td><td>{_esc(c.get('accelerator'))}</td><td>{c.get('count')}</td>"
                    f"<td>{_esc(c.get('precision'))}</td><td>{rng('tokens_per_s')}</td>"
                    f"<td>{rng('usd_per_million_tokens')}</td><td>{rng('joules_per_token_at_tdp')}</td>"
                    f"<td>{'extrapolated' if c.get('extrapolated') else ''}</td></tr>")
    head = "".join(f"<th>{c}</th>" for c in cols)
    notes = "".join(f"<p class='note'>{_esc(n)}</p>" for n in doc.get("notes") or [])
    title = (f"<p class='note'>Recommendation for <b>{_esc(doc.get('model'))}</b> ({_esc(doc.get('scenario'))}, "
             f"{_esc(doc.get('latency_class'))} latency); predictor: {_esc(doc.get('predictor'))}.</p>")
    return title + f"<table class='bm-recommend'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>" + notes


def section(docs: list[dict[str, Any]]) -> list[str | go.Figure]:
    """The section's parts in order (HTML strings and figures)."""
    parts: list[str | go.Figure] = ["<h2 id='predictions'>Predictions</h2>"]
    evals = [d for d in docs if kind_of(d) == "evaluation"]
    recs = [d for d in docs if kind_of(d) == "recommendation"]
    if not evals and not recs:
        parts.append("<p class='note'>No predictions given (pass the JSON of <code>benchmint learn eval --json</code> "
                     "or <code>benchmint recommend --json</code> with <code>--predictions</code>).</p>")
    for d in evals:
        fig = predicted_vs_measured(d)
        if fig is not None:
            parts.append(fig)
        parts.append("<p class='note'>Held-out error per split and per group (worst first); near-duplicate "
                     "results always fall in one fold; coverage = share of rows inside their 90% interval.</p>")
        parts.append(error_table(d))
    for d in recs:
        parts.append(recommendation_table(d))
    return parts

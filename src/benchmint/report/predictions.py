"""The report's "Predictions" section, from the JSON that ``benchmint learn eval --json`` and ``benchmint
recommend --json`` write (plain dicts: the report layer does not import the learn layer).

- predicted vs measured, with each row's 90% interval, for one split of an evaluation;
- the per-group error table (worst group first) and the overall line of every split;
- the recommendation table.

The tables are page data (:mod:`benchmint.report.page`); the template writes and escapes them.
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

from benchmint.report.page import Cell, Note, Row, Table


def _pct(v: Any) -> str:
    return "-" if not isinstance(v, int | float) or not math.isfinite(v) else f"{v * 100:.1f}%"


def _num(v: Any) -> str:
    return "-" if not isinstance(v, int | float) or not math.isfinite(v) else f"{v:.4g}"


def kind_of(doc: dict[str, Any]) -> str | None:
    """"evaluation", "recommendation", or None for any other JSON (a `learn next --json` holds a count of splits,
    and a file of the right keys with the wrong shapes is not one either: it would fail while the page is drawn)."""
    def _dicts(v: Any) -> bool:
        return all(isinstance(x, dict) for x in v)

    def _split(r: Any) -> bool:  # one split's result: its lists are lists of rows
        return (isinstance(r, dict) and isinstance(r.get("overall", {}), dict)
                and all(isinstance(r.get(k) or [], list) and _dicts(r.get(k) or []) for k in ("groups", "predictions")))

    splits = doc.get("splits")
    if isinstance(splits, dict) and splits and all(_split(r) for r in splits.values()):
        return "evaluation"
    if "splits" not in doc and "split" in doc and isinstance(doc.get("overall"), dict) and _split(doc):
        return "evaluation"
    confs = doc.get("configurations")
    if isinstance(confs, list) and _dicts(confs):
        return "recommendation"
    return None


def _splits(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return doc["splits"] if "splits" in doc else {doc["split"]: doc}


def error_table(doc: dict[str, Any], max_groups: int = 12) -> Table:
    cols = ("split / group", "n", "MAPE", "median APE", "P90 APE", "bias", "R² log", "90% coverage")

    def figures(o: dict[str, Any]) -> list[Cell]:
        r2 = o.get("r2_log")
        return [Cell(str(o.get("n", 0))), *(Cell(_pct(o.get(k))) for k in ("mape", "median_ape", "p90_ape", "bias")),
                Cell("-" if r2 is None else f"{r2:.3f}"), Cell(_pct(o.get("coverage")))]

    rows = []
    for split, res in _splits(doc).items():
        o = res.get("overall", {})
        nf = (res.get("noise_floor") or {}).get("median_ape")
        rows.append(Row([Cell(f"{split} (all; noise floor {_pct(nf)})", strong=True), *figures(o)], cls="bm-split"))
        for g in (res.get("groups") or [])[:max_groups]:
            rows.append(Row([Cell(f"{res.get('group_by')}={g.get('group')}", indent=True), *figures(g)]))
    return Table("", [Cell(c) for c in cols], rows, cls="bm-pred-errors")


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


def recommendation_table(doc: dict[str, Any]) -> list[Note | Table]:
    cols = ("#", "accelerator", "n", "precision", "tokens/s [90%]", "$/M tokens [90%]", "J/token at TDP", "note")
    rows = []
    for i, c in enumerate(doc.get("configurations") or [], 1):
        def rng(k: str, c: dict = c) -> str:
            v = c.get(k)
            return "-" if v is None else f"{_num(v)} [{_num(c.get(k + '_lower'))}-{_num(c.get(k + '_upper'))}]"

        rows.append(Row([Cell(str(i)), Cell(str(c.get("accelerator"))), Cell(str(c.get("count"))),
                         Cell(str(c.get("precision"))), Cell(rng("tokens_per_s")),
                         Cell(rng("usd_per_million_tokens")), Cell(rng("joules_per_token_at_tdp")),
                         Cell(("extrapolated" + (f": {c['extrapolated_why']}" if c.get("extrapolated_why") else ""))
                              if c.get("extrapolated") else "")]))
    title = Note(f"{doc.get('scenario')} scenario, {doc.get('latency_class')} latency; predictor: {doc.get('predictor')}.",
                 lead=f"Recommendation for {doc.get('model')}")
    return [title, Table("", [Cell(c) for c in cols], rows, cls="bm-recommend"),
            *(Note(str(n)) for n in doc.get("notes") or [])]


def section(docs: list[dict[str, Any]]) -> list[Note | Table | go.Figure]:
    """The section's parts in order (notes, tables and figures)."""
    parts: list[Note | Table | go.Figure] = []
    evals = [d for d in docs if kind_of(d) == "evaluation"]
    recs = [d for d in docs if kind_of(d) == "recommendation"]
    if not evals and not recs:
        parts.append(Note("No predictions given (pass the JSON of `benchmint learn eval --json` or "
                          "`benchmint recommend --json` with --predictions)."))
    for d in evals:
        fig = predicted_vs_measured(d)
        if fig is not None:
            parts.append(fig)
        parts.append(Note("Held-out error per split and per group (worst first); near-duplicate results always "
                          "fall in one fold; coverage = share of rows inside their 90% interval."))
        parts.append(error_table(d))
    for d in recs:
        parts += recommendation_table(d)
    return parts

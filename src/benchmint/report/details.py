"""The per-run sections at the bottom of the report: for each run, what ran and how it was measured, its
timing's spread, and every sentence the run left for a reader (notes, LoadGen's reasons, client-bound
reasons, request errors, token-count flags), with the files it wrote."""

from __future__ import annotations

import datetime as dt

from benchmint.report import data, fmt
from benchmint.report.headline import Headline
from benchmint.report.page import Facts
from benchmint.results.record import RunRecord

MAX_LINES = 8


def facts(rec: RunRecord, h: Headline) -> Facts:
    items: list[tuple[str, list[str]]] = [
        ("run", [f"{rec.id} ({rec.kind}, status {rec.status}), created "
                 + dt.datetime.fromtimestamp(rec.created_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")]),
        ("what ran", [h.what]),
        ("on what", [h.on]),
    ]
    items += [(f.name, [f.value + (f" ({f.hint})" if f.hint else "")]) for f in h.figures]
    t = data.timing(rec)
    if t is not None and t.median_s is not None:
        spread = [f"median {fmt.duration(t.median_s)}"]
        if t.p10_s is not None and t.p90_s is not None:
            spread.append(f"p10-p90 {fmt.duration(t.p10_s)} - {fmt.duration(t.p90_s)}")
        if t.iqr_s is not None:
            spread.append(f"IQR {fmt.duration(t.iqr_s)} ({fmt.percent(t.iqr_ratio, decimals=0)} of the median)")
        if t.n:
            spread.append(f"{t.n} samples")
        if t.noisy is not None:
            spread.append("noisy" if t.noisy else "not noisy")
        items.append(("timing", [", ".join(spread)]))
    gp, dur = data.goodput(rec), data.duration_s(rec)
    if gp is not None:
        items.append(("goodput", [fmt.rate(gp, "req/s") + " meeting every SLO"]))
    if dur is not None:
        items.append(("measured for", [fmt.duration(dur)]))
    how = data.how_measured_lines(rec)
    if how:
        items.append(("how measured", how))
    n = data.notes(rec)
    if n:
        items.append(("notes", n))
    v = data.loadgen_validity(rec)
    if v is not None and v.reasons:
        items.append((f"LoadGen: {v.verdict or 'verdict'} because", v.reasons[:MAX_LINES]))
    cb = data.client_bound(rec)
    if cb is not None and cb[0]:
        items.append(("client-bound because", cb[1][:MAX_LINES]))
    errors = data.request_errors(rec)
    if errors:
        items.append(("failed requests", [f"{k}: {n}" for k, n in list(errors.items())[:MAX_LINES]]))
    flagged, examples = data.token_flags(rec)
    if flagged:
        items.append((f"token counts flagged ({flagged})", examples[:3]))
    cmd = data.command_line(rec)
    if cmd:
        items.append(("command line", [cmd]))
    arts = data.artifacts(rec)
    if arts:
        items.append(("files", [f"{k}: {v}" for k, v in list(arts.items())[:MAX_LINES]]))
    return Facts(items, id=f"facts-{h.anchor}")

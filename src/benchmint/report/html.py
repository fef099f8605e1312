"""One self-contained HTML report, written by a jinja2 template (``templates/report.html.j2``, autoescape on):
plotly.js, the CSS and the scripts are inlined, so the file opens offline (no CDN).

The page, top to bottom: a headline per run (what ran, on what, the main figures, valid or not, noisy or
not); the runs side by side (key figures, then only the fields that differ); throughput against latency
across LLM runs with the Pareto frontier; replay fidelity; latency; throughput against load; workload shapes;
peak searches; official MLPerf results; predictions; then one section per run with its details.

The page ends with a small self-check script that counts the plots that drew and the script errors seen,
and shows the result at the bottom of the page (``#bm-selfcheck``; the headless-browser test reads it).
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path

import jinja2
import plotly.graph_objects as go
from markupsafe import Markup

from benchmint.report import figures
from benchmint.report.compare import MAX_COMPARE, comparison
from benchmint.report.data import (
    coverage,
    is_llm,
    is_replay,
    is_sweep,
    label,
    num,
    per_op_rows,
    replay_error,
    sweep,
)
from benchmint.report.fmt import fmt_value
from benchmint.report.headline import headline
from benchmint.report.page import Cell, PlotCounter, Row, Section, Table
from benchmint.results.record import RunRecord

__all__ = ["fmt_value", "render", "write_report"]

MAX_FIDELITY_RUNS = 8
MAX_SWEEP_RUNS = 6
MAX_HEADLINES = MAX_COMPARE


@cache
def environment() -> jinja2.Environment:
    """The template environment: the templates ship in the package (``benchmint/report/templates``)."""
    return jinja2.Environment(loader=jinja2.PackageLoader("benchmint.report", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def fidelity_table(records: list[RunRecord]) -> Table:
    rows = []
    for r in records:
        cov_n, cov_t = coverage(r)
        rows.append(Row([Cell(label(r)), Cell(fmt_value("metrics__error", replay_error(r)), num=True),
                         Cell(fmt_value("metrics__coverage__count", cov_n), num=True),
                         Cell(fmt_value("metrics__coverage__time", cov_t), num=True),
                         Cell(str(len(per_op_rows(r))), num=True)]))
    cols = ("run", "error (replay vs original)", "coverage (count)", "coverage (time)", "op types")
    return Table("bm-fidelity", [Cell(c) for c in cols], rows)


def sweep_note(rec: RunRecord) -> tuple[str, str]:
    """(the run's label, one line on its peak search: the peak or that no rate passed, trials, why it stopped,
    the criterion)."""
    sw = sweep(rec) or {}
    unit = sw.get("unit") or "rate"
    peak = num(sw.get("peak_rate"))
    stopped = bool(sw.get("interrupted"))  # Ctrl-C: the search did not finish, its peak may lie higher
    if peak is not None:
        peak_text = f"highest passing so far {peak:.4g} {unit}" if stopped else f"peak {peak:.4g} {unit}"
    else:
        peak_text = "no passing rate so far" if stopped else "no passing rate"
    curve = sw.get("curve") or []
    trials = sw.get("trials_used", len(curve))
    bits = [peak_text, f"{trials} trial(s)"]
    if sw.get("stopped_because"):
        bits.append(f"stopped: {sw['stopped_because']}")
    if sw.get("criterion"):
        bits.append(f"criterion: {sw['criterion']}")
    if not curve:
        bits.append("no trials recorded")
    return label(rec), " · ".join(bits)


def _fidelity(records: list[RunRecord], plots: PlotCounter) -> Section:
    s = Section("fidelity", "Replay fidelity per op type")
    replays = [r for r in records if is_replay(r)]
    if not replays:
        s.note("No replay runs in this report.")
        return s
    s.note("error = (replay time - original time) / original time, per iteration; coverage = replayed ops (or "
           "their recorded time) over all top-level ops.")
    s.parts.append(fidelity_table(replays))
    for r in replays[-MAX_FIDELITY_RUNS:]:
        if not plots.add(s, figures.fidelity_figure(r)):
            s.note("no per-op-type timings recorded.", lead=label(r))
    return s


def _latency(llms: list[RunRecord], base_dirs: list[Path], color: dict[str, str], plots: PlotCounter) -> Section:
    s = Section("latency", "Latency")
    if not llms:
        s.note("No LLM runs in this report.")
        return s
    fig, sources = figures.latency_cdf_figure(llms, base_dirs, color)
    if plots.add(s, fig):
        fallback = [label(r) for r in llms if sources.get(r.id) == "percentiles"]
        if fallback:
            s.note("Per-request file not found for " + ", ".join(fallback)
                   + ": their curves (dotted) join the stored percentiles.")
    else:
        s.note("No latency data in these runs.")
    plots.add(s, figures.percentile_figure(llms, color))
    from benchmint.report.server_figure import server_metrics_figure

    for r in llms:  # the server's own view of each run, where its /metrics was scraped
        plots.add(s, server_metrics_figure(r, base_dirs))
    return s


def _pareto(llms: list[RunRecord], color: dict[str, str], plots: PlotCounter) -> Section:
    from benchmint.report.pareto import pareto_figure

    s = Section("pareto", "Throughput vs latency")
    if not plots.add(s, pareto_figure(llms, color)):
        s.note("Needs two or more LLM runs with an output throughput and a p99 TTFT or TPOT.")
    else:
        s.note("One marker per run; the dashed line joins the runs no other run beats on both throughput and "
               "latency (the Pareto frontier): up and to the left is better.")
        from benchmint.report.pareto import left_off_frontier

        off = [r for r in llms if left_off_frontier(r)]
        if off:
            s.note(f"{len(off)} run(s) drawn as crosses are left off the frontier, not being complete, real "
                   "measurements (partial, failed or invalid runs; the simulated backend).")
    return s


def _throughput(llms: list[RunRecord], plots: PlotCounter) -> Section:
    s = Section("throughput", "Throughput vs load")
    if not plots.add(s, figures.throughput_figure(llms)):
        s.note("No runs with both a throughput and an offered load (rate or concurrency) in their configuration.")
    return s


def _shapes(llms: list[RunRecord], color: dict[str, str], plots: PlotCounter) -> Section | None:
    from benchmint.report import shapes

    sfigs = [f for f in (shapes.turn_figure(llms, color), shapes.windows_figure(llms, color)) if f is not None]
    if not sfigs:
        return None
    s = Section("shapes", "Workload shapes")  # sessions, ramps, trace replays (docs/workloads.md)
    s.note("TTFT by turn index for multi-turn sessions; latency per time window (by scheduled send) for ramps and "
           "trace replays, the dashed line where TTFT p50 first doubled.")
    for f in sfigs:
        plots.add(s, f)
    return s


def _sweeps(records: list[RunRecord], plots: PlotCounter) -> Section | None:
    sweeps = sorted((r for r in records if is_sweep(r)), key=lambda r: (r.created_s, r.id))
    if not sweeps:
        return None
    s = Section("sweeps", "Peak searches")
    if len(sweeps) > MAX_SWEEP_RUNS:
        s.note(f"Showing the newest {MAX_SWEEP_RUNS} of {len(sweeps)} peak searches.")
    for r in sweeps[-MAX_SWEEP_RUNS:]:
        lead, text = sweep_note(r)
        s.note(text, lead=lead, cls="bm-sweep")
        if not plots.add(s, figures.sweep_figure(r)) and (sweep(r) or {}).get("curve"):
            s.note("no trial recorded a p99 TTFT or TPOT.", lead=label(r))
    return s


def _official(records: list[RunRecord], plots: PlotCounter) -> Section | None:
    imported = [r for r in records if r.kind == "imported"]
    if not imported:
        return None
    s = Section("official", "Official MLPerf results")
    s.note(f"{len(imported)} imported result(s) (kind", code="imported",
           tail="); units normalized as described in docs/results.md.")
    plots.add(s, figures.official_figure(imported))
    return s


def _predictions(docs: list[dict], plots: PlotCounter) -> Section:
    from benchmint.report.predictions import section

    s = Section("predictions", "Predictions")
    for part in section(docs):
        if isinstance(part, go.Figure):
            plots.add(s, part)
        else:
            s.parts.append(part)
    return s


def _run_sections(records: list[RunRecord], heads: dict[str, object]) -> list[Section]:
    from benchmint.report.details import facts

    own = [r for r in records if r.kind != "imported"][-MAX_COMPARE:]
    if not own:
        return []
    top = Section("runs", "Run by run")
    top.note("Each run's details: how it was measured, its timing's spread, and what it said about itself.")
    out = [top]
    for r in own:
        h = heads.get(r.id) or headline(r)
        sec = Section(h.anchor, f"{h.kind}: {h.label}", level=3)
        sec.parts.append(facts(r, h))
        out.append(sec)
    return out


def _headlines(records: list[RunRecord]) -> list:
    own = [r for r in records if r.kind != "imported"]
    imported = [r for r in records if r.kind == "imported"]
    chosen = own[-MAX_HEADLINES:]
    chosen += imported[-(MAX_HEADLINES - len(chosen)):] if len(chosen) < MAX_HEADLINES else []
    return [headline(r) for r in chosen]


def render(records: list[RunRecord], title: str = "benchmint report",
           base_dirs: list[Path] | None = None, predictions: list[dict] | None = None) -> str:
    """The whole report as one HTML string."""
    from plotly.offline import get_plotlyjs

    from benchmint import __version__

    base_dirs = base_dirs or []
    plots = PlotCounter()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    kinds: dict[str, int] = {}
    for r in records:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    summary = (f"{len(records)} run(s) ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items())) or 'none'}); "
               f"generated {now} by benchmint {__version__}.")
    heads = _headlines(records)
    color = figures.colors(records)
    llms = [r for r in records if is_llm(r)]
    sections: list[Section] = [_pareto(llms, color, plots), _fidelity(records, plots),
                               _latency(llms, base_dirs, color, plots), _throughput(llms, plots)]
    sections += [s for s in (_shapes(llms, color, plots), _sweeps(records, plots), _official(records, plots))
                 if s is not None]
    if predictions:
        sections.append(_predictions(predictions, plots))
    sections += _run_sections(records, {h.run_id: h for h in heads})
    return environment().get_template("report.html.j2").render(
        title=title, summary=summary, headlines=heads, headlines_total=len(records),
        headlines_hidden=len(heads) < len(records), compare=comparison(records) if records else None,
        sections=sections, n_plots=plots.n, plotly_js=Markup(get_plotlyjs()))


def write_report(records: list[RunRecord], out: str | Path, title: str = "benchmint report",
                 base_dirs: list[Path] | None = None, predictions: list[dict] | None = None) -> Path:
    """Write the report atomically; returns its path. ``predictions``: JSON documents of ``learn eval --json``
    and ``recommend --json`` for the "Predictions" section. Credentials are taken out of the records and the
    page (a store written before redaction existed may hold them)."""
    from benchmint.core.jsonio import atomic_write_bytes
    from benchmint.core.redact import known_secrets, redact, redact_text

    secrets = known_secrets()
    records = [RunRecord.from_dict(redact(r.to_dict(), secrets)) for r in records]
    page = render(records, title, base_dirs, predictions)
    return atomic_write_bytes(Path(out), redact_text(page, secrets).encode("utf-8"))

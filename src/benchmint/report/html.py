"""One self-contained HTML report: plotly.js and the CSS are inlined, so the file opens offline (no CDN).

The page ends with a small self-check script that counts the plots that drew and the script errors seen,
and shows the result at the bottom of the page (``#bm-selfcheck``; the headless-browser test reads it).
"""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from benchmint.core.jsonio import atomic_write_bytes
from benchmint.report import figures
from benchmint.report.data import coverage, is_llm, is_replay, is_sweep, label, num, per_op_rows, sweep
from benchmint.results.flatten import flatten_record
from benchmint.results.record import RunRecord

MAX_COMPARE = 30
MAX_FIDELITY_RUNS = 8
MAX_SWEEP_RUNS = 6

# curated rows of the side-by-side table (flattened column names, see docs/results.md)
COMPARE_FIELDS: tuple[tuple[str, str], ...] = (
    ("kind", "kind"),
    ("status", "status"),
    ("created", "created (UTC)"),
    ("workload__model_name", "model"),
    ("workload__architecture", "architecture"),
    ("workload__parameter_count", "parameters"),
    ("workload__dtype", "dtype"),
    ("workload__dataset", "dataset"),
    ("config__backend", "backend"),
    ("config__engine", "engine"),
    ("config__scenario", "scenario"),
    ("config__rate", "offered rate (req/s)"),
    ("config__concurrency", "concurrency"),
    ("system__accelerator__name", "accelerator"),
    ("system__accelerator__count", "accelerators"),
    ("system__cpu_model", "CPU"),
    ("system__hostname", "host"),
    ("metrics__throughput__requests_per_s", "requests/s"),
    ("metrics__throughput__output_tokens_per_s", "output tokens/s"),
    ("metrics__throughput__samples_per_s", "samples/s"),
    ("metrics__goodput_requests_per_s", "goodput (req/s)"),
    ("metrics__ttft_s__p50", "TTFT p50"),
    ("metrics__ttft_s__p99", "TTFT p99"),
    ("metrics__tpot_s__p50", "TPOT p50"),
    ("metrics__tpot_s__p99", "TPOT p99"),
    ("metrics__e2e_s__p99", "E2E p99"),
    ("metrics__latency_s__p90", "latency p90"),
    ("metrics__throughput__output_tokens_per_s_per_accelerator", "output tokens/s per accelerator"),
    ("metrics__loadgen__validity", "LoadGen validity"),
    ("metrics__loadgen__tokens_per_s", "LoadGen tokens/s"),
    ("metrics__client__throughput__output_tokens_per_s", "output tokens/s (client)"),
    ("metrics__client__ttft_s__p99", "TTFT p99 (client)"),
    ("metrics__client__tpot_s__p99", "TPOT p99 (client)"),
    ("metrics__error", "replay error"),
    ("metrics__iter_time_s__median", "replay iteration (median)"),
    ("metrics__original_iter_time_s", "original iteration"),
    ("metrics__coverage", "coverage (count)"),
    ("metrics__coverage__count", "coverage (count)"),
    ("metrics__coverage_time", "coverage (time)"),
    ("metrics__coverage__time", "coverage (time)"),
    ("metrics__peak_memory_bytes", "peak memory"),
    ("metrics__requests__failed", "failed requests"),
    ("metrics__client_bound__client_bound", "client-bound (llm calibrate)"),
    ("metrics__client_bound__reasons", "client-bound: why"),
    ("metrics__sweep__peak_rate", "peak search: highest passing rate"),
    ("metrics__sweep__unit", "peak search: rate unit"),
    ("metrics__sweep__trials_used", "peak search: trials"),
    ("metrics__sweep__stopped_because", "peak search: stopped because"),
    ("provenance__git_revision", "git revision"),
)

CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 0 auto; max-width: 1400px;
       padding: 16px 24px; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta, .note { color: #666; font-size: 0.9em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f7; position: sticky; left: 0; }
tr.differs td { background: #fffbe6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.plot { margin: 12px 0 24px 0; }
#bm-selfcheck { color: #666; font-size: 0.8em; border-top: 1px solid #eee; padding-top: 8px; }
"""

# records script errors from the very start of the page
ERROR_HOOK = """
window.__bmErrors = [];
window.addEventListener('error', function (e) {
  window.__bmErrors.push(String(e.message || e.type) + ' @ ' + (e.filename || '') + ':' + (e.lineno || ''));
});
window.addEventListener('unhandledrejection', function (e) { window.__bmErrors.push('unhandled: ' + e.reason); });
(function () { var orig = console.error; console.error = function () {
  window.__bmErrors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
  return orig.apply(console, arguments); }; })();
"""

SELF_CHECK = """
function bmSelfCheck() {
  var plots = document.querySelectorAll('.plotly-graph-div');
  var drawn = 0;
  plots.forEach(function (p) { if (p.querySelector('svg.main-svg')) { drawn++; } });
  var el = document.getElementById('bm-selfcheck');
  el.setAttribute('data-plots', plots.length);
  el.setAttribute('data-drawn', drawn);
  el.setAttribute('data-errors', window.__bmErrors.length);
  el.textContent = 'self-check: ' + drawn + ' of ' + plots.length + ' plots drawn, ' +
    window.__bmErrors.length + ' script error(s)' +
    (window.__bmErrors.length ? ': ' + window.__bmErrors.join(' | ') : '');
}
window.addEventListener('load', function () { bmSelfCheck(); setTimeout(bmSelfCheck, 300); });
"""


def _esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def fmt_value(key: str, v: Any) -> str:
    """Human formatting by unit suffix: ``_s`` -> ms or s, ``_bytes`` -> GB, error/coverage -> %."""
    if v is None or v == "":
        return ""
    f = num(v)
    if f is None or isinstance(v, bool):
        return str(v)
    if key.endswith("__error") or "__coverage" in key:
        return f"{f:+.1%}" if key.endswith("__error") else f"{f:.1%}"
    if "_s__" in key or key.endswith("_s"):
        if key.endswith("per_s") or "per_s__" in key:
            return f"{f:.4g}"
        return f"{f * 1e3:.4g} ms" if abs(f) < 1 else f"{f:.4g} s"
    if key.endswith("_bytes"):
        return f"{f / 1e9:.4g} GB"
    if key.endswith("parameter_count"):
        return f"{f / 1e9:.3g} B" if f >= 1e9 else (f"{f / 1e6:.3g} M" if f >= 1e6 else f"{int(f)}")
    if float(f).is_integer() and abs(f) < 1e15:
        return str(int(f))
    return f"{f:.4g}"


def comparison_table(records: list[RunRecord]) -> str:
    """Runs side by side (one column each); rows whose values differ between runs are highlighted."""
    recs = records[-MAX_COMPARE:]
    flat = []
    for r in recs:
        row = flatten_record(r.to_dict())
        row["created"] = dt.datetime.fromtimestamp(r.created_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        flat.append(row)
    fields = [(k, t) for k, t in COMPARE_FIELDS if any(f.get(k) not in (None, "") for f in flat)]
    curated = {k for k, _ in COMPARE_FIELDS}
    extra = sorted({k for f in flat for k in f if k.startswith("config__") and k not in curated
                    and not k.startswith("config__measurement__") and not k.endswith("_wall_s")})
    extra = [k for k in extra if len({str(f.get(k)) for f in flat}) > 1 or len(flat) == 1][:25]
    fields += [(k, k.removeprefix("config__").replace("__", ".")) for k in extra]
    head = "".join(f"<th title='{_esc(r.id)}'>{_esc(label(r))}</th>" for r in recs)
    body = []
    for key, title in fields:
        vals = [f.get(key) for f in flat]
        differs = len({str(v) for v in vals if v not in (None, '')}) > 1
        cells = "".join(
            f"<td class='{'num' if num(v) is not None and not isinstance(v, bool) else ''}'>"
            f"{_esc(fmt_value(key, v))}</td>" for v in vals
        )
        body.append(f"<tr class='{'differs' if differs else ''}'><th title='{_esc(key)}'>{_esc(title)}</th>{cells}</tr>")
    note = (f"<p class='note'>Showing the newest {MAX_COMPARE} of {len(records)} runs.</p>"
            if len(records) > MAX_COMPARE else "")
    return (f"{note}<div class='scroll'><table id='bm-compare'><thead><tr><th>run</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>"
            "<p class='note'>Highlighted rows hold different values in different runs. Hover a row name for its column in "
            "table <code>runs</code>.</p>")


def fidelity_table(records: list[RunRecord]) -> str:
    rows = []
    for r in records:
        m = r.metrics.to_dict()
        cov_n, cov_t = coverage(r)
        ops = per_op_rows(r)
        rows.append(
            f"<tr><td>{_esc(label(r))}</td><td class='num'>{_esc(fmt_value('metrics__error', m.get('error')))}</td>"
            f"<td class='num'>{_esc(fmt_value('metrics__coverage__count', cov_n))}</td>"
            f"<td class='num'>{_esc(fmt_value('metrics__coverage__time', cov_t))}</td>"
            f"<td class='num'>{len(ops)}</td></tr>"
        )
    return ("<table id='bm-fidelity'><thead><tr><th>run</th><th>error (replay vs original)</th>"
            "<th>coverage (count)</th><th>coverage (time)</th><th>op types</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def sweep_note(rec: RunRecord) -> str:
    """One line on a peak search: its peak (or that no rate passed), trials, why it stopped, the criterion."""
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
    return f"<p class='note bm-sweep'><b>{_esc(label(rec))}</b>: {' · '.join(_esc(b) for b in bits)}</p>"


class _Page:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.n_plots = 0

    def add(self, s: str) -> None:
        self.parts.append(s)

    def plot(self, fig: go.Figure) -> None:
        self.n_plots += 1
        height = fig.layout.height or 450
        self.parts.append(
            "<div class='plot'>"
            + fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"bm-plot-{self.n_plots}",
                          default_height=f"{height}px", config={"displaylogo": False, "responsive": True})
            + "</div>"
        )


def render(records: list[RunRecord], title: str = "benchmint report",
           base_dirs: list[Path] | None = None, predictions: list[dict] | None = None) -> str:
    """The whole report as one HTML string."""
    from plotly.offline import get_plotlyjs

    from benchmint import __version__

    base_dirs = base_dirs or []
    page = _Page()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    kinds: dict[str, int] = {}
    for r in records:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    page.add(f"<h1>{_esc(title)}</h1><p class='meta'>{len(records)} run(s) "
             f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items())) or 'none'}); generated {now} by "
             f"benchmint {_esc(__version__)}.</p>")

    page.add("<h2 id='compare'>Runs side by side</h2>")
    page.add(comparison_table(records) if records else "<p class='note'>No runs to show.</p>")

    color = figures.colors(records)
    replays = [r for r in records if is_replay(r)]
    page.add("<h2 id='fidelity'>Replay fidelity per op type</h2>")
    if replays:
        page.add("<p class='note'>error = (replay time - original time) / original time, per iteration; "
                 "coverage = replayed ops (or their recorded time) over all top-level ops.</p>")
        page.add(fidelity_table(replays))
        for r in replays[-MAX_FIDELITY_RUNS:]:
            fig = figures.fidelity_figure(r)
            if fig is not None:
                page.plot(fig)
            else:
                page.add(f"<p class='note'>{_esc(label(r))}: no per-op-type timings recorded.</p>")
    else:
        page.add("<p class='note'>No replay runs in this report.</p>")

    llms = [r for r in records if is_llm(r)]
    page.add("<h2 id='latency'>Latency</h2>")
    if llms:
        fig, sources = figures.latency_cdf_figure(llms, base_dirs, color)
        if fig is not None:
            page.plot(fig)
            fallback = [label(r) for r in llms if sources.get(r.id) == "percentiles"]
            if fallback:
                page.add("<p class='note'>Per-request file not found for "
                         + ", ".join(_esc(x) for x in fallback)
                         + ": their curves (dotted) join the stored percentiles.</p>")
        else:
            page.add("<p class='note'>No latency data in these runs.</p>")
        pfig = figures.percentile_figure(llms, color)
        if pfig is not None:
            page.plot(pfig)
    else:
        page.add("<p class='note'>No LLM runs in this report.</p>")

    from benchmint.report.server_figure import server_metrics_figure

    for r in llms:  # the server's own view of each run, where its /metrics was scraped
        sfig = server_metrics_figure(r, base_dirs)
        if sfig is not None:
            page.plot(sfig)

    page.add("<h2 id='throughput'>Throughput vs load</h2>")
    tfig = figures.throughput_figure(llms)
    if tfig is not None:
        page.plot(tfig)
    else:
        page.add("<p class='note'>No runs with both a throughput and an offered load (rate or concurrency) "
                 "in their configuration.</p>")

    from benchmint.report import shapes

    sfigs = [f for f in (shapes.turn_figure(llms, color), shapes.windows_figure(llms, color)) if f is not None]
    if sfigs:  # sessions, ramps, trace replays (docs/workloads.md)
        page.add("<h2 id='shapes'>Workload shapes</h2><p class='note'>TTFT by turn index for multi-turn "
                 "sessions; latency per time window (by scheduled send) for ramps and trace replays, the dashed "
                 "line where TTFT p50 first doubled.</p>")
        for f in sfigs:
            page.plot(f)

    sweeps = [r for r in records if is_sweep(r)]
    if sweeps:
        page.add("<h2 id='sweeps'>Peak searches</h2>")
        sweeps.sort(key=lambda r: (r.created_s, r.id))
        if len(sweeps) > MAX_SWEEP_RUNS:
            page.add(f"<p class='note'>Showing the newest {MAX_SWEEP_RUNS} of {len(sweeps)} peak searches.</p>")
        for r in sweeps[-MAX_SWEEP_RUNS:]:
            page.add(sweep_note(r))
            sfig = figures.sweep_figure(r)
            if sfig is not None:
                page.plot(sfig)
            elif (sweep(r) or {}).get("curve"):
                page.add(f"<p class='note'>{_esc(label(r))}: no trial recorded a p99 TTFT or TPOT.</p>")

    imported = [r for r in records if r.kind == "imported"]
    if imported:
        page.add("<h2 id='official'>Official MLPerf results</h2>")
        page.add(f"<p class='note'>{len(imported)} imported result(s) (kind <code>imported</code>); units "
                 "normalized as described in docs/results.md.</p>")
        ofig = figures.official_figure(imported)
        if ofig is not None:
            page.plot(ofig)

    if predictions:
        from benchmint.report.predictions import section

        for part in section(predictions):
            page.plot(part) if isinstance(part, go.Figure) else page.add(part)

    body = "\n".join(page.parts)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_esc(title)}</title>"
        f"<style>{CSS}</style><script>{ERROR_HOOK}</script>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>\n{body}\n"
        f"<p id='bm-selfcheck' data-plots-expected='{page.n_plots}'>self-check did not run "
        "(JavaScript disabled?)</p>"
        f"<script>{SELF_CHECK}</script></body></html>\n"
    )


def write_report(records: list[RunRecord], out: str | Path, title: str = "benchmint report",
                 base_dirs: list[Path] | None = None, predictions: list[dict] | None = None) -> Path:
    """Write the report atomically; returns its path. ``predictions``: JSON documents of ``learn eval --json``
    and ``recommend --json`` for the "Predictions" section. Credentials are taken out of the records and the
    page (a store written before redaction existed may hold them)."""
    from benchmint.core.redact import known_secrets, redact, redact_text
    from benchmint.results.record import RunRecord

    secrets = known_secrets()
    records = [RunRecord.from_dict(redact(r.to_dict(), secrets)) for r in records]
    page = render(records, title, base_dirs, predictions)
    return atomic_write_bytes(Path(out), redact_text(page, secrets).encode("utf-8"))

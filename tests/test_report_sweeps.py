"""Peak-search (``benchmint llm sweep``) records in the report: their own section with the curve of trials and
the peak, and no place among the LLM runs (they carry no per-request metrics)."""

from __future__ import annotations

import re

from test_report_records import HOST, llm_record

from benchmint.llm.sweep import Trial, find_peak
from benchmint.report import build_report
from benchmint.report.data import is_llm, is_sweep, label
from benchmint.report.figures import FAIL_COLOR, PASS_COLOR, sweep_figure
from benchmint.report.html import render
from benchmint.results.record import RunRecord

LOADGEN_UNIT = "LoadGen Server target QPS"
BENCH_UNIT = "llm bench requests/s (Poisson arrivals)"


def _sweep_block(limit: float, start: float = 1.0, max_trials: int = 8, client_only: bool = False,
                 unit: str = LOADGEN_UNIT) -> dict:
    """A real ``SweepResult.to_dict()`` from ``find_peak`` over a fake server that meets its SLO up to
    ``limit`` (latency rising with the rate), plus ``unit`` and ``criterion`` as the sweep commands add them."""

    def trial(rate: float) -> Trial:
        ttft, tpot = 0.1 * rate, 0.01 * rate
        keys = ("client_ttft_p99_s", "client_tpot_p99_s") if client_only else ("ttft_p99_s", "tpot_p99_s")
        metrics = {keys[0]: ttft, keys[1]: tpot, "completed_per_s": rate * 0.98}
        if client_only:
            metrics.update({"ttft_p99_s": None, "tpot_p99_s": None})
        ok = rate <= limit
        return Trial(rate=rate, passed=ok, metrics=metrics,
                     reason="" if ok else f"TTFT p99 {ttft:.3g} s over the <limit> SLO")

    sw = find_peak(trial, start, max_trials=max_trials)
    return {**sw.to_dict(), "unit": unit, "criterion": "p99 TTFT and TPOT within --slo"}


def sweep_record(block: dict, kind: str = "mlperf", created_s: float = 1_700_000_300.0) -> RunRecord:
    """Shaped like run_sweep (kind mlperf) or run_bench_sweep (kind llm) store it."""
    config = ({"backend": "http", "scenario": "Server", "benchmark": "mlperf-inference (LoadGen sweep)"}
              if kind == "mlperf" else {"target": "bench", "start_rate": 1.0, "benchmark": "llm bench sweep"})
    return RunRecord(kind=kind, created_s=created_s, config=config, metrics={"sweep": block},
                     workload={"model_name": "tiny-llama"}, system=HOST, artifacts={"result": "result.json"},
                     status="ok" if block["peak_rate"] is not None else "failed")


def _section(html: str, anchor: str) -> str:
    start = html.index(f"<h2 id='{anchor}'>")
    nxt = html.find("<h2 ", start + 1)
    return html[start:nxt if nxt >= 0 else html.index("id='bm-selfcheck'")]


def test_sweep_records_are_sweeps_not_llm_runs():
    for kind, unit in (("mlperf", LOADGEN_UNIT), ("llm", BENCH_UNIT)):
        rec = sweep_record(_sweep_block(5.0, unit=unit), kind=kind)
        assert is_sweep(rec) and not is_llm(rec), kind
    plain = llm_record(2.0)
    assert is_llm(plain) and not is_sweep(plain)
    # a "sweep" without a curve list is not taken for a peak search
    odd = RunRecord(kind="llm", metrics={"sweep": {"peak_rate": 3.0}})
    assert not is_sweep(odd) and is_llm(odd)


def test_report_shows_the_peak_searches_after_throughput(tmp_path):
    loadgen = sweep_record(_sweep_block(5.0), kind="mlperf", created_s=1_700_000_300.0)
    bench = sweep_record(_sweep_block(3.0, unit=BENCH_UNIT), kind="llm", created_s=1_700_000_301.0)
    runs = [llm_record(1.0, created_s=1_700_000_100.0), llm_record(2.0, created_s=1_700_000_101.0)]
    html = build_report([*runs, loadgen, bench], tmp_path / "r.html").read_text()
    assert html.index("<h2 id='throughput'>") < html.index("<h2 id='sweeps'>Peak searches</h2>")
    section = _section(html, "sweeps")
    lg_peak = loadgen.metrics["sweep"]["peak_rate"]
    assert f"peak {lg_peak:.4g} {LOADGEN_UNIT}" in section
    assert f"peak {bench.metrics['sweep']['peak_rate']:.4g} {BENCH_UNIT}" in section
    assert f"{loadgen.metrics['sweep']['trials_used']} trial(s)" in section
    assert "stopped: " + loadgen.metrics["sweep"]["stopped_because"] in section
    assert "criterion: p99 TTFT and TPOT within --slo" in section
    assert section.count("Peak search: ") == 2  # one figure per sweep, titled with its run
    # the sweeps are not LLM runs: not in the latency section, not on the throughput plot
    latency = _section(html, "latency")
    assert loadgen.id[-8:] not in latency and bench.id[-8:] not in latency
    assert runs[0].id[-8:] in latency
    assert loadgen.id[-8:] not in _section(html, "throughput")
    assert "data-plots-expected='6'" in html  # Pareto, CDF, percentiles, throughput, two sweeps
    # side by side, a search's column holds what it found, not only empty latency rows
    compare = _section(html, "compare")
    for title in ("peak search: highest passing rate", "peak search: trials", "peak search: stopped because"):
        assert f">{title}</th>" in compare
    assert f">{lg_peak:.4g}</td>" in compare


def test_only_sweeps_means_no_llm_runs_in_the_latency_section():
    rec = sweep_record(_sweep_block(5.0))
    html = render([rec])
    assert "No LLM runs in this report." in _section(html, "latency")
    assert "Latency CDFs" not in html and "TTFT and TPOT percentiles" not in html
    assert "Peak searches" in html and "data-plots-expected='1'" in html


def test_sweep_figure_shows_trials_pass_fail_and_the_peak():
    block = _sweep_block(5.0)
    fig = sweep_figure(sweep_record(block))
    assert fig is not None
    assert fig.layout.xaxis.title.text == LOADGEN_UNIT
    markers = [t for t in fig.data if t.mode == "markers"]
    passed = [t for t in markers if t.name == "passed"]
    failed = [t for t in markers if t.name == "failed"]
    assert len(passed) == 2 and len(failed) == 2  # TTFT and TPOT panels
    assert {t.marker.color for t in passed} == {PASS_COLOR} and {t.marker.color for t in failed} == {FAIL_COLOR}
    curve = block["curve"]
    ttft_pass = next(t for t in passed if t.xaxis == "x")
    want = [(c["rate"], c["metrics"]["ttft_p99_s"] * 1e3) for c in curve if c["passed"]]
    assert list(zip(ttft_pass.x, ttft_pass.y, strict=True)) == want  # y in ms, x = the trial's rate
    ttft_fail = next(t for t in failed if t.xaxis == "x")
    assert "rate %{x" in ttft_fail.hovertemplate and "TTFT p99 %{y" in ttft_fail.hovertemplate
    assert all(cd[0] == "failed" and "over the &lt;limit&gt; SLO" in cd[1] for cd in ttft_fail.customdata)
    lines = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert lines and all(s.x0 == s.x1 == block["peak_rate"] for s in lines)


def test_sweep_figure_falls_back_to_client_percentiles():
    fig = sweep_figure(sweep_record(_sweep_block(5.0, client_only=True)))
    assert fig is not None
    ys = [y for t in fig.data if t.mode == "markers" and t.xaxis == "x" for y in t.y]
    assert ys and all(y > 0 for y in ys)


def test_empty_curve_renders_without_a_figure():
    block = {"peak_rate": None, "trials_used": 0, "bracket": {"passed": None, "failed": None},
             "stopped_because": "interrupted", "curve": [], "order": [], "unit": LOADGEN_UNIT,
             "criterion": "LoadGen VALID"}
    rec = sweep_record(block)
    assert sweep_figure(rec) is None
    html = render([rec])
    section = _section(html, "sweeps")
    assert "no passing rate" in section and "no trials recorded" in section
    assert "Peak search: " not in html and "data-plots-expected='0'" in html


def test_sweep_without_a_passing_trial_says_so():
    block = _sweep_block(0.01, start=1.0, max_trials=3)  # fails at 1, 0.5, 0.25
    assert block["peak_rate"] is None
    rec = sweep_record(block)
    html = render([rec])
    section = _section(html, "sweeps")
    assert f"<b>{label(rec)}</b>: no passing rate" in section
    assert "no trial passed within the trial budget" in section
    fig = sweep_figure(rec)
    assert fig is not None and not fig.layout.shapes  # the failed trials, no peak line
    assert {t.name for t in fig.data if t.mode == "markers"} == {"failed"}


def test_an_interrupted_search_shows_its_highest_passing_rate_so_far_not_a_peak():
    def trial(rate: float) -> Trial:
        if rate > 3:
            raise KeyboardInterrupt  # Ctrl-C during the fourth trial, the search still going up
        return Trial(rate=rate, passed=True, metrics={"ttft_p99_s": 0.1, "tpot_p99_s": 0.01}, reason="")

    sw = find_peak(trial, 1.0, max_trials=8)
    rec = sweep_record({**sw.to_dict(), "unit": LOADGEN_UNIT, "criterion": "LoadGen VALID"})
    section = _section(render([rec]), "sweeps")
    assert f"<b>{label(rec)}</b>: highest passing so far 2 {LOADGEN_UNIT}" in section
    assert "stopped: interrupted (Ctrl-C) after 2 finished trials" in section
    fig = sweep_figure(rec)
    marks = [a.text for a in fig.layout.annotations if a.text.startswith(("highest", "peak"))]
    assert marks and set(marks) == {"highest passing so far 2"}  # on both panels


def test_no_sweeps_no_section_and_at_most_six_shown():
    assert "Peak searches" not in render([llm_record(1.0)])
    recs = [sweep_record(_sweep_block(2.0 + i), created_s=1_700_000_300.0 + i) for i in range(8)]
    html = render(recs[::-1])  # the newest are chosen by time, not by position
    section = _section(html, "sweeps")
    assert "Showing the newest 6 of 8 peak searches." in section
    shown = set(re.findall(r"Peak search: [^\"]*?\((\w{8})\)", section))
    assert shown == {r.id[-8:] for r in recs[2:]}
    assert "data-plots-expected='6'" in html


def test_sweep_note_text_is_escaped():
    block = {**_sweep_block(5.0), "criterion": "<b>TTFT</b> & TPOT", "stopped_because": "x < y"}
    html = render([sweep_record(block)])
    section = _section(html, "sweeps")
    assert "&lt;b&gt;TTFT&lt;/b&gt; &amp; TPOT" in section and "x &lt; y" in section

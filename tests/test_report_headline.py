"""The report's answer at a glance, on records the producers wrote (tests/data/report_runs, written by
`benchmint demo`): one headline per run, the side-by-side table limited to what differs, the throughput-latency
(Pareto) plot, the per-run sections, and text from records escaped by the template."""

from __future__ import annotations

import html as html_lib
import json
import re
from pathlib import Path

import pytest
from test_report_records import llm_record, replay_record
from test_report_sweeps import _sweep_block, sweep_record

from benchmint.report import fmt
from benchmint.report.compare import comparison
from benchmint.report.headline import headline
from benchmint.report.html import render
from benchmint.report.pareto import pareto_figure, pareto_front
from benchmint.results.record import RunRecord

RUNS = Path(__file__).parent / "data" / "report_runs"


def run(name: str) -> RunRecord:
    return RunRecord.read(RUNS / f"{name}.run.json")


def captured(tmp_path: Path, summary_path: Path, workload: str | None = "gpt2_train") -> RunRecord:
    """The RunRecord that `benchmint capture` stores for a capture summary (its own code path)."""
    from benchmint.cli.capture import _store

    _store(tmp_path, json.loads(summary_path.read_text()), None, True, workload)
    return RunRecord.read(tmp_path / "run.json")


def _section(html: str, anchor: str) -> str:
    start = html.index(f"id='{anchor}'>")
    nxt = html.find("<h2 ", start + 1)
    return html[start:nxt if nxt >= 0 else len(html)]


def test_replay_headline_says_error_iteration_time_and_noise():
    h = headline(run("replay"))
    assert h.kind == "replay" and "GPT2LMHeadModel, 182 K parameters" in h.what and "357 ops" in h.what
    assert "no accelerator (CPU)" in h.on and "AMD EPYC" in h.on
    figs = {f.name: f.value for f in h.figures}
    assert figs["error vs original"] == "-1.6%"
    assert figs["iteration time"] == "12.7 ms" and figs["original step"] == "12.9 ms"
    badges = {b.text: b for b in h.badges}
    assert badges["noisy"].tone == "warn" and "IQR 13% of the median" in badges["noisy"].hint
    assert badges["complete"].tone == "good" and badges["status ok"].tone == "good"


def test_a_demo_replay_headline_shows_the_live_measurement_and_its_noise_not_capture_jsons_error():
    from benchmint.replay.headline import judge

    rec = run("replay")
    m = rec.metrics.to_dict()
    live = {"original_s": 0.007, "original_rounds_s": [0.0069, 0.007, 0.0099], "original_moved": 0.43, "rounds": 3,
            "reps": 5, "replays": {"replay": {"replay_s": 0.0054, "moved": 0.1, "error": -0.223}}}
    rec.metrics.original_iter_time_s, rec.metrics.error = 0.0048, 0.30  # capture.json from a quieter moment
    m.update(original_iter_time_s=0.0048, error=0.30)
    rec.metrics.fidelity = judge(m, live)
    h = headline(rec)
    figs = {f.name: f.value for f in h.figures}
    assert figs["error vs live step"] == "-22.3%" and "error vs original" not in figs
    # beside it, the two times it is of (the card set the replay's own run and capture.json's step there)
    assert figs["replay iteration"] == fmt.duration(0.0054) and figs["live step"] == fmt.duration(0.007)
    assert "iteration time" not in figs and "original step" not in figs
    # the run list and the fidelity table give the same measurement
    from benchmint.report.html import fidelity_table
    from benchmint.results.api import headline as list_headline

    assert list_headline(rec).startswith("replay error -22.3% vs live step")
    assert fidelity_table([rec]).rows[0].cells[1].text == "-22.3%"
    table = comparison([rec]).table  # the side-by-side table too
    cells = {row.head.text if row.head else row.cells[0].text: row.cells[-1].text for row in table.rows}
    assert any(v == "-22.3%" for k, v in cells.items() if "replay error" in k), cells
    assert "+30.0%" not in cells.values()
    badges = {b.text: b for b in h.badges}
    assert badges["error within noise"].tone == "warn" and "43" in badges["error within noise"].hint
    assert "capture.json drifted" in badges and "+45.8%" in badges["capture.json drifted"].hint


def test_a_replay_of_a_trace_the_recorder_damaged_is_badged_as_not_the_whole_step():
    rec = run("replay")
    assert "not the whole step" not in {b.text for b in headline(rec).badges}
    rec.metrics.trace_damage = "the execution-trace observer lost part of the step while it recorded: ..."
    badges = {b.text: b for b in headline(rec).badges}
    assert badges["not the whole step"].tone == "warn" and "observer lost part" in badges["not the whole step"].hint


def test_llm_headline_says_throughput_p99s_and_client_bound():
    h = headline(run("llm-server"))
    assert h.kind == "LLM bench" and h.what == "tiny via openai-http, server scenario, at 8 req/s, 40 requests"
    assert [(f.name, f.value) for f in h.figures] == [
        ("output throughput", "110 tok/s"), ("TTFT p99", "34.7 ms"), ("TPOT p99", "10.9 ms")]
    badges = {b.text: b for b in h.badges}
    assert badges["client-bound"].tone == "warn" and "send lag p99" in badges["client-bound"].hint
    assert badges["40 ok"].tone == "good"
    assert not any(b.text in ("noisy", "steady") for b in h.badges)  # no timing loop in an LLM run


def test_mlperf_headline_says_loadgen_result_and_invalid_with_why():
    h = headline(run("mlperf"))
    assert h.kind == "MLPerf LoadGen" and "as llama2-70b" in h.what and "LoadGen Server" in h.what
    assert h.figures[0].name == "LoadGen result" and h.figures[0].value == "68.3 Tokens/s"
    # LoadGen's own p99s (metrics.loadgen), then the client's (metrics.client), each named by its source;
    # LoadGen's result is the throughput, not said twice
    assert [f.name for f in h.figures] == ["LoadGen result", "TTFT p99 (LoadGen)", "TPOT p99 (LoadGen)",
                                           "TTFT p99 (client)", "TPOT p99 (client)"]
    assert [f.value for f in h.figures][1:] == ["27.2 ms", "10.8 ms", "26.9 ms", "10.4 ms"]
    assert "mlperf_log_detail.txt" in h.figures[1].hint and "client-side" in h.figures[3].hint
    assert h.badges[0].text == "INVALID" and h.badges[0].tone == "bad"
    assert "Early stopping not satisfied" in h.badges[0].hint
    assert not any(b.text == "status invalid" for b in h.badges)  # said once


def test_capture_headline_says_step_time_and_whether_it_was_noisy(tmp_path):
    h = headline(captured(tmp_path / "new", RUNS / "capture.json"))
    assert h.kind == "capture" and h.what.startswith("capture of gpt2_train on cpu")
    assert [(f.name, f.value) for f in h.figures] == [("step time", "12.9 ms")]
    steady = next(b for b in h.badges if b.text == "steady")
    assert steady.tone == "good" and "over 5 samples" in steady.hint
    # a capture written before timings carried their IQR says so instead of guessing
    old = headline(captured(tmp_path / "old", Path(__file__).parent / "data" / "tiny_capture" / "capture.json"))
    assert any(b.text == "noise not recorded" for b in old.badges)


def test_sweep_and_imported_headlines():
    block = _sweep_block(5.0)
    h = headline(sweep_record(block))
    assert h.kind == "peak search" and h.figures[0].name == "peak rate"
    assert h.figures[0].value == f"{block['peak_rate']:.4g}" and h.what == "tiny-llama: the highest LoadGen Server " \
        "target QPS that passes"
    assert h.figures[0].hint == "LoadGen Server target QPS; passes: p99 TTFT and TPOT within --slo"
    from benchmint.results.importers import read_open_mlperf

    imported = read_open_mlperf(Path(__file__).parent / "data" / "openmlperf" / "data.parquet")
    eight = next(r for r in imported if (r.system.get("accelerator") or {}).get("count") == 8)
    h = headline(eight)
    assert h.kind == "official MLPerf" and h.what.startswith("MLPerf v")
    assert h.figures[0].name == "result" and h.figures[0].value.endswith(eight.metrics["result"]["unit"])
    assert "8 × " in h.on


def test_the_page_opens_with_one_headline_per_run(tmp_path):
    recs = [run("replay"), run("llm-server"), run("llm-offline"), run("mlperf")]
    html = render(recs)
    assert html.index("id='headline'>") < html.index("id='compare'>") < html.index("id='pareto'>")
    glance = _section(html, "headline")
    assert glance.count("<div class='card'") == 4
    for r in recs:
        assert f"data-run='{r.id}'" in glance and f"href='#run-{r.id}'" in glance
    assert ">INVALID</span>" in glance and ">noisy</span>" in glance and ">-1.6%</div>" in glance
    # every run has its own section at the bottom, with what it said about itself
    runs = _section(html, "runs")
    for r in recs:
        assert f"<h3 id='run-{r.id}'>" in runs
    assert "Early stopping not satisfied" in runs and "IQR 1.69 ms (13% of the median), 20 samples, noisy" in runs
    assert "6.87 req/s meeting every SLO" in runs and "<dt>measured for</dt><dd><div>5.82 s</div>" in runs


def test_side_by_side_shows_key_figures_and_only_the_fields_that_differ():
    recs = [run("llm-server"), run("llm-offline")]
    c = comparison(recs)
    rows = {r.head.text: [x.text for x in r.cells] for r in c.table.rows}
    assert rows["output token throughput (tokens/s)"] == ["110", "710"] and rows["TTFT p99"] == ["34.7 ms", "588 ms"]
    assert rows["failed requests"] == ["0", "0"]
    assert rows["backend"] == ["openai-http", "transformers"] and rows["scenario"] == ["server", "offline"]
    assert rows["max_batch_size"] == ["16", "8"]
    assert rows["model"] == ["tiny", "tiny-llm-v1"]  # the workload's model (a local path: its last part)
    assert rows["config.model"] == ["tiny", "/root/.cache/benchmint/tiny-llm-v1"]  # what was asked for
    # the same host, CPU, memory and dtype in both: not rows, but listed once below the table
    for same in ("host", "CPU", "dtype", "memory", "burstiness"):
        assert same not in rows, same
    shared = dict(c.same)
    assert shared["host"] == "vm" and shared["memory"] == "23.5 GiB" and shared["dtype"] == "float32"
    # a single run: nothing to differ from, everything it has is shown (parameters as a count)
    one = {r.head.text: [x.text for x in r.cells] for r in comparison([run("replay")]).table.rows}
    assert one["parameters"] == ["182 K"] and one["peak memory"] == ["5.69 MiB"]
    assert one["replay timing noisy (IQR > 10% of median)"] == ["yes"]


def test_pareto_front_keeps_the_runs_nothing_beats():
    pts = [(0.10, 100.0), (0.20, 300.0), (0.15, 90.0), (0.30, 250.0), (0.05, 20.0), (0.20, 300.0)]
    # (0.15, 90) is beaten by (0.10, 100); (0.30, 250) by (0.20, 300); two equal points are both kept
    assert pareto_front(pts) == [4, 0, 1, 5]
    assert pareto_front([(1.0, 1.0)]) == [0] and pareto_front([]) == []


def test_pareto_figure_marks_the_frontier_across_llm_runs(tmp_path):
    fast = llm_record(1.0, ttft=0.02, tpot=0.005, created_s=1)  # low load: low latency, low throughput
    busy = llm_record(4.0, ttft=0.20, tpot=0.02, created_s=2)  # high load: more of both
    worse = llm_record(2.0, ttft=0.30, tpot=0.03, created_s=3)  # slower than busy, less throughput: dominated
    recs = [fast, busy, worse]
    fig = pareto_figure(recs, {r.id: "#000" for r in recs})
    assert fig is not None
    frontier = [t for t in fig.data if t.name == "Pareto frontier"]
    assert len(frontier) == 2  # TTFT and TPOT panels
    ttft = next(t for t in frontier if t.xaxis == "x")
    assert list(ttft.x) == pytest.approx([40.0, 400.0]) and list(ttft.y) == pytest.approx([31.04, 124.16])
    assert fig.layout.xaxis.title.text == "TTFT p99 (ms)" and fig.layout.yaxis.title.text == "output tokens/s"
    hover = next(t for t in fig.data if t.legendgroup == worse.id and t.xaxis == "x")
    assert "dominated" in hover.hovertemplate
    assert "on the Pareto frontier" in next(t for t in fig.data if t.legendgroup == busy.id).hovertemplate
    assert pareto_figure([fast], {fast.id: "#000"}) is None  # one run is no trade-off
    assert pareto_figure([replay_record()], {}) is None


def test_text_from_records_is_escaped():
    d = llm_record(1.0).to_dict()
    d["workload"]["model_name"] = "<script>alert('x')</script>"
    d["config"]["backend"] = "a&b"
    d["metrics"]["client_bound"] = {"client_bound": True, "reasons": ["<img src=x onerror=alert(1)>"]}
    rec = RunRecord.from_dict(d)
    html = render([rec, llm_record(2.0)])
    assert "<script>alert(" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html and "a&amp;b" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert not re.search(r"<script>alert", html)


def test_every_kind_of_record_a_producer_wrote_gets_its_headline():
    """The schema-1.0 run.json files of capture, replay, llm bench, llm mlperf and llm sweep (tests/data/results_v1,
    written by those commands) each read into their typed model and say their main figure."""
    folder = Path(__file__).parent / "data" / "results_v1" / "run_json"
    want = {"capture": ("capture", "step time"), "replay": ("replay", "error vs original"),
            "llm": ("LLM bench", "output throughput"), "mlperf": ("MLPerf LoadGen", "LoadGen result"),
            "sweep": ("peak search", "peak rate")}
    recs = []
    for name, (kind, figure) in want.items():
        rec = RunRecord.read(folder / f"{name}.json")
        h = headline(rec)
        assert h.kind == kind and h.figures[0].name == figure and h.figures[0].value, name
        recs.append(rec)
    assert headline(recs[0]).what == "capture of moe on cpu, 1 thread"
    assert any(b.text == "INVALID" for b in headline(recs[3]).badges)
    html = render(recs)
    assert _section(html, "headline").count("<div class='card'") == 5


def test_a_run_that_is_not_valid_says_so_at_a_glance():
    partial = headline(replay_record())  # coverage 0.95: some ops were not replayed
    cov = next(b for b in partial.badges if b.text.startswith("coverage"))
    assert cov.text == "coverage 95.0%" and cov.tone == "warn"
    d = llm_record(2.0).to_dict()
    d["status"] = "partial"
    d["metrics"]["requests"] = {"completed": 37, "failed": 3, "errors": {"timeout": 3}}
    h = headline(RunRecord.from_dict(d))
    badges = {b.text: b.tone for b in h.badges}
    assert badges["status partial"] == "warn" and badges["3 failed"] == "bad"
    html = render([RunRecord.from_dict(d)])
    assert ">3 failed</span>" in html and "timeout: 3" in _section(html, "runs")


def test_mlperf_report_labels_each_figure_by_its_source():
    """The HTML of an MLPerf run showed the client's TTFT p99 as plain "TTFT p99" beside "how measured: MLPerf
    LoadGen", and LoadGen's own p99 nowhere: each figure now names its source, and LoadGen's figures are there."""
    rec = run("mlperf")
    html = render([rec])
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S))
    text = html_lib.unescape(re.sub(r"\s+", " ", text))
    lg, client = rec.metrics.loadgen, rec.metrics.client
    assert lg["ttft_s"]["p99"] != client.ttft_s.p99
    # the headline: LoadGen's 27.2 ms and the client's 26.9 ms, each labelled
    assert "27.2 ms TTFT p99 (LoadGen)" in text and "26.9 ms TTFT p99 (client)" in text
    assert "10.8 ms TPOT p99 (LoadGen)" in text and "10.4 ms TPOT p99 (client)" in text
    assert not re.search(r"TTFT p99 (?!\((LoadGen|client)\))", text)  # no unlabelled p99
    # the side-by-side table has both rows
    table = html[html.index("<table id='bm-compare'>"):html.index("</table>", html.index("bm-compare"))]
    assert "TTFT p99 (LoadGen)" in table and "TTFT p99 (client)" in table
    # "how measured" names both sources
    how = text[text.index("how measured"):][:800]
    assert "LoadGen figures: MLPerf LoadGen (mlperf_log_detail.txt" in how
    assert "client figures: benchmint's own measurement of the same requests" in how
    # the percentile plot draws LoadGen's bars beside the client's
    assert "(LoadGen)" in html[html.index("TTFT and TPOT percentiles") - 20000:]

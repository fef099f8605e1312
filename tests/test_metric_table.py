"""One metric table: the LLM metrics and the replay's figures are declared once (results/metric_table.py), and
the result, the Parquet schema, the console, the report's columns and the docs are made from it."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from benchmint.core.clock import ClockAnchor
from benchmint.core.stats import timing_summary
from benchmint.llm.metrics import compute_metrics, parse_slo
from benchmint.llm.output import METRIC_BLOCKS, requests_table, summary_table
from benchmint.llm.types import RequestRecord
from benchmint.report.compare import KEY_FIELDS
from benchmint.results import metric_docs
from benchmint.results.metric_table import (
    LLM_METRICS,
    REPLAY_FIGURES,
    REQUEST_COLUMNS,
    STAT_KEYS,
    TIMING_KEYS,
    columns_for_report,
    console_metrics,
)

ROOT = Path(__file__).resolve().parents[1]
MS = 1_000_000


def _records() -> list[RequestRecord]:
    t = 1000 * MS
    ok = RequestRecord(id=0, scheduled_ns=t, sent_ns=t + MS, first_token_ns=t + 50 * MS,
                       chunk_ns=[t + 50 * MS, t + 60 * MS, t + 80 * MS], end_ns=t + 85 * MS, input_tokens=7,
                       output_tokens=3, output_tokens_source="usage", chunk_count=3, text="a b c")
    bad = RequestRecord(id=1, scheduled_ns=t + 10 * MS, sent_ns=t + 10 * MS, end_ns=t + 20 * MS,
                        error_kind="http_5xx", error="HTTP 503")
    return [ok, bad]


def _get(d: dict, key: str):
    for part in key.split("."):
        d = d[part]
    return d


def test_docs_tables_are_generated_from_the_table():
    assert metric_docs.stale(ROOT) == [], "run: python -m benchmint.results.metric_docs"


def test_a_stale_doc_table_is_caught_and_rewritten(tmp_path):
    for rel in metric_docs.TABLES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    doc = tmp_path / "docs/metrics.md"
    doc.write_text(doc.read_text().replace("| completed requests / duration |", "| requests / hour |"))
    assert metric_docs.main(["--root", str(tmp_path), "--check"]) == 1
    assert metric_docs.main(["--root", str(tmp_path)]) == 0
    assert metric_docs.stale(tmp_path) == []
    assert "| completed requests / duration |" in doc.read_text()


def test_result_holds_every_declared_llm_figure_and_nothing_undeclared():
    m = compute_metrics(_records(), 1000 * MS, slo=parse_slo("ttft=1"))
    declared_blocks = {x.block for x in LLM_METRICS}
    assert set(m) <= declared_blocks, f"undeclared result keys: {set(m) - declared_blocks}"
    for x in LLM_METRICS:
        if x.optional and x.key not in ("goodput_requests_per_s", "goodput"):
            continue  # workload shapes, calibrate: made elsewhere
        value = _get(m, x.key)
        if x.shape == "stats":
            assert tuple(value) == STAT_KEYS == x.stats
    assert m["ttft_s"]["count"] == 1 and m["itl_s"]["count"] == 2 and m["send_lag_s"]["count"] == 2


def test_run_record_keeps_the_same_blocks_as_before():
    # --json and run.json keys are never dropped: these are the blocks a RunRecord kept before the table
    before = {"requests", "ttft_s", "tpot_s", "itl_s", "e2e_s", "ttft_from_send_s", "e2e_from_send_s",
              "send_lag_s", "throughput", "goodput_requests_per_s", "goodput", "output_tokens_total",
              "input_tokens_total", "input_tokens_known", "duration_s", "token_counts", "latency_anchor",
              "client_bound", "sessions", "windows", "prefix_cache"}
    assert before <= set(METRIC_BLOCKS)


def test_parquet_schema_and_console_table_follow_the_table():
    recs = _records()
    res = SimpleNamespace(result=compute_metrics(recs, 1000 * MS), records=recs, start_ns=1000 * MS,
                          anchor=ClockAnchor.take())
    tab = requests_table(res)
    assert tab.schema.names == [c.name for c in REQUEST_COLUMNS]
    assert str(tab.schema.field("itl_s").type) == "list<item: double>"
    row = tab.to_pylist()[0]
    assert abs(row["ttft_s"] - 0.050) < 1e-9 and len(row["itl_s"]) == 2
    con = Console(width=200, record=True)
    con.print(summary_table(res.result))
    text = con.export_text()
    for m in console_metrics():
        assert m.name in text
    assert "ITL" in text and "send lag" in text


def test_report_columns_come_from_the_table():
    cols = columns_for_report()
    assert ("metrics__ttft_s__p99", "TTFT p99", "s") in cols
    assert ("metrics__iter_time_s__median", "replay iteration median", "s") in cols
    assert ("metrics__client__tpot_s__p99", "TPOT p99 (client)", "s") in cols
    fields = set(KEY_FIELDS)  # the report's side-by-side key figures, with their declared units
    assert all(c in fields for c in cols)


def test_replay_figures_match_the_timing_summary_and_a_replay_result():
    assert tuple(timing_summary([1.0, 2.0, 3.0])) == TIMING_KEYS
    keys = {m.key for m in REPLAY_FIGURES}
    assert {"coverage", "coverage_time", "iter_time_s", "original_iter_time_s", "error", "peak_memory_bytes"} <= keys
    assert next(m for m in REPLAY_FIGURES if m.key == "iter_time_s").stats == TIMING_KEYS


def test_every_figure_of_a_real_replay_result_is_declared():
    from benchmint.replay.api import replay_trace

    r = replay_trace(ROOT / "tests" / "data" / "tiny_capture", gaps="none", warmup=0, iters=1).result
    declared = {m.key for m in REPLAY_FIGURES}
    figures = {k for k, v in r.items()
               if (isinstance(v, int | float) and not isinstance(v, bool)) or (isinstance(v, dict) and "median" in v)}
    assert figures - declared == set(), "declare them in results/metric_table.py"
    assert set(r["iter_time_s"]) == set(TIMING_KEYS)
    assert {"coverage", "iter_time_s", "error", "original_iter_time_s"} <= figures

"""The HTML report as a file: self-contained (no CDN, no external script), every section present, and the
`benchmint report` and demo-step entry points."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console
from test_report_records import llm_record, llm_requests_file, replay_record, sample_records

from benchmint.report import build_report
from benchmint.report.html import render
from benchmint.results.store import ResultsStore


def test_report_is_self_contained(tmp_path):
    from plotly.offline import get_plotlyjs

    html = render(sample_records(tmp_path))
    assert get_plotlyjs() in html  # plotly.js inlined whole
    # outside plotly.js itself (which names map-tile servers it would use only for geo maps): no external
    # script, stylesheet or URL at all
    rest = html.replace(get_plotlyjs(), "")
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)
    assert not re.search(r"<link\b", rest, re.I)
    assert not re.search(r"https?://", rest), re.search(r".{80}https?://.{80}", rest).group(0)
    for section in ("At a glance", "Runs side by side", "Throughput vs latency", "Replay fidelity per op type",
                    "Latency CDFs", "TTFT and TPOT percentiles", "Throughput vs offered load", "Run by run"):
        assert section in html, section
    assert "data-plots-expected='6'" in html  # Pareto, 2 fidelity, CDF, percentiles, throughput


def test_comparison_table_and_fallback_note(tmp_path):
    recs = sample_records(tmp_path)
    html = render(recs)
    table = html[html.index("<table id='bm-compare'>"):html.index("</table>", html.index("bm-compare"))]
    for r in recs:
        assert r.id[-8:] in table
    assert "TTFT p99" in table and "100 ms" in table and "+4.0%" in table  # units formatted
    # the run without a per-request file (and the one whose file is gone) use their percentiles
    assert "Per-request file not found for" in html and recs[4].id[-8:] in html.split("Per-request")[1][:400]


def test_empty_report_still_writes_a_page(tmp_path):
    path = build_report([], tmp_path / "empty.html")
    html = path.read_text()
    assert "No replay runs" in html and "No LLM runs" in html and "data-plots-expected='0'" in html


def test_report_cli_from_store_and_from_run_json(cli, tmp_path):
    store = ResultsStore(tmp_path / "store")
    store.append(replay_record())
    llm = llm_record(2.0, "requests.parquet")
    run_dir = tmp_path / "llm-run"
    llm_requests_file(run_dir / "requests.parquet", 20, 0.05, 0.01)
    llm.write(run_dir)
    code, out, err = cli("report", "--results", str(tmp_path / "store"), "--out", str(tmp_path / "a.html"))
    assert code == 0, err
    a = (tmp_path / "a.html").read_text()
    assert "Replay fidelity per op type: tiny-transformer" in a and "No LLM runs" in a
    # a run.json folder: its relative requests file is found next to run.json (no fallback note)
    code, out, err = cli("report", "--runs", str(run_dir), "--out", str(tmp_path / "b.html"),
                         "--results", str(tmp_path / "store"))
    assert code == 0, err
    b = (tmp_path / "b.html").read_text()
    assert "Latency CDFs" in b and "Per-request file not found" not in b
    code, _, err = cli("report", "--runs", "no-such-run", "--results", str(tmp_path / "store"))
    assert code == 2 and "no-such-run" in err


def test_demo_step_stores_runs_once_and_writes_report(tmp_path):
    from benchmint.demo import DemoContext
    from benchmint.demo.report import store_and_report

    recs = sample_records(tmp_path)
    out = tmp_path / "demo-out"
    out.mkdir()
    ctx = DemoContext(out=out, console=Console(file=open(tmp_path / "log.txt", "w"), width=2000),
                      results_dir=tmp_path / "res", records=recs)
    ResultsStore(ctx.results_dir).append(recs[0])  # a step already stored its run
    store_and_report(ctx)
    assert sorted(r.id for r in ResultsStore(ctx.results_dir).records()) == sorted(r.id for r in recs)
    assert len(ResultsStore(ctx.results_dir).part_files()) == 2
    assert ctx.artifacts["report"] == out / "report.html" and (out / "report.html").stat().st_size > 1e6
    assert ctx.artifacts["results store"] == Path(ctx.results_dir)
    ctx.console.file.close()
    log = (tmp_path / "log.txt").read_text()
    assert str(out / "report.html") in log and str(ctx.results_dir) in log


def test_demo_step_with_no_runs(tmp_path):
    from benchmint.demo import DemoContext
    from benchmint.demo.report import store_and_report

    ctx = DemoContext(out=tmp_path, console=Console(file=open(tmp_path / "log.txt", "w")),
                      results_dir=tmp_path / "res")
    store_and_report(ctx)
    assert (tmp_path / "report.html").exists()


def test_official_results_section_when_imported_runs_are_included(tmp_path):
    from benchmint.results.importers import read_open_mlperf

    imported = read_open_mlperf(Path(__file__).parent / "data" / "openmlperf" / "data.parquet")
    html = render(sample_records(tmp_path) + imported)
    assert "Official MLPerf results" in html and "data-plots-expected='7'" in html
    assert f"{len(imported)} imported result(s)" in html
    assert "NVIDIA H200-SXM-141GB" in html
    assert "Official MLPerf results" not in render(sample_records(tmp_path))


def test_the_templates_ship_as_package_data():
    """A wheel or a fresh `pip install` carries the report's template files (pyproject's package-data)."""
    import fnmatch
    import tomllib

    root = Path(__file__).parent.parent
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["benchmint"]
    pkg = root / "src" / "benchmint"
    files = [p.relative_to(pkg).as_posix() for p in (pkg / "report" / "templates").iterdir()]
    assert "report/templates/report.html.j2" in files
    for f in files:
        assert any(fnmatch.fnmatch(f, g) for g in globs), f"{f} is not package data in pyproject.toml"
    assert "jinja2" in " ".join(tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"])

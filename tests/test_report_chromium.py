"""Open the report in headless Chromium (Debian's `chromium` package), offline, and check that every plot
drew and no script error happened.

Set-up: when chromium is missing and we are root with apt-get (CI containers), the fixture installs it
(`apt-get update` then `apt-get install -y chromium`); otherwise the tests are skipped with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report_records import sample_records

from benchmint.report import build_report

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _find() -> str | None:
    for n in NAMES:
        exe = shutil.which(n)
        if exe:
            return exe
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    exe = _find()
    if exe:
        return exe
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("headless browser check skipped: chromium is not installed and cannot be installed here "
                    "(needs root and apt-get); install Debian's `chromium` package to run it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        proc = subprocess.run("apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium",
                              shell=True, capture_output=True, text=True, timeout=540, env=env)  # < pytest timeout
    except subprocess.TimeoutExpired:
        pytest.skip("headless browser check skipped: installing chromium with apt-get timed out")
    exe = _find()
    if not exe:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        pytest.skip(f"headless browser check skipped: apt-get could not install chromium: {' | '.join(tail)}")
    return exe


def render_in_chromium(exe: str, html: Path, tmp: Path) -> tuple[str, str]:
    """(DOM after load, browser log) of ``html`` opened offline in headless chromium."""
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: the page must not need any
        "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=10000", "--window-size=1400,3000",
        "--dump-dom", html.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def selfcheck(dom: str) -> dict[str, int]:
    m = re.search(r'<p id="bm-selfcheck"([^>]*)>([^<]*)', dom)
    assert m, "self-check paragraph missing from the DOM"
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))
    assert "data-drawn" in attrs, f"the self-check script did not run: {m.group(2)}"
    return {k: int(attrs[k]) for k in ("data-plots-expected", "data-plots", "data-drawn", "data-errors")} | {
        "text": m.group(2)}


def console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if "CONSOLE" in line and re.search(r"Uncaught|Error|Failed to load", line)]


@pytest.mark.slow
def test_report_draws_every_plot_without_errors(chromium, tmp_path):
    from benchmint.results.importers import read_open_mlperf

    imported = read_open_mlperf(Path(__file__).parent / "data" / "openmlperf" / "data.parquet")[:60]
    report = build_report(sample_records(tmp_path) + imported, tmp_path / "report.html")
    dom, log = render_in_chromium(chromium, report, tmp_path)
    check = selfcheck(dom)
    # Pareto, 2 replay fidelity, latency CDFs, percentiles, throughput vs load, official results
    assert check["data-plots-expected"] == 7
    assert check["data-plots"] == check["data-drawn"] == 7, check["text"]
    assert check["data-errors"] == 0, check["text"]
    assert console_errors(log) == []
    # plotly's SVG is in the DOM: bars of the fidelity plots and lines of the CDFs
    assert dom.count('class="main-svg"') >= 6
    assert dom.count('class="trace bars"') >= 4 and 'class="point"' in dom
    assert 'class="js-line"' in dom


@pytest.mark.slow
def test_headline_and_pareto_plot_render(chromium, tmp_path):
    recs = sample_records(tmp_path)
    report = build_report(recs, tmp_path / "report.html")
    dom, log = render_in_chromium(chromium, report, tmp_path)
    check = selfcheck(dom)
    assert check["data-errors"] == 0 and console_errors(log) == [], check["text"]
    assert check["data-plots"] == check["data-drawn"] == check["data-plots-expected"], check["text"]
    # the headline: one card per run, each with its main figure and its badges, before everything else
    glance = dom[dom.index('<h2 id="headline">'):dom.index('<h2 id="compare">')]
    assert glance.count('<div class="card"') == len(recs)
    assert glance.count('<div class="v">') >= 2 * len(recs) and 'class="badge good"' in glance
    # the Pareto plot drew its two panels, the runs' markers and the frontier (legend entry and dashed line)
    pareto = dom[dom.index('<h2 id="pareto">'):dom.index("<h2", dom.index('<h2 id="pareto">') + 1)]
    assert pareto.count('class="main-svg"') >= 1 and pareto.count('class="subplot xy"') + pareto.count(
        'class="subplot x2y2"') == 2
    assert "Pareto frontier" in pareto and 'class="js-line"' in pareto and 'class="point"' in pareto
    assert "output tokens/s vs TTFT p99" in pareto


@pytest.mark.slow
def test_the_check_catches_a_broken_page(chromium, tmp_path):
    report = build_report(sample_records(tmp_path)[:2], tmp_path / "report.html")
    html = report.read_text()
    broken = html.replace("<p id='bm-selfcheck'", "<script>Plotly.newPlot('nowhere', null);</script>"
                          "<script>undefinedFunction();</script><p id='bm-selfcheck'")
    bad = tmp_path / "broken.html"
    bad.write_text(broken)
    dom, log = render_in_chromium(chromium, bad, tmp_path)
    check = selfcheck(dom)
    assert check["data-errors"] >= 1 and "undefinedFunction" in check["text"]
    assert any("undefinedFunction" in line for line in console_errors(log))

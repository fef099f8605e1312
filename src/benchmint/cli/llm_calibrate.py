"""`benchmint llm calibrate`: the highest rate this client sustains and what it adds to latency."""

from __future__ import annotations

from pathlib import Path

import typer

from benchmint.cli.common import console
from benchmint.core.jsonio import write_json


def calibrate(
    url: str = typer.Option(None, "--url", help="A no-op streaming server to drive (default: start one locally)."),
    start_rate: float = typer.Option(100.0, "--start-rate", help="First rate tried (req/s); doubled until a trial fails."),
    max_rate: float = typer.Option(20000.0, "--max-rate", help="Highest rate tried (req/s)."),
    duration: float = typer.Option(2.0, "--duration", help="Seconds of each trial."),
    refine: int = typer.Option(2, "--refine", help="Bisection steps between the last passing and first failing rate."),
    latency_rate: float = typer.Option(50.0, "--latency-rate", help="Rate of the added-latency trial (req/s)."),
    store: bool = typer.Option(True, "--store/--no-store", help="Store it for later `llm bench` verdicts."),
    json_path: Path = typer.Option(None, "--json", help="Also write the result JSON here."),
) -> None:
    """Find the highest rate this client sustains against a no-op streaming server (every request completed,
    sent at >= 0.99 of the target rate, p99 send lag <= 1 ms) and the latency it adds; later `llm bench` results say whether they were
    client-bound (`client_bound`)."""
    from benchmint.core.outpaths import check_output_file
    from benchmint.llm.calibrate import calibrate as run_calibration

    check_output_file("--json", json_path)  # before the trials, not after them
    r = run_calibration(url, start_rate=start_rate, max_rate=max_rate, duration_s=duration, refine=refine,
                        latency_rate=latency_rate, store=store)
    for t in r["trials"]:
        lag = t["send_lag_p99_s"]
        console.print(f"{t['rate']:>8.4g} req/s: sent at {t['achieved_per_s']:.1f} ({100 * t['achieved_fraction']:.1f}%), "
                      f"send lag p99 {'-' if lag is None else f'{1000 * lag:.2f} ms'}, "
                      f"{'latency trial' if t.get('purpose') else 'pass' if t['passed'] else 'FAIL'}",
                      highlight=False)
    c = r["ceiling_rate_per_s"]
    lat = r["client_added_latency"]
    ttft = lat["ttft_from_send_s"] or {}
    console.print(f"ceiling: {'none (even the first rate failed)' if c is None else f'{c:.4g} req/s'}"
                  + (" (the highest rate tried: raise --max-rate)" if r["reached_max_rate"] else ""), highlight=False)
    if ttft.get("p50") is not None:
        console.print(f"client added latency (TTFT from send, no-op server): p50 {1000 * ttft['p50']:.2f} ms, "
                      f"p99 {1000 * ttft['p99']:.2f} ms", highlight=False)
    if r.get("stored_at"):
        console.print(f"[dim]stored at {r['stored_at']}[/]")
    if json_path:
        write_json(json_path, r)

"""`benchmint demo` is the README's first command: it must run the whole loop offline and leave its outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_quick_runs_every_step_and_leaves_runs_and_report(tmp_path):
    out, store = tmp_path / "out", tmp_path / "store"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BENCHMINT_RESULTS": str(store)}
    p = subprocess.run(
        [sys.executable, "-m", "benchmint.cli.main", "demo", "--quick", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "demo done" in p.stdout
    # one headline: the live step timed alternately is the measurement, capture.json's figure the context
    head = next(line for line in p.stdout.splitlines() if line.startswith("replay fidelity: coverage"))
    assert "against the live step timed alternately" in head and "capture.json" not in head
    ctx = next(line for line in p.stdout.splitlines() if line.startswith("context: "))
    assert "reference at capture time: capture.json" in ctx and "the machine's speed moved" in ctx
    assert "estimated from the trace alone" in ctx
    assert "LoadGen result:" in p.stdout
    # third-party noise is silenced where it arises (transformers' deprecations, weight-loading bars)
    console = p.stdout + p.stderr
    for noise in ("past_key_values", "torch_dtype", "Loading weights", "loss_type",
                  "Execution Trace Observer",  # torch's C++ log line at each ET start/stop
                  "requests flagged", "tokenizer!=usage",  # the re-tokenized random output is not a finding
                  "Warning:", "it/s]"):  # any other Python warning, any tqdm progress bar
        assert noise not in console, noise
    # the files each step says it wrote
    assert (out / "capture" / "et.json").is_file() and (out / "capture" / "capture.json").is_file()
    replay = json.loads((out / "replay" / "run.json").read_text())
    assert replay["kind"] == "replay" and replay["metrics"]["coverage"] > 0.9
    alt = replay["metrics"]["compared_alternately"]
    assert alt["original_s"] > 0 and alt["replays"]["replay"]["replay_s"] > 0
    assert len(alt["original_rounds_s"]) == alt["rounds"] and alt["original_moved"] >= 0
    fid = replay["metrics"]["fidelity"]
    assert fid["reference"] == "live step" and fid["verdict"] in ("measured", "noisy") and fid["drift"] is not None
    assert (out / "report.html").stat().st_size > 100_000  # plotly inlined: the page opens offline
    # every run the demo measured is in the store, queryable
    q = subprocess.run(
        [sys.executable, "-m", "benchmint.cli.main", "results", "query",
         "select kind, count(*) as n from runs group by kind order by kind", "--json", "--results", str(store)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert q.returncode == 0, q.stderr
    kinds = {row["kind"]: row["n"] for row in json.loads(q.stdout)}
    assert kinds.get("replay") == 1 and kinds.get("llm") == 2 and kinds.get("mlperf") == 1, kinds
    # the tiny model is one model in the store, whether served over HTTP or loaded in-process (the in-process
    # run stored its cache path, which recommend listed as a second model family)
    q = subprocess.run(
        [sys.executable, "-m", "benchmint.cli.main", "results", "query",
         "select distinct workload__model_name as m from runs where kind = 'llm'", "--json", "--results", str(store)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert q.returncode == 0 and json.loads(q.stdout) == [{"m": "tiny"}], (q.stdout, q.stderr)

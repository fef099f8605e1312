"""A step that runs a torch.compile'd function: its generated (fused) kernels are no ops, so the replay runs
only the ops the compiled graph calls out to; the result, the headline and --report say how much of the recorded
step the compiled regions took, and coverage by time does not read 1.000 (real torch.compile on the CPU: it
needs the C++ compiler that Inductor calls, skipped without one)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from benchmint.replay import replay_trace
from benchmint.replay.headline import compiled_line, headline
from benchmint.trace.capture import capture_steps

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="torch.compile on the CPU needs a C++ compiler")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("compiled") / "pw"
    torch.manual_seed(0)
    w = torch.randn(64, 64)

    def f(x: torch.Tensor) -> torch.Tensor:
        for _ in range(6):  # pointwise work Inductor fuses into one generated kernel
            x = torch.sin(x) * torch.cos(x) + torch.exp(-x * x) * 0.5
        return (x @ w).sum()

    cf = torch.compile(f)
    x0 = torch.randn(256, 64)  # made outside the step, so that the compiled call is most of it (CI read a share
    # of 0.29 with the input drawn inside the step; 0.4 here, and 0.6 with it outside)

    def step() -> None:
        with torch.no_grad():
            cf(x0)

    step()  # compiled before the capture's warm-up
    capture_steps(step, d, warmup=2, measure=5, record=1)
    return d


def test_compiled_regions_are_measured_and_coverage_by_time_leaves_their_kernels_out(compiled):
    r = replay_trace(compiled, gaps="none", warmup=1, iters=3).result
    c = r["compiled_regions"]
    assert c is not None and c["calls"] >= 1 and c["graphs"] >= 1
    # the recorded step ran mostly inside the compiled region (0.69-0.998 here, about 0.45 on CI: one recorded
    # step, and a preemption outside the call lowers it), part of it outside any op (the fused kernel)
    assert 0.1 < c["share_of_step"] <= 1 and 0 < c["not_in_ops_share_of_step"] < c["share_of_step"]
    assert c["not_in_ops_s"] < c["recorded_s"]
    # every op was replayed, yet the step's time was not: coverage by time is not 1.000 (it read 1.000 before)
    assert r["coverage"] == 1.0
    assert r["coverage_time"] is not None and r["coverage_time"] < 0.999
    line = compiled_line(r)
    assert line is not None and line in headline(r)
    assert "torch.compile'd regions" in line and "generated kernels, which the replay does not run" in line
    assert "without gaps the replay leaves that time out" in line


def test_the_cli_says_so_in_its_headline_and_report(compiled, cli, tmp_path):
    code, out, _ = cli("replay", str(compiled), "--warmup", "1", "--iters", "3", "--no-store", "--report",
                       "--out", str(tmp_path / "o"))
    flat = " ".join(out.split())
    assert code == 0
    assert "torch.compile'd regions: 1 call of 1 compiled graph" in flat
    assert "generated kernels, which the replay does not run" in flat
    # gaps recorded by default: spent as CPU work between ops, or none when the ops alone took the whole step
    assert "at best it spends that time as CPU work between ops" in flat or "leaves that time out" in flat
    assert "recorded inside torch.compile'd regions outside any op" in flat  # --report


def test_a_step_without_compiled_regions_has_none(tmp_path):
    lin = torch.nn.Linear(32, 32)
    capture_steps(lambda: lin(torch.randn(8, 32)), tmp_path / "plain", warmup=1, measure=5, record=1)
    r = replay_trace(tmp_path / "plain", gaps="none", warmup=0, iters=2).result
    assert r["compiled_regions"] is None and compiled_line(r) is None


def test_without_kineto_each_call_counts_once(compiled):
    # a call opens nested scopes (Torch-Compiled Region, CompiledFunction, ## Call CompiledFxGraph ##): counted
    # as one call, as their merged Kineto spans are
    from benchmint.replay.source import compiled_regions, view_from_trace
    from benchmint.trace import load
    from benchmint.trace.kineto import join_kineto

    tr = load(compiled / "et.json")
    bare = compiled_regions(None, view := view_from_trace(tr))
    timed = compiled_regions(join_kineto(tr, compiled / "kineto.json"), view)
    assert bare is not None and bare["calls"] == timed["calls"] == 1 and bare["recorded_s"] is None

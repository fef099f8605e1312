"""Settling the gaps (``--gaps recorded``) on one thread: what the gaps add is measured in the process's CPU
time, in turns with the ops alone, so a settle round in which the process waited for a core does not read as
gaps that cost several times what they do."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from benchmint.replay import api

OPS_CPU_S = 0.010


def _plan():
    def compile(gaps_ns=None, **_):
        return SimpleNamespace(gap_s=sum(gaps_ns or []) / 1e9)
    return SimpleNamespace(device=torch.device("cpu"), compile=compile)


def _descheduled(wall_factor: float, stale: list[float]):
    """Iterations whose CPU time is the ops' plus the gaps', and whose wall time is ``wall_factor`` times that
    (the process got a third of a core)."""
    def fake(plan, fn, iters, warmup=1, live=False, count=True, together=False, cpu=None):
        cost = OPS_CPU_S + fn.gap_s
        if cpu is not None:
            cpu.extend([cost] * iters)
        stale.append(fn.gap_s)
        return [cost * wall_factor] * iters
    return fake


def test_gaps_settle_on_what_they_cost_in_cpu_time_when_the_process_waits_for_a_core(monkeypatch):
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        calls: list[float] = []
        monkeypatch.setattr(api, "time_iterations", _descheduled(3.0, calls))
        gaps = [1_000_000, 0, 3_000_000]  # 4 ms, what the estimate asks of them
        got = api._settle_gaps(_plan(), gaps, want=OPS_CPU_S + 0.004, replay_s=OPS_CPU_S, tell=lambda *a: None)
    finally:
        torch.set_num_threads(prev)
    assert abs(sum(got) - 4_000_000) <= 40_000, got  # the gaps cost what was asked: left as they are
    assert 0.0 in calls and 0.004 in calls  # the ops alone were measured in the round, beside the gaps


def test_gaps_that_cost_less_than_asked_are_scaled_up(monkeypatch):
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        def fake(plan, fn, iters, warmup=1, live=False, count=True, together=False, cpu=None):
            cost = OPS_CPU_S + fn.gap_s * 0.8  # a gap's spin runs 20% short here
            if cpu is not None:
                cpu.extend([cost] * iters)
            return [cost] * iters
        monkeypatch.setattr(api, "time_iterations", fake)
        got = api._settle_gaps(_plan(), [4_000_000], want=OPS_CPU_S + 0.004, replay_s=OPS_CPU_S,
                               tell=lambda *a: None)
    finally:
        torch.set_num_threads(prev)
    assert abs(sum(got) * 0.8 - 4_000_000) <= 40_000, got

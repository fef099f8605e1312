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


def _in_turns(wall_factor: float, spin: float, seen: list[float]):
    """``time_in_turns``: iterations whose CPU time is the ops' plus ``spin`` times the gaps', and whose wall
    time is ``wall_factor`` times that (1/3: the process got a third of a core)."""
    def fake(plan, fns, turns, warmup=1, block=1):
        out = []
        for fn in fns:
            cost = OPS_CPU_S + fn.gap_s * spin
            seen.append(fn.gap_s)
            out.append(([cost * wall_factor] * turns * block, [cost] * turns * block))
        return out
    return fake


def test_gaps_settle_on_what_they_cost_in_cpu_time_when_the_process_waits_for_a_core(monkeypatch):
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        calls: list[float] = []
        monkeypatch.setattr(api, "time_in_turns", _in_turns(3.0, 1.0, calls))
        gaps = [1_000_000, 0, 3_000_000]  # 4 ms, what the estimate asks of them
        got = api._settle_gaps(_plan(), gaps, want=OPS_CPU_S + 0.004, replay_s=OPS_CPU_S, tell=lambda *a: None)
    finally:
        torch.set_num_threads(prev)
    assert abs(sum(got) - 4_000_000) <= 40_000, got  # the gaps cost what was asked: left as they are
    assert 0.0 in calls and 0.004 in calls  # the ops alone were measured in the round, beside the gaps


def test_a_short_iteration_settles_on_more_turns_run_in_blocks_as_the_timed_loop_runs_them(monkeypatch):
    # a 0.8 ms selection: 8 single turns read its gaps at 75-87% of what the timed loop found; 64 iterations
    # a side, 8 in a row, alternating blocks
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    asked: list[tuple[int, int]] = []

    def fake(plan, fns, turns, warmup=1, block=1):
        asked.append((turns, block))
        return [([0.0005] * turns * block, [0.0005] * turns * block),
                ([0.0008] * turns * block, [0.0008] * turns * block)]
    try:
        monkeypatch.setattr(api, "time_in_turns", fake)
        api._settle_gaps(_plan(), [300_000], want=0.0008, replay_s=0.0005, tell=lambda *a: None)
    finally:
        torch.set_num_threads(prev)
    assert asked == [(8, 8)]  # settled at once: no second round


def test_a_settle_round_times_its_sides_warm_in_one_collector_freeze(monkeypatch):
    # one time_iterations call per iteration collected the whole heap before each: the iteration ran cold,
    # twice its warm time for a small selection
    from benchmint.replay import execute

    collects: list[int] = []
    real_collect = execute.quiet_gc
    monkeypatch.setattr(execute, "quiet_gc", lambda: collects.append(1) or real_collect())
    plan = SimpleNamespace(device=torch.device("cpu"), registers=lambda: [], grad_context=torch.no_grad)
    order: list[str] = []
    out = execute.time_in_turns(plan, [lambda R: order.append("a"), lambda R: order.append("b")], 2, warmup=1,
                                block=2)
    assert collects == [1]
    assert order == ["a", "a", "b", "b"] * 3  # one warm-up turn, then two timed
    assert [len(w) for w, _c in out] == [4, 4] and [len(c) for _w, c in out] == [4, 4]


def test_gaps_that_cost_less_than_asked_are_scaled_up(monkeypatch):
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        monkeypatch.setattr(api, "time_in_turns", _in_turns(1.0, 0.8, []))  # a gap's spin runs 20% short here
        got = api._settle_gaps(_plan(), [4_000_000], want=OPS_CPU_S + 0.004, replay_s=OPS_CPU_S,
                               tell=lambda *a: None)
    finally:
        torch.set_num_threads(prev)
    assert abs(sum(got) * 0.8 - 4_000_000) <= 40_000, got

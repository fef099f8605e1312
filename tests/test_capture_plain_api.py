"""Traces recorded with the plain PyTorch API, the ways users record them (the ExecutionTraceObserver alone,
or under a profiler schedule of one active step), replay a whole training step; and a cost measured as paired
ratios is called "no measurable cost" only when its interval says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmint.core.paired import describe, paired_ratios, ratio_interval
from benchmint.replay import replay_trace


def _mlp_step(opt_name: str):
    torch.manual_seed(0)
    # 16 x 512 hidden activations and a 16 x 512 weight: the same element count, so a recycled tensor id (the
    # observer's ids follow addresses) can name either
    m = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 16))
    opt = torch.optim.Adam(m.parameters()) if opt_name == "adam" else torch.optim.SGD(m.parameters(), lr=0.01)
    x, y = torch.randn(16, 64), torch.randn(16, 16)

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.mse_loss(m(x), y).backward()
        opt.step()

    return step


def _et_alone(path: Path, opt_name: str) -> Path:
    return record_et_alone(_mlp_step(opt_name), path, warmup=2)


def record_et_alone(step, path: Path, warmup: int) -> Path:
    """``step`` run ``warmup`` times, then once recorded by the ExecutionTraceObserver alone (no profiler: no
    ProfilerStep node, no Kineto trace)."""
    from torch.profiler import ExecutionTraceObserver

    for _ in range(warmup):
        step()
    et = ExecutionTraceObserver()
    et.register_callback(str(path))
    et.start()
    step()
    et.stop()
    et.unregister_callback()
    return path


def _schedule_active_1(path: Path) -> Path:
    from torch.profiler import ExecutionTraceObserver, ProfilerActivity, profile, schedule

    step = _mlp_step("adam")
    et = ExecutionTraceObserver().register_callback(str(path))
    with profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=1, warmup=1, active=1, repeat=1),
                 execution_trace_observer=et) as prof:
        for _ in range(4):
            step()
            prof.step()
    return path


def _replays_whole(et: Path) -> dict:
    r = replay_trace(et, gaps="none", warmup=0, iters=2).result
    assert r["coverage"] == 1.0, r["skipped"]
    assert r["ops_replayed"] == r["ops_total"] > 20
    return r


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_a_training_step_recorded_by_the_et_observer_alone_replays(tmp_path, opt_name):
    et = _et_alone(tmp_path / "et.json", opt_name)
    names = {n["name"] for n in json.loads(et.read_text())["nodes"]}
    assert "aten::threshold_backward" in names  # the step's backward is in the trace
    _replays_whole(et)


def test_a_training_step_recorded_under_a_schedule_of_one_active_step_replays(tmp_path):
    _replays_whole(_schedule_active_1(tmp_path / "et.json"))


def test_a_tensor_no_op_produced_is_made_at_its_consumers_shape_even_when_a_later_op_reuses_its_id(tmp_path):
    """The observer records the backward reading the activation it saved under a tensor id of its own (no op
    produced it); when a later op's output is recorded under that same id, storage, offset and element count
    with another shape (ids follow addresses, which are recycled), every iteration must still bind the
    backward's input at the shape the backward recorded."""
    et = _et_alone(tmp_path / "et.json", "adam")
    d = json.loads(et.read_text())
    nodes = d["nodes"]
    tb = next(i for i, n in enumerate(nodes) if n["name"] == "aten::threshold_backward")
    saved = nodes[tb]["inputs"]["values"][1]  # self: the saved ReLU output
    produced = {tuple(v[:2]) for n in nodes[:tb] for v in n["outputs"]["values"] if isinstance(v, list)
                and len(v) == 6}
    assert tuple(saved[:2]) not in produced  # as recorded: read, never produced
    # a later output of the same element count but another shape takes the saved tensor's identity
    later = next((j, k) for j in range(tb + 1, len(nodes)) for k, (v, s) in
                 enumerate(zip(nodes[j]["outputs"]["values"], nodes[j]["outputs"]["shapes"], strict=False))
                 if isinstance(v, list) and len(v) == 6 and v[3] == saved[3] and s != [16, 512])
    old = nodes[later[0]]["outputs"]["values"][later[1]][:2]

    def swap(x):
        if isinstance(x, list):
            return [*saved[:2], *x[2:]] if len(x) == 6 and x[:2] == old else [swap(v) for v in x]
        return x

    for n in nodes[later[0]:]:
        n["inputs"]["values"] = swap(n["inputs"]["values"])
        n["outputs"]["values"] = swap(n["outputs"]["values"])
    et.write_text(json.dumps(d))
    _replays_whole(et)


def _et_and_kineto_without_steps(d: Path) -> tuple[Path, Path]:
    """One step recorded by the ET observer and the profiler, without a schedule: no ProfilerStep node."""
    from torch.profiler import ExecutionTraceObserver, ProfilerActivity, profile

    step = _mlp_step("sgd")
    step()
    et = ExecutionTraceObserver()
    et.register_callback(str(d / "et.json"))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        et.start()
        step()
        et.stop()
    et.unregister_callback()
    prof.export_chrome_trace(str(d / "kineto.json"))
    return d / "et.json", d / "kineto.json"


def test_a_trace_without_profiler_steps_holding_a_collectives_record_param_comms_node_calibrates(tmp_path):
    """PARAM's NCCL traces (8-rank DLRM, 2-GPU ResNet) hold ``record_param_comms`` nodes, which c10d opens with
    the collective's parameters attached; the calibration re-created them as bare record_function scopes under
    Kineto, which segfaulted reading those parameters (rank 0 of the DLRM replay died with -11). The trace is
    one recorded without a ProfilerStep (its scopes are the whole trace's), with such a node added as the
    DLRM trace holds them: between the ops, holding none. Run in a child process: a segfault must fail the
    test, not end the session."""
    et, kineto = _et_and_kineto_without_steps(tmp_path)
    doc = json.loads(et.read_text())
    nodes = doc["nodes"]
    root = next(n for n in nodes if n["name"] == "[pytorch|profiler|execution_trace|thread]")
    comms = json.loads(json.dumps(next(n for n in nodes if n["name"].startswith("Optimizer.step#"))))
    comms.update(id=max(n["id"] for n in nodes) + 1, name="record_param_comms", ctrl_deps=root["id"])
    nodes.append(comms)
    et.write_text(json.dumps(doc))
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "benchmint", "replay", str(et), "--kineto", str(kineto), "--gaps",
                        "recorded", "--iters", "1", "--warmup", "0", "--no-store", "--out", str(tmp_path / "out"),
                        "--json", str(out)], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["coverage"] == 1.0 and r["original_iter_time_estimated_s"] is not None  # calibrated


def test_paired_ratios_say_no_measurable_cost_only_within_a_narrow_interval():
    same = ratio_interval([1.0 + 0.004 * ((i % 5) - 2) for i in range(40)])
    assert same["verdict"] == "no measurable cost" and same["ci_low"] <= 1 <= same["ci_high"]
    assert "no measurable cost" in describe(same)
    costly = ratio_interval([1.05 + 0.004 * ((i % 5) - 2) for i in range(40)])
    assert costly["verdict"] == "cost" and costly["ci_low"] > 1
    noisy = ratio_interval([0.8, 1.25, 0.9, 1.2, 1.0, 0.85, 1.15, 1.1, 0.95, 1.05])
    assert noisy["verdict"] == "inconclusive" and "wider than +-3%" in describe(noisy)
    few = ratio_interval([1.0, 1.01])
    assert few["ci_low"] is None and few["verdict"] == "inconclusive"
    assert paired_ratios([2.0, 0.0, 3.0], [1.0, 1.0, 0.0]) == [2.0]

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from benchmint.core.errors import UserError
from benchmint.trace import load
from benchmint.trace.capture import Capture, capture_steps
from benchmint.trace.capture_file import read_capture

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def _tiny_train_step():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.AdamW(m.parameters())
    x = torch.randn(4, 8)

    def step():
        opt.zero_grad()
        m(x).sum().backward()
        opt.step()

    return step


def test_capture_writes_trace_kineto_and_unobserved_step_time(tmp_path):
    s = capture_steps(_tiny_train_step(), tmp_path, warmup=2, measure=5, record=1)
    for name in ("et.json", "kineto.json", "capture.json"):
        assert (tmp_path / name).exists(), name
    cj = json.loads((tmp_path / "capture.json").read_text())
    assert cj == json.loads(json.dumps(s))
    assert cj["schema_version"] == "1.0"
    st = cj["step_time_s"]
    assert st["n"] == 5 and len(st["values"]) == 5 and st["median"] > 0
    assert st["p10"] <= st["median"] <= st["p90"]
    assert "no profiler or observer" in cj["how_measured"]
    assert cj["threads"] == torch.get_num_threads()
    assert cj["device"] == "cpu" and cj["torch_version"] == torch.__version__
    assert cj["host"]["cpu_cores_logical"] >= 1 and cj["command_line"]
    assert cj["recorded_steps"] == 1 and cj["complete"] is True
    # the host's pace, probed just before and just after the measured steps (outside their clock), is kept
    assert len(cj["pace"]["values"]) == 10 and cj["pace"]["ns_per_turn"] > 0 and "interpreter loop" in cj["pace"]["how"]
    assert read_capture(tmp_path / "capture.json")["pace"] == cj["pace"]
    # the recorded step round-trips through the trace layer, with backward and optimizer ops inside it
    tr = load(tmp_path / "et.json")
    assert [it.number for it in tr.iterations] == [9]  # after warm-up, measured, discarded and one bare step
    names = {n.name for n in tr.top_level_ops(tr.iterations[0].node)}
    assert "aten::linear" in names and any("foreach" in n or "addcdiv" in n for n in names)
    assert any(n.name.endswith("Backward0") for n in tr.nodes)


def test_capture_records_only_after_warmup_and_ignores_extra_steps(tmp_path):
    calls = []
    with Capture(tmp_path, warmup=1, measure=5, record=2, discard=0) as cap:
        for _ in range(12):
            calls.append(cap.recording)
            cap.step()
    assert calls[:6] == [False] * 6 and calls[6:8] == [True, True] and not any(calls[8:])
    assert cap.done and len(cap.recorded_times_s) == 2
    assert [it.number for it in load(tmp_path / "et.json").iterations] == [6, 7]


def test_capture_throws_away_the_first_recorded_step(tmp_path):
    # by default one step is recorded and thrown away first: it pays the observers' first-seen costs
    calls = []
    with Capture(tmp_path, warmup=1, measure=5, record=2) as cap:
        for _ in range(12):
            calls.append(cap.recording)
            torch.ones(4).add(1)
            cap.step()
    # step 6 is recorded and thrown away, step 7 runs with nothing attached, steps 8 and 9 are recorded
    assert calls[:7] == [False] * 6 + [True] and calls[7] is False and calls[8:10] == [True] * 2
    assert not any(calls[10:])
    assert len(cap.discarded_times_s) == 1 and len(cap.recorded_times_s) == 2 and len(cap.step_times_s) == 5
    assert [it.number for it in load(tmp_path / "et.json").iterations] == [8, 9]
    cj = json.loads((tmp_path / "capture.json").read_text())
    assert cj["discarded_steps"] == 1 and cj["recorded_steps"] == 2 and cj["complete"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["capture.json", "et.json", "kineto.json"]


def test_a_loop_that_stops_during_a_recorded_step_is_replayed_from_its_last_whole_step(tmp_path):
    from benchmint.replay.api import replay_trace

    x = torch.randn(64, 64)
    with Capture(tmp_path, warmup=1, measure=5, record=2, discard=0) as cap:
        for k in range(8):  # steps 6 and 7 are to be recorded; the loop stops in the middle of step 7
            x.mm(x).relu()
            if k < 7:
                x.add(1)
                cap.step()
    assert [it.number for it in load(tmp_path / "et.json").iterations] == [6, 7]
    cj = json.loads((tmp_path / "capture.json").read_text())
    assert cj["recorded_iterations"] == [6] and cj["recorded_steps"] == 1
    r = replay_trace(tmp_path, gaps="none", warmup=0, iters=1).result
    assert r["iteration"] == 6 and r["ops_total"] == 3  # mm, relu and add of step 6, not the half of step 7


def test_capture_that_ends_in_the_discarded_step_records_nothing(tmp_path):
    with pytest.warns(UserWarning, match="incomplete"), Capture(tmp_path, warmup=0, measure=5, discard=2) as cap:
        for _ in range(6):
            cap.step()
    cj = json.loads((tmp_path / "capture.json").read_text())
    assert cj["complete"] is False and cj["recorded_steps"] == 0 and "et" not in cj["files"]
    assert not (tmp_path / "et.json").exists() and not cap.recording


def test_a_step_with_non_finite_values_records_loads_and_replays(tmp_path):
    # a diverged training step (a NaN loss read with .item()): the observer writes "nan", "-nan" and "-inf" as
    # text, and a replay whose synthetic values drift to NaN records the same way when it is calibrated
    def step():
        x = torch.tensor([float("nan"), -float("nan"), float("-inf")])
        return [x[i].item() for i in range(3)], torch.add(x, 1, alpha=float("-inf"))

    capture_steps(step, tmp_path, warmup=1, measure=5, record=1)
    tr = load(tmp_path / "et.json")
    items = [n.outputs[0] for n in tr.nodes if n.name == "aten::item"]
    assert len(items) == 3 and items[0] != items[0] and items[1] != items[1] and items[2] == float("-inf")
    assert [n.inputs[2] for n in tr.nodes if n.name == "aten::add"] == [float("-inf")]
    from benchmint.replay.api import replay_trace

    res = replay_trace(tmp_path, warmup=1, iters=3)
    assert res.result["coverage"] == 1.0 and res.result["estimate_note"] is None
    assert res.result["original_iter_time_estimated_s"] > 0


def test_capture_needs_five_measured_steps(tmp_path):
    with pytest.raises(UserError, match="at least 5"):
        Capture(tmp_path, measure=3)


def test_capture_that_ends_early_writes_an_incomplete_summary(tmp_path):
    with pytest.warns(UserWarning, match="incomplete"), Capture(tmp_path, warmup=1, measure=5) as cap:
        for _ in range(3):
            cap.step()
    cj = json.loads((tmp_path / "capture.json").read_text())
    assert cj["complete"] is False and cj["measured_steps"] == 2 and "et" not in cj["files"]


TRAIN_SCRIPT = """
import sys, torch
torch.manual_seed(0)
m = torch.nn.Linear(8, 4)
opt = torch.optim.SGD(m.parameters(), lr=0.1)
x = torch.randn(16, 8)
for _ in range(int(sys.argv[1])):
    opt.zero_grad()
    m(x).pow(2).mean().backward()
    opt.step()
print("trained", sys.argv[1])
"""

INFER_SCRIPT = """
import torch
from benchmint.trace import capture
m = torch.nn.Linear(8, 4).eval()
x = torch.randn(16, 8)
with torch.inference_mode():
    for _ in range(30):
        m(x).relu()
        capture.step()
"""


def _capture_training_script(tmp_path: Path, steps: int, *options: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`benchmint capture [options] -- python train.py STEPS` on the unmodified TRAIN_SCRIPT."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(TRAIN_SCRIPT))
    out = tmp_path / "cap"
    r = subprocess.run([sys.executable, "-m", "benchmint.cli.main", "capture", "--out", str(out), "--no-store",
                        *options, "--", sys.executable, str(script), str(steps)], capture_output=True, text=True,
                       env=ENV, cwd=tmp_path)
    return r, out


@pytest.mark.slow
def test_cli_capture_of_an_unmodified_training_script(tmp_path):
    # --threads reaches a command's torch too (it was taken for --workload alone, and silently dropped here)
    threads = 1  # torch's default is one per core (2 here), and it takes no more than that from OMP_NUM_THREADS
    r, out = _capture_training_script(tmp_path, 25, "--threads", str(threads))
    script = tmp_path / "train.py"
    assert r.returncode == 0, r.stderr
    assert "trained 25" in r.stdout and "step time without observers" in r.stdout
    cj = json.loads((out / "capture.json").read_text())
    assert cj["complete"] and cj["command_line"] == [sys.executable, str(script), "25"]
    assert cj["threads"] == threads
    assert json.loads((out / "run.json").read_text())["kind"] == "capture"
    assert any(n.name == "aten::addmm" for n in load(out / "et.json").nodes)


@pytest.mark.slow
def test_cli_capture_of_a_training_script_keeps_the_optimizer_in_each_recorded_step(tmp_path):
    # steps ended by optimizer.step(): the boundary is taken after the optimizer's profiler scope has closed, so
    # each recorded step holds its optimizer (a boundary inside the scope lost the scope's node and, with it,
    # the optimizer's ops from the step; a second recorded step took in the next one's ops)
    r, out = _capture_training_script(tmp_path, 16, "--warmup", "1", "--measure", "5", "--record", "2")
    assert r.returncode == 0, r.stderr
    cj = json.loads((out / "capture.json").read_text())
    assert cj["recorded_steps"] == 2 and cj["note"] is None
    tr = load(out / "et.json")
    assert len(tr.iterations) == 2
    for it in tr.iterations:
        names = {n.name for n in tr.top_level_ops(it.node)}
        assert "aten::linear" in names and names & {"aten::add_", "aten::_foreach_add_"}, names
        assert any(n.name.startswith("Optimizer.step#SGD") for n in tr.nodes if n.parent == it.node.id)


def test_every_optimizer_step_ends_one_step_with_a_scheduler_made_later_or_the_method_put_back(tmp_path, monkeypatch):
    """Steps ended by optimizer.step(): the optimizer's step is wrapped on its first call; an LR scheduler made
    after that wraps the wrapper (it needs a bound method), and a library that puts the optimizer's own method
    back every step (Accelerate's mixed precision) gets it wrapped again: each call ends exactly one step."""
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    own = opt.step
    with _optimizer_ends_steps(tmp_path, monkeypatch) as cap:
        for i in range(12):
            model(torch.ones(3, 4)).sum().backward()
            opt.step()
            if i == 2:
                sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.9 ** k)
            if i > 2:
                sched.step()
            if i == 6:
                opt.step = own  # as Accelerate restores it
            assert cap._ended == i + 1, (i, cap._ended)


@contextlib.contextmanager
def _optimizer_ends_steps(tmp_path, monkeypatch):
    """A started capture whose steps the optimizers' step calls end, as ``benchmint capture -- python`` does."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from benchmint.trace import capture as capture_mod

    cap = Capture(tmp_path, warmup=2, measure=5)
    monkeypatch.setattr(capture_mod, "_active", cap)
    monkeypatch.setattr(capture_mod, "_manual", False)
    handle = register_optimizer_step_post_hook(capture_mod._optimizer_hook)
    try:
        cap.start()
        yield cap
    finally:
        handle.remove()
        cap.close(warn=False)


def test_a_scheduler_made_before_the_first_step_does_not_warn_that_the_step_was_overridden(tmp_path, monkeypatch):
    """Wrapping the optimizer's step dropped the LR scheduler's mark on it, and torch warned on every script with a
    scheduler made before its first step: "optimizer.step() has been overridden after learning rate scheduler
    initialization"."""
    import warnings

    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.9 ** k)
    with _optimizer_ends_steps(tmp_path, monkeypatch) as cap, warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        for i in range(4):
            model(torch.ones(3, 4)).sum().backward()
            opt.step()
            sched.step()
            assert cap._ended == i + 1


def test_capture_ending_before_a_kept_step_is_whole_keeps_no_trace(tmp_path):
    # warm-up 0, 5 measured, 1 discarded, 1 bare: the 8th step is the first kept one; the loop ends before it
    with pytest.warns(UserWarning, match="incomplete, no step recorded"), Capture(tmp_path, warmup=0, measure=5) as cap:
        for _ in range(7):
            cap.step()
        assert cap.recording  # the kept step has begun
    cj = json.loads((tmp_path / "capture.json").read_text())
    assert cj["complete"] is False and cj["recorded_steps"] == 0 and "et" not in cj["files"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["capture.json"]
    # and a replay of the folder says the capture is incomplete, not only that et.json is missing
    from benchmint.replay import replay_trace

    with pytest.raises(UserError, match="incomplete"):
        replay_trace(tmp_path)


@pytest.mark.slow
def test_cli_capture_with_step_calls_and_errors(tmp_path):
    script = tmp_path / "infer.py"
    script.write_text(textwrap.dedent(INFER_SCRIPT))
    out = tmp_path / "cap"
    base = [sys.executable, "-m", "benchmint.cli.main", "capture", "--no-store"]
    r = subprocess.run([*base, "--out", str(out), "--", "python", str(script)], capture_output=True, text=True,
                       env=ENV, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Path(out / "et.json").exists()
    # too few steps: one line, exit 2
    short = tmp_path / "short.py"
    short.write_text(textwrap.dedent(TRAIN_SCRIPT))
    r = subprocess.run([*base, "--out", str(tmp_path / "c2"), "--", sys.executable, str(short), "3"],
                       capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr
    # not a Python command
    r = subprocess.run([*base, "--out", str(tmp_path / "c3"), "--", "ls", "-l"], capture_output=True, text=True,
                       env=ENV, cwd=tmp_path)
    assert r.returncode == 2 and "not a Python interpreter" in r.stderr
    # a script that is not there: one line, before anything runs (not the wrapper's traceback)
    r = subprocess.run([*base, "--out", str(tmp_path / "c4"), "--", "python", "nonexist.py"], capture_output=True,
                       text=True, env=ENV, cwd=tmp_path)
    assert r.returncode == 2 and "nonexist.py: no such script" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c4").exists()
    from benchmint.cli.capture import BOOT, _wrap

    script = tmp_path / "t.py"
    script.write_text("pass\n")
    assert _wrap(["python", "-W", "ignore", "-u", str(script), "3"])[-5:] == ["-u", "-c", BOOT, str(script), "3"]


def test_cli_capture_of_a_builtin_workload(cli, tmp_path):
    code, out, err = cli("capture", "--out", str(tmp_path / "w"), "--workload", "moe", "--no-store")
    assert code == 0, err
    assert (tmp_path / "w" / "capture.json").exists() and "captured 1 step" in out
    code, out, err = cli("capture", "--out", str(tmp_path / "x"), "--workload", "nope", "--no-store")
    assert code == 2 and "unknown workload" in err


def test_cli_capture_of_a_script_that_crashes_says_so(cli, tmp_path):
    script = tmp_path / "crash.py"
    script.write_text("raise SystemExit('boom')\n")
    code, out, err = cli("capture", "--out", str(tmp_path / "c"), "--no-store", "--", "python", str(script))
    assert code == 2
    assert "failed (exit status 1)" in err and "steps were timed" not in err


def test_a_capture_given_the_model_describes_it_and_its_replays_say_what_they_replay(tmp_path):
    import torch

    from benchmint.replay.api import replay_trace, run_record
    from benchmint.trace.capture import capture_steps

    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU())
    x = torch.randn(4, 16)
    s = capture_steps(lambda: model(x), tmp_path / "cap", warmup=1, measure=5, record=1, model=model)
    assert s["model"]["architecture"] == "Sequential" and s["model"]["parameter_count"] == 16 * 8 + 8
    assert s["model"]["dtype"] == "float32"
    rec = run_record(replay_trace(tmp_path / "cap", iters=2, warmup=1), {})
    assert rec.workload["architecture"] == "Sequential" and rec.workload["parameter_count"] == 136


def test_every_n_records_one_step_in_every_n_each_in_its_own_folder_that_replays(tmp_path):
    from benchmint.replay import replay_trace

    s = capture_steps(_tiny_train_step(), tmp_path, warmup=1, measure=5, record=3, every=3)
    # warm-up 1, measured 5, the discarded recording (6), a bare step (7), then steps 8, 11, 14 recorded
    assert s["every"] == 3 and s["iterations"] == ["iter_8", "iter_11", "iter_14"]
    assert s["recorded_iterations"] == [8, 11, 14] and s["recorded_steps"] == 3 and s["complete"]
    for name, n in zip(s["iterations"], (8, 11, 14), strict=True):
        d = tmp_path / name
        cj = json.loads((d / "capture.json").read_text())
        assert cj["recorded_iterations"] == [n] and cj["recorded_steps"] == 1 and cj["iterations"] is None
        assert [it.number for it in load(d / "et.json").iterations] == [n]
        r = replay_trace(d, gaps="none", warmup=0, iters=1).result
        assert r["coverage"] == 1.0 and r["iteration"] == n
    # the folder above them is not a trace: the refusal names the folders to replay
    with pytest.raises(UserError, match="iter_8"):
        replay_trace(tmp_path, iters=1)
    c = s["recording_cost"]
    # the un-observed steps between recordings (7, 9, 10, 12, 13) and 15-17 each follow one within AFTER_RECORDING
    # steps: set apart as the recordings' own cost; the idle recorder is judged by the steps after the last
    # recording (18-22: --measure of them; there were none, though the docs said so and the job ran on)
    assert c["idle_steps"] == 5 and c["idle_step_s"] is not None and c["unobserved_steps"] == 5
    assert c["after_recording_steps"] == 8 and len(c["after_recording_vs_unobserved"]) == 3


def test_every_capture_says_what_recording_cost(tmp_path):
    from benchmint.trace.capture import AFTER_RECORDING
    from benchmint.trace.capture_file import read_capture

    s = capture_steps(_tiny_train_step(), tmp_path, warmup=2, measure=6, record=1)
    c = read_capture(tmp_path / "capture.json")["recording_cost"]  # typed: the fields validate
    assert c == json.loads(json.dumps(s["recording_cost"]))
    assert c["unobserved_step_s"] == pytest.approx(s["step_time_s"]["median"])
    assert c["recorded_step_s"] == pytest.approx(s["recorded_step_time_s"][0])
    assert c["recorded_vs_unobserved"] == pytest.approx(c["recorded_step_s"] / c["unobserved_step_s"])
    # after the recording began, the loop ran on until as many un-observed steps as were measured were timed
    assert c["idle_steps"] == 6 and c["idle_step_s"] > 0
    # set apart: the bare step after the discarded recording and the AFTER_RECORDING steps after the kept one
    assert c["after_recording_steps"] == 1 + AFTER_RECORDING
    assert len(c["after_recording_vs_unobserved"]) == AFTER_RECORDING
    assert all(x > 0 for x in c["after_recording_vs_unobserved"])
    assert c["idle_vs_unobserved"] == pytest.approx(c["idle_step_s"] / c["unobserved_step_s"] - 1)
    assert c["idle_cost_measurable"] in (True, False) and 0 <= c["idle_p_value"] <= 1
    assert "idle steps" in c["how"]
    # the loop's pause while the kept recording's traces were written is a cost too, and said
    assert c["write_s"] > 0 and "traces written" in c["write_how"]


def test_a_recording_leaves_no_profiler_state_or_garbage_behind(tmp_path):
    import gc

    import torch

    from benchmint.trace.capture import Capture

    step = _tiny_train_step()
    cap = Capture(tmp_path, warmup=1, measure=5, record=2, discard=0, every=3)
    gc.collect()
    base, after = [], []
    with cap:
        while not cap.done:
            was = cap.recording
            step()
            cap.step()
            if not was and not cap.recorded_times_s:
                base.append(gc.collect())  # a step's own cyclic garbage
            elif was and not cap.recording:
                # the recording just ended: no observer, no profiler session, no cycles of its events left
                assert not torch.autograd.profiler._is_profiler_enabled
                assert cap._prof is None and cap._et is None
                after.append(gc.collect())
    assert len(after) == 2 and max(after) <= max(base) + 50, (base, after)
    assert len(cap.recorded_times_s) == 2 and len(cap.write_times_s) == 2


def test_capture_json_holds_the_last_recordings_write_time(tmp_path):
    from benchmint.trace.capture import Capture

    step = _tiny_train_step()
    cap = Capture(tmp_path, warmup=1, measure=5, record=1, discard=0, every=2)
    with cap:
        while not cap.finished:
            step()
            cap.step()
    c = json.loads((tmp_path / "capture.json").read_text())["recording_cost"]
    assert len(cap.write_times_s) == 1 and c["write_s"] == pytest.approx(cap.write_times_s[0])


def test_cli_capture_every_n_prints_the_recording_cost(cli, tmp_path):
    code, out, err = cli("capture", "--out", str(tmp_path / "c"), "--workload", "small_transformer", "--warmup", "1",
                         "--measure", "5", "--every", "2", "--record", "2", "--no-store")
    assert code == 0, err
    text = " ".join(out.split())
    assert "one in every 2" in text and "iter_" in text
    assert "recording cost: the recorded step took" in text and "recorder idle:" in text
    assert "writing its traces paused the loop" in text
    assert {p.name for p in (tmp_path / "c").glob("iter_*")} == {"iter_8", "iter_10"}
    code, _, err = cli("capture", "--out", str(tmp_path / "d"), "--workload", "moe", "--every", "1")
    assert code == 2 and "--every 1" in err


def test_the_thread_count_beside_cpu_use_is_the_one_the_measured_steps_ran_with(tmp_path):
    # a script that sets its threads after the capture started (ddp_train does): capture.json must not keep
    # the count at the start, or the per-thread utilization is compared with its replay's at another count
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    x = torch.ones(64, 64)

    def step():
        torch.set_num_threads(1)
        (x @ x).sum()

    try:
        summary = capture_steps(step, tmp_path / "cap", warmup=2, measure=5, record=1)
    finally:
        torch.set_num_threads(before)
    sm = summary["system_metrics"]
    assert summary["threads"] == 1 and sm["threads"] == 1
    assert sm["cpu_utilization_per_thread"] == pytest.approx(sm["cpu_utilization"])


def test_a_replay_puts_the_host_s_pace_beside_its_timed_iterations_next_to_the_capture_s(cli, tmp_path):
    capture_steps(_tiny_train_step(), tmp_path / "cap", warmup=2, measure=5, record=1)
    cap = json.loads((tmp_path / "cap" / "capture.json").read_text())
    code, out, err = cli("replay", str(tmp_path / "cap"), "--iters", "3", "--warmup", "1", "--json", "r.json",
                         "--no-store")
    assert code == 0, err
    p = json.loads((tmp_path / "r.json").read_text())["pace"]
    assert p["capture_ns_per_turn"] == cap["pace"]["ns_per_turn"] and p["timed_ns_per_turn"] > 0
    assert p["timed_vs_capture"] == pytest.approx(p["timed_ns_per_turn"] / p["capture_ns_per_turn"] - 1)
    assert "host pace" in " ".join(out.split()) and "beside the capture's steps" in " ".join(out.split())
    # a pace probed on another host (or Python) says nothing of this one's: not compared
    cap["pace"]["host"] = "another-host"
    (tmp_path / "cap" / "capture.json").write_text(json.dumps(cap))
    code, out, err = cli("replay", str(tmp_path / "cap"), "--iters", "3", "--warmup", "1", "--json", "r2.json",
                         "--no-store")
    p = json.loads((tmp_path / "r2.json").read_text())["pace"]
    assert code == 0 and p["capture_ns_per_turn"] is None and p["timed_vs_capture"] is None
    assert "host pace" not in out


def test_the_pace_probes_stay_out_of_the_measured_steps_clock_even_without_warm_up(tmp_path, monkeypatch):
    import time

    from benchmint.core import pace

    def slow_probe(turns=pace.PROBE_TURNS):
        time.sleep(0.2)
        return 10.0

    monkeypatch.setattr(pace, "probe", slow_probe)
    s = capture_steps(lambda: torch.ones(4).sum(), tmp_path, warmup=0, measure=5, record=1)
    assert len(s["pace"]["values"]) == 10
    # a step of microseconds: one holding a 0.2 s probe reads 0.2 s, a loaded host's preemption far less
    assert max(s["step_time_s"]["values"]) < 0.15, s["step_time_s"]["values"]


def test_the_steps_after_a_recording_are_timed_from_their_own_start(tmp_path):
    from benchmint.trace.capture import AFTER_RECORDING, Capture

    step = _tiny_train_step()
    cap = Capture(tmp_path, warmup=1, measure=5, record=1, discard=0)
    with cap:
        while not cap.finished:
            step()
            cap.step()
    # the first step after the recording once carried the recorded step and the traces' writing with it
    assert [k for k, _t in cap.after_times_s] == list(range(1, AFTER_RECORDING + 1))
    assert cap.after_times_s[0][1] < cap.recorded_times_s[0] + cap.write_times_s[0]
    assert len(cap.idle_times_s) == 5


def test_a_folder_holding_an_earlier_capture_is_refused_unless_forced(cli, tmp_path):
    # another script's iter_15/ and iter_20/ stayed beside the new capture's et.json, and a replay mixed them
    old = tmp_path / "c"
    (old / "iter_15").mkdir(parents=True)
    (old / "et.json").write_text("{}")
    (old / "notes.txt").write_text("mine")
    code, _, err = cli("capture", "--out", str(old), "--workload", "small_transformer", "--warmup", "1",
                       "--measure", "5", "--no-store")
    assert code == 2 and "earlier capture" in err and "iter_15/" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = cli("capture", "--out", str(old), "--workload", "small_transformer", "--warmup", "1",
                       "--measure", "5", "--no-store", "--force")
    assert code == 0, err
    assert not (old / "iter_15").exists() and (old / "notes.txt").read_text() == "mine"  # only a capture's files
    assert (old / "capture.json").exists() and (old / "et.json").stat().st_size > 2

"""A multi-rank capture never hangs: a rank whose peers are gone or stuck fails in one line naming the rank
and where it waited, and torchrun stops the others (issue 13: a 4-rank capture once hung for 70 minutes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmint.trace import rank_watch

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p),
            **extra}


def _fake_child(tmp_path: Path, body: str) -> tuple[subprocess.Popen, str, str]:
    """A child that marks its beacon as the capture does, then runs ``body``."""
    beacon = rank_watch.new_file("beacon-", rank_watch.SIZE, str(tmp_path))
    stacks = rank_watch.new_file("stacks-", 0, str(tmp_path))
    code = textwrap.dedent("""
        import os, time
        from benchmint.trace import rank_watch
        rank_watch.dump_stacks_on_signal(os.environ[rank_watch.ENV_STACKS])
        b = rank_watch.Beacon(os.environ[rank_watch.ENV_BEACON])
    """) + textwrap.dedent(body)
    proc = subprocess.Popen([sys.executable, "-c", code],
                            env=_env(**{rank_watch.ENV_BEACON: beacon, rank_watch.ENV_STACKS: stacks}))
    return proc, beacon, stacks


def test_a_child_stuck_in_a_step_is_stopped_with_its_stacks_and_the_stage_it_waited_in(tmp_path):
    proc, beacon, stacks = _fake_child(tmp_path, """
        for n in range(1, 4):
            b.mark(rank_watch.STEP, n)
            time.sleep(0.05)
        b.mark(rank_watch.RECORDED_STEP, 4)

        def waiting_for_the_other_ranks():
            time.sleep(3600)

        waiting_for_the_other_ranks()
    """)
    try:
        with pytest.raises(rank_watch.RankStuck) as e:
            rank_watch.watch(proc, beacon, 1.0, stacks, tmp_path / "rank1" / rank_watch.STACKS_NAME, poll_s=0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.poll() is not None  # stopped, not left behind
    assert (e.value.stage, e.value.step) == (rank_watch.RECORDED_STEP, 4)
    assert rank_watch.describe(e.value.stage, e.value.step).startswith("after step 4, in the recorded step")
    assert e.value.stacks == tmp_path / "rank1" / rank_watch.STACKS_NAME
    assert "waiting_for_the_other_ranks" in e.value.stacks.read_text()


def test_a_child_that_moves_on_or_is_before_its_first_step_is_not_stopped(tmp_path):
    # a long time before the first step (loading a model) is not bounded; then steps every 0.2 s for longer
    # than the timeout in all: the child runs to its end and its exit status comes back
    proc, beacon, stacks = _fake_child(tmp_path, """
        time.sleep(3)  # longer than the bound: the wait before the first step is not bounded
        for n in range(1, 16):
            b.mark(rank_watch.STEP, n)
            time.sleep(0.2)
        b.mark(rank_watch.SCRIPT_END, 15)
        raise SystemExit(3)
    """)
    # 3 s of steps against a bound of 2 s: a loaded host may stall a 0.2 s step several times over, not tenfold
    assert rank_watch.watch(proc, beacon, 2.0, stacks, tmp_path / rank_watch.STACKS_NAME, poll_s=0.1) == 3
    assert not (tmp_path / rank_watch.STACKS_NAME).exists()


PEER_STUCK = """
import datetime, os, sys, time
import torch
import torch.distributed as dist

# torch's own bound set far beyond the test: only the capture's bound can end the wait
dist.init_process_group("gloo", timeout=datetime.timedelta(hours=2))
rank = dist.get_rank()
m = torch.nn.Linear(4, 4)
opt = torch.optim.SGD(m.parameters(), lr=0.1)
for _ in range(int(sys.argv[1])):
    opt.zero_grad()
    m(torch.ones(2, 4)).sum().backward()
    for p in m.parameters():
        dist.all_reduce(p.grad)
    opt.step()
if rank == 1:
    time.sleep(3600)  # rank 1 never reaches the final barrier: rank 0 waits there for its peer
dist.barrier()
dist.destroy_process_group()
"""


def _stop_job(p: subprocess.Popen, tmp_path: Path) -> None:
    """Nothing of the job outlives the test: torchrun stops its workers on SIGTERM (each worker runs in a
    session of its own, out of reach of a signal to torchrun's group); any left are killed by their pid."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if str(tmp_path).encode() in (d / "cmdline").read_bytes():
                    os.kill(int(d.name), signal.SIGKILL)
            except OSError:
                pass


def test_a_rank_whose_peer_never_reaches_the_final_barrier_fails_in_one_line_instead_of_hanging(tmp_path):
    script = tmp_path / "peer_stuck.py"
    script.write_text(PEER_STUCK)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "benchmint", "capture", "--out", str(tmp_path / "cap"), "--warmup", "0", "--measure", "5",
           "--discard", "0", "--timeout", "8", "--no-store", "--", "python", str(script), "8"]
    env = _env(GLOO_SOCKET_IFNAME=os.environ.get("GLOO_SOCKET_IFNAME", "lo"), OMP_NUM_THREADS="1")
    # output to files, not pipes: a worker left behind would hold a pipe open
    with open(tmp_path / "out.txt", "w") as fo, open(tmp_path / "err.txt", "w") as fe:
        p = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=fo, stderr=fe)
        try:
            p.wait(timeout=240)
        except subprocess.TimeoutExpired:
            _stop_job(p, tmp_path)
            pytest.fail("the 2-rank capture hung: one rank waited for a peer that never came")
        finally:
            _stop_job(p, tmp_path)
    out, err = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    assert p.returncode != 0
    lines = [ln for ln in (out + err).splitlines() if "error: capture: rank " in ln]
    assert lines, err[-3000:]
    assert "made no progress for" in lines[0] and "after step 8, after the recording" in lines[0]
    assert "--timeout 8" in lines[0]  # (8 s: writing the recording is watched too, and a loaded host is slow)
    # the ranks recorded their step before the wait, and the stuck one left its threads' stacks
    assert all((tmp_path / "cap" / f"rank{r}" / "et.json").exists() for r in (0, 1))
    # (the line of the script where it waited: rank 1's sleep or rank 0's barrier, whichever timed out first)
    lines_of = {i + 1 for i, ln in enumerate(PEER_STUCK.splitlines()) if "time.sleep" in ln or "dist.barrier" in ln}
    stacks = [tmp_path / "cap" / f"rank{r}" / rank_watch.STACKS_NAME for r in (0, 1)]
    assert any(s.exists() and any(f'peer_stuck.py", line {n}' in s.read_text() for n in lines_of) for s in stacks)


def test_a_negative_timeout_is_one_line_and_exit_2(cli, tmp_path):
    code, _, err = cli("capture", "--out", str(tmp_path / "c"), "--timeout", "-1", "--", "python", "train.py")
    assert code == 2 and "--timeout -1 must be 0 (no bound) or more seconds" in err

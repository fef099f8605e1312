"""Multi-rank capture and replay under torchrun (torch's own launcher), and ``--ranks N`` on the same path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmint.core.errors import UserError
from benchmint.replay.rank_env import check_ranks, from_environ, rank_folders

PARAM = Path(__file__).parent / "data" / "param"


def _torchrun(n: int, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
           "BENCHMINT_DDP_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(n), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _collectives(et: Path) -> int:
    nodes = json.loads(et.read_text())["nodes"]
    return sum(1 for n in nodes if n["name"].startswith("c10d::") and n["name"] != "c10d::barrier")


@pytest.fixture(scope="module")
def ddp_capture(tmp_path_factory) -> Path:
    """A 2-rank DDP training step captured with `benchmint capture` under torchrun: rank0/ and rank1/."""
    d = tmp_path_factory.mktemp("ddp")
    p = _torchrun(2, "-m", "benchmint", "capture", "--out", str(d / "cap"), "--warmup", "2", "--measure", "5",
                  "--no-store", "--", "python", "-m", "benchmint.models.ddp_train", "--steps", "12",
                  "--hidden", "32", "--seq", "8", cwd=d)
    assert p.returncode == 0, p.stderr[-3000:]
    return d / "cap"


def test_capture_under_torchrun_writes_one_folder_per_rank(ddp_capture):
    assert rank_folders(ddp_capture) == [0, 1]
    for r in (0, 1):
        folder = ddp_capture / f"rank{r}"
        assert {"et.json", "kineto.json", "capture.json"} <= {p.name for p in folder.iterdir()}
        assert _collectives(folder / "et.json") >= 1  # DDP's gradient all-reduce


def test_replay_under_torchrun_matches_every_collective_and_rank0_saves_the_joined_result(ddp_capture, tmp_path):
    p = _torchrun(2, "-m", "benchmint", "replay", str(ddp_capture), "--device", "cpu", "--warmup", "1", "--iters",
                  "3", "--gaps", "none", "--no-store", "--json", str(tmp_path / "r.json"), "--out",
                  str(tmp_path / "out"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["ranks"] == 2 and r["coverage"] == 1.0 and r["backend"] == "gloo"
    want = _collectives(ddp_capture / "rank0" / "et.json")
    assert r["collectives"]["replayed_per_rank"] == want
    assert [x["rank"] for x in r["per_rank"]] == [0, 1]
    assert [Path(x["trace"]).parent.name for x in r["per_rank"]] == ["rank0", "rank1"]
    assert all(x["collectives"]["count"] == want for x in r["per_rank"])
    run = json.loads((tmp_path / "out" / "run.json").read_text())  # only rank 0 writes it
    assert run["config"]["launcher"] == "torchrun" and run["config"]["ranks"] == 2
    assert p.stdout.count("replay of ") == 1  # one summary table, rank 0's


def test_ranks_shortcut_replays_the_same_rank_folders_and_modes_split_the_step(ddp_capture, cli):
    import benchmint.replay.distributed as d

    said: list[str] = []
    full = d.replay_ranks(ddp_capture, ranks=2, device="cpu", warmup=1, iters=2, gaps="none", echo=said.append).result
    assert f"replaying 2 ranks of {ddp_capture}/rank0..rank1 (gloo" in said[0]  # not "of DIR/rank0/et.json"
    comm = d.replay_ranks(ddp_capture, ranks=2, device="cpu", warmup=1, iters=2, gaps="none", mode="comm").result
    compute = d.replay_ranks(ddp_capture, ranks=2, device="cpu", warmup=1, iters=2, gaps="none",
                             mode="compute").result
    n = full["collectives"]["replayed_per_rank"]
    assert n >= 1 and comm["collectives"]["replayed_per_rank"] == n and comm["ops_total"] == n
    assert compute["collectives"]["replayed_per_rank"] == 0
    assert compute["ops_total"] == full["ops_total"] - n
    assert comm["mode"] == "comm" and compute["mode"] == "compute"
    # each mode is compared with its part of the original step, per rank (compute read "no original to compare
    # with", its error null, while its fidelity block held one)
    for part in (comm, compute):
        assert part["error"] is not None and all(e is not None for e in part["errors_per_rank"])
        assert part["original_iter_time_s"] < full["original_iter_time_s"]
    assert compute["what_if"]["expected_iter_time_s"] == compute["original_iter_time_s"]
    # the original's communication is after each collective (gloo records nothing until it is done): the
    # comm selection's share holds it, not the launch alone; the wait for the peers is said to be in it
    from benchmint.replay.adapt import select
    from benchmint.replay.collective_time import recorded_spans
    from benchmint.replay.source import view_from_trace
    from benchmint.trace import load
    from benchmint.trace.kineto import join_kineto

    tr = load(ddp_capture / "rank0" / "et.json")
    view = view_from_trace(tr, join_kineto(tr, ddp_capture / "rank0" / "kineto.json"))
    share = select(view, "op:^c10d::")[1].info["share_of_replayed_step"]
    spans = sum(c["span_s"] for c in recorded_spans(view))
    assert share * view.step_span_s >= spans > 0
    assert "wait for its peers" in comm["error_note"]
    sm = full.get("system_metrics") or {}
    assert sm.get("rank") == full["slowest_rank"] and all("system_metrics" in x for x in full["per_rank"])


def test_a_capture_with_a_rank_folder_missing_is_refused_not_replayed_as_a_smaller_world(ddp_capture, cli, tmp_path):
    # rank1/ lost in a copy: the rest replayed as a whole 1-rank job, "coverage 1.000" and an error figure
    import shutil

    half = tmp_path / "half"
    shutil.copytree(ddp_capture / "rank0", half / "rank0")
    for extra in ([], ["--ranks", "1"], ["--ranks", "2"]):
        code, _, err = cli("replay", str(half), *extra, "--no-store")
        assert code == 2 and "a capture of 2 ranks (world_size 2 in rank0/run.json), and rank1/ is missing" in err
    (half / "rank0" / "run.json").unlink()  # its Kineto trace says so too
    code, _, err = cli("replay", str(half), "--ranks", "1", "--no-store")
    assert code == 2 and "world_size 2 in rank0/kineto.json), and rank1/ is missing" in err


def test_world_size_that_differs_from_the_traces_ranks_is_one_line_and_exit_2(tmp_path):
    p = _torchrun(2, "-m", "benchmint", "replay", str(PARAM / "dlrm_pytorch_et.tar.gz"), "--device", "cpu",
                  "--no-store", cwd=tmp_path, timeout=300)
    assert p.returncode != 0
    lines = [x for x in p.stderr.splitlines() if x.startswith("error:")]
    assert lines and "the trace has 8 ranks and torchrun's WORLD_SIZE is 2; they must be equal" in lines[0]
    # torchrun prints its own traceback of the launcher (ChildFailedError); none comes from benchmint's code
    assert not [x for x in p.stderr.splitlines() if x.strip().startswith("File ") and "benchmint" in x]


def test_ranks_flag_under_torchrun_and_bad_modes_are_refused(cli, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29999")
    code, _, err = cli("replay", str(PARAM / "linear_et.json.gz"), "--ranks", "2", "--no-store")
    assert code == 2 and "--ranks 2 starts its own processes; under torchrun (WORLD_SIZE=2) leave it out" in err
    monkeypatch.delenv("RANK")
    code, _, err = cli("replay", str(PARAM / "linear_et.json.gz"), "--mode", "comm", "--no-store")
    assert code == 2 and "--mode comm: the step has no collectives to replay" in err
    code, _, err = cli("replay", str(PARAM / "linear_et.json.gz"), "--mode", "all", "--no-store")
    assert code == 2 and "--mode all: choose full, compute, comm" in err


def test_rank_environment_is_read_as_torchrun_sets_it():
    assert from_environ({}) is None
    e = from_environ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                      "MASTER_ADDR": "node0", "MASTER_PORT": "29500"})
    assert (e.rank, e.world, e.local_rank, e.local_world, e.master_addr, e.master_port) == (3, 8, 1, 4, "node0",
                                                                                            29500)
    with pytest.raises(UserError, match="RANK=8 is not in 0..WORLD_SIZE-1"):
        from_environ({"RANK": "8", "WORLD_SIZE": "8", "MASTER_ADDR": "a", "MASTER_PORT": "1"})
    with pytest.raises(UserError, match="MASTER_ADDR/MASTER_PORT are not"):
        from_environ({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(UserError, match=r"the trace's ranks are \[0, 2\], not 0..1"):
        check_ranks("t", [0, 2], 2, "--ranks is")


def test_capture_every_under_torchrun_is_refused_and_needs_no_rendezvous(cli, monkeypatch, tmp_path):
    # a capture reads RANK and WORLD_SIZE only (no MASTER_ADDR needed); --every across ranks would nest the
    # folders the other way round from what a multi-rank replay reads
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    code, _, err = cli("capture", "--out", str(tmp_path / "c"), "--workload", "bilstm", "--every", "3")
    assert code == 2 and "under torchrun (WORLD_SIZE=2) capture single steps (leave out --every)" in err
    assert not (tmp_path / "c").exists()

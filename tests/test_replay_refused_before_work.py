"""What a replay cannot do is one line and exit 2 before any planning or timing: a --device this machine cannot
replay on (an unknown type: torch lists the twenty it knows; a type this build of torch has no kernels for: mps
printed torch's whole dispatcher table, exit 1; meta, which holds no data and would "replay" in no time), and
output paths that cannot be written (a --json that is a folder failed with IsADirectoryError after the whole
replay, and its result was lost)."""

from __future__ import annotations

import pytest
import torch

from benchmint.trace.capture import capture_steps


@pytest.fixture(scope="module")
def cap(tmp_path_factory):
    d = tmp_path_factory.mktemp("dev") / "cap"
    capture_steps(lambda: torch.ones(4).sum(), d, warmup=1, measure=5, record=1)
    return d


@pytest.mark.parametrize("device,says", [("tpu", "not a device"), ("mps", "this machine's torch cannot run on it"),
                                         ("meta", "nothing to time")])
def test_a_device_that_cannot_replay_here_is_one_line_and_exit_2(cli, cap, tmp_path, device, says):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    code, out, err = cli("replay", str(cap), "--device", device, "--no-store", "--out", str(tmp_path / "o"))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and says in lines[0] and f"--device {device}" in lines[0], err


@pytest.mark.parametrize("flag,path,says", [("--json", ".", "a folder; give a file name"),
                                            ("--out", "afile", "a file, not a folder"),
                                            ("--save-gaps", "afile/g.json", "is a file, so no folder can be made")])
def test_an_output_path_that_cannot_be_written_is_refused_before_the_replay(cli, cap, tmp_path, monkeypatch, flag,
                                                                           path, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    code, out, err = cli("replay", str(cap), flag, path, "--no-store")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and says in lines[0] and flag in lines[0], err
    assert "replay iteration" not in out  # refused before anything ran


@pytest.mark.parametrize("args,says", [(["--select", ""], "--select : give scope:NAME"),
                                       (["--scale", "batch=1"], "a factor of 1 changes nothing")])
def test_an_adaptation_that_changes_nothing_is_refused(cli, cap, tmp_path, args, says):
    # --select "" replayed the whole step, and --scale batch=1 a "scaled" step with no error figure
    code, _, err = cli("replay", str(cap), *args, "--no-store", "--out", str(tmp_path / "o"))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and says in lines[0], err


def test_a_kineto_trace_of_another_run_of_the_same_step_is_refused(cli, cap, tmp_path):
    # another run of the same script matches op for op (its record-function ids even agree), and lent its
    # durations, gaps and step time: a step of batch 12 was judged against one of batch 16. Another process
    # recorded it, and that is what tells it
    import subprocess
    import sys

    other = tmp_path / "other"
    subprocess.run([sys.executable, "-c", "import torch; from benchmint.trace.capture import capture_steps; "
                    f"capture_steps(lambda: torch.ones(4).sum(), {str(other)!r}, warmup=1, measure=5, record=1)"],
                   check=True, capture_output=True, timeout=300)
    for cmd in (["replay", str(cap), "--no-store", "--out", str(tmp_path / "o")],
                ["export", str(cap), "--out", str(tmp_path / "e")]):
        code, _, err = cli(*cmd, "--kineto", str(other / "kineto.json"))
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and "recorded by process" in lines[0] and "another run" in lines[0], err
    code, _, err = cli("replay", str(cap), "--kineto", str(cap / "kineto.json"), "--no-store", "--iters", "3",
                       "--out", str(tmp_path / "o2"))
    assert code == 0, err  # its own, named with --kineto, is fine

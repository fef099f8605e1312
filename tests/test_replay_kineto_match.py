"""A Kineto trace that matches none of the ET's ops is another run's: refused in one line naming both files
(exit 2), not replayed as a step without gaps; a partial match is warned about beside the result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmint.core.errors import UserError
from benchmint.replay import replay_trace
from benchmint.replay.headline import headline, kineto_line
from benchmint.trace.capture import capture_steps


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("kmatch")
    lin = torch.nn.Linear(32, 32)
    capture_steps(lambda: lin(torch.randn(8, 32)).relu(), base / "a", warmup=1, measure=5, record=1)
    conv = torch.nn.Conv1d(4, 4, 3)
    capture_steps(lambda: torch.tanh(conv(torch.randn(2, 4, 16))).sum(), base / "b", warmup=1, measure=5, record=1)
    return base / "a", base / "b"


def test_a_kineto_trace_of_another_run_is_refused_naming_both_files(two, cli, tmp_path):
    a, b = two
    code, out, err = cli("replay", str(a / "et.json"), "--kineto", str(b / "kineto.json"), "--no-store",
                         "--out", str(tmp_path / "o"))
    assert code == 2, out
    assert len(err.strip().splitlines()) == 1
    assert str(b / "kineto.json") in err and str(a / "et.json") in err and "another run" in err
    with pytest.raises(UserError, match="another run"):
        replay_trace(a / "et.json", b / "kineto.json", gaps="none", warmup=0, iters=1)


def test_its_own_kineto_trace_is_joined_without_a_warning(two):
    a, _ = two
    r = replay_trace(a, warmup=0, iters=2).result
    assert r["kineto_matched"] == 1.0 and kineto_line(r) is None


def test_a_partial_match_is_warned_about():
    r = {"coverage": 1.0, "ops_replayed": 10, "ops_total": 10, "iter_time_s": {"median": 1e-3},
         "kineto_matched": 0.4, "kineto": "k.json"}
    line = kineto_line(r)
    assert line is not None and "matched only 40% of the step's ops" in line and "k.json" in line
    assert line in headline(r)


def test_a_capture_folders_own_kineto_trace_is_warned_about_not_refused(two, tmp_path):
    # the folder's own kineto.json is picked up without --kineto: a user could not leave it out to get past
    # a refusal; matching little (a truncated buffer) is said under the headline instead
    import shutil

    a, b = two
    d = tmp_path / "mixed"
    shutil.copytree(a, d)
    shutil.copy(b / "kineto.json", d / "kineto.json")
    r = replay_trace(d, gaps="none", warmup=0, iters=1).result
    assert r["kineto_matched"] < 0.1 and kineto_line(r) is not None

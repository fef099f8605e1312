"""One ReplayOptions carries a replay's settings from the CLI to each rank's worker."""

from pathlib import Path

import msgspec
import pytest

from benchmint.core.errors import UserError
from benchmint.replay.api import replay_trace
from benchmint.replay.options import ReplayOptions
from benchmint.replay.rank_worker import RankSpec

PARAM = Path(__file__).parent / "data" / "param"


def test_settings_by_name_replace_the_options_fields_and_unknown_names_are_refused():
    base = ReplayOptions(device="cpu", iters=7)
    o = ReplayOptions.of(base, iters=3, gaps="none")
    assert (o.device, o.iters, o.gaps, o.warmup) == ("cpu", 3, "none", 3)
    assert ReplayOptions.of(None) == ReplayOptions()
    with pytest.raises(TypeError):
        ReplayOptions.of(base, itres=3)


@pytest.mark.parametrize(("settings", "message"), [
    ({"gaps": "some"}, "--gaps some: choose recorded or none"),
    ({"target": "x"}, "target x: choose auto, capture, estimate or cpu"),
    ({"iters": 0}, "--iters must be >= 1"),
    ({"threads": 0}, "--threads 0: must be at least 1"),
])
def test_replay_trace_refuses_bad_settings_in_one_line(settings, message):
    with pytest.raises(UserError, match=message):
        replay_trace(PARAM / "linear_et.json.gz", **settings)


def test_a_rank_spec_carries_the_options_through_json():
    spec = RankSpec(rank=1, world=2, trace_rank=1, trace="t.tar.gz", kineto=None, backend="gloo",
                    options=ReplayOptions(device="cpu", threads=1, iters=5, gaps="none", memory_check=False),
                    out="o.json", timeout_s=30.0, collective_timeout_s=5.0, parent=1)
    back = msgspec.json.decode(msgspec.json.encode(spec), type=RankSpec)
    assert back == spec and back.options.iters == 5 and back.options.memory_check is False


def test_a_ranks_gaps_are_settled_by_what_the_iteration_with_collectives_took(monkeypatch):
    # gaps in ns, times in s: an iteration (ops + collectives) of 30 ms without gaps, 40 ms wanted -> 10 ms of
    # gaps, which the second round finds adding 10 ms (rate 1): 10 ms kept; over the aim without gaps -> none
    from types import SimpleNamespace

    from benchmint.replay import api

    measured = iter([[0.030] * 15, [0.040] * 15])
    monkeypatch.setattr(api, "time_iterations", lambda *a, **k: next(measured))
    plan = SimpleNamespace(compile=lambda gaps_ns=None: None)
    got = api._settle_live(plan, [5_000_000, 5_000_000], 0.040, lambda s: None)
    assert sum(got) == 10_000_000
    measured = iter([[0.060] * 15, [0.050] * 15])
    assert sum(api._settle_live(plan, [5_000_000, 5_000_000], 0.040, lambda s: None)) == 0

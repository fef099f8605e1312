"""Arrival schedules: seeded, precomputed, right rates and shapes; clear errors for inconsistent flags."""

from __future__ import annotations

import numpy as np
import pytest

from benchmint.core.errors import UserError
from benchmint.llm.schedule import arrival_offsets, make_schedule


def test_poisson_is_seeded_and_has_the_asked_rate():
    a = make_schedule("server", num_requests=20000, rate=50.0, seed=3)
    b = make_schedule("server", num_requests=20000, rate=50.0, seed=3)
    c = make_schedule("server", num_requests=20000, rate=50.0, seed=4)
    assert np.array_equal(a.offsets_s, b.offsets_s) and not np.array_equal(a.offsets_s, c.offsets_s)
    gaps = np.diff(a.offsets_s)
    assert a.offsets_s[0] == 0 and np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(1 / 50, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)  # exponential: CV = 1
    assert a.describe()["arrival"] == "poisson"


def test_burstiness_changes_the_spread_not_the_mean():
    bursty = np.diff(arrival_offsets(20000, 10.0, burstiness=0.25, seed=1))
    regular = np.diff(arrival_offsets(20000, 10.0, burstiness=4.0, seed=1))
    assert bursty.mean() == pytest.approx(0.1, rel=0.05) and regular.mean() == pytest.approx(0.1, rel=0.05)
    assert bursty.std() / bursty.mean() == pytest.approx(2.0, rel=0.1)  # CV = 1/sqrt(shape)
    assert regular.std() / regular.mean() == pytest.approx(0.5, rel=0.1)


def test_constant_offline_and_closed_loop():
    c = make_schedule("constant", num_requests=5, rate=4.0)
    assert c.offsets_s.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    o = make_schedule("offline", num_requests=7)
    assert o.offsets_s.tolist() == [0.0] * 7
    s = make_schedule("single-stream", num_requests=3)
    assert not s.open_loop and s.concurrency == 1
    k = make_schedule("concurrency", concurrency=4, duration_s=2.0)
    assert k.concurrency == 4 and k.duration_s == 2.0


def test_duration_cuts_the_schedule():
    s = make_schedule("server", duration_s=3.0, rate=100.0, seed=0)
    assert s.offsets_s.max() < 3.0 and 240 < s.count < 360


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(scenario="server", num_requests=5), "--rate"),
        (dict(scenario="server", rate=1.0), "--num-requests or --duration"),
        (dict(scenario="offline"), "--num-requests"),
        (dict(scenario="concurrency", num_requests=3), "--concurrency"),
        (dict(scenario="warp", num_requests=3), "unknown --scenario"),
        (dict(scenario="server", rate=1.0, num_requests=3, burstiness=0), "--burstiness"),
    ],
)
def test_bad_flags_are_user_errors(kw, msg):
    with pytest.raises(UserError, match=msg):
        make_schedule(**kw)

"""How benchmint starts a profiler session: CUPTI released after CUDA sessions where that is safe, the user's
choice kept, and the one-cycle warning silenced for the session's start only."""

from __future__ import annotations

import os
import warnings

from benchmint.core import profiler_session


class _Prof:
    def __enter__(self):
        warnings.warn("Warning: Profiler clears events at the end of each cycle.", UserWarning, stacklevel=1)
        return self


def test_the_start_silences_the_one_cycle_warning_and_leaves_the_filters_as_they_were(monkeypatch):
    monkeypatch.delenv("TEARDOWN_CUPTI", raising=False)
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        profiler_session.start(_Prof(), cuda=False)
        assert not seen
        warnings.warn("Warning: Profiler clears events (the user's own profiler)", UserWarning, stacklevel=1)
        assert len(seen) == 1  # not hidden outside the session's start
    assert warnings.filters == before


def test_cupti_is_released_after_cuda_sessions_only_where_safe_and_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("TEARDOWN_CUPTI", raising=False)
    monkeypatch.setattr(profiler_session, "_teardown_safe", lambda: False)  # CUDA before 12.6, or no CUDA
    profiler_session.start(_Prof(), cuda=True)
    assert "TEARDOWN_CUPTI" not in os.environ
    monkeypatch.setattr(profiler_session, "_teardown_safe", lambda: True)
    profiler_session.start(_Prof(), cuda=False)
    assert "TEARDOWN_CUPTI" not in os.environ  # a CPU session never touches CUPTI
    profiler_session.start(_Prof(), cuda=True)
    assert os.environ["TEARDOWN_CUPTI"] == "1"
    monkeypatch.setenv("TEARDOWN_CUPTI", "0")
    profiler_session.start(_Prof(), cuda=True)
    assert os.environ["TEARDOWN_CUPTI"] == "0"

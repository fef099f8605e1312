"""One way to save a run: :func:`save_run` writes ``run.json`` into the run's folder and appends the record to the
results store; :func:`save_runs` stores many records (imports, pulls, the demo) that the store does not hold yet.

Every measuring command (capture, replay, llm bench, llm mlperf, llm sweep, learn's measured runs, the demo)
saves its RunRecord through these, so the file, the store and what they return are the same everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from benchmint.results.record import RunRecord
from benchmint.results.store import ResultsStore, default_results_dir

StoreArg = ResultsStore | str | os.PathLike | None


@dataclass(frozen=True)
class SavedRun:
    """Where a run went: its ``run.json`` (None when no folder was given), the store's part file holding it and
    the store's folder (both None when it was not stored)."""

    record: RunRecord
    run_json: Path | None
    part: Path | None
    store: Path | None


@dataclass(frozen=True)
class SavedRuns:
    """What :func:`save_runs` did: records given, records new to the store, the part written (None: no new)."""

    total: int
    new: int
    part: Path | None
    store: Path


def open_store(store: StoreArg) -> ResultsStore:
    """``store`` as a ResultsStore: one given, a folder, or None for the default (``$BENCHMINT_RESULTS`` or
    ``./benchmint-results``)."""
    return store if isinstance(store, ResultsStore) else ResultsStore(default_results_dir(store))


def save_run(record: RunRecord, out_dir: str | os.PathLike | None, *, store: StoreArg = None, append: bool = True,
             name: str = "run.json") -> SavedRun:
    """Write ``out_dir/run.json`` (atomically; skipped when ``out_dir`` is None) and, when ``append``, append the
    record to ``store`` (a ResultsStore, a folder, or None for the default store). Returns the paths."""
    run_json = record.write(out_dir, name) if out_dir is not None else None
    if not append:
        return SavedRun(record, run_json, None, None)
    st = open_store(store)
    part = st.append(record)
    return SavedRun(record, run_json, part, Path(st.path))


def save_runs(records: Iterable[RunRecord], *, store: StoreArg = None) -> SavedRuns:
    """Append, in one part, the records whose id ``store`` does not hold yet (so saving twice stores nothing
    twice). Parts of the store that cannot be read are skipped here as in every read (``store.problems``)."""
    import warnings

    from benchmint.results.store import StoreWarning

    st = open_store(store)
    recs = list(records)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)  # callers print store.problems themselves
        have = {r.id for r in st.records()}
    new = [r for r in recs if r.id not in have]
    part = st.append_many(new) if new else None
    return SavedRuns(len(recs), len(new), part, Path(st.path))

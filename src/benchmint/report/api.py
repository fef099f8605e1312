"""Choose the runs of a report (store ids, run.json files, folders) and write the HTML file."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from benchmint.core.errors import UserError
from benchmint.results.record import RunRecord
from benchmint.results.store import ResultsStore, StoreWarning, load_run_json


def select_runs(
    runs: list[str] | None,
    results: str | os.PathLike | None = None,
    include_imported: bool = False,
    kind: str | None = None,
) -> tuple[list[RunRecord], list[Path], list[str]]:
    """The records to report on, the folders their artifacts may be relative to, and warnings.

    Each item of ``runs`` is a run.json file, a folder (every run.json below it), or a run id (or unique
    prefix) in the store. With no ``runs``, every stored run is taken, except imported MLPerf results unless
    ``include_imported``.
    """
    store = ResultsStore(results)
    if not runs or any(not Path(r).exists() for r in runs):  # (run ids are looked up in the store)
        store.check_folder()  # a file given as the store is an error, not "no runs"
    records: list[RunRecord] = []
    base_dirs: list[Path] = []
    problems: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        if not runs:
            records = [r for r in store.records() if include_imported or r.kind != "imported"]
            problems += [str(p) for p in store.problems]
        else:
            for item in runs:
                p = Path(item)
                if p.is_file():
                    records.append(load_run_json(p))
                    base_dirs.append(p.parent)
                elif p.is_dir():
                    found = sorted(p.rglob("run.json"))
                    if not found:
                        raise UserError(f"{p}: no run.json found in this folder")
                    for f in found:
                        records.append(load_run_json(f))
                        base_dirs.append(f.parent)
                else:
                    if not store.parts_dir.is_dir():
                        raise UserError(f"{item}: not a run.json, a folder or a run id in {store.path} "
                                        "(the store is empty)")
                    records.append(store.get(item))
                    problems += [str(x) for x in store.problems]
    if kind:
        records = [r for r in records if r.kind == kind]
    seen: dict[str, RunRecord] = {}
    for r in records:
        seen[r.id] = r
    ordered = sorted(seen.values(), key=lambda r: (r.created_s, r.id))
    return ordered, base_dirs, sorted(set(problems))


def no_runs_error(runs: list[str] | None, results: str | os.PathLike | None, include_imported: bool = False,
                  kind: str | None = None) -> UserError:
    """The one line `benchmint report` says when no run is selected: a page of empty sections is never what
    was asked for, and exiting 0 would hide a mistyped --results or --kind from a script."""
    store = ResultsStore(results)
    if runs:
        return UserError(f"no runs of kind {kind!r} among the --runs given; drop --kind or name other runs")
    if not store.path.exists():
        return UserError(f"{store.path}: no such results store (the folder does not exist); pass the store's "
                         f"folder with --results DIR or $BENCHMINT_RESULTS, or name runs with --runs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        stored = store.records()
    if not stored:
        return UserError(f"no runs to report: the store {store.path} holds none; store runs there first (any "
                         "measuring command, `benchmint results import`) or name run.json files with --runs")
    if kind:
        return UserError(f"no runs of kind {kind!r} in {store.path}; see `benchmint results list`")
    if not include_imported:
        return UserError(f"no runs to report: the store {store.path} holds only imported MLPerf results; add "
                         "--include-imported")
    return UserError(f"no runs to report in {store.path}")


def build_report(
    records: list[RunRecord],
    out: str | os.PathLike = "report.html",
    title: str = "benchmint report",
    base_dirs: list[Path] | None = None,
    predictions: list[dict] | None = None,
) -> Path:
    """Write one self-contained HTML report of ``records`` to ``out`` (with a "Predictions" section from the
    JSON documents of ``learn eval --json`` / ``recommend --json`` when given)."""
    from benchmint.report.html import write_report

    return write_report(records, Path(out), title=title, base_dirs=base_dirs, predictions=predictions)


def _binary(path: Path) -> bool:
    head = path.open("rb").read(4096)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start < len(head) - 4  # (a multi-byte character cut at the end of the block is still text)
    return b"\x00" in head


def load_predictions(paths: list[str | os.PathLike] | None) -> list[dict]:
    """The JSON documents given with ``--predictions`` (an evaluation or a recommendation each)."""
    from benchmint.core.jsonio import read_json
    from benchmint.report.predictions import kind_of

    docs = []
    for p in paths or []:
        path = Path(p)
        if not path.is_file():
            raise UserError(f"--predictions {path}: no such file")
        try:
            doc = read_json(path)
        except OSError as e:
            raise UserError(f"--predictions {path}: cannot read it ({e.strerror or e})") from None
        except ValueError as e:  # orjson.JSONDecodeError: a Parquet file, a CSV, a truncated JSON file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            what = "a binary file, not JSON" if _binary(path) else f"not valid JSON ({first})"
            raise UserError(f"--predictions {path}: {what}; expected the JSON of `benchmint learn eval --json` or "
                            "`benchmint recommend --json`") from None
        if not isinstance(doc, dict) or kind_of(doc) is None:
            raise UserError(f"--predictions {path}: not the JSON of `benchmint learn eval --json` or "
                            "`benchmint recommend --json`")
        docs.append(doc)
    return docs

"""The results store: a local Parquet dataset of RunRecords, queried through DuckDB.

Layout: ``<dir>/runs/part-<UTC time>-<random>.parquet``. Every append writes a new part file to a temporary
name in the same folder, fsyncs it and renames it into place, so a run killed mid-write leaves at most a
hidden ``.part-*.tmp`` file (ignored by readers) and never damages what is already stored. Concurrent appends
from several processes write different parts. :meth:`ResultsStore.compact` merges the parts into one.

Every part has the fixed columns ``id, created_s, kind, status, schema_version, record_json`` and the record
flattened into the columns of table ``runs``, named ``block__key__subkey`` (see
:mod:`benchmint.results.flatten` and docs/results.md). Queries see table ``runs``, which DuckDB reads from the
parts directly (:mod:`benchmint.results.query`).

A part that cannot be read (corrupt, truncated, not Parquet) or a record with an unknown schema version is
skipped with a warning naming the file (:attr:`ResultsStore.problems`); the rest of the store stays usable.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from benchmint.core.errors import UserError
from benchmint.results.flatten import flatten_record, json_ready, rows_to_table
from benchmint.results.query import connect_runs, part_table
from benchmint.results.record import READABLE_MAJORS, RunRecord

ENV_VAR = "BENCHMINT_RESULTS"
DEFAULT_DIR = "benchmint-results"
PARTS_DIR = "runs"



def default_results_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where the store lives: an explicit path (``--results``), else ``$BENCHMINT_RESULTS``, else
    ``./benchmint-results``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(DEFAULT_DIR)


class StoreWarning(UserWarning):
    """A part or record of the store was skipped (named in the message)."""


def check_schema_version(version: Any, where: str) -> None:
    """Raise :class:`UserError` naming ``where`` when a record's schema version is not one this tool reads."""
    major = str(version).split(".")[0] if version is not None else None
    if major not in READABLE_MAJORS:
        raise UserError(
            f"{where}: unknown RunRecord schema_version {version!r} (this benchmint reads "
            f"{' and '.join(m + '.x' for m in READABLE_MAJORS)}); upgrade benchmint or re-create the record"
        )


def record_from_dict(d: dict[str, Any], where: str) -> RunRecord:
    """A RunRecord from a stored dict, with clear errors naming ``where``."""
    if not isinstance(d, dict):
        raise UserError(f"{where}: not a RunRecord (expected a JSON object)")
    check_schema_version(d.get("schema_version"), where)
    try:
        return RunRecord.from_dict(d)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: not a valid RunRecord ({e})") from None


def load_run_json(path: str | os.PathLike) -> RunRecord:
    """Read a ``run.json`` written by a measuring command."""
    path = Path(path)
    try:
        d = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except orjson.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    return record_from_dict(d, str(path))


def _record_dict(record: RunRecord | dict[str, Any]) -> dict[str, Any]:
    if isinstance(record, dict):
        record = record_from_dict(record, f"record {record.get('id', '?')}")
    if not isinstance(record, RunRecord):
        raise TypeError(f"expected a RunRecord, got {type(record).__name__}")
    d = json_ready(record.to_dict())
    system = d.get("system")
    if isinstance(system, dict) and isinstance(system.get("gpus"), list) and "accelerator" not in system:
        # a host summary without the normalized block: derive it, so system__accelerator__* is always there
        from benchmint.results.metadata import accelerator_summary

        system["accelerator"] = accelerator_summary(system["gpus"])
    return d


@dataclass
class Problem:
    """Something in the store that was skipped."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ResultsStore:
    """A folder of Parquet parts, one RunRecord per row."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = default_results_dir(path)
        self.parts_dir = self.path / PARTS_DIR
        self.problems: list[Problem] = []

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    def check_folder(self, must_exist: bool = False) -> None:
        """Refuse, with one line naming the path, a store that is a file (or whose ``runs`` is one) and, with
        ``must_exist`` (the reading commands), a folder that does not exist: a mistyped ``--results`` must not
        read as "no runs". A folder without runs yet is a store with no runs."""
        how = f"pass the store's folder with --results DIR or ${ENV_VAR}"
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path}: is a file, not a results store folder; {how} "
                            "(a run.json or an exported file goes to `benchmint report --runs` or "
                            "`benchmint results import`)")
        if self.parts_dir.exists() and not self.parts_dir.is_dir():
            raise UserError(f"{self.parts_dir}: is a file, not the store's runs folder; {how}")
        if must_exist and not self.path.exists():
            raise UserError(f"{self.path}: no such results store (the folder does not exist); {how}, or store "
                            "runs there first (any measuring command, `benchmint results import`)")

    # ---------------------------------------------------------------- writing
    def append(self, record: RunRecord | dict[str, Any]) -> Path:
        """Store one record (a new part file, written atomically). Returns the part's path."""
        return self.append_many([record])

    def append_many(self, records: Iterable[RunRecord | dict[str, Any]]) -> Path:
        """Store many records in one part file (written atomically). Returns the part's path."""
        dicts = [_record_dict(r) for r in records]
        if not dicts:
            raise ValueError("append_many: no records")
        self.check_folder()
        name = f"part-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.parquet"
        return self._write_part(self.parts_dir / name, dicts)

    def _write_part(self, target: Path, dicts: list[dict[str, Any]]) -> Path:
        from benchmint.core.redact import known_secrets, redact

        secrets = known_secrets()  # a shared store holds no credential (core/redact.py)
        table = part_table([redact(json_ready(d), secrets) for d in dicts])
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return target

    def compact(self) -> Path | None:
        """Merge every readable part into one (atomically), then remove the merged parts.

        Unreadable parts are left in place (and reported in :attr:`problems`). If the process dies between
        the rename and the removals, records appear twice on disk; readers keep one copy per id.
        """
        parts = self.part_files()
        records = self.records()
        if len(parts) <= 1 or not records:
            return None
        bad = {p.path for p in self.problems}
        target = self._write_part(
            self.parts_dir / f"part-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-compact-"
            f"{uuid.uuid4().hex[:8]}.parquet",
            [r.to_dict() for r in records],
        )
        for p in parts:
            if p not in bad and p != target:
                p.unlink(missing_ok=True)
        self._remove_stale_temporaries()
        return target

    def _remove_stale_temporaries(self, older_than_s: float = 3600.0) -> None:
        """Remove temporary files left by writers killed mid-write (older than an hour: not in progress)."""
        now = time.time()
        for p in self.parts_dir.glob(".part-*.tmp"):
            try:
                if now - p.stat().st_mtime > older_than_s:
                    p.unlink()
            except OSError:
                pass

    # ---------------------------------------------------------------- reading
    def part_files(self) -> list[Path]:
        if not self.parts_dir.is_dir():
            return []
        return sorted(p for p in self.parts_dir.glob("*.parquet") if not p.name.startswith("."))

    def _warn(self, path: Path, message: str) -> None:
        problem = Problem(path, message)
        self.problems.append(problem)
        warnings.warn(str(problem), StoreWarning, stacklevel=3)

    def read_part(self, path: Path) -> list[dict[str, Any]]:
        """The record dicts of one part; raises :class:`UserError` naming the file when unreadable."""
        try:
            table = pq.read_table(path, columns=["record_json"])
        except (OSError, pa.ArrowException, ValueError) as e:
            raise UserError(
                f"{path}: unreadable Parquet part ({type(e).__name__}: {e}); move it out of the store "
                "or restore it from a backup"
            ) from None
        out = []
        for i, text in enumerate(table.column("record_json").to_pylist()):
            try:
                out.append(orjson.loads(text))
            except (orjson.JSONDecodeError, TypeError) as e:
                raise UserError(f"{path}: row {i} holds no valid record JSON ({e})") from None
        return out

    def records(self) -> list[RunRecord]:
        """Every stored record (one per id, the latest written wins), oldest first.

        Unreadable parts and records with an unknown schema version are skipped and listed in
        :attr:`problems` (also emitted as :class:`StoreWarning`).
        """
        self.problems = []
        by_id: dict[str, RunRecord] = {}
        for part in self.part_files():
            try:
                dicts = self.read_part(part)
            except UserError as e:
                self._warn(part, str(e).removeprefix(f"{part}: ") + " (skipped)")
                continue
            for d in dicts:
                try:
                    rec = record_from_dict(d, str(part))
                except UserError as e:
                    self._warn(part, f"record {d.get('id', '?') if isinstance(d, dict) else '?'}: "
                               + str(e).removeprefix(f"{part}: ") + " (skipped)")
                    continue
                by_id[rec.id] = rec
        return sorted(by_id.values(), key=lambda r: (r.created_s, r.id))

    def get(self, run_id: str) -> RunRecord:
        """The record with this id (or a unique prefix of it)."""
        recs = self.records()
        exact = [r for r in recs if r.id == run_id]
        if exact:
            return exact[0]
        matches = [r for r in recs if r.id.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise UserError(f"no run {run_id!r} in {self.path}; see `benchmint results list`")
        raise UserError(
            f"run id prefix {run_id!r} matches {len(matches)} runs in {self.path}; give more of the id"
        )

    def __len__(self) -> int:
        return len(self.records())

    # ---------------------------------------------------------------- querying
    def table(self, records: list[RunRecord] | None = None) -> pa.Table:
        """Table ``runs``: the fixed columns, the flattened record and ``record_json``."""
        recs = self.records() if records is None else records
        return rows_to_table([flatten_record(r.to_dict()) for r in recs])

    def connect(self, records: list[RunRecord] | None = None):
        """A DuckDB connection with table ``runs``: read by DuckDB from the Parquet parts (every stored run;
        :mod:`benchmint.results.query`), or built from ``records`` when given."""
        if records is None:
            self.problems = []
            return connect_runs(self.part_files(), self.read_part, READABLE_MAJORS, self._warn)
        import duckdb

        con = duckdb.connect()
        runs = self.table(records)  # noqa: F841 - referenced by name below
        con.register("runs_arrow", runs)
        con.execute("CREATE TABLE runs AS SELECT * FROM runs_arrow")
        con.unregister("runs_arrow")
        return con

    def query(self, sql: str) -> tuple[list[str], list[tuple]]:
        """Run SQL against table ``runs``; returns (column names, rows)."""
        import duckdb

        try:  # a statement that is no query (DROP, CREATE, INSERT ...) changed only this connection's view and
            # printed "Success": it is refused, since `results query` reads
            kinds = [st.type for st in duckdb.extract_statements(sql)]
        except duckdb.Error:
            kinds = []  # a syntax error: DuckDB's own message, below
        reads = {getattr(duckdb.StatementType, n) for n in ("SELECT", "EXPLAIN", "PRAGMA", "SHOW")
                 if hasattr(duckdb.StatementType, n)}  # (older DuckDB parses DESCRIBE and SUMMARIZE as SHOW)
        other = [k.name for k in kinds if k not in reads]
        if other:
            raise UserError(f"query refused: {other[0]} is no query. `results query` only reads table `runs` (SELECT, "
                            "WITH, DESCRIBE, SUMMARIZE, EXPLAIN) and never changes the store; to write the runs to a file use "
                            "`benchmint results export`")
        con = self.connect()
        read_only(con)
        try:
            cur = con.execute(sql)
        except duckdb.Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if isinstance(e, duckdb.PermissionException) or "configuration has been locked" in first:
                raise UserError(f"query refused: {first}. `results query` only reads table `runs`: it writes no "
                                "file and reads none, and changes no setting (no COPY ... TO, ATTACH, INSTALL, "
                                "LOAD, read_csv/read_parquet of files, SET); to write the runs to a file use "
                                "`benchmint results export`") from None
            raise UserError(f"query failed: {first} (table is `runs`; see docs/results.md for columns)") from None
        if cur.description is None:
            return [], []
        cols = [d[0] for d in cur.description]
        return cols, cur.fetchall()


def read_only(con) -> None:
    """Make a DuckDB connection whose table ``runs`` is built read-only for what a user's SQL runs next:
    DuckDB's own switches, not a parser of SQL. ``enable_external_access = false`` stops every file and
    network access (COPY ... TO, EXPORT DATABASE, ATTACH, read_csv / read_parquet / glob of files, INSTALL,
    LOAD, secrets); it cannot be switched back on, and ``lock_configuration`` refuses every later SET / RESET
    / PRAGMA that changes a setting. The tables already built stay queryable; what a query creates lives in
    this connection's memory and goes with it."""
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

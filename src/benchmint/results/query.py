"""Table ``runs`` as DuckDB reads it straight from the store's Parquet parts.

Every part holds the fixed columns (``id, created_s, kind, status, schema_version, record_json``) and the
record flattened into the columns of table ``runs`` (:func:`part_table`); a column with no value in a part is
of Arrow type null there. :func:`connect_runs` builds table ``runs`` with one ``read_parquet`` per part, every
column cast to one type for the whole store (the rule of :func:`benchmint.results.flatten.rows_to_table`:
booleans, integers, numbers when integers and floats mix, else text), the core columns added when no part has
them, one row per id (the latest part, then the latest row, wins), records of an unknown schema version left
out, and rows ordered by (created_s, id) as :meth:`ResultsStore.records` returns them.

Parts written before the flattened columns existed (their schema has no :data:`FLATTENED_KEY` mark) are
flattened here in Python from ``record_json`` and joined to the same table, so an old store answers the same
queries; ``benchmint results compact`` rewrites them in the current layout.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from benchmint.results.flatten import BLOCKS, CORE_COLUMNS, TOP_COLUMNS, flatten_record, rows_to_table

FLATTENED_KEY = b"benchmint.flattened"  # schema metadata of a part that holds the flattened columns
_ORDER_COLS = ("_file", "_row")  # which part (parts sort by name) and row: the latest copy of an id wins


def part_table(dicts: list[dict[str, Any]]) -> pa.Table:
    """The Arrow table of one store part: the fixed columns, the flattened record and ``record_json``."""
    table = rows_to_table([flatten_record(d) for d in dicts], null_columns=True)
    return table.replace_schema_metadata({FLATTENED_KEY: b"1"})


def _sql_type(types: set[pa.DataType], default: pa.DataType | None) -> str:
    """One DuckDB type for a column from the Arrow types its parts hold (null types ignored)."""
    kinds = {t for t in types if not pa.types.is_null(t)}
    if not kinds:
        kinds = {default} if default is not None else {pa.string()}
    if kinds == {pa.bool_()}:
        return "BOOLEAN"
    if kinds == {pa.int64()}:
        return "BIGINT"
    if kinds <= {pa.int64(), pa.float64()}:
        return "DOUBLE"
    return "VARCHAR"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _order(name: str) -> tuple[int, str]:
    block = name.split("__", 1)[0]
    return (BLOCKS.index(block) if block in BLOCKS else len(BLOCKS), name)


def connect_runs(parts: list[Path], read_part: Callable[[Path], list[dict[str, Any]]],
                 readable_majors: tuple[str, ...], warn: Callable[[Path, str], None]):
    """A DuckDB connection with table ``runs`` read from ``parts`` (in the store's order). ``read_part`` reads the
    record dicts of a part without the flattened columns; ``warn(path, message)`` reports a skipped part or
    record."""
    import duckdb

    flat: list[tuple[Path, pa.Schema]] = []  # parts holding the flattened columns
    legacy_rows: list[dict[str, Any]] = []
    for path in parts:
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException, ValueError) as e:
            warn(path, f"unreadable Parquet part ({type(e).__name__}: {e}); move it out of the store or restore it "
                       "from a backup (skipped)")
            continue
        if (schema.metadata or {}).get(FLATTENED_KEY):
            flat.append((path, schema))
            continue
        try:  # a part written before the flattened columns: flatten it here
            dicts = read_part(path)
        except Exception as e:  # noqa: BLE001 - read_part names the file (UserError)
            warn(path, str(e).removeprefix(f"{path}: ") + " (skipped)")
            continue
        legacy_rows += [{**flatten_record(d), "_file": str(path), "_row": j} for j, d in enumerate(dicts)
                        if isinstance(d, dict)]
    con = duckdb.connect()
    schemas = [s for _, s in flat]
    sources = []
    if flat:
        files = ", ".join(_literal(str(p)) for p, _ in flat)
        sources.append(f"SELECT * RENAME (filename AS _file, file_row_number AS _row) FROM read_parquet([{files}], "
                       "union_by_name = true, filename = true, file_row_number = true)")
    if legacy_rows:
        legacy = rows_to_table(legacy_rows, null_columns=True)
        con.register("legacy_parts", legacy)
        schemas.append(legacy.schema)
        sources.append("SELECT * FROM legacy_parts")

    types: dict[str, set[pa.DataType]] = {}
    for schema in schemas:
        for f in schema:
            types.setdefault(f.name, set()).add(f.type)
    names = sorted((set(types) | set(CORE_COLUMNS)) - {*TOP_COLUMNS, "record_json", *_ORDER_COLS}, key=_order)
    columns = {name: _sql_type(types.get(name, set()), CORE_COLUMNS.get(name)) for name in names}
    columns = {"id": "VARCHAR", "created_s": "DOUBLE", "kind": "VARCHAR", "status": "VARCHAR",
               "schema_version": "VARCHAR", **columns, "record_json": "VARCHAR", "_file": "VARCHAR", "_row": "BIGINT"}
    mixed = [n for n, ts in types.items() if pa.bool_() in ts and len(ts - {pa.bool_(), pa.null(), pa.string()}) > 0]
    if mixed:  # DuckDB would read booleans mixed with numbers as numbers: text "true"/"false" as rows_to_table
        _all_rows_part_by_part(con, flat, schemas[-1] if legacy_rows else None, columns)
    else:
        have = set(types) | (set(_ORDER_COLS) if sources else set())
        union = " UNION ALL BY NAME ".join(f"({s})" for s in sources) if sources else "SELECT 1 WHERE false"
        con.execute(f"CREATE TEMP TABLE all_rows AS SELECT {_casts(columns, have)} FROM ({union})")
    _keep_readable_latest(con, columns, readable_majors, warn)
    if legacy_rows:
        con.unregister("legacy_parts")
    return con


def _casts(columns: dict[str, str], have: set[str]) -> str:
    return ", ".join(f"CAST({_quote(c) if c in have else 'NULL'} AS {t}) AS {_quote(c)}" for c, t in columns.items())


def _keep_readable_latest(con, columns: dict[str, str], readable_majors: tuple[str, ...],
                          warn: Callable[[Path, str], None]) -> None:
    """Table ``runs`` from ``all_rows``: records of a readable schema version (the others named in a warning),
    one per id (the latest part, then the latest row), ordered by (created_s, id)."""
    majors = ", ".join(_literal(m) for m in readable_majors)
    major = "split_part(coalesce(schema_version, ''), '.', 1)"
    for file, version, rid in con.execute(f"SELECT _file, schema_version, id FROM all_rows WHERE {major} "
                                          f"NOT IN ({majors}) ORDER BY _file, _row").fetchall():
        warn(Path(file), f"record {rid}: unknown RunRecord schema_version {version!r} (this benchmint reads "
                         f"{' and '.join(m + '.x' for m in readable_majors)}); upgrade benchmint or re-create the "
                         "record (skipped)")
    keep = ", ".join(_quote(c) for c in columns if c not in _ORDER_COLS)
    con.execute(f"CREATE TABLE runs AS SELECT {keep} FROM all_rows WHERE {major} IN ({majors}) "
                "QUALIFY row_number() OVER (PARTITION BY id ORDER BY _file DESC, _row DESC) = 1 "
                "ORDER BY created_s, id")
    con.execute("DROP TABLE all_rows")


def _all_rows_part_by_part(con, flat: list[tuple[Path, pa.Schema]], legacy: pa.Schema | None,
                           columns: dict[str, str]) -> None:
    """``all_rows`` when a column holds booleans in some parts and numbers in others: one ``read_parquet`` per
    part, each column cast on its own (slower; such a column is rare)."""
    selects = []
    for path, schema in flat:
        src = (f"(SELECT * RENAME (filename AS _file, file_row_number AS _row) FROM read_parquet("
               f"{_literal(str(path))}, filename = true, file_row_number = true))")
        selects.append(f"SELECT {_casts(columns, set(schema.names) | set(_ORDER_COLS))} FROM {src}")
    if legacy is not None:
        selects.append(f"SELECT {_casts(columns, set(legacy.names))} FROM legacy_parts")
    con.execute("CREATE TEMP TABLE all_rows AS " + " UNION ALL ".join(selects))

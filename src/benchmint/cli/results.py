"""Keep every run: list, show, query (SQL through DuckDB, table ``runs``), export, import official MLPerf
results, publish or pull the store as a Hugging Face dataset. The store is a folder of Parquet files (default ./benchmint-results, or --results / $BENCHMINT_RESULTS)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from benchmint.cli.common import ResultsOpt, console, err_console, group, run_kind

app = group("results", __doc__)



def _store(results: Path | None, must_exist: bool = True):
    """The store of a command: one that only reads refuses a folder named with --results (or its variable) that
    does not exist (``must_exist``: a mistyped path must not read as "no runs"; the default folder before any run
    is a store with no runs); every command refuses a path that is a file."""
    from benchmint.results.api import open_store

    return open_store(results, must_exist=must_exist and results is not None)


def _report_problems(store) -> None:
    for p in store.problems:
        err_console.print(f"[yellow]warning:[/] {p}", highlight=False, soft_wrap=True)


@app.command("list")
def list_cmd(
    results: Path = ResultsOpt,
    kind: str = typer.Option(None, "--kind", callback=run_kind, help="Only runs of this kind (replay, llm, mlperf, imported, ...)."),
    limit: int = typer.Option(None, "--limit", help="Only the newest N runs."),
    json_out: bool = typer.Option(False, "--json", help="Print the runs as a JSON list of objects."),
) -> None:
    """List stored runs, oldest first: id, time, kind, status, model, scenario and a headline figure."""
    from benchmint.results.api import list_rows, rows_as_json

    store = _store(results)
    rows = list_rows(store, kind=kind, limit=limit)
    _report_problems(store)
    if json_out:
        typer.echo(rows_as_json(list(rows[0].keys()) if rows else [], [tuple(r.values()) for r in rows]))
        return
    if not rows:
        console.print(f"no runs in {store.path}")
        return
    t = Table(title=f"{len(rows)} run(s) in {store.path}")
    # the id starts with its creation time (UTC), so the table leaves `created` to --json and keeps each id
    # on one line: it is what `results show ID` takes
    cols = [c for c in rows[0] if c != "created"]
    for c in cols:
        t.add_column(c, overflow="fold", no_wrap=c == "id")
    for r in rows:
        t.add_row(*("" if r[c] is None else str(r[c]) for c in cols))
    console.print(t)


@app.command("show")
def show_cmd(
    run_id: str = typer.Argument(..., metavar="ID", help="Run id (or a unique prefix of it)."),
    results: Path = ResultsOpt,
) -> None:
    """Print one stored run as JSON (the full RunRecord)."""
    from benchmint.core.jsonio import dumps
    from benchmint.results.api import quietly

    store = _store(results)
    rec = quietly(store.get, run_id)
    _report_problems(store)
    typer.echo(dumps(rec.to_dict()).decode())


@app.command("query")
def query_cmd(
    sql: str = typer.Argument(..., metavar="SQL", help='SQL over table `runs`, e.g. "select kind, count(*) from runs group by 1".'),
    results: Path = ResultsOpt,
    json_out: bool = typer.Option(False, "--json", help="Print the rows as a JSON list of objects."),
) -> None:
    """Query the store with SQL (DuckDB). The table is `runs`; nested fields are flattened into columns named
    block__key__subkey (e.g. metrics__ttft_s__p99); record_json holds the whole record. See docs/results.md."""
    from benchmint.results.api import quietly, rows_as_json

    store = _store(results)
    cols, rows = quietly(store.query, sql)
    _report_problems(store)
    if json_out:
        typer.echo(rows_as_json(cols, rows))
        return
    t = Table(title=f"{len(rows)} row(s)")
    for c in cols:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    console.print(t)


@app.command("export")
def export_cmd(
    fmt: str = typer.Option(..., "--format", "-f", help="csv or parquet (table `runs`, flattened) or jsonl (full records)."),
    out: Path = typer.Option(None, "--out", "-o", help="File to write (default: runs.<format>)."),
    results: Path = ResultsOpt,
) -> None:
    """Export every stored run to one CSV, Parquet or JSON-lines file."""
    from benchmint.results.api import export

    store = _store(results)
    path, n = export(store, fmt, out or Path(f"runs.{fmt}"))
    _report_problems(store)
    console.print(f"wrote {n} run(s) to {path}")


@app.command("import")
def import_cmd(
    paths: list[Path] = typer.Argument(..., help="summary.csv files, Open MLPerf data.json / data.parquet, folders holding them, or files `benchmint results export` wrote."),
    fmt: str = typer.Option("auto", "--format", help="auto, mlperf-summary-csv, open-mlperf or benchmint-export (a `results export` file)."),
    results: Path = ResultsOpt,
) -> None:
    """Import official MLPerf Inference results (summary.csv of mlcommons/inference_results_v*, or the Open
    MLPerf dataset) as runs of kind `imported`, with units normalized; or the runs of a `benchmint results
    export` file (JSONL, CSV or Parquet), as they were. Re-importing stores nothing twice."""
    from benchmint.results.api import import_into

    store = _store(results, must_exist=False)  # importing creates the store
    skipped: list[str] = []
    read, new = import_into(store, list(paths), fmt, skipped)
    for p in skipped:
        err_console.print(f"[yellow]warning:[/] {p}", highlight=False, soft_wrap=True)
    _report_problems(store)
    console.print(f"imported {new} new run(s) ({read} read, {read - new} already stored) into {store.path}")


@app.command("compact")
def compact_cmd(results: Path = ResultsOpt) -> None:
    """Merge the store's part files into one (atomic; unreadable parts are left in place and reported)."""
    from benchmint.results.api import quietly

    store = _store(results)
    target = quietly(store.compact)
    _report_problems(store)
    console.print(f"compacted into {target}" if target else "nothing to compact")


@app.command("publish")
def publish_cmd(
    repo: str = typer.Option(None, "--repo", help="Hugging Face dataset ORG/NAME (created if missing)."),
    folder: Path = typer.Option(None, "--folder", help="Write the same layout (data/*.parquet + README.md) into "
                                "this folder instead of uploading."),
    private: bool = typer.Option(False, "--private", help="Create the Hub dataset as private."),
    results: Path = ResultsOpt,
) -> None:
    """Publish the store as a Hugging Face dataset: Parquet shards of the flattened table `runs` plus a dataset
    card documenting every column. The token comes from HF_TOKEN or `huggingface-cli login`; benchmint never
    writes it anywhere. With --folder nothing is uploaded."""
    from benchmint.results.publish import publish

    store = _store(results)
    pub = publish(store, repo, folder, private=private)
    _report_problems(store)
    console.print(f"published {pub.runs} run(s), {pub.columns} columns in {pub.shards} shard(s) to {pub.where}")


@app.command("pull")
def pull_cmd(
    repo: str = typer.Option(None, "--repo", help="Hugging Face dataset ORG/NAME to download."),
    folder: Path = typer.Option(None, "--folder", help="Read a layout `results publish --folder` wrote instead."),
    revision: str = typer.Option(None, "--revision", help="Hub revision (branch, tag or commit) to pull."),
    results: Path = ResultsOpt,
) -> None:
    """Load a published results dataset into the local store; runs it already holds are not stored twice."""
    from benchmint.results.publish import pull

    store = _store(results, must_exist=False)  # pulling creates the store
    read, new = pull(store, repo, folder, revision=revision)
    _report_problems(store)
    console.print(f"pulled {new} new run(s) ({read} read, {read - new} already stored) into {store.path}")

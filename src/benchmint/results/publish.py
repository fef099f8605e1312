"""The results store as a Hugging Face dataset: publish and pull.

Layout (the same on the Hub and in a local ``--folder``)::

    README.md                          dataset card: YAML front matter (license, configs/data_files, tags)
                                       and a table documenting every column of the data
    data/runs-00000-of-0000N.parquet   the flattened table ``runs`` (docs/results.md), in shards

Every row keeps ``record_json`` (the whole RunRecord), so :func:`pull` rebuilds the records exactly and
appends those the local store does not hold yet. The Hub path goes through ``huggingface_hub``
(``HfApi.create_repo`` + ``upload_folder``; ``snapshot_download`` to pull); its token comes from the usual
places (``HF_TOKEN``, ``huggingface-cli login``) and is never written anywhere by benchmint.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from benchmint.core.errors import UserError
from benchmint.results.flatten import BLOCKS, SEP
from benchmint.results.store import ResultsStore, record_from_dict

DATA_DIR = "data"
CARD = "README.md"
ROWS_PER_SHARD = 5000
LICENSE = "apache-2.0"
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

# the RunRecord's top-level fields, as docs/results.md describes them
TOP_DOCS = {
    "id": "unique run id (`YYYYmmddTHHMMSS-<8 hex>`; imported results: `mlperf-<hash>` or `openmlperf-<uid>`)",
    "created_s": "Unix time the run was made (imported: the dataset's date when given), seconds",
    "kind": "replay, llm, mlperf, capture or imported",
    "status": "ok, partial (some failures or interrupted), failed or invalid",
    "schema_version": "RunRecord schema version",
    "record_json": "the whole RunRecord as JSON text (every column above, unflattened)",
}
BLOCK_DOCS = {
    "config": "run set-up (what was asked for)",
    "metrics": "measured",
    "workload": "workload (model, dataset)",
    "system": "system under test",
    "provenance": "how the run was made",
    "artifacts": "a file the run wrote",
}
# the statistic a flattened name's last part stands for
STATS = {"p50": "median", "p90": "90th percentile", "p99": "99th percentile", "p999": "99.9th percentile",
         "p10": "10th percentile", "p95": "95th percentile", "mean": "mean", "median": "median", "max": "maximum",
         "min": "minimum", "std": "standard deviation", "count": "count", "n": "count"}


# what the LLM metric names mean (DESIGN.md's glossary), added to the columns that hold them
GLOSSARY = {
    "ttft_s": "TTFT, first output token time - request time",
    "tpot_s": "TPOT, (E2E - TTFT) / (output tokens - 1) per request",
    "itl_s": "ITL, time between consecutive streamed chunks",
    "e2e_s": "E2E, last token time - request time",
    "ttft_from_send_s": "TTFT from the actual send time",
    "e2e_from_send_s": "E2E from the actual send time",
    "send_lag_s": "actual send time - scheduled send time",
    "goodput_requests_per_s": "requests per second that met every SLO",
}


def _unit(parts: list[str]) -> str | None:
    """The unit a flattened name states by the naming conventions (``_s``, ``_bytes``, ``per_s``)."""
    for p in reversed(parts):
        if "_per_s" in p or p == "per_s":
            return "per second"
        if p.endswith("_s"):
            return "seconds"
        if p.endswith("_bytes"):
            return "bytes"
    return None


def describe_column(name: str) -> str:
    """A sentence for one column of table ``runs``, derived from its flattened name."""
    if name in TOP_DOCS:
        return TOP_DOCS[name]
    parts = name.split(SEP)
    lead = BLOCK_DOCS.get(parts[0], parts[0])
    rest = parts[1:]
    if not rest:
        return lead
    # a statistic of a distribution (ttft_s.p99), not a field that happens to be called count
    stat = STATS.get(rest[-1]) if len(rest) > 1 and _unit(rest[-2:-1]) else None
    path = rest[:-1] if stat else rest
    text = f"{lead}: `{'.'.join(path)}`" + (f", {stat}" if stat else "")
    unit = _unit(path)
    if unit and stat != "count":
        text += f" ({unit})"
    gloss = next((GLOSSARY[p] for p in reversed(path) if p in GLOSSARY), None)
    return f"{text}; {gloss}" if gloss else text


def _type_name(t: pa.DataType) -> str:
    return {"int64": "int64", "double": "float64", "string": "string", "bool": "bool"}.get(str(t), str(t))


def card(table: pa.Table, shards: int, repo: str | None = None) -> str:
    """The dataset card: YAML front matter for the Hub, what the data is, and one row per column."""
    import yaml

    front = {
        "license": LICENSE,
        "pretty_name": "benchmint results",
        "tags": ["benchmark", "mlperf", "llm-inference", "benchmint"],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": f"{DATA_DIR}/runs-*.parquet"}]}],
    }
    kinds: dict[str, int] = {}
    for k in table.column("kind").to_pylist():
        kinds[k] = kinds.get(k, 0) + 1
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
        f"# benchmint results{f' ({repo})' if repo else ''}", "",
        f"{table.num_rows} runs ({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}), one row per run, "
        "published by `benchmint results publish`: measured runs (LLM inference benchmarks, execution-trace "
        "replays, MLPerf LoadGen runs) beside imported official MLPerf results.", "",
        f"The data is table `runs` in {shards} Parquet shard(s) under `{DATA_DIR}/`: the fixed columns, every "
        "nested field of the record flattened with a double underscore (`metrics.ttft_s.p99` is the column "
        "`metrics__ttft_s__p99`; lists are kept whole as JSON text) and `record_json`, the whole record. Units "
        "are in the names: `_s` seconds, `_bytes` bytes, `per_s` per second. A column is NULL for a run "
        "without that field. `benchmint results pull --repo ORG/NAME` loads the runs into a local results "
        "store; any Parquet reader, or `datasets.load_dataset`, reads the shards as they are.", "",
        "## Columns", "",
        "| column | type | non-null | meaning |", "|---|---|---|---|",
    ]
    for f in table.schema:
        nn = table.num_rows - table.column(f.name).null_count
        lines.append(f"| `{f.name}` | {_type_name(f.type)} | {nn} | {describe_column(f.name)} |")
    lines += ["", "Blocks: " + "; ".join(f"`{b}__*` {BLOCK_DOCS[b]}" for b in BLOCKS) + ".", ""]
    return "\n".join(lines)


@dataclass
class Published:
    where: str
    runs: int
    shards: int
    columns: int


def write_layout(store: ResultsStore, folder: str | os.PathLike, repo: str | None = None,
                 rows_per_shard: int = ROWS_PER_SHARD) -> Published:
    """Write the dataset layout (shards + card) into ``folder``; shards left there by an earlier publish go."""
    from benchmint.core.redact import known_secrets, redact
    from benchmint.results.api import quietly
    from benchmint.results.record import RunRecord

    secrets = known_secrets()
    # a store written before redaction existed may hold credentials: a public dataset must not
    recs = [RunRecord.from_dict(redact(r.to_dict(), secrets)) for r in quietly(store.records)]
    if not recs:
        raise UserError(f"{store.path}: the store holds no runs; nothing to publish")
    table = store.table(recs)
    folder = Path(folder)
    data = folder / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    for old in data.glob("runs-*.parquet"):
        old.unlink()
    shards = max(1, -(-table.num_rows // rows_per_shard))
    for i in range(shards):
        part = table.slice(i * rows_per_shard, rows_per_shard)
        pq.write_table(part, data / f"runs-{i:05d}-of-{shards:05d}.parquet", compression="zstd")
    (folder / CARD).write_text(card(table, shards, repo))
    return Published(str(folder), table.num_rows, shards, table.num_columns)


def _check_repo(repo: str) -> None:
    if not REPO_RE.match(repo):
        raise UserError(f"--repo {repo!r}: give the dataset as ORG/NAME (e.g. my-org/benchmint-results)")


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return f"{type(e).__name__}: {s.splitlines()[0]}" if s else type(e).__name__


def publish(store: ResultsStore, repo: str | None = None, folder: str | os.PathLike | None = None, *,
            private: bool = False, api: Any = None) -> Published:
    """Publish the store: into ``folder`` when given, else to the Hub dataset ``repo`` (created if missing)."""
    if repo is not None:
        _check_repo(repo)
    if folder is not None:
        return write_layout(store, folder, repo)
    if repo is None:
        raise UserError("give --repo ORG/NAME (a Hugging Face dataset) or --folder DIR")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()  # the token: HF_TOKEN or the one `huggingface-cli login` saved
    with tempfile.TemporaryDirectory(prefix="benchmint-publish-") as tmp:
        pub = write_layout(store, tmp, repo)
        try:
            api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
            api.upload_folder(folder_path=tmp, repo_id=repo, repo_type="dataset",
                              commit_message=f"benchmint results publish: {pub.runs} runs",
                              delete_patterns=[f"{DATA_DIR}/runs-*.parquet"])
        except Exception as e:
            raise UserError(f"cannot publish to the Hugging Face dataset {repo} ({_first_line(e)}); log in "
                            "(`huggingface-cli login` or HF_TOKEN) with write access, or use --folder") from None
    return Published(f"https://huggingface.co/datasets/{repo}", pub.runs, pub.shards, pub.columns)


def read_layout(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The record dicts of a published layout (its ``record_json`` column)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    shards = sorted((folder / DATA_DIR).glob("*.parquet"))
    if not shards:
        raise UserError(f"{folder}: no Parquet shards under {DATA_DIR}/; is it a dataset that `benchmint "
                        "results publish` wrote?")
    out = []
    for s in shards:
        try:
            t = pq.read_table(s, columns=["record_json"])
        except (OSError, pa.ArrowException, ValueError, KeyError) as e:
            raise UserError(f"{s}: not a benchmint results shard ({_first_line(e)})") from None
        for i, text in enumerate(t.column("record_json").to_pylist()):
            try:
                out.append(orjson.loads(text))
            except (orjson.JSONDecodeError, TypeError):
                raise UserError(f"{s}: row {i} holds no valid record JSON") from None
    return out


def pull(store: ResultsStore, repo: str | None = None, folder: str | os.PathLike | None = None, *,
         revision: str | None = None, download: Any = None) -> tuple[int, int]:
    """Load a published dataset (``folder``, else the Hub dataset ``repo``) into ``store``; returns (runs read,
    runs new to the store). A run the store already holds (same id) is not stored twice."""
    if repo is not None:
        _check_repo(repo)
    if folder is None:
        if repo is None:
            raise UserError("give --repo ORG/NAME (a Hugging Face dataset) or --folder DIR")
        if download is None:
            from huggingface_hub import snapshot_download as download
        try:
            folder = download(repo_id=repo, repo_type="dataset", revision=revision,
                              allow_patterns=[f"{DATA_DIR}/*.parquet", CARD])
        except Exception as e:
            raise UserError(f"cannot download the Hugging Face dataset {repo} ({_first_line(e)}); check the "
                            "name, the network and access (HF_TOKEN for a private dataset), or use --folder") from None
    dicts = read_layout(folder)
    recs = [record_from_dict(d, f"{folder}: record {d.get('id', '?') if isinstance(d, dict) else '?'}")
            for d in dicts]
    from benchmint.results.save import save_runs

    saved = save_runs(recs, store=store)
    return saved.total, saved.new

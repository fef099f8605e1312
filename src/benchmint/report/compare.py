"""The side-by-side table: one column per run; the key figures of every kind of run, then only the fields whose
values differ between the runs, or that only some runs record (what ran, on what, how); the fields every run
holds with one value are listed once below the table. Values carry their units and are made readable by :mod:`benchmint.report.fmt`."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from benchmint.report import data
from benchmint.report.fmt import as_float, by_unit, fmt_value
from benchmint.report.page import Cell, Row, Table
from benchmint.results.metric_table import columns_for_report
from benchmint.results.record import RunRecord

MAX_COMPARE = 30
MAX_EXTRA_CONFIG = 25

# the key figures (flattened column names, see docs/results.md, with their unit): shown whenever a run has
# them; the LLM, MLPerf-client and replay figures are those declared in results/metric_table.py
KEY_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("status", "status", ""),
    ("metrics__result__value", "result", ""),
    ("metrics__loadgen__validity", "LoadGen validity", ""),
    ("metrics__loadgen__tokens_per_s", "LoadGen tokens/s", "tokens/s"),
    ("metrics__loadgen__ttft_s__p99", "TTFT p99 (LoadGen)", "s"),
    ("metrics__loadgen__tpot_s__p99", "TPOT p99 (LoadGen)", "s"),
    *columns_for_report("llm"),
    ("metrics__throughput__samples_per_s", "samples/s", "samples/s"),
    ("metrics__throughput__output_tokens_per_s_per_accelerator", "output tokens/s per accelerator", "tokens/s"),
    ("metrics__latency_s__p90", "latency p90", "s"),
    *columns_for_report("mlperf"),
    ("metrics__client_bound__client_bound", "client-bound (llm calibrate)", ""),
    ("metrics__client_bound__reasons", "client-bound: why", ""),
    *columns_for_report("replay"),
    ("metrics__coverage__count", "coverage (count)", "fraction"),  # records that kept coverage as a block
    ("metrics__coverage__time", "coverage (time)", "fraction"),
    ("metrics__iter_time_s__noisy", "replay timing noisy (IQR > 10% of median)", ""),
    ("metrics__step_time_s__median", "captured step (median)", "s"),
    ("metrics__step_time_s__noisy", "step timing noisy (IQR > 10% of median)", ""),
    ("metrics__sweep__peak_rate", "peak search: highest passing rate", ""),
    ("metrics__sweep__unit", "peak search: rate unit", ""),
    ("metrics__sweep__trials_used", "peak search: trials", ""),
    ("metrics__sweep__stopped_because", "peak search: stopped because", ""),
)

# what ran, on what and how: shown where the runs differ (all of them for a single run)
CONTEXT_FIELDS: tuple[tuple[str, str], ...] = (
    ("kind", "kind"),
    ("created", "created (UTC)"),
    ("workload__model_name", "model"),
    ("workload__architecture", "architecture"),
    ("workload__parameter_count", "parameters"),
    ("workload__dtype", "dtype"),
    ("workload__dataset", "dataset"),
    ("config__backend", "backend"),
    ("config__engine", "engine"),
    ("config__scenario", "scenario"),
    ("config__rate", "offered rate (req/s)"),
    ("config__concurrency", "concurrency"),
    ("system__accelerator__name", "accelerator"),
    ("system__accelerator__count", "accelerators"),
    ("system__cpu_model", "CPU"),
    ("system__memory_bytes", "memory"),
    ("system__hostname", "host"),
    ("provenance__git_revision", "git revision"),
)


@dataclass
class Comparison:
    table: Table
    same: list[tuple[str, str]]  # (field title, value) every run shares
    shown: int
    total: int


def _empty(v: Any) -> bool:
    return v is None or v == "" or v == "[]"


def cell_text(key: str, v: Any, unit: str = "") -> str:
    """A flattened value made readable by its declared unit (else by its name's suffix); lists (kept as JSON
    text in the flattened row) joined with "; "."""
    if isinstance(v, str) and v.startswith("["):
        try:
            v = json.loads(v)
        except ValueError:
            pass
    return by_unit(unit, v, key) if unit else fmt_value(key, v)


def _rows(recs: list[RunRecord]) -> list[dict[str, Any]]:
    flat = []
    for r in recs:
        row = data.flat(r)
        if data.replay_error(r) is not None:  # the measured error (a demo's: against the live step), as the card
            row["metrics__error"] = data.replay_error(r)
        row["created"] = dt.datetime.fromtimestamp(r.created_s, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        flat.append(row)
    return flat


def _differs(vals: list[Any]) -> bool:
    """Two runs or more hold different values (a field that only some kinds of run have does not differ by
    being absent from the others)."""
    return len({str(v) for v in vals if not _empty(v)}) > 1


def _same_in_every_run(vals: list[Any]) -> bool:
    """Every run holds the field, with one value: a field that some runs do not record is not "the same in every
    run" (one run of fifteen at concurrency 4 says nothing of the other fourteen)."""
    return all(not _empty(v) for v in vals) and len({str(v) for v in vals}) == 1


def comparison(records: list[RunRecord]) -> Comparison:
    """The table of the newest :data:`MAX_COMPARE` runs: key figures, then the fields that differ."""
    recs = records[-MAX_COMPARE:]
    flat = _rows(recs)
    single = len(recs) == 1
    fields: list[tuple[str, str, bool]] = []  # (key, title, is a key figure)
    seen: set[str] = set()
    units = {k: u for k, _, u in KEY_FIELDS}
    for key, title, _ in KEY_FIELDS:
        if any(not _empty(f.get(key)) for f in flat) and key not in {k for k, *_ in fields}:
            fields.append((key, title, True))
    same: list[tuple[str, str]] = []
    for key, title in CONTEXT_FIELDS:
        vals = [f.get(key) for f in flat]
        if all(_empty(v) for v in vals):
            continue
        if single or not _same_in_every_run(vals):  # differs, or only some runs record it: a row of the table
            fields.append((key, title, False))
        elif title not in seen:
            same.append((title, cell_text(key, next(v for v in vals if not _empty(v)))))
        seen.add(title)
    curated = {k for k, *_ in KEY_FIELDS + CONTEXT_FIELDS}
    extra = sorted({k for f in flat for k in f if k.startswith("config__") and k not in curated
                    and not k.startswith("config__measurement__") and not k.endswith("_wall_s")})
    extra_shown = [k for k in extra if single or _differs([f.get(k) for f in flat])][:MAX_EXTRA_CONFIG]
    titles = {t for _, t, *_ in KEY_FIELDS + CONTEXT_FIELDS}
    for k in extra_shown:
        title = k.removeprefix("config__").replace("__", ".")
        fields.append((k, f"config.{title}" if title in titles else title, False))  # (config.model vs model)
    columns = [Cell("run")] + [Cell(data.label(r), title=r.id) for r in recs]
    rows = []
    for key, title, key_figure in fields:
        vals = [f.get(key) for f in flat]
        texts = [cell_text(key, v, units.get(key, "")) for v in vals]
        if key == "metrics__result__value":  # an official result's unit is its own (Tokens/s, Samples/s, ms)
            texts = [f"{t} {f.get('metrics__result__unit') or ''}".strip() if t else t for t, f in zip(texts, flat,
                                                                                                     strict=True)]
        if key == "workload__model_name":  # a local folder: its last part (the whole path in the tooltip)
            texts = [data.short_name(t) or t for t in texts]
        cells = [Cell(t, num=as_float(v) is not None and not isinstance(v, bool),
                      title=str(v) if t != cell_text(key, v, units.get(key, "")) else "")
                 for t, v in zip(texts, vals, strict=True)]
        cls = " ".join(c for c in ("key" if key_figure else "", "differs" if _differs(vals) else "") if c)
        rows.append(Row(cells, head=Cell(title, title=key), cls=cls))
    table = Table("bm-compare", columns, rows, scroll=True)
    return Comparison(table, same, len(recs), len(records))

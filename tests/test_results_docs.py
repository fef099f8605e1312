"""docs/results.md and the code agree on the column names of table `runs`."""

from __future__ import annotations

import re
from pathlib import Path

from test_report_records import sample_records

from benchmint.results.importers import read_open_mlperf, read_summary_csv
from benchmint.results.store import ResultsStore

DOC = Path(__file__).parent.parent / "docs" / "results.md"
OPEN = Path(__file__).parent / "data" / "openmlperf"
SAMPLE_CSV = Path(__file__).parent.parent / "src" / "benchmint" / "results" / "samples" / "summary.csv"


def test_every_documented_column_exists(tmp_path):
    text = DOC.read_text()
    documented = set(re.findall(r"`((?:config|metrics|workload|system|provenance|artifacts)__[a-z0-9_]+)`", text))
    assert len(documented) > 25
    store = ResultsStore(tmp_path / "store")
    store.append_many(sample_records(tmp_path))
    store.append_many(read_open_mlperf(OPEN / "data.parquet")[:50] + read_summary_csv(SAMPLE_CSV))
    columns = set(store.table().column_names)
    # "__mean", "__p90" ... are described as variants of the listed ones; check the listed names
    missing = sorted(c for c in documented if c not in columns)
    assert missing == [], f"documented but never produced: {missing}"
    assert {"id", "created_s", "kind", "status", "schema_version", "record_json"} <= columns

"""Hostile values in imported results and LoadGen settings (issue 16): inf, 1e999, NaN, huge integers and
broken quoting give one line naming the file and the field with exit 2, or a row skipped with a warning
naming it; never exit 1, never a junk run in the store. ``benchmarks/hostile_imports.py`` prints the table."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from benchmint.core.errors import UserError
from benchmint.llm.loadgen.settings import RunSettings
from benchmint.results.importers import _parse_accuracy, read_open_mlperf, read_summary_csv

SAMPLE_CSV = Path(__file__).parents[1] / "src" / "benchmint" / "results" / "samples" / "summary.csv"
OPEN_JSON = Path(__file__).parent / "data" / "openmlperf" / "data_subset.json"


def _csv(tmp_path: Path, changes: list[dict[str, str]]) -> Path:
    """The sample summary.csv's first rows, row i updated with changes[i]."""
    rows = list(csv.DictReader(io.StringIO(SAMPLE_CSV.read_text())))[: len(changes)]
    for r, c in zip(rows, changes, strict=True):
        r.update(c)
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    p = tmp_path / "summary.csv"
    p.write_text(out.getvalue())
    return p


def _open(tmp_path: Path, key: str, raw: str, n: int = 1) -> Path:
    rows = json.loads(OPEN_JSON.read_text())[:n]
    rows[0][key] = "__V__"
    p = tmp_path / "data.json"
    p.write_text(json.dumps(rows).replace('"__V__"', raw))
    return p


def _one_line(code: int, err: str, *words: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (code, err)
    for w in words:
        assert w in err, (w, err)


def _stored(cli, store: Path) -> int:
    if not store.exists():
        return 0
    code, out, err = cli("results", "list", "--results", str(store), "--json")
    assert code == 0, err
    return len(json.loads(out))


@pytest.mark.parametrize("column, value", [("Result", "inf"), ("Result", "1e999"), ("number_of_nodes", "1e999"),
                                           ("accelerators_per_node", "inf"), ("Result", "9" * 100_000),
                                           ("Result", "NaN"), ("Result", "")])
def test_an_impossible_number_in_a_summary_csv_is_one_line_naming_line_and_column(cli, tmp_path, column, value):
    p = _csv(tmp_path, [{column: value}])
    store = tmp_path / "store"
    _one_line(*cli("results", "import", str(p), "--results", str(store))[::2], "summary.csv: line 2",
              f"column {column!r}")
    assert _stored(cli, store) == 0


def test_a_bad_row_among_good_ones_is_skipped_with_a_warning_naming_it(cli, tmp_path):
    p = _csv(tmp_path, [{}, {"Result": "inf"}, {}])
    store = tmp_path / "store"
    code, out, err = cli("results", "import", str(p), "--results", str(store))
    assert code == 0, err
    assert "warning:" in err and "line 3 skipped: column 'Result' is inf" in err
    assert "imported 2 new run(s)" in out and _stored(cli, store) == 2


def test_an_unterminated_quote_imports_nothing(cli, tmp_path):
    lines = SAMPLE_CSV.read_text().splitlines()
    p = tmp_path / "summary.csv"
    p.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2].replace('"Example CPU 8480"', '"Example CPU 8480', 1)
                 + "\n" + lines[3] + "\n")
    store = tmp_path / "store"
    _one_line(*cli("results", "import", str(p), "--results", str(store))[::2], "malformed CSV", "unterminated quote")
    assert _stored(cli, store) == 0
    # the whole file ends inside a quoted field
    p.write_text(lines[0] + "\n" + lines[1] + ',"\n')
    with pytest.raises(UserError, match="malformed CSV"):
        read_summary_csv(p)


@pytest.mark.parametrize("key, raw", [("metrics.result", '"inf"'), ("metrics.result", "1e999"),
                                      ("system.accelerator.total_count", '"1e999"'), ("metrics.result", "NaN"),
                                      ("metrics.result", "null")])
def test_an_impossible_number_in_open_mlperf_json_is_one_line(cli, tmp_path, key, raw):
    p = _open(tmp_path, key, raw)
    store = tmp_path / "store"
    _one_line(*cli("results", "import", str(p), "--results", str(store))[::2], "data.json")
    assert _stored(cli, store) == 0


def test_inf_in_open_mlperf_parquet_skips_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = json.loads(OPEN_JSON.read_text())[:3]
    rows[1]["metrics.result"] = float("inf")
    p = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(rows), p)
    problems: list[str] = []
    recs = read_open_mlperf(p, problems)
    assert len(recs) == 2 and len(problems) == 1 and "row 1 skipped: column 'metrics.result' is inf" in problems[0]


def test_accuracy_text_without_a_number_keeps_the_text_and_no_score(cli, tmp_path):
    assert _parse_accuracy("ROUGE1: .") == {}
    assert _parse_accuracy("ROUGE1: 44.5 ROUGE2: .5 GEN_LEN: 1e999") == {"rouge1": 44.5, "rouge2": 0.5}
    p = _open(tmp_path, "metrics.accuracy", '"ROUGE1: ."')
    recs = read_open_mlperf(p)
    assert recs[0].metrics["accuracy"] == "ROUGE1: ." and recs[0].metrics["accuracy_scores"] == {}


@pytest.mark.parametrize("line, words", [
    ("llama2-70b.Server.target_qps = nan", ["user.conf:2", "target_qps = nan", "not a number"]),
    ("llama2-70b.Server.target_qps = " + "9" * 100_000, ["user.conf:2", "target_qps", "out of range"]),
    (f"llama2-70b.Server.min_query_count = {10**26}", ["user.conf:2", "min_query_count", "out of range"]),
    ("llama2-70b.Server.min_duration = 1.5e400", ["user.conf:2", "min_duration", "out of range"]),
    ("llama2-70b.Server.target_qps = -3", ["user.conf:2", "greater than 0"]),
    ("target_qps 5", ["user.conf:2", "not a 'model.scenario.key = value' line"]),
])
def test_a_user_conf_loadgen_would_misread_is_one_line_naming_the_line(cli, tmp_path, line, words):
    conf = tmp_path / "user.conf"
    conf.write_text("# a comment\n" + line + "\n")
    _one_line(*cli("llm", "mlperf", "--backend", "sim", "--plan", "--user-conf", str(conf))[::2], *words)


@pytest.mark.parametrize("flags, words", [
    (["--min-query-count", str(10**26)], ["--min-query-count", "out of range"]),
    (["--target-qps", "nan"], ["--target-qps nan"]),
    (["--target-qps", "inf"], ["--target-qps inf"]),
    (["--min-duration", "1e300"], ["--min-duration", "out of range"]),
])
def test_flags_with_absurd_values_are_one_line(cli, flags, words):
    _one_line(*cli("llm", "mlperf", "--backend", "sim", "--plan", *flags)[::2], *words)


def test_a_sane_user_conf_still_plans(tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_text("llama2-70b.Server.target_qps = 3.5  # comment\n*.Server.target_latency_percentile = 90\n"
                    "llama2-70b.Server.min_query_count = 100\nllama2-70b.Server.min_duration = 1500\n")
    RunSettings(scenario="server", user_conf=str(conf), min_query_count=24576, target_qps=2.5)


def test_text_that_looks_like_a_huge_number_outside_numeric_columns_is_kept(tmp_path):
    p = _open(tmp_path, "submission.debug_uid", '"7e21"')  # a hex id, not a number
    recs = read_open_mlperf(p)
    assert len(recs) == 1 and recs[0].id == "openmlperf-7e21"

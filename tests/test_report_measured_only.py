"""The report tells measurements from what is not one: partial and simulated runs stay off the Pareto frontier
(drawn, marked), a field only some runs record is not "the same in every run", and a --predictions file that is not
JSON is one line and exit code 2."""

from __future__ import annotations

import json

import msgspec
from test_report_records import llm_record

from benchmint.report.compare import comparison
from benchmint.report.pareto import pareto_figure


def _with(rec, **changes):
    return msgspec.structs.replace(rec, **changes)


def test_partial_and_sim_runs_are_drawn_but_left_off_the_frontier():
    real = llm_record(1.0, ttft=0.20, tpot=0.02, created_s=1)
    busy = llm_record(2.0, ttft=0.30, tpot=0.03, created_s=2)
    # an interrupted run of 4 requests and a simulated one: low latency, high throughput, both "beat" the real runs
    partial = _with(llm_record(8.0, ttft=0.01, tpot=0.001, created_s=3), status="partial")
    sim = llm_record(9.0, backend="sim", ttft=0.01, tpot=0.001, created_s=4)
    recs = [real, busy, partial, sim]
    fig = pareto_figure(recs, {r.id: "#000" for r in recs})
    frontier = [t for t in fig.data if t.name == "Pareto frontier" and t.xaxis == "x"][0]
    ys = sorted(frontier.y)
    want = sorted(r.metrics.to_dict()["throughput"]["output_tokens_per_s"] for r in (real, busy))
    assert ys == want  # the two real runs, nothing else
    for r, word in ((partial, "partial (interrupted"), (sim, "simulated backend")):
        t = next(t for t in fig.data if t.legendgroup == r.id and t.xaxis == "x")
        assert "left off the Pareto frontier" in t.hovertemplate and word in t.hovertemplate
        assert t.marker.symbol == "x" and "[" in t.name  # still drawn, marked


def test_a_field_only_some_runs_record_is_not_the_same_in_every_run():
    runs = [llm_record(float(i + 1), created_s=i) for i in range(4)]
    bare = {"model_name": "tiny-llama", "dataset": "synthetic"}
    runs = [_with(r, workload=bare) for r in runs[:3]] + [_with(runs[3], config={**runs[3].config, "concurrency": 4})]
    c = comparison(runs)
    same = dict(c.same)
    for title in ("concurrency", "architecture", "parameters", "dtype"):
        assert title not in same, same
    rows = {r.head.text: [x.text for x in r.cells] for r in c.table.rows}
    assert rows["concurrency"][:3] == ["", "", ""] and rows["concurrency"][3] == "4"
    assert rows["architecture"][3] and not any(rows["architecture"][:3])
    assert same["model"] == "tiny-llama" and same["dataset"] == "synthetic"  # held by every run, one value


def test_predictions_file_that_is_not_json_is_one_line_exit_2(cli, tmp_path):
    import pandas as pd

    pd.DataFrame({"a": [1.0, 2.0]}).to_parquet(tmp_path / "own.parquet")
    (tmp_path / "cut.json").write_text('{"splits": ')
    for name, words in (("own.parquet", "a binary file, not JSON"), ("cut.json", "not valid JSON")):
        code, _, err = cli("report", "--results", str(tmp_path / "s"), "--out", str(tmp_path / "r.html"),
                           "--predictions", str(tmp_path / name))
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1, (name, code, err)
        assert words in lines[0] and "learn eval --json" in lines[0] and "Traceback" not in err
        assert not (tmp_path / "r.html").exists()


def test_json_of_the_wrong_shape_is_one_line_exit_2(cli, tmp_path):
    # `learn next --json` holds a count of splits; these crashed while the page was drawn (exit 1, a traceback)
    for i, doc in enumerate(({"splits": 5}, {"configurations": "x"}, {"splits": {"random": {"groups": 3}}},
                             {"split": "random", "overall": [1]})):
        (tmp_path / f"{i}.json").write_text(json.dumps(doc))
        code, _, err = cli("report", "--results", str(tmp_path / "s"), "--out", str(tmp_path / "r.html"),
                           "--predictions", str(tmp_path / f"{i}.json"))
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and "not the JSON of `benchmint learn eval --json`" in lines[0], (doc, err)
    assert not (tmp_path / "r.html").exists()

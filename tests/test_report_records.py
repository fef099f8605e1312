"""Fixture RunRecords shaped like the replay and LLM layers write them, and tests of what the report reads
out of them. Other report/results test files import the builders from here."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmint.results.record import RunRecord

HOST = {
    "hostname": "testhost",
    "cpu_model": "Test CPU",
    "cpu_cores_logical": 2,
    "memory_bytes": 8 * 2**30,
    "gpus": [],
    "os": "Linux 6",
    "python": "3.11.9",
    "accelerator": {"name": "cpu", "count": 0},
}


def replay_record(error: float = 0.04, created_s: float = 1_700_000_000.0) -> RunRecord:
    ops = [
        {"op": "aten::mm", "count": 24, "original_s": 0.0120, "replay_s": 0.0125},
        {"op": "aten::softmax", "count": 4, "original_s": 0.0021, "replay_s": 0.0019},
        {"op": "aten::layer_norm", "count": 8, "original_s": 0.0009, "replay_s": 0.0011},
        {"op": "aten::add", "count": 16, "original_s": 0.0004, "replay_s": 0.0004},
    ]
    return RunRecord(
        kind="replay",
        created_s=created_s,
        config={"device": "cpu", "iterations": 10, "warmup": 2, "threads": 2},
        metrics={
            "original_iter_time_s": 0.0154,
            "iter_time_s": {"median": 0.0154 * (1 + error), "p10": 0.015, "p90": 0.016, "n": 10},
            "error": error,
            "coverage": 0.95,
            "coverage_time": 0.99,
            "per_op_type": ops,
        },
        workload={"model_name": "tiny-transformer", "architecture": "TransformerEncoder",
                  "parameter_count": 120_000, "dtype": "float32"},
        system=HOST,
    )


def llm_requests_file(path: Path, n: int, ttft: float, tpot: float, seed: int = 0) -> Path:
    rng = random.Random(seed)
    ttfts = [ttft * rng.lognormvariate(0, 0.3) for _ in range(n)]
    tpots = [tpot * rng.lognormvariate(0, 0.2) for _ in range(n)]
    e2e = [a + b * 31 for a, b in zip(ttfts, tpots, strict=True)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"ttft_s": ttfts, "tpot_s": tpots, "e2e_s": e2e}), path)
    return path


def _pct(scale: float) -> dict[str, float]:
    return {"mean": scale * 1.05, "p50": scale, "p90": scale * 1.4, "p99": scale * 2.0, "max": scale * 2.5}


def llm_record(
    rate: float,
    requests_path: str | Path | None = None,
    backend: str = "http",
    ttft: float = 0.05,
    tpot: float = 0.01,
    created_s: float = 1_700_000_100.0,
) -> RunRecord:
    artifacts = {"requests": str(requests_path)} if requests_path is not None else {}
    return RunRecord(
        kind="llm",
        created_s=created_s,
        config={"backend": backend, "scenario": "server", "rate": rate, "concurrency": None, "num_requests": 40,
                "max_tokens": 32},
        metrics={
            "ttft_s": _pct(ttft),
            "tpot_s": _pct(tpot),
            "e2e_s": _pct(ttft + 31 * tpot),
            "itl_s": _pct(tpot),
            "goodput_requests_per_s": rate * 0.9,
            "throughput": {"requests_per_s": rate * 0.97, "output_tokens_per_s": rate * 0.97 * 32},
            "requests": {"completed": 40, "failed": 0},
        },
        workload={"model_name": "tiny-llama", "architecture": "LlamaForCausalLM", "parameter_count": 1_000_000,
                  "dtype": "float32", "dataset": "synthetic", "dataset_hash": "sha256:00"},
        system=HOST,
        artifacts=artifacts,
    )


def sample_records(tmp: Path) -> list[RunRecord]:
    """Two replay runs, three LLM runs at rising load (two with per-request files, one without: the
    report must fall back to its percentiles), and one with a requests path that no longer exists."""
    recs = [replay_record(0.04, 1_700_000_000.0), replay_record(-0.02, 1_700_000_010.0)]
    for i, rate in enumerate((1.0, 2.0, 4.0)):
        path = llm_requests_file(tmp / f"llm{i}" / "requests.parquet", 40, 0.05 * (1 + i), 0.01, seed=i) \
            if i < 2 else None
        recs.append(llm_record(rate, path, created_s=1_700_000_100.0 + i))
    recs.append(llm_record(3.0, tmp / "gone" / "requests.parquet", backend="inproc", created_s=1_700_000_200.0))
    return recs


# ------------------------------------------------------------------------------------------ tests
def test_report_reads_per_request_latencies_and_falls_back_to_percentiles(tmp_path):
    from benchmint.report.data import latency_samples

    recs = sample_records(tmp_path)
    with_file, without_file, gone = recs[2], recs[4], recs[5]
    s = latency_samples(with_file, [])
    assert s.source == "requests file" and len(s.values["ttft_s"]) == 40
    assert s.values["ttft_s"] == sorted(s.values["ttft_s"])
    assert latency_samples(without_file, []).source == "percentiles"
    assert latency_samples(gone, []).source == "percentiles"


def test_relative_requests_path_is_found_next_to_run_json(tmp_path):
    from benchmint.report.data import latency_samples

    llm_requests_file(tmp_path / "run1" / "requests.parquet", 10, 0.05, 0.01)
    rec = llm_record(1.0, "requests.parquet")
    assert latency_samples(rec, []).source == "percentiles"
    assert latency_samples(rec, [tmp_path / "run1"]).source == "requests file"


def test_per_op_rows_accept_list_or_mapping_and_compute_error():
    from benchmint.report.data import per_op_rows

    rec = replay_record()
    rows = per_op_rows(rec)
    assert [r.op for r in rows][:2] == ["aten::mm", "aten::softmax"]  # largest original time first
    assert abs(rows[0].error - (0.0125 - 0.0120) / 0.0120) < 1e-12
    rec.metrics.per_op_type = [{"op": "aten::mm", "count": 1, "original_s": 1.0, "replay_s": 1.5}]
    (row,) = per_op_rows(rec)
    assert row.op == "aten::mm" and row.error == 0.5


def test_warmup_and_failed_requests_are_left_out_of_the_cdf(tmp_path):
    from benchmint.report.data import latency_samples

    path = tmp_path / "requests.parquet"
    pq.write_table(pa.table({"warmup": [True, False, False, False], "ok": [True, True, False, True],
                             "ttft_s": [9.0, 0.1, None, 0.2], "tpot_s": [9.0, 0.01, None, 0.02],
                             "e2e_s": [9.0, 1.0, 5.0, 2.0]}), path)
    s = latency_samples(llm_record(1.0, path), [])
    assert s.values["ttft_s"] == [0.1, 0.2] and s.values["e2e_s"] == [1.0, 2.0]


def test_mlperf_runs_are_read_from_their_client_block():
    from benchmint.report.data import percentiles, throughput

    llm = llm_record(2.0)
    rec = RunRecord(kind="mlperf", config={"scenario": "Server", "target_qps": 2.0},
                    metrics={"loadgen": {"validity": "VALID"},
                             "client": {"ttft_s": llm.metrics["ttft_s"], "throughput": llm.metrics["throughput"]}})
    assert percentiles(rec)["ttft_s"]["p99"] == llm.metrics["ttft_s"]["p99"]
    assert throughput(rec)["requests_per_s"] == llm.metrics["throughput"]["requests_per_s"]

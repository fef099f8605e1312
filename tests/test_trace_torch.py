"""Traces written by the installed torch (2.13 on CPU) at test time: a small transformer training step
recorded with the ExecutionTraceObserver and the Kineto profiler, loaded and joined."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmint.trace import TensorRef, join_kineto, load, load_kineto, summarize

torch = pytest.importorskip("torch")


def _record(out: Path, steps: int = 2) -> tuple[Path, Path]:
    from torch.profiler import ExecutionTraceObserver, ProfilerActivity, profile, record_function, schedule

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True, dropout=0.0),
        torch.nn.Linear(32, 8),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(4, 10, 32)
    et_path, k_path = out / "et.json", out / "kineto.json"
    et = ExecutionTraceObserver().register_callback(str(et_path))

    def step() -> None:
        with record_function("## forward ##"):
            loss = model(x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    step()  # warm-up outside the profiler
    with profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=0, warmup=1, active=steps),
                 execution_trace_observer=et, on_trace_ready=lambda p: p.export_chrome_trace(str(k_path))) as prof:
        for _ in range(steps + 1):
            step()
            prof.step()
    et.unregister_callback()
    return et_path, k_path


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, Path]:
    return _record(tmp_path_factory.mktemp("torch_trace"))


def test_torch_trace_loads(recorded):
    et_path, _ = recorded
    tr = load(et_path)
    assert tr.version is not None and tr.version >= (1, 1, 1)
    assert tr.warnings == []
    assert len(tr.iterations) == 2
    for it in tr.iterations:
        assert it.node.name == f"ProfilerStep#{it.number}"
        assert tr.top_level_ops(within=it.node)
    assert [s.name for s in tr.scopes].count("## forward ##") == 2
    tr.validate()
    top = tr.top_level_ops()
    names = {n.name for n in top}
    assert {"aten::linear", "aten::mean"} <= names
    # the Linear(32, 8) weight is a (8, 32) float32 CPU tensor with strides
    lin = [n for n in top if n.name == "aten::linear"]
    weights = [v for n in lin for v in n.inputs if isinstance(v, TensorRef) and v.shape == (8, 32)]
    assert weights and all(w.dtype == "float32" and w.device == "cpu" and w.strides == (32, 1) for w in weights)
    assert tr.devices == ["cpu"]
    table = tr.tensor_table()
    assert table.external() and table.storage_bytes > 0


def test_torch_trace_joins_by_record_function_id(recorded):
    et_path, k_path = recorded
    tr = load(et_path)
    kt = load_kineto(k_path)
    assert kt.has_rf_ids
    j = join_kineto(tr, kt)
    assert j.method == "rf_id"
    # Kineto leaves out a few allocations made on another thread (tid 2); everything on the main thread matches
    assert j.matched_fraction > 0.95
    main_tid = tr.iterations[0].node.tid
    assert all(j.time_of(n) is not None for n in tr.top_level_ops() if n.tid == main_tid)
    # every iteration has a duration; top-level ops have the CPU gap before them
    for it in tr.iterations:
        assert j.time_of(it.node).dur_us > 0
    main = [n for n in tr.top_level_ops() if n.tid == main_tid]
    assert all(j.gap_before_s(n) is not None for n in main[1:])
    by_op = j.time_by_op()
    assert by_op and all(v["count"] > 0 and v["total_s"] >= 0 for v in by_op.values())
    s = summarize(tr, j)
    assert s["kineto"]["matched_fraction"] == j.matched_fraction
    assert [i["number"] for i in s["iterations"]] == [it.number for it in tr.iterations]


def test_torch_trace_gzip_round_trip(recorded, tmp_path):
    import gzip

    et_path, _ = recorded
    gz = tmp_path / "et.json.gz"
    gz.write_bytes(gzip.compress(et_path.read_bytes()))
    a, b = load(et_path), load(gz)
    assert [(n.id, n.name, n.op_schema) for n in a.nodes] == [(n.id, n.name, n.op_schema) for n in b.nodes]


def test_capture_of_a_real_step_round_trips_through_load(tmp_path):
    """benchmint's own capture (benchmint.trace.capture) of a small model step: ET + Kineto load and join."""
    from benchmint.trace import capture

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(8, 16)
    with capture.Capture(tmp_path, warmup=1, measure=5, record=2) as cap:
        for _ in range(10):
            model(x).sum().backward()
            opt.step()
            opt.zero_grad()
            cap.step()
    tr = load(tmp_path / capture.ET_NAME)
    assert len(tr.iterations) == 2 and tr.warnings == []
    tr.validate()
    assert any(n.name == "aten::linear" for n in tr.top_level_ops())
    j = join_kineto(tr, tmp_path / capture.KINETO_NAME)
    assert j.method == "rf_id" and j.matched_fraction > 0.95
    assert summarize(tr, j)["iterations"][0]["top_level_ops"] > 0

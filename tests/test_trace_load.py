"""Loading every PARAM execution trace (schemas 1.0.1 to 1.1.1) into the typed model."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from benchmint.trace import (
    Device,
    Node,
    Opaque,
    TensorRef,
    Trace,
    dtype_from_et,
    load,
    load_bytes,
    parse_schema_version,
)

PARAM = Path(__file__).parent / "data" / "param"

# file, schema, nodes, top-level ops, ProfilerStep numbers
TRACES = [
    ("linear_et.json.gz", "1.0.1", 931, 320, []),
    ("dlrm_pytorch_et.tar.gz", "1.0.1", 1675, 645, []),
    ("1.0.3-chakra.0.0.4/resnet_1gpu_et.json.gz", "1.0.3-chakra.0.0.4", 14391, 3705, [4, 5, 6]),
    ("1.1.0-chakra.0.0.4/resnet_2gpu_et.json.gz", "1.1.0-chakra.0.0.4", 14392, 3705, [4, 5, 6]),
    ("resnet_et.json.gz", "1.1.0-chakra.0.0.4", 14392, 3705, [6, 7, 8]),
    ("hf_GPT2_et.json.tar.gz", "1.1.0-chakra.0.0.4", 27156, 8581, [0, 1]),
    ("resnet_1gpu_et.json.tar.gz", "1.1.1-chakra.0.0.4", 14392, 3705, [6, 7, 8]),
    ("pt2_et.json.tar.gz", "1.1.1-chakra.0.0.4", 20, 2, [5, 6]),
]


@pytest.fixture(scope="module")
def loaded() -> dict[str, Trace]:
    return {}


def _get(loaded: dict[str, Trace], name: str) -> Trace:
    if name not in loaded:
        loaded[name] = load(PARAM / name)
    return loaded[name]


def test_every_param_trace_is_present():
    present = {str(p.relative_to(PARAM)) for p in PARAM.rglob("*.gz")}
    assert {t[0] for t in TRACES} <= present
    assert (PARAM / "LICENSE").exists() and "MIT" in (PARAM / "LICENSE").read_text()


@pytest.mark.parametrize("name,schema,nodes,top,steps", TRACES, ids=[t[0] for t in TRACES])
def test_param_trace_loads(loaded, name, schema, nodes, top, steps):
    tr = _get(loaded, name)
    assert tr.schema == schema
    assert tr.version == parse_schema_version(schema)[0]
    assert len(tr.nodes) == nodes
    ids = [n.id for n in tr.nodes]
    assert ids == sorted(ids), "nodes are ordered by id"
    assert len(tr.top_level_ops()) == top
    assert [it.number for it in tr.iterations] == steps
    assert tr.warnings == []
    # the process root and at least one thread root
    assert tr.process is not None and tr.process.is_process_root
    assert tr.threads and all(t.is_thread_root for t in tr.threads)
    assert tr.thread_ids and 0 not in tr.thread_ids
    # every argument decodes into typed values
    tr.validate()
    for n in tr.top_level_ops():
        assert n.op_schema and n.op_name
        assert len(n.inputs) == len(n.input_types) == len(n.input_shapes) == len(n.input_strides)
        assert len(n.outputs) == len(n.output_types)
        for k in ("rf_id", "tid", "scope", "seq_id", "fw_parent", "fw_tid"):
            assert k in n.attrs
        assert n.attrs["op_schema"] == n.op_schema


@pytest.mark.parametrize("name", [t[0] for t in TRACES])
def test_top_level_ops_are_highest_schema_nodes(loaded, name):
    tr = _get(loaded, name)
    top = tr.top_level_ops()
    top_ids = {n.id for n in top}
    for n in top:
        # no ancestor of a top-level op carries a schema
        assert not any(a.op_schema for a in tr.ancestors(n))
    # every op is a top-level op or under one
    for n in tr.ops():
        if n.id not in top_ids:
            assert any(a.id in top_ids for a in tr.ancestors(n)), n


def test_typed_values_of_a_modern_trace(loaded):
    tr = _get(loaded, "pt2_et.json.tar.gz")
    mm = [n for n in tr.top_level_ops() if n.name == "aten::mm"][0]
    assert mm.op_schema.startswith("aten::mm.out(")
    a, b, out = mm.inputs
    assert isinstance(a, TensorRef)
    assert (a.dtype, a.shape, a.strides, a.device, a.itemsize, a.numel) == ("float32", (4, 4), (4, 1), "cuda:0", 4, 16)
    assert b.strides == (1, 4)  # a transposed view
    assert a.key == (a.tensor_id, a.storage_id, a.offset, a.numel, a.itemsize, a.device)
    assert mm.outputs[0].key == out.key  # mm.out writes into its out argument
    assert mm.attrs["kernel_backend"] == "" and mm.tensor_range == ""


def test_typed_values_of_schema_101(loaded):
    tr = _get(loaded, "linear_et.json.gz")
    n = next(n for n in tr.nodes if n.name == "aten::as_strided")
    t, size, stride, off = n.inputs
    assert isinstance(t, TensorRef) and t.dtype == "float32" and t.shape == (1024, 1024)
    assert size == [1024, 1024] and stride == [1, 1024] and off is None
    assert n.input_types == ("Tensor(float)", "GenericList[Int,Int]", "GenericList[Int,Int]", "None")
    assert n.input_strides == (None, None, None, None)  # schema 1.0.1 has no strides
    assert n.parent == 11 and n.rf_id == 4 and n.tid == 1
    assert n.attrs == {"rf_id": 4, "fw_parent": 0, "seq_id": -1, "scope": 0, "tid": 1, "fw_tid": 0,
                       "op_schema": n.op_schema}


def test_lists_devices_objects_and_undefined_tensors(loaded):
    tr = _get(loaded, "resnet_et.json.gz")
    kinds: set[str] = set()
    for n in tr.nodes:
        for v in n.inputs:
            if isinstance(v, Device):
                kinds.add("device")
                assert v.type in ("cpu", "cuda")
            elif isinstance(v, Opaque):
                kinds.add("opaque")
                assert v.type == "Object"
            elif isinstance(v, list) and v and all(isinstance(x, TensorRef) for x in v):
                kinds.add("tensor list")
            elif isinstance(v, tuple):
                kinds.add("tuple")
                assert all(isinstance(x, str) for x in v)
            elif isinstance(v, TensorRef) and v.is_undefined:
                kinds.add("undefined tensor")
    assert {"device", "opaque", "tensor list", "tuple", "undefined tensor"} <= kinds


def test_scopes_threads_and_communication(loaded):
    tr = _get(loaded, "1.1.0-chakra.0.0.4/resnet_2gpu_et.json.gz")
    names = {s.name for s in tr.scopes}
    assert {"## forward ##", "## backward ##", "DistributedDataParallel.forward"} <= names
    assert not any(s.name.startswith("ProfilerStep#") for s in tr.scopes)
    assert tr.devices == ["cpu", "cuda:1"]
    comm = tr.comm_ops()
    assert any(n.name == "c10d::allreduce_" for n in comm)
    rec = [n.comm_info for n in comm if n.name == "record_param_comms"]
    allreduce = [c for c in rec if c and c.get("collective_name") == "allreduce"]
    assert allreduce and allreduce[0]["in_msg_nelems"] > 0 and allreduce[0]["pg_name"] == "0"
    # iterations hold their ops
    it = tr.iterations[0]
    ops = tr.top_level_ops(within=it.node)
    assert ops and all(it.node in tr.ancestors(n) for n in ops)


def test_schema_101_collectives_from_arguments(loaded):
    tr = load(PARAM / "dlrm_pytorch_et.tar.gz", rank=0)
    infos = [n.comm_info for n in tr.comm_ops() if n.name == "record_param_comms"]
    names = {i["collective_name"] for i in infos if i}
    assert {"all_to_allv", "all_to_all", "wait"} <= names


def test_tar_with_one_trace_per_rank():
    a = load(PARAM / "dlrm_pytorch_et.tar.gz")
    r0 = load(PARAM / "dlrm_pytorch_et.tar.gz", rank=0)
    r5 = load(PARAM / "dlrm_pytorch_et.tar.gz", rank=5)
    assert a.path.endswith("dlrm_eg_0.json") and r0.path.endswith("dlrm_eg_0.json")
    assert r5.path.endswith("dlrm_eg_5.json")
    assert len(r5.nodes) > 1000
    m = load(PARAM / "dlrm_pytorch_et.tar.gz", member="dlrm_eg_3.json")
    assert m.path.endswith("dlrm_eg_3.json")


def test_tensor_table(loaded):
    tr = _get(loaded, "linear_et.json.gz")
    table = tr.tensor_table()
    assert table is tr.tensor_table()  # cached
    assert len(table) > 100 and table.storages
    assert table.storage_bytes == sum(s.nbytes for s in table.storages.values()) > 0
    ext = table.external()
    assert ext and all(t.producer is None for t in ext)
    produced = [t for t in table.tensors.values() if t.producer is not None]
    assert produced and all(t.first_use <= t.last_use for t in produced)
    # a weight 1024x1024 float lives in a storage of at least 4 MiB
    big = [t for t in table.tensors.values() if t.ref.shape == (1024, 1024)]
    assert big and all(table.storages[t.ref.storage_key].nbytes >= 4 * 1024 * 1024 for t in big)
    assert set(table.bytes_by_device()) == {"cuda:0"}


def test_tree_navigation(loaded):
    tr = _get(loaded, "pt2_et.json.tar.gz")
    root = tr.process
    assert tr.roots() == [root]
    assert {n.id for n in tr.descendants(root)} == {n.id for n in tr.nodes} - {root.id}
    mm = tr.top_level_ops()[0]
    assert tr.parent_of(mm).id == mm.parent
    assert mm in tr.children(mm.parent)


def test_load_plain_json_gz_and_bytes(tmp_path, loaded):
    src = PARAM / "pt2_et.json.tar.gz"
    with tarfile.open(src) as tf:
        m = next(x for x in tf.getmembers() if x.name.endswith("pt2_et.json"))
        raw = tf.extractfile(m).read()
    (tmp_path / "t.json").write_bytes(raw)
    (tmp_path / "t.json.gz").write_bytes(gzip.compress(raw))
    a = load(tmp_path / "t.json")
    b = load(tmp_path / "t.json.gz")
    c = load(raw)
    d = load(gzip.compress(raw))
    assert len(a.nodes) == len(b.nodes) == len(c.nodes) == len(d.nodes) == 20
    assert a.path == str(tmp_path / "t.json")
    # a .tar.gz with one trace and no resources
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("x/trace.json")
        info.size = len(raw)
        tf.addfile(info, io.BytesIO(raw))
    (tmp_path / "one.tar.gz").write_bytes(buf.getvalue())
    assert len(load(tmp_path / "one.tar.gz").nodes) == 20


def test_nodes_written_out_of_order_are_sorted():
    doc = {"schema": "1.1.1-chakra.0.0.4", "pid": 1, "time": "now", "start_ts": 0, "finish_ts": 1, "nodes": [
        {"id": 5, "name": "aten::relu", "ctrl_deps": 3, "inputs": {"values": [], "shapes": [], "types": []},
         "outputs": {"values": [], "shapes": [], "types": []},
         "attrs": [{"name": "op_schema", "type": "string", "value": "aten::relu(Tensor self) -> Tensor"},
                   {"name": "rf_id", "type": "uint64", "value": 2}, {"name": "tid", "type": "uint64", "value": 1}]},
        {"id": 3, "name": "my_scope", "ctrl_deps": 2, "attrs": [{"name": "scope", "type": "uint64", "value": 7},
                                                             {"name": "tid", "type": "uint64", "value": 1}]},
        {"id": 2, "name": "[pytorch|profiler|execution_trace|thread]", "ctrl_deps": 1, "attrs": []},
        {"id": 1, "name": "[pytorch|profiler|execution_trace|process]", "ctrl_deps": 0, "attrs": []},
    ]}
    tr = load_bytes(json.dumps(doc).encode())
    assert [n.id for n in tr.nodes] == [1, 2, 3, 5]
    assert [n.name for n in tr.scopes] == ["my_scope"]
    assert [n.id for n in tr.top_level_ops()] == [5]
    assert tr.top_level_ops()[0].inputs == ()


def test_hand_built_trace():
    t = TensorRef(1, 2, 0, 6, 4, "cpu", (2, 3), (3, 1), "float32", "Tensor(float)")
    nodes = [
        Node(1, "[pytorch|profiler|execution_trace|process]", 0),
        Node(2, "[pytorch|profiler|execution_trace|thread]", 1, tid=1),
        Node(3, "aten::relu", 2, "aten::relu(Tensor self) -> Tensor", tid=1, rf_id=1, inputs=[t],
             outputs=[TensorRef(3, 4, 0, 6, 4, "cpu", (2, 3), (3, 1), "float32")]),
    ]
    tr = Trace(nodes)
    op = tr.top_level_ops()[0]
    assert op.inputs == (t,) and op.input_types == ("Tensor(float)",) and op.input_shapes == ((2, 3),)
    assert op.attrs["rf_id"] == 1 and op.attrs["op_schema"].startswith("aten::relu")
    assert tr.tensor_table().storage_bytes == 48


def test_dtype_and_schema_helpers():
    for et_type, dtype in [("Tensor(float)", "float32"), ("Tensor(c10::Half)", "float16"),
                           ("Tensor(c10::BFloat16)", "bfloat16"), ("Tensor(long int)", "int64"),
                           ("Tensor(unsigned char)", "uint8"), ("Tensor(nullptr (uninitialized))", None)]:
        assert dtype_from_et(et_type) == dtype, et_type
    assert parse_schema_version("1.0.1") == ((1, 0, 1), None)
    assert parse_schema_version("1.1.1-chakra.0.0.4") == ((1, 1, 1), "0.0.4")
    assert parse_schema_version("banana") is None


def test_span_of_expanded_views():
    # an expanded view (stride 0) reaches one row of its storage, not numel elements
    t = TensorRef(1, 1, 0, 12, 4, "cpu", (3, 4), (0, 1), "float32")
    assert t.span == 4 and t.nbytes == 48
    assert TensorRef(1, 1, 0, 12, 4, "cpu", (3, 4), None, "float32").span == 12


def test_schema_102_loads_like_103():
    with gzip.open(PARAM / "1.0.3-chakra.0.0.4" / "resnet_1gpu_et.json.gz") as f:
        doc = json.load(f)
    doc["schema"] = "1.0.2"
    doc["nodes"] = doc["nodes"][:300]
    tr = load_bytes(json.dumps(doc).encode())
    assert tr.version == (1, 0, 2) and tr.chakra_version is None
    assert tr.warnings == [] or all("parent" in w for w in tr.warnings)
    tr.validate()
    assert tr.top_level_ops()

"""Bad input: every problem is a TraceError naming the file and the problem; newer schemas load with a warning.
Property-based tests throw mutated traces at the loader: it loads or raises TraceError, nothing else."""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from json_mutate import json_paths, mutate

from benchmint.core.errors import TraceError
from benchmint.trace import TraceWarning, join_kineto, load, load_bytes, load_kineto, summarize

PARAM = Path(__file__).parent / "data" / "param"


def _raw(name: str, member: str | None = None) -> bytes:
    p = PARAM / name
    if name.endswith(".tar.gz"):
        with tarfile.open(p) as tf:
            m = next(x for x in tf.getmembers() if x.isfile() and x.name.endswith(member or ".json"))
            return tf.extractfile(m).read()
    return gzip.decompress(p.read_bytes())


PT2 = json.loads(_raw("pt2_et.json.tar.gz", "pt2_et.json"))  # schema 1.1.1, 20 nodes


def _small_101() -> dict:
    """The first 40 nodes of the 1.0.1 linear trace (flat layout)."""
    doc = json.loads(_raw("linear_et.json.gz"))
    doc["nodes"] = doc["nodes"][:40]
    return doc


V101 = _small_101()


def _write(tmp_path: Path, doc: object, name: str = "t.json") -> Path:
    p = tmp_path / name
    p.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    return p


def _load_everything(data: bytes) -> None:
    """Load and use everything a consumer would: summary, all arguments, a Kineto join."""
    tr = load_bytes(data, "mutated.json")
    tr.validate()
    summarize(tr)
    for n in tr.nodes:
        n.input_shapes, n.output_strides, n.comm_info, n.is_user_scope  # noqa: B018
    kt = {"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": n.name, "pid": 1, "tid": 1, "ts": i, "dur": 1,
                           "args": {"Record function id": n.rf_id}} for i, n in enumerate(tr.nodes)]}
    join_kineto(tr, load_kineto(json.dumps(kt).encode())).to_dict()


# ----------------------------------------------------------------------------------------- named cases


def test_truncated_json(tmp_path):
    data = json.dumps(PT2).encode()
    p = _write(tmp_path, data[: len(data) // 2])
    with pytest.raises(TraceError) as e:
        load(p)
    assert str(p) in str(e.value) and "truncated" in str(e.value)
    # cut after a field of the wrong type: still called truncated, not "not an object with 'schema' and 'nodes'"
    p = _write(tmp_path, b'{"nodes": 5, "garbage": [1,2')
    with pytest.raises(TraceError, match="truncated JSON"):
        load(p)


def test_truncated_gzip(tmp_path):
    p = _write(tmp_path, gzip.compress(json.dumps(PT2).encode())[:300], "t.json.gz")
    with pytest.raises(TraceError, match="truncated compressed data"):
        load(p)


def test_corrupt_tar(tmp_path):
    p = _write(tmp_path, (PARAM / "pt2_et.json.tar.gz").read_bytes()[:500], "t.tar.gz")
    with pytest.raises(TraceError) as e:
        load(p)
    assert str(p) in str(e.value)


def test_tar_without_a_trace(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("readme.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    p = _write(tmp_path, buf.getvalue(), "t.tar.gz")
    with pytest.raises(TraceError, match="no .json trace"):
        load(p)


def test_not_json(tmp_path):
    with pytest.raises(TraceError, match="corrupt JSON"):
        load(_write(tmp_path, b"\x00\x01binary garbage"))
    with pytest.raises(TraceError, match="empty file"):
        load(_write(tmp_path, b"  \n"))


def test_json_that_is_not_an_et(tmp_path):
    with pytest.raises(TraceError, match="not an execution trace"):
        load(_write(tmp_path, [1, 2, 3]))
    with pytest.raises(TraceError, match="no 'nodes'"):
        load(_write(tmp_path, {"schema": "1.1.1"}))
    with pytest.raises(TraceError, match="Kineto"):
        load(_write(tmp_path, {"traceEvents": []}))


def test_unknown_schema_versions(tmp_path):
    for bad in ("banana", "2.0.0", "1.x"):
        doc = dict(PT2, schema=bad)
        with pytest.raises(TraceError, match="unknown schema version"):
            load(_write(tmp_path, doc))


def test_newer_schema_loads_with_a_warning(tmp_path):
    doc = dict(PT2, schema="1.2.0-chakra.0.0.5")
    with pytest.warns(TraceWarning, match="newer"):
        tr = load(_write(tmp_path, doc))
    assert tr.version == (1, 2, 0) and len(tr.nodes) == 20
    assert any("newer" in w for w in tr.warnings)
    assert len(tr.top_level_ops()) == 2


def test_node_missing_a_field(tmp_path):
    for field, layout in (("id", PT2), ("name", PT2), ("ctrl_deps", PT2), ("parent", V101)):
        doc = copy.deepcopy(layout)
        del doc["nodes"][3][field]
        p = _write(tmp_path, doc)
        with pytest.raises(TraceError) as e:
            load(p)
        msg = str(e.value)
        assert str(p) in msg and field in msg, msg


def test_node_field_of_the_wrong_type(tmp_path):
    doc = copy.deepcopy(PT2)
    doc["nodes"][2]["id"] = "seven"
    with pytest.raises(TraceError, match=r"nodes\[2\]\.id"):
        load(_write(tmp_path, doc))
    doc = copy.deepcopy(PT2)
    mm = next(n for n in doc["nodes"] if n["name"] == "aten::mm")
    mm["inputs"]["values"][0] = "not a tensor"
    tr = load(_write(tmp_path, doc))  # arguments are decoded on first use ...
    with pytest.raises(TraceError, match=f"node {mm['id']} \\(aten::mm\\): bad inputs"):
        tr.validate()  # ... and reported with the node


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(TraceError, match="no such file"):
        load(tmp_path / "nope.json")
    with pytest.raises(TraceError, match="directory"):
        load(tmp_path)


def test_cli_errors_are_one_line_exit_2(cli, tmp_path):
    data = json.dumps(PT2).encode()
    cases = [
        _write(tmp_path, data[:100], "trunc.json"),
        _write(tmp_path, dict(PT2, schema="9.9.9"), "future.json"),
        _write(tmp_path, {"traceEvents": []}, "kineto.json"),
        tmp_path / "missing.json",
    ]
    for p in cases:
        code, out, err = cli("inspect", str(p))
        assert code == 2, (p, out, err)
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and p.name in lines[0], err


# ------------------------------------------------------------------------------------ property tests

_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                         st.text(max_size=8))
_json_value = st.recursive(_json_scalar, lambda c: st.one_of(st.lists(c, max_size=4),
                                                             st.dictionaries(st.text(max_size=6), c, max_size=4)),
                           max_leaves=8)


PATHS = {"1.1.1": json_paths(PT2), "1.0.1": json_paths(V101)}
DOCS = {"1.1.1": PT2, "1.0.1": V101}


def _check(data: bytes) -> None:
    try:
        _load_everything(data)
    except TraceError:
        pass


# more examples: BENCHMINT_HYPOTHESIS_EXAMPLES=5000 pytest tests/test_trace_errors.py
_EXAMPLES = int(os.environ.get("BENCHMINT_HYPOTHESIS_EXAMPLES", "150"))
_settings = settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(layout=st.sampled_from(["1.1.1", "1.0.1"]), pick=st.integers(min_value=0),
       op=st.sampled_from(["drop", "replace", "duplicate"]), value=_json_value)
def test_mutated_structure_loads_or_raises_trace_error(layout, pick, op, value):
    paths = PATHS[layout]
    path = paths[pick % len(paths)]
    _check(json.dumps(mutate(DOCS[layout], path, value, op)).encode())


@_settings
@given(layout=st.sampled_from(["1.1.1", "1.0.1"]), cut=st.floats(min_value=0, max_value=1))
def test_truncated_trace_loads_or_raises_trace_error(layout, cut):
    data = json.dumps(DOCS[layout]).encode()
    _check(data[: int(len(data) * cut)])


@_settings
@given(layout=st.sampled_from(["1.1.1", "1.0.1"]), pos=st.floats(min_value=0, max_value=1),
       junk=st.binary(min_size=1, max_size=6))
def test_corrupted_bytes_load_or_raise_trace_error(layout, pos, junk):
    data = json.dumps(DOCS[layout]).encode()
    i = int(len(data) * pos)
    _check(data[:i] + junk + data[i + len(junk):])


@_settings
@given(layout=st.sampled_from(["1.1.1", "1.0.1"]), node=st.integers(min_value=0),
       field=st.sampled_from(["inputs", "outputs", "attrs", "input_shapes", "input_types", "parent", "ctrl_deps",
                              "tid", "rf_id", "op_schema", "name", "id"]),
       value=_json_value)
def test_mutated_node_fields_load_or_raise_trace_error(layout, node, field, value):
    doc = copy.deepcopy(DOCS[layout])
    n = doc["nodes"][node % len(doc["nodes"])]
    n[field] = value
    _check(json.dumps(doc).encode())


@_settings
@given(value=_json_value, pick=st.integers(min_value=0))
def test_mutated_kineto_loads_or_raises_trace_error(value, pick):
    tr = load_bytes(json.dumps(PT2).encode())
    events = [{"ph": "X", "cat": "cpu_op", "name": n.name, "pid": 1, "tid": 1, "ts": i, "dur": 1,
               "args": {"Record function id": n.rf_id, "External id": i}} for i, n in enumerate(tr.nodes)]
    events.append({"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": 3, "dur": 1,
                   "args": {"correlation": 5, "stream": 7, "device": 0}})
    events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 3,
                   "dur": 1, "args": {"correlation": 5, "External id": 3}})
    doc = {"traceEvents": events}
    path = json_paths(doc)[pick % len(json_paths(doc))]
    mutated = mutate(doc, path, value)
    try:
        join_kineto(tr, load_kineto(json.dumps(mutated).encode())).to_dict()
    except TraceError:
        pass

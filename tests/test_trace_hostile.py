"""Hostile traces through ``benchmint inspect`` and ``benchmint replay`` (issue 16): every input ends in a
result (exit 0) or one ``error:`` line with exit 2, never exit 1, a traceback, a hang or a blow-up, and every
refusal comes before the replay runs. The larger campaign is ``benchmarks/trace_fuzz.py``."""

from __future__ import annotations

import copy
import gzip
import json
import resource
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from json_mutate import json_paths, mutate

BASE = Path(__file__).parent / "data" / "tiny_capture"
ET = json.loads((BASE / "et.json").read_text())
KINETO = json.loads((BASE / "kineto.json").read_text())
CAPTURE = json.loads((BASE / "capture.json").read_text())
STEP = next(n for n in ET["nodes"] if n["name"].startswith("ProfilerStep#"))
TOP = [n["id"] for n in ET["nodes"] if n["ctrl_deps"] == STEP["id"]]  # aten::linear, aten::relu, ...


def _folder(root: Path, et=None, kineto=None, capture=None, et_name: str = "et.json") -> Path:
    """A capture folder: the tiny capture with any of its three files replaced (a dict/list is JSON-encoded,
    bytes are written as given)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, doc, default in ((et_name, et, ET), ("kineto.json", kineto, KINETO), ("capture.json", capture, CAPTURE)):
        doc = default if doc is None else doc
        (root / name).write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    return root


def _replay(cli, target: Path, *extra: str) -> tuple[int, str, str]:
    out = target.parent / "out" if target.is_file() else target / "out"
    return cli("replay", str(target), "--iters", "1", "--warmup", "0", "--gaps", "none", "--no-store",
               "--out", str(out), *extra)


def _assert_outcome(code: int, err: str) -> None:
    """ok, or one user-error line with exit 2."""
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), err


def _refused(code: int, err: str, *words: str) -> str:
    _assert_outcome(code, err)
    assert code == 2, err
    for w in words:
        assert w in err, (w, err)
    return err


def _with_cycle(parent_id: int, parent_name: str | None = None) -> dict:
    """Two scopes below ``parent_id`` whose parents close a cycle through a duplicate id (the audit's case)."""
    doc = copy.deepcopy(ET)
    if parent_name is not None:
        next(n for n in doc["nodes"] if n["id"] == parent_id)["name"] = parent_name
    a, b = 1000, 1001
    tmpl = {"inputs": {"values": [], "shapes": [], "types": []}, "outputs": {"values": [], "shapes": [], "types": []},
            "attrs": [{"name": "rf_id", "type": "uint64", "value": 0}]}
    doc["nodes"] += [dict(copy.deepcopy(tmpl), id=a, name="scope_a", ctrl_deps=parent_id),
                     dict(copy.deepcopy(tmpl), id=b, name="scope_b", ctrl_deps=a),
                     dict(copy.deepcopy(tmpl), id=a, name="scope_a", ctrl_deps=b)]
    return doc


def _zeros_gzip(total: int) -> bytes:
    one = gzip.compress(bytes(64 << 20), compresslevel=9)  # 64 MiB of zeros in ~64 KB; members concatenate
    return one * (total // (64 << 20))


# ------------------------------------------------------------------------------------ the audit's cases


def test_the_unchanged_capture_replays(cli, tmp_path):
    d = _folder(tmp_path / "c")
    code, _, err = _replay(cli, d)
    assert code == 0, err
    assert cli("inspect", str(d / "et.json"))[0] == 0


@pytest.mark.parametrize("under", ["c10d", "ProfilerStep"])
def test_a_duplicate_id_closing_a_parent_cycle_is_refused_at_load(cli, tmp_path, under):
    doc = _with_cycle(TOP[0], "c10d::allreduce_") if under == "c10d" else _with_cycle(STEP["id"])
    d = _folder(tmp_path / "c", et=doc)
    _refused(*cli("inspect", str(d / "et.json"))[::2], "duplicate node id 1000")
    _refused(*_replay(cli, d)[::2], "duplicate node id 1000")
    assert not (d / "out" / "run.json").exists()


def test_a_parent_cycle_without_duplicates_names_its_nodes(cli, tmp_path):
    doc = copy.deepcopy(ET)
    nodes = {n["id"]: n for n in doc["nodes"]}
    nodes[TOP[0]]["ctrl_deps"], nodes[TOP[1]]["ctrl_deps"] = TOP[1], TOP[0]
    d = _folder(tmp_path / "c", et=doc)
    err = _refused(*cli("inspect", str(d / "et.json"))[::2], "parent cycle through node ids")
    assert str(TOP[0]) in err and str(TOP[1]) in err


def test_a_gzip_of_6_gib_of_zeros_is_refused_early_without_inflating_it(cli, tmp_path):
    d = _folder(tmp_path / "c", et=_zeros_gzip(6 << 30), et_name="et.json.gz")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for run in (lambda: cli("inspect", str(d / "et.json.gz")), lambda: _replay(cli, d / "et.json.gz")):
        code, _, err = run()
        _refused(code, err, "decompression bomb", "BENCHMINT_TRACE_MAX_RATIO")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 400, grown_mib  # it stopped after some tens of MiB, not 6 GiB


def test_a_tar_member_over_the_limit_is_refused_from_its_header(cli, tmp_path, monkeypatch):
    info = tarfile.TarInfo("et.json")
    info.size = 6 << 30
    path = tmp_path / "et.tar.gz"
    # only the header and the first 64 MiB of the member are written: the refusal must come from the header
    path.write_bytes(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)) + _zeros_gzip(64 << 20))
    _refused(*cli("inspect", str(path))[::2], "member et.json holds 6.0 GiB", "BENCHMINT_TRACE_MAX_BYTES")


def test_the_size_limit_is_a_sentence_and_can_be_raised(cli, tmp_path, monkeypatch):
    path = tmp_path / "et.json.gz"
    path.write_bytes(gzip.compress(json.dumps(ET).encode()))
    monkeypatch.setenv("BENCHMINT_TRACE_MAX_BYTES", "10K")
    _refused(*cli("inspect", str(path))[::2], "limit on a trace", "BENCHMINT_TRACE_MAX_BYTES")
    monkeypatch.setenv("BENCHMINT_TRACE_MAX_BYTES", "1M")
    assert cli("inspect", str(path))[0] == 0
    monkeypatch.setenv("BENCHMINT_TRACE_MAX_BYTES", "lots")
    _refused(*cli("inspect", str(path))[::2], "BENCHMINT_TRACE_MAX_BYTES", "not a size")


@pytest.mark.parametrize("capture, words", [
    (dict(CAPTURE, threads=1000000), ["capture.json", "field threads"]),
    ([CAPTURE], ["capture.json", "not an object"]),
    (dict(CAPTURE, threads="8"), ["field threads", "got `str`"]),
    (dict(CAPTURE, step_time_s="fast"), ["field step_time_s"]),
    (dict(CAPTURE, step_time_s={"median": "fast"}), ["field step_time_s.median"]),
    (dict(CAPTURE, schema_version="9" * 5000), ["field schema_version"]),
    (dict(CAPTURE, schema_version="2.0"), ["schema_version 2.0"]),
    (dict(CAPTURE, recorded_iterations=[2**70]), ["field recorded_iterations[0]"]),
    (dict(CAPTURE, files={"kineto": "../../etc/passwd"}), ["field files.kineto"]),
    # the replay compares its system metrics with these after timing: a bad one must stop it before
    (dict(CAPTURE, system_metrics="garbage"), ["field system_metrics"]),
    (dict(CAPTURE, system_metrics={"cpu_utilization": "abc"}), ["field system_metrics.cpu_utilization"]),
    (dict(CAPTURE, system_metrics={"peak_rss_bytes": -1}), ["field system_metrics.peak_rss_bytes"]),
])
def test_a_broken_capture_json_is_one_line_before_the_replay_runs(cli, tmp_path, capture, words):
    d = _folder(tmp_path / "c", capture=capture)
    _refused(*_replay(cli, d)[::2], *words)
    assert not (d / "out").exists()  # refused before anything ran or was written


def test_capture_threads_above_this_machines_cpus_are_capped(cli, tmp_path):
    import os

    d = _folder(tmp_path / "c", capture=dict(CAPTURE, threads=4096))
    code, _, err = _replay(cli, d, "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["threads"] <= (os.cpu_count() or 1)
    _refused(*_replay(cli, d, "--threads", "1000000")[::2], "--threads 1000000")


@pytest.mark.parametrize("schema", ["1" + "0" * 5000 + ".0.0", "9" * 5000, "2.0.0", "", "1.1"])
def test_bad_schema_strings_are_one_line(cli, tmp_path, schema):
    d = _folder(tmp_path / "c", et=dict(ET, schema=schema))
    _refused(*cli("inspect", str(d / "et.json"))[::2], "schema version")


@pytest.mark.parametrize("shape, words", [
    ([-5, 3], "negative size"),
    ([10**30], "more than 64 PiB"),
    ([1] * 100, "100 dimensions"),
    ([100000, 100000], "need about"),  # possible, but not in this machine's memory
])
def test_absurd_shapes_are_refused_before_anything_is_allocated(cli, tmp_path, shape, words):
    doc = copy.deepcopy(ET)
    node = next(n for n in doc["nodes"] if n["id"] == TOP[0])
    node["inputs"]["shapes"][0] = shape
    node["inputs"]["strides"][0] = []  # contiguous
    d = _folder(tmp_path / "c", et=doc)
    assert cli("inspect", str(d / "et.json"))[0] in (0, 2)
    _refused(*_replay(cli, d)[::2], words)


@pytest.mark.parametrize("key, value", [("ts", "soon"), ("dur", {"us": 1}), ("ts", 1e300), ("name", 5)])
def test_a_kineto_event_field_of_the_wrong_type_is_named(cli, tmp_path, key, value):
    doc = copy.deepcopy(KINETO)
    i, ev = next((i, e) for i, e in enumerate(doc["traceEvents"]) if e.get("ph") == "X")
    ev[key] = value
    d = _folder(tmp_path / "c", kineto=doc)
    _refused(*_replay(cli, d)[::2], "kineto.json", f"field traceEvents[{i}].{key}")


# -------------------------------------------------------------------------------------------- fuzzing

_VALUES = st.sampled_from([None, -1, 0, 2**70, -(2**63), 1e308, "x", "", [], {}, True, [[1]], "9" * 500,
                           [2**40, 2**40], {"a": 1}, [None], 3.5])


ET_BYTES = json.dumps(ET).encode()
ET_PATHS, KINETO_PATHS, CAPTURE_PATHS = json_paths(ET)[1:], json_paths(KINETO)[1:], json_paths(CAPTURE)[1:]


@st.composite
def mutants(draw) -> dict:
    """One mutated capture folder, as the keyword arguments of :func:`_folder`."""
    kind = draw(st.sampled_from(["truncate", "flip", "wrong type", "duplicate id", "cycle", "absurd shape",
                                 "corrupt gzip", "bad schema", "capture.json", "kineto.json"]))
    if kind == "truncate":
        return {"et": ET_BYTES[: draw(st.integers(0, len(ET_BYTES) - 1))]}
    if kind == "flip":
        b = bytearray(ET_BYTES)
        for pos, byte in draw(st.lists(st.tuples(st.integers(0, len(b) - 1), st.integers(0, 255)), min_size=1,
                                       max_size=6)):
            b[pos] = byte
        return {"et": bytes(b)}
    if kind == "wrong type":
        return {"et": mutate(ET, draw(st.sampled_from(ET_PATHS)), draw(_VALUES))}
    if kind == "duplicate id":
        i, j = draw(st.integers(0, len(ET["nodes"]) - 1)), draw(st.integers(0, len(ET["nodes"]) - 1))
        return {"et": mutate(ET, ("nodes", i, "id"), ET["nodes"][j]["id"])}
    if kind == "cycle":
        return {"et": _with_cycle(draw(st.sampled_from([STEP["id"], *TOP])),
                                  draw(st.sampled_from([None, "c10d::allreduce_"])))}
    if kind == "absurd shape":
        i = draw(st.sampled_from([n for n, x in enumerate(ET["nodes"]) if x["inputs"]["shapes"]]))
        shape = draw(st.sampled_from([[2**40, 2**40], [10**30], [-5, 3], [2**62, 4], [1] * 80, []]))
        return {"et": mutate(ET, ("nodes", i, "inputs", "shapes", 0), shape)}
    if kind == "corrupt gzip":
        z = bytearray(gzip.compress(ET_BYTES))
        cut = draw(st.integers(2, len(z)))
        pos = draw(st.integers(10, len(z) - 1))
        z[pos] ^= 1 << draw(st.integers(0, 7))
        return {"et": bytes(z[:cut]), "et_name": "et.json.gz"}
    if kind == "bad schema":
        return {"et": dict(ET, schema=draw(st.one_of(st.text(max_size=30), _VALUES,
                                                     st.sampled_from(["1." * 300 + "1", "1.1.1-chakra.x"]))))}
    if kind == "capture.json":
        if draw(st.booleans()):
            return {"capture": mutate(CAPTURE, draw(st.sampled_from(CAPTURE_PATHS)), draw(_VALUES))}
        return {"capture": draw(st.sampled_from([[CAPTURE], "capture", 5, None])) if draw(st.booleans())
                else json.dumps(CAPTURE).encode()[: draw(st.integers(0, 200))]}
    return {"kineto": mutate(KINETO, draw(st.sampled_from(KINETO_PATHS)), draw(_VALUES))}


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(m=mutants())
def test_mutated_captures_are_ok_or_one_line_exit_2(cli, m):
    with tempfile.TemporaryDirectory() as tmp:
        name = m.pop("et_name", "et.json")
        d = _folder(Path(tmp) / "c", et_name=name, **m)
        if name != "et.json":
            (d / "et.json").unlink(missing_ok=True)
        _assert_outcome(*cli("inspect", str(d / name))[::2])
        _assert_outcome(*_replay(cli, d / name)[::2])

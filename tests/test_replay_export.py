from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmint.models.workloads import build
from benchmint.replay.export import export_benchmark, rewrite
from benchmint.trace.capture import capture_steps

RESULT_KEYS = {"schema_version", "coverage", "iter_time_s", "original_iter_time_s", "error", "device", "threads"}
# what `pip install torch` brings (torch's own requirements and theirs): the exported runner needs no more
TORCH_ONLY = ("torch", "torchgen", "functorch", "sympy", "isympy", "mpmath", "networkx", "jinja2", "markupsafe",
              "filelock", "fsspec", "setuptools", "typing_extensions")
# run under `python -I -S` with only the torch-only folder on sys.path; refuses to start if benchmint or
# the third-party libraries the engine uses elsewhere can be imported
ISOLATED = """
import runpy, sys
sys.path.append(sys.argv.pop(1))
for m in ("benchmint", "msgspec", "orjson", "psutil", "numpy", "rich", "typer"):
    try:
        __import__(m)
    except ModuleNotFoundError:
        continue
    sys.exit(f"{m} is importable")
script = sys.argv.pop(1)
sys.argv[0] = script
runpy.run_path(script, run_name="__main__")
"""


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cap") / "encoder_cls"
    capture_steps(build("encoder_cls").step, d, warmup=1, measure=5, record=2)
    return d


def torch_only_site(root: Path) -> Path:
    """A folder holding (links to) torch and its requirements only, from this interpreter's site-packages."""
    site = Path(torch.__file__).resolve().parent.parent
    out = root / "torch-only-site"
    out.mkdir()
    for entry in site.iterdir():
        stem = entry.name.split("-")[0].removesuffix(".py")
        if stem in TORCH_ONLY:
            (out / entry.name).symlink_to(entry)
    return out


def test_exported_folder_runs_with_torch_alone_and_writes_replay_keys(capture, tmp_path, cli):
    out = tmp_path / "bench"
    code, stdout, err = cli("export", str(capture), "--out", str(out))
    assert code == 0, err
    assert "exported" in stdout and (out / "run.py").exists() and (out / "_benchmint_replay").is_dir()
    readme = (out / "README.md").read_text()
    for section in ("## What was captured", "## On what", "## What the original measured", "## How to run"):
        assert section in readme
    cap = json.loads((capture / "capture.json").read_text())
    assert f"{cap['step_time_s']['median'] * 1e3:.3f} ms" in readme
    # export.json says it too, as the docs say (it held none of it)
    orig = json.loads((out / "export.json").read_text())["original"]
    assert orig["device"] == cap["device"] and orig["threads"] == cap["threads"] and orig["host"] == cap["host"]
    assert orig["step_time_s"]["median"] == cap["step_time_s"]["median"] and orig["torch_version"]

    site = torch_only_site(tmp_path)
    probe = subprocess.run([sys.executable, "-I", "-S", "-c", "import sys; sys.path.append(sys.argv[1]); "
                            "import benchmint", str(site)], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'benchmint'" in probe.stderr
    res = tmp_path / "not" / "yet" / "result.json"  # its folder is made, as benchmint replay --json makes it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "BENCHMINT"))}
    p = subprocess.run([sys.executable, "-I", "-S", "-c", ISOLATED, str(site), str(out / "run.py"),
                        "--iters", "2", "--warmup", "0", "--json", str(res)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    # the headline benchmint replay prints (a noisy error said to be noise, not printed as a measurement)
    assert "coverage 1.000" in p.stdout and "(capture.json, measured at capture time), error" in p.stdout
    r = json.loads(res.read_text())
    assert ("not a measured error of the replay" in p.stdout) == (r["fidelity"]["verdict"] == "noisy")
    assert RESULT_KEYS <= set(r)
    assert r["coverage"] == 1.0 and r["iter_time_s"]["n"] == 2
    assert r["original_iter_time_s"] == pytest.approx(cap["step_time_s"]["median"])
    assert r["gap_target"] == "capture.json" and r["threads"] == cap["threads"]
    # the replay's own recordings were read back (stdlib stand-in for msgspec): the estimate is there
    assert r["calibration"] is not None and r["original_iter_time_estimated_s"] is not None


def test_export_trims_the_trace_to_the_replayed_iteration_without_changing_the_replay(capture, tmp_path):
    from benchmint.replay.export import _view

    meta = export_benchmark(capture, tmp_path / "b")
    assert meta["trimmed"] and meta["nodes"]["exported"] < meta["nodes"]["original"]
    cap = json.loads((capture / "capture.json").read_text())
    assert meta["iteration"] == cap["recorded_iterations"][-1]
    _, a = _view(capture / "et.json", capture / "kineto.json", meta["iteration"])
    tr, b = _view(tmp_path / "b" / "trace" / "et.json", tmp_path / "b" / "trace" / "kineto.json", None)
    assert [it.number for it in tr.iterations] == [meta["iteration"]]
    assert [(o.name, o.dur_s) for o in a.ops] == [(o.name, o.dur_s) for o in b.ops]
    assert a.step_span_s == b.step_span_s


def test_an_exported_selection_is_replayed_by_the_runner(capture, tmp_path):
    out = tmp_path / "sel"
    meta = export_benchmark(capture, out, select="op:aten::linear")
    assert meta["select"] == "op:aten::linear" and meta["adapted"][0]["ops_selected"] > 0
    res = tmp_path / "r.json"
    p = subprocess.run([sys.executable, str(out / "run.py"), "--gaps", "none", "--iters", "1", "--warmup", "0",
                        "--json", str(res)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(res.read_text())
    assert r["selection"]["spec"] == "op:aten::linear"
    assert r["ops_total"] == meta["adapted"][0]["ops_selected"]
    # the runner's output says it replays a part of the step, and its share, as benchmint replay does
    assert "selection op:aten::linear: " in p.stdout and "of the step" in p.stdout


def test_export_refuses_a_non_empty_folder_and_a_selection_that_matches_nothing(capture, tmp_path, cli):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, _, err = cli("export", str(capture), "--out", str(tmp_path / "full"))
    assert code == 2 and "not empty" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("export", str(capture), "--out", str(tmp_path / "e"), "--select", "op:aten::conv9d")
    assert code == 2 and "matches none" in err
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())
    # --force replaces a folder only once every check has passed: a refused export leaves the old one whole
    code, _, err = cli("export", str(capture), "--out", str(tmp_path / "full"), "--force", "--select", "op:aten::conv9d")
    assert code == 2 and (tmp_path / "full" / "x").read_text() == "x"
    # and it replaces an earlier export only: a folder of the user's own files is not emptied
    code, _, err = cli("export", str(capture), "--out", str(tmp_path / "full"), "--force")
    assert code == 2 and "not an earlier export" in err and (tmp_path / "full" / "x").read_text() == "x"
    assert cli("export", str(capture), "--out", str(tmp_path / "e2"))[0] == 0
    (tmp_path / "e2" / "stale.txt").write_text("old")
    assert cli("export", str(capture), "--out", str(tmp_path / "e2"), "--force")[0] == 0
    assert not (tmp_path / "e2" / "stale.txt").exists() and (tmp_path / "e2" / "run.py").is_file()
    # an --out that cannot be a folder is one line before any work
    (tmp_path / "afile").write_text("x")
    code, _, err = cli("export", str(capture), "--out", str(tmp_path / "afile" / "sub"))
    assert code == 2 and "is a file, so no folder can be made under it" in err and len(err.strip().splitlines()) == 1


def test_export_force_never_removes_what_the_benchmark_is_made_from(capture, tmp_path, cli, monkeypatch):
    # `export cap --out cap --force` removed the capture itself (and --out above it, everything beside it)
    import shutil

    cap = tmp_path / "par" / "cap"
    shutil.copytree(capture, cap)
    (tmp_path / "par" / "other.txt").write_text("mine")
    before = sorted(p.name for p in cap.iterdir())
    for src, out in ((cap, cap), (cap, tmp_path / "par"), (cap / "et.json", cap)):
        code, _, err = cli("export", str(src), "--out", str(out), "--force")
        assert code == 2 and "which the benchmark is made from" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in cap.iterdir()) == before and (tmp_path / "par" / "other.txt").exists()
    monkeypatch.chdir(cap)  # nor the working folder (--out .) or one above it
    code, _, err = cli("export", str(capture), "--out", str(tmp_path / "par"), "--force")
    assert code == 2 and "holds the working folder" in err and (tmp_path / "par" / "other.txt").exists()


def test_an_export_of_a_capture_that_lost_its_kineto_trace_names_none_in_its_capture_json(capture, tmp_path):
    """The exported capture.json kept naming kineto.json though none was copied, so its runner refused by default
    (a capture.json that names a missing Kineto trace is refused)."""
    src = tmp_path / "nokin"
    src.mkdir()
    for f in ("et.json", "capture.json"):
        (src / f).write_bytes((capture / f).read_bytes())
    export_benchmark(src, out=tmp_path / "e")
    cj = json.loads((tmp_path / "e" / "trace" / "capture.json").read_text())
    assert "kineto" not in cj["files"] and not (tmp_path / "e" / "trace" / "kineto.json").exists()


def test_vendored_imports_point_at_the_folder_and_fall_back_to_stdlib():
    src = "from benchmint.core import clock\n    import benchmint.trace.load\nimport orjson\nx = 'benchmint.y'\n"
    out = rewrite(src)
    assert "from _benchmint_replay.core import clock" in out
    assert "import _benchmint_replay.trace.load" in out
    assert "except ImportError" in out and "orjson_stub as orjson" in out
    assert "'benchmint.y'" in out  # strings are left alone


STUB_PARITY = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from _benchmint_replay.trace import load
from _benchmint_replay.trace.kineto import load_kineto
out = {"stub": sys.modules["_benchmint_replay.trace.load"].msgspec.__name__}
tr = load(sys.argv[3])
ops = tr.top_level_ops()
out["nodes"] = len(tr.nodes)
out["ops"] = [(n.name, repr(n.inputs)) for n in ops[:50]]
kt = load_kineto(sys.argv[4])
out["events"] = [len(kt.cpu), len(kt.runtime), len(kt.device), sum(e.rf_id is not None for e in kt.cpu)]
print(json.dumps(out))
"""


def test_the_stdlib_msgspec_stand_in_loads_traces_as_msgspec_does(data_dir, tmp_path):
    from benchmint.replay.export import vendor
    from benchmint.trace import load
    from benchmint.trace.kineto import load_kineto

    vendor(tmp_path / "pkg" / "_benchmint_replay")
    site = torch_only_site(tmp_path)
    et, k = data_dir / "param" / "linear_et.json.gz", data_dir / "param" / "linear_kineto.json.gz"
    p = subprocess.run([sys.executable, "-I", "-S", "-c", STUB_PARITY, str(tmp_path / "pkg"), str(site), str(et),
                        str(k)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout)
    assert got["stub"].endswith("msgspec_stub")
    tr = load(et)
    assert got["nodes"] == len(tr.nodes)
    assert got["ops"] == [[n.name, repr(n.inputs)] for n in tr.top_level_ops()[:50]]
    kt = load_kineto(k)
    assert got["events"] == [len(kt.cpu), len(kt.runtime), len(kt.device), sum(e.rf_id is not None for e in kt.cpu)]
    assert got["events"][0] > 0


def test_the_msgspec_stand_in_refuses_nan_and_infinity_as_msgspec_does():
    import msgspec

    from benchmint.replay.portable import msgspec_stub

    for doc in (b'{"median": NaN}', b'{"median": Infinity}', b'{"median": -Infinity}'):
        with pytest.raises(msgspec.DecodeError):
            msgspec.json.decode(doc)
        with pytest.raises(msgspec_stub.DecodeError):
            msgspec_stub.json.decode(doc)


def test_the_runner_times_under_the_same_conditions_as_benchmint_replay(capture, tmp_path):
    """run.py (torch alone) and `benchmint replay` of the same exported trace set the same threads, allocator,
    grad mode, collector and thread-pool environment around the timed loop; what only the environment makes
    different (numpy's thread pool in benchmint's process) is reported apart."""
    from benchmint.replay.conditions import differences

    out = tmp_path / "bench"
    export_benchmark(capture, out)
    site = torch_only_site(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCHMINT")}
    env["OMP_WAIT_POLICY"] = "PASSIVE"  # inherited by both sides: recorded on both
    ra, rb = tmp_path / "runner.json", tmp_path / "replay.json"
    iso = {k: v for k, v in env.items() if not k.startswith("PYTHON")}
    p = subprocess.run([sys.executable, "-I", "-S", "-c", ISOLATED, str(site), str(out / "run.py"), "--gaps", "none",
                        "--iters", "2", "--warmup", "0", "--json", str(ra)],
                       capture_output=True, text=True, env=iso, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    p = subprocess.run([sys.executable, "-m", "benchmint.cli.main", "replay", str(out / "trace"), "--gaps", "none",
                        "--iters", "2", "--warmup", "0", "--json", str(rb), "--no-store", "--out",
                        str(tmp_path / "run")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = json.loads(ra.read_text()), json.loads(rb.read_text())
    assert differences(a["timing_conditions"], b["timing_conditions"]) == []
    s = a["timing_conditions"]["settings"]
    cap = json.loads((capture / "capture.json").read_text())
    assert s["intra_op_threads"] == cap["threads"] and s["thread_env"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert s["allocator"].startswith(("glibc malloc settled", "default")) and s["grad_mode"] in ("torch.inference_mode", "torch.no_grad")
    assert a["timing_conditions"]["process"]["numpy_loaded"] is False  # the torch-only side: no numpy
    # both time the same generated iteration (the runner planned with the stdlib stand-ins), no gaps in it
    assert s["iteration_code"].startswith("sha256:")
    assert a["timing_conditions"]["process"]["spin_turns_per_iteration"] == 0


def test_differences_name_the_setting_that_differs():
    from benchmint.replay.conditions import differences, snapshot

    a = snapshot("glibc malloc settled")
    b = json.loads(json.dumps(a))
    b["settings"]["intra_op_threads"] = a["settings"]["intra_op_threads"] + 1
    assert differences(json.loads(json.dumps(a)), json.loads(json.dumps(a))) == []
    (d,) = differences(a, b)
    assert d.startswith("intra_op_threads:")


def test_the_iteration_fingerprint_names_another_iteration_and_leaves_out_the_gaps():
    """Two compiled iterations that differ in an op differ in ``iteration_code``; the same ops with other gap
    work do not (each process settles its own gaps), and the gaps' work is counted apart."""
    from benchmint.replay.conditions import differences, snapshot

    def fn(src):
        f = lambda R: None  # noqa: E731 - stands for a compiled iteration
        f.source = src
        return f

    a = snapshot("x", fn("def _iter(R):\n    _spin(10)\n    R[1] = f0(R[0])"))
    b = snapshot("x", fn("def _iter(R):\n    R[1] = f0(R[0])\n    _spin(99)"))  # gap settled elsewhere
    c = snapshot("x", fn("def _iter(R):\n    _spin(10)\n    R[1] = f1(R[0])"))
    assert differences(a, b) == []
    assert (a["process"]["spin_turns_per_iteration"], b["process"]["spin_turns_per_iteration"]) == (10, 99)
    (d,) = differences(a, c)
    assert d.startswith("iteration_code:")


def _spun(fn) -> int:
    """The spin turns one compiled iteration spends (its ``_spin(n)`` lines)."""
    import re

    return sum(int(n) for n in re.findall(r"_spin\((\d+)\)", fn.source))


def test_saved_gaps_are_spent_as_the_same_work_by_a_replay_and_by_the_exported_runner(capture, tmp_path, cli):
    import shutil

    from benchmint.replay.api import replay_trace

    # a captured step with room for gaps whatever the load: under a full suite's load the replayed ops alone once
    # took longer than the step captured minutes before, no gap was settled, and there was nothing to compare
    capture = Path(shutil.copytree(capture, tmp_path / "cap"))
    meta = json.loads((capture / "capture.json").read_text())
    meta["step_time_s"]["median"] *= 3
    (capture / "capture.json").write_text(json.dumps(meta))
    gaps, first = tmp_path / "gaps.json", tmp_path / "a.json"
    code, _, err = cli("replay", str(capture), "--iters", "2", "--warmup", "0", "--no-store", "--json", str(first),
                       "--save-gaps", str(gaps))
    assert code == 0, err
    saved, a = json.loads(gaps.read_text()), json.loads(first.read_text())
    assert saved["schema_version"] == 1 and saved["steps"] == a["ops_total"] and sum(saved["turns"]) > 0
    # a replay from the file calibrates nothing and spends exactly the saved turns between the same ops
    res = replay_trace(capture, iters=2, warmup=0, gaps_from=str(gaps))
    assert res.result["calibration"] is None
    assert _spun(res.compiled()) == sum(saved["turns"])
    assert res.result["gaps_from"]["turns"] == sum(saved["turns"])
    assert res.result["gap_target"] == a["gap_target"] == "capture.json"
    assert res.result["original_iter_time_estimated_s"] == a["original_iter_time_estimated_s"]
    # and says so: the console read "gaps: recorded (... aimed at capture.json)"
    code, out_text, _ = cli("replay", str(capture), "--iters", "2", "--warmup", "0", "--no-store", "--gaps-from",
                            str(gaps))
    flat = " ".join(out_text.replace("│", " ").split())
    assert code == 0 and "spin turns settled by an earlier replay, not aimed here" in flat

    out = tmp_path / "bench"
    code, _, err = cli("export", str(capture), "--out", str(out), "--gaps-from", str(gaps))
    assert code == 0, err
    assert (out / "gaps.json").exists() and "## The CPU time between ops" in (out / "README.md").read_text()
    ran = tmp_path / "r.json"
    p = subprocess.run([sys.executable, str(out / "run.py"), "--iters", "1", "--warmup", "0", "--json", str(ran)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(ran.read_text())
    assert r["gaps_from"]["path"] == str(out / "gaps.json") and r["gaps_from"]["turns"] == sum(saved["turns"])
    assert r["calibration"] is None and r["gap_target"] == "capture.json"
    assert "spin turns of CPU work between ops from gaps.json" in p.stdout


def test_a_gaps_file_that_does_not_fit_the_replay_is_refused_in_one_line(capture, tmp_path, cli):
    gaps = tmp_path / "gaps.json"
    code, _, err = cli("replay", str(capture), "--iters", "1", "--warmup", "0", "--no-store", "--save-gaps",
                       str(gaps))
    assert code == 0, err
    for args, says in ((("--select", "op:aten::linear"), "settled for a step of"),
                       (("--gaps", "none"), "leave out --gaps none")):
        code, _, err = cli("replay", str(capture), "--no-store", "--gaps-from", str(gaps), *args)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli("export", str(capture), "--out", str(tmp_path / "sel"), "--select", "op:aten::linear",
                       "--gaps-from", str(gaps))
    assert code == 2 and "settled for a step of" in err
    assert not (tmp_path / "sel").exists() or not any((tmp_path / "sel").iterdir())
    # the same op count, another step (a capture of the model at another batch size): refused as well
    doc = json.loads(gaps.read_text())
    assert doc["step_digest"]
    (tmp_path / "other.json").write_text(json.dumps({**doc, "step_digest": "0" * 16}))
    code, _, err = cli("replay", str(capture), "--no-store", "--gaps-from", str(tmp_path / "other.json"))
    assert code == 2 and "settled for another step of" in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "junk.json").write_text('{"kind": "something else"}')
    code, _, err = cli("replay", str(capture), "--no-store", "--gaps-from", str(tmp_path / "junk.json"))
    assert code == 2 and "not a gaps file" in err
    code, _, err = cli("replay", str(capture), "--no-store", "--gaps", "none", "--save-gaps", str(tmp_path / "n"))
    assert code == 2 and "settles no gaps" in err


CAPTURE_PARITY = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from _benchmint_replay.core.errors import UserError
from _benchmint_replay.trace.capture_file import read_capture
assert sys.modules["_benchmint_replay.trace.capture_file"].msgspec.__name__.endswith("msgspec_stub")
out = []
for path in sys.argv[3:]:
    try:
        out.append(read_capture(path))
    except UserError as e:
        out.append(str(e))
print(json.dumps(out))
"""


def test_the_msgspec_stand_in_reads_a_capture_json_with_an_index_sketch_as_msgspec_does(tmp_path):
    """The exported runner reads capture.json through the stand-in: the index sketch (a list of typed records)
    comes through as msgspec gives it, and a malformed one is refused in the same one line."""
    from benchmint.core.errors import UserError
    from benchmint.replay.export import vendor
    from benchmint.trace.capture_file import read_capture

    vendor(tmp_path / "pkg" / "_benchmint_replay")
    site = torch_only_site(tmp_path)
    good = {"schema_version": "1.0", "threads": 2,
            "index_sketch": {"how": "x", "more": 3, "lookups": [
                {"op": "aten::embedding_bag", "shape": [4096], "rows": 5000, "indices": 4096, "distinct": 900},
                {"shape": [8, 2], "rows": 10, "indices": 16, "distinct": 7}]}}
    bad = json.loads(json.dumps(good))
    bad["index_sketch"]["lookups"][1]["rows"] = 0
    paths = []
    for name, doc in (("good", good), ("bad", bad)):
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name / "capture.json")
        paths[-1].write_text(json.dumps(doc))
    p = subprocess.run([sys.executable, "-I", "-S", "-c", CAPTURE_PARITY, str(tmp_path / "pkg"), str(site),
                        *map(str, paths)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    got_good, got_bad = json.loads(p.stdout)
    assert got_good == read_capture(paths[0]) == good
    with pytest.raises(UserError) as e:
        read_capture(paths[1])
    assert got_bad == str(e.value) and "index_sketch.lookups[1].rows" in got_bad


def test_the_runner_without_torch_says_what_it_needs_in_one_line(capture, tmp_path, cli):
    export_benchmark(capture, tmp_path / "b")
    # an exported folder given to replay points at its runner and its trace ("folder has no et.json" before)
    code, _, err = cli("replay", str(tmp_path / "b"), "--no-store")
    assert code == 2 and "an exported benchmark; run it with python" in err and str(tmp_path / "b" / "trace") in err
    # -I -S: no site-packages, so no torch (a raw ModuleNotFoundError traceback before)
    r = subprocess.run([sys.executable, "-I", "-S", str(tmp_path / "b" / "run.py")], capture_output=True, text=True,
                       timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "needs PyTorch" in lines[0] and "pip install torch" in lines[0]

"""Hostile traces through ``benchmint inspect`` and ``benchmint replay`` (issue 16): the larger campaign.

Mutates the small capture folder in ``tests/data/tiny_capture`` (et.json, kineto.json, capture.json) a few
hundred ways - truncation, byte flips, wrong types, duplicate ids, parent cycles (one closed by a duplicate id
under a ``c10d::`` op, one under the ProfilerStep), absurd shapes, corrupt gzip, a gzip and a tar member
holding GiBs of zeros, bad schema strings, broken capture.json and kineto.json - and runs each mutant through
``inspect`` and ``replay`` in a child process (forked from one that imported benchmint and torch once) with a
wall-clock timeout and an RSS limit. Prints, per command and in all:

    tried  ok  handled  exit 1  hung  over memory

``ok``: exit 0; ``handled``: exit 2 with one ``error:`` line and no traceback; ``exit 1``: any other exit
(1, a signal, a traceback); ``hung``: killed at the timeout; ``over memory``: killed past the RSS limit (or stopped when it asked torch for
more than 256 threads, which would exhaust the thread limit of the whole machine).
Target: 0 exit 1, 0 hung, 0 over memory.

    .venv/bin/python benchmarks/trace_fuzz.py [--n 360] [--seed 0] [--timeout 20] [--rss-gib 1.5]
        [--bomb-gib 6] [--json out.json]

Run it against another tree's code with ``PYTHONPATH=/that/tree/src``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import json
import os
import random
import shutil
import signal
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "tests" / "data" / "tiny_capture"
CLASSES = ("ok", "handled", "exit 1", "hung", "over memory")
sys.path.insert(0, str(ROOT / "tests"))
from json_mutate import json_paths, mutate  # noqa: E402  (the mutations the hostile-input tests use)

_VALUES = [None, -1, 0, 2**70, -(2**63), 1e308, float("inf"), "x", "", [], {}, True, [[1]], "9" * 5000,
           [2**40, 2**40], {"a": 1}, [None], 3.5]


# ----------------------------------------------------------------------------------------------- mutants


def _zeros_gzip(total: int) -> bytes:
    """A gzip file of ``total`` zero bytes, built cheaply from repeated members (a member of 64 MiB)."""
    chunk = 64 << 20
    one = gzip.compress(bytes(chunk), compresslevel=9)
    n, rest = divmod(total, chunk)
    return one * n + (gzip.compress(bytes(rest), compresslevel=9) if rest else b"")


def _zeros_tar_gz(total: int) -> bytes:
    """A .tar.gz whose one member ``et.json`` claims (and holds) ``total`` zero bytes."""
    info = tarfile.TarInfo("et.json")
    info.size = total
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    pad = (-total) % 512
    return gzip.compress(header) + _zeros_gzip(total) + gzip.compress(bytes(pad + 1024))


def make_mutants(n: int, seed: int, bomb_bytes: int) -> list[dict]:
    """Each mutant: {kind, files: {name: bytes}, trace: the file name to pass}."""
    rng = random.Random(seed)
    et_bytes = (BASE / "et.json").read_bytes()
    et = json.loads(et_bytes)
    kin = json.loads((BASE / "kineto.json").read_bytes())
    cap = json.loads((BASE / "capture.json").read_bytes())
    by_name = {nd["name"]: nd for nd in et["nodes"]}
    ids = [nd["id"] for nd in et["nodes"]]
    step = next(nd for nd in et["nodes"] if nd["name"].startswith("ProfilerStep#"))
    top = [nd for nd in et["nodes"] if nd["ctrl_deps"] == step["id"]]

    def enc(doc) -> bytes:
        return json.dumps(doc).encode()

    def base_files() -> dict[str, bytes]:
        return {"et.json": et_bytes, "kineto.json": enc(kin), "capture.json": enc(cap)}

    def with_et(doc_or_bytes, kind):
        f = base_files()
        f["et.json"] = doc_or_bytes if isinstance(doc_or_bytes, bytes) else enc(doc_or_bytes)
        return {"kind": kind, "files": f, "trace": "et.json"}

    def cycle_under(parent_node, kind):
        # two children of parent_node that name each other (through a duplicate id) close a cycle below it
        d = copy.deepcopy(et)
        a, b = max(ids) + 1, max(ids) + 2
        tmpl = {k: v for k, v in by_name["aten::relu"].items()}
        na = dict(copy.deepcopy(tmpl), id=a, name="my_scope_a", ctrl_deps=parent_node["id"])
        nb = dict(copy.deepcopy(tmpl), id=b, name="my_scope_b", ctrl_deps=a)
        na2 = dict(copy.deepcopy(tmpl), id=a, name="my_scope_a", ctrl_deps=b)
        for x in (na, nb, na2):
            x["attrs"] = [at for at in x["attrs"] if at["name"] != "op_schema"]
        d["nodes"].extend([na, nb, na2])
        return d

    out: list[dict] = []
    gens = []

    def gen(fn):
        gens.append(fn)
        return fn

    @gen
    def truncate():
        return with_et(et_bytes[: rng.randrange(len(et_bytes))], "truncate")

    @gen
    def byte_flips():
        b = bytearray(et_bytes)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return with_et(bytes(b), "byte flips")

    @gen
    def wrong_type():
        d = copy.deepcopy(et)
        paths = json_paths(d)
        return with_et(mutate(d, rng.choice(paths[1:]), copy.deepcopy(rng.choice(_VALUES)), in_place=True),
                       "wrong type")

    @gen
    def duplicate_id():
        d = copy.deepcopy(et)
        i, j = rng.sample(range(len(d["nodes"])), 2)
        if rng.random() < 0.5:
            d["nodes"].append(copy.deepcopy(d["nodes"][i]))
        else:
            d["nodes"][i]["id"] = d["nodes"][j]["id"]
        return with_et(d, "duplicate id")

    @gen
    def cycle():
        r = rng.random()
        if r < 0.3:  # the audit's case: a duplicate id closing a cycle under a collective
            d = copy.deepcopy(et)
            tid = rng.choice(top)["id"]
            t = next(nd for nd in d["nodes"] if nd["id"] == tid)
            t["name"] = "c10d::allreduce_"
            d = cycle_under(t, "x")
            return with_et(d, "cycle")
        if r < 0.6:
            return with_et(cycle_under(step, "x"), "cycle")
        d = copy.deepcopy(et)
        a, b = rng.sample(range(len(d["nodes"])), 2)
        d["nodes"][a]["ctrl_deps"] = d["nodes"][b]["id"]
        d["nodes"][b]["ctrl_deps"] = d["nodes"][a]["id"]
        return with_et(d, "cycle")

    @gen
    def absurd_shape():
        d = copy.deepcopy(et)
        tid = rng.choice(top)["id"]
        nd = next(x for x in d["nodes"] if x["id"] == tid)
        side = nd["inputs"] if nd["inputs"]["shapes"] else nd["outputs"]
        k = rng.randrange(len(side["shapes"]))
        shape = rng.choice([[2**40, 2**40], [10**30], [-5, 3], [100000, 100000], [2**62, 4], [1] * 5000])
        side["shapes"][k] = shape
        v = side["values"][k]
        if isinstance(v, list) and len(v) == 6 and rng.random() < 0.5:
            v[3] = rng.choice([2**63, 10**30, -1, 2**40])  # numel
        return with_et(d, "absurd shape")

    @gen
    def corrupt_gzip():
        z = bytearray(gzip.compress(et_bytes))
        if rng.random() < 0.5:
            z = z[: rng.randrange(2, len(z))]
        else:
            for _ in range(rng.randint(1, 4)):
                z[rng.randrange(10, len(z))] ^= 1 << rng.randrange(8)
        f = base_files()
        del f["et.json"]
        f["et.json.gz"] = bytes(z)
        return {"kind": "corrupt gzip", "files": f, "trace": "et.json.gz"}

    @gen
    def bad_schema():
        d = copy.deepcopy(et)
        d["schema"] = rng.choice(["9" * 5000, "", "1.1", "2.0.0", 5, None, "1.1.1-chakra.x", "1." * 3000 + "1",
                                  "1.99999999999999999999.0", [1, 1, 1], "0.0.1", " 1.1.1 "])
        return with_et(d, "bad schema")

    @gen
    def broken_capture():
        f = base_files()
        r = rng.random()
        if r < 0.15:
            doc = rng.choice([[], [cap], "capture", 5, None])
        elif r < 0.3:
            doc = dict(cap, threads=rng.choice([1000000, -1, 0, "8", 2**70, 1e300, None, [4]]))
        elif r < 0.4:
            doc = dict(cap, schema_version=rng.choice(["9" * 5000, 2, None, "2.0", ["1.0"]]))
        elif r < 0.5:
            doc = dict(cap, step_time_s=rng.choice([5, "x", {"median": "fast"}, {"median": -1.0},
                                                    {"median": 1e308}, [], {"median": None}]))
        elif r < 0.6:
            doc = dict(cap, recorded_iterations=rng.choice(["8", [2**70], [None], {"a": 1}, [-1]]))
        elif r < 0.7:
            doc = dict(cap, files=rng.choice([5, [], {"kineto": 5}, {"kineto": "../../etc/passwd"},
                                              {"kineto": "missing.json"}]))
        elif r < 0.8:
            f["capture.json"] = enc(cap)[: rng.randrange(len(enc(cap)))]
            return {"kind": "broken capture.json", "files": f, "trace": "et.json"}
        else:
            doc = copy.deepcopy(cap)
            mutate(doc, rng.choice(json_paths(doc)[1:]), copy.deepcopy(rng.choice(_VALUES)), in_place=True)
        f["capture.json"] = enc(doc)
        return {"kind": "broken capture.json", "files": f, "trace": "et.json"}

    @gen
    def broken_kineto():
        f = base_files()
        r = rng.random()
        kb = enc(kin)
        if r < 0.2:
            f["kineto.json"] = kb[: rng.randrange(len(kb))]
        elif r < 0.35:
            f["kineto.json"] = enc(rng.choice([[], "k", 5, {"traceEvents": 5}, {"traceEvents": [5, "x"]}]))
        else:
            doc = copy.deepcopy(kin)
            ev = doc["traceEvents"]
            e = ev[rng.randrange(len(ev))]
            key = rng.choice(["ts", "dur", "ph", "cat", "name", "pid", "tid", "args"])
            e[key] = copy.deepcopy(rng.choice(_VALUES))
            if rng.random() < 0.3 and isinstance(e.get("args"), dict):
                e["args"][rng.choice(["Record function id", "External id", "correlation"])] = rng.choice(_VALUES)
            f["kineto.json"] = enc(doc)
        return {"kind": "broken kineto.json", "files": f, "trace": "et.json"}

    # the fixed cases of the audit, always included
    fixed = []
    d = copy.deepcopy(et)
    t = next(nd for nd in d["nodes"] if nd["id"] == top[0]["id"])
    t["name"] = "c10d::allreduce_"
    fixed.append(with_et(cycle_under(t, "x"), "cycle"))
    fixed.append(with_et(cycle_under(step, "x"), "cycle"))
    f = base_files()
    del f["et.json"]
    f["et.json.gz"] = _zeros_gzip(bomb_bytes)
    fixed.append({"kind": "gzip bomb", "files": f, "trace": "et.json.gz"})
    f = base_files()
    del f["et.json"]
    f["et.tar.gz"] = _zeros_tar_gz(bomb_bytes)
    fixed.append({"kind": "gzip bomb", "files": f, "trace": "et.tar.gz"})
    for threads in (1000000,):
        fixed.append({"kind": "broken capture.json", "trace": "et.json",
                      "files": dict(base_files(), **{"capture.json": enc(dict(cap, threads=threads))})})
    for doc in ([cap], dict(cap, schema_version="9" * 5000), dict(cap, step_time_s="fast")):
        fixed.append({"kind": "broken capture.json", "trace": "et.json",
                      "files": dict(base_files(), **{"capture.json": enc(doc)})})
    fixed.append({"kind": "ok (unchanged)", "files": base_files(), "trace": "et.json"})
    out.extend(fixed)
    while len(out) < n:
        out.append(rng.choice(gens)())
    return out[:max(n, len(fixed))]


# ------------------------------------------------------------------------------------------------ running


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _die_with_parent() -> None:
    """Linux: the child is killed when the campaign stops (a timeout of its own, Ctrl-C), never left running."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


THREAD_GUARD = 256
_OVER_RESOURCES = 137


def _guard_threads() -> None:
    """In a child: asking torch for more than THREAD_GUARD intra-op threads ends the child as "over memory"
    instead of letting OpenMP start them (a million threads exhaust the machine's thread limit for every
    process on it, not just this one; the audit saw it run out of memory)."""
    import torch

    real = torch.set_num_threads

    def guarded(n: int) -> None:
        if n > THREAD_GUARD:
            print(f"trace_fuzz: torch.set_num_threads({n}) stopped (over {THREAD_GUARD})", file=sys.stderr)
            sys.stderr.flush()
            os._exit(_OVER_RESOURCES)
        real(n)

    torch.set_num_threads = guarded


def run_one(argv: list[str], workdir: Path, timeout_s: float, rss_limit: int) -> tuple[str, str]:
    """Fork a child that runs the CLI on ``argv``; the outcome class and the last line of its stderr."""
    from benchmint.cli.main import run

    err_path = workdir / "stderr.txt"
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.setsid()
            _die_with_parent()
            os.chdir(workdir)
            fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(fd, 2)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            _guard_threads()
            try:
                run(argv)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    t0 = time.monotonic()
    outcome = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - t0 > timeout_s:
            outcome = "hung"
        elif _rss_bytes(pid) > rss_limit:
            outcome = "over memory"
        if outcome:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.01)
    err = err_path.read_text(errors="replace") if err_path.exists() else ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    last = lines[-1][:200] if lines else ""
    if outcome:
        return outcome, last
    rc = os.waitstatus_to_exitcode(status)
    if rc == _OVER_RESOURCES and "trace_fuzz: torch.set_num_threads" in err:
        return "over memory", last
    if rc == 0:
        return "ok", last
    errors = [ln for ln in lines if ln.startswith("error:")]
    if rc == 2 and "Traceback" not in err and len(errors) == 1:
        return "handled", errors[0][:200]
    return "exit 1", f"rc={rc}: {last}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=360, help="mutants (each through inspect and replay)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per command")
    ap.add_argument("--rss-gib", type=float, default=1.5, help="RSS limit per command")
    ap.add_argument("--bomb-gib", type=float, default=6.0, help="zeros in the gzip and tar bombs")
    ap.add_argument("--commands", default="inspect,replay")
    ap.add_argument("--kinds", default=None, help="only mutants of these kinds (comma-separated, e.g. "
                    "'absurd shape,cycle')")
    ap.add_argument("--json", type=Path, default=None, help="write every outcome here")
    a = ap.parse_args()

    import importlib

    import torch  # noqa: F401  (imported once, before forking: each child starts with it)

    import benchmint

    for mod in ("benchmint.cli.main", "benchmint.cli.trace", "benchmint.cli.replay", "benchmint.replay",
                "benchmint.replay.api", "benchmint.replay.plan", "benchmint.trace.kineto", "torch.nn",
                "torch.fx", "torch.distributed"):
        with contextlib.suppress(ImportError):
            importlib.import_module(mod)

    mutants = make_mutants(a.n, a.seed, int(a.bomb_gib * (1 << 30)))
    if a.kinds:
        mutants = [m for m in mutants if m["kind"] in a.kinds.split(",")]
    print(f"benchmint from {Path(benchmint.__file__).parent}; {len(mutants)} mutants, timeout {a.timeout:g} s, "
          f"RSS limit {a.rss_gib:g} GiB", flush=True)
    rows = []
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="trace_fuzz_") as tmp:
        for i, m in enumerate(mutants):
            d = Path(tmp) / f"m{i}"
            d.mkdir()
            for name, data in m["files"].items():
                (d / name).write_bytes(data)
            for cmd in a.commands.split(","):
                if cmd == "inspect":
                    argv = ["inspect", str(d / m["trace"])]
                else:
                    argv = ["replay", str(d / m["trace"]), "--iters", "1", "--warmup", "0", "--no-store",
                            "--out", str(d / "out")]
                outcome, line = run_one(argv, d, a.timeout, int(a.rss_gib * (1 << 30)))
                rows.append({"i": i, "kind": m["kind"], "command": cmd, "outcome": outcome, "line": line})
                if outcome in ("exit 1", "hung", "over memory"):
                    print(f"  #{i} {m['kind']:<20} {cmd:<8} {outcome:<12} {line[:110]}", flush=True)
            shutil.rmtree(d, ignore_errors=True)
            if (i + 1) % 25 == 0:
                print(f"  ... {i + 1}/{len(mutants)} mutants, {time.monotonic() - t_start:.0f} s", flush=True)
    wall = time.monotonic() - t_start

    def table(title: str, sel: list[dict]) -> None:
        c = Counter(r["outcome"] for r in sel)
        print(f"{title:<22} {len(sel):>6} " + " ".join(f"{c.get(k, 0):>{max(7, len(k))}}" for k in CLASSES))

    print()
    print(f"{'':<22} {'tried':>6} " + " ".join(f"{k:>{max(7, len(k))}}" for k in CLASSES))
    for cmd in a.commands.split(","):
        table(cmd, [r for r in rows if r["command"] == cmd])
    table("all", rows)
    print()
    for kind in sorted({r["kind"] for r in rows}):
        table(f"  {kind}", [r for r in rows if r["kind"] == kind])
    print(f"\n{wall:.0f} s")
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "wall_s": wall}, indent=1))
    bad = sum(r["outcome"] in ("exit 1", "hung", "over memory") for r in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())

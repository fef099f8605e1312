"""Time and memory to plan PARAM's traces: the dry run on the meta device against the computing one.

Each (trace, dry run) is planned in a fresh child process (its peak RSS is the child's ``ru_maxrss``, read
by the parent through ``os.wait4``):

    python benchmarks/replay_plan.py                                  # meta and real, every trace but GPT-2 real
    python benchmarks/replay_plan.py --traces hf_GPT2 --modes meta --check
    python benchmarks/replay_plan.py --old-src /tmp/old/src           # "before" = that source tree's planner
    python benchmarks/replay_plan.py --old-src /tmp/old/src --modes old,meta --rounds 3   # A B A B ...

Columns: ``plan`` is ``build_plan(view, check=0)``: the dry run and the step's inputs made (allocated and
filled: the replay needs them; ``inputs`` says how long that took), wall and CPU seconds (the CPU figure
moves less with a busy machine); ``check`` (with ``--check``) is the one real pass over the compiled
iteration that ends planning in a replay: a step at the recorded shapes. Mode ``old`` is the ``--old-src``
tree's planner as it plans by default (its own dry run); with ``--rounds N`` the modes alternate per trace
(A B A B ...), each row gives the median of its rounds and the last line per trace the median of the
pair-by-pair ratios of wall and CPU seconds to the first mode. ``real ops``: the ops the dry run
computed (all of them with the computing dry run). The computing dry run of GPT-2 needs about 19-21 GiB;
it runs only with ``--allow-big-real`` and when the machine has more than 22 GiB available.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARAM = ROOT / "tests" / "data" / "param"
TRACES = {
    "linear": "linear_et.json.gz",
    "pt2": "pt2_et.json.tar.gz",
    "resnet": "resnet_et.json.gz",
    "dlrm_rank0": "dlrm_pytorch_et.tar.gz",
    "hf_GPT2": "hf_GPT2_et.json.tar.gz",
}
BIG = {"hf_GPT2"}  # its computing dry run needs ~20 GiB
PREVIOUS = {("hf_GPT2", "real"): "129 s wall, max RSS 18.9 GiB (measured in an earlier session; not run again)"}


def child(trace: str, mode: str, check: bool) -> None:
    import resource

    from benchmint.replay.plan import build_plan
    from benchmint.replay.source import view_from_trace
    from benchmint.trace import load

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def sys_s() -> float:  # the kernel's share: page faults of the inputs' first touch, mostly
        return resource.getrusage(resource.RUSAGE_SELF).ru_stime

    if mode != "old":
        os.environ["BENCHMINT_PLAN_DRY_RUN"] = mode
    t0 = time.perf_counter()
    view = view_from_trace(load(PARAM / TRACES[trace], rank=0 if trace.startswith("dlrm") else None),
                           device="cpu")
    load_s = time.perf_counter() - t0
    c0, s0, t0 = cpu(), sys_s(), time.perf_counter()
    old = False
    try:
        plan = build_plan(view, "cpu", check=0)
    except TypeError:  # an older planner (--old-src): its dry run computes, and it checks itself
        plan, old = build_plan(view, "cpu"), True
    plan_s, plan_cpu, plan_sys = time.perf_counter() - t0, cpu() - c0, sys_s() - s0
    rss_plan = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    check_s = None
    if check and not old:
        fn = plan.compile(standins=False)
        t0 = time.perf_counter()
        with plan.grad_context():
            fn(plan.registers())
        check_s = time.perf_counter() - t0
    dry = getattr(plan, "dry_run", None) or {}
    print(json.dumps({"ops": len(plan.steps), "replayed": len(plan.replayed), "load_s": load_s, "plan_s": plan_s,
                      "plan_cpu_s": plan_cpu, "plan_sys_s": plan_sys, "rss_after_plan": rss_plan, "check_s": check_s,
                      "inputs_s": dry.get("inputs_made_s"), "ran_real": dry.get("ran_real", len(plan.steps)),
                      "real_runs": dry.get("real_runs", []), "old_planner_checked": old,
                      "input_bytes": plan.persistent_bytes}))


def run_child(trace: str, mode: str, check: bool, src: Path | None) -> dict:
    """One child's result, with its peak RSS from wait4."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src or ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, __file__, "--child", trace, "--mode", mode] + (["--check"] if check else [])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        os.dup2(w, 1)
        os.execve(sys.executable, cmd, env)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status, ru = os.wait4(pid, 0)
    out = b"".join(chunks).decode()
    if os.waitstatus_to_exitcode(status) != 0 or not out.strip():
        return {"error": f"exit {os.waitstatus_to_exitcode(status)}", "max_rss": ru.ru_maxrss * 1024}
    res = json.loads(out.strip().splitlines()[-1])
    res["max_rss"] = ru.ru_maxrss * 1024
    return res


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child")
    ap.add_argument("--mode", default="meta")
    ap.add_argument("--check", action="store_true", help="also time the real pass that ends planning")
    ap.add_argument("--traces", default=",".join(TRACES))
    ap.add_argument("--modes", default="real,meta", help="dry runs to time: real (before), meta (after), old "
                                                         "(the --old-src tree's default)")
    ap.add_argument("--rounds", type=int, default=1, help="alternate the modes this many times per trace")
    ap.add_argument("--old-src", type=Path, help="'before' is this source tree's planner (e.g. git archive of "
                                                  "the commit before the meta dry run), not dry run 'real'")
    ap.add_argument("--allow-big-real", action="store_true", help="run the computing dry run of GPT-2 too "
                                                                  "(about 20 GiB) when > 22 GiB are available")
    a = ap.parse_args()
    if a.child:
        child(a.child, a.mode, a.check)
        return
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {available_gib():.1f} GiB available")
    rows = []
    ratios: dict[str, list[tuple[float, float]]] = {}
    modes = a.modes.split(",")
    for trace in a.traces.split(","):
        got: dict[str, list[dict]] = {m: [] for m in modes}
        for rnd in range(a.rounds):
            for mode in modes:
                label = mode if not (mode == "real" and a.old_src) else "before (old source)"
                if mode == "real" and trace in BIG and not (a.allow_big_real and available_gib() > 22):
                    if rnd == 0:
                        rows.append((trace, label, PREVIOUS.get((trace, mode), "skipped (needs ~20 GiB)")))
                    continue
                src = a.old_src if mode in ("real", "old") else None
                if mode == "old" and src is None:
                    ap.error("--modes old needs --old-src")
                r = run_child(trace, mode, a.check, src)
                r["load_avg"] = os.getloadavg()[0]
                got[mode].append(r)
                print(trace, label, f"round {rnd + 1}", json.dumps(r), flush=True)
        for mode in modes:
            if got[mode]:
                label = mode if not (mode == "real" and a.old_src) else "before (old source)"
                rows.append((trace, label, _median_row(got[mode])))
        first = got[modes[0]]
        for mode in modes[1:]:
            pairs = [(b["plan_s"] / x["plan_s"], b["plan_cpu_s"] / x["plan_cpu_s"])
                     for x, b in zip(first, got[mode], strict=False) if "error" not in x and "error" not in b]
            if pairs:
                ratios[f"{trace}: {mode} / {modes[0]}"] = pairs
    print()
    print("| trace | dry run | ops | replayed | load | plan wall | plan CPU | inputs made | ops computed | check pass "
          "| max RSS | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for trace, label, r in rows:
        if isinstance(r, str) or "error" in r:
            print(f"| {trace} | {label} | {r if isinstance(r, str) else r['error']} |||||||||")
            continue
        chk = f"{r['check_s']:.1f} s" if r.get("check_s") is not None else \
            ("in plan" if r.get("old_planner_checked") else "-")
        inputs = f"{r['inputs_s']:.1f} s" if r.get("inputs_s") is not None else "-"
        cpu = f"{r['plan_cpu_s']:.1f} s" + (f" ({r['plan_sys_s']:.1f} s sys)" if r.get("plan_sys_s") is not None
                                            else "")
        print(f"| {trace} | {label} | {r['ops']} | {r['replayed']} | {r['load_s']:.1f} s | {r['plan_s']:.1f} s "
              f"| {cpu} | {inputs} | {r['ran_real']} | {chk} | {r['max_rss'] / 2**30:.2f} GiB "
              f"| {r['load_avg']:.1f} |")
    for what, pairs in ratios.items():
        print(f"{what}: median ratio wall {statistics.median(p[0] for p in pairs):.2f}, "
              f"CPU {statistics.median(p[1] for p in pairs):.2f} over {len(pairs)} pair(s)")


def _median_row(rs: list[dict]) -> dict:
    """The rounds of one mode: medians of the times, the largest RSS, the rest from the first round."""
    ok = [r for r in rs if "error" not in r]
    if not ok:
        return rs[0]
    row = dict(ok[0])
    for k in ("load_s", "plan_s", "plan_cpu_s", "plan_sys_s", "inputs_s", "check_s", "load_avg"):
        vals = [r[k] for r in ok if r.get(k) is not None]
        row[k] = statistics.median(vals) if vals else None
    row["max_rss"] = max(r["max_rss"] for r in ok)
    return row


if __name__ == "__main__":
    main()

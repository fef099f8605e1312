"""Adaptation checked against reality: does a scaled or selected replay take what the real thing takes?

* ``--scale batch=2``: each workload is captured at its batch size B, replayed with ``scale=("batch=2",)``, and
  the REAL model is built at batch 2B; the real step and the scaled replay are then timed in the same process,
  alternating A B A B ... (``compare_with_original``: median over rounds of replay / real - 1).
* ``--scale seq=2``: the same on transformer workloads at sequence length S against the real model at 2S.
* ``--select``: one transformer layer (a ``record_function`` scope the benchmark opens around layer 0 of a
  GPT-2 forward, as a model's own module scopes would be recorded) and ``phase:optimizer`` of a GPT-2 training
  step: the selection's replay against the share of the original step its Kineto trace gives it, the
  original timed alternately in the same run (error = replay / (original x share) - 1).

  The real model at the captured size and the unscaled replay take turns in the same rounds, so that what the
  replay's own aim (capture.json's step, measured during the capture) adds can be told from the scaling. The
  scaled replay spends the unscaled replay's own gaps (saved and given back with ``gaps_from``), so both
  replays differ only by their ops' sizes.

Usage: python benchmarks/replay_adapt.py [--threads 1] [--rounds 5] [--reps 5]
       [--batch decoder_infer,encoder_cls,cnn_train,bilstm] [--seq decoder_infer,encoder_cls] [--no-select]
Bounded: about 1-2 minutes per row on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore")

SEQ_AT = {"decoder_infer": 48, "transformer_train": 48}  # GPT-2's default 64 equals its hidden size (still fine)


def _alternate(fns: dict, rounds: int, reps: int) -> dict[str, list[float]]:
    """Each function's median time per round, the functions taking turns (one call each first as warm-up)."""
    from benchmint.replay.compare import _median_time

    for fn in fns.values():
        fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            out[k].append(_median_time(fn, reps))
    return out


def _scale_row(name: str, kind: str, tmp: Path, args) -> dict:
    from benchmint.models.workloads import build
    from benchmint.replay import gaps_file
    from benchmint.replay.api import replay_trace
    from benchmint.replay.compare import _runner
    from benchmint.trace.capture import capture_steps

    seq = SEQ_AT.get(name)
    w = build(name, seq=seq)
    b, s = w.meta.get("batch"), w.meta.get("seq", w.meta.get("src"))
    cap = tmp / f"{name}-{kind}"
    capture_steps(w.step, cap, warmup=10, measure=10, record=1, model=w.model)
    # the unscaled replay settles its gaps once; the scaled replay spends exactly those (--gaps-from), as a
    # scaled replay keeps its unscaled replay's gaps: two separate calibrations would put their own noise
    # into the scaling error
    res0 = replay_trace(cap, iters=10, warmup=2)
    gaps = gaps_file.write(tmp / f"{name}-{kind}-gaps.json", res0.result, res0.gaps_ns, len(res0.plan.steps))
    res = replay_trace(cap, scale=(f"{kind}=2",), iters=10, warmup=2, gaps_from=str(gaps))
    real = build(name, batch=2 * b, seq=seq) if kind == "batch" else build(name, seq=2 * s)
    # four sides in the same rounds: the real model at 2B and at B, the scaled and the unscaled replay; the
    # gaps of both replays aim at capture.json's step, measured during the capture under another load than the
    # rounds', so the scaled replay against the real 2B carries that drift; the unscaled replay against the
    # real B carries the same, and their quotient (scaling error) is the scaling's own
    t = _alternate({"real": real.step, "real_b": w.step, "scaled": _runner(res), "unscaled": _runner(res0)},
                   args.rounds, args.reps)
    med = statistics.median
    err = med(x / o - 1 for x, o in zip(t["scaled"], t["real"], strict=True))
    base = med(x / o - 1 for x, o in zip(t["unscaled"], t["real_b"], strict=True))
    own = med((x / o) / (u / ob) - 1 for x, o, u, ob in zip(t["scaled"], t["real"], t["unscaled"], t["real_b"],
                                                             strict=True))
    sc = res.result["scale"]
    rec, to = sc["recorded"][kind], sc["scaled"][kind]
    return {"row": f"{name} {kind}=2", "from": f"{kind} {'/'.join(map(str, rec)) if isinstance(rec, list) else rec}",
            "to": "/".join(f"{x:g}" for x in to) if isinstance(to, list) else f"{to:g}",
            "real_s": med(t["real"]), "replay_s": med(t["scaled"]), "error": err, "unscaled_s": med(t["unscaled"]),
            "coverage": res.result["coverage"], "rewritten": sc["size_arguments_rewritten"], "base_error": base,
            "scaling_error": own, "real_growth": med(t["real"]) / med(t["real_b"]),
            "replay_growth": med(t["scaled"]) / med(t["unscaled"]), "load": os.getloadavg()[0]}


class _Scope:
    """A record_function scope around a module's forward (what a capture with module scopes records)."""

    def __init__(self, module, name: str):
        import torch

        self.enter = torch.ops.profiler._record_function_enter_new
        self.exit = torch.ops.profiler._record_function_exit._RecordFunction
        self.handle = None
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)
        self.name = name

    def _pre(self, *_a):
        self.handle = self.enter(self.name, None)

    def _post(self, *_a):
        if self.handle is not None:
            self.exit(self.handle)
            self.handle = None


def _select_row(name: str, spec: str, tmp: Path, args) -> dict:
    from benchmint.models.workloads import build
    from benchmint.replay.api import replay_trace
    from benchmint.replay.compare import compare_with_original
    from benchmint.trace.capture import capture_steps

    w = build(name, seq=SEQ_AT.get(name))
    if spec.startswith("scope:"):
        _Scope(w.model.transformer.h[0], spec.split(":", 1)[1])
    cap = tmp / f"{name}-select"
    # three recorded steps: the share is their median (one step's preemption spike moves a layer's share)
    capture_steps(w.step, cap, warmup=10, measure=10, record=3, model=w.model)
    res = replay_trace(cap, select=spec, iters=10, warmup=2)
    whole = replay_trace(cap, iters=10, warmup=2)  # the same capture unselected: the replay's own error
    sel = res.result["selection"]
    cmp = compare_with_original(w.step, {"sel": res, "whole": whole}, rounds=args.rounds, reps=args.reps,
                                ops_alone=False)
    share = sel["share_of_step"]
    ratio = cmp["replays"]["sel"]["error"] + 1  # median over rounds of selection replay / whole original step
    whole_err = cmp["replays"]["whole"]["error"]
    # the selection's gaps aim at share x capture.json's step time, measured during the capture, a minute or
    # more before these rounds and under another load: how far that figure is from the live original in the
    # rounds (drift) is the machine's, not the selection's; the selection against its own aim is the rest
    cap_s = sel["original_step_time_s"]
    drift = cap_s / cmp["original_s"] - 1 if cap_s else None
    own = cmp["replays"]["sel"]["replay_s"] / (cap_s * share) - 1 if cap_s and share else None
    # the selection against the whole step replayed from the same capture, round by round: both aim at the same
    # capture.json step, so its drift from the live original cancels; what is left is the selection's own part
    vs_whole = (statistics.median(s / w for s, w in zip(cmp["replays"]["sel"]["rounds_s"],
                                                          cmp["replays"]["whole"]["rounds_s"], strict=True)) / share - 1
                if share else None)
    return {"row": f"{name} --select {spec}", "ops": f"{sel['ops_selected']}/{sel['ops_in_step']}",
            "share": share, "shares": sel.get("share_per_recorded_step") or [share],
            "original_s": cmp["original_s"], "replay_s": cmp["replays"]["sel"]["replay_s"],
            "replay_share": ratio, "error": ratio / share - 1 if share else None, "whole_error": whole_err,
            "drift": drift, "own_error": own, "vs_whole": vs_whole, "load": os.getloadavg()[0],
            "settled_error": res.result["error"]}  # the replay's own timed run against its aim, right after settling


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (real step, replay)")
    ap.add_argument("--reps", type=int, default=5, help="iterations per round; the round takes their median")
    ap.add_argument("--batch", default="decoder_infer,encoder_cls,cnn_train,bilstm", help="workloads for batch=2")
    ap.add_argument("--seq", default="decoder_infer,encoder_cls", help="workloads for seq=2")
    ap.add_argument("--no-select", action="store_true", help="leave out the --select rows")
    args = ap.parse_args()
    from benchmint.replay.allocator import settle_malloc

    # the original's process settles glibc's thresholds before the captures, as every replay does: both sides
    # time under the same allocator (BENCHMINT_REPLAY_MALLOC=default leaves both alone)
    steady = not settle_malloc().startswith("default")

    import torch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="benchmint-adapt-"))
    rows, sels = [], []
    try:
        for kind, names in (("batch", args.batch), ("seq", args.seq)):
            for name in [n for n in names.split(",") if n]:
                try:
                    rows.append(_scale_row(name, kind, tmp, args))
                except Exception as e:  # noqa: BLE001 - a refusal is a result too
                    rows.append({"row": f"{name} {kind}=2", "refused": f"{type(e).__name__}: {e}"})
                print(f"  {rows[-1]}", file=sys.stderr, flush=True)
        if not args.no_select:
            for name, spec in (("decoder_infer", "scope:layer.0"), ("transformer_train", "phase:optimizer")):
                sels.append(_select_row(name, spec, tmp, args))
                print(f"  {sels[-1]}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nscaled replays vs the real model at the scaled size, CPU, {args.threads} thread(s), {args.rounds} "
          f"alternating rounds x {args.reps} iterations (median), malloc {'steady' if steady else 'default'}")
    print("(error: scaled replay / real model at the scaled size - 1; unscaled error: the unscaled replay / the real "
          "model at the captured size - 1, same rounds; scaling error: the quotient of the two per round, what the "
          "scaling adds to the replay's own error; growth: time at the scaled size / at the captured size)")
    hdr = (f"{'scale':24s} {'recorded':>10s} {'scaled':>7s} {'real s':>9s} {'replay s':>9s} {'error':>7s} "
           f"{'unscaled error':>14s} {'scaling error':>13s} {'real growth':>11s} {'replay growth':>13s} "
           f"{'coverage':>8s} {'sizes rewritten':>15s} {'load':>5s}")
    print(hdr)
    print("-" * len(hdr))
    errs, owns = [], []
    for x in rows:
        if "refused" in x:
            print(f"{x['row']:24s} refused: {x['refused']}")
            continue
        errs.append(abs(x["error"]))
        owns.append(abs(x["scaling_error"]))
        print(f"{x['row']:24s} {x['from']:>10s} {x['to']:>7s} {x['real_s']:9.6f} {x['replay_s']:9.6f} "
              f"{x['error'] * 100:+6.1f}% {x['base_error'] * 100:+13.1f}% {x['scaling_error'] * 100:+12.1f}% "
              f"{x['real_growth']:11.2f} {x['replay_growth']:13.2f} {x['coverage']:8.3f} {x['rewritten']:15d} "
              f"{x['load']:5.1f}")
    if errs:
        for what, xs in (("|error|", errs), ("|scaling error|", owns)):
            print(f"{what}: median {statistics.median(xs) * 100:.1f}%, max {max(xs) * 100:.1f}%, within 10%: "
                  f"{sum(e <= 0.10 for e in xs)}/{len(xs)} (targets: each <= 10%, median <= 5%)")
    if sels:
        print("\nselections vs the share of the original step its Kineto trace gives them")
        print("(share: median over the recorded steps; error: replay / live original / share - 1, the original timed "
              "alternately in the same rounds; drift: capture.json's step time, which the gaps aim at, against the "
              "live original in those rounds; vs aim: the selection's replay / (share x capture.json's step) - 1; "
              "whole-step error: the same capture replayed unselected against the live original, same rounds; share of the "
              "whole replay: median over rounds of selection / whole replay, over the share - 1 (the capture's drift "
              "cancels: the selection's own error); own run vs "
              "aim: the replay's own timed iterations, right after its gaps were settled, against its aim)")
        hdr = (f"{'selection':44s} {'ops':>8s} {'share':>7s} {'shares per step':>21s} {'original s':>11s} "
               f"{'replay s':>10s} {'replay/original':>15s} {'error':>7s} {'drift':>7s} {'vs aim':>7s} "
               f"{'whole-step error':>16s} {'share of whole replay':>21s} {'own run vs aim':>14s} {'load':>5s}")
        print(hdr)
        print("-" * len(hdr))

        def pc(v):
            return f"{v * 100:+6.1f}%" if v is not None else "     -"

        for x in sels:
            shares = "/".join(f"{v:.3f}" for v in x["shares"])
            print(f"{x['row']:44s} {x['ops']:>8s} {x['share']:7.3f} {shares:>21s} {x['original_s']:11.6f} "
                  f"{x['replay_s']:10.6f} {x['replay_share']:15.3f} {pc(x['error'])} {pc(x['drift'])} "
                  f"{pc(x['own_error'])} {pc(x['whole_error']):>16s} {pc(x['vs_whole']):>21s} {pc(x['settled_error']):>14s} {x['load']:5.1f}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} / {os.getloadavg()[1]:.1f} / {os.getloadavg()[2]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

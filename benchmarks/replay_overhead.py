"""The replayer's own cost per op: a replayed iteration vs the same op calls made directly, same run.

A step of many tiny ops (elementwise ops, views, a small matmul, an in-place update on 1-16 element tensors)
is captured and replayed with no gaps. The same ops are also called straight through their
``torch.ops`` overloads with pre-bound arguments in a plain Python loop (what any replayer must at least pay),
and as ordinary eager PyTorch code (the original). Measured alternating, medians over rounds.

replayer overhead per op = (replayed iteration - original eager step) / ops, alternating in one run; the
replay calls torch's own C++-parsed bindings (torch.add, Tensor.add_) where they agree with the recorded
overload, which is why it can be cheaper than generic torch.ops overload calls. Target: <= 3 us.

Usage: python benchmarks/replay_overhead.py [--ops-per-step 400] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings

warnings.filterwarnings("ignore")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops-per-step", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()

    import torch

    from benchmint.core import clock
    from benchmint.replay.plan import build_plan
    from benchmint.replay.source import view_from_trace
    from benchmint.trace import load
    from benchmint.trace.capture import capture_steps

    torch.set_num_threads(1)
    x0 = torch.randn(4, 4)
    w = torch.randn(4, 4)
    acc = torch.zeros(16)
    n_blocks = max(1, args.ops_per_step // 9)

    def step() -> None:
        with torch.inference_mode():
            x = x0
            for _ in range(n_blocks):
                y = torch.add(x, 1.0)
                y = torch.mul(y, 0.5)
                z = y.view(16)
                acc.add_(z)
                y = torch.relu(y)
                y = torch.mm(y, w)
                y = torch.tanh(y)
                x = y.t().t()

    with tempfile.TemporaryDirectory() as tmp:
        capture_steps(step, tmp, warmup=2, measure=5, record=1)
        view = view_from_trace(load(f"{tmp}/et.json"))
    plan = build_plan(view)
    n = len(plan.replayed)
    fn = plan.compile()

    # the same op overloads called directly with pre-bound tensors: the floor for any op-by-op replayer
    bound = []
    with torch.inference_mode():
        xb = x0.clone()
        for _ in range(n_blocks):
            bound += [(torch.ops.aten.add.Tensor._op, (xb, 1.0)), (torch.ops.aten.mul.Tensor._op, (xb, 0.5)),
                      (torch.ops.aten.view.default._op, (xb, [16])), (torch.ops.aten.add_.Tensor._op, (acc, acc)),
                      (torch.ops.aten.relu.default._op, (xb,)), (torch.ops.aten.mm.default._op, (xb, w)),
                      (torch.ops.aten.tanh.default._op, (xb,)), (torch.ops.aten.t.default._op, (xb,)),
                      (torch.ops.aten.t.default._op, (xb,))]

    def direct() -> None:
        with torch.inference_mode():
            for f, a in bound:
                f(*a)

    def replay() -> None:
        with torch.inference_mode():
            fn(plan.registers())

    def med(f) -> float:
        xs = []
        for _ in range(args.reps):
            t0 = clock.now_ns()
            f()
            xs.append((clock.now_ns() - t0) / 1e9)
        return statistics.median(xs)

    for f in (step, direct, replay):
        f()
    o, d, r = [], [], []
    for _ in range(args.rounds):
        o.append(med(step))
        d.append(med(direct))
        r.append(med(replay))
    nd = len(bound)
    per_replay = statistics.median(r) / n
    per_direct = statistics.median(d) / nd
    per_orig = statistics.median(o) / n
    overhead = statistics.median((ri - oi) / n for ri, oi in zip(r, o, strict=True))
    vs_direct = statistics.median((ri / n - di / nd) for ri, di in zip(r, d, strict=True))
    print(f"tiny-op step: {n} top-level ops replayed ({len(plan.steps)} in the trace), 1 thread, "
          f"{args.rounds} alternating rounds x {args.reps} iterations")
    print(f"  original eager step      {per_orig * 1e6:7.2f} us/op")
    print(f"  direct overload calls    {per_direct * 1e6:7.2f} us/op  (same ops, pre-bound arguments)")
    print(f"  benchmint replay         {per_replay * 1e6:7.2f} us/op")
    print(f"replayer overhead: {overhead * 1e6:.2f} us per op over the original eager calls "
          f"({vs_direct * 1e6:+.2f} us vs direct torch.ops overload calls); target <= 3 us; "
          f"plan took {plan.plan_time_s:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

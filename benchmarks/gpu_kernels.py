"""GPU kernel time of a captured step against its replay's, kernel by kernel (for a machine with a GPU).

On an H200 the replay of a training step took the original's time (+2.4%) while NVML saw the GPU busy 5% of
the window against the original's 27.5%, and drawing 144 W against 195 W (docs/replay.md, "On a GPU"). This
says where: the kernels of the capture's recorded step (its kineto.json) and of the replay's iterations under
the same profiler, summed per kernel name, per step.

    python benchmarks/gpu_kernels.py CAPTURE_DIR [--device cuda] [--iters 5] [--top 15]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path


def kernel_time(kineto_json: str | os.PathLike) -> dict[str, float]:
    """Seconds per kernel name in a Kineto trace: its device activity (kernels, memcpy, memset) as
    benchmint's Kineto loader reads it."""
    from benchmint.trace.kineto import load_kineto

    out: dict[str, float] = defaultdict(float)
    for e in load_kineto(kineto_json).device:
        out[e.name] += e.dur_us * 1e-6
    return dict(out)


def replay_kernels(cap: Path, device: str, iters: int) -> tuple[dict[str, float], int]:
    """Seconds per kernel name over ``iters`` replayed iterations (after three unrecorded ones)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmint.replay.plan import build_plan
    from benchmint.replay.source import view_from_trace
    from benchmint.trace.load import load

    view = view_from_trace(load(cap / "et.json"), device=device)
    plan = build_plan(view, device)
    fn = plan.compile()
    regs = plan.registers()
    sync = torch.cuda.synchronize if plan.device.type == "cuda" else (lambda: None)
    with plan.grad_context():
        for _ in range(3):
            fn(regs)
        sync()
        with tempfile.TemporaryDirectory() as tmp:
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(iters):
                    fn(regs)
                sync()
            path = Path(tmp) / "replay_kineto.json"
            prof.export_chrome_trace(str(path))
            return kernel_time(path), iters


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture", type=Path, help="a benchmint capture folder of a CUDA step (et.json, kineto.json)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    cap_json = a.capture / "capture.json"
    steps = int(json.loads(cap_json.read_text()).get("recorded_steps") or 1) if cap_json.exists() else 1
    orig = {k: v / steps for k, v in kernel_time(a.capture / "kineto.json").items()}
    rep, n = replay_kernels(a.capture, a.device, a.iters)
    rep = {k: v / n for k, v in rep.items()}
    to, tr = sum(orig.values()), sum(rep.values())
    print(f"GPU time per step: original {to * 1e3:.3f} ms ({len(orig)} kernel names), "
          f"replay {tr * 1e3:.3f} ms ({len(rep)}), ratio {tr / to if to else float('nan'):.3f}")
    names = sorted(set(orig) | set(rep), key=lambda k: -abs(rep.get(k, 0.0) - orig.get(k, 0.0)))
    print(f"{'original ms':>12} {'replay ms':>10}  kernel")
    for k in names[:a.top]:
        print(f"{orig.get(k, 0.0) * 1e3:12.3f} {rep.get(k, 0.0) * 1e3:10.3f}  {k[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

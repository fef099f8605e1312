"""Does an op's time depend on the values it reads? Each probed op of a replay plan is timed un-observed on its
synthetic inputs and on zeros of the same shapes, in alternating iterations.

The trace-only estimate (:func:`benchmint.replay.fidelity.estimate_original`) takes an op's longer recorded
duration in the original as the original's own work only where the values can make it so. Adam's ``sqrt``
over an embedding table's second-moment state (92% zeros: rows no lookup touched) took 1.34 ms live against
0.27 ms over random values, its ``div`` 1.7 ms against 0.4 ms: that difference is the original's. GPT-2's
``lm_head`` linear came out 170 us slower in both recorded steps of a fresh process (fresh-page faults on its
output under the observers) and takes the same time on zeros: that one is the recording's.

Zeros are the probe because they are what real steps hold where synthetic data holds noise: optimizer states
of rows or experts never touched, activations after a ReLU, masked positions. Only floating-point inputs are
zeroed (indices and masks would change the work's shape, not its speed). The probe calls each op once more,
right before its step, on zeros of its inputs or, in the other iterations, on copies of them (new tensors both:
the plan's are never written); the step then runs as always. CPU only: on a GPU the host clock around
a call measures its launch.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from typing import Any

import torch

from benchmint.replay.plan import Plan
from benchmint.replay.tensors import all_refs

#: ops shorter than this un-observed are not probed: their time is too close to the clock's and the call's own
PROBE_MIN_S = 20e-6
#: ... nor ops whose tensors come to more than this: their zeros and copies would double what they hold (a
#: DLRM rank's embedding tables, 8 ranks on one host, were killed for memory)
PROBE_MAX_BYTES = 64 * 2**20
_REG = re.compile(r"R\[(\d+)\]")
_START, _END = -3, -4  # stamps around the probe's own call of an op (the plan's ids are >= 0, its gaps' -2)


def _floating(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex())


def _zeros_of(x: Any) -> Any:
    """Zeros of ``x``'s layout; where ``x`` requires grad, they do too, through a clone as :func:`_copy_of`'s
    copy (the probed op then records the same graph on both sides, and may still write into them)."""
    if _floating(x):
        z = torch.zeros_like(x)
        return z.requires_grad_().clone() if x.requires_grad else z
    return _copy_of(x)  # an in-place op on int counters: not the plan's


def _copy_of(x: Any) -> Any:
    return x.clone() if isinstance(x, torch.Tensor) else x


def _call_text(idx: int, line: str) -> str | None:
    """The call expression ``f{idx}(...)`` in a step's generated line (brackets balanced), or None."""
    start = line.find(f"f{idx}(")
    if start < 0:
        return None
    depth, quote = 0, ""
    for k in range(start, len(line)):
        ch = line[k]
        if quote:
            quote = "" if ch == quote and line[k - 1] != "\\" else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return line[start:k + 1]
    return None


def _probe_lines(idx: int, line: str, zeros: bool) -> list[str] | None:
    """Source placed before step ``idx``: a call of its op of its own, between two stamps, on zeros of its
    floating-point inputs (``zeros``) or on copies of them: new tensors of the same sizes on both sides, so
    that the two calls differ in the values alone (zeros made right before a call that allocates took the
    allocator's cached memory from it: a slice_backward on them ran 18x slower, on fresh pages). The step's
    own line then runs as always, so the registers (views of its outputs, in-place results) stay the plan's."""
    call = _call_text(idx, line)
    if call is None:
        return None
    regs = sorted({int(k) for k in _REG.findall(call)})
    if not regs:
        return None
    make = "_zeros_of" if zeros else "_copy_of"
    pre = [f"_z{k} = {make}(R[{k}])" for k in regs]
    call = _REG.sub(lambda m: f"_z{m.group(1)}", call)
    free = "del " + ", ".join(f"_z{k}" for k in regs)  # held to the iteration's end, they piled up
    # an op may refuse zeros (multinomial over zeroed probabilities): that op is left unprobed, not the rest
    guarded = ["try:", "    " + call, "except Exception:", f"    _refused.add({idx})"]
    return [*pre, f"_S.append(({_START}, _now()))", *guarded, f"_S.append(({_END}, _now()))", free]


def zero_input_ratios(plan: Plan, op_times: dict[int, float], steps: Iterable[int] | None = None,
                      iters: int = 4) -> dict[int, float]:
    """Per probed plan step: the median time of its op on zeros over its time on the plan's own inputs, both
    called by the probe right before the step (alternating iterations). ``op_times``: each step's un-observed
    time (:func:`benchmint.replay.fidelity.per_op_replay_times`): steps under ``PROBE_MIN_S`` are not probed;
    ``steps``: probe only these. An op that raises on zeros or on the copies (``multinomial`` over zeroed
    probabilities) gets no ratio; the others keep theirs. Empty when the plan runs on a GPU, when it is a rank
    of a multi-rank replay (its iterations run collectives: every rank would have to probe in step) or when an
    iteration fails otherwise (nothing is learned, nothing is assumed). The random-number state is as before."""
    if plan.device.type != "cpu" or plan.comm is not None:
        return {}
    wanted = set(steps) if steps is not None else None
    sides: dict[str, dict[int, list[str]]] = {"inputs": {}, "zeros": {}}
    for idx, line in plan.lines:
        if idx < 0 or op_times.get(idx, 0.0) < PROBE_MIN_S or (wanted is not None and idx not in wanted):
            continue
        if sum(r.numel * r.itemsize for r in all_refs(plan.steps[idx].op) if r.dtype is not None) > PROBE_MAX_BYTES:
            continue
        for name, ins in sides.items():
            lines = _probe_lines(idx, line, zeros=name == "zeros")
            if lines is not None:
                ins[idx] = lines
    if not sides["zeros"]:
        return {}
    fns = {name: plan.compile(inserts=ins) for name, ins in sides.items()}
    refused: set[int] = set()
    for fn in fns.values():
        fn.__globals__.update(_zeros_of=_zeros_of, _copy_of=_copy_of, _refused=refused)
    per: dict[str, list[list[float]]] = {name: [] for name in fns}
    try:
        with plan.grad_context(), torch.random.fork_rng(devices=[]):
            for it in range(iters + 1):
                for name, fn in fns.items():
                    stamps: list = fn.__globals__["_S"]
                    stamps.clear()
                    R = plan.registers()
                    fn(R)
                    del R
                    if it > 0:  # the first of each: allocations the others reuse
                        per[name].append([(b[1] - a[1]) / 1e9 for a, b in zip(stamps, stamps[1:], strict=False)
                                          if a[0] == _START and b[0] == _END])
    except Exception:  # noqa: BLE001 - an op that refuses zeros: nothing learned
        return {}
    order = sorted(sides["zeros"])
    out = {}
    for k, idx in enumerate(order):
        z = [run[k] for run in per["zeros"] if len(run) == len(order)]
        b = [run[k] for run in per["inputs"] if len(run) == len(order)]
        if idx not in refused and z and b and statistics.median(b) > 0:
            out[idx] = statistics.median(z) / statistics.median(b)
    return out

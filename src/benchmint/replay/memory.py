"""Before planning: how much memory the replay's tensors will take, from the trace alone.

Planning runs every op once and keeps the step's true inputs for the whole replay, so a trace recorded on a
large GPU can ask a small machine for more memory than it has; the kernel then kills the process with no
word. The estimate walks the recorded tensors in op order: a storage first met as an op's input is a true
input (held throughout), one first met as an output lives from that op to its last use. It is a floor, not a
ceiling: the process itself, the trace and allocator slack come on top (a CUDA ResNet trace estimated at
3.3 GiB ran at 5.4 GiB peak RSS on CPU here). Storages the replay allocates without filling (state that no
replayed op reads) count in full, though their pages may never become resident.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmint.core.errors import UserError
from benchmint.replay.tensors import all_refs
from benchmint.replay.types import TENSOR, TENSOR_LIST, TraceView, TRef

HEADROOM = 0.9  # the estimate may use at most this share of the available memory


def tensor_bytes(view: TraceView) -> dict[str, int]:
    """Bytes of the step's true inputs, the peak of the tensors its ops produce, and their sum."""
    need: dict[tuple, int] = {}
    first: dict[tuple, int] = {}
    last: dict[tuple, int] = {}
    produced: set[tuple] = set()
    sizes: dict[torch.dtype, int] = {}
    for i, op in enumerate(view.ops):
        outs = set()
        for a in op.outputs:
            refs = [a.value] if a.kind == TENSOR else (a.value if a.kind == TENSOR_LIST else [])
            outs.update((r.storage_id, r.dtype) for r in refs if isinstance(r, TRef) and r.dtype is not None)
        for r in all_refs(op):
            if r.dtype is None:
                continue
            k = (r.storage_id, r.dtype)
            es = sizes.get(r.dtype)
            if es is None:
                es = sizes[r.dtype] = torch.empty(0, dtype=r.dtype).element_size()
            need[k] = max(need.get(k, 0), (r.offset + r.extent()) * es)
            if k not in first:
                first[k] = i
                if k in outs:
                    produced.add(k)
            last[k] = i
    delta = [0] * (len(view.ops) + 2)
    inputs = 0
    for k, b in need.items():
        if k in produced:
            delta[first[k]] += b
            delta[last[k] + 1] -= b
        else:
            inputs += b
    cur = peak = 0
    for d in delta:
        cur += d
        peak = max(peak, cur)
    return {"inputs_bytes": inputs, "produced_peak_bytes": peak, "total_bytes": inputs + peak}


def available_bytes(device: torch.device) -> int | None:
    """Memory free for tensors on ``device`` now (None when unknown)."""
    try:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return int(free)
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return None


def check_fits(est: dict[str, Any], device: torch.device, what: str) -> int | None:
    """Raise a one-line error when the estimate does not fit in the memory available on ``device``; returns
    the available bytes (None when unknown)."""
    avail = available_bytes(device)
    if avail is not None and est["total_bytes"] > HEADROOM * avail:
        gib = 2**30
        raise UserError(
            f"{what}: its tensors need at least {est['total_bytes'] / gib:.1f} GiB (inputs "
            f"{est['inputs_bytes'] / gib:.1f} GiB, produced tensors at their peak {est['produced_peak_bytes'] / gib:.1f} "
            f"GiB) and {device.type} has {avail / gib:.1f} GiB available; replay it where there is more memory, or "
            "pass --no-memory-check to try anyway")
    return avail

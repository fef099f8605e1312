"""Before planning: how much memory the replay's tensors will take, from the trace alone.

Planning runs every op once and keeps the step's true inputs for the whole replay, so a trace recorded on a
large GPU can ask a small machine for more memory than it has; the kernel then kills the process with no
word. The estimate walks the recorded tensors in op order: a storage first met as an op's input is a true
input (held throughout), one an op writes lives from that op to the last read of a tensor on it. It is an
estimate, not a bound: the process itself, the trace and allocator slack come on top, and storages the replay
allocates without filling (state that no replayed op reads) count in full though their pages may never become
resident (PARAM's DLRM: 4.8 GiB estimated, 2.7 GiB peak RSS).
"""

from __future__ import annotations

from typing import Any

import torch

from benchmint.core.errors import UserError
from benchmint.replay.tensors import arg_refs, last_reads
from benchmint.replay.types import TraceView

HEADROOM = 0.9  # the estimate may use at most this share of the available memory


def tensor_bytes(view: TraceView) -> dict[str, int]:
    """Bytes of the step's true inputs, the peak of the tensors its ops produce, and their sum.

    A recorded storage id is an allocator address, which the original reused once a tensor was freed: a
    storage an op writes to after every tensor seen on it was read for the last time is a new storage."""
    last_read = last_reads(view.ops)
    segs: list[list] = []  # [bytes, first op, last op, produced]
    cur: dict[tuple, list] = {}
    for i, op in enumerate(view.ops):
        for produced, args in ((False, op.inputs), (True, op.outputs)):
            for a in args:
                for r in arg_refs(a):
                    if r.dtype is None:
                        continue
                    sk = (r.storage_id, r.dtype)
                    seg = cur.get(sk)
                    if seg is None or (seg[3] and seg[2] < i):  # unseen, or its tensors are all dead
                        seg = cur[sk] = [0, i, i, produced]
                        segs.append(seg)
                    seg[0] = max(seg[0], (r.offset + r.extent()) * r.itemsize)
                    seg[2] = max(seg[2], last_read.get(r.key, i) if produced else i)
    delta = [0] * (len(view.ops) + 2)
    inputs = 0
    for b, first, last, produced in segs:
        if produced:
            delta[first] += b
            delta[last + 1] -= b
        else:
            inputs += b
    cur_b = peak = 0
    for d in delta:
        cur_b += d
        peak = max(peak, cur_b)
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
            f"{what}: its tensors need about {est['total_bytes'] / gib:.1f} GiB (inputs "
            f"{est['inputs_bytes'] / gib:.1f} GiB, produced tensors at their peak {est['produced_peak_bytes'] / gib:.1f} "
            f"GiB) and {device.type} has {avail / gib:.1f} GiB available; replay it where there is more memory, or "
            "pass --no-memory-check to try anyway")
    return avail

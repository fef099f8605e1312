"""Before planning: how much memory the replay's tensors will take, from the trace alone.

Planning runs every op once and keeps the step's true inputs for the whole replay, so a trace recorded on a
large GPU can ask a small machine for more memory than it has; the kernel then kills the process with no
word. The estimate walks the recorded tensors in op order: a storage first met as an op's input is a true
input (held throughout), one an op writes lives from that op to the last read of a tensor on it. It is an
estimate, not a bound: the process itself, the trace and allocator slack come on top. Storages the replay
allocates without filling (state that no replayed op reads) are counted apart: on the host their pages never
become resident, so the check leaves them out (PARAM's DLRM: 4.8 GiB of tensors, 2.4 GiB of them filled, 2.7
GiB peak RSS per rank).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmint.core.errors import UserError
from benchmint.replay.ops import OpUnavailable, unresolved
from benchmint.replay.substitutes import UNREAD
from benchmint.replay.tensors import arg_refs, last_reads
from benchmint.replay.types import OpRec, TraceView, TRef

HEADROOM = 0.9  # the estimate may use at most this share of the available memory


def tensor_bytes(view: TraceView) -> dict[str, int]:
    """Bytes of the step's true inputs, the peak of the tensors its ops produce, and their sum.

    A recorded storage id is an allocator address, which the original reused once a tensor was freed: a
    storage an op writes to after every tensor seen on it was read for the last time is a new storage."""
    last_read = last_reads(view.ops)
    segs: list[list] = []  # [bytes, first op, last op, produced, read only through arguments never looked at]
    cur: dict[tuple, list] = {}
    for i, op in enumerate(view.ops):
        unread = _unread_positions(op)
        for produced, args in ((False, op.inputs), (True, op.outputs)):
            for pos, a in enumerate(args):
                for r in arg_refs(a):
                    if r.dtype is None:
                        continue
                    sk = (r.storage_id, r.dtype)
                    seg = cur.get(sk)
                    if seg is None or (seg[3] and seg[2] < i):  # unseen, or its tensors are all dead
                        seg = cur[sk] = [0, i, i, produced, True]
                        segs.append(seg)
                    seg[0] = max(seg[0], (r.offset + r.extent()) * r.itemsize)
                    seg[2] = max(seg[2], last_read.get(r.key, i) if produced else i)
                    seg[4] = seg[4] and not produced and pos in unread
    delta = [0] * (len(view.ops) + 2)
    inputs = unfilled = 0
    for b, first, last, produced, never_read in segs:
        if produced:
            delta[first] += b
            delta[last + 1] -= b
        else:
            inputs += b
            unfilled += b if never_read else 0
    cur_b = peak = 0
    for d in delta:
        cur_b += d
        peak = max(peak, cur_b)
    return {"inputs_bytes": inputs, "produced_peak_bytes": peak, "total_bytes": inputs + peak,
            "unfilled_inputs_bytes": unfilled}


MAX_DIMS = 64  # more dimensions than torch allows a tensor
MAX_TENSOR_BYTES = 1 << 56  # 64 PiB: more than any device holds


def check_shapes(view: TraceView, what: str) -> None:
    """Raise a one-line error naming the op and the tensor when a recorded tensor cannot exist (a negative
    size, numel or offset, too many dimensions, more bytes than any device holds): checked before anything is
    allocated, with or without the memory check."""
    for op in view.ops:
        for side, args in (("input", op.inputs), ("output", op.outputs)):
            for a in args:
                for r in arg_refs(a):
                    problem = _impossible(r)
                    if problem:
                        shape = "[" + ", ".join(map(str, r.shape[:6])) + (", ..." if len(r.shape) > 6 else "") + "]"
                        raise UserError(f"{what}: node {op.node_id} ({op.name}): an {side} tensor of shape {shape:.80} "
                                        f"{problem}; the trace is corrupt or was edited, re-record it")


def _impossible(r: TRef) -> str | None:
    if len(r.shape) > MAX_DIMS:
        return f"has {len(r.shape)} dimensions (torch allows {MAX_DIMS})"
    if any(d < 0 for d in r.shape):
        return "has a negative size"
    if r.numel < 0 or r.offset < 0 or r.itemsize < 0:
        return "has a negative numel, offset or element size"
    if r.strides is not None and any(x < 0 for x in r.strides):
        return "has a negative stride"
    if r.dtype is not None and (r.offset + r.extent()) * max(r.itemsize, 1) > MAX_TENSOR_BYTES:
        return f"would take more than {MAX_TENSOR_BYTES >> 50} PiB"
    return None


def _unread_positions(op: OpRec) -> frozenset[int]:
    """Positions of the arguments whose contents the replay's stand-in for ``op`` never reads (an embedding
    optimizer's state): their storages are allocated and never filled."""
    names = UNREAD.get(op.name)
    if not names or not op.schema:
        return frozenset()
    try:
        args = unresolved(op.schema).args
    except OpUnavailable:
        return frozenset()
    return frozenset(i for i, a in enumerate(args) if a.name in names)


def resident_bytes(est: dict[str, Any], device: torch.device) -> int:
    """The share of the estimate that will take memory on ``device``: on the host, storages allocated and never
    filled stay virtual (untouched pages are not resident); a GPU allocation is committed in full."""
    if device.type == "cuda":
        return est["total_bytes"]
    return est["total_bytes"] - est.get("unfilled_inputs_bytes", 0)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == key and v.strip().isdigit():
                return int(v)
    except OSError:
        pass
    return 0


def _memory_groups(root: Path, proc: Path) -> list[tuple[Path, bool]]:
    """This process's memory control group and every group above it, as (folder, cgroup v1), innermost first,
    from ``/proc/self/cgroup``; the hierarchies' roots when that cannot be read."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        lines = ["0::/", "0:memory:/"]
    out: list[tuple[Path, bool]] = []
    for line in lines:
        _, ctrls, path = (line.split(":", 2) + ["", ""])[:3]
        v1 = "memory" in ctrls.split(",")
        if ctrls and not v1:
            continue
        base = root / "memory" if v1 else root
        d = base / path.strip().lstrip("/")
        while True:
            out.append((d, v1))
            if d == base or base not in d.parents:
                break
            d = d.parent
    return out


def cgroup_room(root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self/cgroup")) -> int | None:
    """Memory this process's control groups may still take (a limit less its working set: usage without the
    inactive page cache, which the kernel reclaims first; the tightest over the group and those above it),
    None when none has a limit. A container's or a batch job's limit is invisible to the machine-wide
    ``available`` figure, and exceeding it gets the process killed."""
    rooms = []
    for d, v1 in _memory_groups(root, proc):
        if v1:
            limit, usage = _read_int(d / "memory.limit_in_bytes"), _read_int(d / "memory.usage_in_bytes")
            inactive = _stat(d / "memory.stat", "total_inactive_file")
        else:
            limit, usage = _read_int(d / "memory.max"), _read_int(d / "memory.current")
            inactive = _stat(d / "memory.stat", "inactive_file")
        if limit is None or limit >= 1 << 60 or usage is None:  # v1 writes a huge number for no limit
            continue
        rooms.append(max(0, limit - max(0, usage - inactive)))
    return min(rooms) if rooms else None


def available_bytes(device: torch.device) -> int | None:
    """Memory free for tensors on ``device`` now: on the host, the machine's available memory or what the
    process's control group (a container's limit) still allows, the smaller (None when unknown)."""
    try:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return int(free)
        import psutil

        avail = int(psutil.virtual_memory().available)
    except Exception:
        return None
    room = cgroup_room()
    return avail if room is None else min(avail, room)


def check_fits(est: dict[str, Any], device: torch.device, what: str, ranks: int = 1) -> int | None:
    """Raise a one-line error when the estimate does not fit in the memory available on ``device``; returns
    the available bytes (None when unknown). ``ranks``: the estimate is the sum over that many rank processes
    sharing the device (the host's memory, for ranks replayed on the CPU)."""
    avail = available_bytes(device)
    need = resident_bytes(est, device)
    if avail is not None and need > HEADROOM * avail:
        gib = 2**30
        who = f"its {ranks} ranks' tensors together" if ranks > 1 else "its tensors"
        inputs = est["inputs_bytes"] - (est["total_bytes"] - need)
        raise UserError(
            f"{what}: {who} need about {need / gib:.1f} GiB (inputs {inputs / gib:.1f} GiB, produced tensors at "
            f"their peak {est['produced_peak_bytes'] / gib:.1f} GiB) and {device.type} has {avail / gib:.1f} GiB "
            "available; replay it where there is more memory, or pass --no-memory-check to try anyway")
    return avail

"""The ranks' collective sequence check: what each rank's recorded collectives are (name, tensor sizes, split
sizes, peers) and why the sequences of all ranks cannot be replayed together (a mismatch is an error before
anything runs, not a hang)."""

from __future__ import annotations

from typing import Any

from benchmint.replay.types import LOCAL_COLLECTIVES, TENSOR, TENSOR_LIST, VALUE, OpRec, TRef, is_collective


def _arg_names(op: OpRec) -> list[str]:
    from benchmint.replay.ops import OpUnavailable, unresolved

    try:
        return [a.name for a in unresolved(op.schema).args]
    except OpUnavailable:
        return [f"arg{i}" for i in range(len(op.inputs))]


def _refs(a: Any) -> list[TRef]:
    if a.kind == TENSOR and isinstance(a.value, TRef):
        return [a.value]
    if a.kind == TENSOR_LIST:
        return [r for r in a.value if isinstance(r, TRef)]
    return []


def signature(op: OpRec) -> dict[str, Any]:
    """The recorded collective as JSON: op, each tensor argument's (numel, dtype), split sizes; for
    point-to-point ops also the peer rank and the tag."""
    names = _arg_names(op)
    tensors, values = [], {}
    for n, a in zip(names, op.inputs, strict=False):
        for r in _refs(a):
            tensors.append([n, r.numel, str(r.dtype).replace("torch.", "")])
        if a.kind == VALUE and n.endswith("split_sizes"):
            values[n] = list(a.value or [])
        if a.kind == VALUE and n in ("dstRank", "srcRank", "dst", "src"):
            values["peer"] = a.value
        if a.kind == VALUE and n == "tag":
            values["tag"] = a.value
    return {"op": op.name, "tensors": tensors, **values}


def _chunks(numel: int, splits: list[int], world: int, rows: int) -> list[int] | None:
    """Elements exchanged with each peer (splits are in rows of dim 0; empty: equal split)."""
    per_row = numel // rows if rows else 0
    if splits:
        return [s * per_row for s in splits] if len(splits) == world else None
    return [numel // world] * world if numel % world == 0 else None


def _p2p_kind(sig: dict[str, Any]) -> str | None:
    base = sig["op"].partition("::")[2]
    return base if base in ("send", "recv_") else None


def disagreement(seqs: list[list[dict[str, Any]]]) -> str | None:
    """Why the ranks' collective sequences (one list of :func:`signature` per rank, in order) cannot be
    replayed together, or None when they fit: the same collectives in the same order, the same tensor sizes
    (all-reduce, broadcast, all-gather ...) or, for all-to-all, what each rank sends to a peer is what that
    peer expects from it; and every send pairs with a receive (see :func:`_p2p_disagreement`)."""
    colls = [[c for c in s if _p2p_kind(c) is None] for s in seqs]
    return _collective_disagreement(colls) or _p2p_disagreement(seqs)


def _collective_disagreement(seqs: list[list[dict[str, Any]]]) -> str | None:
    world = len(seqs)
    n0 = len(seqs[0]) if seqs else 0
    for r, s in enumerate(seqs):
        if len(s) != n0:
            return (f"rank {r} issues {len(s)} collectives and rank 0 {n0}; the ranks would wait for each other "
                    "forever")
    for k in range(n0):
        col = [s[k] for s in seqs]
        head = f"collective #{k + 1} ({col[0]['op']})"
        for r, c in enumerate(col):
            if c["op"] != col[0]["op"]:
                return f"{head}: rank {r} issues {c['op']} there instead; the ranks' collectives do not match"
        dtypes = {t[2] for c in col for t in c["tensors"]}
        if len(dtypes) > 1:
            return f"{head}: the ranks' tensors have different dtypes ({', '.join(sorted(dtypes))})"
        if col[0]["op"].endswith("::alltoall_base_"):
            send, recv = [], []
            for c in col:
                numels = {t[0]: t[1] for t in c["tensors"]}
                rows = c.get("rows", {})
                if "output" not in numels or "input" not in numels:
                    return f"{head}: no output/input tensor recorded"
                recv.append(_chunks(numels["output"], c.get("output_split_sizes", []), world,
                                    rows.get("output") or numels["output"]))
                send.append(_chunks(numels["input"], c.get("input_split_sizes", []), world,
                                    rows.get("input") or numels["input"]))
            for r in range(world):
                if send[r] is None or recv[r] is None:
                    return f"{head}: rank {r}'s split sizes are not for {world} ranks"
            for r in range(world):
                for p in range(world):
                    if send[r][p] != recv[p][r]:  # type: ignore[index]
                        return (f"{head}: rank {r} sends {send[r][p]} elements to rank {p}, which expects "  # type: ignore[index]
                                f"{recv[p][r]}; the trace's ranks are not of one run")  # type: ignore[index]
        else:
            sizes = [[t[1] for t in c["tensors"]] for c in col]
            for r, s in enumerate(sizes):
                if s != sizes[0]:
                    return f"{head}: rank {r}'s tensors have {s} elements, rank 0's {sizes[0]}"
    return None


def _p2p_disagreement(seqs: list[list[dict[str, Any]]]) -> str | None:
    """Rank r's k-th send to rank p (with a tag) must meet p's k-th receive from r (with that tag): the same
    tensor sizes and dtypes, and between the same two collectives, since the replay issues point-to-point ops
    without blocking and waits for them before the next collective (or at the end of the iteration)."""
    world = len(seqs)
    ends: dict[str, dict[tuple[int, int, int], list[tuple[int, list]]]] = {"send": {}, "recv_": {}}
    for r, s in enumerate(seqs):
        after = 0  # collectives before this op
        for c in s:
            kind = _p2p_kind(c)
            if kind is None:
                after += 1
                continue
            peer = c.get("peer")
            if not isinstance(peer, int) or not 0 <= peer < world or peer == r:
                return f"rank {r}'s {c['op']} names peer rank {peer!r}, not another rank of {world}"
            tag = int(c.get("tag") or 0)
            key = (r, peer, tag) if kind == "send" else (peer, r, tag)
            ends[kind].setdefault(key, []).append((after, [(t[1], t[2]) for t in c["tensors"]]))
    for key in sorted(set(ends["send"]) | set(ends["recv_"])):
        src, dst, tag = key
        sends, recvs = ends["send"].get(key, []), ends["recv_"].get(key, [])
        tagged = f" (tag {tag})" if tag else ""
        if len(sends) != len(recvs):
            return (f"rank {src} sends {len(sends)} time(s) to rank {dst}{tagged} but rank {dst} receives "
                    f"{len(recvs)} time(s) from rank {src}; an unpaired send or receive would wait forever")
        for k, ((a_after, a), (b_after, b)) in enumerate(zip(sends, recvs, strict=True)):
            head = f"send #{k + 1} from rank {src} to rank {dst}{tagged}"
            if a != b:
                return (f"{head} carries {_fmt_tensors(a)}, rank {dst}'s matching receive expects "
                        f"{_fmt_tensors(b)}")
            if a_after != b_after:
                return (f"{head} follows collective #{a_after} on rank {src}, its matching receive collective "
                        f"#{b_after} on rank {dst}; the ranks would wait for each other")
    return None


def _fmt_tensors(ts: list) -> str:
    return ", ".join(f"{n} {d}" for n, d in ts) or "no tensor"


def _with_rows(op: OpRec, sig: dict[str, Any]) -> dict[str, Any]:
    """Add the dim-0 length of all-to-all tensors (split sizes count rows)."""
    if op.name.endswith("::alltoall_base_"):
        rows = {}
        for n, a in zip(_arg_names(op), op.inputs, strict=False):
            if a.kind == TENSOR and isinstance(a.value, TRef):
                rows[n] = a.value.shape[0] if a.value.shape else 1
        sig["rows"] = rows
    return sig


def sequence(ops: list[OpRec]) -> list[dict[str, Any]]:
    """The collective signatures of ``ops`` in order, point-to-point ops included (receives from any source,
    never replayed, and the local functional ops left out)."""
    return [_with_rows(o, signature(o)) for o in ops
            if is_collective(o.name) and o.name.split("::", 1)[1] not in LOCAL_COLLECTIVES | {"recv_any_source_"}]

"""Who this process is in a multi-rank replay, and which trace is its own.

A rank learns its place from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``); the one-host launcher of ``--ranks N`` sets the same
variables (:func:`launcher_env`), so both ways run one code path. A multi-rank trace is an archive of one trace
per rank (``rank0.json``, ``dlrm_eg_3.json``, ...) or a folder of one capture folder per rank (``rank0/``,
``rank1/``, ... as ``benchmint capture`` writes under torchrun); a single trace is replayed by every rank.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from benchmint.core.errors import UserError
from benchmint.trace.capture_file import missing_ranks
from benchmint.trace.load import archive_ranks

_RANK_DIR = re.compile(r"^rank(\d+)$")


@dataclass(frozen=True)
class RankEnv:
    rank: int
    world: int
    local_rank: int
    local_world: int
    master_addr: str
    master_port: int


def from_environ(environ: dict[str, str] | None = None) -> RankEnv | None:
    """The rank's place as torchrun set it, or None outside torchrun (no ``WORLD_SIZE`` and ``RANK``)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", rank))
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
        port = int(env.get("MASTER_PORT", "0"))
    except ValueError as e:
        raise UserError(f"the torchrun environment is not readable ({e}); start the replay with torchrun") from None
    if not 0 <= rank < world:
        raise UserError(f"RANK={rank} is not in 0..WORLD_SIZE-1 ({world}); start the replay with torchrun")
    if not env.get("MASTER_ADDR") or not port:
        raise UserError("RANK and WORLD_SIZE are set but MASTER_ADDR/MASTER_PORT are not; start the replay with "
                        "torchrun (or set all four)")
    return RankEnv(rank, world, local_rank, local_world, env["MASTER_ADDR"], port)


def rank_of_environ(environ: dict[str, str] | None = None) -> tuple[int, int] | None:
    """(RANK, WORLD_SIZE) as torchrun set them, or None (not set, or not numbers): what a process that needs
    no rendezvous (a capture) reads of its place."""
    env = os.environ if environ is None else environ
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    except (KeyError, ValueError):
        return None
    return (rank, world) if 0 <= rank < world else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the rendezvous of a one-host run, as torchrun --standalone)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launcher_env(rank: int, world: int, port: int) -> dict[str, str]:
    """The variables torchrun sets for local rank ``rank`` of a one-host run of ``world`` ranks."""
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
            "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def rank_folders(path: str | os.PathLike) -> list[int] | None:
    """The ranks of a folder holding one capture folder per rank (``rank0/``, ``rank1/``...), else None."""
    p = Path(path)
    if not p.is_dir():
        return None
    ranks = sorted(int(m.group(1)) for c in p.iterdir() if c.is_dir() and (m := _RANK_DIR.match(c.name)))
    return ranks or None


def trace_ranks(path: str | os.PathLike) -> list[int] | None:
    """The ranks a multi-rank trace holds (an archive of one trace per rank, or a folder of rank folders);
    None for a single trace. A folder whose ranks recorded a larger world than its rank folders is refused."""
    if not Path(path).is_dir():
        return archive_ranks(path)
    ranks = rank_folders(path)
    gone = missing_ranks(Path(path), ranks) if ranks else None
    if gone:
        raise UserError(gone)
    return ranks


def check_ranks(path: str | os.PathLike, have: list[int] | None, world: int, how: str) -> None:
    """Refuse a multi-rank trace whose ranks are not 0..``world``-1 (``how``: what set the world size)."""
    if have is None:
        return
    if len(have) != world:
        raise UserError(f"{path}: the trace has {len(have)} ranks and {how} {world}; they must be equal")
    if have != list(range(world)):
        raise UserError(f"{path}: the trace's ranks are {have}, not 0..{world - 1}")


def rank_trace(path: str | os.PathLike, kineto: str | os.PathLike | None, rank: int,
               have: list[int] | None) -> tuple[str, str | None, int | None]:
    """Rank ``rank``'s trace, Kineto trace and rank within an archive (None: the file holds one trace)."""
    p = Path(path)
    if have is not None and p.is_dir():
        return str(p / f"rank{rank}"), None, None
    return str(p), (str(kineto) if kineto else None), (rank if have is not None else None)

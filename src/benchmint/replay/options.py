"""The settings of a replay, in one typed object that travels from the CLI through ``replay_trace``, the
multi-rank launcher and each rank's spec to the rank's worker process."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from benchmint.core.errors import UserError
from benchmint.replay.index_skew import parse_spread

#: what a (multi-rank) replay runs of the step: all of it, its computation, its communication
MODES = ("full", "compute", "comm")


@dataclass(frozen=True)
class ReplayOptions:
    """What ``benchmint replay`` lets a user choose (see its ``--help``).

    ``device``: where to replay (default: the trace's device when this machine has it, else cpu);
    ``threads``: intra-op threads (default: capture.json's, else torch's; 1 per rank in a multi-rank replay);
    ``warmup`` / ``iters``: untimed and timed iterations; ``seed``: synthetic tensor values;
    ``gaps``: ``"recorded"`` reproduces the CPU time between ops (needs Kineto), ``"none"`` replays the ops
    back to back, None: recorded when a Kineto trace is available; ``target``: what the gaps aim at,
    ``"capture"`` (capture.json's measured step time), ``"estimate"`` (the recorded span less the observers'
    cost, measured on this machine), ``"cpu"`` (capture.json's CPU time per un-observed step: the gaps make
    the replayed iteration use as much CPU time, collectives included, and its wall time is left to this
    machine), ``"auto"`` (capture.json when present); ``iteration``: the ProfilerStep
    to replay (default: the last whole one); ``memory_check``: refuse, before planning, a trace whose tensors
    need more memory than the device has available; ``select`` / ``what_if``: replay a part of the step or a
    changed step (:mod:`benchmint.replay.adapt`: ``scope:``/``op:``/``phase:``, ``drop:``/``repeat:``);
    ``mode``: ``"full"`` (the whole step), ``"compute"`` (without its collectives) or ``"comm"`` (its
    collectives alone) (:mod:`benchmint.replay.modes`);
    ``scale``: the step at another batch size or sequence length (``batch=F``, ``seq=F``,
    :mod:`benchmint.replay.scale`); ``gaps_from``: spend the CPU work between ops that an earlier replay settled
    and saved (``--save-gaps``, :mod:`benchmint.replay.gaps_file`) instead of calibrating it here;
    ``index_spread``: how the made-up indices of lookups are spread, ``auto`` (chosen against the recorded
    lookup times), ``uniform`` or ``zipf:E`` (:mod:`benchmint.replay.index_skew`).
    """

    device: str | None = None
    threads: int | None = None
    warmup: int = 3
    iters: int = 20
    seed: int = 0
    gaps: str | None = None
    target: str = "auto"
    iteration: int | None = None
    memory_check: bool = True
    select: str | None = None
    what_if: tuple[str, ...] = ()
    mode: str = "full"
    scale: tuple[str, ...] = ()
    gaps_from: str | None = None
    index_spread: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "what_if", tuple(self.what_if or ()))  # None or a list from a caller
        object.__setattr__(self, "scale", tuple([self.scale] if isinstance(self.scale, str) else self.scale or ()))

    @classmethod
    def of(cls, options: ReplayOptions | None = None, **settings: Any) -> ReplayOptions:
        """``options`` (default: the defaults) with ``settings`` (field names) replacing its fields; an unknown
        name is a TypeError, as for a function's keyword argument."""
        base = options if options is not None else cls()
        return dataclasses.replace(base, **settings) if settings else base

    def check(self) -> None:
        """Refuse settings no replay can run with (one line naming the flag)."""
        if self.mode not in MODES:
            raise UserError(f"--mode {self.mode}: choose {', '.join(MODES)}")
        if self.mode != "full" and (self.select or self.what_if):
            raise UserError(f"--mode {self.mode} is a selection of its own; leave out --select and --what-if")
        if self.gaps not in (None, "recorded", "none"):
            raise UserError(f"--gaps {self.gaps}: choose recorded or none")
        if self.gaps_from is not None and self.gaps == "none":
            raise UserError(f"--gaps-from {self.gaps_from} gives the gaps; leave out --gaps none")
        if self.target not in ("auto", "capture", "estimate", "cpu"):
            raise UserError(f"target {self.target}: choose auto, capture, estimate or cpu")
        if self.warmup < 0 or self.iters < 1:
            raise UserError("--iters must be >= 1 and --warmup >= 0")
        parse_spread(self.index_spread)
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads {self.threads}: must be at least 1")

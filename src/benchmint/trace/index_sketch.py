"""How many distinct rows each lookup of a step touches: the one fact about the step's data that its execution
trace does not hold and that its time depends on.

The execution trace records an index tensor's shape, never its values. A lookup's time depends on how many
distinct rows it touches (its footprint in the cache): an embedding-bag replay over uniform made-up indices
ran 8-20% slower than one over Zipf-skewed ones, and the original's recorded durations cannot tell which the
data had (they hold mostly the recorders' own cost). ``benchmint capture`` therefore looks at the data itself,
once: during the last warm-up step (un-timed, un-recorded) a dispatch mode sees every lookup (``embedding``,
the ``embedding_bag`` family, ``index_select``, ``gather``, ``take``, ``index``: :mod:`benchmint.trace.lookups`)
and keeps, per index tensor, its shape, the rows of the table it reads and the number of distinct rows it
touched. ``capture.json`` holds them (``index_sketch``, in the order the step first read them); the replay
makes up indices that touch as many distinct rows (:mod:`benchmint.replay.index_skew`). No value leaves the process, only counts.

``BENCHMINT_CAPTURE_INDEX_SKETCH=0`` turns it off.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmint.trace.lookups import LOOKUPS, NAMES, base_name, index_tensors

ENV = "BENCHMINT_CAPTURE_INDEX_SKETCH"
MAX_LOOKUPS = 4096  # index tensors kept per step (a step with more keeps its first ones and says how many more)
HOW = (f"per index tensor read by a lookup ({NAMES}) in the last "
       "warm-up step, seen by a torch dispatch mode: its shape, the rows of the table it reads and the distinct "
       "rows it touched (torch.unique); the first read of each tensor, in the step's order")


def _named(func: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """A dispatched call's arguments by the names of its schema."""
    named = dict(kwargs)
    for a, v in zip(func._schema.arguments, args, strict=False):
        named[a.name] = v
    return named


class _Sketch(TorchDispatchMode):
    @classmethod
    def ignore_compile_internals(cls) -> bool:
        # without it, dynamo skips every frame it meets while the mode is on, and never compiles that frame
        # again: a compiled step would be measured and recorded eager
        return True

    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[dict[str, Any]] = []
        self._seen: set[tuple] = set()
        self.more = 0  # index tensors past MAX_LOOKUPS, not kept

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = base_name(func._schema.name)
        if name in LOOKUPS:
            try:
                for idx, rows in index_tensors(name, _named(func, args, kwargs)):
                    self._see(name, idx, rows)
            except Exception:  # noqa: BLE001 - the user's step must never fail for the sketch (meta, fake tensors)
                pass
        return out

    def _see(self, name: str, idx: Any, rows: int) -> None:
        if (not isinstance(idx, torch.Tensor) or idx.dtype not in (torch.int64, torch.int32) or not idx.numel()
                or rows <= 0):
            return
        if idx.is_cuda and torch.cuda.is_current_stream_capturing():
            return  # torch.unique would synchronize inside the user's CUDA graph capture
        key = (idx.data_ptr(), tuple(idx.shape), rows)
        if key in self._seen:
            return
        self._seen.add(key)
        if len(self.lookups) >= MAX_LOOKUPS:
            self.more += 1
            return
        self.lookups.append({"op": f"aten::{name}", "shape": list(idx.shape), "rows": rows,
                             "indices": int(idx.numel()), "distinct": int(torch.unique(idx).numel())})


class IndexSketch:
    """Attach with :meth:`start` before a step, :meth:`stop` after it; :attr:`result` is then what capture.json
    holds (or None: off, or nothing was seen)."""

    def __init__(self) -> None:
        self._mode: _Sketch | None = None
        self.result: dict[str, Any] | None = None

    @staticmethod
    def enabled() -> bool:
        # a torch whose dispatch modes cannot tell dynamo to go on compiling under them: no sketch (it would
        # leave a compiled step eager)
        return (os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")
                and hasattr(TorchDispatchMode, "ignore_compile_internals"))

    def start(self) -> None:
        if not self.enabled() or self._mode is not None:
            return
        self._mode = _Sketch()
        self._mode.__enter__()

    def stop(self) -> None:
        mode, self._mode = self._mode, None
        if mode is None:
            return
        from torch.utils._python_dispatch import _get_current_dispatch_mode

        if _get_current_dispatch_mode() is not mode:
            self._mode = mode  # the user's own mode is on top (entered around step()): popping would take
            return  # theirs; tried again at the next step's end
        try:
            mode.__exit__(None, None, None)
        except Exception:  # noqa: BLE001 - the user's loop must never fail for the sketch
            return
        if mode.lookups:
            self.result = {"lookups": mode.lookups, "how": HOW}
            if mode.more:
                self.result["more"] = mode.more

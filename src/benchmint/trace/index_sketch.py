"""How many distinct rows each lookup of a step touches: the one fact about the step's data that its execution
trace does not hold and that its time depends on.

The execution trace records an index tensor's shape, never its values. A lookup's time depends on how many
distinct rows it touches (its footprint in the cache): an embedding-bag replay over uniform made-up indices
ran 8-20% slower than one over Zipf-skewed ones, and the original's recorded durations cannot tell which the
data had (they hold mostly the recorders' own cost). ``benchmint capture`` therefore looks at the data itself,
once: during the last warm-up step (un-timed, un-recorded) a dispatch mode sees every lookup (``embedding``,
the ``embedding_bag`` family, ``index_select``, ``gather``, ``take``) and keeps, per index tensor, its shape,
the rows of the table it reads and the number of distinct rows it touched. ``capture.json`` holds them
(``index_sketch``); the replay makes up indices that touch as many distinct rows
(:mod:`benchmint.replay.index_skew`). No value leaves the process, only counts.

``BENCHMINT_CAPTURE_INDEX_SKETCH=0`` turns it off.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ENV = "BENCHMINT_CAPTURE_INDEX_SKETCH"
MAX_LOOKUPS = 256  # index tensors kept per step (a step with more keeps its first ones)
HOW = ("per index tensor read by a lookup (embedding, embedding_bag, index_select, gather, take) in the last "
       "warm-up step, seen by a torch dispatch mode: its shape, the rows of the table it reads and the distinct "
       "rows it touched (torch.unique); the first read of each tensor, in the step's order")


def _index_and_rows(name: str, args: tuple, kwargs: dict) -> tuple[Any, int] | None:
    """The index tensor a lookup reads and the rows it indexes into, or None for another op."""
    a = list(args)
    try:
        if name in ("embedding", "_embedding_bag", "_embedding_bag_forward_only", "embedding_bag"):
            return a[1], int(a[0].shape[0])
        if name in ("index_select", "gather"):
            dim = int(a[1])
            return a[2], int(a[0].shape[dim])
        if name == "take":
            return a[1], int(a[0].numel())
    except (IndexError, AttributeError, TypeError):
        return None
    return None


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

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if len(self.lookups) < MAX_LOOKUPS:
            try:
                self._see(func._schema.name.split("::", 1)[-1], args, kwargs)
            except Exception:  # noqa: BLE001 - the user's step must never fail for the sketch (meta, fake tensors)
                pass
        return out

    def _see(self, name: str, args: tuple, kwargs: dict) -> None:
        got = _index_and_rows(name, args, kwargs)
        if got is None:
            return
        idx, rows = got
        if not isinstance(idx, torch.Tensor) or idx.is_floating_point() or not idx.numel() or rows <= 0:
            return
        if idx.is_cuda and torch.cuda.is_current_stream_capturing():
            return  # torch.unique would synchronize inside the user's CUDA graph capture
        key = (idx.data_ptr(), tuple(idx.shape), rows)
        if key not in self._seen:
            self._seen.add(key)
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

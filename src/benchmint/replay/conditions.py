"""The process conditions a replay times its iterations under: set and recorded in one place.

``benchmint replay`` and an exported benchmark's ``run.py`` (which vendors this module with the rest of the
engine) time the same compiled iteration through :func:`benchmint.replay.execute.time_iterations`; what can
still differ is the process around it. The CLI's process imported benchmint's whole command line (about 1,300
modules, numpy among them: torch imports it when it is installed, and numpy's OpenBLAS starts its own thread
pool), the runner's a torch-only environment (about 1,000 modules, no numpy). What the timed loop depends on is
set here for both, and what remains different is recorded, so that a comparison can name it:

* intra-op threads: set by the replay (``--threads``, else capture.json's), recorded with the inter-op threads
  and the thread-pool variables of the environment (OMP, MKL, OpenBLAS, KMP, GOMP);
* glibc malloc's thresholds: :func:`benchmint.replay.allocator.settle_malloc` (``allocator`` in the result);
* grad mode: every timed iteration runs under the plan's ``grad_mode`` (:func:`grad_mode_of`):
  ``torch.no_grad`` for a training step, ``torch.inference_mode`` otherwise (:mod:`benchmint.replay.execute`);
  a training step's forward records autograd's graph inside that, as the original's did (``autograd_graph``,
  :mod:`benchmint.replay.phases`);
* Python's cyclic collector: :func:`quiet_gc` collects once and freezes the survivors (``gc.freeze``) around the
  timed work, so that a collection inside the loop walks the objects the loop made, not the objects of the
  modules the process happened to import (the CLI's are a third more than the runner's); it stays enabled, as
  it was in the original;
* denormal floats: flushed to zero (``torch.set_flush_denormal``) while a replay runs. A replay runs one step over and over on made-up values, and the state a training
  step updates in place drifts: a momentum buffer whose gradient rows are exactly zero (a ReLU unit dead for
  the one replayed batch) is scaled by a made-up factor every iteration and went denormal within about 100,
  after which its ``mul_`` and ``add_`` ran 15x slower (an MLP trained with SGD and momentum replayed at
  2.6x its step). The original's own values never meet that drift, and a replay could not reproduce a
  denormal slowdown of the original's data anyway (it has no values). Set for the replay
  (:func:`denormals_flushed`) and put back after: a library such as hypothesis refuses to run in a thread that
  flushes them, and the live original timed beside a replay computes them as the user's process does.
  Threads started meanwhile inherit it (the CPU's control register is copied to a new thread): it is set
  before the replay sets its thread count, so that an intra-op pool started by the first replay flushes too,
  and keeps doing so; a pool already running keeps its own setting (``threads_when_denormals_flushed``);
* CPUs the process may run on (``sched_getaffinity``), torch's version and parallel backend, Python's version;
* the timed iteration itself (:func:`iteration_code`): the generated function's text, its gaps' CPU work left
  out, as a digest; two sides that claim to time the same step must run the same text (the runner plans
  with stdlib stand-ins for msgspec and orjson: a difference in what they load would show here). The gaps'
  CPU work (``spin_turns``) is a process fact: each process calibrates and settles its own gaps, under the
  load it meets, so with ``--gaps recorded`` the two sides' iterations differ by what their calibrations did.

:func:`snapshot` returns them as the result's ``timing_conditions``: ``settings`` must be equal on two sides
that claim to time the same thing (``tests/test_replay_export.py`` checks the runner against ``benchmint
replay``); ``process`` (threads alive in the process, numpy loaded) is what the environment makes different
and is reported, not equalized.
"""

from __future__ import annotations

import gc
import hashlib
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

ENV_PREFIXES = ("OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOMP_", "BENCHMINT_REPLAY_")
INFERENCE_MODE, NO_GRAD = "torch.inference_mode", "torch.no_grad"  # what a plan's iterations run under
# a recorded step with these is a training step: the autograd engine's scopes, or ops of a backward pass
AUTOGRAD_SCOPE = "autograd::engine::evaluate_function"


def grad_mode_of(scope_names: Any, op_names: Any) -> str:
    """What a replay of a recorded step runs under, from its scopes' and ops' names: ``torch.no_grad`` for a
    training step (the autograd engine's scopes, or an ``aten::*_backward`` op), ``torch.inference_mode``
    otherwise. A training step's ops all ran outside inference mode (its forward with autograd, its backward
    under the engine, its optimizer under no_grad) and paid the version counters' and views' bookkeeping on
    every call, which inference mode skips: replayed under it, the ops alone of a packed LSTM's training step
    took 35 ms against 39 ms under no_grad (the live step: 39-40 ms), an encoder-decoder's 9.6 against 11.0
    ms, a small CNN's 3.0 against 3.2 ms. Inside it, the forward's ops record autograd's graph (plan.py: an
    encoder-decoder's forward took 5.3 ms with it, 4.5 ms under no_grad)."""
    training = (any(isinstance(n, str) and n.startswith(AUTOGRAD_SCOPE) for n in scope_names)
                or any(isinstance(n, str) and n.endswith("_backward") for n in op_names))
    return NO_GRAD if training else INFERENCE_MODE


def grad_context(mode: str) -> Any:
    """The context manager of a plan's ``grad_mode``."""
    return torch.no_grad() if mode == NO_GRAD else torch.inference_mode()


@contextmanager
def quiet_gc() -> Iterator[None]:
    """Collect once and move the survivors out of the collector's reach until the end (re-entrant use is
    harmless: the inner one finds nothing new to freeze)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _affinity() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _live_threads() -> int | None:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


_SPIN_RE = re.compile(r"_spin\((\d+)\)")
_SPIN_LINE_RE = re.compile(r"\s*_spin\(\d+\)\s*")


def iteration_code(fn: Any) -> tuple[str | None, int | None]:
    """The timed iteration's fingerprint: the digest of its generated text (``Plan.compile`` keeps it as
    ``fn.source``) without the gaps' CPU work (the ``_spin(n)`` lines: a gap that one process's calibration
    left at zero has no line), and the spin loop's turns per iteration (the gaps and stand-ins); (None, None)
    for a function without its text."""
    src = getattr(fn, "source", None)
    if not isinstance(src, str):
        return None, None
    turns = sum(int(n) for n in _SPIN_RE.findall(src))
    return "sha256:" + hashlib.sha256(
        "\n".join(ln for ln in src.splitlines() if not _SPIN_LINE_RE.fullmatch(ln)).encode()).hexdigest()[:16], turns


def graph_setting(graph: dict[str, Any] | None) -> str:
    """A plan's autograd graph (``Plan.graph``) in words, for the settings two comparable runs share."""
    if not graph or not graph.get("built"):
        return "not built"
    return (f"built by {graph.get('ops')} forward ops on {graph.get('parameters')} parameters, "
            "grad enabled inside the no_grad iteration, then dropped")


_threads_at_flush: int | None = None  # threads alive when a replay first flushed denormals


def flushing_denormals() -> bool:
    """Whether this thread flushes denormal floats now: half the smallest normal double reads zero."""
    tiny = sys.float_info.min
    return tiny / 2.0 == 0.0


@contextmanager
def denormals_flushed() -> Iterator[bool]:
    """Denormal floats flushed to zero in this thread for the block (see the module), its own setting put back
    after (a library such as hypothesis refuses to run in a thread that flushes them); threads started inside
    the block (the intra-op pool, on a process's first replay) keep the setting. Yields whether the CPU can."""
    global _threads_at_flush
    before = flushing_denormals()
    if _threads_at_flush is None:
        _threads_at_flush = _live_threads()
    ok = bool(torch.set_flush_denormal(True))
    try:
        yield ok
    finally:
        torch.set_flush_denormal(before)


def as_replay(fn: Any) -> Any:
    """``fn`` (a replayed iteration run outside :func:`benchmint.replay.api.replay_trace`: compare, benchmarks)
    run as the replay runs it, denormals flushed, this thread's setting put back after."""
    def run() -> Any:
        with denormals_flushed():
            return fn()

    return run


def snapshot(allocator: str | None = None, fn: Any = None, grad_mode: str = INFERENCE_MODE,
             graph: dict[str, Any] | None = None) -> dict[str, Any]:
    """The conditions the timed iterations run under (call it just before them, ``fn``: the compiled
    iteration they time): ``settings`` (what a replay sets or inherits and two comparable runs must share) and
    ``process`` (what the environment makes different, and the gaps each process calibrated)."""
    code, turns = iteration_code(fn)
    try:
        backend = next((ln.split(":", 1)[1].strip() for ln in torch.__config__.parallel_info().splitlines()
                        if ln.startswith("ATen parallel backend")), None)
    except Exception:  # noqa: BLE001 - a build without it: not recorded
        backend = None
    settings = {
        "intra_op_threads": torch.get_num_threads(),
        "inter_op_threads": torch.get_num_interop_threads(),
        "thread_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
        "grad_mode": grad_mode,
        "autograd_graph": graph_setting(graph),
        "allocator": allocator,
        "gc": f"enabled, thresholds {gc.get_threshold()}, survivors frozen around the timed work",
        "denormals": "flushed to zero" if flushing_denormals() else "computed",
        "cpus_allowed": _affinity(),
        "torch": torch.__version__,
        "parallel_backend": backend,
        "python": sys.version.split()[0],
        "iteration_code": code,
    }
    process = {
        "threads_alive": _live_threads(),
        "numpy_loaded": "numpy" in sys.modules,
        "modules_loaded": len(sys.modules),
        "spin_turns_per_iteration": turns,
        # the threads alive when denormals were first flushed (the process's first replay): only threads started
        # after it inherit the setting (1: every thread has it; more: the ones already running, an intra-op pool
        # or OpenBLAS's, compute denormals as before)
        "threads_when_denormals_flushed": _threads_at_flush,
    }
    return {"settings": settings, "process": process}


def differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """The settings two results' ``timing_conditions`` disagree on, in words (empty: none)."""
    if not a or not b:
        return ["timing conditions not recorded on one side"]
    sa, sb = a.get("settings") or {}, b.get("settings") or {}
    return [f"{k}: {sa.get(k)!r} vs {sb.get(k)!r}" for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]

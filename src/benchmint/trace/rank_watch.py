"""Bounded waits for a capture under torchrun: a rank whose peers are gone fails in one line, never hangs.

Under torchrun each rank's ``benchmint capture`` runs the user's script in a child process. The ranks' steps
are tied together by the script's own collectives (DDP's gradient all-reduce, a final barrier): a rank whose
peers are gone, or are stuck (a profiler stop that never returns, a trace write on a full disk), waits in
them for as long as torch's process-group timeout allows (30 minutes for gloo; a script may set hours), and
torchrun waits for that rank. So the child marks where it is (:class:`Beacon`: the stage and the step, in a
small shared memory-mapped file, written with no system call at each step boundary) and the capture command
watches it (:func:`watch`): when the mark has not moved for ``timeout_s`` seconds in a stage where the capture
waits on something, the watcher writes every thread's Python stack of the child (``faulthandler`` on
``SIGUSR1``, which runs even when the child is stuck in native code holding the GIL) next to the rank's
capture, stops the child and fails with one line naming the rank, the stage and the step. torchrun then sees
that rank fail and stops the others.

Bounded: every step from the first on (a collective in a step waits on the peers), also after the capture is
complete while the script runs on (each step boundary still moves the mark), the recording's start and stop
(traces written), and the script's end (its final barrier, the process group's teardown, the interpreter's
exit). Not bounded: the time before the script's first step, in which it loads its model and joins its
process group (torch's rendezvous bounds that itself; a large model may take minutes to load).
"""

from __future__ import annotations

import mmap
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

ENV_BEACON = "BENCHMINT_CAPTURE_BEACON"  # the file the child marks its stage and step in
ENV_STACKS = "BENCHMINT_CAPTURE_STACKS"  # the file the child's faulthandler writes its threads' stacks to
STACK_SIGNAL = signal.SIGUSR1
STACKS_NAME = "hang_stacks.txt"
DEFAULT_TIMEOUT_S = 300.0

_FMT = "<qq"  # stage, step
SIZE = struct.calcsize(_FMT)

STARTING, STEP, RECORD_START, RECORDED_STEP, RECORD_STOP, IDLE_STEP, COMPLETE, SCRIPT_END = range(8)
_STAGE_WORDS = {
    STARTING: "before the script's first step",
    STEP: "after step {n}, before the recording (a collective of the script waits on the other ranks)",
    RECORD_START: "starting the recording after step {n}",
    RECORDED_STEP: "after step {n}, in the recorded step (a collective of the script waits on the other ranks)",
    RECORD_STOP: "stopping the recording after step {n} and writing its traces",
    IDLE_STEP: "after step {n}, after the recording (a collective of the script waits on the other ranks)",
    COMPLETE: "after step {n}, the capture complete (a collective of the script waits on the other ranks)",
    SCRIPT_END: "at the script's end after step {n} (its final barrier, the process group's teardown, the "
                "interpreter's exit)",
}
UNBOUNDED = frozenset({STARTING})


def describe(stage: int, step: int) -> str:
    return _STAGE_WORDS.get(stage, f"in stage {stage}").format(n=step)


class Beacon:
    """The child's side: :meth:`mark` writes (stage, step) into the shared file (a memory store, no system
    call). A beacon without a file (no capture command watching) marks nothing."""

    def __init__(self, path: str | None) -> None:
        self._mm: mmap.mmap | None = None
        if path:
            try:
                fd = os.open(path, os.O_RDWR)
                try:
                    self._mm = mmap.mmap(fd, SIZE)
                finally:
                    os.close(fd)
            except (OSError, ValueError):  # not there or too short: nothing is watching
                self._mm = None
        self.stage, self.step = STARTING, 0

    def mark(self, stage: int, step: int) -> None:
        self.stage, self.step = stage, step
        if self._mm is not None:
            struct.pack_into(_FMT, self._mm, 0, stage, step)


def dump_stacks_on_signal(path: str | None) -> None:
    """In the child: write every thread's Python stack to ``path`` on :data:`STACK_SIGNAL` (a script that
    installs its own handler for that signal replaces this one)."""
    if not path:
        return
    import faulthandler

    try:
        f = open(path, "a")  # noqa: SIM115 - faulthandler writes to its descriptor for the process's life
        faulthandler.register(STACK_SIGNAL, file=f, all_threads=True)
        _keep.append(f)
    except (OSError, ValueError, RuntimeError):
        pass


_keep: list = []


def new_file(prefix: str, size: int, scratch: str | None) -> str:
    import tempfile

    fd, path = tempfile.mkstemp(prefix=prefix, dir=scratch)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return path


def read(path: str) -> tuple[int, int]:
    try:
        with open(path, "rb") as f:
            data = f.read(SIZE)
        return struct.unpack(_FMT, data) if len(data) == SIZE else (STARTING, 0)
    except OSError:
        return (STARTING, 0)


class RankStuck(Exception):
    """The child made no progress for the timeout in a bounded stage (it has been stopped)."""

    def __init__(self, stage: int, step: int, waited_s: float, stacks: Path | None) -> None:
        self.stage, self.step, self.waited_s, self.stacks = stage, step, waited_s, stacks
        super().__init__(describe(stage, step))


def watch(proc: subprocess.Popen, beacon: str, timeout_s: float, stacks_tmp: str | None = None,
          stacks_dest: Path | None = None, poll_s: float = 1.0) -> int:
    """Wait for ``proc``; its exit status. Raises :class:`RankStuck` (after writing its stacks to
    ``stacks_dest`` and stopping it) when its beacon stays in one bounded stage and step for ``timeout_s``."""
    poll = min(poll_s, max(timeout_s / 4, 0.05))
    last = read(beacon)
    since = time.monotonic()
    while True:
        try:
            return proc.wait(timeout=poll)
        except subprocess.TimeoutExpired:
            pass
        cur, now = read(beacon), time.monotonic()
        if cur != last or cur[0] in UNBOUNDED:
            last, since = cur, now
            continue
        if now - since < timeout_s:
            continue
        saved = _collect_stacks(proc, stacks_tmp, stacks_dest)
        _stop(proc)
        raise RankStuck(cur[0], cur[1], now - since, saved)


def _collect_stacks(proc: subprocess.Popen, tmp: str | None, dest: Path | None) -> Path | None:
    if not tmp or dest is None:
        return None
    try:
        before = os.path.getsize(tmp)
        proc.send_signal(STACK_SIGNAL)
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end and proc.poll() is None:  # faulthandler writes at once; give it a moment
            time.sleep(0.1)
            if os.path.getsize(tmp) > before:
                time.sleep(0.2)
                break
        if os.path.getsize(tmp) <= before:
            return None
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(Path(tmp).read_bytes())
        return dest
    except OSError:
        return None


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

"""Capture an execution trace (ET) and a Kineto trace of chosen steps of a user's own loop.

Two added lines in a training or inference loop::

    from benchmint.trace.capture import Capture

    with Capture("cap-out") as cap:          # warm-up, measure, then record
        for batch in data:
            train_step(batch)
            cap.step()                        # marks the end of one step

Steps run in four phases: ``warmup`` steps with nothing attached, ``measure`` steps timed WITHOUT any
observer (their median wall time is the step's true time, written to ``capture.json``), ``discard`` steps
recorded and thrown away, then ``record`` steps with the ExecutionTraceObserver and the Kineto profiler
attached, each wrapped in a ``ProfilerStep#N`` record_function. Recording slows the step down (1.5x-5x on small
CPU models), which is why the un-observed time is measured separately: replay reproduces that time, not the
recorded one. The first recording in a process also pays the observers' one-time costs for every op it sees
for the first time (measured here: a mixture-of-experts step recorded at 9.8 ms the first time and 6.7-7.9 ms
after, an encoder-decoder at 30.5 and 20 ms), so a recorded step that comes first misstates where the step's
time goes; the discarded step pays them instead.

Files written into the output folder: ``et.json`` (execution trace), ``kineto.json`` (Chrome trace of the
Kineto profiler), ``capture.json`` (timings and context; ``schema_version`` 1.0).

The command-line form (``benchmint capture --out DIR -- python train.py ...``) runs the script through this
module's entry point (``python -c BOOT``, ``cli/capture.py``; ``python -m benchmint.trace.capture`` does the
same), which starts a process-wide capture from environment variables. A script
marks its steps with :func:`step` (a no-op when no capture is active); training scripts that call
``optimizer.step()`` need no added line at all, as the end of each optimizer step is taken as a step boundary
until the script calls :func:`step` itself.
"""

from __future__ import annotations

import atexit
import gc
import os
import runpy
import shutil
import signal
import sys
import tempfile
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmint.core import clock, pace, profiler_session
from benchmint.core.errors import UserError
from benchmint.core.jsonio import write_json
from benchmint.core.stats import percentile, timing_summary
from benchmint.core.stderr import filtered_native_stderr
from benchmint.core.system import host_summary
from benchmint.trace import rank_watch
from benchmint.trace.index_sketch import IndexSketch

SCHEMA_VERSION = "1.0"
ET_NAME = "et.json"
KINETO_NAME = "kineto.json"
CAPTURE_NAME = "capture.json"
MIN_MEASURE = 5
# the un-observed steps right after each recording, set apart from the idle recorder's: any pause of the loop
# slows the next few steps (moe's first step after a recording ran 2.2x, then 1.23x, 1.13x, 1.09x; the same
# loop after touching 256 MB 2.40x, 1.24x, 1.16x, after a 50 ms sleep 2.04x, 1.08x, 1.02x): the recording's cost,
# not the attached recorder's
AFTER_RECORDING = 3
PACE_PROBES = 5  # pace probes on each side of the measured steps (about 1.3 ms each side at 12 ns a turn)

ENV_OUT = "BENCHMINT_CAPTURE_OUT"
ENV_WARMUP = "BENCHMINT_CAPTURE_WARMUP"
ENV_MEASURE = "BENCHMINT_CAPTURE_MEASURE"
ENV_RECORD = "BENCHMINT_CAPTURE_RECORD"
ENV_DISCARD = "BENCHMINT_CAPTURE_DISCARD"
ENV_CMD = "BENCHMINT_CAPTURE_CMD"
ENV_EVERY = "BENCHMINT_CAPTURE_EVERY"

# how the loop ended (capture.json's "ended"; "ended_why" holds the error or the status)
ENDED_END = "end"  # the loop (the script) ran to its end
ENDED_ERROR = "error"  # an exception ended it
ENDED_INTERRUPTED = "interrupted"  # Ctrl-C
ENDED_EXIT = "exit"  # sys.exit() with a non-zero status
WRITE_HOW = ("median over kept recordings of the time the loop was held by the recording's stop: from the "
             "stop's start (right after the recorded step's end) until step() handed control back to the loop: "
             "the observers stopped, the traces written, capture.json written, the profiler's events released "
             "and collected")
PARTIAL = ".partial"  # an iteration folder is written as iter_<N>.partial and renamed when it is whole


def scratch_dir() -> str | None:
    """A memory-backed folder for observer output (``/dev/shm``) when there is one, else None."""
    d = "/dev/shm"
    return d if os.path.isdir(d) and os.access(d, os.W_OK) else None


def _scratch_file(prefix: str, suffix: str) -> str:
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=scratch_dir())
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)  # the trace is moved into --out afterwards: readable like any file there
    os.close(fd)
    return path


def _device_in_use(device: str | None) -> str:
    if device:
        return device
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return f"cuda:{torch.cuda.current_device()}"
    except Exception:
        pass
    return "cpu"


@dataclass
class Capture:
    """Warm up, measure un-observed step times, record ``discard`` steps and throw them away, then record
    ET + Kineto of ``record`` steps.

    Call :meth:`step` at the end of every step. Extra calls after the capture is done are no-ops, so the loop
    may run longer than ``warmup + measure + discard + record`` steps (one more with ``discard``: the step between
    the discarded and the kept recordings runs with nothing attached). The files are written when the last
    recorded step ends (or on :meth:`close`, which also runs when the ``with`` block exits).
    """

    out: str | os.PathLike
    warmup: int = 10
    measure: int = 10
    record: int = 1
    discard: int = 1
    device: str | None = None
    record_shapes: bool = True
    command_line: list[str] | None = None
    model: Any = field(default=None, repr=False)  # the torch module the step runs: described in capture.json
    every: int | None = None  # record one step in every N (each in its own iter_<N> folder); record: how many
    step_times_s: list[float] = field(default_factory=list, init=False)
    recorded_times_s: list[float] = field(default_factory=list, init=False)
    discarded_times_s: list[float] = field(default_factory=list, init=False)
    recorded_iterations: list[int] = field(default_factory=list, init=False)  # ProfilerStep#N of whole steps
    idle_times_s: list[float] = field(default_factory=list, init=False)  # un-observed steps after recording began
    # the AFTER_RECORDING un-observed steps right after each recording: (steps since it, seconds); not idle_times_s
    after_times_s: list[tuple[int, float]] = field(default_factory=list, init=False)
    write_times_s: list[float] = field(default_factory=list, init=False)  # per kept recording: traces written
    iteration_dirs: list[str] = field(default_factory=list, init=False)  # with every: one folder per recording
    done: bool = field(default=False, init=False)
    note: str | None = field(default=None, init=False)
    # how the loop ended (capture.json's "ended"): ENDED_* (None while it runs); ended_why: the error, or the status
    ended: str | None = field(default=None, init=False)
    ended_why: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.measure < MIN_MEASURE:
            raise UserError(f"capture: measure={self.measure} steps is too few; use at least {MIN_MEASURE}")
        if self.record < 1 or self.warmup < 0 or self.discard < 0:
            raise UserError("capture: record must be >= 1, warmup and discard >= 0")
        if self.every is not None and self.every < 2:
            raise UserError(f"capture: every={self.every}: record one step in every N >= 2 steps")
        self.out = Path(self.out)
        self._n = 0  # steps completed
        self._t0: int | None = None
        self._et: Any = None
        self._prof: Any = None
        self._rf: Any = None
        self._threads = None
        self._sync = None
        self._et_tmp = ""
        self._discarding = False
        self._since = 0  # un-observed steps since the last recording stopped
        self._ended = 0  # step() calls: the steps the script has ended (_n stops counting after the recording)
        self.beacon = rank_watch.Beacon(None)  # where the capture is, for `benchmint capture` under torchrun
        self._sketch = IndexSketch()  # the last warm-up step's lookups: distinct rows touched (index_sketch.py)
        self._pace: list[float] = []  # the machine's pace just before and after the measured steps (core.pace)
        self._held_from: int | None = None  # a kept recording's stop began here: the loop is held until step() returns
        self._stale = False  # capture.json on disk lacks the last recording's pause (it was written during it)
        self._host: dict | None = None  # host_summary(), taken once at start() (its first call takes 0.2 s)
        self._writes = 0  # capture.json writes

    # -- context manager -----------------------------------------------------------------------------------
    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[1] is not None:
            self.ended_by(exc[1])  # type: ignore[arg-type]
        self.close(warn=exc[0] is None)  # (a loop that raised says why itself)

    def ended_by(self, exc: BaseException | None) -> None:
        """Say how the loop ended (capture.json's ``ended`` and ``ended_why``): ``exc`` is what ended it, None
        for its own end. The first call counts."""
        if self.ended is not None:
            return
        if exc is None or (isinstance(exc, SystemExit) and exc.code in (None, 0)):
            self.ended = ENDED_END
        elif isinstance(exc, KeyboardInterrupt):
            self.ended, self.ended_why = ENDED_INTERRUPTED, "Ctrl-C"
        elif isinstance(exc, SystemExit):
            self.ended = ENDED_EXIT
            self.ended_why = (f"exit status {exc.code}" if isinstance(exc.code, int) else str(exc.code))[:300]
        else:
            self.ended, self.ended_why = ENDED_ERROR, f"{type(exc).__name__}: {exc}"[:300]

    def start(self) -> None:
        """Start timing the first step (done by ``with``; call it yourself when not using ``with``)."""
        import torch

        self._threads = torch.get_num_threads()
        dev = _device_in_use(self.device)
        self._sync = torch.cuda.synchronize if dev.startswith("cuda") else None
        self._system_window()  # with no warm-up the measured steps start here (its pace probe before their clock)
        # taken here, before the loop runs, not in a recording's stop, where the loop waits for it: the host's
        # description (0.2 s the first time, reading every package's metadata) and, where recordings come one in
        # every N, the test that judges the idle recorder (scipy's import: 0.9 s in the second recording's stop)
        self._host = host_summary()
        if self.every is not None:
            try:
                import scipy.stats  # noqa: F401
            except Exception:  # noqa: BLE001 - scipy missing: recording_cost gives the medians alone
                pass
        self._t0 = clock.now_ns()

    @property
    def recording(self) -> bool:
        return self._et is not None

    @property
    def finished(self) -> bool:
        """Done recording, and the un-observed steps after it (the idle recorder's cost) are timed: ``measure``
        of them in all (with ``--every``, those between the recordings count, and the steps after the last one
        are timed until there are enough; a job that ends first ends the capture as it is)."""
        return self.done and len(self.idle_times_s) >= self.measure

    def step(self, _from_optimizer: bool = False) -> None:
        """Mark the end of one step of the user's loop."""
        self._ended += 1
        if self.finished:  # the script runs on: its steps still move the watch's mark
            self.beacon.mark(rank_watch.COMPLETE, self._ended)
            return
        self._step(_from_optimizer)
        # where the capture is now, for the capture command's watch (bounded waits under torchrun)
        self.beacon.mark(rank_watch.COMPLETE if self.finished else rank_watch.IDLE_STEP if self.done
                         else rank_watch.RECORDED_STEP if self.recording else rank_watch.STEP, self._ended)
        self._end_pause()  # the last thing before the loop has control back

    def _end_pause(self) -> None:
        """A kept recording stopped in this call: the loop was held from its stop's start until now (the traces
        and capture.json written, the profiler's events collected), which capture.json's ``write_s`` reports.
        The files written during the pause lack it: they are written again when the capture closes."""
        if self._held_from is not None:
            self.write_times_s.append((clock.now_ns() - self._held_from) / 1e9)
            self._held_from = None
            self._stale = True

    def _step(self, _from_optimizer: bool) -> None:
        if self._t0 is None:
            self.start()
        if self._sync is not None:
            self._sync()
        if self._n >= self.warmup - 1:
            self._sketch.stop()  # before the measured steps' clock starts (a no-op once stopped)
        now = clock.now_ns()
        if self.done:
            # after the recording: un-observed steps with the recorder idle in the process, timed for its cost
            self._unobserved_after((now - self._t0) / 1e9)  # type: ignore[operator]
            if self.finished:
                self.write_summary()
            self._t0 = clock.now_ns()
            return
        if self.recording:
            kept = not self._discarding
            self._end_recorded_step(now)
            if kept and _from_optimizer and not self.done and self.recording:
                # A boundary taken from optimizer.step() lies inside the optimizer's record_function scope: a
                # ProfilerStep opened there takes the next step's ops into this one's and leaves its own empty
                # (seen with --record 2). Only the first kept step is recorded this way.
                self.note = (f"{len(self.recorded_times_s)} of {self.record} steps recorded: with steps ended by "
                             "optimizer.step() only one can be; mark each step with "
                             "benchmint.trace.capture.step() to record more")
                self._stop_recording()
        else:
            elapsed = (now - self._t0) / 1e9  # type: ignore[operator]
            if self.warmup <= self._n < self.warmup + self.measure:
                self.step_times_s.append(elapsed)
            elif self._n > self.warmup + self.measure:
                self._unobserved_after(elapsed)  # un-observed, after the recorder's first recording
        self._n += 1
        self._system_window()
        if self.done:
            # the next step is timed from here: not from before the recorded step, with its traces' writing
            self._t0 = clock.now_ns()
            return
        if self._n == self.warmup - 1 and self._n > 0:
            # the last warm-up step (not the first: a compiled step compiles there) shows its lookups' data
            self._sketch.start()
        first = self.warmup + self.measure  # the first recorded step (discarded or kept)
        if self.every is not None and self._n > first + (self.discard + 1 if self.discard else 0):
            # one kept recording in every N steps from the first kept one
            if (self._n - first - (self.discard + 1 if self.discard else 0)) % self.every == 0:
                self._start_recording(discard=False)
        elif self._n == first:
            self._start_recording(discard=self.discard > 0)
        elif self.discard and self._n == first + self.discard:
            # The observers are not restarted at once: a step boundary taken from optimizer.step() lies inside
            # the optimizer's record_function scope, and a scope opened under one profiler session and closed
            # under the next crashes torch. One step with nothing attached goes between.
            self._stop_recording(keep=False)
        elif self.discard and self._n == first + self.discard + 1:
            self._start_recording(discard=False)
        elif self.recording:
            self._open_step_scope()
        self._t0 = clock.now_ns()

    def _unobserved_after(self, seconds: float) -> None:
        """An un-observed step after a recording: the idle recorder's, past the first ``AFTER_RECORDING``."""
        self._since += 1
        if self._since <= AFTER_RECORDING:
            self.after_times_s.append((self._since, seconds))
        else:
            self.idle_times_s.append(seconds)

    def _system_window(self) -> None:
        """System metrics (CPU utilization, context switches, page faults, peak RSS) of the measured steps."""
        from benchmint.core import sysmetrics

        if self._n == self.warmup:
            import torch

            # the thread count the measured steps run with: a script sets it after the capture has started
            self._threads = torch.get_num_threads()
            self._probe_pace()  # outside the window and the steps' clock: its CPU time is in neither
            self._sysw = sysmetrics.Window(self.measure, self._threads, _device_in_use(self.device)).__enter__()
        elif self._n == self.warmup + self.measure and getattr(self, "_sysw", None) is not None:
            self._sysw.__exit__(None, None, None)
            self.system_metrics = self._sysw.metrics
            self._probe_pace()

    def _probe_pace(self) -> None:
        """The host's pace on either side of the measured steps (:mod:`benchmint.core.pace`): a replay on this
        host and Python reports how its own pace differs from this one, beside its error against the steps."""
        self._pace.extend(pace.probe() for _ in range(PACE_PROBES))

    # -- recording -----------------------------------------------------------------------------------------
    def _start_recording(self, discard: bool = False) -> None:
        import torch
        from torch.profiler import ExecutionTraceObserver, ProfilerActivity, profile

        self.beacon.mark(rank_watch.RECORD_START, self._ended)
        self.out.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        activities = [ProfilerActivity.CPU]
        if self._sync is not None:
            activities.append(ProfilerActivity.CUDA)
        self._prof = profile(activities=activities, record_shapes=self.record_shapes)
        profiler_session.start(self._prof, cuda=self._sync is not None)  # CUPTI released when it ends
        et = ExecutionTraceObserver()
        # the observer writes every node as the op exits: into memory-backed storage when there is some, so
        # that disk stalls do not land in the recorded step (the file is moved into place afterwards)
        self._et_tmp = _scratch_file("benchmint-et-", ".json")
        et.register_callback(self._et_tmp)
        with filtered_native_stderr():
            et.start()
        self._et = et
        self._discarding = discard
        del torch
        self._open_step_scope()

    def _open_step_scope(self) -> None:
        from torch.autograd.profiler import record_function

        self._rf = record_function(f"ProfilerStep#{self._n}")
        self._rf.__enter__()

    def _end_recorded_step(self, now: int) -> None:
        self._rf.__exit__(None, None, None)
        self._rf = None
        if self._discarding:
            self.discarded_times_s.append((now - self._t0) / 1e9)  # type: ignore[operator]
            return
        self.recorded_times_s.append((now - self._t0) / 1e9)  # type: ignore[operator]
        self.recorded_iterations.append(self._n)  # the scope closed here was opened as ProfilerStep#{_n}
        if len(self.recorded_times_s) >= self.record or self.every is not None:
            self._stop_recording()

    def _stop_recording(self, keep: bool = True) -> None:
        """Stop the observers; keep: move the traces into place and finish, else throw them away. Nothing of
        the recording stays behind in the process: the profiler's parsed events (tens of thousands of Python
        objects in reference cycles) are released and collected here, between steps, rather than by a
        collection that lands in a later, un-observed step (a probe on a quiet machine: steps after one
        recording 1.12x the steps before it, 1.05x with a collection after the recording).

        A kept recording's files appear whole or not at all: an iteration folder is written as
        ``iter_<N>.partial`` and renamed once its traces and capture.json are in it; an interruption (Ctrl-C)
        or an error before then removes what this recording wrote and forgets the recorded step, so that
        capture.json lists only whole recordings. The loop's pause is timed from here until :meth:`step`
        hands control back (:meth:`_end_pause`)."""
        t_stop = clock.now_ns()
        self._since = 0
        self.beacon.mark(rank_watch.RECORD_STOP, self._ended)
        keep = keep and not self._discarding
        dest = self.out
        if keep and self.every is not None:
            dest = self.out / f"iter_{self.recorded_iterations[-1]}{PARTIAL}"  # type: ignore[operator]
        committed = False
        try:
            if self._rf is not None:
                self._rf.__exit__(None, None, None)
                self._rf = None
            with filtered_native_stderr():
                self._et.stop()
            self._et.unregister_callback()
            self._et = None
            if keep:
                if dest != self.out and dest.exists():  # a leftover of a capture killed while it wrote it
                    shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True, exist_ok=True)
                shutil.move(self._et_tmp, dest / ET_NAME)  # type: ignore[operator]
            else:
                Path(self._et_tmp).unlink(missing_ok=True)
            with filtered_native_stderr():
                self._prof.__exit__(None, None, None)
            if keep:
                self._prof.export_chrome_trace(str(dest / KINETO_NAME))  # type: ignore[operator]
            _release_profiler(self._prof)
            self._prof = None
            self._discarding = False
            if keep and self.every is not None:
                # the recording's own folder replays alone: its capture.json names its step
                write_json(dest / CAPTURE_NAME, self.summary(only=-1, folder=dest))
                final = self.out / dest.name.removesuffix(PARTIAL)  # type: ignore[operator]
                if final.exists():
                    shutil.rmtree(final)
                dest.rename(final)
                self.iteration_dirs.append(final.name)
            committed = True
        except BaseException:
            self._abandon(dest if keep and not committed else None)
            raise
        if keep:
            self._held_from = t_stop  # the loop's pause, until step() returns (_end_pause)
            if self.every is None or len(self.recorded_times_s) >= self.record:
                self.done = True
            self.write_summary()  # (without this recording's pause: written again when the capture closes)
        gc.collect()  # the profiler's events and the summaries' temporaries, before the next step starts
        if self._sync is not None:
            self._sync()  # a CUDA call, here rather than in the next step: Kineto tears CUPTI down in the next one

    def _abandon(self, dest: Path | None) -> None:
        """A recording's stop that did not finish (Ctrl-C, an error): stop what is still attached, best effort,
        and remove what it wrote (``dest``: the partial iteration folder, or the capture folder's traces), with
        the recorded step it was of, so that nothing half-written is left for a replay to take."""
        for obj, call in ((self._rf, lambda o: o.__exit__(None, None, None)), (self._et, lambda o: o.stop()),
                          (self._et, lambda o: o.unregister_callback()),
                          (self._prof, lambda o: o.__exit__(None, None, None))):
            if obj is not None:
                try:
                    call(obj)
                except BaseException:  # noqa: BLE001 - already failing: the first error is the one raised
                    pass
        self._rf = self._et = self._prof = None
        self._discarding = False
        Path(self._et_tmp).unlink(missing_ok=True)
        if dest is None:
            return
        if dest == self.out:
            for name in (ET_NAME, KINETO_NAME):
                (dest / name).unlink(missing_ok=True)
        else:
            shutil.rmtree(dest, ignore_errors=True)
        if self.recorded_times_s:
            self.recorded_times_s.pop()
            self.recorded_iterations.pop()

    def close(self, warn: bool = True) -> None:
        """Finish: stop observers if a recorded step is open, and write ``capture.json`` (with how the loop
        ended, :meth:`ended_by`, and every kept recording's pause)."""
        self._sketch.stop()  # a loop that ended in its last warm-up step
        self.ended_by(None)  # (a no-op when an error or Ctrl-C was said first)
        writes = self._writes
        if self.recording and self.every is not None:  # a recording the loop did not finish: not kept
            self._stop_recording(keep=False)
            self.write_summary()
            self.done = True
        elif self.done and not self.finished:  # the loop ended while the idle recorder's cost was timed
            self.write_summary()
        elif self.recording and not self._discarding and self.recorded_times_s:
            self._stop_recording()
        elif self.recording:  # the loop ended before a kept step was whole: no trace of it is kept
            self._stop_recording(keep=False)
            self.write_summary()
            self.done = True
        elif not self.done:
            self.write_summary()
            self.done = True
        self._end_pause()  # a recording stopped here: the loop had ended, its stop is timed all the same
        if self._stale or self._writes == writes:  # the last write lacks a pause, or how the loop ended
            self.write_summary()
        if warn and self is not _active and not self.recorded_times_s:  # (the capture command says it its way)
            warnings.warn(f"benchmint capture in {self.out}: incomplete, no step recorded ({len(self.step_times_s)} "
                          f"timed; it needs warmup {self.warmup} + measure {self.measure} + discard {self.discard} + "
                          f"record {self.record} steps); run the loop longer", stacklevel=3)

    # -- summary -------------------------------------------------------------------------------------------
    def summary(self, only: int | None = None, folder: Path | None = None) -> dict:
        """capture.json's content; ``only``: of that recorded step alone (an iteration folder's, in
        ``folder``)."""
        import torch

        xs = self.step_times_s
        files = {}
        for key, name in (("et", ET_NAME), ("kineto", KINETO_NAME)):
            if ((folder or self.out) / name).exists():  # type: ignore[operator]
                files[key] = name
        rec = self.recorded_times_s if only is None else self.recorded_times_s[only:][:1]
        its = self.recorded_iterations if only is None else self.recorded_iterations[only:][:1]
        return {
            "schema_version": SCHEMA_VERSION,
            "step_time_s": {**timing_summary(xs), "values": xs},
            "recorded_step_time_s": rec,
            "discarded_step_time_s": self.discarded_times_s,
            "how_measured": (
                "wall time between consecutive step() calls, time.perf_counter_ns, no profiler or observer "
                f"attached, after {self.warmup} warm-up steps"
                + ("; torch.cuda.synchronize() at each step boundary" if self._sync is not None else "")
            ),
            "complete": bool(rec) and len(xs) >= MIN_MEASURE,
            "warmup_steps": self.warmup,
            "measured_steps": len(xs),
            "recorded_steps": len(rec),
            # the ProfilerStep numbers of the recorded steps that ended: a loop that stops during a recorded
            # step leaves a partial last ProfilerStep in the trace, which the replay passes over
            "recorded_iterations": its,
            "note": self.note,
            # how the loop ended (ENDED_*; None: still running when this was written), and the error or status
            "ended": self.ended,
            "ended_why": self.ended_why,
            "discarded_steps": len(self.discarded_times_s),
            "threads": self._threads if self._threads is not None else torch.get_num_threads(),
            "device": _device_in_use(self.device),
            "torch_version": torch.__version__,
            "host": ({**self._host, "torch_threads": torch.get_num_threads()} if self._host is not None
                     else host_summary()),
            "command_line": self.command_line if self.command_line is not None else list(sys.argv),
            "model": describe_model(self.model) if self.model is not None else None,
            "system_metrics": getattr(self, "system_metrics", None),  # the measured steps' (core.sysmetrics)
            "pace": pace.summary(self._pace),  # the machine's pace beside the measured steps (core.pace)
            # per lookup index tensor of the last warm-up step: shape, table rows, distinct rows touched
            "index_sketch": self._sketch.result,
            "files": files,
            "every": self.every,
            "iterations": self.iteration_dirs if only is None else None,
            "recording_cost": {**recording_cost(xs, rec, self.idle_times_s, self.after_times_s),
                               "write_s": (percentile(self.write_times_s, 50) if self.write_times_s and only is None
                                           else None),
                               "write_how": (WRITE_HOW if only is None else
                                             "in the capture.json of the folder above: this file is written "
                                             "during the pause it would measure")},
        }

    def write_summary(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        self._writes += 1
        self._stale = False
        return write_json(self.out / CAPTURE_NAME, self.summary())  # type: ignore[operator]


def _release_profiler(prof: Any) -> None:
    """Drop what a stopped ``torch.profiler.profile`` keeps of its session (the Kineto results and the parsed
    event list), so that one collection frees it."""
    inner = getattr(prof, "profiler", None)
    for obj, names in ((inner, ("kineto_results", "_function_events", "_old_function_events", "_stats")), (prof, ("profiler",))):
        for name in names:
            if obj is not None and getattr(obj, name, None) is not None:
                try:
                    setattr(obj, name, None)
                except Exception:  # noqa: BLE001 - a read-only attribute in some torch version: left as it is
                    pass


def recording_cost(unobserved: list[float], recorded: list[float], idle: list[float],
                   after: list[tuple[int, float]] | None = None) -> dict[str, Any]:
    """What recording cost: the recorded steps against the un-observed ones timed before any recording, and
    the un-observed steps timed after the recorder's first recording (between recordings, or after the last,
    past the ``AFTER_RECORDING`` right after each) against those before it. A difference within the noise is
    not a cost: ``idle_cost_measurable`` is true only when the two sets of step times differ (Mann-Whitney U,
    p < 0.05) and the medians by more than 2%. ``after``: (steps since the recording, seconds) of the steps
    right after each recording: their medians per position over the un-observed median."""
    from benchmint.core.stats import percentile

    def med(xs: list[float]) -> float | None:
        return percentile(xs, 50) if xs else None

    base, rec, idl = med(unobserved), med(recorded), med(idle)
    out: dict[str, Any] = {
        "unobserved_step_s": base, "recorded_step_s": rec, "idle_step_s": idl,
        "recorded_vs_unobserved": rec / base if rec and base else None,
        "idle_vs_unobserved": idl / base - 1 if idl and base else None,
        "idle_steps": len(idle), "unobserved_steps": len(unobserved),
        "after_recording_steps": len(after or ()),
        "after_recording_vs_unobserved": ([med([t for k, t in after if k == d]) / base  # type: ignore[operator]
                                           for d in sorted({k for k, _t in after})] if after and base else None),
        "idle_cost_measurable": None, "idle_p_value": None,
        "how": ("medians of wall step times (time.perf_counter_ns between step() calls): recorded steps with the "
                "ExecutionTraceObserver and Kineto attached; un-observed steps before the first recording "
                "(nothing attached); idle steps: un-observed steps after the recorder's first recording, "
                f"but for the {AFTER_RECORDING} right after each recording (after_recording_vs_unobserved, by "
                "position: any pause of the loop slows the steps after it, the recording's cost, not the idle "
                "recorder's)"),
    }
    if len(idle) >= 3 and len(unobserved) >= 3 and base and idl:
        try:
            from scipy.stats import mannwhitneyu

            p = float(mannwhitneyu(idle, unobserved, alternative="two-sided").pvalue)
        except Exception:  # scipy missing (an exported runner's environment): the medians alone
            p = None
        out["idle_p_value"] = p
        out["idle_cost_measurable"] = bool(abs(idl / base - 1) > 0.02 and (p is None or p < 0.05))
    return out


def describe_model(model: Any) -> dict[str, Any]:
    """What a capture records of the model: class, architecture (a transformers config's), parameter count
    and dtype; best effort, never raises."""
    out: dict[str, Any] = {"class": f"{type(model).__module__}.{type(model).__qualname__}"}
    try:
        cfg = getattr(model, "config", None)
        archs = getattr(cfg, "architectures", None) if cfg is not None else None
        out["architecture"] = archs[0] if archs else type(model).__name__
        out["model_type"] = getattr(cfg, "model_type", None) if cfg is not None else None
    except Exception:
        out["architecture"], out["model_type"] = type(model).__name__, None
    try:
        by_dtype: dict[str, int] = {}
        for p in model.parameters():
            key = str(p.dtype).removeprefix("torch.")
            by_dtype[key] = by_dtype.get(key, 0) + p.numel()
        out["parameter_count"] = int(sum(by_dtype.values()))
        # the dtype most parameters are in (a mixed-precision model's fp32 norms do not decide it)
        out["dtype"] = max(by_dtype, key=lambda k: by_dtype[k]) if by_dtype else None
    except Exception:
        out["parameter_count"], out["dtype"] = None, None
    return out


def capture_steps(fn: Any, out: str | os.PathLike, warmup: int = 10, measure: int = 10, record: int = 1,
                  device: str | None = None, model: Any = None, discard: int = 1, every: int | None = None) -> dict:
    """Capture ``fn()`` (one step) called repeatedly; returns the ``capture.json`` content. ``model``: the
    torch module the step runs, described in capture.json (architecture, parameters, dtype) so that replays
    of the trace say what model it came from. ``every``: record ``record`` steps, one in every N, each in its
    own folder. The loop runs on after the recording until ``measure`` un-observed steps are timed with the
    recorder idle (the cost of having it attached)."""
    cap = Capture(out, warmup=warmup, measure=measure, record=record, device=device, model=model, discard=discard,
                  every=every)
    with cap:
        while not cap.finished:
            fn()
            cap.step()
    return cap.summary()


# -- process-wide capture for the CLI -------------------------------------------------------------------------
_active: Capture | None = None
_manual = False


def step() -> None:
    """Mark the end of a step for a capture started by ``benchmint capture``; a no-op otherwise."""
    global _manual
    _manual = True
    if _active is not None:
        _active.step()


def _ends_steps(opt: Any) -> bool:
    """Whether ``opt.step`` is (or wraps) the step :func:`_optimizer_hook` put on it: a wrapper added on top (an
    LR scheduler's) keeps it; one that puts back the optimizer's own method (Accelerate's mixed-precision step
    does, every step) drops it."""
    f = vars(opt).get("step")
    for _ in range(8):
        if f is None:
            return False
        if getattr(f, "_benchmint_ends_step", False):
            return True
        f = getattr(f, "__wrapped__", None) or getattr(f, "__func__", None)
    return False


def _optimizer_hook(opt: Any, *_: object) -> None:
    """Every optimizer's ``step`` ends a step of a script that does not call :func:`step` itself. The hook runs
    inside the optimizer's ``Optimizer.step#...`` profiler scope: a step boundary taken there cuts the scope in
    two (its ops recorded, its node not, so a recorded step lost its optimizer, and a second recorded step took
    in the next one's ops). So a call of an optimizer whose ``step`` does not end the step yet ends it here, as
    before, and puts a bound method on the instance (as LR schedulers do, so that one made later wraps it in
    turn) that calls the optimizer's own step and then ends the step, after the scope has closed."""
    if _active is None or _manual or _ends_steps(opt):
        return
    inner = opt.step
    own = getattr(inner, "__func__", None)  # (the optimizer's method unbound: no second reference to it)

    def stepped(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = own(self, *args, **kwargs) if own is not None else inner(*args, **kwargs)
        if _active is not None and not _manual:
            _active.step()
        return out

    stepped._benchmint_ends_step = True  # type: ignore[attr-defined]
    if getattr(inner, "_wrapped_by_lr_sched", False):  # an LR scheduler's mark: it warns when the step lost it
        stepped._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    try:
        opt.step = types.MethodType(stepped, opt)
    except (AttributeError, TypeError):  # pragma: no cover - an optimizer that refuses an attribute: as before
        pass
    _active.step(_from_optimizer=True)


def start_from_env() -> Capture | None:
    """Start the process-wide capture described by ``BENCHMINT_CAPTURE_*`` variables (used by the CLI)."""
    global _active
    out = os.environ.get(ENV_OUT)
    if not out or _active is not None:
        return _active
    cmd = os.environ.get(ENV_CMD)
    cap = Capture(
        out,
        warmup=int(os.environ.get(ENV_WARMUP, "10")),
        measure=int(os.environ.get(ENV_MEASURE, "10")),
        record=int(os.environ.get(ENV_RECORD, "1")),
        discard=int(os.environ.get(ENV_DISCARD, "1")),
        every=int(os.environ[ENV_EVERY]) if os.environ.get(ENV_EVERY) else None,
        command_line=cmd.split("\x1f") if cmd else list(sys.argv),
    )
    cap.beacon = rank_watch.Beacon(os.environ.get(rank_watch.ENV_BEACON))
    rank_watch.dump_stacks_on_signal(os.environ.get(rank_watch.ENV_STACKS))
    try:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(_optimizer_hook)
    except Exception:  # pragma: no cover - older torch
        pass
    cap.start()
    _active = cap
    atexit.register(cap.close)
    return cap


def _main(argv: list[str], sigint: Any = None) -> None:
    """``python -m benchmint.trace.capture script.py args`` or ``... -m module args``; ``sigint``: the SIGINT
    handler to give the script (the process's own, where a boot line replaced it while benchmint loaded)."""
    if not argv:
        raise SystemExit("usage: python -m benchmint.trace.capture (SCRIPT | -m MODULE) [ARGS...]")
    cap = start_from_env()
    if sigint is not None:  # the handler the process started with, for the script (cli/capture.py BOOT)
        signal.signal(signal.SIGINT, sigint)
    try:
        if argv[0] == "-m":
            sys.argv = argv[1:]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = argv
            sys.path.insert(0, str(Path(argv[0]).resolve().parent))
            runpy.run_path(argv[0], run_name="__main__")
    except BaseException as e:  # how the script ended goes into capture.json (written at exit, by close())
        if cap is not None:
            cap.ended_by(e)
        if isinstance(e, KeyboardInterrupt) and not os.environ.get("BENCHMINT_DEBUG"):
            # Ctrl-C is how a long job under --every ends: the command says what was kept, without the
            # script's traceback from wherever the interrupt landed (BENCHMINT_DEBUG=1 keeps it)
            raise SystemExit(130) from None
        raise
    finally:
        if cap is not None:  # from here to the process's exit: the script's end (the watch bounds it)
            cap.beacon.mark(rank_watch.SCRIPT_END, cap._ended)


if __name__ == "__main__":
    # run through the importable module so that the user's ``from benchmint.trace import capture`` sees the
    # same process-wide state as this entry point
    from benchmint.trace import capture as _mod

    _mod._main(sys.argv[1:])

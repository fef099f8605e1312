"""Fidelity: make the replayed iteration take what the UN-observed original step took.

Recording a step (ExecutionTraceObserver + Kineto) slows it: every recorded node costs the observers time
(about 7 us per node for the ET, 1 us for Kineto with record_shapes, here), which lands in the recorded
durations of the ops (their children's nodes) and in the gaps next to them (the op's own node), so on small
CPU models the recorded step is 1.5x-5x the real one and recorded times cannot be replayed as they stand.
A plain Python loop between the ops is not slowed by the observers (1.0x), nn.Module calls between ops
1.0x-1.2x in a later probe (an earlier one read 1.6x-3.5x); what the original's own Python costs under them
is what the trace-only estimate cannot measure directly. benchmint records its OWN replay of the trace under the
same observers (same ops, same children, so the same observer cost op by op) and takes the difference, op by
op, as what the original did besides the op (``estimate_original``).
``capture.json``, when it lies beside the trace, gives the measured un-observed step time instead.

The replay's own ops take what they take; the rest of the original step (Python, framework, autograd-engine
and optimizer bookkeeping between the ops) is spent as CPU time between the ops (``--gaps recorded``),
placed where the recorded original spent more time than the recorded replay.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmint.core import clock, profiler_session
from benchmint.core.stderr import filtered_native_stderr
from benchmint.replay.collective_time import communication_gaps
from benchmint.replay.phases import engine_scope
from benchmint.replay.plan import Plan
from benchmint.replay.types import TraceView, is_collective
from benchmint.replay.value_probe import zero_input_ratios

PROBE_SCOPES = 400
MIN_GAP_NS = 1000
GAP_CAP_S = 3e-4  # at most this much of one recorded gap counts as the original's own work
SPEED_OP_MIN_S = 2e-5  # ops at least this long (un-observed) judge the recording's speed
SPEED_TOL = 0.1  # a recording within 10% of the replay's speed is taken as is
SPEED_AGREE = 0.6  # ... and so is one where fewer than 60% of the judging ops are off on the same side
VALUE_RATIO = 1.5  # an op whose time on zeros is this far from its time on the plan's inputs depends on values

#: Ops that only allocate, fill or copy memory: their time depends on sizes and layout, never on the values
#: they move (the backward of a slice or a select allocates a zeroed gradient of the input's size and copies
#: into it). The replay reproduces sizes and strides, so a recorded duration of theirs longer in the original
#: than in the replay's recording is the recording's: the original's first recording takes fresh-page faults
#: as the observers' buffers grow, and these ops write fresh pages (a packed LSTM's 178 ``slice_backward``
#: calls recorded 270-470 us against 100-115 us, 21 us un-observed). The durations part of the estimate
#: leaves them out. Views are not among them: they write no memory, and in a training step their recorded
#: time holds the autograd bookkeeping the un-observed original does too (the replay runs in inference mode).
#: A value-dependent op (a ``sqrt`` over an optimizer state of zeros) still counts.
VALUE_INDEPENDENT = frozenset(f"aten::{n}" for n in (
    "slice_backward", "select_backward", "narrow_copy", "zeros", "zeros_like", "new_zeros", "ones", "ones_like",
    "new_ones", "full", "full_like", "new_full", "empty", "empty_like", "empty_strided", "new_empty",
    "new_empty_strided", "fill_", "zero_", "copy_", "clone", "contiguous", "cat", "stack", "to", "_to_copy",
    "constant_pad_nd", "repeat"))


@dataclass
class Calibration:
    """The observers' cost on this machine, measured on the replay itself."""

    replay_s: float  # un-observed replay iteration (no gaps)
    replay_observed_s: float  # recorded span of the replay iteration (median over repeats)
    replay_op_nodes: int
    replay_scope_nodes: int
    scope_cost_s: float
    op_node_cost_s: float
    # per plan step: (recorded gap before, recorded duration) of the replayed op in the observed replay
    replay_slots: dict[int, tuple[float, float]] = field(default_factory=dict)
    replay_tail_s: float = 0.0
    repeats: int = 0
    observer_overhead_s: float = 0.0  # recorded span of the scoped replay - its un-observed time
    scopes_unobserved_s: float = 0.0
    # the same without the re-created scopes (what estimate_original compares with)
    bare_slots: dict[int, tuple[float, float]] = field(default_factory=dict)
    bare_tail_s: float = 0.0
    scope_event_cost_s: float = 0.0  # observers' cost of one scope enter or exit (probe: observed - unobserved)
    # ... of one scope event of the autograd engine (opened in C++: cheaper); None: as scope_event_cost_s
    engine_event_cost_s: float | None = None
    op_unobserved_s: dict[int, float] = field(default_factory=dict)  # per plan step: its op's un-observed time
    # the observers' cost per recorded node inside the ops' recorded durations (:func:`in_op_node_cost`)
    in_op_node_cost_s: float = 0.0
    # per plan step: its op's time on zeros over its time on the plan's inputs (benchmint.replay.value_probe)
    zero_input_ratio: dict[int, float] = field(default_factory=dict)
    original_slowdown: float = 1.0  # set by estimate_original: the factor applied to the original's times
    original_speed: dict[str, Any] | None = None  # ... and what recording_speed saw (None: not judged)
    estimate_parts: dict[str, Any] | None = None  # set by estimate_original: what its estimate is made of

    def to_dict(self) -> dict[str, Any]:
        return {
            "replay_unobserved_s": self.replay_s,
            "replay_observed_s": self.replay_observed_s,
            "replay_op_nodes": self.replay_op_nodes,
            "replay_scope_nodes": self.replay_scope_nodes,
            "observer_cost_per_scope_s": self.scope_cost_s,
            "observer_cost_per_op_node_s": self.op_node_cost_s,
            "observer_cost_per_node_in_ops_s": self.in_op_node_cost_s,
            "repeats": self.repeats,
            "observer_overhead_s": self.observer_overhead_s,
            "observer_cost_per_scope_event_s": self.scope_event_cost_s,
            "observer_cost_per_engine_scope_event_s": self.engine_event_cost_s,
            "original_recording_slowdown": self.original_slowdown,
            "original_recording_speed": self.original_speed,
            "estimate_parts": self.estimate_parts,
            # plan step -> its op's time on zeros over its time on the plan's inputs (the probed ones only)
            "zero_input_ratio": {str(k): v for k, v in sorted(self.zero_input_ratio.items())},
            "how": "replay recorded under ExecutionTraceObserver + Kineto (record_shapes) vs un-observed",
        }


# scopes torch opens itself with data attached that a bare record_function lacks: re-created empty, the
# profiler reads that data anyway (``record_param_comms``: c10d's ParamCommsDebugInfo; Kineto segfaulted)
NOT_RECREATED = ("record_param_comms",)


def recreated_scopes(view: TraceView) -> list[tuple[int, str, int, str]]:
    """The recorded scope events the calibration opens and closes around the replayed ops, in the order it
    runs them: not those of ``NOT_RECREATED``, and not a scope that would close while one opened after it
    is still open (the scopes of two threads that overlap, replayed on one): those the replay's recording
    would nest wrongly. Where an op's place holds both, the scopes opened before it close first (in their
    recorded order: two threads' scopes meet there), then the ones that open there (in their recorded order)."""
    kept = [e for e in view.scopes if e[3] not in NOT_RECREATED]
    opened = {nid: pos for pos, kind, nid, _name in kept if kind == "enter"}
    events = sorted(kept, key=lambda e: (e[0], not (e[1] == "exit" and opened.get(e[2], e[0]) < e[0])))
    open_: list[int] = []
    crossing: set[int] = set()
    for _pos, kind, nid, _name in events:
        if kind == "enter":
            open_.append(nid)
        elif open_ and open_[-1] == nid:
            open_.pop()
        else:
            crossing.add(nid)
            if nid in open_:
                open_.remove(nid)
    crossing.update(open_)  # never closed
    return [e for e in events if e[2] not in crossing]


def scope_inserts(view: TraceView) -> dict[int, list[str]]:
    """Source lines that open and close the recorded scopes between the replayed ops."""
    out: dict[int, list[str]] = {}
    for pos, kind, nid, name in recreated_scopes(view):
        line = f"_h{nid} = _rfe({name!r}, None)" if kind == "enter" else f"_rfx(_h{nid})"
        out.setdefault(pos, []).append(line)
    return out


def _timed_observed(loop: Callable[[], int]) -> tuple[int, int]:
    """``loop``'s fastest of three runs (nanoseconds, after one untimed) under ET + Kineto, and un-observed."""
    from torch.profiler import ProfilerActivity

    from benchmint.trace.capture import scratch_dir

    loop()
    base = min(loop() for _ in range(3))
    with tempfile.TemporaryDirectory(prefix="benchmint-probe-", dir=scratch_dir()) as tmp:
        with _observed([ProfilerActivity.CPU], os.path.join(tmp, "et.json")):
            obs = min(loop() for _ in range(3))
    return obs, base


def _probe_scope_cost() -> tuple[float, float]:
    """Seconds one empty record_function scope costs on this machine: (under ET + Kineto, un-observed)."""
    enter = torch.ops.profiler._record_function_enter_new
    leave = torch.ops.profiler._record_function_exit._RecordFunction

    def loop() -> int:
        t0 = clock.now_ns()
        for _ in range(PROBE_SCOPES):
            leave(enter("benchmint::probe", None))
        return clock.now_ns() - t0

    obs, base = _timed_observed(loop)
    return max(0.0, obs / PROBE_SCOPES / 1e9), base / PROBE_SCOPES / 1e9


class _Identity(torch.autograd.Function):
    """A graph node whose backward runs no op: what the engine records around it is its two scopes alone."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return g


def _probe_engine_scope_cost() -> float:
    """Seconds the observers add to one scope event of the autograd engine on this machine: a backward
    through ``PROBE_SCOPES`` nodes that run no op, each recorded as two scopes (the engine's
    ``evaluate_function`` and the node's own), under ET + Kineto against un-observed, per event. The
    engine opens its scopes in C++: they cost the observers less than a Python ``record_function`` scope
    (3.5 against 4.6 us per event here, in a chain and in an encoder-decoder's backward alike), and a
    training step's backward has thousands of them."""
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.ones(4, requires_grad=True)
        g = torch.ones(4)

        def loop() -> int:
            y = x
            for _ in range(PROBE_SCOPES):
                y = _Identity.apply(y)
            t0 = clock.now_ns()
            torch.autograd.grad(y, x, g)  # not backward: accumulating into x.grad would record ops
            return clock.now_ns() - t0

        obs, base = _timed_observed(loop)
    return max(0.0, (obs - base) / (4 * PROBE_SCOPES + 2) / 1e9)  # + the leaf's evaluate_function, empty


@contextmanager
def _observed(activities: list, et_path: str) -> Iterator[Any]:
    """Kineto (with shapes) and the ET observer writing ``et_path`` around the block; yields the profiler.
    A failing block must not leave the observers attached to what runs next."""
    from torch.profiler import ExecutionTraceObserver, ProfilerActivity, profile

    cuda = ProfilerActivity.CUDA in activities
    prof = profile(activities=activities, record_shapes=True)
    profiler_session.start(prof, cuda)  # CUPTI released when the session ends
    try:
        et = ExecutionTraceObserver()
        et.register_callback(et_path)
        with filtered_native_stderr():
            et.start()
        try:
            yield prof
        finally:
            with filtered_native_stderr():
                et.stop()
            et.unregister_callback()
    finally:
        with filtered_native_stderr():
            prof.__exit__(None, None, None)
        if cuda:
            torch.cuda.synchronize()  # Kineto tears CUPTI down in the next CUDA call: here, not in a timed one


def record_replay(plan: Plan, fn: Callable, out_dir: str | os.PathLike, tag: int = 0) -> tuple[Path, Path]:
    """Run one replay iteration under ET + Kineto, as ``benchmint capture`` records a step."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    et_path, k_path = out / f"replay_et_{tag}.json", out / f"replay_kineto_{tag}.json"
    activities = [ProfilerActivity.CPU]
    if plan.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    R = plan.registers()
    with plan.grad_context():
        with _observed(activities, str(et_path)) as prof:
            with record_function("ProfilerStep#0"):
                fn(R)
                if plan.device.type == "cuda":
                    torch.cuda.synchronize()
    prof.export_chrome_trace(str(k_path))
    return et_path, k_path


def _match_replay_ops(plan: Plan, rview: TraceView) -> tuple[dict[int, tuple[float, float]], float]:
    """Map the recorded replay's top-level ops to plan steps (same order; extra view ops are skipped).

    A substituted step (a portable equivalent, or nothing for ops such as record_stream) is not recorded under
    its own name, so it is left out of the expected sequence; otherwise matching would stop at it."""
    expected = [s for s in plan.steps if s.replayed and s.substitute is None]
    slots: dict[int, tuple[float, float]] = {}
    j = 0
    prev_end = rview.step_start_s
    ops = [o for o in rview.ops if o.start_s is not None and o.dur_s is not None]
    for o in ops:
        if j < len(expected) and o.name == expected[j].op.name:
            gap = (o.start_s - prev_end) if prev_end is not None else 0.0  # type: ignore[operator]
            slots[expected[j].index] = (max(0.0, gap), o.dur_s)  # type: ignore[arg-type]
            j += 1
            prev_end = o.start_s + o.dur_s  # type: ignore[operator]
    tail = 0.0
    if rview.step_start_s is not None and rview.step_span_s is not None and prev_end is not None:
        tail = max(0.0, rview.step_start_s + rview.step_span_s - prev_end)
    return slots, tail


class CalibrationFailed(Exception):
    """The replay could not be recorded under the observers, so nothing can be estimated from the trace."""


def _record_slots(plan: Plan, fn: Callable, repeats: int, sync: Callable[[str], None] | None = None,
                  tag: str = "", probe: Callable[[], None] | None = None
                  ) -> tuple[list[tuple[float, int, int, TraceView]], dict[int, tuple[float, float]], float]:
    """Record ``fn`` (a replay iteration) under the observers ``repeats`` times (after one untimed recording):
    the recordings as (span, op nodes, non-op nodes, view), and per plan step the median (gap before,
    duration) of its op over the recordings, and the median tail (one recording's stall does not count).
    Every recording is made before any is read. ``sync``: called with a name before each recording, the same
    names on every rank of a multi-rank replay (the ranks then record each repeat at once, as the original's
    ranks recorded their step, and none records while another reads its traces: reading a recording is
    Python-heavy, and on cores shared by the ranks it slowed the other ranks' recordings, so that the observers'
    cost measured on the replay came out above the original's and the estimate fell to the ops alone).
    ``probe``: called before each kept recording (after ``sync``), to measure something at the recordings' pace."""
    from benchmint.replay.source import view_from_trace
    from benchmint.trace import load
    from benchmint.trace.capture import scratch_dir
    from benchmint.trace.kineto import join_kineto

    runs: list[tuple[float, int, int, TraceView]] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="benchmint-cal-", dir=scratch_dir()) as tmp:
        made = []
        for k in range(-1, repeats):  # the first recording (-1) pays a process's one-time costs: not used
            if sync is not None:
                sync(f"record{tag}/{k}")
            if probe is not None and k >= 0:
                probe()
            try:
                made.append((k, record_replay(plan, fn, tmp, k)))
            except Exception as e:  # noqa: BLE001 - one bad recording is skipped; all bad is reported
                errors.append(f"{type(e).__name__}: {e}")
        for k, (et_path, k_path) in made:
            if k < 0:
                continue
            try:
                tr = load(et_path)
                join = join_kineto(tr, k_path)
                rview = view_from_trace(tr, join)
            except Exception as e:  # noqa: BLE001 - one bad recording is skipped; all bad is reported
                errors.append(f"{type(e).__name__}: {e}")
                continue
            if rview.step_span_s is None:
                errors.append("the recording has no step span")
                continue
            runs.append((rview.step_span_s, rview.total_nodes - rview.non_op_nodes, rview.non_op_nodes, rview))
    if not runs:
        raise CalibrationFailed(f"none of the {repeats} recordings of the replay could be read ({errors[0]})"
                                if errors else "the replay was not recorded")
    per: dict[int, list[tuple[float, float]]] = {}
    tails = []
    for r in runs:
        sl, tl = _match_replay_ops(plan, r[3])
        for i, v in sl.items():
            per.setdefault(i, []).append(v)
        tails.append(tl)
    slots = {i: (statistics.median(g for g, _ in v), statistics.median(d for _, d in v)) for i, v in per.items()}
    return runs, slots, statistics.median(tails) if tails else 0.0


def calibrate(plan: Plan, fn0: Callable, replay_s: float, repeats: int = 5) -> Calibration:
    """Record the replay under the observers ``repeats`` times, with the original's scopes around the ops
    (so both recordings have the same structure), and, when the step has scopes, also without them (what
    ``estimate_original`` compares with). Raises ``CalibrationFailed``, saying why, when no recording could
    be read."""
    inserts = scope_inserts(plan.view)
    n_scopes = sum(1 for e in recreated_scopes(plan.view) if e[1] == "enter")
    fn_scoped = plan.compile(inserts=inserts) if inserts else fn0
    comm = getattr(plan, "comm", None)
    sync = comm.phase if comm is not None else None  # the ranks record each repeat at once
    # the scope probe runs before every recording, and its median counts: a probe is a few milliseconds,
    # and one taken alone read anything from 4 to 16 us per event here within a minute, times the step's
    # scope events (1,868 in a small encoder-decoder's training step: 7 to 30 ms against a 10 ms step)
    probes: list[tuple[float, float]] = []
    engine: list[float] = []  # ... and the autograd engine's scopes, where the step has them
    n_engine = sum(1 for _p, kind, _n, name in plan.view.scopes if kind == "enter" and engine_scope(name))

    def probe() -> None:
        probes.append(_probe_scope_cost())
        if n_engine:
            engine.append(_probe_engine_scope_cost())

    try:
        runs, slots, tail = _record_slots(plan, fn_scoped, repeats, sync, "scoped", probe)
    except CalibrationFailed:
        if sync is not None:  # the other ranks record their bare pass: this rank joins it before failing
            with contextlib.suppress(CalibrationFailed):
                _record_slots(plan, fn0, repeats, sync, "bare")
        raise
    bare_slots, bare_tail = slots, tail
    if inserts or sync is not None:  # (every rank records the same passes: a rank's trace may lack scopes)
        try:
            _bare, bare_slots, bare_tail = _record_slots(plan, fn0, repeats, sync, "bare", probe)
        except CalibrationFailed:
            bare_slots, bare_tail = {}, 0.0  # the estimate falls back to the whole observed span
    runs.sort(key=lambda r: r[0])
    span, op_nodes, scope_nodes, rview = runs[len(runs) // 2]
    if not probes:
        probe()
    scope_obs = statistics.median(o for o, _u in probes)
    scope_unobs = statistics.median(u for _o, u in probes)
    event_cost = statistics.median(max(0.0, o - u) / 2 for o, u in probes)
    overhead = max(0.0, span - replay_s - n_scopes * scope_unobs)
    op_cost = max(0.0, (overhead - scope_obs * scope_nodes) / max(op_nodes, 1))
    op_times = per_op_replay_times(plan, None, iters=3)
    ratios = zero_input_ratios(plan, op_times, steps=once_a_step(plan.view))
    return Calibration(replay_s=replay_s, replay_observed_s=span, replay_op_nodes=op_nodes,
                       replay_scope_nodes=scope_nodes, scope_cost_s=scope_obs, op_node_cost_s=op_cost,
                       replay_slots=slots, replay_tail_s=tail, repeats=len(runs), observer_overhead_s=overhead,
                       scopes_unobserved_s=n_scopes * scope_unobs, bare_slots=bare_slots, bare_tail_s=bare_tail,
                       scope_event_cost_s=event_cost,
                       engine_event_cost_s=statistics.median(engine) if engine else None,
                       op_unobserved_s=op_times, zero_input_ratio=ratios,
                       in_op_node_cost_s=in_op_node_cost(plan, slots, op_times, op_cost))


def in_op_node_cost(plan: Plan, slots: dict[int, tuple[float, float]], op_times: dict[int, float],
                    op_cost: float) -> float:
    """The observers' cost per recorded node that falls inside an op's recorded duration: over the replayed
    ops, their recorded durations (``slots``) less their un-observed times (``op_times``), per node under them
    (a skipped op's stand-in takes this out of its recorded duration). ``op_cost`` spreads the whole recorded
    span's overhead, the step's own fixed costs included, over its nodes: on a step of 11 nodes it read 45-63 us
    against 29-33 us inside the ops. Falls back to it where no replayed op was matched."""
    num = den = 0.0
    for i, (_gap, d2) in slots.items():
        u = op_times.get(i)
        if u is not None and plan.steps[i].replayed:
            num += d2 - u
            den += plan.steps[i].op.subtree_nodes
    return max(0.0, num / den) if den else op_cost


def once_a_step(view: TraceView) -> list[int]:
    """The ops whose signature (:func:`op_signature`) the step calls once: the ones whose difference
    :func:`estimate_original` counts only when their time depends on values (what the calibration probes)."""
    sigs = [op_signature(op) for op in view.ops]
    count = Counter(sigs)
    return [i for i, sig in enumerate(sigs) if count[sig] == 1]


def estimate_original(view: TraceView, cal: Calibration,
                      other_steps: dict[tuple, list[float]] | None = None) -> float | None:
    """The original step's un-observed time, from the trace and the replay recorded under the same observers.

    The observers' cost lands in the recorded durations and gaps of both recordings alike (it is per node
    and the replay runs the same ops with the same children), so op by op the difference between the
    recorded original and the recorded replay (without re-created scopes, median of the recordings) is what
    the original did besides the replayed op:

    * first, when the original's recording ran slower (or faster) than the replay's throughout, judged on
      ops that compute for a while (``recording_speed``), its times are scaled to this machine's speed: a
      single recorded step taken while the machine was busy is slow in every op and gap alike;
    * gaps: the original's gap before each op less the replay's, less the observers' cost of the original's
      scope events (``record_function`` / autograd-engine scopes opened or closed there, at the probes'
      observed-minus-unobserved cost per event: the engine's C++ scopes probed apart, being cheaper) and of the composites the replay calls the callees of (their
      nodes are in the original's recording only: one op node's cost each); each gap's excess is capped at
      ``GAP_CAP_S``: one larger jump in a single recorded step is the scheduler, a recorder flush or the
      process's first recording, not the model;
    * the gap before the first op also holds the observers' start-up in that recording: it counts no more
      than the median of the other gaps' excess;
    * durations: per op signature (name and input shapes), the median over its calls of (original - replay)
      duration (of two calls, the smaller), times the count, when it exceeds the observers' own cost for
      that op (its recorded less its un-observed duration in the replay) and the op's time can depend on
      values (not one of ``VALUE_INDEPENDENT``, whose differences are the recording's): a systematic
      difference (data-dependent kernels: a sqrt over an optimizer state of zeros runs 5x slower than over
      random values) counts, a stall landing in one call does not, nor a difference the observers can make
      alone (interleaved with the original's Python, their cost per op ran up to twice the replay's here).
      A signature called once a step counts only on more evidence: the smaller of its differences in this
      and the trace's other recorded steps of the same ops (``other_steps``: :func:`duration_differences`),
      and only when its time was shown to depend on values. Every recorded step can pay the same
      recording's cost on a once-a-step op (GPT-2's lm_head linear: +170 us in both steps of a fresh
      process, fresh-page faults on its output, the same time on zeros), so agreeing steps alone do not
      tell values from the recording; Adam's sqrt over an embedding table's state (92% zeros: 1.34 ms live
      against 0.27 ms over random values) is told by both. Grouping by name alone would let many small
      calls (a bias's sqrt) out-vote the few large ones (an embedding table's).

    Their sum, added to the un-observed replay, is the un-observed original; never below the replay.
    """
    if view.step_span_s is None:
        return None
    slots = cal.bare_slots
    orig, orig_tail, matched = _matched_slots(view, cal)
    if not matched:
        return max(view.step_span_s - cal.observer_overhead_s, cal.replay_s)
    n = len(orig)
    c_ev, c_eng = cal.scope_event_cost_s, cal.engine_event_cost_s
    scope_cost = [0.0] * (n + 1)  # per place: the observers' cost of the scope events recorded there
    for pos, _kind, _nid, name in view.scopes:
        scope_cost[min(pos, n)] += c_eng if c_eng is not None and engine_scope(name) else c_ev
    speed, cal.original_speed = recording_speed(orig, matched, cal)
    cal.original_slowdown = speed
    orig_tail /= speed
    gaps: list[float] = []
    by_sig: dict[tuple, list[float]] = {}
    costs: dict[tuple, list[float]] = {}
    calls: dict[tuple, list[int]] = {}
    for i in matched:
        g, d = orig[i]  # type: ignore[misc]
        g, d = g / speed, d / speed
        g2, d2 = slots[i]
        gaps.append(min(g - g2 - scope_cost[i] - view.ops[i].parents_opened * cal.op_node_cost_s, GAP_CAP_S))
        sig = op_signature(view.ops[i])
        by_sig.setdefault(sig, []).append(d - d2)
        calls.setdefault(sig, []).append(i)
        costs.setdefault(sig, []).append(max(0.0, d2 - cal.op_unobserved_s.get(i, d2)))
    if len(gaps) > 2 and matched[0] == 0:
        gaps[0] = min(gaps[0], statistics.median(gaps[1:]))
    tail = min(orig_tail - cal.bare_tail_s - scope_cost[n], GAP_CAP_S)
    durs = left_out = 0.0
    for sig, xs in by_sig.items():
        once = len(xs) == 1  # called once a step: its other recorded steps' calls tell a stall from the op
        m = systematic(xs + (other_steps or {}).get(sig, [])) if once else systematic(xs)
        if m > 0 and m > statistics.median(costs[sig]):
            sensitive = values_matter(calls[sig], cal)
            if sig[0] in VALUE_INDEPENDENT or (once and sensitive is False):
                left_out += m * len(xs)
            elif not once or sensitive:
                durs += m * len(xs)
    cal.estimate_parts = {"ops_matched": len(matched), "gaps_s": sum(gaps), "tail_s": tail, "durations_s": durs,
                          "gaps_positive_s": sum(g for g in gaps if g > 0),
                          # before the callees of composites the replay opened: the original called them from
                          # C++, the replay from Python (negative: what those calls add to the replay)
                          "gaps_in_opened_composites_s": sum(g for i, g in zip(matched, gaps, strict=True)
                                                             if view.ops[i].composite),
                          "durations_value_independent_s": left_out}
    total = sum(gaps) + tail + durs
    return max(cal.replay_s + total, cal.replay_s)


def values_matter(steps: list[int], cal: Calibration) -> bool | None:
    """Whether these plan steps' op takes another time on other values: its time on zeros against its time on
    the plan's inputs (``cal.zero_input_ratio``, :mod:`benchmint.replay.value_probe`), ``VALUE_RATIO`` apart
    either way, median over the probed calls; None when none was probed (too short, or on a GPU)."""
    ratios = [cal.zero_input_ratio[i] for i in steps if i in cal.zero_input_ratio]
    if not ratios:
        return None
    r = statistics.median(ratios)
    return r >= VALUE_RATIO or r <= 1 / VALUE_RATIO


def _matched_slots(view: TraceView, cal: Calibration) -> tuple[list[tuple[float, float] | None], float, list[int]]:
    """The original's recorded (gap, duration) per op and its tail (:func:`original_slots`), and the ops the
    replay's recordings matched: none when fewer than 90% of the recorded ops were."""
    orig, tail = original_slots(view)
    matched = [i for i, o in enumerate(orig) if o is not None and i in cal.bare_slots]
    if not cal.bare_slots or len(matched) < 0.9 * sum(1 for o in orig if o is not None):
        matched = []
    return orig, tail, matched


def duration_differences(view: TraceView, cal: Calibration) -> dict[tuple, list[float]]:
    """Per op signature, the recorded step's duration less the replay's recorded one for each call (the step's
    recording scaled to this machine's speed first, as :func:`estimate_original` does)."""
    if view.step_span_s is None:
        return {}
    orig, _tail, matched = _matched_slots(view, cal)
    speed = recording_speed(orig, matched, cal)[0] if matched else 1.0
    out: dict[tuple, list[float]] = {}
    for i in matched:
        _gap, dur = orig[i]  # type: ignore[misc]
        out.setdefault(op_signature(view.ops[i]), []).append(dur / speed - cal.bare_slots[i][1])
    return out


def estimate_over_steps(view: TraceView, others: list[TraceView] | tuple[TraceView, ...],
                        cal: Calibration) -> float | None:
    """:func:`estimate_original` of the replayed step (``view``), and of each other recorded step that ran the
    same ops (``others``), each against the same recordings of the replay: the median. One recorded step's
    gaps carry whatever preempted it (its estimate of a small CNN's step moved by 3x between the five steps of
    one recording, here); the steps of one recording share the observers and the model, so their median is
    the step's own time with less of that. ``cal.estimate_parts`` stays the replayed step's, with
    ``per_step_s`` (every step's estimate, the replayed one first) beside it."""
    if view.step_span_s is None:
        return None
    steps = [view, *(o for o in others if o.step_span_s is not None and view.same_ops(o))]
    diffs = [duration_differences(v, cal) for v in steps]

    def elsewhere(k: int) -> dict[tuple, list[float]]:
        out: dict[tuple, list[float]] = {}
        for j, d in enumerate(diffs):
            if j != k:
                for sig, xs in d.items():
                    out.setdefault(sig, []).extend(xs)
        return out

    est = estimate_original(view, cal, elsewhere(0))
    if est is None:
        return None
    keep = (cal.original_slowdown, cal.original_speed, cal.estimate_parts)
    ests = [est]
    for k, other in enumerate(steps[1:], 1):
        e = estimate_original(other, cal, elsewhere(k))
        if e is not None:
            ests.append(e)
    cal.original_slowdown, cal.original_speed, cal.estimate_parts = keep
    if len(ests) > 1 and cal.estimate_parts is not None:
        cal.estimate_parts = {**cal.estimate_parts, "per_step_s": ests}
    return statistics.median(ests)


def recording_speed(orig: list[tuple[float, float] | None], matched: list[int],
                    cal: Calibration) -> tuple[float, dict[str, Any]]:
    """How much slower the original's recording ran than this machine's recordings of the replay, judged
    on the ops that compute for a while (>= ``SPEED_OP_MIN_S`` un-observed here, so the observers' share is
    small): the median of (original / replay) recorded duration, clamped to 2x either way. It is applied only
    when it is more than ``SPEED_TOL`` off and at least ``SPEED_AGREE`` of those ops lie beyond the tolerance on
    the same side (a whole recording slowed by a busy machine, or made on another one), not when a few
    data-dependent ops (an optimizer's sqrt over zeros) pull the median. Returns the factor (1.0 when not
    applied) and what it saw (``Calibration.original_speed``)."""
    ratios = []
    for i in matched:
        u = cal.op_unobserved_s.get(i)
        rec = cal.bare_slots[i][1]
        o = orig[i]
        if u is not None and u >= SPEED_OP_MIN_S and rec > 0 and o is not None:
            ratios.append(o[1] / rec)
    if len(ratios) < 5:
        return 1.0, {"ops": len(ratios), "applied": False, "why": "fewer than 5 ops of >= 20 us"}
    med = statistics.median(ratios)
    side = sum(1 for x in ratios if (x > 1 + SPEED_TOL if med > 1 else x < 1 - SPEED_TOL))
    m = min(2.0, max(0.5, med))
    applied = abs(m - 1.0) >= SPEED_TOL and side >= SPEED_AGREE * len(ratios)
    factor = m if applied else 1.0
    return factor, {"ops": len(ratios), "median_ratio": med, "same_side": side / len(ratios),
                    "applied": applied, "factor": factor}


def systematic(diffs: list[float]) -> float:
    """The difference every call of an op signature shows: the median of three or more calls, the smaller of
    two (a stall in one of two calls would otherwise count half), nothing for one call."""
    if len(diffs) < 2:
        return 0.0
    if len(diffs) == 2:
        a, b = diffs
        return 0.0 if a * b <= 0 else min(a, b, key=abs)
    return statistics.median(diffs)


def op_signature(op: Any) -> tuple:
    """An op's name and the shapes of its tensor inputs: calls with the same signature do the same work."""
    shapes: list[Any] = []
    for a in op.inputs:
        v = a.value
        if a.kind == "tensor" and v is not None:
            shapes.append(v.shape)
        elif a.kind == "tensor_list":
            shapes.append(tuple(r.shape if r is not None else None for r in v))
    return (op.name, tuple(shapes))


def original_slots(view: TraceView) -> tuple[list[tuple[float, float] | None], float]:
    """Per op: (recorded gap before it, recorded duration); and the recorded tail after the last op."""
    out: list[tuple[float, float] | None] = []
    prev_end = view.step_start_s
    for o in view.ops:
        if o.start_s is None or o.dur_s is None:
            out.append(None)
            continue
        gap = (o.start_s - prev_end) if prev_end is not None else 0.0
        out.append((max(0.0, gap), o.dur_s))
        end = o.start_s + o.dur_s
        prev_end = end if prev_end is None else max(prev_end, end)
    tail = 0.0
    if view.step_start_s is not None and view.step_span_s is not None and prev_end is not None:
        tail = max(0.0, view.step_start_s + view.step_span_s - prev_end)
    return out, tail


def gap_schedule(plan: Plan, cal: Calibration | None, extra_s: float) -> list[int]:
    """Spread ``extra_s`` of CPU time over the gaps before each step (and after the last).

    Weights: where the recorded original spent more time (gap + op) than the recorded replay of the same op,
    both under the same observers; without a calibration, the recorded gaps themselves. A gap after a
    collective counts at most ``GAP_CAP_S`` (:func:`benchmint.replay.collective_time.communication_gaps`).
    """
    n = len(plan.steps)
    if extra_s <= 0:
        return [0] * (n + 1)
    orig, orig_tail = original_slots(plan.view)
    comm = communication_gaps(plan.view)
    weights = [0.0] * (n + 1)
    for i, st in enumerate(plan.steps):
        o = orig[i]
        if o is None:
            continue
        # a gap after a collective is its communication and the wait for the other ranks, which the live
        # collectives replay: of it only what the estimate counts of any gap is CPU work to place there
        g = min(o[0], GAP_CAP_S) if i in comm else o[0]
        if cal is not None and st.replayed and i in cal.replay_slots:
            g2, d2 = cal.replay_slots[i]
            weights[i] = max(0.0, (g + o[1]) - (g2 + d2))
        else:
            weights[i] = g
    weights[n] = max(0.0, orig_tail - (cal.replay_tail_s if cal is not None else 0.0))
    total = sum(weights)
    if total <= 0:
        weights = [1.0] * n + [0.0]
        total = float(n) if n else 1.0
    # tiny gaps are carried forward and spent together (each spend has a fixed cost of its own)
    out, carry = [], 0.0
    for w in weights:
        carry += extra_s * 1e9 * w / total
        if carry >= MIN_GAP_NS:
            out.append(int(carry))
            carry = 0.0
        else:
            out.append(0)
    if carry > 0:
        out[-1] += int(carry)
    return out


def per_op_type(plan: Plan, cal: Calibration | None, original_s: float | None, op_times: dict[int, float],
                gaps_ns: list[int] | None) -> list[dict[str, Any]]:
    """Per op type: count, original time (recorded, less the observers' cost) and replayed time."""
    acc: dict[str, list[float]] = {}
    for st in plan.steps:
        a = acc.setdefault(st.op.name, [0, 0.0, 0.0, 0, 0])
        a[0] += 1
        if st.op.dur_s is not None:
            cost = cal.op_node_cost_s * st.op.subtree_nodes if cal is not None else 0.0
            a[1] += max(0.0, st.op.dur_s - cost)
            a[3] = 1
            if cal is not None and st.op.dur_s <= cost:
                a[4] += 1  # recorded no longer than the observers' own cost: its un-observed time is unknown
        a[2] += op_times.get(st.index, 0.0)
    # a collective's time is not its op's: the communication and the waits land after it (and in the replay
    # inside the live call, in collectives.time_s_per_rank); its row's replayed time is not an op's to compare
    rows = [{"op": k, "count": int(v[0]), "original_s": v[1] if v[3] else None,
             "replay_s": None if is_collective(k) else v[2], "original_under_observer_cost": int(v[4])}
            for k, v in acc.items()]
    orig_ops = sum(r["original_s"] or 0.0 for r in rows)
    gap_replay = sum(gaps_ns or []) / 1e9
    if original_s is not None and any(r["original_s"] is not None for r in rows):
        rows.append({"op": "(cpu time between ops)", "count": len(plan.steps) + 1,
                     "original_s": max(0.0, original_s - orig_ops), "replay_s": gap_replay,
                     "original_under_observer_cost": 0})
    elif gap_replay:
        rows.append({"op": "(cpu time between ops)", "count": len(plan.steps) + 1, "original_s": None,
                     "replay_s": gap_replay})
    rows.sort(key=lambda r: -max(r["original_s"] or 0.0, r["replay_s"] or 0.0))
    return rows


def per_op_replay_times(plan: Plan, gaps_ns: list[int] | None, iters: int = 3) -> dict[int, float]:
    """Per plan step, median seconds of its op in the replay (stamped iterations, not the timed ones)."""
    fn = plan.compile(gaps_ns=gaps_ns, stamps=True)
    stamps: list = fn.__globals__["_S"]
    per: dict[int, list[float]] = {}
    with plan.grad_context():
        for _ in range(iters + 1):
            stamps.clear()
            R = plan.registers()
            fn(R)
            if plan.device.type == "cuda":
                torch.cuda.synchronize()
            prev = None
            for idx, t in stamps:
                if prev is not None and idx >= 0:
                    per.setdefault(idx, []).append((t - prev) / 1e9)
                prev = t
            del R
    return {k: statistics.median(v[1:] if len(v) > 1 else v) for k, v in per.items()}


def largest_contributors(rows: list[dict[str, Any]], top: int = 5) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if r["original_s"] is None or r["replay_s"] is None or r.get("original_under_observer_cost", 0) >= r["count"]:
            continue  # no original or replay, or none measurable under the recorder's own cost: no delta to blame
        out.append({**r, "delta_s": r["replay_s"] - r["original_s"]})
    out.sort(key=lambda r: -abs(r["delta_s"]))
    return out[:top]

"""``replay_trace``: a trace in, a measured replay and its fidelity out (the Python API behind
``benchmint replay``)."""

from __future__ import annotations

import collections
import dataclasses
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmint.core import pace, sysmetrics
from benchmint.core.errors import UserError
from benchmint.replay import conditions, fidelity, gaps_file, headline, index_effect, index_skew, memory
from benchmint.replay.adapt import adapt_capture, adapt_view, annotate, gaps_step, noisy, unobserved_step_s
from benchmint.replay.allocator import settle_malloc
from benchmint.replay.collective_time import recorded_spans
from benchmint.replay.execute import measure_peak_memory, summarize, time_in_turns, time_iterations
from benchmint.replay.modes import mode_specs
from benchmint.replay.options import ReplayOptions
from benchmint.replay.plan import Plan, build_plan
from benchmint.replay.source import compiled_regions, default_device, view_from_trace
from benchmint.replay.standins import StandIns
from benchmint.trace import damage as trace_damage
from benchmint.trace.capture_file import MAX_THREADS, folder_refusal, read_capture

SCHEMA_VERSION = "1.0"
SETTLE_ITERS, SETTLE_WARMUP = 15, 2  # each round that settles the gaps
PACE_PROBES = 3  # pace probes on each side of the timed iterations
CAPTURE_JSON = "capture.json"


@dataclass
class ReplayInputs:
    trace: Path
    kineto: Path | None
    capture: dict | None
    capture_path: Path | None
    kineto_missing: Path | None = None  # the Kineto trace capture.json names, not in the folder
    kineto_given: bool = False  # named with --kineto (not the one lying beside the ET)


def find_inputs(trace: str | os.PathLike, kineto: str | os.PathLike | None = None) -> ReplayInputs:
    """Resolve a trace argument: a capture folder (et.json, kineto.json, capture.json) or an ET file; a
    ``capture.json`` and a ``kineto.json`` lying beside an ET are picked up."""
    p = Path(trace)
    if not p.exists():
        raise UserError(f"{p}: no such trace file or folder; give an execution trace or a capture folder")
    if p.is_dir():
        # an --every capture, a multi-rank one, an incomplete one (and why it ended), a half-written recording:
        # one line saying what is there and what to pass (shared with inspect)
        why = folder_refusal(p, "replay")
        if why is not None:
            raise UserError(why)
        p = p / "et.json"
    k = Path(kineto) if kineto else None
    if k is not None and not k.exists():
        raise UserError(f"{k}: no such Kineto trace; check the --kineto path")
    cap_path = p.parent / CAPTURE_JSON
    cap = None
    missing = None
    if cap_path.exists():
        cap = read_capture(cap_path)  # validated: a bad field is an error now, never after the replay ran
        if k is None:
            name = (cap.get("files") or {}).get("kineto")
            if name and (p.parent / name).exists():
                k = p.parent / name
            elif name:
                missing = p.parent / name
    if k is None and (p.parent / "kineto.json").exists() and p.name == "et.json":
        k = p.parent / "kineto.json"
    return ReplayInputs(trace=p, kineto=k, capture=cap, capture_path=cap_path if cap is not None else None,
                        kineto_missing=missing if k is None else None, kineto_given=kineto is not None)


@dataclass
class ReplayResult:
    result: dict[str, Any]
    plan: Plan
    per_op_type: list[dict[str, Any]] = field(default_factory=list)
    gaps_ns: list[int] | None = None  # CPU time spent before each step (and after the last), if any
    # the recorders' cost per recorded node taken out of the skipped ops' stand-ins (None: none taken out)
    standin_cost_s: float | None = None
    # the step whose gaps gaps_ns are (a scaled replay's: the unscaled step, whose gaps it keeps); None: plan's
    gaps_view: Any = None

    def compiled(self) -> Callable:
        """The replayed iteration as timed (gaps included): call it with ``plan.registers()`` inside
        ``plan.grad_context()``, as the timed loop does (a training step's iteration switches grad on for its
        forward and off after it, which is only right inside that context)."""
        return self.plan.compile(gaps_ns=self.gaps_ns)

    def compiled_ops(self) -> Callable | None:
        """The same iteration without its gaps (the replayed ops alone); None when it has no gaps to leave out."""
        if not self.gaps_ns or not any(self.gaps_ns):
            return None
        return self.plan.compile()


def opened_composites(plan: Plan) -> dict[str, int] | None:
    """How many replayed ops stand in each composite op the replay opened (its callees called one by one, to
    hand their hidden outputs to later readers: a layer norm's saved statistics, an LSTM's gates), by the
    composite's name; None when none was. The original called those ops from C++ inside the composite; the
    replay calls each from Python, about a microsecond more each on a CPU: a composite of thousands of
    callees (a packed LSTM) makes the replayed ops alone slower than the original."""
    return dict(collections.Counter(s.op.composite for s in plan.steps if s.op.composite).most_common()) or None


def last_whole_iteration(tr: Any, cap: dict | None) -> int | None:
    """The last recorded step that ended, as capture.json lists them, when the trace holds it; None (the
    trace's last ProfilerStep) otherwise. The last ProfilerStep of a capture whose loop stopped during a
    recorded step is partial."""
    whole = (cap or {}).get("recorded_iterations")
    if not isinstance(whole, list) or not whole or not isinstance(whole[-1], int):
        return None
    numbers = [it.number for it in tr.iterations]
    if not numbers or numbers[-1] == whole[-1] or whole[-1] not in numbers:
        return None
    return whole[-1]


ESTIMATE_STEPS = 4  # other recorded steps the trace-only estimate takes the median with (each view costs seconds
# on a large trace: GPT-2's 8582 ops took 4-5 s to view)


def other_steps(tr: Any, join: Any, iteration: int | None, cap: dict | None, device: str,
                most: int | None = None) -> list[Any]:
    """Views of the trace's recorded steps other than the replayed one (``iteration``; None: the last), the
    whole ones as capture.json lists them when it does; a selection's share is taken over all of them, the
    estimate over the ``most`` recorded last."""
    numbers = [it.number for it in tr.iterations]
    if len(numbers) < 2:
        return []
    whole = (cap or {}).get("recorded_iterations")
    keep = [n for n in numbers if n in whole] if isinstance(whole, list) and whole else numbers
    replayed = iteration if iteration is not None else numbers[-1]
    keep = [n for n in keep if n != replayed]
    if most is not None:
        keep = keep[-most:] if most > 0 else []
    return [view_from_trace(tr, join, iteration=n, device=device) for n in keep]


def replay_trace(
    trace: str | os.PathLike,
    kineto: str | os.PathLike | None = None,
    options: ReplayOptions | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    rank: int | None = None,
    comm: Any = None,
    **settings: Any,
) -> ReplayResult:
    """Plan, calibrate and time a replay of ``trace``; see ``benchmint replay --help`` for the options.

    ``options``: the replay's settings (:class:`~benchmint.replay.options.ReplayOptions`: device, threads,
    warmup, iters, seed, gaps, target, iteration, memory_check); ``settings``: any of those fields by name,
    replacing the ones of ``options`` (``replay_trace(t, iters=5)``). ``rank``: the rank's trace in an
    archive of one trace per rank (ET and Kineto); ``comm``: the rank's collectives in a multi-rank replay
    (:mod:`benchmint.replay.collectives`).
    """
    from benchmint.trace import load
    from benchmint.trace.kineto import join_kineto

    opts = ReplayOptions.of(options, **settings)
    inp = find_inputs(trace, kineto)
    opts.check()
    tr = load(inp.trace, rank=rank)
    lost = trace_damage.find(tr)  # what the recording lost (nested tensors): the replay is not of the step
    join = None
    if inp.kineto is not None:
        join = join_kineto(tr, inp.kineto, rank=rank)
    iteration = opts.iteration
    if iteration is None:
        iteration = last_whole_iteration(tr, inp.capture)
    dev = opts.device or default_device(tr.devices)
    view = view_from_trace(tr, join, iteration=iteration, device=dev)
    if not view.ops:
        raise UserError(f"{inp.trace}: the trace has no operator with a schema to replay")
    if join is not None:
        refuse_other_kineto(inp, view, join)
    compiled = compiled_regions(join, view)  # torch.compile'd regions: their generated kernels are no ops
    gaps = opts.gaps
    select, what_if = mode_specs(view, opts.mode, opts.select, list(opts.what_if))  # --mode (replay.modes)
    # --select / --what-if / --scale (replay.adapt, replay.scale)
    view, adapted = adapt_view(view, select, what_if, opts.scale,
                               others=lambda: other_steps(tr, join, iteration, inp.capture, dev),
                               unobserved_s=unobserved_step_s(inp.capture))

    def others() -> list[Any]:  # the other recorded steps the estimate takes the median with (same ops only)
        return other_steps(tr, join, iteration, inp.capture, dev, most=ESTIMATE_STEPS)

    if compiled is not None and any(a.kind == "selection" for a in adapted):
        compiled = {**compiled, "selection": "the figures are the whole step's; coverage_time is the selection's ops'"}
    from_file = None
    if opts.gaps_from is not None:
        if comm is not None:
            raise UserError(f"--gaps-from {opts.gaps_from}: a multi-rank replay settles its gaps with the ranks "
                            "together; leave it out")
        from_file = gaps_file.read(opts.gaps_from)
        from_file.check_steps(len(view.ops), gaps_step(view, adapted))
        gaps = "recorded"  # the recorded step's gaps, settled by an earlier replay: no Kineto needed here
    if gaps is None and from_file is None and inp.kineto_missing is not None:
        raise UserError(f"{inp.kineto_missing}: capture.json names this Kineto trace, and it is not there; the replay "
                        "spends the CPU time between ops that it recorded: put it back, or replay with --gaps none")
    if gaps is None:
        gaps = "recorded" if join is not None and view.step_span_s is not None else "none"
    if gaps == "recorded" and from_file is None and (join is None or view.step_span_s is None):
        raise UserError("--gaps recorded needs a Kineto trace of the same step; pass --kineto or use --gaps none")

    cap = adapt_capture(inp.capture, adapted)
    threads = opts.threads
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise UserError(f"--threads {threads}: give 1 to {MAX_THREADS} (this machine has {os.cpu_count()} CPUs)")
    if threads is None and cap is not None and isinstance(cap.get("threads"), int):
        # the capture's machine may have had more cores than this one: more threads than CPUs here would
        # time the oversubscription, not the ops
        threads = min(cap["threads"], os.cpu_count() or 1)
    # denormals flushed for the replay (before the thread count: the intra-op pool, started later, inherits it)
    flushed = conditions.denormals_flushed()
    flushed.__enter__()
    prev_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        try:
            tdev = torch.device(dev)
        except RuntimeError as e:
            why = "an unknown device type" if len(str(e)) > 80 else str(e)  # (torch lists every type it knows)
            raise UserError(f"--device {dev}: not a device ({why}); use cpu or cuda[:N]") from e
        if tdev.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {dev}: CUDA is not available on this machine; use --device cpu")
        if tdev.type == "meta":
            raise UserError(f"--device {dev}: meta tensors hold no data and run no kernel, so there is nothing to "
                            "time; use cpu or cuda[:N]")
        if tdev.type not in ("cpu", "cuda"):
            try:  # mps, xpu, meta...: torch knows the type; whether this build and machine can run it is tried
                torch.empty(1, device=tdev) + 1
            except Exception as e:  # NotImplementedError with torch's dispatcher table, RuntimeError...
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
                raise UserError(f"--device {dev}: this machine's torch cannot run on it ({first}); use cpu or "
                                "cuda[:N]") from e
        memory.check_shapes(view, str(inp.trace))
        mem = memory.tensor_bytes(view)
        avail = memory.check_fits(mem, tdev, str(inp.trace)) if opts.memory_check else \
            memory.available_bytes(tdev)
        opts = dataclasses.replace(opts, device=str(tdev), threads=threads or torch.get_num_threads(), gaps=gaps,
                                   iteration=iteration)
        scaled = [a for a in adapted if a.kind == "scale"]
        if scaled and scaled[0].before is not None:
            # the unscaled step first: its CPU time between ops, aimed at the original, is what the scaled step
            # keeps (Python and framework time do not grow with the tensors); its ops then take what they take
            res0 = _run(inp, scaled[0].before, tdev, opts, cap, join, progress, comm, compiled=compiled,
                        fixed_gaps=from_file.gaps_ns() if from_file is not None else None, others=others,
                        standin_cost_s=from_file.standin_cost_s if from_file is not None else None,
                        spread_effect=False)  # (the scaled step's, below, is the one reported)
            spread = (res0.result.get("index_distribution") or {}).get("tensors") or []
            res = _run(inp, view, tdev, opts, cap, join, progress, comm, fixed_gaps=res0.gaps_ns, compiled=compiled,
                       standin_cost_s=res0.standin_cost_s,
                       index_spread={(t["step"], t["tensor_id"]): t["chosen"] for t in spread},
                       spread_known={(t["step"], t["tensor_id"]) for t in spread if "as" in t})
            res.gaps_view = scaled[0].before
            res.result["gaps"] = res0.result["gaps"]
            res.result["gap_target"] = res0.result["gap_target"]
            res.result["gap_settling"] = res0.result["gap_settling"]
            res.result["original_iter_time_estimated_s"] = res0.result["original_iter_time_estimated_s"]
            scaled[0].info.update({"unscaled_iter_time_s": res0.result["iter_time_s"]["median"],
                                   # (timed before the scaled step, once: its noise carries into the change)
                                   "unscaled_noisy": noisy(res0.result),
                                   "unscaled_ops_only_s": res0.result["replay_ops_only_s"],
                                   "gaps": "the unscaled replay's CPU time between ops (aimed at the original step), "
                                           "kept as it is"})
        else:
            res = _run(inp, view, tdev, opts, cap, join, progress, comm, compiled=compiled,
                       fixed_gaps=from_file.gaps_ns() if from_file is not None else None,
                       standin_cost_s=from_file.standin_cost_s if from_file is not None else None,
                       others=None if adapted else others)  # (an adapted step's ops are no recorded step's)
        if from_file is not None:  # what the replay that settled the gaps said of them
            for k in ("gap_target", "gap_settling", "original_iter_time_estimated_s"):
                res.result[k] = from_file.settled.get(k)
            res.result["estimate_note"] = res.result.get("estimate_note") or from_file.settled.get("estimate_note")
            res.result["gaps_from"] = from_file.info()
        annotate(res.result, adapted, inp.capture, part=opts.mode == "compute")
        if adapted:  # judged again on what annotate set: a scaled step or a what-if has no error to judge
            res.result["fidelity"] = headline.judge(res.result)
        res.result["mode"] = opts.mode
        res.result["trace_damage"] = lost
        numbers = [it.number for it in tr.iterations]
        # the ProfilerStep replayed (None: the trace has none, all its top-level ops were replayed)
        res.result["iteration"] = iteration if iteration is not None else (numbers[-1] if numbers else None)
        res.result["tensor_memory_estimate"] = {**mem, "available_bytes": avail, "checked": opts.memory_check,
                                                "how": "recorded tensors walked in op order before planning: true "
                                                       "inputs held throughout, produced tensors from their op "
                                                       "to their last read (an estimate: the process itself and "
                                                       "allocator slack come on top)"}
        return res
    finally:
        torch.set_num_threads(prev_threads)
        flushed.__exit__(None, None, None)


def refuse_other_kineto(inp: ReplayInputs, view: Any, join: Any) -> None:
    """A Kineto trace that matches none (or almost none) of the step's ops is another run's: its gaps and
    durations would be replayed as nothing, silently. So is one recorded by another process, or whose
    record-function ids name other ops than the execution trace's (another profiling session): another run of
    the same script matched all its ops and lent its durations, gaps and step time to this replay (a step of
    batch 16 judged against one of batch 12). Refused in one line naming both files, when given with --kineto."""
    other, ids = join.other_process, join.rf_id_mismatch
    if inp.kineto_given and (other is not None or ids is not None):
        why = (f"recorded by process {other[1]}, and {inp.trace} by process {other[0]}" if other is not None else
               f"its record-function ids name the same op as in {inp.trace} for only {ids[0]} of {ids[1]} ops")
        raise UserError(f"{inp.kineto}: {why}: a Kineto trace of another run (another run of the same script "
                        "matches op for op, and would lend its durations, gaps and step time); pass the one "
                        "recorded with this execution trace (benchmint capture writes both into its folder), or "
                        "leave --kineto out and replay with --gaps none")
    m = view.kineto_matched
    if m is None or m >= headline.KINETO_NONE or not inp.kineto_given:
        return  # (the capture's own Kineto trace, matching little, e.g. a truncated buffer: warned, not refused)
    n = round(m * len(view.ops))
    raise UserError(f"{inp.kineto}: matches {n} of the {len(view.ops)} ops of the step in {inp.trace} "
                    f"({m * 100:.0f}%): a Kineto trace of another run; pass the one recorded with this execution "
                    "trace (benchmint capture writes both into its folder), or leave --kineto out and replay with "
                    "--gaps none")


def _refuse_target(trace: object, target: str, cap_s: float | None, cap_cpu_s: float | None, trace_type: str,
                   device_type: str) -> None:
    """A gap target that this capture cannot give, refused in one line before anything is planned or timed."""
    cross = trace_type != device_type
    if target == "cpu" and (cross or not cap_cpu_s):
        raise UserError(f"{trace}: --target cpu needs capture.json's CPU time per step, of a step on this "
                        "kind of device (capture with a current `benchmint capture`); use --target capture or "
                        "estimate")
    if target == "capture" and cap_s and cross:
        raise UserError(f"{trace}: the trace ran on {trace_type} and the replay runs on {device_type}: the gaps "
                        "cannot aim at a step time measured on another device; use --gaps none")
    if target == "capture" and not cap_s:
        raise UserError(f"{trace}: no capture.json beside the trace; use target estimate")


SETTLE_PAIRS = 8  # iterations with and without the gaps, in turns, per settle round: at least ...
SETTLE_PAIRS_MAX = 64  # ... and, for a short iteration, as many as fit in SETTLE_ROUND_S, up to this
SETTLE_ROUND_S = 0.1


def _run(inp: ReplayInputs, view: Any, dev: torch.device, opts: ReplayOptions, cap: dict | None, join: Any,
         progress: Any, comm: Any = None, fixed_gaps: list[int] | None = None,
         index_spread: dict[tuple[int, int], str] | None = None,
         others: Callable[[], list[Any]] | None = None,
         spread_known: set[tuple[int, int]] | None = None, spread_effect: bool = True,
         compiled: dict[str, Any] | None = None, standin_cost_s: float | None = None) -> ReplayResult:
    """The replay proper; ``opts`` as resolved by :func:`replay_trace` (threads, gaps and iteration set);
    ``fixed_gaps``: spend these between the ops (a scaled step keeps its unscaled replay's), no calibration;
    ``index_spread``: the made-up lookup indices' spreads the unscaled replay chose (:func:`index_skew.choose`;
    a scaled step's, ``{}`` where it chose none), None: choose them here; ``others``: the trace's other recorded
    steps, whose estimates the original's is the median of (:func:`fidelity.estimate_over_steps`);
    ``spread_effect``: time how much a guessed spread moves the step (:mod:`index_effect`), ``spread_known``:
    the tensors whose spread was not guessed (a scaled step: its unscaled replay's given or fitted ones);
    ``compiled``: the step's torch.compile'd regions (:func:`compiled_regions`), whose time outside any op (the
    generated kernels) counts in coverage_time's whole and no op replays; ``standin_cost_s``: the recorders'
    cost per recorded node that an earlier replay took out of the skipped ops' stand-ins (the unscaled step's,
    a gaps file's), None: measured here where it can be."""
    threads, warmup, iters, seed, gaps, target = opts.threads, opts.warmup, opts.iters, opts.seed, opts.gaps, \
        opts.target
    def tell(stage: str, done: int = 0, total: int = 0) -> None:
        if progress is not None:
            progress(stage, done, total)

    cap_s = cap_cpu_s = cap_spread = pace_cap = None
    if cap is not None:
        cap_pace = cap.get("pace") or {}
        if all(cap_pace.get(k) == v for k, v in pace.where().items()):  # probed on this host and Python
            pace_cap = cap_pace.get("ns_per_turn")
        st = cap.get("step_time_s") or {}
        cap_s = st.get("median") if isinstance(st, dict) else None
        if cap_s and isinstance(st, dict) and st.get("iqr") is not None:
            cap_spread = st["iqr"] / cap_s  # how noisy the original's measurement was
        sm = cap.get("system_metrics") or {}
        if isinstance(sm, dict) and sm.get("cpu_s") is not None and sm.get("steps"):
            cap_cpu_s = sm["cpu_s"] / sm["steps"]  # the process's CPU time per un-observed step
    trace_type = "cuda" if any(d.startswith("cuda") for d in view.devices) else "cpu"
    cross = trace_type != dev.type
    if gaps == "recorded" and fixed_gaps is None:  # a target the gaps cannot aim at: say so before planning
        _refuse_target(inp.trace, target, cap_s, cap_cpu_s, trace_type, dev.type)
    n = len(view.ops)
    allocator = settle_malloc()  # before anything is allocated: the replay's frees land under the settled thresholds
    plan = build_plan(view, dev, seed, progress=lambda i: tell("plan", i, n) if i % 200 == 0 or i == n else None,
                      comm=comm)
    if not plan.replayed:
        reasons = "; ".join(f"{s['op']}: {s['reason']}" for s in plan.skipped()[:3])
        raise UserError(f"{inp.trace}: no op of the trace could be replayed ({reasons})")
    given, index_spread = index_spread, None
    sketch = (cap or {}).get("index_sketch")
    # the recorded lookup times compare with this replay's only on the device they were recorded on, and not
    # from one rank of many (its lookups would be timed while the others wait in a collective)
    timed_here = comm is None and not any(d.split(":")[0] != dev.type for d in view.devices)
    if index_skew.parse_spread(index_skew.user_spread(opts.index_spread)) is not None:
        # the user's spread (--index-spread or BENCHMINT_INDEX_SPREAD uniform|zipf:E): every made-up lookup
        # index so, nothing timed (the variable's uniform turns the choice off: nothing refilled or listed)
        index_spread = index_skew.choose(plan, seed, spread=opts.index_spread)
    elif given != {} and (timed_here or sketch or given):
        # made-up indices spread as the capture's sketch of the data says, else as the recorded lookup times say
        # (uniform unless clearly off; index_skew.py); a scaled step takes its unscaled replay's choice (the
        # recorded times are the unscaled lookups')
        tell("index spread")
        index_spread = index_skew.choose(plan, seed, given=given, sketch=sketch, time_rest=timed_here)
    fn0 = plan.compile()
    effect = None
    if spread_effect and comm is None and index_effect.unknown(opts.index_spread):
        # where the spread was a guess: how much the step's ops move over uniform and skewed indices
        tell("index spread effect")
        effect = index_effect.measure(plan, fn0, index_spread, seed, known=spread_known)
    replay_s = replay_cpu_s = None
    standins = StandIns(plan, cross)
    if standins.any and standin_cost_s is not None:  # an earlier replay's correction: spent the same here
        standins.correct(standin_cost_s, "the replay that settled these gaps")
        fn0 = plan.compile()
    if fixed_gaps is not None:
        gaps = "none"  # below: the gaps are given, nothing to calibrate or aim
    gaps_agreed_note = None
    if comm is not None and fixed_gaps is None:
        # every rank must run the same calibration and settling rounds (each is collective): a rank with no
        # Kineto trace of its step resolved --gaps none while the others would calibrate and wait for it
        comm.ready(plan)  # (the group formed: the ranks can share through it)
        agreed = comm.gather("gaps", gaps)
        if "none" in agreed and "recorded" in agreed:
            gaps = "none"
            without = [str(r) for r, g in enumerate(agreed) if g == "none"]
            gaps_agreed_note = (f"no gaps on any rank: rank{'s' if len(without) > 1 else ''} {', '.join(without)} "
                                "had no Kineto trace of its step, and the ranks replay their gaps together or not "
                                "at all")
    # across devices nothing is aimed at (the original's step is not estimated there, nor capture.json's
    # used): no calibration, whose recordings of the step cost more than the timed run on a big trace
    aim = gaps == "recorded" and not cross
    if comm is not None and fixed_gaps is None:  # the ranks calibrate together or not at all
        aim = all(a == "yes" for a in comm.gather("aim", "yes" if aim else "no"))
    if standins.any and standin_cost_s is None and not aim and not cross and comm is None:
        # nothing calibrates below (--gaps none, or gaps given without the correction): the stand-ins would
        # spend their recorded durations, the recorders' cost included (a quantized MLP read +78..+110%),
        # so the cost is measured here, at the price of one calibration
        fn0 = standins.measure(fn0, iters, warmup, tell)
    if aim or comm is not None or fixed_gaps is not None:
        # the ops alone, timed apart from the run: what the gaps are added to (in one process with --gaps none
        # the timed iterations below are the ops alone, and a big trace's iteration can take seconds; across
        # ranks they also hold the real collectives and the waits for the other ranks)
        tell("calibrate")
        base_cpu: list[float] = []
        # (the calibration needs a steady figure; with --gaps none across ranks it is only reported, and a
        # big trace's iteration on the CPU takes seconds: as many as the timed run)
        n_base, w_base = (max(10, min(iters, 30)), max(3, warmup)) if aim else (iters, warmup)
        base = time_iterations(plan, fn0, iters=n_base, warmup=w_base, together=comm is not None, cpu=base_cpu)
        replay_s = summarize(base)["median"]
        replay_cpu_s = statistics.median(base_cpu)

    cal = None
    est_s = None
    estimate_note = gaps_agreed_note  # why the original's step time is not estimated (None: it is)
    gaps_ns: list[int] | None = None
    target_used = None
    settled_in = None  # the kind of rounds that settled this replay's gaps
    if cross:
        # the estimate compares the original's recorded times with this device's: across devices it would
        # mix a GPU step with CPU kernels
        estimate_note = estimate_note or (f"the trace ran on {trace_type} and the replay on {dev.type}: the "
                                          "original's step time is not estimated across devices")
    if aim:
        if comm is not None:  # the ranks record their ops while the others do the same (as in the original)
            comm.phase("calibrate")
        try:
            cal = fidelity.calibrate(plan, fn0, replay_s)
        except fidelity.CalibrationFailed as e:
            # --mode comm: its collectives alone, whose replay's recordings hold no step of ops
            why = ("a communication-only replay (--mode comm) is compared with its share of capture.json's step, "
                   "not with an estimate from the trace") if opts.mode == "comm" else str(e)
            estimate_note = estimate_note or f"not estimated: {why}"
        if (cal is not None and comm is None and standins.any and standin_cost_s is None
                and standins.correct(cal.in_op_node_cost_s)):
            # the skipped ops' stand-ins spent their recorded durations, the recorders' cost included: the
            # ops alone are timed again with the stand-ins' un-observed time (one process: the ranks time together)
            fn0 = plan.compile()
            base_cpu = []
            replay_s = summarize(time_iterations(plan, fn0, iters=n_base, warmup=w_base, cpu=base_cpu))["median"]
            replay_cpu_s = statistics.median(base_cpu)
            try:  # the replay's recorded slots, which place the gaps, with the stand-ins it now spends
                cal = fidelity.calibrate(plan, fn0, replay_s)
            except fidelity.CalibrationFailed:
                pass  # (the first calibration stands)
        if cal is not None and estimate_note is None:
            est_s = fidelity.estimate_over_steps(view, others() if others is not None else (), cal)
        want = None
        if target == "cpu":
            want, target_used = cap_cpu_s, "capture.json cpu"
        elif target in ("auto", "capture") and cap_s and not cross:
            want, target_used = cap_s, "capture.json"
        elif est_s is not None and target != "capture":
            want, target_used = est_s, "estimate"
        if comm is not None:
            comm.phase("settle")
            gaps_ns = _settle_ranks(plan, cal, want, target_used, replay_s, replay_cpu_s or 0.0, tell, comm)
            settled_in = SETTLE_KIND.get(target_used or "") if want is not None else None
        elif want is not None and target_used == "capture.json cpu":
            gaps_ns, settled_in = _settle_cpu(plan, cal, want, replay_cpu_s or 0.0, tell, live=False), "alone"
        elif want is not None:
            settled_in = "alone"
            gaps_ns = _settle_gaps(plan, fidelity.gap_schedule(plan, cal, want - replay_s), want, replay_s, tell,
                                   cal=cal)
    if fixed_gaps is not None:
        gaps_ns = fixed_gaps if len(fixed_gaps) >= len(plan.steps) else None
        gaps = opts.gaps
    fn = plan.compile(gaps_ns=gaps_ns)
    tell("time")
    iter_cpu: list[float] = []
    timing_conditions = conditions.snapshot(allocator, fn, plan.grad_mode, plan.graph)  # the timed loop's (the runner's too)
    pace_timed = [pace.probe() for _ in range(PACE_PROBES)]  # the pace beside the timed iterations
    with sysmetrics.Window(warmup + iters, threads, str(dev)) as sysw:  # CPU use, switches, faults, peak RSS
        times = time_iterations(plan, fn, iters=iters, warmup=warmup, live=True, cpu=iter_cpu)
    pace_timed += [pace.probe() for _ in range(PACE_PROBES)]
    it = summarize(times)
    if replay_s is None:
        replay_s = it["median"]
    peak, peak_how = measure_peak_memory(plan)
    op_times = fidelity.per_op_replay_times(plan, gaps_ns)

    replayed = plan.replayed
    durs = [s.op.dur_s for s in plan.steps]
    coverage_time = None
    if any(d is not None for d in durs):
        total = sum(d or 0.0 for d in durs)
        if compiled is not None and not compiled.get("selection"):
            total += compiled.get("not_in_ops_s") or 0.0  # the compiled regions' generated kernels: no op runs them
        rep = sum(s.op.dur_s or 0.0 for s in replayed)
        coverage_time = rep / total if total > 0 else None
    original = cap_s
    error = (it["median"] - original) / original if original and it["median"] is not None and not cross else None
    error_note = None
    if original and cross:
        error_note = (f"no error: the original ran on {trace_type} and the replay on {dev.type} (the original's "
                      "measured step time is kept in original_iter_time_s)")
    ref = original if original is not None else est_s
    rows = fidelity.per_op_type(plan, cal, ref, op_times, gaps_ns)
    result = {
        "schema_version": SCHEMA_VERSION,
        "trace": str(inp.trace),
        "kineto": str(inp.kineto) if inp.kineto else None,
        "capture_json": str(inp.capture_path) if inp.capture_path else None,
        "trace_schema": view.schema_version,
        "ops_total": len(plan.steps),
        "ops_replayed": len(replayed),
        "coverage": len(replayed) / len(plan.steps),
        "coverage_time": coverage_time,
        "iter_time_s": it,
        "original_iter_time_s": original,
        "original_iter_time_iqr_ratio": cap_spread,
        "original_iter_time_estimated_s": est_s,
        "estimate_note": estimate_note,
        "recorded_step_span_s": view.step_span_s,
        "error": error,
        "error_note": error_note,
        "skipped": plan.skipped(),
        "substituted": plan.substituted(),
        "retyped": plan.retyped(),
        "opened_composites": opened_composites(plan),
        "peak_memory_bytes": peak,
        "peak_memory_how": peak_how,
        "input_bytes": plan.persistent_bytes,
        "device": str(dev),
        "trace_devices": view.devices,
        "threads": threads,
        "original_threads": cap.get("threads") if cap is not None and isinstance(cap.get("threads"), int) else None,
        "gaps": gaps,
        "gap_target": target_used,
        "gap_time_s": (sum(gaps_ns) / 1e9) if gaps_ns else 0.0,
        # how the gaps were settled: "alone" (one process), "live" (the ranks together, collectives running),
        # "together" (the ranks together, collectives doing nothing); None: not settled
        "gap_settling": settled_in if fixed_gaps is None else None,
        "gaps_settled_with_collectives": (comm is not None and gaps_ns is not None
                                          and target_used in ("capture.json", "capture.json cpu")),
        # the process's CPU seconds (every thread) per timed iteration, and per un-observed step of the capture
        "cpu_time_per_iter_s": statistics.median(iter_cpu) if iter_cpu else None,
        "original_cpu_time_per_step_s": cap_cpu_s,
        # a rank's gaps aimed at the estimate of its CPU time between ops, its communication left to the live
        # collectives of the timed iterations
        "gaps_aimed_without_communication": (comm is not None and gaps_ns is not None
                                             and target_used == "estimate"),
        "replay_ops_only_s": replay_s,
        "kineto_matched": view.kineto_matched,
        "compiled_regions": compiled,
        "standins": standins.info(),
        "warmup": warmup,
        "iters": iters,
        "seed": seed,
        "allocator": allocator,
        "timing_conditions": timing_conditions,
        "plan_time_s": plan.plan_time_s,
        "plan_check_time_s": plan.check_time_s,  # the real pass over the compiled iteration that ends planning
        "plan_dry_run": plan.dry_run,  # how each op was tried: on the meta device, or for real (and why)
        "autograd_graph": plan.graph,  # a training step's forward records autograd's graph, as the original's did
        "calibration": cal.to_dict() if cal is not None else None,
        # how made-up lookup indices were spread, per index tensor (None: no lookup over made-up indices timed)
        "index_distribution": index_effect.distribution(index_spread, effect),
        "how_measured": (
            "wall time of one replayed iteration (time.perf_counter_ns), median over iters after warmup, "
            f"{threads} intra-op threads" + ("; torch.cuda.synchronize() at the end" if dev.type == "cuda" else "")
        ),
        "largest_contributors": fidelity.largest_contributors(rows),
        # what per_op_type's original_s is: corrected for the recorder's cost, or the inflated recorded durations
        "per_op_original_how": (
            "recorded durations less the observers' cost (measured on this replay recorded under them)"
            if cal is not None else f"recorded durations as the observers measured them on {trace_type}, NOT "
            "corrected: inflated by the recording's own cost (no calibration of it on this replay" +
            (f", which runs on {dev.type})" if cross else ")")),
        "system_metrics": sysmetrics.side_by_side((cap or {}).get("system_metrics"), sysw.metrics),
        "pace": _pace_result(pace_cap, pace_timed),
    }
    if comm is not None:  # the original's collectives as recorded: joined over the ranks (collective_time)
        result["recorded_collectives"] = recorded_spans(view)
    result["fidelity"] = headline.judge(result)  # which figure is the measurement, and whether it is noise
    return ReplayResult(result=result, plan=plan, per_op_type=rows, gaps_ns=gaps_ns, standin_cost_s=standins.cost_s)


#: How a rank of a multi-rank replay settles its gaps, by the target it aims at: with its collectives running
#: ("live": capture.json's step time holds the original's communication; its CPU time too), or on the ops alone
#: with the ranks starting each round together ("together": the trace-only estimate holds no communication).
SETTLE_KIND = {"capture.json": "live", "capture.json cpu": "live", "estimate": "together"}


def _settle_ranks(plan: Plan, cal: Any, want: float | None, target_used: str | None, replay_s: float,
                  replay_cpu_s: float, tell: Any, comm: Any) -> list[int] | None:
    """A rank's gaps in a multi-rank replay, settled by the kind of round its target needs (``SETTLE_KIND``).
    The rounds are collective (a barrier before each iteration, the collectives live or not), so the ranks first
    agree through the store on which kinds any of them needs; every rank then runs each such kind's two rounds
    in the same order, settling its own gaps in its kind's and joining the others' with the gaps it has. The
    kind follows the target each rank actually aims at (``--target auto`` without capture.json aims at the
    estimate), and a rank with nothing to aim at (no capture.json, no estimate) joins every round without gaps:
    a rank that skipped a round the others run would leave them waiting at its barrier."""
    mine = SETTLE_KIND.get(target_used or "") if want is not None else None
    kinds = comm.gather("settle-kind", mine or "")
    gaps_ns: list[int] | None = None
    for kind in ("live", "together"):
        if kind not in kinds:
            continue
        if kind != mine:
            _join_rounds(plan, gaps_ns, tell, live=kind == "live")
        elif target_used == "capture.json cpu":
            gaps_ns = _settle_cpu(plan, cal, want, replay_cpu_s, tell, live=True)
        elif kind == "live":
            gaps_ns = _settle_live(plan, fidelity.gap_schedule(plan, cal, want - replay_s), want, tell, cal)
        else:
            # the ops alone measured again in the first round, next to the second: the ops-alone time measured
            # before the calibration can be minutes-of-load away from the timed iterations (a 42 ms median where
            # the timed iterations then ran the ops in about 15: no gaps at all, the iteration -49% short)
            gaps_ns = _settle_live(plan, fidelity.gap_schedule(plan, cal, max(want, 0.0)), want, tell, cal,
                                   live=False)
    return gaps_ns


def _join_rounds(plan: Plan, gaps_ns: list[int] | None, tell: Any, live: bool) -> None:
    """Run the two settling rounds of another rank's kind (as :func:`_settle_live` / :func:`_settle_cpu` run
    them) with this rank's own gaps, settling nothing."""
    fn = plan.compile(gaps_ns=gaps_ns)
    for _ in range(2):
        tell("settle gaps")
        time_iterations(plan, fn, iters=SETTLE_ITERS, warmup=SETTLE_WARMUP, live=live, together=not live,
                        count=False)


def _settle_gaps(plan: Plan, gaps_ns: list[int], want: float, replay_s: float, tell: Any,
                 live: bool = False, cal: Any = None) -> list[int]:
    """Scale the gaps so that they add to the iteration what the estimate asks of them, ``want - replay_s``
    (at most two corrections, each bounded to [0.5, 2]): the CPU work standing for a gap and the ops beside it
    do not add up exactly to their separately measured times. ``live``: a rank of a multi-rank replay settles
    with its collectives running for real (:func:`_settle_live`).

    What the gaps add is measured in each round anew, as the difference between iterations with and without
    them taken in turns (``SETTLE_PAIRS`` of each, more for a short iteration, in blocks of a few in a row;
    the median of the turns' differences), not against ``replay_s`` (the ops alone measured before the
    calibration, seconds of a changing load away), and, on one thread on the CPU, in the process's CPU time:
    a round in which the process waited for a core (a 2-core machine under load 7 ran the ops alone in 25-33 ms
    of wall time for 10 ms of CPU) otherwise read as gaps that cost three times what they do."""
    if live:
        return _settle_live(plan, gaps_ns, want, tell, cal)
    need = want - replay_s
    if sum(gaps_ns) <= 0 or need <= 0:
        return gaps_ns
    by_cpu = plan.device.type == "cpu" and torch.get_num_threads() == 1
    fn0 = plan.compile()
    # a short iteration's single turns are noisy (8 pairs of a 0.8 ms selection read its gaps at 75-87% of
    # what the timed loop then found): more of them where they are cheap
    pairs = max(SETTLE_PAIRS, min(SETTLE_PAIRS_MAX, int(SETTLE_ROUND_S / max(want, 1e-6))))
    block = pairs // SETTLE_PAIRS  # ... in blocks, as the timed loop runs them, in 8 turns
    for _ in range(2):
        tell("settle gaps")
        fn = plan.compile(gaps_ns=gaps_ns)
        (wall0, cpu0), (wall1, cpu1) = time_in_turns(plan, [fn0, fn], pairs // block, block=block)
        without, with_ = (cpu0, cpu1) if by_cpu else (wall0, wall1)
        got = statistics.median(statistics.median(with_[k:k + block]) - statistics.median(without[k:k + block])
                                for k in range(0, len(with_), block))  # turn by turn
        if got <= 0 or abs(got - need) <= 0.01 * need:
            break
        scale = min(2.0, max(0.5, need / got))
        gaps_ns = [int(g * scale) for g in gaps_ns]
    return gaps_ns


def _settle_cpu(plan: Plan, cal: Any, want_cpu_s: float, ops_cpu_s: float, tell: Any, live: bool) -> list[int]:
    """Gaps that make a replayed iteration use ``want_cpu_s`` of CPU time (the process's, every thread), spread
    as :func:`benchmint.replay.fidelity.gap_schedule` spreads them; ``ops_cpu_s``: the ops alone. A gap is CPU
    work (:mod:`benchmint.replay.spin`), so each of the two rounds (the same on every rank: with ``live``, the
    collectives run for real, and their CPU time counts) moves the gaps' total by what the iteration's CPU time
    missed. The wall time is not aimed at: on cores shared by ranks it follows from the CPU time asked for and
    the waits for the other ranks, as the original's did."""
    gaps_ns = fidelity.gap_schedule(plan, cal, max(0.0, want_cpu_s - ops_cpu_s))
    for _ in range(2):
        tell("settle gaps")
        cpu: list[float] = []
        time_iterations(plan, plan.compile(gaps_ns=gaps_ns), iters=SETTLE_ITERS, warmup=SETTLE_WARMUP, live=live,
                        count=False, cpu=cpu)
        total = sum(gaps_ns) / 1e9
        new = max(0.0, total + want_cpu_s - statistics.median(cpu))
        if total > 0:
            gaps_ns = [round(g * new / total) for g in gaps_ns]
        elif new > 0:
            gaps_ns = fidelity.gap_schedule(plan, cal, new)
    return gaps_ns


def _settle_live(plan: Plan, gaps_ns: list[int], want: float, tell: Any, cal: Any = None,
                 live: bool = True) -> list[int]:
    """A rank's gaps settled with the real collectives running (and the waits for the other ranks in them), so
    that the gaps stand for the CPU time between ops and not for the original's communication, which the
    timed iterations then add for real. Two rounds, the same on every rank (the collectives need every rank
    in each): the iteration without gaps, then with the gaps it fell short by; the second round gives how much
    wall time a second of gaps adds here (more than one where ranks share cores: every rank's gaps slow the
    others too), and the gaps are what that rate says makes up the shortfall, never more than it.
    ``live=False``: the collectives do nothing, the ranks still start each iteration together (an aim that
    holds no communication, the trace-only estimate); the first round measures the ops alone anew, next to
    the second, rather than trusting a measurement taken before the calibration."""
    shape = gaps_ns if sum(gaps_ns) > 0 else fidelity.gap_schedule(plan, cal, max(want, 1e-6))
    unit = sum(shape) / 1e9 or 1.0

    def scaled(total_s: float) -> list[int]:
        return [round(g * total_s / unit) for g in shape]

    def measure(g: list[int]) -> float:
        tell("settle gaps")
        m = summarize(time_iterations(plan, plan.compile(gaps_ns=g), iters=SETTLE_ITERS, warmup=SETTLE_WARMUP,
                                      live=live, together=not live, count=False))["median"]
        return m if m is not None else want

    m0 = measure([0] * len(shape))
    short = max(0.0, want - m0)
    m1 = measure(scaled(short))  # every rank runs this round, with no gaps when it needs none
    rate = min(8.0, max(1.0, (m1 - m0) / short)) if short > 0 else 1.0
    return scaled(short / rate)


def _pace_result(cap_ns: float | None, timed: list[float]) -> dict[str, Any]:
    """The host's pace on each side (:mod:`benchmint.core.pace`): beside the capture's measured steps (None when
    they ran on another host or Python, or capture.json has no pace) and beside the timed iterations;
    ``timed_vs_capture`` is how much slower (+) the same CPU work ran during the timed
    iterations than during the capture's steps. Reported, not corrected for: scaling the gaps' aim by it did
    not bring replays closer to the live original (docs/replay.md, "The host's pace": the step does not
    follow the probe by one factor)."""
    timed_ns = statistics.median(timed)
    return {"capture_ns_per_turn": cap_ns, "timed_ns_per_turn": timed_ns,
            "timed_vs_capture": timed_ns / cap_ns - 1 if cap_ns else None, "how": pace.HOW}


def run_record(res: ReplayResult, config: dict[str, Any]):
    """The RunRecord (kind "replay") of a replay: metrics are the result plus ``per_op_type``; the workload
    says where the trace came from (capture.json's command line, device and torch version when present)."""
    from benchmint.results.metadata import provenance, system_block
    from benchmint.results.record import RunRecord

    r = res.result
    status = "ok" if r["coverage"] >= 1.0 else "partial"
    workload: dict[str, Any] = {"trace": r["trace"], "trace_schema": r["trace_schema"], "ops": r["ops_total"],
                                "trace_devices": r["trace_devices"]}
    if r.get("capture_json"):
        try:
            cap = read_capture(r["capture_json"])
            workload["captured"] = {k: cap.get(k) for k in ("command_line", "device", "threads", "torch_version")}
            workload["captured"]["cpu_model"] = (cap.get("host") or {}).get("cpu_model")
            m = cap.get("model") or {}
            for key in ("architecture", "parameter_count", "dtype"):
                if m.get(key) is not None:
                    workload[key] = m[key]
        except UserError:  # changed since the replay read it: the record says where the trace came from
            pass
    return RunRecord(
        kind="replay",
        config=config,
        metrics={**r, "per_op_type": res.per_op_type},
        workload=workload,
        system=system_block(),
        provenance=provenance(),
        status=status,
    )

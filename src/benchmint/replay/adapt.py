"""Adapt a replay before it is planned: replay a part of the step (``--select``) or change it (``--what-if``).

Both work on the replayer's view of one iteration (:class:`~benchmint.replay.types.TraceView`) and return a
new view holding the ops kept (and repeated), their recorded times laid out again back to back, and the
recorded scopes around them. Each op owns the recorded CPU time before it (the gap its Python call spent)
and its recorded duration; the part of the step kept is the sum of those over the ops kept, over the
recorded step (Kineto). That share of the original step's time is what the adapted replay is compared with
(its gaps aim at the share of ``capture.json``'s step time).

Selections (``kind:value``):

* ``scope:NAME``: the ops inside a recorded ``record_function`` scope (or module scope, when the capture
  recorded them) whose name contains NAME;
* ``op:PATTERN``: the ops whose name matches the regular expression (searched: ``aten::mm|aten::addmm``);
* ``phase:forward|backward|optimizer``: the optimizer's ops run inside ``Optimizer.step#...`` /
  ``Optimizer.zero_grad#...`` scopes, the backward's inside the autograd engine's
  ``autograd::engine::evaluate_function`` scopes or a backward function's node (``AddmmBackward0``), or on
  another thread than the one that ran the step's first op (the autograd engine's own threads); the rest is
  forward. The execution trace observer records these scopes with or without the profiler (a trace of the
  observer alone has no ``ProfilerStep``: its scopes are taken over every recorded thread).

What-ifs: ``drop:PATTERN`` removes the ops whose name matches, ``repeat:PATTERN=N`` runs each of them N times.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from benchmint.core.errors import UserError
from benchmint.replay.collective_time import gap_owners
from benchmint.replay.fidelity import original_slots
from benchmint.replay.headline import what_if_noise
from benchmint.replay.phases import PHASES, backward_scope, op_scopes, phases, step_grad
from benchmint.replay.scale import scale_view
from benchmint.replay.types import MIN_NODE_S, TraceView

SELECT_KINDS = ("scope", "op", "phase")
MIN_TIMED = 0.9  # the shares need recorded times for at least this fraction of the ops (Kineto's join)
NO_SHARE = ("the trace has no recorded times for most of its ops (no Kineto trace joined): the selection's share of the "
            "step is not known, so it is not compared with the original")


@dataclass
class Adaptation:
    """What an adaptation did: ``kind`` ("selection" or "what_if"), the result's block, and the adapted step's
    time as a fraction of the original step's (None when the trace has no recorded times)."""

    kind: str
    info: dict[str, Any]
    factor: float | None
    before: TraceView | None = None  # a scale: the step as it was (its replay sets the gaps the scaled one keeps)


def _compile(pattern: str, what: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise UserError(f"{what}: {pattern!r} is not a regular expression ({e}); fix the pattern") from None


def parse_select(spec: str) -> tuple[str, str]:
    kind, sep, value = spec.partition(":")
    if not sep or kind not in SELECT_KINDS or not value:
        raise UserError(f"--select {spec}: give scope:NAME, op:PATTERN or phase:forward|backward|optimizer")
    if kind == "phase" and value not in PHASES:
        raise UserError(f"--select {spec}: the phase is one of {', '.join(PHASES)}")
    return kind, value


def _selected(view: TraceView, spec: str) -> list[bool]:
    kind, value = parse_select(spec)
    if kind == "op":
        rx = _compile(value, f"--select {spec}")
        return [bool(rx.search(o.name)) for o in view.ops]
    if kind == "phase":
        return [p == value for p in phases(view)]
    return [any(value in n for n in names) for names in op_scopes(view)]


def _times(view: TraceView, unobserved_s: float | None = None) -> tuple[list[float] | None, float, float | None]:
    """Per op its recorded time (the gap before it and its duration; 0 for an op Kineto did not match; a
    collective also holds the gap after it, up to the next op that is no collective) and the recorded tail
    after the last op, less the recorders' cost where ``unobserved_s`` is given, and that cost per recorded
    node (:func:`_unobserved`); times None when the trace has too few recorded times."""
    slots, tail = original_slots(view)
    timed = sum(1 for s in slots if s is not None)
    if view.step_span_s is None or not slots or timed < MIN_TIMED * len(slots):
        return None, 0.0, None
    times = [s[0] + s[1] if s is not None else 0.0 for s in slots]  # unmatched in Kineto: no time
    # the gap after a collective holds its communication and the rank's wait for its peers (gloo's main thread
    # records nothing until the collective is done): it is the collective's, not the next op's. A --mode comm
    # replay was compared with the collectives' launches alone (0.13 ms of a 2-rank DDP step, read +340%), and
    # --mode compute with a step that still held the communication
    for i, owner in gap_owners(view).items():
        if slots[i] is not None:
            times[owner] += slots[i][0]
            times[i] -= slots[i][0]
    return _unobserved(view, times, tail, unobserved_s)


def _unobserved(view: TraceView, times: list[float], tail: float, unobserved_s: float | None
                ) -> tuple[list[float], float, float | None]:
    """``times`` and ``tail`` less the recorders' cost of the nodes recorded in each, and that cost per node
    (None without ``unobserved_s``): the recorded span's excess over the same step un-observed
    (``capture.json``'s step time), spread evenly over the nodes the step recorded (each op's with everything
    under it, and the scopes). The recorded step holds the execution-trace and profiler observers' cost of every
    node, so a part of many short ops weighs more in it than in the real step: a ViT block's AdamW step took
    32% of the recorded step and 13-14% of the live one (34.8% forward, 51.7% backward once corrected, against
    33-35% and 50-52% timed live). No op is left less than :data:`MIN_NODE_S` per node it recorded (or its
    recorded time, if less)."""
    if unobserved_s is None or not unobserved_s > 0:
        return times, tail, None
    n = len(view.ops)
    enters = [0] * (n + 1)  # scope nodes opened before each op (their events fall in its gap), and after the last
    for pos, kind, _nid, _name in view.scopes:
        if kind == "enter":
            enters[min(pos, n)] += 1
    nodes = [o.subtree_nodes + enters[i] for i, o in enumerate(view.ops)]
    total = sum(nodes) + enters[n]
    excess = sum(times) + tail - unobserved_s
    if excess <= 0 or not total:
        return times, tail, 0.0
    c = excess / total
    # the even spread charges an op of many light nodes more than its recorders cost: a GPT-2 step's AdamW
    # _foreach_ ops (169 nodes, 19.5 us each as recorded, about 2.3 us live) came out at nothing, and a what-if
    # that dropped them read a share of 0. No node runs in less than a dispatch
    return ([max(t - c * k, min(t, MIN_NODE_S * k)) for t, k in zip(times, nodes, strict=True)],
            max(0.0, tail - c * enters[n]), c)


def rebuild(view: TraceView, copies: list[int], keep_tail: bool) -> TraceView:
    """A view holding ``copies[i]`` copies of each op ``i`` (0: dropped), their recorded times laid out back
    to back from the step's start (each copy keeps the gap before it and its duration), and the recorded
    scopes that still hold an op. ``keep_tail``: the recorded time after the last op stays in the step."""
    slots, tail = original_slots(view)
    ops = []
    new_pos = [0] * (len(view.ops) + 1)  # new position of each old position
    start = view.step_start_s
    cursor = start
    for i, op in enumerate(view.ops):
        new_pos[i] = len(ops)
        s = slots[i] if slots else None
        for c in range(copies[i]):
            changes: dict[str, Any] = {} if c == 0 else {"parents_opened": 0}
            if s is not None and cursor is not None:
                changes["start_s"] = cursor + s[0]
                cursor = changes["start_s"] + s[1]
            ops.append(replace(op, **changes))
    new_pos[len(view.ops)] = len(ops)
    enter: dict[int, int] = {}
    spans: dict[int, tuple[int, int]] = {}
    for pos, kind, nid, _name in view.scopes:
        if kind == "enter":
            enter[nid] = pos
        elif nid in enter:
            spans[nid] = (enter[nid], pos)
    scopes = []
    for pos, kind, nid, name in view.scopes:
        lo, hi = spans.get(nid, (pos, len(view.ops)))
        if any(copies[j] for j in range(lo, min(hi, len(view.ops)))):
            scopes.append((new_pos[min(pos, len(view.ops))], kind, nid, name))
    span = None
    if view.step_span_s is not None and start is not None and cursor is not None:
        span = cursor - start + (tail if keep_tail else 0.0)
    grad = step_grad(view)  # how the whole step ran under autograd, which the part kept may no longer show
    grad = replace(grad, ops=tuple(on for on, n in zip(grad.ops, copies, strict=True) for _ in range(n)))
    return replace(view, ops=ops, scopes=scopes, step_start_s=start, step_span_s=span, grad=grad)


def _share(view: TraceView, mask: list[bool], unobserved_s: float | None = None) -> float | None:
    """The recorded time of the ops ``mask`` keeps (each with the CPU time before it) over the recorded step,
    the recorders' cost taken out where the step's un-observed time is known (:func:`_unobserved`)."""
    return _kept(*_times(view, unobserved_s)[:2], mask)


def _kept(times: list[float] | None, tail: float, mask: list[bool]) -> float | None:
    """The share of ``times`` (and ``tail``) that ``mask`` keeps."""
    if times is None:
        return None
    total = sum(times) + tail
    kept = sum(t for t, m in zip(times, mask, strict=True) if m) + (tail if mask[-1] else 0.0)
    return kept / total if total > 0 else None


def select(view: TraceView, spec: str, others: list[TraceView] | tuple[TraceView, ...] = (),
           unobserved_s: float | None = None) -> tuple[TraceView, Adaptation]:
    """The ops of ``view`` that ``spec`` selects, and what was selected with its share of the step.

    ``others``: the other recorded steps of the trace. One recorded step's times carry whatever preempted it
    (on a shared machine one op or gap of a few milliseconds can move a layer's share from 0.36 to 0.56), so
    the share is the median over every recorded step that has the same ops (the replayed one and ``others``);
    the replayed step's own share is kept beside it. ``unobserved_s``: the step's un-observed time
    (``capture.json``), with which the recorders' cost is taken out of each op's time (:func:`_unobserved`)."""
    mask = _selected(view, spec)
    n = sum(mask)
    if not n:
        kind, value = parse_select(spec)
        empty = sorted({nm for _p, k, _i, nm in view.scopes if k == "enter" and value in nm}) if kind == "scope" else []
        if empty:  # a scope that ran no op (zero_grad(set_to_none=True) only drops references)
            raise UserError(f"--select {spec}: the recorded scope {empty[0]} holds none of the step's ops (it ran "
                            "no operator: nothing of it to replay)")
        raise UserError(f"--select {spec}: matches none of the step's {len(view.ops)} ops; " + _hint(view, kind))
    times, tail, cost = _times(view, unobserved_s)
    own = _kept(times, tail, mask)
    shares = [own] if own is not None else []
    for other in others:
        if not view.same_ops(other):
            continue  # not the same ops to share out
        sh = _share(other, _selected(other, spec), unobserved_s)
        if sh is not None:
            shares.append(sh)
    share = statistics.median(shares) if own is not None else None
    how = None
    if share is not None:
        how = ("recorded (Kineto) time of the selected ops, each with the CPU time before it (a collective also "
               "with the time after it), over the recorded step" + _cost_how(cost)
               + (f"; median over {len(shares)} recorded steps" if len(shares) > 1 else ""))
    names = Counter(o.name for o, m in zip(view.ops, mask, strict=True) if m)
    info = {"spec": spec, "ops_selected": n, "ops_in_step": len(view.ops),
            "op_types": dict(names.most_common(10)), "share_of_step": share,
            "share_of_replayed_step": own, "share_per_recorded_step": shares,
            "share_as_recorded": _share(view, mask) if cost else own, "recorders_cost_per_node_s": cost,
            "share_how": how or NO_SHARE}
    return rebuild(view, [1 if m else 0 for m in mask], keep_tail=mask[-1]), Adaptation("selection", info, share)


def parse_what_if(spec: str) -> tuple[str, str, int]:
    action, sep, rest = spec.partition(":")
    if action == "drop" and sep and rest:
        return "drop", rest, 0
    if action == "repeat" and sep:
        pattern, eq, n = rest.rpartition("=")
        if eq and pattern and n.isdigit() and int(n) >= 1:
            return "repeat", pattern, int(n)
    raise UserError(f"--what-if {spec}: give drop:OP_PATTERN or repeat:OP_PATTERN=N (N a whole number >= 1)")


def what_if(view: TraceView, specs: list[str], unobserved_s: float | None = None) -> tuple[TraceView, Adaptation]:
    """``view`` with the ops each spec names dropped or repeated (the first spec that matches an op decides),
    and what changed: per spec the ops it matched and their share of the step."""
    parsed = [(*parse_what_if(s), s) for s in specs]
    rxs = [_compile(p, f"--what-if {s}") for _a, p, _n, s in parsed]
    copies = [1] * len(view.ops)
    owner: list[int | None] = [None] * len(view.ops)
    for i, op in enumerate(view.ops):
        for k, rx in enumerate(rxs):
            if rx.search(op.name):
                copies[i], owner[i] = parsed[k][2], k
                break
    times, tail, cost = _times(view, unobserved_s)
    total = (sum(times) + tail) if times is not None else None
    changes = []
    factor = 1.0 if total else None
    for k, (action, pattern, n, spec) in enumerate(parsed):
        idx = [i for i in range(len(view.ops)) if owner[i] == k]
        if not idx:
            raise UserError(f"--what-if {spec}: {pattern!r} matches none of the step's {len(view.ops)} ops; "
                            + _hint(view, "op"))
        share = sum(times[i] for i in idx) / total if times is not None and total else None
        if share is not None and factor is not None:
            factor += share * (n - 1)
        changes.append({"spec": spec, "action": action, "pattern": pattern, "copies": n, "ops_matched": len(idx),
                        "op_types": dict(Counter(view.ops[i].name for i in idx).most_common(10)),
                        "share_of_step": share})
    info = {"changes": changes, "ops_before": len(view.ops), "ops_after": sum(copies),
            "step_time_factor": factor,
            "recorders_cost_per_node_s": cost,
            "how": ("the original's time with the recorded (Kineto) time of the matched ops, each with the CPU time "
                    "before it, removed or repeated" + _cost_how(cost) if factor is not None else NO_SHARE)}
    if not sum(copies):
        raise UserError("--what-if drops every op of the step; keep at least one")
    return rebuild(view, copies, keep_tail=True), Adaptation("what_if", info, factor)


def _cost_how(cost: float | None) -> str:
    if cost is None:
        return ("; as recorded, the recorders' cost included (no capture.json step time to take it out with: a "
                "part of many short ops weighs more than in the real step)")
    return (f"; the recorders' cost taken out: the recorded step's excess over capture.json's un-observed step, "
            f"{cost * 1e6:.2f} us per recorded node, less from each op for the nodes it recorded (leaving each at least "
            f"{MIN_NODE_S * 1e6:g} us per node)")


def _hint(view: TraceView, kind: str) -> str:
    if kind == "scope":
        names = Counter(n for _p, k, _i, n in view.scopes if k == "enter" and not backward_scope(n))
        some = ", ".join(n for n, _ in names.most_common(6))
        return f"its recorded scopes include {some}" if some else "the trace recorded no scopes around its ops"
    if kind == "phase":
        have = sorted(set(phases(view)))
        return f"the step has {', '.join(have)} ops"
    some = ", ".join(n for n, _ in Counter(o.name for o in view.ops).most_common(6))
    return (f"its most frequent ops are {some} (op: and --what-if patterns see the top-level ops only; an op called "
            "inside another, such as aten::addmm inside aten::linear, is part of it)")


def unobserved_step_s(cap: dict | None) -> float | None:
    """The captured step's un-observed time (``capture.json``'s median step time), None without one."""
    st = (cap or {}).get("step_time_s")
    v = st.get("median") if isinstance(st, dict) else None
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 else None


def gaps_step(view: TraceView, adaptations: list[Adaptation]) -> TraceView:
    """The step whose CPU time between ops a replay of ``view`` spends: a scaled step keeps its unscaled
    step's (:func:`benchmint.replay.api.replay_trace`), any other its own."""
    return next((a.before for a in adaptations if a.kind == "scale" and a.before is not None), view)


def noisy(result: dict[str, Any]) -> bool:
    """Whether a replay's timing was judged noisy: its iterations' spread, or its fidelity verdict."""
    return bool((result.get("iter_time_s") or {}).get("noisy")
                or (result.get("fidelity") or {}).get("verdict") == "noisy")


def adapt_view(view: TraceView, select_spec: str | None = None, what_if_specs: list[str] | None = None,
               scale_specs: list[str] | tuple[str, ...] | None = None,
               others: Any = (), unobserved_s: float | None = None) -> tuple[TraceView, list[Adaptation]]:
    """Apply ``--select``, ``--what-if`` then ``--scale`` to ``view``; nothing to do: the view itself and no
    adaptation. ``others``: the trace's other recorded steps (views, or a callable returning them, called only
    for a selection), over which a selection's share is taken (:func:`select`); ``unobserved_s``: the step's
    un-observed time (``capture.json``), with which the shares leave the recorders' cost out."""
    done: list[Adaptation] = []
    if select_spec is not None and not select_spec.strip():
        parse_select(select_spec)  # --select "": refused as any malformed selection, not the whole step
    if select_spec:
        view, a = select(view, select_spec, others() if callable(others) else others, unobserved_s)
        done.append(a)
    if what_if_specs:
        # (after a selection the view is the selection's: its un-observed time is the selection's share)
        sub = unobserved_s * done[0].factor if done and unobserved_s and done[0].factor else \
            (None if done else unobserved_s)
        view, a = what_if(view, list(what_if_specs), sub)
        done.append(a)
    if scale_specs:
        from benchmint.replay.scale_dims import parse_scale

        if all(f == 1 for f in parse_scale(list(scale_specs)).values()):  # a "scaled" step itself, with no error
            raise UserError(f"--scale {' '.join(scale_specs)}: a factor of 1 changes nothing; leave --scale out")
        scaled = scale_view(view, list(scale_specs), phases(view))
        done.append(Adaptation("scale", scaled.info, None, before=view))
        view = scaled.view
    return view, done


def factor(adaptations: list[Adaptation]) -> float | None:
    """The adapted step's time as a fraction of the original step's (None: unknown)."""
    f = 1.0
    for a in adaptations:
        if a.kind == "scale":
            continue  # a scaled replay keeps the unscaled one's gaps: its original is the step as captured
        if a.factor is None:
            return None
        f *= a.factor
    return f


SCALED_METRICS = ("wall_s", "cpu_s", "voluntary_ctx_switches_per_step", "involuntary_ctx_switches_per_step",
                  "minor_page_faults_per_step", "major_page_faults_per_step")  # what the adapted step has less of


def adapt_capture(cap: dict | None, adaptations: list[Adaptation]) -> dict | None:
    """``capture.json`` as the adapted step would have measured: its step time, and its system metrics' CPU
    time, wall time and per-step counts, times the adapted share (so the gaps aim at it, ``--target cpu``'s
    too, and the error compares with it; the CPU time taken to fall in the same share as the wall time);
    without a known share, without a step time nor those metrics."""
    if cap is None or not [a for a in adaptations if a.kind != "scale"]:
        return cap
    f = factor(adaptations)
    out = dict(cap)
    sm = cap.get("system_metrics")
    if isinstance(sm, dict):
        out["system_metrics"] = {k: v for k, v in sm.items() if k not in SCALED_METRICS}
        if f is not None:
            out["system_metrics"].update({k: sm[k] * f for k in SCALED_METRICS if isinstance(sm.get(k), int | float)})
    st = cap.get("step_time_s")
    if not isinstance(st, dict) or not isinstance(st.get("median"), int | float):
        return out
    if f is None:
        out.pop("step_time_s")
    else:
        out["step_time_s"] = {k: (v * f if isinstance(v, int | float) and k != "n" else v) for k, v in st.items()}
    return out


def annotate(result: dict[str, Any], adaptations: list[Adaptation], cap: dict | None, part: bool = False) -> None:
    """Add the ``selection`` / ``what_if`` blocks to a replay's result. A selection is compared with its share
    of the original step (``original_iter_time_s`` is that share); a what-if has no original to compare with:
    ``original_iter_time_s`` stays the original step, ``error`` is null and ``what_if`` gives the expected
    time and the change against the original. ``part``: the what-if leaves a part of the step that the
    original did run (``--mode compute``: the step less its collectives), so it is compared with that part's
    share of the original, as a selection is (``original_iter_time_s`` is the expected time)."""
    st = (cap or {}).get("step_time_s") if cap else None
    step_s = st.get("median") if isinstance(st, dict) else None
    if result.get("error_note") and result.get("original_iter_time_s") is not None:
        step_s = None  # across devices: the original's time is not comparable (error_note says why)
    it = (result.get("iter_time_s") or {}).get("median")
    share = 1.0
    for a in adaptations:
        info = dict(a.info)
        if a.kind == "scale":
            base = result.get("original_iter_time_s")
            unscaled = info.get("unscaled_iter_time_s")
            info["change_vs_unscaled"] = (it / unscaled - 1) if it and unscaled else None
            info["change_vs_original"] = (it / base - 1) if it and base else None
            result["scale"] = info
            if result.get("error") is not None or base is not None:
                result["error"] = None
                result["error_note"] = ("a scaled replay is the step at another size, so it has no original to "
                                        "compare with: scale gives the change against the unscaled replay and the "
                                        "original")
            continue
        if a.kind == "selection":
            share = a.factor if a.factor is not None else float("nan")
            info["original_step_time_s"] = step_s
            info["original_selected_time_s"] = step_s * a.factor if step_s and a.factor is not None else None
            info["compared_with"] = ("the selection's share of the original step (original_iter_time_s)"
                                     if info["original_selected_time_s"] is not None else None)
            result["selection"] = info
        else:
            base = step_s * share if step_s and share == share else None
            expected = base * a.factor if base is not None and a.factor is not None else None
            info["original_iter_time_s"] = base
            info["expected_iter_time_s"] = expected
            info["change_vs_original"] = (it / base - 1) if it and base else None
            result["what_if"] = info
            result["original_iter_time_s"] = base
            if part and not expected:  # --mode compute without a measured original step
                result["error"] = None
                result["error_note"] = ("--mode compute: no measured original step (capture.json) whose share to "
                                        "compare the step less its collectives with")
                continue
            if part:
                fid = (result.get("fidelity") or {}).get("error")
                result["original_iter_time_s"] = expected
                result["error"] = fid if fid is not None else (it / expected - 1 if it else None)
                info["compared_with"] = ("the step less its collectives, as its share of the original step "
                                         "(original_iter_time_s)")
                result["error_note"] = None
                continue
            if result.get("error") is not None or base is not None:
                result["error"] = None
                result["error_note"] = ("a what-if replay changes the step, so it has no original to compare "
                                        "with: what_if gives the change against the original")
    wi = result.get("what_if")
    if wi is not None and result.get("scale") is not None and wi.get("expected_iter_time_s") is not None:
        # the shares give the changed step's time at the recorded size; the step ran scaled as well (a batch of
        # 24 was judged against the batch-12 step less its sqrt)
        wi["expected_iter_time_s"] = wi["change_vs_original"] = None
        wi["expected_note"] = ("the step is scaled too: the recorded shares give no expected time at the scaled "
                               "size (scale gives the change against the unscaled replay)")


def _of(block: dict[str, Any], as_recorded: float | None) -> str:
    """How a share was taken, for the console: the recorders' cost out, or in."""
    if block.get("recorders_cost_per_node_s") is None:
        return " as recorded, the recorders' cost in it"
    return (" without the recorders' cost" + (f"; {as_recorded * 100:.1f}% as recorded" if as_recorded is not None
                                               else ""))


def _scale_noise(result: dict[str, Any]) -> str:
    """The scale line's caveat: the unscaled and the scaled step are timed one after the other, once each, so
    either one's noise (or the host's pace moving between them) is in their ratio ("" when neither was noisy)."""
    sc = result.get("scale") or {}
    mine = noisy(result)
    if not (mine or sc.get("unscaled_noisy")):
        return ""
    which = "both replays were" if mine and sc.get("unscaled_noisy") else \
        ("the scaled replay was" if mine else "the unscaled replay was")
    return (f" (noisy: {which} timed under noise, one after the other, so the change is not a measurement; run "
            "again, or with --gaps none, which leaves the settled CPU time between ops out of both)")


def describe(result: dict[str, Any]) -> list[str]:
    """Lines for the console: what was selected or changed, and its share of the step."""
    out = []
    sel = result.get("selection")
    if sel:
        share = sel["share_of_step"]
        out.append(f"selection {sel['spec']}: {sel['ops_selected']} of {sel['ops_in_step']} ops, "
                   + (f"{share * 100:.1f}% of the step{_of(sel, sel.get('share_as_recorded'))}" if share is not None
                      else "share unknown")
                   + (f"; compared with that share of the original ({sel['original_selected_time_s'] * 1e3:.3f} ms)"
                      if sel.get("original_selected_time_s") else ""))
    sc = result.get("scale")
    if sc:
        def fmt(v: Any) -> str:  # 64.0 -> 64; a list of sequence lengths each so
            if isinstance(v, list):
                return f"[{', '.join(fmt(x) for x in v)}]"
            return str(int(v)) if float(v).is_integer() else f"{v:g}"

        sizes = ", ".join(f"{k} {sc['recorded'][k]} -> {fmt(sc['scaled'][k])}" for k in sc["recorded"])
        out.append(f"scale {' '.join(sc['specs'])}: {sizes}; {sc['ops_with_new_shapes']} of {sc['ops']} ops with "
                   f"new shapes, {sc['size_arguments_rewritten']} size arguments rewritten"
                   + (f"; replayed step {sc['change_vs_unscaled'] * 100:+.1f}% against the unscaled replay"
                      + _scale_noise(result) if sc.get("change_vs_unscaled") is not None else ""))
    wi = result.get("what_if")
    if wi:
        for c in wi["changes"]:
            what = "dropped" if c["action"] == "drop" else f"repeated x{c['copies']}"
            share = c["share_of_step"]
            out.append(f"what-if {c['spec']}: {c['ops_matched']} ops {what}"
                       + (f" ({share * 100:.1f}% of the step{_of(wi, None)})" if share is not None else ""))
        if wi.get("change_vs_original") is not None:
            out.append(f"what-if: replayed step {wi['change_vs_original'] * 100:+.1f}% against the original "
                       f"(expected {(wi['step_time_factor'] - 1) * 100:+.1f}% from the shares)"
                       + what_if_noise(result))
        elif wi.get("expected_note"):
            out.append(f"what-if: {wi['expected_note']}")
    return out

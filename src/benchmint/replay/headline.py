"""The one headline of a replay's fidelity: which figure is the measurement, and whether it is one.

A replay is compared with its original in two ways. ``capture.json`` holds the original's median step time
measured when it was captured, minutes or days before the replay ran; on a shared machine the same step can
run 60% slower a few minutes later, so an error against it mixes the replay's error with the machine's drift.
When the live step is at hand (the demo, :func:`benchmint.replay.compare.compare_with_original`) the original
and the replay are timed alternately in one process: that is THE measurement, and capture.json's figure is
context, used to say how far the machine's speed moved since the capture.

A measurement is noisy when the reference itself moved more than :data:`NOISE` between its samples (the
original's per-round medians of the alternating comparison, or the spread of capture.json's step times), or
the replay's own rounds did (a burst of load that hit only the replay's turns): an error inside that spread is
reported as noise, never as the replay's error.
"""

from __future__ import annotations

from typing import Any

from benchmint.core.stats import NOISY_IQR_RATIO, noise_note

#: A reference whose samples spread by more than this fraction of their median is noisy.
NOISE = NOISY_IQR_RATIO


def _ratio(summary: dict[str, Any] | None) -> float | None:
    """IQR over median of a timing summary (None when it has neither)."""
    if not isinstance(summary, dict) or not summary.get("median") or summary.get("iqr") is None:
        return None
    return summary["iqr"] / summary["median"]


def judge(r: dict[str, Any], live: dict[str, Any] | None = None, name: str = "replay") -> dict[str, Any]:
    """The headline's facts, from a replay result ``r`` and, when there is one, the live alternating comparison
    ``live`` (``compare_with_original``'s output; ``name``: the replay's key in it).

    Returns ``reference`` ("live step" | "capture.json" | None), ``error`` (of the replay against that
    reference, None without one), ``verdict`` ("measured" | "noisy" | "no reference"), ``reference_spread``
    (how far the reference moved between its own samples), ``replay_spread`` (how far the replay's rounds of
    the live comparison moved), ``drift`` (the live original against
    capture.json's: how far the machine's speed moved since the capture), ``capture_error`` (the replay
    against capture.json) and ``capture_error_is_drift`` (the drift exceeds every noise, so that figure says
    more about the machine than about the replay), and ``ops_alone_over_reference`` (the replayed ops alone,
    ``ops_alone_s``, over the reference's time, timed where the reference was: in the live rounds, or
    ``replay_ops_only_s`` against capture.json) with ``ops_alone_exceed_reference``: above 1 (and the replay
    past the reference by as much), no gap can bring the replay down to its aim (a selection's share of the
    step, or the whole step), so the error is the reference's or the ops', not the gaps'. ``pace_moved``
    (against capture.json, on the CPU): how much slower (+) the same CPU work ran beside the timed iterations
    than beside the capture's steps (:mod:`benchmint.core.pace`), past the noise threshold; ``noisy_because``:
    "spread" or "pace", why the verdict is noisy."""
    cap_s = r.get("original_iter_time_s")
    out: dict[str, Any] = {"reference": None, "error": None, "verdict": "no reference", "reference_spread": None,
                           "pace_moved": None, "noisy_because": None,
                           "drift": None, "capture_error": r.get("error"), "capture_error_is_drift": False,
                           "replay_spread": None, "noise_threshold": NOISE, "ops_alone_over_reference": None,
                           "ops_alone_s": None, "ops_alone_exceed_reference": False, "aim_error": None,
                           "aim_noisy": False}
    cap_spread = r.get("original_iter_time_iqr_ratio")
    if live is not None and name in (live.get("replays") or {}):
        rep = live["replays"][name]
        spread = live.get("original_moved")
        out.update(reference="live step", error=rep["error"], reference_spread=spread,
                   replay_spread=rep.get("moved"), original_s=live["original_s"], replay_s=rep["replay_s"])
        if cap_s:
            drift = live["original_s"] / cap_s - 1
            out["drift"] = drift
            out["capture_error_is_drift"] = abs(drift) > max(NOISE, cap_spread or 0.0, spread or 0.0)
            if r.get("gap_target") == "capture.json":
                # the gaps aimed at capture.json's median: a replay that hit that aim exactly reads this error
                out["aim_error"] = cap_s / live["original_s"] - 1
                out["aim_noisy"] = cap_spread is not None and cap_spread > NOISE
    elif cap_s and r.get("error") is not None:
        # one side measured now, the other at capture time: the noise of both sides counts
        spreads = [x for x in (cap_spread, _ratio(r.get("iter_time_s"))) if x is not None]
        out.update(reference="capture.json", error=r["error"], reference_spread=max(spreads) if spreads else None,
                   original_s=cap_s, replay_s=(r.get("iter_time_s") or {}).get("median"))
        # the same CPU work ran this much slower (+) beside the timed iterations than beside the capture's steps:
        # an error of the same sign and no larger is the host's change of pace, not the replay's
        moved = ((r.get("pace") or {}).get("timed_vs_capture") if str(r.get("device") or "").startswith("cpu")
                 else None)
        if moved is not None and abs(moved) > NOISE:
            out["pace_moved"] = moved
            if r["error"] * moved > 0 and abs(r["error"]) <= abs(moved) + NOISE:
                out["noisy_because"] = "pace"
        ops_s, it = r.get("replay_ops_only_s"), out["replay_s"]
        if out["noisy_because"] is None and ops_s and it and r.get("gap_time_s") and it < ops_s * (1 - NOISE):
            # the iterations with their gaps ran faster than the same ops alone, timed before them: the host's
            # pace moved between the two timings, and the gaps were settled at the other pace
            out["noisy_because"] = "ops alone"
    else:
        return out
    spreads = [x for x in (out["reference_spread"], out["replay_spread"]) if x is not None]
    spread = max(spreads) if spreads else None
    noisy = spread is not None and spread > NOISE and abs(out["error"]) <= spread
    if noisy:
        out["noisy_because"] = "spread"
    out["verdict"] = "noisy" if noisy or out.get("noisy_because") in ("pace", "ops alone") else "measured"
    ops_s, over = _ops_alone_figures(r, out, live, name)
    if over is not None:
        out["ops_alone_s"], out["ops_alone_over_reference"] = ops_s, over
        # past the reference, and the replay with its gaps past it too and by no less (beyond the noise): the
        # ops alone and the replay tell the same story, at the same pace. Ops alone past the reference while the
        # replay with its gaps falls short of it is the host's pace moving between the two timings, not a finding
        err = out["error"]
        out["ops_alone_exceed_reference"] = over > 1 and err > 0 and over - 1 <= err + NOISE
    return out


def _ops_alone_figures(r: dict[str, Any], out: dict[str, Any], live: dict[str, Any] | None,
                       name: str) -> tuple[float | None, float | None]:
    """The replayed ops alone (seconds) and their time over the reference's, timed where the reference was:
    against the live step, the ops alone timed in the same alternating rounds (``compare_with_original``'s
    ``ops_vs_original``; the result's ``replay_ops_only_s`` was timed before the calibration, at another
    moment of the host's pace, and is not compared with the live rounds); against capture.json, the result's
    ``replay_ops_only_s``. (None, None) when there is none."""
    if out["reference"] == "live step":
        rep = live["replays"][name]  # (judge's live branch: the replay is there)
        if rep.get("ops_vs_original") is None:
            return None, None
        return rep.get("ops_s"), rep["ops_vs_original"]
    ops_s = r.get("replay_ops_only_s")
    if not ops_s or not out.get("original_s"):
        return None, None
    return ops_s, ops_s / out["original_s"]


def fmt_s(x: float | None) -> str:
    """Seconds as ms below one second, else s; "-" for None."""
    if x is None:
        return "-"
    return f"{x * 1e3:.3f} ms" if x < 1 else f"{x:.3f} s"


def _ops_alone(r: dict[str, Any], j: dict[str, Any]) -> str:
    """The clause saying that the replayed ops alone already take longer than what they are compared with."""
    if not j["ops_alone_exceed_reference"]:
        return ""
    sel = bool(r.get("selection"))
    beside = " timed in the same rounds" if j["reference"] == "live step" else ""
    took = (f"; the {'selected' if sel else 'replayed'} ops alone{beside} ({fmt_s(j['ops_alone_s'])}) take "
            f"{j['ops_alone_over_reference']:.3g}x the {'share of the original step' if sel else 'original step'} "
            f"they are compared with ({fmt_s(j['original_s'])}), so {j['error'] * 100:+.1f}% is ")
    quieter = "capture.json measured at a quieter time, or " if j["reference"] == "capture.json" else ""
    if sel:
        return took + f"that aim's error ({quieter}a share the ops alone exceed), not a gap error"
    return took + f"not a gap error ({quieter}ops that run slower here than in the original{_opened(r)})"


def _opened(r: dict[str, Any]) -> str:
    """The clause naming the composites whose callees the replay calls one by one from Python, when they are
    a tenth of the replayed ops or more (each call costs the replay about a microsecond the original, calling
    them from C++ inside the composite, did not pay)."""
    opened = r.get("opened_composites") or {}
    total = sum(opened.values())
    named = {k: v for k, v in opened.items() if v >= 0.1 * total}  # not a loss's two callees
    n = sum(named.values())
    if not n or n < 0.1 * (r.get("ops_replayed") or 0):
        return ""
    names = ", ".join(list(named)[:3])
    return (f", or the {n} ops the replay calls one by one from Python in place of {names}, which the original "
            "called from C++")


def _aim(r: dict[str, Any], j: dict[str, Any]) -> str:
    """The context's clause saying that the gaps aimed at a noisy capture.json that is itself far off the live
    step, so that that much of the headline's error is the aim's (a capture whose timed steps a burst of load
    hit), not the replay's. Context, not the headline: the first line holds one figure, the measurement."""
    aim, err = j["aim_error"], j["error"]
    if not j["aim_noisy"] or aim is None or abs(aim) <= NOISE or aim * err <= 0:
        return ""
    return (f"; the gaps aimed at capture.json's median step ({fmt_s(r['original_iter_time_s'])}), whose "
            f"timed steps spread {r['original_iter_time_iqr_ratio'] * 100:.0f}% of their median (noisy) and which "
            f"is {aim * 100:+.1f}% off the live step: that much of the error is the aim's, not the replay's "
            "(capture again on a quieter machine, or with more --measure steps)")


def headline(r: dict[str, Any], live: dict[str, Any] | None = None, name: str = "replay") -> list[str]:
    """The fidelity headline in words: the first line is the measurement (or says it is noise), then, when the
    recording lost part of the step (``trace_damage``), that the figure is not the replay's fidelity, and the
    context (capture.json's figure and the drift since the capture)."""
    lines = _headline(r, live, name)
    lost = damage_line(r)
    if lost:
        lines.insert(1, lost)
    lines += [x for x in (compiled_line(r), kineto_line(r)) if x]
    return lines


def damage_line(r: dict[str, Any]) -> str | None:
    """The line saying that the recording lost part of the step (``trace_damage``), so that the figure above it is
    not the step's fidelity; None when nothing was lost."""
    return f"not the step's fidelity: {r['trace_damage']}" if r.get("trace_damage") else None


def _headline(r: dict[str, Any], live: dict[str, Any] | None, name: str) -> list[str]:
    j = judge(r, live, name)
    cov = f"coverage {r['coverage']:.3f} ({r['ops_replayed']}/{r['ops_total']} ops)"
    if j["reference"] is None:
        est = r.get("original_iter_time_estimated_s")
        it = (r.get("iter_time_s") or {}).get("median")
        note = r.get("error_note") or ""
        if r.get("what_if") and not r.get("scale") and (r["what_if"].get("expected_iter_time_s") or est is not None):
            tail = _what_if_tail(r, est)
        elif est is not None and not r.get("scale"):  # (a scaled step's original is not this estimate's)
            tail = f"; original ~{fmt_s(est)} estimated from the trace, not measured"
        else:
            tail = (f"; {note}" if note.startswith("no error") else f"; no error: {note}" if note
                    else "; no measured original to compare with")
        return [f"{cov}, replay {fmt_s(it)}/iter{noise_note(r.get('iter_time_s') or {})}{tail}"]
    err, spread = j["error"], j["reference_spread"]
    if j["reference"] == "live step":
        first = (f"{cov}, error {err * 100:+.1f}% against the live step timed alternately ({live['rounds']} rounds "
                 f"x {live['reps']}; the median of the rounds' replay/original, beside the medians of each side: "
                 f"original {fmt_s(j['original_s'])}, replay {fmt_s(j['replay_s'])})")
        if j["verdict"] == "noisy":
            moved = [f"the {who} moved {x * 100:.0f}%" for who, x in (("original", spread), ("replay", j["replay_spread"]))
                     if x is not None and x > NOISE and abs(err) <= x]
            first += (f"; noisy: {' and '.join(moved)} between rounds, so {err * 100:+.1f}% is within the noise, not "
                      "a measured error of the replay")
        lines = [first + _ops_alone(r, j)]
        if r.get("original_iter_time_s"):
            own = (r.get("iter_time_s") or {}).get("median")
            ctx = (f"reference at capture time: capture.json {fmt_s(r['original_iter_time_s'])}, the replay's own "
                   f"timed run{f' ({fmt_s(own)})' if own is not None else ''} {j['capture_error'] * 100:+.1f}% against "
                   "it" if j["capture_error"] is not None
                   else f"reference at capture time: capture.json {fmt_s(r['original_iter_time_s'])}")
            if j["drift"] is not None:
                ctx += f"; the machine's speed moved {j['drift'] * 100:+.1f}% since (live original against it)"
                if j["capture_error_is_drift"]:
                    ctx += ", so that figure is the machine's drift, not the replay's error"
            ctx += _aim(r, j)
            lines.append(ctx)
        over = j["ops_alone_over_reference"]
        if over is not None and not j["ops_alone_exceed_reference"] and live["replays"][name].get("ops_timed"):
            lines.append(f"the replayed ops alone, timed in the same rounds without their gaps, "
                         f"{fmt_s(j['ops_alone_s'])} ({over * 100:.0f}% of the live step): the gaps add the rest")
        return lines
    first = (f"{cov}, replay {fmt_s(j['replay_s'])}/iter{noise_note(r.get('iter_time_s') or {})}, original "
             f"{fmt_s(j['original_s'])} (capture.json, measured at capture time), error {err * 100:+.1f}%")
    if j["noisy_because"] == "spread":
        first += (f"; noisy: the step times spread {spread * 100:.0f}% of their median, so {err * 100:+.1f}% is "
                  "within the noise, not a measured error of the replay")
    elif j["noisy_because"] == "pace":
        first += (f"; noisy: {_pace_moved(j['pace_moved'])}, so {err * 100:+.1f}% is the host's change of pace, not "
                  "a measured error of the replay")
    elif j["noisy_because"] == "ops alone":
        first += (f"; noisy: {_ops_faster(j['replay_s'], r['replay_ops_only_s'])}, so {err * 100:+.1f}% is not a "
                  "measured error of the replay")
    lines = [first + _ops_alone(r, j)]
    if j["pace_moved"] is not None and j["noisy_because"] != "pace":
        lines.append(f"{_pace_moved(j['pace_moved'])}: the figure above holds that change")
    threads = threads_line(r)
    if threads:
        lines.append(threads)
    return lines


def _ops_faster(replay_s: float, ops_s: float) -> str:
    return (f"the timed iterations ({fmt_s(replay_s)}) ran faster than the same ops alone timed before them "
            f"({fmt_s(ops_s)}): the host's pace moved between the two timings")


def noise_clause(j: dict[str, Any], what: str) -> str:
    """The clause saying that ``what`` (a figure judged by :func:`judge`) is within the noise, and why; "" when
    the verdict is "measured" (or there is no reference)."""
    if j["verdict"] != "noisy":
        return ""
    err = j["error"]
    if j["noisy_because"] == "pace":
        why = _pace_moved(j["pace_moved"])
    elif j["noisy_because"] == "ops alone":
        why = _ops_faster(j["replay_s"], j["ops_alone_s"])
    else:
        moved = [x for x in (j["reference_spread"], j["replay_spread"]) if x is not None]
        why = f"the step times spread {max(moved) * 100:.0f}% of their median"
    return f"; noisy: {why}, so {what} ({err * 100:+.1f}% off) is within the noise, not a measured effect"


def what_if_judged(r: dict[str, Any]) -> dict[str, Any] | None:
    """A what-if replay judged as a whole-step replay is (:func:`judge`: the reference's and the replay's spread,
    the host's pace, the iterations against the ops alone), its replayed step against the changed step it was
    expected to take (capture.json's step times the matched ops' recorded share): None without that figure."""
    wi = r.get("what_if") or {}
    exp, it = wi.get("expected_iter_time_s"), (r.get("iter_time_s") or {}).get("median")
    if not exp or not it:
        return None
    j = judge({**r, "error": it / exp - 1, "original_iter_time_s": exp})
    if j["ops_alone_s"] is None and r.get("replay_ops_only_s"):
        j["ops_alone_s"] = r["replay_ops_only_s"]
    return j


def what_if_noise(r: dict[str, Any]) -> str:
    """The what-if line's noise caveat ("" when the change is measured): the replayed step's distance from its
    expected time is within the noise a whole-step replay would be judged noisy by."""
    j = what_if_judged(r)
    return noise_clause(j, "the replayed step's distance from the expected change") if j is not None else ""


#: A Kineto trace matching fewer of the step's ops than this is another run's: refused (replay.api) ...
KINETO_NONE = 0.1
#: ... and one matching fewer than this, a partial match: warned about (:func:`kineto_line`).
KINETO_LOW = 0.9


def kineto_line(r: dict[str, Any]) -> str | None:
    """The warning that the Kineto trace matched only part of the step's ops (``kineto_matched``): the others have
    no recorded start nor duration, so the gaps and coverage by time hold holes; None when it matched (nearly)
    all, or there is none."""
    m = r.get("kineto_matched")
    if not isinstance(m, (int, float)) or m >= KINETO_LOW:
        return None
    return (f"warning: the Kineto trace ({r.get('kineto')}) matched only {m * 100:.0f}% of the step's ops: the "
            "others have no recorded time, so the CPU time between ops, the estimate and coverage by time leave "
            "them out; is it the Kineto trace of this run (benchmint capture writes both)?")


def compiled_line(r: dict[str, Any]) -> str | None:
    """The line saying how much of the recorded step ran inside torch.compile'd regions (``compiled_regions``)
    and what the replay makes of it: the ops those regions called out to are replayed, their generated kernels
    are not ops and are not; None when the step has no compiled region."""
    c = r.get("compiled_regions")
    if not c:
        return None
    n, g = c.get("calls") or 0, c.get("graphs") or 0
    s = f"torch.compile'd regions: {n} call{'s' if n != 1 else ''} of {g} compiled graph{'s' if g != 1 else ''}"
    if c.get("share_of_step") is not None:
        s += f", {c['share_of_step'] * 100:.0f}% of the recorded step ({fmt_s(c['recorded_s'])})"
    free, share = c.get("not_in_ops_s"), c.get("not_in_ops_share_of_step")
    if free is None:
        return s + ("; their generated kernels are no ops and are not replayed (without Kineto their time is "
                    "unknown)")
    s += (f"; {fmt_s(free)} of it{f' ({share * 100:.0f}% of the step)' if share is not None else ''} ran outside "
          f"the {_ops(c.get('ops_inside') or 0)} they called: generated kernels, which the replay does not run")
    if r.get("gaps") == "recorded" and r.get("gap_time_s"):
        s += (f"; at best it spends that time as CPU work between ops (gaps aimed at {r.get('gap_target')}), so the "
              "error says how well the step's total was matched, not how the compiled code runs here")
        if r.get("gap_target") == "estimate":
            from benchmint.replay.fidelity import GAP_CAP_S

            s += (f"; the estimate from the trace counts at most {GAP_CAP_S * 1e3:.1f} ms of each recorded gap "
                  "between ops, so it leaves most of a long compiled kernel out")
    else:
        s += ("; without gaps the replay leaves that time out, so it reads short of the original by about "
              f"{share * 100:.0f}% of the step" if share is not None else "; without gaps the replay leaves it out")
    return s


def _ops(n: int) -> str:
    return f"{n} op{'s' if n != 1 else ''}"


def threads_line(r: dict[str, Any]) -> str | None:
    """The line saying that the replay ran on another intra-op thread count than the captured step (``--threads``,
    or fewer CPUs here than the capture's machine had), so that its error against capture.json holds that
    difference; None when they agree, either is unknown, or there is no error against it."""
    th, orig = r.get("threads"), r.get("original_threads")
    if not th or not orig or th == orig or r.get("error") is None:  # (no error: nothing it moves)
        return None
    return (f"the original ran on {orig} intra-op thread{'s' if orig > 1 else ''}, this replay on {th}: the error "
            f"above holds that difference, not only the replay's (--threads {orig}, on as many CPUs, compares like "
            "for like)")


def retyped_line(r: dict[str, Any]) -> str | None:
    """The warning that some ops came out in another dtype than the original's (``retyped``): their time is
    that of the other dtype, so the error holds it; None when every output's dtype matched."""
    rt = r.get("retyped") or []
    if not rt:
        return None
    n = sum(x["count"] for x in rt)
    which = ", ".join(f"{x['op']} x{x['count']} ({x['replayed_dtype']}, recorded {x['recorded_dtype']})" for x in rt[:4])
    return (f"warning: {n} op{'s' if n > 1 else ''} ran in another dtype than the original's: {which}; later ops "
            "read made-up tensors of the recorded dtype, but these ops' own time is not the original's")


def pace_change(moved: float) -> str:
    """``moved`` (the result's ``pace.timed_vs_capture``) in words: "21% slower" or "13% faster"."""
    return f"{abs(moved) * 100:.0f}% {'slower' if moved > 0 else 'faster'}"


def _what_if_tail(r: dict[str, Any], est: float | None) -> str:
    """The what-if headline's expected changed step: capture.json's step times the matched ops' recorded share (the
    figure the what-if line's "expected" change is), and, where it is far off that, the trace's own estimate of
    the changed step and why they differ; the estimate alone without capture.json."""
    wi = r["what_if"]
    exp = wi.get("expected_iter_time_s")
    if not exp:
        return f"; the changed step ~{fmt_s(est)} estimated from the trace (no capture.json to scale)"
    tail = (f"; the changed step expected ~{fmt_s(exp)} (capture.json's {fmt_s(wi.get('original_iter_time_s'))} x "
            f"{wi['step_time_factor']:.3f}, the matched ops' recorded share)")
    if est is not None and abs(est / exp - 1) > NOISE:
        ops = r.get("replay_ops_only_s")
        tail += (f"; the trace's own estimate of it, ~{fmt_s(est)}, is {(est / exp - 1) * 100:+.0f}% off: it adds what "
                 f"the trace recorded besides the ops to this run's timing of the ops alone ({fmt_s(ops)}), which "
                 "moves with the host's pace, while the expected figure scales capture.json's measured step")
    return tail + what_if_noise(r)


def _pace_moved(moved: float) -> str:
    return (f"this host ran the same CPU work {pace_change(moved)} beside the timed iterations than beside the "
            "capture's steps (pace probe)")

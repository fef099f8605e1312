"""How much the made-up lookup indices' spread moves the replayed step, where nothing says what the spread was.

An execution trace holds an index tensor's shape, never its values (:mod:`benchmint.replay.index_skew`): unless
the user gives the spread (``--index-spread``) or capture.json sketched it, the replay's lookups run over indices
spread as a guess (uniform, unless the recorded lookup times clearly say otherwise, which they rarely can). The
guess is not harmless: a recommender's inference step fed Zipf-like indices ran 13% faster here than the same
step over uniform ones, and a plain trace of it cannot tell which it was (its recorded lookup durations are mostly
the recorders' cost, and a second recording of the same model moved them by more than the spread does).

So the replay says how much rides on the guess: the step's ops alone are timed over uniform indices and over
Zipf-like ones (exponent 1.05: a few hot rows, as real categorical features have) in every guessed tensor, pair
by pair (each side refilled, run once untimed, then timed twice, or once for an iteration over 50 ms; the side
timed first alternates), and the
median ratio with its 95% interval (:mod:`benchmint.core.paired`) goes into the result as
``index_distribution.effect``; the CLI prints it with the two ways to settle it. The replay itself keeps the
indices it chose. Not measured in a multi-rank replay (a step there runs collectives the other
ranks would have to meet) nor where one iteration takes longer than ``MAX_ITER_S``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

from benchmint.core import paired
from benchmint.replay import index_skew
from benchmint.replay.conditions import quiet_gc
from benchmint.replay.execute import iteration_s
from benchmint.replay.headline import fmt_s
from benchmint.replay.index_skew import label_of, lookup_tensors, parse_spread, spread_indices, user_spread
from benchmint.replay.plan import Plan

SKEW = 1.05  # the skewed side (real categorical features: an exponent near 1)
BUDGET_S = 1.5  # about this long for the pairs ...
MIN_PAIRS, MAX_PAIRS = 5, 30  # ... within these counts
MAX_ITER_S = 0.25  # an iteration longer than this: not measured (five pairs would take 5 s and more)
SHORT_S = 0.05  # an iteration shorter than this is timed twice per side and pair (once above)
NOTABLE = 0.05  # a change at least this large (and told from noise) is printed as a warning


def unknown(option: str) -> bool:
    """Whether the spread of made-up lookup indices can be a guess: the user gave none (``--index-spread`` or
    ``BENCHMINT_INDEX_SPREAD``); which tensors' spread was fitted to capture.json's sketch, :func:`measure` tells."""
    return parse_spread(user_spread(option)) is None


def distribution(records: list[dict[str, Any]] | None, effect: dict[str, Any] | None) -> dict[str, Any] | None:
    """The result's ``index_distribution``: how made-up lookup indices were spread, per index tensor
    (``records``: what :func:`index_skew.choose` returned), and what the guess moves (``effect``:
    :func:`measure`); None when there was neither."""
    if not records and not effect:
        return None
    if not records:
        how = "made-up indices uniform (no recorded lookup time to choose against)"
    elif all("as" in t and not t["as"].startswith("the unscaled") for t in records):  # nothing was timed
        how = ("per made-up index tensor read by a lookup: the spread given (--index-spread, BENCHMINT_INDEX_SPREAD) "
               "or fitted to capture.json's index sketch, nothing timed (each tensor's 'as')")
    else:
        how = index_skew.HOW + " (a tensor with 'as' was given or fitted instead, not timed)"
    return {"how": how, "tensors": records or [], **({"effect": effect} if effect else {})}


def measure(plan: Plan, fn: Callable, records: list[dict[str, Any]] | None, seed: int = 0,
            known: set[tuple[int, int]] | None = None) -> dict[str, Any] | None:
    """Time ``fn`` (the step's ops, no gaps) over uniform and over skewed values of the index tensors whose
    spread was guessed (see the module); the replayed values are put back. ``records``: what
    :func:`index_skew.choose` returned (a tensor whose record says ``as`` was given or fitted, not guessed);
    ``known``: the (``step``, ``tensor_id``) of such tensors instead (a scaled step: its records are its unscaled
    replay's choice). None where the step has no guessed tensor; a dict with ``note`` and no ratio where it was
    not measured."""
    if known is None:
        known = {(r["step"], r["tensor_id"]) for r in records or [] if "as" in r}
    chosen = {(r["step"], r["tensor_id"]): r["chosen"] for r in records or []}
    tensors = []  # (tensor, its replayed values, uniform values, skewed values)
    replayed: dict[str, int] = {}  # the guessed tensors' spreads as replayed: how many of each
    gen = torch.Generator().manual_seed(seed + 104729)
    for lk in lookup_tensors(plan).values():
        name = (lk.steps[0], lk.ref.tensor_id)
        if name in known:
            continue
        t = lk.tensor
        tensors.append((t, t.clone(), *(spread_indices(t.shape, lk.rows, skew, gen, t.dtype).to(t.device)
                                        for skew in (0.0, SKEW))))
        label = chosen.get(name, "uniform")
        replayed[label] = replayed.get(label, 0) + 1
    if not tensors:
        return None
    out: dict[str, Any] = {"tensors": len(tensors), "replayed": replayed, "sides": ["uniform", label_of(SKEW)],
                           "how": HOW}
    if plan.check_time_s > 4 * MAX_ITER_S:  # the plan's checking passes: no need to time one to know
        out["note"] = f"not measured: the plan's check of the step took {plan.check_time_s:.1f} s"
        return out

    def fill(which: int) -> None:
        for x in tensors:
            x[0].copy_(x[which])

    with plan.grad_context():
        try:
            with quiet_gc():
                first = iteration_s(plan, fn)  # over the replayed values
                if first > MAX_ITER_S:
                    out["note"] = f"not measured: one iteration takes {first:.2f} s"
                    return out
                fill(3)
                try:
                    iteration_s(plan, fn)
                except Exception:  # noqa: BLE001 - an op that reads the indices with a shape that follows them
                    out["note"] = f"not measured: the step does not run over {label_of(SKEW)} indices"
                    return out
                timed = 2 if first < SHORT_S else 1
                n = max(MIN_PAIRS, min(MAX_PAIRS, int(BUDGET_S / (2 * (1 + timed) * max(first, 1e-6)))))
                uniform, skewed = [], []
                for k in range(n):
                    for which in ((2, 3) if k % 2 == 0 else (3, 2)):
                        fill(which)
                        iteration_s(plan, fn)  # the first pass over new values touches their rows
                        (uniform if which == 2 else skewed).append(statistics.mean(iteration_s(plan, fn) for _ in range(timed)))
        finally:
            fill(1)
    ratio = paired.ratio_interval(paired.paired_ratios(skewed, uniform))
    out.update(ops_only_uniform_s=statistics.median(uniform), ops_only_skewed_s=statistics.median(skewed),
               change=ratio["median_ratio"] - 1 if ratio["median_ratio"] is not None else None,
               ci_low=ratio["ci_low"], ci_high=ratio["ci_high"], pairs=ratio["pairs"], verdict=ratio["verdict"])
    return out


def lines(result: dict[str, Any]) -> list[str]:
    """What the console says of the guessed spread: its effect, and how to settle it where it matters."""
    eff = ((result.get("index_distribution") or {}).get("effect")) or None
    if not eff:
        return []
    what = f"made-up lookup indices ({eff['tensors']} tensor{'s' if eff['tensors'] > 1 else ''})"
    if eff.get("note"):
        return [f"{what}: their spread is a guess (the trace holds no values); its effect {eff['note']}"]
    ch = eff.get("change")
    if ch is None:
        return []
    rep = eff.get("replayed") or {"uniform": eff["tensors"]}
    ran = (f"{next(iter(rep))} ones" if len(rep) == 1
           else "the spreads chosen: " + ", ".join(f"{k} x{v}" for k, v in sorted(rep.items())))
    lo, hi = eff.get("ci_low"), eff.get("ci_high")
    ci = f" (95% CI {(lo - 1) * 100:+.1f}..{(hi - 1) * 100:+.1f}%)" if lo is not None and hi is not None else ""
    head = (f"{what}: their spread is a guess (the trace holds no values; the replay ran over {ran}); the "
            f"step's ops took {fmt_s(eff['ops_only_uniform_s'])} over uniform indices, {ch * 100:+.1f}%{ci} over "
            f"{eff['sides'][1]} ones")
    if abs(ch) >= NOTABLE and eff.get("verdict") in ("cost", "saving"):
        return [f"warning: {head}. Give the data's spread if it is known (--index-spread zipf:E or uniform); "
                "benchmint capture sketches it in capture.json"]
    if lo is not None and hi is not None and lo >= 1 - NOTABLE and hi <= 1 + NOTABLE:
        return [f"{head}: the guess hardly moves this step"]
    return [f"{head}: too noisy to tell how much the guess moves this step"]


HOW = (f"the step's ops alone over uniform and over Zipf {SKEW} values of every index tensor whose spread was "
       "guessed, in alternating pairs (each side refilled, run once, timed twice): median skewed / uniform ratio "
       "with a 95% bootstrap interval; the replay keeps the indices it chose")

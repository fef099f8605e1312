"""The Python API behind ``benchmint next``: plan the next runs of a space, or run them and learn.

:func:`plan_next` reads the runs of the space already in the results store and chooses the ``budget``
configurations worth measuring (:func:`benchmint.learn.active.choose`). :func:`run_next` measures them one at
a time on this machine, refitting after each run so that every choice uses everything measured so far, stores
each run, and returns the learning curve: after n measured runs, the median APE of the model (fitted on
those n) on the runs measured after them, i.e. on configurations it had not seen.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmint.core.errors import UserError
from benchmint.learn.active import (
    MIN_CALIBRATION,
    MIN_FIT,
    Choice,
    SpaceModel,
    choose,
    encode,
    learning_curve,
)
from benchmint.learn.space import TARGETS, Space, point_key

SCHEMA_VERSION = "1.0"


@dataclass
class Measured:
    """What the store holds for a space: per grid index, the mean target value, in order of first measurement."""

    order: list[int] = field(default_factory=list)
    values: dict[int, list[float]] = field(default_factory=dict)
    run_ids: dict[int, list[str]] = field(default_factory=dict)

    def add(self, index: int, value: float, run_id: str) -> None:
        if index not in self.values:
            self.order.append(index)
        self.values.setdefault(index, []).append(value)
        self.run_ids.setdefault(index, []).append(run_id)

    def means(self) -> dict[int, float]:
        return {i: float(np.mean(v)) for i, v in self.values.items()}


def measured_in_store(space: Space, records: list[Any]) -> Measured:
    from benchmint.learn.measure import stored_points

    index = {point_key(p): i for i, p in enumerate(space.grid())}
    m = Measured()
    for pt, v, rid in stored_points(space, records):
        m.add(index[point_key(pt)], v, rid)
    return m


def _choice_dict(c: Choice, unit: str) -> dict[str, Any]:
    return {"point": c.point, "prediction": c.prediction, "lower": c.lower, "upper": c.upper, "unit": unit,
            "score": c.score, "why": c.why, **c.facts}


def _check_budget(budget: int) -> None:
    if budget <= 0:
        raise UserError(f"--budget {budget}: must be at least 1 (the number of runs to choose)")


def plan_next(space: Space, records: list[Any], budget: int) -> dict[str, Any]:
    """The ``budget`` configurations worth measuring next, best first, as a JSON-ready dict."""
    _check_budget(budget)
    grid = space.grid()
    m = measured_in_store(space, records)
    means = m.means()
    picks = choose(grid, space.axes, means, budget, mode=space.mode(), slo=space.slo, goal=space.goal,
                   seed=space.seed)
    unit = TARGETS[space.target].unit
    return {"schema_version": SCHEMA_VERSION, "space": space.describe(), "mode": space.mode(),
            "measured": len(means), "configurations": len(grid),
            "choices": [_choice_dict(c, unit) for c in picks],
            "note": (f"{len(means)} measured run(s) of this space in the store; the model needs {MIN_FIT}, so these "
                     "choices spread over the space") if len(means) < MIN_FIT else
            (f"{len(means)} measured run(s): not enough runs to calibrate a 90% interval ({MIN_CALIBRATION} "
             "needed); the choices follow the model's spread, shown without an interval")
            if len(means) < MIN_CALIBRATION else None}


def curve_of(space: Space, m: Measured) -> list[dict[str, Any]]:
    """Learning curve over the measured runs in the order they were measured."""
    grid = space.grid()
    means = m.means()
    X = encode([grid[i] for i in m.order], space.axes)
    y = np.array([means[i] for i in m.order])
    return [{"measured": n, "median_ape": e, "evaluated_on": len(m.order) - n}
            for n, e in learning_curve(X, y, list(range(len(y))), seed=space.seed)]


def run_next(space: Space, records: list[Any], budget: int, *, results_dir: str | os.PathLike | None = None,
             out_dir: str | os.PathLike | None = None,
             on_run: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Measure ``budget`` configurations, one at a time, each chosen after refitting on all runs so far."""
    from benchmint.learn.measure import Measurer

    _check_budget(budget)
    grid = space.grid()
    m = measured_in_store(space, records)
    before = len(m.order)
    unit = TARGETS[space.target].unit
    runs: list[dict[str, Any]] = []
    failed = 0
    with Measurer(space, results_dir=results_dir, out_dir=out_dir) as meas:
        for k in range(budget):
            picks = choose(grid, space.axes, m.means(), 1, mode=space.mode(), slo=space.slo, goal=space.goal,
                           seed=space.seed)
            if not picks:
                break  # every configuration measured
            c = picks[0]
            rec, value = meas.measure(c.point)
            row = {**_choice_dict(c, unit), "run_id": rec.id, "status": rec.status, "measured_value": value}
            if c.prediction is not None and value:
                row["ape"] = abs(c.prediction - value) / value
                if c.lower is not None and c.upper is not None:
                    row["inside_interval"] = bool(c.lower <= value <= c.upper)
            if value is not None and rec.status != "ok":
                # an interrupted or partly failed run measured only part of its configuration: never learned from
                row["left_out"] = f"status {rec.status}: not a complete measurement"
                value = None
            if value is None:
                failed += 1
            else:
                m.add(c.index, value, rec.id)
            runs.append(row)
            if on_run is not None:
                on_run(k, row)
            if meas.interrupted:  # Ctrl-C during the run: its partial record is kept; no further run
                raise KeyboardInterrupt
    means = m.means()
    final = None
    if len(means) >= MIN_FIT:
        idx = list(means)
        Xm, ym = encode([grid[i] for i in idx], space.axes), np.array([means[i] for i in idx])
        model = SpaceModel(space.seed).fit(Xm, ym).calibrate(Xm, ym)
        rest = [i for i in range(len(grid)) if i not in means]
        if rest:
            pred, lo, hi = model.predict(encode([grid[i] for i in rest], space.axes))
            final = {"not_measured": len(rest), "calibrated": model.q90 is not None,
                     "calibration_runs": model.n_calibration,
                     "median_interval_width_rel": float(np.median((hi - lo) / pred)) if model.q90 is not None
                     else None,
                     "note": None if model.q90 is not None else model.uncalibrated_why()}
    return {"schema_version": SCHEMA_VERSION, "space": space.describe(), "mode": space.mode(),
            "measured_before": before, "runs": runs, "runs_without_target": failed, "measured": len(means),
            "configurations": len(grid), "learning_curve": curve_of(space, m), "model_after": final}


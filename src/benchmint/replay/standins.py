"""The skipped ops' stand-ins: CPU work of each skipped op's recorded duration (``replay/plan.py``), less the
recorders' cost that duration holds.

An op the replay cannot run (a quantized linear's packed weights, a sparse tensor's op) is stood in for by
spinning for its recorded time, and that time holds the execution-trace and profiler observers' cost of every
node recorded under it: three ``quantized::linear_dynamic`` of a small MLP spent 1.14 ms against 0.41 ms
un-observed. The cost per node inside an op's duration is measured by the replay's calibration
(:func:`benchmint.replay.fidelity.in_op_node_cost`) and taken out. A replay that calibrates does so on the way; one that does not (``--gaps none``,
gaps given by a file or by the unscaled step) takes an earlier replay's figure, or calibrates once for it.
Across devices nothing is taken out: the host that recorded the trace is not this one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmint.replay import fidelity
from benchmint.replay.execute import summarize, time_iterations
from benchmint.replay.plan import Plan


class StandIns:
    """The plan's stand-ins and what was taken out of them (``info`` for the result's ``standins``)."""

    def __init__(self, plan: Plan, cross: bool) -> None:
        self.plan = plan
        self.steps = [st for st in plan.steps if st.standin_s and st.op.dur_s is not None]
        self.any = bool(self.steps)
        self.cross = cross
        self.cost_s: float | None = None  # per recorded node; None: nothing taken out (yet)
        self.source: str | None = None
        self.failed: str | None = None

    def correct(self, cost_s: float, source: str = "this replay's calibration") -> int:
        """Take ``cost_s`` per recorded node out of every stand-in; how many changed."""
        self.cost_s, self.source = cost_s, source
        return self.plan.correct_standins(cost_s)

    def measure(self, fn0: Callable, iters: int, warmup: int, tell: Callable[[str], None]) -> Callable:
        """Calibrate once for the cost per node (the ops alone timed, then recorded) and correct the stand-ins;
        the iteration to time from here on (``fn0`` when nothing changed)."""
        tell("calibrate stand-ins")
        base = time_iterations(self.plan, fn0, iters=max(10, min(iters, 30)), warmup=max(3, warmup))
        try:
            cal = fidelity.calibrate(self.plan, fn0, summarize(base)["median"])
        except fidelity.CalibrationFailed as e:
            self.failed = str(e)
            return fn0
        return self.plan.compile() if self.correct(cal.in_op_node_cost_s, "a calibration of this replay for it") \
            else fn0

    def info(self) -> dict[str, Any] | None:
        """What the stand-ins spend (None: the step has none)."""
        if not self.any:
            return None
        recorded = sum(st.op.dur_s or 0.0 for st in self.steps)
        spent = sum(st.standin_s or 0.0 for st in self.steps)
        if self.cost_s is not None:
            how = (f"each skipped op's recorded duration less {self.cost_s * 1e6:.2f} us per node recorded under "
                   f"it (the recorders' cost, from {self.source})")
        elif self.cross:
            how = ("each skipped op's recorded duration as it is: the trace was recorded on another device's host, "
                   "whose recorders' cost this one cannot measure")
        else:
            how = ("each skipped op's recorded duration as it is, the recorders' cost included"
                   + (f" (the calibration failed: {self.failed})" if self.failed else ""))
        return {"ops": len(self.steps), "recorded_s": recorded, "spent_s": spent, "cost_per_node_s": self.cost_s,
                "how": how}

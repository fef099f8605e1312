"""A cost measured as the ratio of paired timings, and whether it can be told from noise.

On a shared machine two runs taken one after the other differ by the machine's drift, which is often larger
than the cost being looked for. Timing the two sides alternately (A B A B ...) and taking one ratio per pair
cancels the drift that is slow against one pair; what is left is judged by a confidence interval of the
median ratio (a percentile bootstrap over the pairs), never by a single median:

- ``no measurable cost``: the interval holds 1 and lies within ``1 +- tolerance``;
- ``cost``: the interval lies wholly above 1 (``saving``: wholly below);
- ``inconclusive``: the interval holds 1 but is wider than the tolerance (too few pairs, or too noisy).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

#: The widest interval, as a fraction either side of 1, that may be read as "no measurable cost".
TOLERANCE = 0.03


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """``a[i] / b[i]`` for the pairs where both are positive."""
    return [x / y for x, y in zip(a, b, strict=False) if x > 0 and y > 0]


def ratio_interval(ratios: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                   seed: int = 0, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """The median of paired ratios with a percentile-bootstrap interval and the verdict it allows. (Plain
    Python, no numpy: an exported replay runner, which needs only torch, reports it too.)"""
    r = [float(x) for x in ratios if math.isfinite(x) and x > 0]
    out: dict[str, Any] = {"pairs": len(r), "median_ratio": None, "ci_low": None, "ci_high": None,
                           "confidence": confidence, "tolerance": tolerance, "verdict": "inconclusive"}
    if not r:
        return out
    out["median_ratio"] = statistics.median(r)
    if len(r) < 3:
        return out
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(r, k=len(r))) for _ in range(resamples))
    lo, hi = (_quantile(meds, q) for q in ((1 - confidence) / 2, (1 + confidence) / 2))
    out["ci_low"], out["ci_high"] = lo, hi
    out["verdict"] = verdict(lo, hi, tolerance)
    return out


def _quantile(xs: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``xs``, interpolated linearly between order statistics."""
    pos = q * (len(xs) - 1)
    i = int(pos)
    return xs[i] if i + 1 >= len(xs) else xs[i] + (xs[i + 1] - xs[i]) * (pos - i)


def verdict(lo: float, hi: float, tolerance: float = TOLERANCE) -> str:
    if lo > 1:
        return "cost"
    if hi < 1:
        return "saving"
    if lo >= 1 - tolerance and hi <= 1 + tolerance:
        return "no measurable cost"
    return "inconclusive"


def describe(res: dict[str, Any]) -> str:
    """One line: ``1.004 (95% CI 0.991-1.018, 40 pairs): no measurable cost``."""
    if res.get("median_ratio") is None:
        return "no pairs"
    if res.get("ci_low") is None:
        return f"{res['median_ratio']:.3f} ({res['pairs']} pairs: too few for an interval): inconclusive"
    ci = f"{res['confidence'] * 100:.0f}% CI {res['ci_low']:.3f}-{res['ci_high']:.3f}"
    v = res["verdict"]
    if v == "inconclusive":
        v = f"inconclusive (the interval is wider than +-{res['tolerance'] * 100:.0f}%)"
    return f"{res['median_ratio']:.3f} ({ci}, {res['pairs']} pairs): {v}"

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

from collections.abc import Sequence
from typing import Any

import numpy as np

#: The widest interval, as a fraction either side of 1, that may be read as "no measurable cost".
TOLERANCE = 0.03


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """``a[i] / b[i]`` for the pairs where both are positive."""
    return [x / y for x, y in zip(a, b, strict=False) if x > 0 and y > 0]


def ratio_interval(ratios: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                   seed: int = 0, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """The median of paired ratios with a percentile-bootstrap interval and the verdict it allows."""
    r = np.asarray([x for x in ratios if np.isfinite(x) and x > 0], dtype=float)
    out: dict[str, Any] = {"pairs": int(r.size), "median_ratio": None, "ci_low": None, "ci_high": None,
                           "confidence": confidence, "tolerance": tolerance, "verdict": "inconclusive"}
    if r.size == 0:
        return out
    out["median_ratio"] = float(np.median(r))
    if r.size < 3:
        return out
    rng = np.random.default_rng(seed)
    meds = np.median(r[rng.integers(0, r.size, size=(resamples, r.size))], axis=1)
    lo, hi = np.quantile(meds, [(1 - confidence) / 2, (1 + confidence) / 2])
    out["ci_low"], out["ci_high"] = float(lo), float(hi)
    out["verdict"] = verdict(float(lo), float(hi), tolerance)
    return out


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

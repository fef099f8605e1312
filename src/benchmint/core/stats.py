"""Order statistics of measured samples: the one percentile rule of the project (linear interpolation between
the closest ranks, numpy's default, which is also what vLLM's and GuideLLM's reports use) and the summary of a
timing loop's samples with how noisy they were."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

#: A timing whose interquartile range exceeds this fraction of its median is flagged noisy (the threshold
#: ``torch.utils.benchmark`` warns at).
NOISY_IQR_RATIO = 0.10


def percentiles(values: Iterable[float], qs: Sequence[float]) -> list[float]:
    """The ``qs`` percentiles (0-100) of ``values`` (NaN for no values), computed as ``numpy.percentile`` does
    by default, in plain Python: the replay engine that ``benchmint export`` vendors runs where only torch is
    installed, and numpy is not one of torch's requirements."""
    a = sorted(float(v) for v in values)
    if not a:
        return [float("nan")] * len(qs)
    out = []
    for q in qs:
        h = (len(a) - 1) * float(q) / 100.0
        lo = math.floor(h)
        hi = min(lo + 1, len(a) - 1)
        out.append(a[lo] + (h - lo) * (a[hi] - a[lo]))
    return out


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q`` percentile (0-100) of ``values``; NaN for no values."""
    return percentiles(values, [q])[0]


def timing_summary(xs: Sequence[float]) -> dict[str, Any]:
    """Median, p10, p90 and count of a timing loop's samples, their interquartile range and whether they were
    noisy (IQR over :data:`NOISY_IQR_RATIO` of the median); None and 0 for no samples."""
    if not xs:
        return {"median": None, "p10": None, "p90": None, "n": 0, "iqr": None, "noisy": None}
    p10, p25, med, p75, p90 = percentiles(xs, [10, 25, 50, 75, 90])
    iqr = p75 - p25
    return {"median": med, "p10": p10, "p90": p90, "n": len(xs), "iqr": iqr,
            "noisy": bool(med > 0 and iqr > NOISY_IQR_RATIO * med)}


def noise_note(summary: dict[str, Any]) -> str:
    """``"; noisy: IQR 12% of the median"`` for a noisy timing summary, ``""`` otherwise (and for old ones)."""
    if not summary.get("noisy"):
        return ""
    return f"; noisy: IQR {summary['iqr'] / summary['median'] * 100:.0f}% of the median"

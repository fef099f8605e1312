"""Active learning over a measurement space: which configurations to measure next.

The model is a Gaussian process on the logarithm of the target over the space's axes (each axis on a log
scale, mapped to [0, 1]), with a Matern kernel and a white-noise term fitted by maximum likelihood
(scikit-learn). Its predictive standard deviation gives the 90% interval of every configuration not yet
measured. Where it matters:

- ``uncertainty`` (no SLO, no goal): the widest interval anywhere;
- ``frontier`` (an SLO limit L on the target): the "straddle" score ``1.645 sigma - |mu - log L|`` (Bryan et
  al., NeurIPS 2005): wide intervals that still straddle the limit, where the answer to "does this
  configuration meet the SLO?" is least sure;
- ``optimum`` (goal max or min): the same straddle around the best predicted value, so runs go where a
  configuration could still beat the current best.

A batch of K is chosen greedily: after each pick the model is told its predicted value (the "kriging
believer"), so that the next pick goes elsewhere. With fewer than three measured runs there is no model
yet: the picks spread over the space (farthest point first, from its centre).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Z90 = 1.6448536269514722  # the 90% two-sided normal quantile
MIN_FIT = 3  # measured runs before the model is trusted to choose
LEVEL = 0.90
# leave-one-out residuals needed for a finite split-conformal 90% quantile of |z|: ceil(0.9 (n + 1)) <= n
MIN_CALIBRATION = 9


def encode(points: list[dict[str, float]], axes: dict[str, list[float]]) -> np.ndarray:
    """Points -> an array in [0, 1]^d: each axis on a log scale between its smallest and largest value."""
    cols = []
    for a, values in axes.items():
        lo, hi = math.log(min(values)), math.log(max(values))
        span = hi - lo or 1.0
        cols.append([(math.log(p[a]) - lo) / span for p in points])
    return np.asarray(cols, dtype=float).T.reshape(len(points), len(axes))


def _lbfgs(obj_func: Any, initial_theta: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, float]:
    """The kernel's hyperparameters by L-BFGS-B, with a bounded number of iterations (a few tens of points
    need no more; unbounded, the search dominates the time of a choice)."""
    from scipy.optimize import minimize

    res = minimize(obj_func, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds, options={"maxiter": 50})
    return res.x, float(res.fun)


class SpaceModel:
    """A GP on log(target). ``predict`` gives the median prediction and the 90% interval in target units."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.gp: Any = None
        self.mean_log = 0.0
        self.spread_log = 1.0
        # the calibrated multiple of the GP's standard deviation that gives the 90% interval (``calibrate``); None:
        # not calibrated (too few runs), so no interval is claimed
        self.q90: float | None = None
        self.n_calibration = 0

    def fit(self, X: np.ndarray, y: np.ndarray, kernel: Any = None) -> SpaceModel:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        logy = np.log(np.asarray(y, dtype=float))
        self.mean_log = float(logy.mean())
        self.spread_log = float(max(logy.std(), 0.1))
        if len(logy) < MIN_FIT:
            self.gp = None
            return self
        if kernel is None:
            d = X.shape[1]
            kernel = (ConstantKernel(1.0, (1e-2, 1e2)) * Matern(np.full(d, 0.5), (0.05, 20.0), nu=2.5)
                      + WhiteKernel(1e-3, (1e-5, 1e-1)))
            gp = GaussianProcessRegressor(kernel, normalize_y=True, optimizer=_lbfgs, random_state=self.seed)
        else:  # a fitted kernel, kept as it is (the batch's "believer" refits)
            gp = GaussianProcessRegressor(kernel, normalize_y=True, optimizer=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter of the kernel's bounds
            gp.fit(X, logy)
        self.gp = gp
        return self

    def predict_log(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of log(target) (no model yet: the measured mean, a wide spread)."""
        if self.gp is None:
            return np.full(len(X), self.mean_log), np.full(len(X), max(self.spread_log, 0.5))
        mu, sd = self.gp.predict(X, return_std=True)
        return mu, np.maximum(sd, 1e-9)

    def calibrate(self, X: np.ndarray, y: np.ndarray) -> SpaceModel:
        """Calibrate the 90% interval on the measured runs: each run is predicted by a model fit (kernel included)
        without it, and its error is taken in units of that model's standard deviation; the interval is
        ``mu +- q sd`` with ``q`` the split-conformal 90% quantile of those |z| (finite-sample corrected). A GP fit
        by maximum likelihood on a handful of runs is routinely sure of itself (a long length scale, almost no
        noise: intervals of a few percent around predictions off by tens of percent), so its own ``1.645 sd`` is
        not a 90% interval. With fewer than ``MIN_CALIBRATION`` runs no conformal quantile is finite: ``q90``
        stays None and no interval is given."""
        y = np.asarray(y, dtype=float)
        n = len(y)
        self.n_calibration = n
        self.q90 = None
        if self.gp is None or n < MIN_CALIBRATION:
            return self
        logy = np.log(y)
        z = np.empty(n)
        for i in range(n):
            keep = np.arange(n) != i
            mu, sd = SpaceModel(self.seed).fit(X[keep], y[keep]).predict_log(X[[i]])
            z[i] = abs(logy[i] - mu[0]) / sd[0]
        k = math.ceil(LEVEL * (n + 1) - 1e-9) - 1
        self.q90 = float(np.sort(z)[k])
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Median prediction and the 90% interval: calibrated (``calibrate``) where it could be, else NaN bounds
        (a GP's own band on few runs is not a 90% interval). An uncalibrated model (``calibrate`` never called)
        gives the GP's own ``1.645 sd`` band: for choosing, not for reporting."""
        mu, sd = self.predict_log(X)
        q = self.q90 if self.q90 is not None else (None if self.n_calibration else Z90)
        if q is None:
            nan = np.full(len(mu), np.nan)
            return np.exp(mu), nan, nan
        return np.exp(mu), np.exp(mu - q * sd), np.exp(mu + q * sd)

    def uncalibrated_why(self) -> str:
        return (f"not enough runs to calibrate a 90% interval ({self.n_calibration} measured, "
                f"{MIN_CALIBRATION} needed)")


@dataclass
class Choice:
    index: int  # into the grid
    point: dict[str, float]
    prediction: float | None
    lower: float | None
    upper: float | None
    score: float
    why: str
    facts: dict[str, Any] = field(default_factory=dict)


def _farthest(X: np.ndarray, taken: list[int]) -> int:
    """The grid point farthest from every taken one (the one nearest the centre when none is taken)."""
    if not taken:
        return int(np.argmin(np.linalg.norm(X - 0.5, axis=1)))
    d = np.min(np.linalg.norm(X[:, None, :] - X[taken][None, :, :], axis=2), axis=1)
    d[taken] = -1
    return int(np.argmax(d))


def _score(mode: str, mu: np.ndarray, sd: np.ndarray, limit_log: float | None) -> np.ndarray:
    if mode == "uncertainty" or limit_log is None:
        return sd
    return Z90 * sd - np.abs(mu - limit_log)


def _limit_log(mode: str, mu: np.ndarray, slo: float | None, goal: str | None) -> float | None:
    if mode == "frontier" and slo:
        return math.log(slo)
    if mode == "optimum":
        return float(mu.max() if goal == "max" else mu.min())
    return None


def choose(
    grid: list[dict[str, float]],
    axes: dict[str, list[float]],
    measured: dict[int, float],
    k: int,
    *,
    mode: str = "uncertainty",
    slo: float | None = None,
    goal: str | None = None,
    seed: int = 0,
    calibrate: bool = True,
) -> list[Choice]:
    """The ``k`` grid points not in ``measured`` (index -> value) whose measurement helps most, best first.
    Each has its 90% interval where the measured runs suffice to calibrate one (``SpaceModel.calibrate``; off
    with ``calibrate=False``, for simulations that only need the order), else none and a note saying so; the
    choice itself uses the model's spread either way."""
    X = encode(grid, axes)
    idx = list(measured)
    y = np.array([measured[i] for i in idx], dtype=float)
    model = SpaceModel(seed).fit(X[idx], y) if idx else SpaceModel(seed)
    if calibrate and model.gp is not None:
        model.calibrate(X[idx], y)
    q = model.q90
    mu0, sd0 = model.predict_log(X)
    limit_log = _limit_log(mode, mu0, slo, goal)
    free = [i for i in range(len(grid)) if i not in measured]
    picks: list[Choice] = []
    taken = list(idx)
    believed_X, believed_y = list(X[idx]), list(np.log(y)) if len(y) else []
    kernel = model.gp.kernel_ if model.gp is not None else None
    cur = model
    for _ in range(min(k, len(free))):
        if cur.gp is None:  # no model yet: spread the first runs over the space
            i = _farthest(X, taken)
            mu, sd = cur.predict_log(X[[i]])
            pick = Choice(i, grid[i], None, None, None, 0.0,
                          "spreads the first runs over the space (no model before "
                          f"{MIN_FIT} measured runs)")
            pred_log = float(mu[0])
        else:
            mu, sd = cur.predict_log(X)
            sc = _score(mode, mu, sd, limit_log)
            sc[taken] = -np.inf
            i = int(np.argmax(sc))
            # the pick's figures from the model of the measured runs, the one calibrated: the believer refit that
            # chose picks 2..k is surer near its made-up points, which is no measurement
            mu, sd = mu0, sd0
            pred = float(np.exp(mu[i]))
            facts: dict[str, Any] = {"interval": "none" if q is None else "conformal"}
            if q is not None or not calibrate:
                qq = Z90 if q is None else q
                lo, hi = float(np.exp(mu[i] - qq * sd[i])), float(np.exp(mu[i] + qq * sd[i]))
                width = (hi - lo) / pred
                facts["interval_width_rel"] = width
                why = f"90% interval {lo:.4g}..{hi:.4g} ({width:.0%} of the prediction)"
            else:
                lo = hi = None
                spread = float(np.exp(Z90 * sd[i]) - np.exp(-Z90 * sd[i]))
                facts["model_spread_rel"] = spread
                why = f"the model's spread {spread:.0%} of the prediction; no 90% interval: {model.uncalibrated_why()}"
            if limit_log is not None:
                lim = math.exp(limit_log)
                dist = (pred - lim) / lim
                facts["distance_rel"] = dist
                what = "the SLO limit" if mode == "frontier" else "the best predicted value"
                why += f"; {abs(dist):.0%} {'above' if dist > 0 else 'below'} {what} {lim:.4g}"
                if mode == "frontier":
                    # the GP's sd rescaled by the calibration (as the interval is)
                    s_i = sd[i] * (q / Z90 if q is not None else 1.0)
                    p_over = 0.5 * math.erfc((limit_log - mu[i]) / (s_i * math.sqrt(2)))
                    facts["p_above_limit"] = p_over
                    why += f", P(above) {p_over:.0%}" + ("" if q is not None else " (model's, uncalibrated)")
            pick = Choice(i, grid[i], pred, lo, hi, float(sc[i]), why, facts)
            pred_log = float(mu[i])  # (the believer refit takes the calibrated model's prediction as the value)
        picks.append(pick)
        taken.append(i)
        believed_X.append(X[i])
        believed_y.append(pred_log)
        if kernel is not None:  # no fitted kernel yet (a cold start): the whole batch spreads over the space
            cur = SpaceModel(seed).fit(np.asarray(believed_X), np.exp(np.asarray(believed_y)), kernel=kernel)
    return picks


def median_ape(model: SpaceModel, X: np.ndarray, y: np.ndarray) -> float:
    """Median absolute percentage error of the model's median predictions against ``y``."""
    pred = model.predict(X)[0]
    return float(np.median(np.abs(pred - y) / y))


def learning_curve(X: np.ndarray, y: np.ndarray, order: list[int], seed: int = 0, start: int = MIN_FIT
                   ) -> list[tuple[int, float]]:
    """(n, median APE on every configuration outside the first n of ``order``) for n = start..len(order)."""
    out = []
    for n in range(start, len(order) + 1):
        tr = order[:n]
        rest = np.setdiff1d(np.arange(len(y)), tr)
        if not len(rest):
            break
        m = SpaceModel(seed).fit(X[tr], y[tr])
        out.append((n, median_ape(m, X[rest], y[rest])))
    return out


def active_order(grid: list[dict[str, float]], axes: dict[str, list[float]], y: np.ndarray, n: int,
                 seed: int = 0, mode: str = "uncertainty", slo: float | None = None, goal: str | None = None
                 ) -> list[int]:
    """The order in which ``next --run --budget 1`` would measure the grid, one run at a time, given the true
    values ``y`` (a simulation over a grid measured in advance)."""
    measured: dict[int, float] = {}
    order: list[int] = []
    for _ in range(min(n, len(grid))):
        c = choose(grid, axes, measured, 1, mode=mode, slo=slo, goal=goal, seed=seed, calibrate=False)[0]
        measured[c.index] = float(y[c.index])
        order.append(c.index)
    return order

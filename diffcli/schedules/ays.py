"""Align Your Steps (Sabour, Fidler & Kreis, ICML 2024): coordinate search on a KL upper bound (KLUB).

KLUB(schedule) = sum_k int_{sigma_{k+1}}^{sigma_k} sigma^-3 E||D(x_sigma, sigma) - D(x_{sigma_k}, sigma_k)||^2 dsigma
               = 1/2 sum_k int_{gamma_k}^{gamma_{k+1}} Delta(gamma, gamma_k) dgamma,
with (x_sigma, x_{sigma_k}) on one forward chain. Delta is estimated by Monte Carlo from the denoiser (the `pairs`
matrix of diffcli.schedules.loss.measure_curves). For the exact denoiser Delta(gamma, gamma_k) = mmse(gamma_k) -
mmse(gamma), so the KLUB equals the LAS objective J; AYS differs in estimating it from denoiser pairs and in its
local search. Search: each interior point tries 11 candidates evenly spaced in log sigma strictly between its
neighbours plus its current value, sweeping until nothing moves (then, beyond AYS, the span is halved to refine);
10 steps first, then subdivision.

For isotropic Gaussian data with standard deviation c, the DDIM/Euler output is the exact flow times
prod_k cos(theta_k - theta_{k+1}) with theta = arctan(sigma / c), so schedules with arctan(sigma_i / c) linear in i are
exactly optimal for Euler (get_sigmas_ays_gaussian); the search recovers them (tests/test_las.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from diffcli.noise import SIGMA_MAX, SIGMA_MIN
from diffcli.schedules.grid import append_zero, check_range, check_steps, pin_endpoints

CANDIDATES = 11
START_STEPS = 10


def get_sigmas_ays_gaussian(steps, *, c: float, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX) -> np.ndarray:
    """AYS closed form for isotropic Gaussian data of std c: arctan(sigma_i / c) linear in i, then 0."""
    n = check_steps(steps)
    lo, hi = check_range(sigma_min, sigma_max)
    if n == 1:
        return append_zero([hi])
    theta = np.linspace(np.arctan(hi / c), np.arctan(lo / c), n)
    return append_zero(pin_endpoints(c * np.tan(theta), hi, lo))


def coordinate_search(objective: Callable[[np.ndarray], float], sigmas, *, candidates: int = CANDIDATES,
                      max_sweeps: int = 500, min_span: float = 1e-4, rtol: float = 1e-13) -> tuple[np.ndarray, float]:
    """Minimise objective(positive descending sigmas) over the interior points, one coordinate at a time.

    Each point tries `candidates` values evenly spaced in log sigma across `span` of the gap to each neighbour
    (span 1: strictly between the neighbours, as in AYS) and keeps the best (the current value included). When a
    sweep moves nothing the span is halved, down to min_span, so the search ends at a local optimum, not a lattice.
    """
    s = np.array(sigmas, np.float64)
    best = float(objective(s))
    cost = getattr(objective, "interval_cost", None)  # per-interval costs (upper [n], lower [n]) -> [n], if additive
    span = 1.0
    for _ in range(max_sweeps):
        moved = False
        for i in range(1, len(s) - 1):
            ls, lo, hi = np.log(s[i]), np.log(s[i + 1]), np.log(s[i - 1])
            u = np.linspace(-1.0, 1.0, candidates + 2)[1:-1]
            trial = np.exp(np.where(u < 0, ls + span * u * (ls - lo), ls + span * u * (hi - ls)))
            if cost is not None:  # additive objective: only the two intervals touching point i change
                old = cost(s[i - 1: i], s[i: i + 1]) + cost(s[i: i + 1], s[i + 1: i + 2])
                values = (best - old + cost(np.full_like(trial, s[i - 1]), trial)
                          + cost(trial, np.full_like(trial, s[i + 1])))
            else:
                values = []
                for t in trial:
                    s2 = s.copy()
                    s2[i] = t
                    values.append(float(objective(s2)))
            j = int(np.argmin(values))
            if values[j] < best - rtol * abs(best):
                s[i], best, moved = trial[j], float(values[j]), True
        if not moved:
            if span <= min_span:
                break
            span *= 0.5
    return s, best


def subdivide(sigmas: np.ndarray) -> np.ndarray:
    """Insert the log-midpoint of every interval (AYS's refinement from n to 2n - 1 points)."""
    ls = np.log(sigmas)
    mid = 0.5 * (ls[:-1] + ls[1:])
    out = np.empty(2 * len(ls) - 1)
    out[0::2], out[1::2] = ls, mid
    return np.exp(out)


def loglinear_resize(sigmas: np.ndarray, n: int) -> np.ndarray:
    """Resample positive sigmas to n points, linear in log sigma against the normalised index (AYS's interpolation)."""
    x = np.linspace(0.0, 1.0, len(sigmas))
    return np.exp(np.interp(np.linspace(0.0, 1.0, n), x, np.log(sigmas)))


def fit_ays(objective: Callable[[np.ndarray], float], steps, *, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX,
            init: Callable[..., np.ndarray] | None = None, start_steps: int = START_STEPS) -> dict:
    """AYS: optimise at min(steps, 10) steps from the EDM grid, subdivide and re-optimise, then resize to `steps`."""
    n = check_steps(steps)
    lo, hi = check_range(sigma_min, sigma_max)
    if n <= 2:
        sig = np.array([hi, lo][:n])
        return {"sigmas": append_zero(sig), "objective": float(objective(sig)) if n == 2 else 0.0}
    if init is None:
        from diffcli.schedules.edm import get_sigmas_edm as init
    k = min(n, start_steps)
    s, best = coordinate_search(objective, init(k, sigma_min=lo, sigma_max=hi)[:-1])
    while 2 * len(s) - 1 <= n:
        s, best = coordinate_search(objective, subdivide(s))
    if len(s) != n:
        s, best = coordinate_search(objective, loglinear_resize(s, n))
    return {"sigmas": append_zero(pin_endpoints(s, hi, lo)), "objective": best}


def klub_from_pairs(grid_sigma, pairs, *, points: int = 65) -> Callable[[np.ndarray], float]:
    """The Monte Carlo KLUB as a function of a schedule, from pair discrepancies on a grid (bilinear in log sigma)."""
    gs = np.asarray(grid_sigma, np.float64)
    order = np.argsort(gs)
    lg = np.log(gs[order])
    delta = np.asarray(pairs, np.float64)[np.ix_(order, order)]
    u = np.linspace(0.0, 1.0, int(points))

    def locate(x):  # cell index and weight of log sigma values on the grid (clamped to its range)
        x = np.clip(x, lg[0], lg[-1])
        j = np.clip(np.searchsorted(lg, x) - 1, 0, len(lg) - 2)
        return j, (x - lg[j]) / (lg[j + 1] - lg[j])

    def interval_cost(upper, lower) -> np.ndarray:
        a, b = np.log(np.asarray(upper, np.float64))[:, None], np.log(np.asarray(lower, np.float64))[:, None]
        sub = a + u[None, :] * (b - a)  # [intervals, points], from sigma_k down to sigma_{k+1}
        i, wi = locate(sub)
        j, wj = locate(np.broadcast_to(a, sub.shape))
        dv = ((1 - wi) * (1 - wj) * delta[i, j] + wi * (1 - wj) * delta[i + 1, j]
              + (1 - wi) * wj * delta[i, j + 1] + wi * wj * delta[i + 1, j + 1])
        g = np.exp(-2.0 * sub)
        return 0.5 * np.sum(0.5 * (dv[:, 1:] + dv[:, :-1]) * np.diff(g, axis=1), axis=1)

    def klub(sigmas) -> float:
        s = np.asarray(sigmas, np.float64)
        s = s[s > 0]
        return float(np.sum(interval_cost(s[:-1], s[1:])))

    klub.interval_cost = interval_cost
    return klub

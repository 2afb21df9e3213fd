"""Fit or compute a schedule for `diffcli schedule-fit`: a loss curve in, a JSON-ready record out."""

from __future__ import annotations

import math

import numpy as np

from diffcli.errors import UsageError
from diffcli.noise import SIGMA_MAX, SIGMA_MIN
from diffcli.schedules import get_schedule
from diffcli.schedules.grid import MEMORY_LIMIT, gib
from diffcli.schedules.loss import LossCurve, smooth_in_gamma

METHODS = ("las", "ays", "edm", "log-snr", "vp-leading", "cosine")
OBJECTIVE = ("J = 1/2 sum_k int_{gamma_k}^{gamma_{k+1}} [l(gamma_k) - l(gamma)] dgamma, "
             "l per dimension (LAS, derived rule)")


# the G x G pair tables of a loss curve (AYS's KLUB), counted with their float64 copies
PAIR_BYTES_PER_CELL = 24


def max_curve_points(limit: int = MEMORY_LIMIT) -> int:
    """The most noise levels a loss curve may have for its pair tables to fit in `limit` bytes."""
    return math.isqrt(int(limit) // PAIR_BYTES_PER_CELL)


def curve_grid(sigma_min: float, sigma_max: float, points: int) -> np.ndarray:
    """Where to measure the loss: log-uniform over [sigma_min, sigma_max], descending."""
    if int(points) < 4:
        raise UsageError(f"--grid-points must be at least 4 (got {points}).")
    if int(points) > max_curve_points():
        need = PAIR_BYTES_PER_CELL * int(points) ** 2
        raise UsageError(f"--grid-points {points} would need about {gib(need)} for the loss curve's pair table, over "
                         f"the {gib(MEMORY_LIMIT)} limit; use at most {max_curve_points()}.")
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), int(points)))


def fit_schedule(curve: LossCurve | None, *, method: str, steps: int, sigma_min: float = SIGMA_MIN,
                 sigma_max: float = SIGMA_MAX, rho: float = 7.0, las_rule: str = "lambda") -> dict:
    """{"sigmas", "method", "objective", "objective_name", ...} for any method; LAS/AYS need a curve."""
    from diffcli.schedules import ays, las

    if method not in METHODS:
        raise UsageError(f"unknown method '{method}'; choose from: {', '.join(METHODS)}.")
    if method in ("las", "ays") and curve is None:
        raise UsageError(f"--method {method} needs a loss curve: give --dataset/--index or --loss-file.")
    smoothed = smooth_in_gamma(curve) if curve is not None else None
    out: dict = {"method": method}
    if method == "las":
        res = las.fit_las(curve, steps, sigma_min=sigma_min, sigma_max=sigma_max, rule=las_rule)
        out.update(sigmas=res["sigmas"], las_rule=las_rule)
    elif method == "ays":
        levels = len(curve.sigma)
        if levels > max_curve_points():
            raise UsageError(f"the loss curve has {levels} noise levels, so AYS's pair table would need about "
                             f"{gib(PAIR_BYTES_PER_CELL * levels**2)}, over the {gib(MEMORY_LIMIT)} limit; bin the "
                             f"log to at most {max_curve_points()} noise levels.")
        if curve.pairs is not None:
            klub = ays.klub_from_pairs(curve.sigma, curve.pairs)
            out["klub"] = "monte carlo pairs E||D(x_s) - D(x_k)||^2 on one forward chain"
        else:  # a training log has no pairs: use the exact-denoiser identity Delta = l(k) - l(s)
            klub = ays.klub_from_pairs(curve.sigma, np.abs(smoothed[:, None] - smoothed[None, :]))
            out["klub"] = "loss-curve differences (martingale identity; no denoiser pairs in a loss file)"
        res = ays.fit_ays(klub, steps, sigma_min=sigma_min, sigma_max=sigma_max)
        out.update(sigmas=res["sigmas"], klub_value=res["objective"])
    else:
        out["sigmas"] = get_schedule(method, steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    if curve is not None:
        out["objective"] = las.schedule_objective(out["sigmas"], curve.sigma, smoothed)
        out["objective_name"] = OBJECTIVE
        out["loss_curve"] = {"sigma": curve.sigma, "loss": curve.loss, "stderr": curve.stderr, "smoothed": smoothed}
    return out


def to_json_ready(record: dict) -> dict:
    """Arrays -> lists, NaN -> None (JSON has no NaN)."""

    def conv(v):
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, np.ndarray):
            return [conv(x) for x in v.tolist()]
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, (float, np.floating)):
            return None if not math.isfinite(float(v)) else float(v)
        if isinstance(v, np.integer):
            return int(v)
        return v

    return conv(record)

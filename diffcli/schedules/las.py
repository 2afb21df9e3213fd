"""Loss-adaptive schedules (LAS; Aghapour, Bayraktar & Zhang 2026), the rule derived in docs/las.md.

The K positive sigmas (sigma_max and sigma_min fixed) minimise a step-mismatch functional of the loss curve l, made
monotone first: exactly, by dynamic programming over a fine grid ("lambda": the mismatch per unit of log-SNR, the
default; "dp": J, the path-space KL in gamma = 1/sigma^2; "weighted": J discounted by the unresolved loss), or at the
quantiles of int sqrt|l'| dgamma ("quantile", J's continuum optimum).
"""

from __future__ import annotations

import math

import numpy as np

from diffcli.errors import DiffcliError, UsageError
from diffcli.noise import SIGMA_MAX, SIGMA_MIN
from diffcli.schedules.grid import MEMORY_LIMIT, append_zero, check_range, check_steps, gib
from diffcli.schedules.loss import LossCurve, smooth_in_gamma

LAS_RULES = ("lambda", "weighted", "dp", "quantile")
DP_RULES = ("lambda", "weighted", "dp")
FINE_GRID = 512
# peak memory of the dynamic programme on a G-point grid, measured: about four G x G float64 tables (the cost matrix
# and its temporaries, the running sums, the back-pointers); the quantile rule keeps about ten float64 vectors of G
DP_BYTES_PER_CELL = 32
VECTOR_BYTES_PER_POINT = 80


def fit_memory(grid_size: int, rule: str) -> int:
    """Bytes a LAS fit needs at its peak on a grid of `grid_size` candidate sigmas."""
    g = int(grid_size)
    return DP_BYTES_PER_CELL * g * g if rule in DP_RULES else VECTOR_BYTES_PER_POINT * g


def max_fit_steps(rule: str, limit: int = MEMORY_LIMIT) -> int:
    """The most steps a LAS fit with `rule` can place within `limit` bytes (its grid has at least `steps` points)."""
    if rule in DP_RULES:
        return math.isqrt(int(limit) // DP_BYTES_PER_CELL)
    return int(limit) // VECTOR_BYTES_PER_POINT


def check_fit_memory(steps: int, rule: str, grid_size: int = FINE_GRID, limit: int = MEMORY_LIMIT) -> None:
    """Refuse a LAS fit whose tables would not fit in `limit` bytes, saying how many steps would."""
    size = max(int(grid_size), int(steps))
    need = fit_memory(size, rule)
    if need <= limit:
        return
    what = f"--steps {steps}" if size == int(steps) else f"a grid of {size} candidate sigmas"
    how = "dynamic programme" if rule in DP_RULES else "quantile placement"
    other = ", or --las-rule quantile, which needs far less memory" if rule in DP_RULES else ""
    raise UsageError(f"{what} would need about {gib(need)} for the LAS {how} (--las-rule {rule}), over the "
                     f"{gib(limit)} limit; use at most {max_fit_steps(rule, limit)} steps{other}.")


def fine_grid(sigma_min: float, sigma_max: float, size: int = FINE_GRID) -> np.ndarray:
    """Candidate sigmas, uniform in log sigma, descending from sigma_max to sigma_min."""
    out = np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), int(size)))
    out[0], out[-1] = sigma_max, sigma_min  # exact endpoints (exp(log(x)) may differ in the last bit)
    return out


def loss_on(sigmas, curve_sigma, curve_loss) -> np.ndarray:
    """The loss interpolated linearly in log sigma (held constant beyond the measured range)."""
    ls = np.log(np.asarray(curve_sigma, np.float64))
    order = np.argsort(ls)
    return np.interp(np.log(np.asarray(sigmas, np.float64)), ls[order], np.asarray(curve_loss, np.float64)[order])


def cost_matrix(gamma: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """C[a, b] = 1/2 int_{gamma_a}^{gamma_b} [l(gamma_a) - l] dgamma for a < b (l piecewise linear in gamma),
    inf otherwise."""
    g = np.asarray(gamma, np.float64)
    lv = np.asarray(loss, np.float64)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (lv[1:] + lv[:-1]) * np.diff(g))])
    c = 0.5 * (lv[:, None] * (g[None, :] - g[:, None]) - (cum[None, :] - cum[:, None]))
    c = np.maximum(c, 0.0)  # rounding only; the exact value is >= 0 for a non-increasing l
    c[np.tril_indices(len(g))] = np.inf
    return c


def unresolved_share(loss: np.ndarray) -> np.ndarray:
    """l / l(gamma_0) at each grid point (the loss still left at that noise level), for rule "weighted"."""
    lv = np.asarray(loss, np.float64)
    if not lv[0] > 0:
        raise DiffcliError("the loss at sigma_max is not positive, so the weighted LAS rule cannot use it.")
    return lv / lv[0]


def dp_path(cost: np.ndarray, nodes: int) -> tuple[np.ndarray, float]:
    """Exact minimum-cost path 0 = i_0 < ... < i_{nodes-1} = G-1 through the cost matrix (dynamic programming)."""
    gsize = cost.shape[0]
    if not 2 <= nodes <= gsize:
        raise UsageError(f"need 2 <= nodes <= {gsize} for the dynamic programme (got {nodes}).")
    best = np.full(gsize, np.inf)
    best[0] = 0.0
    back = np.zeros((nodes, gsize), np.int64)
    for j in range(1, nodes):
        tot = best[:, None] + cost  # tot[a, b]: reach a in j-1 hops, then a -> b
        back[j] = np.argmin(tot, axis=0)
        best = tot[back[j], np.arange(gsize)]
    path = [gsize - 1]
    for j in range(nodes - 1, 0, -1):
        path.append(back[j][path[-1]])
    return np.array(path[::-1]), float(best[-1])


def quantile_sigmas(sigma: np.ndarray, loss: np.ndarray, nodes: int) -> np.ndarray:
    """Sigmas at the k/(nodes-1) quantiles of C(gamma) = int sqrt|l'(gamma)| dgamma on a descending fine grid."""
    g = 1.0 / np.square(sigma)
    seg = np.sqrt(np.abs(np.diff(loss)) * np.diff(g))  # int sqrt|l'| over a segment where l is linear in gamma
    total = float(seg.sum())
    if not total > 0:
        raise DiffcliError("the loss curve is flat over [sigma_min, sigma_max], so it cannot place the steps.")
    # a floor of 1e-9 of the total per segment keeps C strictly increasing (one-to-one quantile map)
    c = np.concatenate([[0.0], np.cumsum(seg + 1e-9 * total / len(seg))])
    q = np.linspace(0.0, c[-1], nodes)
    log_s = np.interp(q, c, np.log(sigma))
    out = np.exp(log_s)
    out[0], out[-1] = sigma[0], sigma[-1]
    return out


def schedule_objective(sigmas, curve_sigma, curve_loss) -> float:
    """J of any schedule's positive sigmas, with l interpolated from the curve,
    by fine trapezoid quadrature in gamma."""
    s = np.asarray(sigmas, np.float64)
    s = s[s > 0]
    total = 0.0
    for a, b in zip(s[:-1], s[1:], strict=False):
        sub = np.exp(np.linspace(np.log(a), np.log(b), 257))
        lv = loss_on(sub, curve_sigma, curve_loss)
        g = 1.0 / sub**2
        total += 0.5 * float(np.sum(0.5 * ((lv[0] - lv[1:]) + (lv[0] - lv[:-1])) * np.diff(g)))
    return total


def fit_las(curve: LossCurve, steps, *, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rule: str = "lambda",
            grid_size: int = FINE_GRID, smooth: bool = True) -> dict:
    """LAS schedule (derived rule, see module doc) from a loss curve: {"sigmas", "objective", "loss_smoothed"}."""
    n = check_steps(steps)
    lo, hi = check_range(sigma_min, sigma_max)
    if rule not in LAS_RULES:
        raise UsageError(f"unknown LAS rule '{rule}'; choose from: {', '.join(LAS_RULES)}.")
    check_fit_memory(n, rule, grid_size)
    smoothed = smooth_in_gamma(curve) if smooth else np.asarray(curve.loss, np.float64)
    if n == 1:
        return {"sigmas": append_zero([hi]), "objective": 0.0, "loss_smoothed": smoothed}
    grid = fine_grid(lo, hi, max(int(grid_size), n))
    lv = loss_on(grid, curve.sigma, smoothed)
    if rule in ("dp", "weighted", "lambda"):
        # "lambda": the same mismatch against d log(gamma) = dgamma / gamma (data units; see the module doc)
        cost = cost_matrix(np.log(1.0 / grid**2) if rule == "lambda" else 1.0 / grid**2, lv)
        if rule == "weighted":
            cost = cost * unresolved_share(lv)[:, None]
        path, _ = dp_path(cost, n)
        sig = grid[path]
    else:
        sig = quantile_sigmas(grid, lv, n)
    return {"sigmas": append_zero(sig), "objective": schedule_objective(sig, curve.sigma, smoothed),
            "loss_smoothed": smoothed}

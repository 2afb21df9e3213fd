"""Distances between sample sets of vectors: sliced Wasserstein-2, RBF-kernel MMD, GMM mode-weight error."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from diffcli.metrics.frechet import mmd2_unbiased, sq_dists


def quantile_w2_1d(a: np.ndarray, b: np.ndarray, *, grid: int | None = None) -> float:
    """W2^2 between two 1-D empirical laws: the integral over u of (F_a^-1(u) - F_b^-1(u))^2."""
    a, b = np.sort(a), np.sort(b)
    if len(a) == len(b):
        return float(np.mean((a - b) ** 2))
    n = grid or 4 * max(len(a), len(b))
    u = (np.arange(n) + 0.5) / n  # midpoint rule on the quantile functions
    qa = a[np.minimum((u * len(a)).astype(np.int64), len(a) - 1)]
    qb = b[np.minimum((u * len(b)).astype(np.int64), len(b) - 1)]
    return float(np.mean((qa - qb) ** 2))


def sliced_w2(x: np.ndarray, y: np.ndarray, *, projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-2 (Rabin et al. 2011): sqrt of the mean 1-D W2^2 over random unit directions."""
    x, y = np.asarray(x, np.float64).reshape(len(x), -1), np.asarray(y, np.float64).reshape(len(y), -1)
    dirs = np.random.default_rng(seed).standard_normal((projections, x.shape[1]))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    px, py = x @ dirs.T, y @ dirs.T
    return float(np.sqrt(np.mean([quantile_w2_1d(px[:, j], py[:, j]) for j in range(projections)])))


def median_bandwidth(x: np.ndarray, y: np.ndarray) -> float:
    """The median pairwise distance of the pooled sets (the usual RBF bandwidth heuristic)."""
    z = np.concatenate([x, y])
    d = np.sqrt(sq_dists(z, z))
    return float(np.median(d[np.triu_indices(len(z), 1)]))


def mmd_rbf(x: np.ndarray, y: np.ndarray, *, bandwidth: float | None = None) -> dict:
    """Unbiased MMD^2 with k(a, b) = exp(-||a - b||^2 / (2 h^2)) (Gretton et al. 2012)."""
    x, y = np.asarray(x, np.float64).reshape(len(x), -1), np.asarray(y, np.float64).reshape(len(y), -1)
    h = bandwidth or median_bandwidth(x, y)
    k = lambda a, b: np.exp(-sq_dists(a, b) / (2.0 * h * h))
    return {"mmd2": mmd2_unbiased(k(x, x), k(y, y), k(x, y)), "mmd_bandwidth": h}


def gmm_responsibility_labels(x: np.ndarray, means: np.ndarray, stds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Most probable component of each point under an isotropic Gaussian mixture."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    dim = x.shape[1]
    stds = np.asarray(stds, np.float64)
    logp = (np.log(weights)[None] - dim * np.log(stds)[None]
            - sq_dists(x, np.asarray(means, np.float64)) / (2.0 * stds[None] ** 2))
    return np.argmax(logp - logsumexp(logp, axis=1, keepdims=True), axis=1)


def mode_weight_error(x: np.ndarray, gmm: dict) -> dict:
    """Empirical weight of each mode (by responsibility) against the true weights: total variation and max error."""
    labels = gmm_responsibility_labels(x, gmm["means"], gmm["stds"], gmm["weights"])
    k = len(gmm["weights"])
    found = np.bincount(labels, minlength=k) / len(labels)
    true = np.asarray(gmm["weights"], np.float64) / np.sum(gmm["weights"])
    return {
        "mode_weight_tv": float(0.5 * np.abs(found - true).sum()),
        "mode_weight_max_error": float(np.abs(found - true).max()),
        "mode_weights": found,
    }

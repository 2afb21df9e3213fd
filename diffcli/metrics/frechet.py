"""Feature-space distances: Frechet distance, KID, and nearest-neighbour precision / recall / coverage.

Every result names its feature space, so no one mistakes it for Inception FID.
"""

from __future__ import annotations

import numpy as np

from diffcli.metrics.gaussian import fit_gaussian, w2_squared


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}) between Gaussians fitted to two feature sets
    (Heusel et al. 2017)."""
    m1, s1 = fit_gaussian(f1)
    m2, s2 = fit_gaussian(f2)
    return w2_squared(m1, s1, m2, s2)


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3, the KID kernel (Binkowski et al. 2018)."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Unbiased MMD^2 from kernel blocks: off-diagonal means within sets, full mean across."""
    m, n = len(kxx), len(kyy)
    if m < 2 or n < 2:
        raise ValueError("an unbiased MMD needs at least two points in each set")
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


def kid(f1: np.ndarray, f2: np.ndarray, *, subset_size: int = 1000, subsets: int = 10, seed: int = 0) -> dict:
    """Kernel Inception-style distance: unbiased polynomial-kernel MMD^2, averaged over random subsets."""
    a, b = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    na, nb = min(subset_size, len(a)), min(subset_size, len(b))
    if na == len(a) and nb == len(b):
        subsets = 1  # both sets fit whole: one exact estimate
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), na, replace=False)] if na < len(a) else a
        y = b[rng.choice(len(b), nb, replace=False)] if nb < len(b) else b
        values.append(mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)))
    return {"kid": float(np.mean(values)), "kid_std": float(np.std(values)), "kid_subset_size": int(min(na, nb))}


def sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances [len(a), len(b)], clipped at 0."""
    return np.clip(np.sum(a * a, 1)[:, None] - 2.0 * a @ b.T + np.sum(b * b, 1)[None], 0.0, None)


def _knn_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each row to its k-th nearest other row."""
    d = sq_dists(x, x)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def precision_recall_coverage(real: np.ndarray, fake: np.ndarray, *, k: int = 5) -> dict:
    """k-NN precision and recall (Kynkaanniemi et al. 2019) and coverage (Naeem et al. 2020)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    k = min(k, len(real) - 1, len(fake) - 1)
    if k < 1:
        raise ValueError("precision/recall needs at least two points in each set")
    r_real, r_fake = _knn_radius(real, k), _knn_radius(fake, k)
    d = sq_dists(fake, real)  # [fake, real]
    inside_real = d <= r_real[None]
    return {
        "precision": float(np.mean(inside_real.any(axis=1))),
        "recall": float(np.mean((d <= r_fake[:, None]).any(axis=0))),
        "coverage": float(np.mean(inside_real.any(axis=0))),
        "nn_k": int(k),
    }


def pca_whitened_features(x: np.ndarray, mean: np.ndarray, components: np.ndarray, variances: np.ndarray,
                          *, k: int = 64) -> np.ndarray:
    """Projection onto the index's top-k PCA directions, divided by their standard deviations."""
    k = min(k, len(variances), int(np.sum(variances > 1e-12)))
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    return (flat - mean) @ components[:k].T.astype(np.float64) / np.sqrt(variances[:k].astype(np.float64))


def feature_distances(samples_f: np.ndarray, reference_f: np.ndarray, *, name: str, seed: int = 0) -> dict:
    """Frechet distance, KID and precision/recall/coverage on one named feature space."""
    out = {"feature_space": name, "feature_dim": int(samples_f.shape[1]),
           "frechet": frechet_distance(samples_f, reference_f)}
    out.update(kid(samples_f, reference_f, seed=seed))
    # k-NN radii depend on set size: compare equal-sized sets, as Kynkaanniemi et al. and Naeem et al. do
    real = reference_f
    if len(real) > len(samples_f):
        real = real[np.sort(np.random.default_rng(seed).choice(len(real), len(samples_f), replace=False))]
    out.update(precision_recall_coverage(real, samples_f))
    return out

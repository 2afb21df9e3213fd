"""Mean and PCA factors of the training set, sized for the resolution (never a dense D x D above 4096 dims)."""

from __future__ import annotations

import numpy as np

DENSE_LIMIT = 4096  # up to this dimension the full covariance is eigendecomposed exactly
RANDOMIZED_RANK = 512


def pca_stats(data: np.ndarray, *, seed: int = 0) -> dict:
    """{'mean', 'components' [k, D], 'variances' [k], 'residual_variance'} of data [N, D] (float64 inside)."""
    n, dim = data.shape
    mean = data.mean(axis=0, dtype=np.float64)
    if dim <= DENSE_LIMIT:
        cov = np.zeros((dim, dim))
        for i in range(0, n, 4096):  # chunked so float64 copies stay small
            c = data[i:i + 4096].astype(np.float64) - mean
            cov += c.T @ c
        cov /= max(n - 1, 1)
        variances, vectors = np.linalg.eigh(cov)
        order = np.argsort(variances)[::-1]
        variances, components = np.clip(variances[order], 0, None), vectors[:, order].T
        residual = 0.0
    else:
        from sklearn.utils.extmath import randomized_svd

        centred = data.astype(np.float32) - mean.astype(np.float32)
        k = min(RANDOMIZED_RANK, n - 1, dim)
        _, s, vt = randomized_svd(centred, k, n_iter=4, random_state=seed)
        variances, components = s.astype(np.float64) ** 2 / max(n - 1, 1), vt
        total = float(np.einsum("ij,ij->", centred, centred, dtype=np.float64)) / max(n - 1, 1)
        residual = max(total - variances.sum(), 0.0) / max(dim - k, 1)
    return {
        "mean": mean.astype(np.float32),
        "components": np.ascontiguousarray(components, np.float32),
        "variances": variances.astype(np.float32),
        "residual_variance": float(residual),
    }

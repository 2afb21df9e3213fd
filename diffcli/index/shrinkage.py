"""Class covariance shrunk toward the global one: Sigma_c' = (1 - lam) Sigma_c + lam Sigma_global (docs/conditional.md).

Both covariances come as factors {components U [k, D] (orthonormal rows), variances [k], residual_variance r}, meaning
U^T diag(v) U + r (I - U^T U). The mix is eigendecomposed again, never a linear mix of eigenvectors: exactly as a
dense D x D matrix up to DENSE_LIMIT dimensions; above, in the span of both bases (orthonormalised through Gram
matrices), where the isotropic residuals are exact too, and the complement keeps the mixed residual
(1 - lam) r_c + lam r_g.
"""

from __future__ import annotations

import numpy as np

from diffcli.index.stats import DENSE_LIMIT


def dense_covariance(stats: dict, dim: int) -> np.ndarray:
    """The float64 D x D covariance that factors {components, variances, residual_variance} stand for."""
    u = np.asarray(stats["components"], np.float64)
    v = np.asarray(stats["variances"], np.float64)
    r = float(stats["residual_variance"]) if u.shape[0] < dim else 0.0
    return (u.T * v) @ u + r * (np.eye(dim) - u.T @ u)


def _factors(variances, vectors, residual: float) -> dict:
    """Eigenpairs (vectors as columns) -> factors sorted by decreasing variance, variances clipped at 0."""
    order = np.argsort(variances)[::-1]
    return {"components": np.ascontiguousarray(vectors[:, order].T, np.float32),
            "variances": np.clip(variances[order], 0.0, None).astype(np.float32),
            "residual_variance": float(max(residual, 0.0))}


def _residual(stats: dict, dim: int) -> float:
    return float(stats["residual_variance"]) if np.shape(stats["components"])[0] < dim else 0.0


def shrink_covariance(class_stats: dict, global_stats: dict, lam: float, dim: int, *,
                      dense_limit: int = DENSE_LIMIT) -> dict:
    """Factors of (1 - lam) Sigma_c + lam Sigma_global, re-eigendecomposed; the mean is the class's own."""
    lam = float(lam)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"shrinkage intensity {lam} is not in [0, 1]")
    if dim <= dense_limit:
        mixed = (1 - lam) * dense_covariance(class_stats, dim) + lam * dense_covariance(global_stats, dim)
        variances, vectors = np.linalg.eigh(0.5 * (mixed + mixed.T))
        out = _factors(variances, vectors, 0.0)
    else:
        out = _shrink_low_rank(class_stats, global_stats, lam, dim)
    return {"mean": np.asarray(class_stats["mean"], np.float32), **out}


def orthonormal_columns(b: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Orthonormal columns spanning b's [D, m] columns, from the m x m Gram matrix twice (CholQR2: matrix products
    only, no Householder QR of a tall D x m matrix); directions with singular value below `floor` are dropped as
    already spanned (b's columns have norm at most about 1, and float32-stored bases agree with themselves to about
    1e-7, so the floor sits above that rounding)."""
    for _ in range(2):
        lam, vec = np.linalg.eigh(b.T @ b)
        keep = lam > floor**2
        b = (b @ vec[:, keep]) / np.sqrt(lam[keep])
    return b


def span_basis(uc: np.ndarray, ug: np.ndarray) -> np.ndarray:
    """Q [D, q]: orthonormal columns spanning the rows of both bases (the class's first, then the global part that
    lies outside them, projected out twice)."""
    q1 = orthonormal_columns(uc.T)
    rest = ug.T - q1 @ (q1.T @ ug.T)
    rest -= q1 @ (q1.T @ rest)
    return np.concatenate([q1, orthonormal_columns(rest)], axis=1)


def _shrink_low_rank(class_stats: dict, global_stats: dict, lam: float, dim: int) -> dict:
    """The mix in Q = span(U_c, U_g): Q^T Sigma Q is small and exact; off the span both covariances are isotropic."""
    uc = np.asarray(class_stats["components"], np.float64)
    ug = np.asarray(global_stats["components"], np.float64)
    rc, rg = _residual(class_stats, dim), _residual(global_stats, dim)
    q = span_basis(uc, ug)  # [D, q]

    def inside(u, v, r):
        a = q.T @ u.T  # [q, k]: the basis in Q's coordinates (exact, since span(u) lies in span(Q))
        return (a * v) @ a.T + r * (np.eye(q.shape[1]) - a @ a.T)

    small = (1 - lam) * inside(uc, np.asarray(class_stats["variances"], np.float64), rc) \
        + lam * inside(ug, np.asarray(global_stats["variances"], np.float64), rg)
    variances, vectors = np.linalg.eigh(0.5 * (small + small.T))
    return _factors(variances, q @ vectors, (1 - lam) * rc + lam * rg)


def _apply(stats: dict, x: np.ndarray, dim: int) -> np.ndarray:
    """Sigma x for rows x [n, D] of the covariance given by factors (float64)."""
    u = np.asarray(stats["components"], np.float64)
    v = np.asarray(stats["variances"], np.float64)
    proj = x @ u.T
    return (proj * v) @ u + _residual(stats, dim) * (x - proj @ u)


def _frobenius_sq(stats: dict, dim: int) -> float:
    v = np.asarray(stats["variances"], np.float64)
    k = np.shape(stats["components"])[0]
    return float(np.sum(v * v) + _residual(stats, dim) ** 2 * max(dim - k, 0))


def ledoit_wolf_intensity(rows: np.ndarray, global_stats: dict) -> float:
    """Closed-form shrinkage intensity toward a fixed target (Ledoit-Wolf, Schafer-Strimmer form), in [0, 1].

    With centred rows x_k (k = 1..n), W = sum_k x_k x_k^T / n and the unbiased S = n W / (n - 1):
    lam = sum_ij Var(s_ij) / ||S - T||_F^2, Var summed as n / (n - 1)^3 (sum_k ||x_k||^4 - n ||W||_F^2).
    ||W||_F^2 comes from the smaller Gram matrix, <S, T> from T applied to the rows, so no D x D matrix is formed.
    """
    x = np.asarray(rows, np.float64)
    n, dim = x.shape
    if n < 2:
        return 1.0
    x = x - x.mean(axis=0)
    gram = x @ x.T if n <= dim else x.T @ x
    w_sq = float(np.sum(gram * gram)) / n**2
    norms = np.einsum("ij,ij->i", x, x)
    variance = n / (n - 1) ** 3 * max(float(np.sum(norms**2)) - n * w_sq, 0.0)
    s_sq = (n / (n - 1)) ** 2 * w_sq
    s_dot_t = float(np.einsum("ij,ij->", x, _apply(global_stats, x, dim))) / (n - 1)
    gap = s_sq - 2 * s_dot_t + _frobenius_sq(global_stats, dim)
    if gap <= 0:
        return 1.0
    return float(np.clip(variance / gap, 0.0, 1.0))


def class_intensity(rows: np.ndarray, global_stats: dict) -> float:
    """The default intensity of a class with data-space rows [N_c, D]: its Ledoit-Wolf intensity."""
    return ledoit_wolf_intensity(rows, global_stats)

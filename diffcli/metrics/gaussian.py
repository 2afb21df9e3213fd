"""Closed forms between Gaussians: KL divergence and Wasserstein-2 (the Frechet distance is W2 squared)."""

from __future__ import annotations

import numpy as np


def fit_gaussian(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean and unbiased covariance in float64."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    if len(x) < 2:
        raise ValueError("fitting a Gaussian needs at least two samples")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix by eigendecomposition (negative round-off eigenvalues set to 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr (S1 S2)^{1/2} = tr (S1^{1/2} S2 S1^{1/2})^{1/2}, the eigen form (no sqrtm of a non-symmetric matrix)."""
    r = psd_sqrt(s1)
    m = r @ s2 @ r
    return float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2.0), 0.0, None))))


def w2_squared(m1, s1, m2, s2) -> float:
    """||m1 - m2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}) (Dowson & Landau 1982), clipped at 0 against round-off."""
    m1, m2, s1, s2 = (np.asarray(a, np.float64) for a in (m1, m2, s1, s2))
    value = float(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    return max(value, 0.0)


def w2_gaussians(m1, s1, m2, s2) -> float:
    """Wasserstein-2 distance between N(m1, S1) and N(m2, S2)."""
    return float(np.sqrt(w2_squared(m1, s1, m2, s2)))


def kl_gaussians(m0, s0, m1, s1) -> float:
    """KL(N(m0, S0) || N(m1, S1)) = 1/2 [tr(S1^-1 S0) + (m1-m0)' S1^-1 (m1-m0) - d + ln det S1 - ln det S0]."""
    m0, m1, s0, s1 = (np.asarray(a, np.float64) for a in (m0, m1, s0, s1))
    c1 = np.linalg.cholesky(s1)
    solve = lambda b: np.linalg.solve(c1.T, np.linalg.solve(c1, b))
    diff = m1 - m0
    _, logdet0 = np.linalg.slogdet(s0)
    logdet1 = 2.0 * np.sum(np.log(np.diag(c1)))
    return float(0.5 * (np.trace(solve(s0)) + diff @ solve(diff) - len(m0) + logdet1 - logdet0))


def gaussian_target_metrics(samples: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> dict:
    """Exact KL(fitted sample Gaussian || target) and W2 between them."""
    m, s = fit_gaussian(samples)
    return {"gaussian_kl": kl_gaussians(m, s, mean, cov), "gaussian_w2": w2_gaussians(m, s, mean, cov)}

"""Wiener denoiser against the closed-form Gaussian posterior mean (float64 NumPy)."""

import jax.numpy as jnp
import numpy as np
import pytest

from diffcli.denoisers.wiener import build
from diffcli.index.store import Index


def gaussian_index(dim, k, residual, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    lam = np.sort(rng.uniform(0.05, 2.0, k))[::-1]
    mean = rng.standard_normal(dim).astype(np.float32)
    data = rng.standard_normal((4, dim)).astype(np.float32)
    idx = Index(kind="vector", shape=(dim,), images=data, heldout=data, proxy=data, mean=mean,
                pca_components=q[:, :k].T.astype(np.float32), pca_variances=lam.astype(np.float32),
                residual_variance=residual, attrs={"dataset": "gmm"})
    cov = q[:, :k] @ np.diag(lam) @ q[:, :k].T + residual * (np.eye(dim) - q[:, :k] @ q[:, :k].T)
    return idx, cov


def posterior_mean(x, mean, cov, sigma):
    """E[x0 | x] for x0 ~ N(mean, cov), x = x0 + sigma * eps."""
    a = cov @ np.linalg.inv(cov + sigma**2 * np.eye(len(cov)))
    return mean + (np.asarray(x, np.float64) - mean) @ a.T


@pytest.mark.parametrize("k,residual", [(12, 0.0), (5, 0.3)])
@pytest.mark.parametrize("sigma", [1e-3, 0.1, 1.0, 30.0])
def test_matches_gaussian_posterior(k, residual, sigma):
    idx, cov = gaussian_index(12, k, residual)
    x = np.random.default_rng(3).standard_normal((5, 12)).astype(np.float32) * (1 + sigma)
    got = np.asarray(build(idx)(jnp.asarray(x), sigma))
    np.testing.assert_allclose(got, posterior_mean(x, idx.mean.astype(np.float64), cov, sigma), atol=3e-5 * (1 + sigma))


def test_per_sample_sigma_and_limits():
    idx, cov = gaussian_index(8, 8, 0.0, seed=1)
    den = build(idx)
    x = np.random.default_rng(4).standard_normal((3, 8)).astype(np.float32)
    sig = np.array([0.01, 1.0, 10.0], np.float32)
    got = np.asarray(den(jnp.asarray(x), jnp.asarray(sig)))
    for i in range(3):
        np.testing.assert_allclose(got[i], posterior_mean(x[i:i + 1], idx.mean, cov, float(sig[i]))[0], atol=2e-5)
    np.testing.assert_allclose(np.asarray(den(jnp.asarray(x), 1e-5)), x, atol=1e-4)  # sigma -> 0: identity
    np.testing.assert_allclose(np.asarray(den(jnp.asarray(x), 1e5)), np.broadcast_to(idx.mean, x.shape), atol=1e-5)

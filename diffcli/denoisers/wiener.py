"""Wiener (Gaussian) denoiser: the exact posterior mean when the data are Gaussian with the index's mean and PCA."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffcli.denoisers.base import AbstractDenoiser, batch_sigma, exact_matmuls, flatten


def wiener_gains(variances, residual_variance, sigma):
    """Per-direction gains lam / (lam + sigma^2) [B, k] and the residual gain r / (r + sigma^2) [B]."""
    s2 = jnp.square(sigma)[:, None]
    g = variances[None, :] / (variances[None, :] + s2)
    r = residual_variance / (residual_variance + s2[:, 0])
    return g, r


class WienerDenoiser(AbstractDenoiser):
    """D(x, sigma) = mu + U diag(lam / (lam + sigma^2)) U^T (x - mu), plus r / (r + sigma^2) off the span of U."""

    mean: jax.Array  # [D]
    components: jax.Array  # [k, D] orthonormal rows
    variances: jax.Array  # [k]
    residual_variance: jax.Array  # scalar: variance per direction outside the k components

    @exact_matmuls
    def __call__(self, x, sigma, *, key=None):
        c = flatten(x).astype(jnp.float32) - self.mean
        g, r = wiener_gains(self.variances, self.residual_variance, batch_sigma(sigma, c.shape[0]))
        proj = c @ self.components.T
        inside = proj @ self.components
        out = self.mean + (proj * g) @ self.components + r[:, None] * (c - inside)
        return out.reshape(x.shape)


def build(index, opts=None) -> WienerDenoiser:
    comps = np.asarray(index.pca_components, np.float32)
    # when the components span the space the residual term is identically zero; keep it exactly so
    resid = 0.0 if comps.shape[0] >= index.dim else float(index.residual_variance)
    return WienerDenoiser(jnp.asarray(index.mean, jnp.float32), jnp.asarray(comps),
                          jnp.asarray(index.pca_variances, jnp.float32), jnp.asarray(resid, jnp.float32))

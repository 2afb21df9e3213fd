"""The exact denoiser of an isotropic Gaussian mixture: the closed-form posterior mean E[x0 | x0 + sigma z = x].

For p = sum_k w_k N(m_k, s_k^2 I), the noisy law is sum_k w_k N(m_k, v_k I) with v_k = s_k^2 + sigma^2, and
E[x0 | x] = sum_k r_k(x) (m_k + (s_k^2 / v_k)(x - m_k)) with responsibilities r_k from the noisy law.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffcli.denoisers import softmax
from diffcli.denoisers.base import AbstractDenoiser, exact_matmuls, flatten
from diffcli.errors import DiffcliError, UsageError


def responsibilities(x, sigma, means, stds, log_weights):
    """Posterior component probabilities r [B, K] of x [B, D] under the noisy mixture at sigma [B]."""
    dim = x.shape[1]
    var = stds[None, :] ** 2 + sigma[:, None] ** 2  # [B, K]
    # ||x - m||^2 by expansion: one matmul; the ||x||^2 term is identical for components of equal variance
    sq = (jnp.sum(x * x, axis=1)[:, None] - 2.0 * x @ means.T + jnp.sum(means * means, axis=1)[None, :])
    logits = log_weights[None, :] - 0.5 * dim * jnp.log(var) - 0.5 * jnp.maximum(sq, 0.0) / var
    return softmax.weights(logits, axis=1), var


class GMMDenoiser(AbstractDenoiser):
    """Closed-form posterior mean of an isotropic Gaussian mixture (Tweedie / Miyasawa, exact)."""

    means: jax.Array  # [K, D]
    stds: jax.Array  # [K]
    log_weights: jax.Array  # [K], normalised

    @classmethod
    def from_arrays(cls, means, stds, weights, *, dtype=np.float32) -> GMMDenoiser:
        """A denoiser from mixture parameters; a one-sentence error when they do not fit together."""
        means = np.asarray(means, np.float64)
        stds = np.asarray(stds, np.float64).reshape(-1)
        weights = np.asarray(weights, np.float64).reshape(-1)
        if means.ndim != 2 or stds.shape[0] != means.shape[0] or weights.shape[0] != means.shape[0]:
            raise UsageError("a gmm needs means [K, D], stds [K] and weights [K] with the same K.")
        if np.any(stds < 0) or np.any(weights < 0) or weights.sum() <= 0 or not np.all(np.isfinite(means)):
            raise UsageError("gmm stds and weights must be non-negative, the weights not all zero, means finite.")
        with np.errstate(divide="ignore"):
            log_w = np.log(weights / weights.sum())
        return cls(jnp.asarray(means.astype(dtype)), jnp.asarray(stds.astype(dtype)), jnp.asarray(log_w.astype(dtype)))

    @exact_matmuls
    def __call__(self, x, sigma, *, key=None):
        flat = flatten(x)
        dt = flat.dtype
        sig = jnp.broadcast_to(jnp.asarray(sigma, dt), (flat.shape[0],))
        means, stds = self.means.astype(dt), self.stds.astype(dt)
        r, var = responsibilities(flat, sig, means, stds, self.log_weights.astype(dt))
        shrink = stds[None, :] ** 2 / var  # [B, K], s_k^2 / v_k
        out = flat * jnp.sum(r * shrink, axis=1, keepdims=True) + (r * (1.0 - shrink)) @ means
        return out.reshape(x.shape)


def build(index, opts) -> GMMDenoiser:
    """The exact denoiser of the mixture the index was drawn from (gmm datasets only)."""
    if index.gmm is None:
        raise DiffcliError("the gmm denoiser needs an index of the gmm dataset (it stores the mixture parameters).")
    means = np.asarray(index.gmm["means"])
    if means.ndim != 2 or means.shape[1] != index.dim:
        raise DiffcliError("the index's gmm means do not match its data dimension; rebuild the index.")
    return GMMDenoiser.from_arrays(means, index.gmm["stds"], index.gmm["weights"])

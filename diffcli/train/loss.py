"""The EDM training loss (Karras et al. 2022, eq. 2 and Table 1) and the x0-prediction MSE curve."""

from __future__ import annotations

import jax
import jax.numpy as jnp

P_MEAN, P_STD = -1.2, 1.2  # ln(sigma) ~ N(P_mean, P_std^2)


def edm_loss(model, x0, key):
    """E[lambda(sigma) ||D(x0 + sigma n, sigma) - x0||^2] per dimension, lambda = (sigma^2 + sd^2) / (sigma sd)^2."""
    k_sigma, k_noise = jax.random.split(key)
    b = x0.shape[0]
    sigma = jnp.exp(P_MEAN + P_STD * jax.random.normal(k_sigma, (b,)))
    noise = jax.random.normal(k_noise, x0.shape) * sigma.reshape((-1,) + (1,) * (x0.ndim - 1))
    sd = model.sigma_data
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    err = jnp.mean((model(x0 + noise, sigma) - x0) ** 2, axis=tuple(range(1, x0.ndim)))
    return jnp.mean(weight * err)


def x0_mse(model, x0, sigma, key):
    """Per-dimension E||D(x0 + sigma eps, sigma) - x0||^2 / D at one sigma, averaged over the batch."""
    noise = jax.random.normal(key, x0.shape)
    s = jnp.full((x0.shape[0],), sigma, x0.dtype)
    return jnp.mean((model(x0 + sigma * noise, s) - x0) ** 2)

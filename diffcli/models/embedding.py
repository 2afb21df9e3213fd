"""Noise-level embedding: sinusoidal features of c_noise followed by a two-layer MLP (DDPM / EDM style)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp


def sinusoidal(c_noise, dim: int, max_period: float = 10000.0):
    """[cos(c f_k), sin(c f_k)] with geometric frequencies f_k (Vaswani et al. 2017; EDM's PositionalEmbedding)."""
    half = dim // 2
    freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angle = c_noise * 1000.0 * freqs  # c_noise = ln(sigma)/4 is O(1): scale it like a timestep index
    return jnp.concatenate([jnp.cos(angle), jnp.sin(angle)])


class NoiseEmbedding(eqx.Module):
    """c_noise (a scalar) -> an embedding vector shared by every block."""

    fourier_dim: int = eqx.field(static=True)
    lin1: eqx.nn.Linear
    lin2: eqx.nn.Linear

    def __init__(self, fourier_dim: int, dim: int, *, key):
        k1, k2 = jax.random.split(key)
        self.fourier_dim = fourier_dim
        self.lin1 = eqx.nn.Linear(fourier_dim, dim, key=k1)
        self.lin2 = eqx.nn.Linear(dim, dim, key=k2)

    def __call__(self, c_noise):
        return self.lin2(jax.nn.silu(self.lin1(sinusoidal(c_noise, self.fourier_dim))))

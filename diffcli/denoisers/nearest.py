"""Nearest training point (the memorisation baseline): D(x, sigma) = argmin_i ||x - x_i||, whatever sigma."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffcli.denoisers.base import AbstractDenoiser, exact_matmuls, flatten
from diffcli.denoisers.empirical import EmpiricalDenoiser, chunk_logits
from diffcli.denoisers.rows import to_float


class NearestDenoiser(AbstractDenoiser):
    """The sigma -> 0 limit of the empirical denoiser, streamed over the same chunks."""

    chunks: jax.Array  # [K, C, D] in stored form (uint8 images)
    half_sqn: jax.Array  # [K, C], +inf on padding rows

    @exact_matmuls
    def __call__(self, x, sigma=None, *, key=None):
        flat = flatten(x).astype(jnp.float32)
        b = flat.shape[0]

        def body(carry, c):
            best, row = carry
            xs, hs = c
            xs = to_float(xs)
            score = chunk_logits(flat, xs, hs, jnp.ones((b,)))  # <x, x_i> - ||x_i||^2 / 2: argmax = nearest
            i = jnp.argmax(score, axis=1)
            s = jnp.take_along_axis(score, i[:, None], axis=1)[:, 0]
            better = s > best
            return (jnp.where(better, s, best), jnp.where(better[:, None], xs[i], row)), None

        init = (jnp.full((b,), -jnp.inf), jnp.zeros_like(flat))
        (_, row), _ = jax.lax.scan(body, init, (self.chunks, self.half_sqn))
        return row.reshape(x.shape)


def build(index, opts) -> NearestDenoiser:
    e = EmpiricalDenoiser.from_data(index.stored_rows(), chunk=opts.chunk_size)
    return NearestDenoiser(e.chunks, e.half_sqn)

"""The exact empirical ("optimal") denoiser: D(x, sigma) = sum_i softmax_i(-||x - x_i||^2 / 2 sigma^2) x_i.

Streamed over fixed-size chunks of the index with the online softmax of softmax.py, so memory is bounded by one
chunk, the result is exact at both ends (sigma -> 0: the nearest point; sigma -> inf: the mean) and always a convex
combination of rows, however far x lies from the data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffcli.denoisers import softmax
from diffcli.denoisers.base import AbstractDenoiser, batch_sigma, exact_matmuls, flatten
from diffcli.denoisers.rows import chunk_rows, device_rows, half_sq_norms, stored_form, to_float


def chunk_logits(x, xs, half_sqn, inv_var):
    """Softmax logits of queries x [B, D] against rows xs [C, D]: (<x, x_i> - ||x_i||^2 / 2) / sigma^2.

    ||x||^2 is the same for every i, so it is dropped: the softmax is unchanged and no large term cancels.
    """
    return (x @ xs.T - half_sqn[None, :]) * inv_var[:, None]


def stream_partials(x, chunks, half_sqn, inv_var) -> softmax.Partials:
    """Partials of queries x [B, D] over chunks [K, C, D] in stored form (padded rows carry half_sqn = +inf)."""

    def body(p, c):
        xs, hs = c
        xs = to_float(xs)  # one chunk in float32 at a time
        return softmax.fold(p, chunk_logits(x, xs, hs, inv_var), xs), None

    p, _ = jax.lax.scan(body, softmax.empty((x.shape[0],), (x.shape[1],)), (chunks, half_sqn))
    return p


def pad_chunks(data: np.ndarray, chunk: int):
    """Rows [N, D] -> (chunks [K, C, D] in stored form, half squared norms [K, C]); padding rows get +inf so their
    weight is 0."""
    chunks, ok = chunk_rows(data, chunk)
    return chunks, half_sq_norms(chunks, ok)


class EmpiricalDenoiser(AbstractDenoiser):
    """Exact posterior mean of the empirical distribution of the index (the "optimal" denoiser)."""

    chunks: jax.Array  # [K, C, D]: uint8 for images (stored form), float32 for vectors
    half_sqn: jax.Array  # [K, C]

    @classmethod
    def from_data(cls, data, *, chunk: int = 2048) -> EmpiricalDenoiser:
        """Rows [N, ...]: stored uint8 images (kept as they are) or float rows in data space."""
        chunks, half = pad_chunks(stored_form(data), chunk)
        return cls(device_rows(chunks), jnp.asarray(half))

    @exact_matmuls
    def __call__(self, x, sigma, *, key=None):
        flat = flatten(x).astype(jnp.float32)
        inv_var = 1.0 / jnp.square(batch_sigma(sigma, flat.shape[0]))
        return softmax.finish(stream_partials(flat, self.chunks, self.half_sqn, inv_var)).reshape(x.shape)


def build(index, opts) -> EmpiricalDenoiser:
    return EmpiricalDenoiser.from_data(index.stored_rows(), chunk=opts.chunk_size)

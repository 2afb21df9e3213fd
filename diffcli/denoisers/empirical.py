"""The exact empirical ("optimal") denoiser: D(x, sigma) = sum_i softmax_i(-||x - x_i||^2 / 2 sigma^2) x_i.

Streamed over fixed-size chunks of the index with an online, max-rescaled log-sum-exp, so memory is bounded by one
chunk and the result is exact at both ends (sigma -> 0: the nearest point; sigma -> inf: the mean).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffcli.denoisers.base import AbstractDenoiser, batch_sigma, exact_matmuls, flatten


class Partials(eqx.Module):
    """Running (max logit, sum of exp, exp-weighted sum of rows) of a streamed softmax; merged exactly."""

    m: jax.Array  # [B]
    s: jax.Array  # [B]
    acc: jax.Array  # [B, D]


def chunk_logits(x, xs, half_sqn, inv_var):
    """Softmax logits of queries x [B, D] against rows xs [C, D]: (<x, x_i> - ||x_i||^2 / 2) / sigma^2.

    ||x||^2 is the same for every i, so it is dropped: the softmax is unchanged and no large term cancels.
    """
    return (x @ xs.T - half_sqn[None, :]) * inv_var[:, None]


def accumulate(p: Partials, logits, xs) -> Partials:
    """Fold one chunk's logits [B, C] and rows [C, D] into the running partials."""
    m_new = jnp.maximum(p.m, logits.max(axis=1))
    scale = jnp.exp(p.m - m_new)
    w = jnp.exp(logits - m_new[:, None])
    return Partials(m_new, p.s * scale + w.sum(axis=1), p.acc * scale[:, None] + w @ xs)


def merge(a: Partials, b: Partials) -> Partials:
    """Combine partials of two disjoint parts of the index (exact; used by the sharded search)."""
    m = jnp.maximum(a.m, b.m)
    sa, sb = jnp.exp(a.m - m), jnp.exp(b.m - m)
    return Partials(m, a.s * sa + b.s * sb, a.acc * sa[:, None] + b.acc * sb[:, None])


def empty_partials(batch: int, dim: int) -> Partials:
    return Partials(jnp.full((batch,), -jnp.inf), jnp.zeros((batch,)), jnp.zeros((batch, dim)))


def stream_partials(x, chunks, half_sqn, inv_var) -> Partials:
    """Partials of queries x [B, D] over chunks [K, C, D] (padded rows carry half_sqn = +inf)."""

    def body(p, c):
        xs, hs = c
        return accumulate(p, chunk_logits(x, xs, hs, inv_var), xs), None

    p, _ = jax.lax.scan(body, empty_partials(x.shape[0], x.shape[1]), (chunks, half_sqn))
    return p


def pad_chunks(data: np.ndarray, chunk: int):
    """Rows [N, D] -> (chunks [K, C, D], half squared norms [K, C]); padding rows get +inf so their weight is 0."""
    n, dim = data.shape
    chunk = max(1, min(chunk, n))
    k = -(-n // chunk)
    padded = np.zeros((k * chunk, dim), np.float32)
    padded[:n] = data
    half = np.full(k * chunk, np.inf, np.float32)
    half[:n] = 0.5 * np.einsum("ij,ij->i", data, data, dtype=np.float64)
    return padded.reshape(k, chunk, dim), half.reshape(k, chunk)


class EmpiricalDenoiser(AbstractDenoiser):
    """Exact posterior mean of the empirical distribution of the index (the "optimal" denoiser)."""

    chunks: jax.Array  # [K, C, D]
    half_sqn: jax.Array  # [K, C]

    @classmethod
    def from_data(cls, data, *, chunk: int = 2048) -> EmpiricalDenoiser:
        chunks, half = pad_chunks(np.asarray(data, np.float32).reshape(len(data), -1), chunk)
        return cls(jnp.asarray(chunks), jnp.asarray(half))

    @exact_matmuls
    def __call__(self, x, sigma, *, key=None):
        flat = flatten(x).astype(jnp.float32)
        inv_var = 1.0 / jnp.square(batch_sigma(sigma, flat.shape[0]))
        p = stream_partials(flat, self.chunks, self.half_sqn, inv_var)
        return (p.acc / p.s[:, None]).reshape(x.shape)


def build(index, opts) -> EmpiricalDenoiser:
    return EmpiricalDenoiser.from_data(index.train_data(), chunk=opts.chunk_size)

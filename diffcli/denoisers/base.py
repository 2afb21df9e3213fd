"""The denoiser contract: an immutable pytree mapping (x, sigma) -> x0_hat in sigma-space."""

from __future__ import annotations

import abc
import functools

import equinox as eqx
import jax
import jax.numpy as jnp


class AbstractDenoiser(eqx.Module):
    """`__call__(x, sigma, *, key=None)` for a batch x [B, ...] and sigma scalar or [B].

    `key` is None or one PRNG key per sample ([B] keys), so stochastic denoisers give the same answer for a sample
    whatever batch it is in. Denoisers that can report how good their approximation is also define `diagnose`.
    """

    @abc.abstractmethod
    def __call__(self, x, sigma, *, key=None):
        raise NotImplementedError


def batch_sigma(sigma, batch: int):
    """sigma as a float32 [B] vector (scalar or [B] input)."""
    return jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (batch,))


def flatten(x):
    """[B, ...] -> [B, D]."""
    return x.reshape(x.shape[0], -1)


def exact_matmuls(fn):
    """Trace `fn` with float32 matrix products in full precision. A GPU's default (TF32, a 10-bit mantissa) errs by
    about 1e-3 of a squared distance, which a softmax scaled by 1 / 2 sigma^2 turns into wrong weights at low noise;
    the analytical denoisers are exact computations, so they opt out of it (a trained network keeps the default)."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapped

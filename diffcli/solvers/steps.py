"""Shared pieces of the sigma-space samplers: the DDIM/DDPM exponential-integrator step, keys and batched calls."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffcli.errors import UsageError
from diffcli.parallel.mesh import spread_leading
from diffcli.solvers.base import step_keys

DENOISER_TAG = 1  # fold_in tag separating the denoiser's key of step j from the noise of step j


def ddim_coefficients(s, s_next, eta):
    """(r, n) with x' = r x + (1 - r) D + n z: DDIM with eta in sigma-space (Song et al. 2021, eq. 12).

    eta = 1 is the DDPM posterior step (r = s'^2/s^2, n = s' sqrt(1 - s'^2/s^2)); eta = 0 is Euler on the PF-ODE.
    """
    ratio = s_next / s
    n = eta * s_next * jnp.sqrt(jnp.clip(1.0 - ratio * ratio, 0.0, None))
    r = jnp.sqrt(jnp.clip(s_next * s_next - n * n, 0.0, None)) / s
    return r, n


def ddim_step(x, d, r, n, z):
    """One exponential-integrator step written so that r = 0 returns the denoised point exactly."""
    return d + r * (x - d) + n * z


def denoiser_keys(key, step):
    """The denoiser's per-sample keys for step `step` (None stays None)."""
    if key is None:
        return None
    return step_keys(step_keys(key, step), DENOISER_TAG)


def call_denoiser(denoiser, x, sigma, key, step):
    """D(x, sigma) with a [B] sigma in x's dtype and the step's keys."""
    sig = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
    return denoiser(x, sig, key=denoiser_keys(key, step)).astype(x.dtype)


def points_keys(key, steps):
    """Keys [P*B] for a stacked batch of P steps (row p*B + b is sample b at step steps[p])."""
    if key is None:
        return None
    ks = jax.vmap(lambda j: denoiser_keys(key, j))(steps)
    return ks.reshape((-1,) + ks.shape[2:])


def call_points(denoiser, xs, sigmas, key, steps):
    """One batched call for P points: xs [P, B, ...], sigmas [P], steps [P] -> D [P, B, ...]."""
    p, b = xs.shape[:2]
    flat = spread_leading(xs.reshape((p * b,) + xs.shape[2:]))
    sig = jnp.repeat(jnp.asarray(sigmas, xs.dtype), b)
    d = denoiser(flat, sig, key=points_keys(key, steps))
    return spread_leading(d.astype(xs.dtype)).reshape(xs.shape)


def check_sigmas(sigmas):
    """A usage error unless sigmas is a 1-D grid of at least two values."""
    if getattr(sigmas, "ndim", 1) != 1 or sigmas.shape[0] < 2:
        raise UsageError("a solver needs a 1-D sigma grid with at least two values (one step).")


def positive_int(name: str, value, minimum: int = 1) -> int:
    """An integer option checked against its minimum (one-sentence usage error)."""
    if int(value) != value or int(value) < minimum:
        raise UsageError(f"--{name.replace('_', '-')} must be a whole number of at least {minimum} (got {value}).")
    return int(value)

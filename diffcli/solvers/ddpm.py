"""Ancestral DDPM / DDIM(eta) sampling in sigma-space."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffcli.errors import UsageError
from diffcli.solvers.base import SampleResult, first_nonfinite, per_sample_normal
from diffcli.solvers.steps import call_denoiser, check_sigmas, ddim_coefficients, ddim_step


def step_noise(key, step, x):
    """The noise of step `step`: each sample's own key (shared with the Picard sampler so both agree)."""
    if key is None:
        raise UsageError("a stochastic solver needs per-sample keys (key=...).")
    return per_sample_normal(key, step, x.shape[1:], x.dtype)


def sample_ddpm(denoiser, x_T, sigmas, *, key, eta: float = 1.0):
    """DDPM ancestral sampling (Ho et al. 2020) as DDIM(eta) in sigma-space (Song et al. 2021); eta 0 = Euler."""
    check_sigmas(sigmas)
    if not 0.0 <= float(eta) <= 1.0:
        raise UsageError(f"--eta must lie in [0, 1] (got {eta}).")
    sig = jnp.asarray(sigmas, x_T.dtype)
    steps = sig.shape[0] - 1

    def body(carry, i):
        x, bad = carry
        s, s_next = sig[i], sig[i + 1]
        d = call_denoiser(denoiser, x, s, key, i)
        r, n = ddim_coefficients(s, s_next, eta)
        z = step_noise(key, i, x) if eta > 0 else jnp.zeros_like(x)
        x_new = ddim_step(x, d, r, n, z)
        return (x_new, first_nonfinite(bad, i, x_new)), None

    (x, bad), _ = jax.lax.scan(body, (x_T, jnp.asarray(-1, jnp.int32)), jnp.arange(steps, dtype=jnp.int32))
    nfe = jnp.asarray(steps, jnp.int32)
    return SampleResult(x, nfe, nfe, {"nonfinite_step": bad})

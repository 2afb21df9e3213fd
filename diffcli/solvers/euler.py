"""Euler on the probability-flow ODE in sigma-space (= DDIM with eta 0)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffcli.solvers.base import SampleResult, first_nonfinite
from diffcli.solvers.steps import call_denoiser, check_sigmas, ddim_step


def sample_euler(denoiser, x_T, sigmas, *, key=None):
    """Euler on dx/dsigma = (x - D)/sigma (Karras et al. 2022, Alg. 1 without the correction; DDIM eta 0)."""
    check_sigmas(sigmas)
    sig = jnp.asarray(sigmas, x_T.dtype)
    steps = sig.shape[0] - 1

    def body(carry, i):
        x, bad = carry
        s, s_next = sig[i], sig[i + 1]
        d = call_denoiser(denoiser, x, s, key, i)
        # x + (s' - s)(x - D)/s written as D + (s'/s)(x - D): the step to sigma 0 is exactly D
        x_new = ddim_step(x, d, s_next / s, 0.0, 0.0)
        return (x_new, first_nonfinite(bad, i, x_new)), None

    (x, bad), _ = jax.lax.scan(body, (x_T, jnp.asarray(-1, jnp.int32)), jnp.arange(steps, dtype=jnp.int32))
    nfe = jnp.asarray(steps, jnp.int32)
    return SampleResult(x, nfe, nfe, {"nonfinite_step": bad})

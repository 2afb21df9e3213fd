"""DPM-Solver++(2M) in sigma-space (k-diffusion form)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffcli.solvers.base import SampleResult, first_nonfinite
from diffcli.solvers.steps import call_denoiser, check_sigmas, ddim_step


def sample_dpmpp_2m(denoiser, x_T, sigmas, *, key=None):
    """Lu et al. 2022, DPM-Solver++(2M): multistep second order in lambda = -log sigma; first order at both ends."""
    check_sigmas(sigmas)
    sig = jnp.asarray(sigmas, x_T.dtype)
    steps = sig.shape[0] - 1

    def body(carry, i):
        x, d_old, bad = carry
        s_prev, s, s_next = sig[jnp.maximum(i - 1, 0)], sig[i], sig[i + 1]
        d = call_denoiser(denoiser, x, s, key, i)
        second = (i > 0) & (s_next > 0)
        # h = log(s / s'), h_last = log(s_prev / s); guarded so the unused branch never makes NaN
        h = jnp.log(s / jnp.where(second, s_next, s * 0.5))
        h_last = jnp.log(s_prev / s)
        r = jnp.where(second, h_last / h, 1.0)
        d_2m = jnp.where(second, (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * d_old, d)
        x_new = ddim_step(x, d_2m, s_next / s, 0.0, 0.0)
        return (x_new, d, first_nonfinite(bad, i, x_new)), None

    init = (x_T, jnp.zeros_like(x_T), jnp.asarray(-1, jnp.int32))
    (x, _, bad), _ = jax.lax.scan(body, init, jnp.arange(steps, dtype=jnp.int32))
    nfe = jnp.asarray(steps, jnp.int32)
    return SampleResult(x, nfe, nfe, {"nonfinite_step": bad})

"""Heun's second-order method on the probability-flow ODE (EDM)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffcli.solvers.base import SampleResult, first_nonfinite
from diffcli.solvers.steps import call_denoiser, check_sigmas, ddim_step


def sample_heun(denoiser, x_T, sigmas, *, key=None):
    """Karras et al. 2022 (EDM) Algorithm 1: Heun correction on every step except the one to sigma 0."""
    check_sigmas(sigmas)
    sig = jnp.asarray(sigmas, x_T.dtype)
    steps = sig.shape[0] - 1

    def body(carry, i):
        x, bad, nfe = carry
        s, s_next = sig[i], sig[i + 1]
        d = call_denoiser(denoiser, x, s, key, i)
        slope = (x - d) / s
        x_euler = ddim_step(x, d, s_next / s, 0.0, 0.0)

        def correct(_):
            # the second evaluation is keyed as a separate point so stochastic denoisers stay per-sample
            d2 = call_denoiser(denoiser, x_euler, s_next, key, steps + i)
            return x + (s_next - s) * 0.5 * (slope + (x_euler - d2) / s_next)

        x_new = jax.lax.cond(s_next > 0, correct, lambda _: x_euler, None)
        nfe = nfe + 1 + (s_next > 0).astype(jnp.int32)
        return (x_new, first_nonfinite(bad, i, x_new), nfe), None

    init = (x_T, jnp.asarray(-1, jnp.int32), jnp.asarray(0, jnp.int32))
    (x, bad, nfe), _ = jax.lax.scan(body, init, jnp.arange(steps, dtype=jnp.int32))
    return SampleResult(x, nfe, nfe, {"nonfinite_step": bad})

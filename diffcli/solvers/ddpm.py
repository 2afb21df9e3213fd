"""Ancestral DDPM / DDIM(eta) sampling in sigma-space, and the Brownian coupling of DDPM runs on different schedules.

The DDPM step samples the forward noise path backwards: with x = x0 + B(tau), tau = sigma^2 and B a Brownian motion,
B(tau') given B(tau) (tau' < tau) is N((tau'/tau) B(tau), tau'(1 - tau'/tau)), which is the step's r and n. By time
inversion X(g) = g B(1/g) is a Brownian motion in g = 1/sigma^2 (the SNR), and that step is exactly
B(tau') = tau' (X(g) + dX) with dX = X(g') - X(g): the step's noise is the standardised increment of X over
[1/sigma^2, 1/sigma'^2]. Runs on any two schedules driven by one path X are therefore coupled, and a run on a subgrid
of another with an exact denoiser lands on the very same states (coupled_noise, tests/test_solvers.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffcli.errors import UsageError
from diffcli.solvers.base import SampleResult, first_nonfinite, per_sample_normal
from diffcli.solvers.steps import call_denoiser, check_sigmas, ddim_coefficients, ddim_step


def step_noise(key, step, x):
    """The noise of step `step`: each sample's own key (shared with the Picard sampler so both agree)."""
    if key is None:
        raise UsageError("a stochastic solver needs per-sample keys (key=...).")
    return per_sample_normal(key, step, x.shape[1:], x.dtype)


def sample_ddpm(denoiser, x_T, sigmas, *, key, eta: float = 1.0, noise=None):
    """DDPM ancestral sampling (Ho et al. 2020) as DDIM(eta) in sigma-space (Song et al. 2021); eta 0 = Euler.

    `noise` [steps, *x_T.shape]: the standard normals of the steps, instead of the per-sample keys' (coupled_noise
    makes them for several schedules from one Brownian path).
    """
    check_sigmas(sigmas)
    if not 0.0 <= float(eta) <= 1.0:
        raise UsageError(f"--eta must lie in [0, 1] (got {eta}).")
    sig = jnp.asarray(sigmas, x_T.dtype)
    steps = sig.shape[0] - 1
    if noise is not None and tuple(noise.shape) != (steps, *x_T.shape):
        raise UsageError(f"noise must have shape {(steps, *x_T.shape)} (got {tuple(noise.shape)}).")

    def body(carry, i):
        x, bad = carry
        s, s_next = sig[i], sig[i + 1]
        d = call_denoiser(denoiser, x, s, key, i)
        r, n = ddim_coefficients(s, s_next, eta)
        if eta == 0:
            z = jnp.zeros_like(x)
        else:
            z = step_noise(key, i, x) if noise is None else noise[i].astype(x.dtype)
        x_new = ddim_step(x, d, r, n, z)
        return (x_new, first_nonfinite(bad, i, x_new)), None

    (x, bad), _ = jax.lax.scan(body, (x_T, jnp.asarray(-1, jnp.int32)), jnp.arange(steps, dtype=jnp.int32))
    nfe = jnp.asarray(steps, jnp.int32)
    return SampleResult(x, nfe, nfe, {"nonfinite_step": bad})


def coupled_noise(schedules, shape, seed: int = 0) -> list[np.ndarray]:
    """Step noise [steps, *shape] for DDPM (eta 1) on each schedule, all from one Brownian path X in g = 1/sigma^2.

    X is drawn at the union of every schedule's g values (float64, exact increments), so each schedule's noise is
    the standardised increments of the same path; a step to sigma = 0 injects no noise and gets zeros.
    """
    sig = [np.asarray(s, np.float64) for s in schedules]
    grid = np.unique(np.concatenate([1.0 / np.square(s[s > 0]) for s in sig]))
    tail = (1,) * len(shape)
    inc = np.random.default_rng(seed).standard_normal((len(grid), *shape))
    path = np.cumsum(inc * np.sqrt(np.diff(grid, prepend=0.0)).reshape(-1, *tail), axis=0)  # X(0) = 0
    out = []
    for s in sig:
        z = np.zeros((len(s) - 1, *shape))
        live = np.flatnonzero(s[1:] > 0)  # steps that end at a positive sigma
        g0, g1 = 1.0 / np.square(s[live]), 1.0 / np.square(s[live + 1])
        at0, at1 = path[np.searchsorted(grid, g0)], path[np.searchsorted(grid, g1)]
        z[live] = (at1 - at0) / np.sqrt(g1 - g0).reshape(-1, *tail)
        out.append(z.astype(np.float32))
    return out

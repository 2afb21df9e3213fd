"""DPM-Solver++ multistep samplers in sigma-space (k-diffusion form) and the phi functions of exponential integrators.

Derivations and the update formulas: docs/multistep.md.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from diffcli.solvers.base import SampleResult, first_nonfinite
from diffcli.solvers.steps import call_denoiser, check_sigmas, ddim_step

PHI_SERIES_TERMS = 20  # Taylor terms of phi_j(x) for |x| < 1: the remainder is below 1/21! ~ 2e-20


def phis(x, count: int):
    """[phi_0(x), ..., phi_count(x)] with phi_j(x) = sum_i x^i / (i + j)!: phi_0 = e^x, phi_1 = (e^x - 1)/x, ...

    Upward, phi_{j+1} = (phi_j - 1/j!)/x cancels for small |x| (error ~ eps / |x|^j); there the Taylor series gives
    phi_count and the stable downward recursion phi_j = 1/j! + x phi_{j+1} the others.
    """
    x = jnp.asarray(x)
    small = jnp.abs(x) < 1.0
    xs = jnp.where(small, x, 0.0)
    top = jnp.zeros_like(x)
    for i in reversed(range(PHI_SERIES_TERMS)):
        top = top * xs + 1.0 / math.factorial(i + count)
    down = [top]
    for j in reversed(range(count)):
        down.insert(0, 1.0 / math.factorial(j) + xs * down[0])
    xl = jnp.where(small, -1.0, x)
    up = [jnp.exp(xl)]
    for j in range(count):
        up.append((up[-1] - 1.0 / math.factorial(j)) / xl)
    return [jnp.where(small, d, u) for d, u in zip(down, up, strict=True)]


def log_ratio(sig, a, b, valid):
    """log(sig[a] / sig[b]) where `valid`, else 1 (a finite stand-in for a branch that is not taken)."""
    return jnp.where(valid, jnp.log(sig[a] / jnp.where(valid, sig[b], 1.0)), 1.0)


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


def dpmpp_3m_update(x, d, d1, d2, h, h1, h2, order):
    """One DPM-Solver++(3M) step of length h in lambda from x with D = d now and d1, d2 one and two steps back.

    order 1: the DDIM step; 2: plus h phi_2(-h) times the divided difference; 3: D extrapolated quadratically in
    lambda, with k-diffusion's and diffusers' weight h phi_3(-h) on the second difference (half the Taylor weight, so
    the method is of second order as the steps shrink: docs/multistep.md).
    """
    r0 = jnp.where(order >= 2, h1 / h, 1.0)
    r1 = jnp.where(order >= 3, h2 / h, 1.0)
    d1_0 = (d - d1) / r0
    d1_1 = (d1 - d2) / r1
    slope = jnp.where(order >= 3, d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1), d1_0)  # h dD/dlambda
    curvature = (d1_0 - d1_1) / (r0 + r1)  # h^2 (d^2D/dlambda^2) / 2
    _, _, phi2, phi3 = phis(-h, 3)
    a1 = jnp.where(order >= 2, h * phi2, 0.0)
    a2 = jnp.where(order >= 3, h * phi3, 0.0)
    return ddim_step(x, d, jnp.exp(-h), 0.0, 0.0) + a1 * slope + a2 * curvature


def sample_dpmpp_3m(denoiser, x_T, sigmas, *, key=None):
    """DPM-Solver++(3M) as k-diffusion's dpmpp_3m_sde with eta 0: multistep in lambda = -log sigma with D extrapolated
    from the last three values; orders 1 and 2 on the first two steps, and the step to sigma 0 is the denoised point."""
    check_sigmas(sigmas)
    sig = jnp.asarray(sigmas, x_T.dtype)
    steps = sig.shape[0] - 1

    def body(carry, i):
        x, d1, d2, bad = carry
        d = call_denoiser(denoiser, x, sig[i], key, i)
        to_zero = sig[i + 1] <= 0
        order = jnp.minimum(i + 1, 3)
        h = log_ratio(sig, i, i + 1, ~to_zero)
        h1 = log_ratio(sig, jnp.maximum(i - 1, 0), i, i >= 1)
        h2 = log_ratio(sig, jnp.maximum(i - 2, 0), jnp.maximum(i - 1, 0), i >= 2)
        x_new = jnp.where(to_zero, d, dpmpp_3m_update(x, d, d1, d2, h, h1, h2, order))
        return (x_new, d, d1, first_nonfinite(bad, i, x_new)), None

    init = (x_T, jnp.zeros_like(x_T), jnp.zeros_like(x_T), jnp.asarray(-1, jnp.int32))
    (x, _, _, bad), _ = jax.lax.scan(body, init, jnp.arange(steps, dtype=jnp.int32))
    nfe = jnp.asarray(steps, jnp.int32)
    return SampleResult(x, nfe, nfe, {"nonfinite_step": bad})

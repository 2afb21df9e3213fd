"""UniPC (Zhao et al. 2023), variant B(h) = e^h - 1 ("bh2"), order 3, data prediction, in sigma-space.

Each step evaluates D once at the predicted state, corrects that state with UniC (the new D value enters the
multistep formula as one more node), then predicts the next state with UniP from the corrected one. The orders ramp
up over the first steps and down over the last ones, and the step to sigma 0 is the denoised point, as in diffusers'
UniPCMultistepScheduler (solver_order 3, lower_order_final). Formulas: docs/multistep.md.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from diffcli.solvers.base import SampleResult, first_nonfinite
from diffcli.solvers.dpmpp import log_ratio, phis
from diffcli.solvers.steps import call_denoiser, check_sigmas, ddim_step

ORDER = 3


def moments(h, count: int):
    """b_k = k! phi_{k+1}(-h) / phi_1(-h), k = 1..count: what the weights of the D differences must reproduce."""
    phi = phis(-h, count + 1)
    return [math.factorial(k) * phi[k + 1] / phi[1] for k in range(1, count + 1)]


def lagrange_weights(nodes, b):
    """Weights w with sum_j w_j nodes_j^(i-1) = b_i for i = 1..len(nodes) (a transposed Vandermonde solve).

    w_j = L(l_j) where l_j is the Lagrange polynomial of node j and L maps t^(i-1) to b_i.
    """
    weights = []
    for j, nj in enumerate(nodes):
        coeffs = [1.0]  # of prod_{l != j} (t - n_l), lowest degree first
        denom = 1.0
        for m, nm in enumerate(nodes):
            if m != j:
                coeffs = [(coeffs[i - 1] if i > 0 else 0.0) - nm * (coeffs[i] if i < len(coeffs) else 0.0)
                          for i in range(len(coeffs) + 1)]
                denom = denom * (nj - nm)
        weights.append(sum(c * bi for c, bi in zip(coeffs, b, strict=True)) / denom)
    return weights


def multistep_combination(x, m0, diffs, weights, h):
    """m0 + e^{-h}(x - m0) + (1 - e^{-h}) sum_j w_j diffs_j: the exponential integrator with D extrapolated."""
    extra = sum(w * diff for w, diff in zip(weights, diffs, strict=True))
    return ddim_step(x, m0, jnp.exp(-h), 0.0, 0.0) - jnp.expm1(-h) * extra


def predictor(x, m, m1, m2, h, r1, r2, order):
    """UniP-order from x with D = m now and m1, m2 one and two steps back, at r_i = (lambda_{-i} - lambda)/h."""
    b1, b2 = moments(h, 2)
    w1, w2 = lagrange_weights([r1, r2], [b1, b2])
    w1 = jnp.where(order == 3, w1, jnp.where(order == 2, 0.5, 0.0))
    w2 = jnp.where(order == 3, w2, 0.0)
    return multistep_combination(x, m, [(m1 - m) / r1, (m2 - m) / r2], [w1, w2], h)


def corrector(x_last, m_last, m, m2, m3, h, r1, r2, order):
    """UniC-order: the step from x_last (D = m_last, m2, m3 one and two steps further back) redone with the new
    value m at its end as a node at r = 1."""
    b = moments(h, 3)
    one = jnp.ones_like(h)
    w_t1 = 0.5
    w1_2, w_t2 = lagrange_weights([r1, one], b[:2])
    w1_3, w2_3, w_t3 = lagrange_weights([r1, r2, one], b)
    w1 = jnp.where(order == 3, w1_3, jnp.where(order == 2, w1_2, 0.0))
    w2 = jnp.where(order == 3, w2_3, 0.0)
    w_t = jnp.where(order == 3, w_t3, jnp.where(order == 2, w_t2, w_t1))
    diffs = [(m2 - m_last) / r1, (m3 - m_last) / r2, m - m_last]
    return multistep_combination(x_last, m_last, diffs, [w1, w2, w_t], h)


def node_ratio(sig, base, back: int, h, valid, fill):
    """r = (lambda_{base - back} - lambda_base) / h = log(sig[base] / sig[base - back]) / h, or `fill` when invalid."""
    return jnp.where(valid, log_ratio(sig, base, jnp.maximum(base - back, 0), valid) / h, fill)


def sample_unipc(denoiser, x_T, sigmas, *, key=None):
    """UniPC-3 (bh2) with the UniC corrector after every step but the last; the step to sigma 0 is the denoised
    point of the last predicted state."""
    check_sigmas(sigmas)
    sig = jnp.asarray(sigmas, x_T.dtype)
    steps = sig.shape[0] - 1

    def body(carry, k):
        x, x_last, m1, m2, m3, bad = carry
        m = call_denoiser(denoiser, x, sig[k], key, k)
        # UniC on the previous step, of the order its predictor had
        order_c = jnp.minimum(jnp.minimum(ORDER, k), steps - k + 1)
        hc = log_ratio(sig, jnp.maximum(k - 1, 0), k, k >= 1)
        rc1 = node_ratio(sig, jnp.maximum(k - 1, 0), 1, hc, order_c >= 2, -1.0)
        rc2 = node_ratio(sig, jnp.maximum(k - 1, 0), 2, hc, order_c >= 3, -2.0)
        x_c = jnp.where(k >= 1, corrector(x_last, m1, m, m2, m3, hc, rc1, rc2, order_c), x)
        # UniP to the next sigma
        order = jnp.minimum(jnp.minimum(ORDER, k + 1), steps - k)
        to_zero = sig[k + 1] <= 0
        h = log_ratio(sig, k, k + 1, ~to_zero)
        r1 = node_ratio(sig, k, 1, h, order >= 2, -1.0)
        r2 = node_ratio(sig, k, 2, h, order >= 3, -2.0)
        x_new = jnp.where(to_zero, m, predictor(x_c, m, m1, m2, h, r1, r2, order))
        return (x_new, x_c, m, m1, m2, first_nonfinite(bad, k, x_new)), None

    zero = jnp.zeros_like(x_T)
    init = (x_T, x_T, zero, zero, zero, jnp.asarray(-1, jnp.int32))
    (x, *_, bad), _ = jax.lax.scan(body, init, jnp.arange(steps, dtype=jnp.int32))
    nfe = jnp.asarray(steps, jnp.int32)
    return SampleResult(x, nfe, nfe, {"nonfinite_step": bad})

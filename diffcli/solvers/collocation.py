"""Chebyshev collocation on the probability-flow ODE (Lee, Song, Vempala 2018; Gatmiry, Chen, Salim 2026).

Time variable: u = log sigma. In u the PF-ODE reads dx/du = x - D(x, e^u): the full drift, with no 1/sigma factor, so
its Lipschitz constant is ||I - dD/dx|| (bounded for smooth data, about (R/sigma)^2 where modes separate) instead of
growing like 1/sigma (sigma time) or 1/sigma^2 (OU time t = log(1 + sigma^2), where dt = 2 sigma dsigma near 0).
Equal windows in u are geometric in sigma. The solution is smooth in u (x ~ sigma = e^u at large sigma, an entire
function), so a degree D-1 polynomial on each window is spectrally accurate.

Per window [u0, u0 + h] (h < 0, integrating down in sigma): node states Y (all D nodes in one batched call per round)
  Y^(0) = y0,   F^(k) = f(u0 + c, Y^(k)),   Y^(k+1) = y0 + A(h) F^(k),   output y0 + w(h) . F^(last).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffcli.errors import UsageError
from diffcli.solvers.base import SampleResult, first_nonfinite
from diffcli.solvers.chebyshev import chebyshev_table
from diffcli.solvers.steps import call_denoiser, call_points, check_sigmas, positive_int

MAX_TOL_ROUNDS = 64  # round cap per window when colloc_tol decides and colloc_iters is not given


def sigma_range(sig):
    """(sigma_max, sigma_min) of a grid: the first value and the last nonzero one."""
    last_nonzero = jnp.where(sig[-1] > 0, sig[-1], sig[-2])
    return sig[0], last_nonzero


def combine(mat, f):
    """mat [P, D] applied along the node axis of f [D, B, ...] -> [P, B, ...]."""
    return jnp.tensordot(mat, f, axes=(1, 0))


def relative_change(new, old):
    """max over nodes and samples of ||new - old|| / ||old|| (the fixed-point residual)."""
    axes = tuple(range(2, new.ndim))
    num = jnp.sqrt(jnp.sum((new - old) ** 2, axis=axes))
    den = jnp.sqrt(jnp.sum(old**2, axis=axes))
    return jnp.max(num / jnp.maximum(den, jnp.finfo(new.dtype).tiny))


def solve_window(denoiser, y0, u0, h, table, *, key, window, iters, tol):
    """One collocation window from u0 to u0 + h: (end state, rounds used)."""
    nodes = jnp.asarray(table.nodes, y0.dtype)
    mat = h * jnp.asarray(table.matrix, y0.dtype)
    weights = h * jnp.asarray(table.weights, y0.dtype)
    n = nodes.shape[0]
    sig_nodes = jnp.exp(u0 + h * nodes)
    tags = window * n + jnp.arange(n, dtype=jnp.int32)

    def drift(ys):
        return ys - call_points(denoiser, ys, sig_nodes, key, tags)

    def round_(ys):
        f = drift(ys)
        return y0[None] + combine(mat, f), f

    ys0 = jnp.broadcast_to(y0, (n,) + y0.shape)
    if tol is None:
        def body(_, carry):
            ys, _ = carry
            return round_(ys)

        _, f = jax.lax.fori_loop(0, iters, body, (ys0, jnp.zeros_like(ys0)))
        used = jnp.asarray(iters, jnp.int32)
    else:
        def cond(state):
            _, _, res, it = state
            return (res > tol) & (it < iters)

        def body_tol(state):
            ys, _, _, it = state
            new, f = round_(ys)
            return new, f, relative_change(new, ys), it + 1

        init = (ys0, jnp.zeros_like(ys0), jnp.asarray(jnp.inf, y0.dtype), jnp.asarray(0, jnp.int32))
        _, f, _, used = jax.lax.while_loop(cond, body_tol, init)
    return y0 + combine(weights[None], f)[0], used


def sample_collocation(denoiser, x_T, sigmas, *, key=None, colloc_nodes: int = 8, colloc_iters: int | None = None,
                       colloc_tol: float | None = None, colloc_windows: int = 20):
    """Chebyshev collocation with Picard rounds per window (Lee-Song-Vempala 2018; Gatmiry-Chen-Salim 2026) on the
    PF-ODE in log-sigma from sigma_max to sigma_min, then the final denoise to sigma 0."""
    check_sigmas(sigmas)
    nodes = positive_int("colloc_nodes", colloc_nodes)
    windows = positive_int("colloc_windows", colloc_windows)
    if colloc_tol is not None and not float(colloc_tol) > 0:
        raise UsageError(f"--colloc-tol must be positive (got {colloc_tol}).")
    default_iters = nodes if colloc_tol is None else MAX_TOL_ROUNDS
    iters = positive_int("colloc_iters", colloc_iters) if colloc_iters is not None else default_iters
    table = chebyshev_table(nodes)
    sig = jnp.asarray(sigmas, x_T.dtype)
    s_max, s_min = sigma_range(sig)
    u_start = jnp.log(s_max)
    h = (jnp.log(s_min) - u_start) / windows
    tol = None if colloc_tol is None else float(colloc_tol)

    def body(carry, n):
        x, rounds, bad = carry
        x_new, used = solve_window(denoiser, x, u_start + n * h, h, table, key=key, window=n, iters=iters, tol=tol)
        return (x_new, rounds + used, first_nonfinite(bad, n, x_new)), None

    init = (x_T, jnp.asarray(0, jnp.int32), jnp.asarray(-1, jnp.int32))
    (x, rounds, bad), _ = jax.lax.scan(body, init, jnp.arange(windows, dtype=jnp.int32))
    to_zero = sig[-1] == 0
    x = jax.lax.cond(to_zero, lambda y: call_denoiser(denoiser, y, s_min, key, windows * nodes), lambda y: y, x)
    bad = jnp.where((bad < 0) & ~jnp.all(jnp.isfinite(x)), windows, bad)
    final = to_zero.astype(jnp.int32)
    return SampleResult(x, rounds * nodes + final, rounds + final, {"nonfinite_step": bad})

"""Chebyshev collocation on the probability-flow ODE (Lee, Song, Vempala 2018; Gatmiry, Chen, Salim 2026).

The PF-ODE dx/du = x - D(x, e^u) in u = log sigma is solved window by window: the drift is a polynomial through
Chebyshev nodes, and the node states solve the collocation equations by fixed-point rounds (all nodes in one batched
call). `--colloc-tol` sizes the windows and stops the rounds so that the sample ends within it, relatively, of the
exact flow. Derivation and choices: docs/collocation.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffcli.solvers.base import SampleResult, first_nonfinite
from diffcli.solvers.chebyshev import chebyshev_table
from diffcli.solvers.options import CollocationOptions
from diffcli.solvers.steps import call_denoiser, call_points, check_sigmas

MAX_TOL_ROUNDS = 64  # round cap per window when the tolerance decides and colloc_iters is not given


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
    """One collocation window from u0 to u0 + h: (end state, rounds used). tol None: exactly `iters` rounds; else
    rounds until the node states' relative change is at most tol (at most `iters`)."""
    nodes = jnp.asarray(table.nodes, y0.dtype)
    mat = h * jnp.asarray(table.matrix, y0.dtype)
    weights = h * jnp.asarray(table.weights, y0.dtype)
    n = nodes.shape[0]
    sig_nodes = jnp.exp(u0 + h * nodes)
    tags = window * n + jnp.arange(n, dtype=jnp.int32)

    def round_(ys):
        f = ys - call_points(denoiser, ys, sig_nodes, key, tags)
        return y0[None] + combine(mat, f), f

    def cond(state):
        _, _, res, it = state
        return (res > tol) & (it < iters)

    def body(state):
        ys, _, _, it = state
        new, f = round_(ys)
        return new, f, relative_change(new, ys), it + 1

    ys0 = jnp.broadcast_to(y0, (n,) + y0.shape)
    if tol is None:
        _, f = jax.lax.fori_loop(0, iters, lambda _, carry: round_(carry[0]), (ys0, jnp.zeros_like(ys0)))
        used = jnp.asarray(iters, jnp.int32)
    else:
        init = (ys0, jnp.zeros_like(ys0), jnp.asarray(jnp.inf, y0.dtype), jnp.asarray(0, jnp.int32))
        _, f, _, used = jax.lax.while_loop(cond, body, init)
    return y0 + combine(weights[None], f)[0], used


def sample_collocation(denoiser, x_T, sigmas, *, key=None, **options):
    """Chebyshev collocation with fixed-point rounds per window (Lee-Song-Vempala 2018; Gatmiry-Chen-Salim 2026) on
    the PF-ODE in log-sigma from sigma_max to sigma_min, then the final denoise to sigma 0. Options:
    CollocationOptions."""
    opts = CollocationOptions(**options)
    check_sigmas(sigmas)
    nodes = opts.colloc_nodes
    tol = opts.round_tolerance()
    iters = opts.colloc_iters if opts.colloc_iters is not None else (nodes if tol is None else MAX_TOL_ROUNDS)
    table = chebyshev_table(nodes)
    sig = jnp.asarray(sigmas, x_T.dtype)
    s_max, s_min = sigma_range(sig)
    u_start = jnp.log(s_max)
    span = jnp.log(s_min) - u_start  # negative: integrating down in sigma
    if opts.colloc_windows is not None:
        windows = jnp.asarray(opts.colloc_windows, jnp.int32)
    else:
        windows = jnp.maximum(jnp.ceil(-span / opts.window_length()), 1).astype(jnp.int32)
    h = span / windows
    # each window's rounds get an equal share of the other half of the tolerance
    round_tol = None if tol is None else 0.5 * tol / windows.astype(x_T.dtype)

    def body(n, carry):
        x, rounds, bad = carry
        x_new, used = solve_window(denoiser, x, u_start + n * h, h, table, key=key, window=n, iters=iters,
                                   tol=round_tol)
        return x_new, rounds + used, first_nonfinite(bad, n, x_new)

    init = (x_T, jnp.asarray(0, jnp.int32), jnp.asarray(-1, jnp.int32))
    x, rounds, bad = jax.lax.fori_loop(0, windows, body, init)
    to_zero = sig[-1] == 0
    x = jax.lax.cond(to_zero, lambda y: call_denoiser(denoiser, y, s_min, key, windows * nodes), lambda y: y, x)
    bad = jnp.where((bad < 0) & ~jnp.all(jnp.isfinite(x)), windows, bad)
    final = to_zero.astype(jnp.int32)
    return SampleResult(x, rounds * nodes + final, rounds + final, {"nonfinite_step": bad})

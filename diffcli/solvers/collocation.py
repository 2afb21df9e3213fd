"""Chebyshev collocation on the probability-flow ODE (Lee, Song, Vempala 2018; Gatmiry, Chen, Salim 2026).

The PF-ODE dx/du = x - D(x, e^u) in u = log sigma is solved window by window. In the default exponential-integrator
form only the denoiser D is a polynomial through Chebyshev nodes and the linear part is integrated exactly
(x(u) = e^{u - u0} y0 - int e^{u - s} D ds); the plain form collocates the whole drift. The node states solve the
collocation equations by fixed-point rounds (all nodes in one batched call), started from the previous window's
polynomial extrapolated, and stopped by their residual. Window lengths follow an error estimate (the last Chebyshev
coefficients), so `--colloc-tol` sets the final relative error. Derivation and choices: docs/collocation.md.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from diffcli.solvers.base import SampleResult, first_nonfinite
from diffcli.solvers.chebyshev import chebyshev_table, end_derivatives, lagrange_coefficients
from diffcli.solvers.exponential import H_MAX, exponential_table, kernel_weights
from diffcli.solvers.options import CollocationOptions
from diffcli.solvers.steps import call_denoiser, call_points, check_sigmas

MAX_WINDOWS = 256  # attempts (accepted or rejected windows) before the loop gives up
WARM_ORDER = 2  # Taylor order of the extrapolated polynomial that starts a window's rounds
SAFETY = 0.8  # next window length = SAFETY * (target / estimate)^(1 / (nodes - 1)) * this one's
GROWTH = (0.25, 2.5)  # bounds on the ratio of consecutive window lengths
TAIL_SCALE = 0.01  # the error a window leaves, per unit of log-sigma, per unit of its relative spectral tail
ROUND_SHARE = 2.0  # a window's rounds stop at this many times its share of the tolerance (the change overstates
# the error left: the rounds contract)
EARLY_ROUNDS = 2  # rounds after which a window whose tail is far past the target stops (it will be rejected)
EARLY_FACTOR = 2.0  # ... far past: this many times the target
REJECT_SHRINK = 0.5  # a rejected window's retry is at most this fraction of its length
NOISE_FLOOR = 64  # estimates below this many eps are round-off: the window is accepted


def sigma_range(sig):
    """(sigma_max, sigma_min) of a grid: the first value and the last nonzero one."""
    last_nonzero = jnp.where(sig[-1] > 0, sig[-1], sig[-2])
    return sig[0], last_nonzero


def combine(mat, f):
    """mat [P, D] applied along the node axis of f [D, B, ...] -> [P, B, ...]."""
    return jnp.tensordot(mat, f, axes=(1, 0))


def per_sample_norm(v, lead):
    """Euclidean norm over every axis after the first `lead` ones."""
    return jnp.sqrt(jnp.sum(v**2, axis=tuple(range(lead, v.ndim))))


def relative_change(new, old):
    """max over nodes and samples of ||new - old|| / ||old|| (the fixed-point residual)."""
    den = per_sample_norm(old, 2)
    return jnp.max(per_sample_norm(new - old, 2) / jnp.maximum(den, jnp.finfo(new.dtype).tiny))


def broadcast_nodes(v, like):
    """A per-node vector [D] shaped to multiply node states [D, B, ...]."""
    return v.reshape(v.shape + (1,) * (like.ndim - 1))


class Window(NamedTuple):
    """A solved window: its end state, the denoiser values at its nodes, the collocated values, rounds used."""

    end: jax.Array
    dvals: jax.Array
    fvals: jax.Array
    rounds: jax.Array


def warm_guess(dprev, ratio, nodes, table):
    """D at this window's nodes from the previous window's polynomial, Taylor-extrapolated past its end:
    the node c_i lies at tau = 1 + ratio c_i of the previous window (ratio = h / h_prev)."""
    steps = ratio * jnp.asarray(nodes, dprev.dtype)  # [D]
    powers = jnp.stack([steps**m / math.factorial(m) for m in range(table.shape[0])], axis=1)
    return combine(powers @ jnp.asarray(table, dprev.dtype), dprev)


def solve_window(denoiser, y0, u0, h, guess, form, *, key, tag, iters, tol, tail_limit=None):
    """One window from u0 to u0 + h (h < 0 integrates down in sigma), rounds from the node states `guess`;
    tol None: exactly `iters` rounds, else until the states' relative change is at most tol (at most `iters`).
    tail_limit: stop early once the spectral tail exceeds it after EARLY_ROUNDS rounds (the window will be rejected)."""
    n = guess.shape[0]
    table = chebyshev_table(n)
    nodes = jnp.asarray(table.nodes, y0.dtype)
    sig_nodes = jnp.exp(u0 + h * nodes)
    tags = tag * n + jnp.arange(n, dtype=jnp.int32)
    if form == "ei":
        mat, weights = kernel_weights(exponential_table(n), h, y0.dtype)
        decay = broadcast_nodes(jnp.exp(h * nodes), guess)

        def states(f):
            return decay * y0[None] - combine(mat, f)

        def end(f):
            return jnp.exp(h) * y0 - combine(weights[None], f)[0]
    else:
        mat, weights = h * jnp.asarray(table.matrix, y0.dtype), h * jnp.asarray(table.weights, y0.dtype)

        def states(f):
            return y0[None] + combine(mat, f)

        def end(f):
            return y0 + combine(weights[None], f)[0]

    def round_(ys):
        d = call_points(denoiser, ys, sig_nodes, key, tags)
        f = d if form == "ei" else ys - d
        return states(f), d, f

    def cond(state):
        going = (state[3] > tol) & (state[4] < iters)
        if tail_limit is None:
            return going
        return going & ~((state[4] >= EARLY_ROUNDS) & (spectral_tail(state[2], state[0][-1]) > tail_limit))

    def body(state):
        ys = state[0]
        new, d, f = round_(ys)
        return new, d, f, relative_change(new, ys), state[4] + 1

    zeros = jnp.zeros_like(guess)
    res0 = jnp.asarray(jnp.inf, y0.dtype)
    if tol is None:
        _, d, f, _, used = jax.lax.fori_loop(0, iters, lambda _, s: body(s), (guess, zeros, zeros, res0, 0))
    else:
        _, d, f, _, used = jax.lax.while_loop(cond, body, (guess, zeros, zeros, res0, jnp.asarray(0, jnp.int32)))
    return Window(end(f), d, f, jnp.asarray(used, jnp.int32))


def spectral_tail(f, end):
    """max over samples of the last two Chebyshev coefficients of the collocated polynomial, relative to the
    window's end state: the error estimate that sizes the windows."""
    n = f.shape[0]
    table = chebyshev_table(n)
    coef = combine(jnp.asarray(lagrange_coefficients(2 * table.nodes - 1), f.dtype), f)  # [k, B, ...]
    tail = per_sample_norm(coef[-1], 1) + (per_sample_norm(coef[-2], 1) if n > 1 else 0.0)
    return TAIL_SCALE * jnp.max(tail / jnp.maximum(per_sample_norm(end, 1), jnp.finfo(f.dtype).tiny))


class Loop(NamedTuple):
    x: jax.Array
    u: jax.Array
    h: jax.Array  # the next window's length (negative)
    dprev: jax.Array  # D at the last accepted window's nodes
    h_prev: jax.Array
    accepted: jax.Array
    attempts: jax.Array
    rounds: jax.Array
    bad: jax.Array
    starts: jax.Array  # [MAX_WINDOWS] log-sigma where each accepted window began (u_end past the last)


def sample_collocation(denoiser, x_T, sigmas, *, key=None, **options):
    """Chebyshev collocation with fixed-point rounds per window (Lee-Song-Vempala 2018; Gatmiry-Chen-Salim 2026) on
    the PF-ODE in log-sigma from sigma_max to sigma_min, then the final denoise to sigma 0. Options:
    CollocationOptions."""
    opts = CollocationOptions(**options)
    check_sigmas(sigmas)
    n = opts.colloc_nodes
    tol = opts.tolerance()
    round_tol = opts.round_tolerance()
    iters = opts.max_rounds()
    adaptive = opts.adaptive()
    dtype = x_T.dtype
    sig = jnp.asarray(sigmas, dtype)
    s_max, s_min = sigma_range(sig)
    u_start, u_end = jnp.log(s_max), jnp.log(s_min)
    span = u_end - u_start  # negative: integrating down in sigma
    if adaptive:
        h0 = jnp.maximum(-min(opts.window_length(), H_MAX), span)
        windows = None
    else:
        windows = jnp.asarray(opts.colloc_windows, jnp.int32)
        h0 = span / windows
    taylor = end_derivatives(n, min(WARM_ORDER, n - 1))
    nodes = chebyshev_table(n).nodes
    ei_table = exponential_table(n)
    # a window's share of each half of the tolerance is its share of the log-sigma range
    share = 0.5 * tol / jnp.abs(span)

    def guess_states(state, x, h):
        cold = jnp.broadcast_to(x, (n,) + x.shape)
        if not opts.colloc_warm:
            return cold
        dhat = warm_guess(state.dprev, h / state.h_prev, nodes, taylor)
        mat, _ = kernel_weights(ei_table, h, dtype)
        warm = broadcast_nodes(jnp.exp(h * jnp.asarray(nodes, dtype)), cold) * x[None] - combine(mat, dhat)
        return jnp.where(state.accepted > 0, warm, cold)

    def cond(state):
        if adaptive:
            going = state.u - u_end > 1e-9 * jnp.abs(span)
        else:
            going = state.accepted < windows
        return going & (state.attempts < MAX_WINDOWS)

    def body(state):
        h = jnp.maximum(state.h, u_end - state.u) if adaptive else state.h
        wtol = None if round_tol is None else ROUND_SHARE * share * jnp.abs(h)
        win = solve_window(denoiser, state.x, state.u, h, guess_states(state, state.x, h), opts.colloc_form,
                           key=key, tag=state.attempts, iters=iters, tol=wtol,
                           tail_limit=EARLY_FACTOR * share if adaptive and wtol is not None else None)
        if adaptive:
            est = spectral_tail(win.fvals, win.end)
            ok = est <= jnp.maximum(share, NOISE_FLOOR * jnp.finfo(dtype).eps)
            factor = jnp.clip(SAFETY * (share / jnp.maximum(est, jnp.finfo(dtype).tiny)) ** (1.0 / max(n - 1, 1)),
                              *GROWTH)
            factor = jnp.where(jnp.isfinite(factor), factor, GROWTH[0])
            h_next = jnp.maximum(h * jnp.where(ok, factor, jnp.minimum(factor, REJECT_SHRINK)), -H_MAX)
        else:
            ok = jnp.asarray(True)
            h_next = h
        x = jnp.where(ok, win.end, state.x)
        return Loop(x, jnp.where(ok, state.u + h, state.u), h_next, jnp.where(ok, win.dvals, state.dprev),
                    jnp.where(ok, h, state.h_prev), state.accepted + ok.astype(jnp.int32), state.attempts + 1,
                    state.rounds + win.rounds, first_nonfinite(state.bad, state.attempts, win.end),
                    state.starts.at[state.accepted].set(jnp.where(ok, state.u, state.starts[state.accepted])))

    zero = jnp.asarray(0, jnp.int32)
    init = Loop(x_T, u_start, h0, jnp.zeros((n,) + x_T.shape, dtype), h0, zero, zero, zero,
                jnp.asarray(-1, jnp.int32), jnp.full((MAX_WINDOWS,), u_end, dtype))
    out = jax.lax.while_loop(cond, body, init)
    x = out.x
    to_zero = sig[-1] == 0
    x = jax.lax.cond(to_zero, lambda y: call_denoiser(denoiser, y, s_min, key, out.attempts * n), lambda y: y, x)
    bad = jnp.where((out.bad < 0) & ~jnp.all(jnp.isfinite(x)), out.attempts, out.bad)
    final = to_zero.astype(jnp.int32)
    finished = (out.u - u_end <= 1e-9 * jnp.abs(span)) if adaptive else out.accepted == windows
    aux = {"nonfinite_step": bad, "windows": out.accepted, "rejected": out.attempts - out.accepted,
           "sigma_starts": jnp.exp(out.starts), "finished": finished, "sigma_reached": jnp.exp(out.u)}
    return SampleResult(x, out.rounds * n + final, out.rounds + final, aux)

"""Block-parallel Picard sampling in sigma-space: PIADM (Chen et al. 2024) and ParaDiGMS (Shih et al. 2023).

The trajectory x_0..x_K of the sequential DDPM (sde) or DDIM/Euler (ode) sampler solves x_{j+1} = r_j x_j + c_j with
c_j = (1 - r_j) D(x_j, s_j) + n_j z_j. A round freezes D at the current guesses of a window of W points (one batched
call), then recomputes every state of the window from its start with a parallel prefix over the affine maps.
The noise z_j is the sequential sampler's noise for step j (a function of the sample key and j), so the fixed point
is exactly the sequential result from the same seed.

- fixed mode (picard_tol None, the paper's rule): blocks of W steps, picard_iters rounds each;
- tolerance mode (picard_tol): ParaDiGMS sliding window, which advances to the first point whose change failed
  ||x_new - x_old||^2 / (dim sigma^2) <= tol^2 (every round advances at least one step).
- points entering the window start from the sequential steps with the denoiser frozen at its latest value and the
  true noise (no denoiser call), not from a copy of the last state: in sde mode this saves about a fifth of the
  rounds (benchmarks/bench_solvers.py).
- picard_anderson M > 0: triangular Anderson acceleration of the round (after ParaTAA, Tang et al. 2024). With
  the Picard map F and residual R = F(X) - X, the next iterate is F(X) - (dX + dR) gamma_j at point j, where
  gamma_j fits R over the points <= j only (so a point never looks at later, less converged points, and converged
  prefixes stay exact) from the last M differences dX, dR, each point weighted by 1 / sigma^2. The tolerance test
  still reads the plain Picard change R, and the window's new start is F's value there (exact, as without it).
- picard_newton: quasi-Newton rounds. Plain Picard freezes D, so a change of x_j reaches x_{j+1} only through r_j
  and D's response waits a round; near the data D(x) moves almost one for one with x (its Jacobian is
  Cov[x0 | x] / sigma^2), which is what makes long Picard chains slow. Each point linearises D around its guess
  with a per-sample scalar slope, the secant <dD, dx> / |dx|^2 between its last two rounds (no extra call), and
  the prefix runs over the maps x' = (r + (1 - r) lam) x + (1 - r)(D - lam x_guess) + n z. Where D is linear with
  Jacobian lam I this is Newton's method and a window is exact after two rounds; the fixed point is unchanged,
  since the correction vanishes at it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from diffcli.errors import UsageError
from diffcli.solvers.base import SampleResult, per_sample_normal
from diffcli.solvers.steps import call_points, check_sigmas, ddim_coefficients, positive_int

MODES = {"sde": 1.0, "ode": 0.0}  # picard_mode -> DDIM eta of the underlying sequential step
DEFAULT_WINDOW = 32


def paper_iters(dim: int, delta: float = 1e-2) -> int:
    """Rounds per block K = ceil(log(d / delta^2)) (Chen et al. 2024, Thm. 3.3's O(log(d/delta^2)))."""
    return max(1, math.ceil(math.log(dim / delta**2)))


def affine_prefix(x0, r, c):
    """States x_1..x_W of x_{m+1} = r_m x_m + c_m from x0, by an associative scan (parallel prefix) over the maps."""

    def compose(first, then):
        (ra, ca), (rb, cb) = first, then
        return ra * rb, rb * ca + cb

    a, b = jax.lax.associative_scan(compose, (r, c))
    return a * x0[None] + b


def window_noise(key, steps, x0, eta):
    """z_j [W, B, ...] for the steps of a window: the very noise the sequential sampler draws at step j."""
    if eta == 0:
        return jnp.zeros((steps.shape[0],) + x0.shape, x0.dtype)
    if key is None:
        raise UsageError("picard in sde mode needs per-sample keys (key=...).")
    return jax.vmap(lambda j: per_sample_normal(key, j, x0.shape[1:], x0.dtype))(steps)


def step_maps(start, count: int, sig, x0, *, key, eta):
    """(r [count, 1, ...], n z [count, B, ...], step ids) of the `count` steps from `start`, the affine maps
    x' = r x + (1 - r) D + n z with the sequential sampler's noise; steps past the end of the grid are the identity."""
    k = sig.shape[0] - 1
    steps = start + jnp.arange(count, dtype=jnp.int32)
    valid = steps < k
    j = jnp.minimum(steps, k - 1)
    r, n = ddim_coefficients(sig[j], sig[j + 1], eta)
    bshape = (count,) + (1,) * x0.ndim
    r = jnp.where(valid, r, 1.0).reshape(bshape)
    n = jnp.where(valid, n, 0.0).reshape(bshape)
    return r, n * window_noise(key, j, x0, eta), j


def picard_round(denoiser, xs, start, sig, *, key, eta, history=None):
    """One round on the window states xs [W+1, B, ...] (xs[0] = state at step `start`) -> (new states [W+1, ...],
    the denoiser values D [W, B, ...] at xs[:-1]). A window may overhang the last step.

    With history = (x_prev, d_prev, known) from the last round at the same steps, D is linearised around xs with a
    per-sample secant slope (quasi-Newton): the prefix then carries how a change of x_j moves D(x_j) too."""
    w = xs.shape[0] - 1
    r, noise, j = step_maps(start, w, sig, xs[0], key=key, eta=eta)
    d = call_points(denoiser, xs[:-1], sig[j], key, j)
    lam = 0.0 if history is None else secant_slopes(xs[:-1], d, *history)  # 0: plain Picard (D frozen)
    a, c = r + (1.0 - r) * lam, (1.0 - r) * (d - lam * xs[:-1]) + noise
    return jnp.concatenate([xs[:1], affine_prefix(xs[0], a, c)]), d


def secant_slopes(x, d, x_prev, d_prev, known, cap: float = 4.0):
    """Per point and sample, the slope <dD, dx> / |dx|^2 of D along its last move [W, B, 1...]; points with no
    move yet take the slope of the nearest earlier point that has one (D's Jacobian varies slowly in sigma).
    Slopes are kept in [0, cap]: a posterior mean's Jacobian is positive semi-definite, and the cap stops one noisy
    secant (a denoiser that is not smooth) from making the prefix's product of slopes blow up."""
    dx = (x - x_prev).reshape(x.shape[0], x.shape[1], -1)
    dd = (d - d_prev).reshape(dx.shape)
    den = jnp.sum(dx * dx, axis=-1)
    ok = known[:, None] & (den > 0)
    lam = jnp.clip(jnp.sum(dd * dx, axis=-1) / jnp.where(ok, den, 1.0), 0.0, cap)
    pos = jnp.arange(x.shape[0])[:, None]
    last = jax.lax.cummax(jnp.where(ok, pos, -1), axis=0)
    lam = jnp.where(last >= 0, jnp.take_along_axis(lam, jnp.maximum(last, 0), axis=0), 0.0)
    return lam.reshape(lam.shape + (1,) * (x.ndim - 2))


def extrapolate(last, d_last, start, count: int, sig, *, key, eta):
    """First guesses for the `count` states after `last` (the state at step `start`): the sequential steps with the
    denoiser frozen at its latest value and the true noise, so points entering the window start near the answer
    (a constant copy of `last` would miss all of the noise still to be added in sde mode). Costs no denoiser call."""
    r, noise, _ = step_maps(start, count, sig, last, key=key, eta=eta)
    return affine_prefix(last, r, (1.0 - r) * d_last[None] + noise)


def change_ratio(new, old, scale):
    """max over the batch of ||new - old||^2 / (dim scale^2), per window point [W+1]."""
    diff = (new - old).reshape(new.shape[0], new.shape[1], -1)
    dim = diff.shape[-1]
    return jnp.max(jnp.sum(diff * diff, axis=-1), axis=1) / (dim * scale * scale)


def first_bad_point(xs, start, bad):
    """Keep the first step whose resulting state is NaN/inf (state i of the window comes from step start + i - 1)."""
    finite = jnp.all(jnp.isfinite(xs.reshape(xs.shape[0], -1)), axis=1)
    i = jnp.argmin(finite)
    return jnp.where((bad < 0) & ~finite[i], start + i - 1, bad).astype(jnp.int32)


def anderson_update(f, hist_dx, hist_dr, r, weight, reg: float = 1e-4):
    """Triangular Anderson step: F - (dX + dR) gamma, gamma_j = argmin sum_{p<=j} w_p ||R_p - dR_p gamma||^2.

    f, r [W+1, B, ...]; hist_dx, hist_dr [M, W+1, B, ...] (zeros where a point has no history); weight [W+1].
    """
    m, p, b = hist_dr.shape[:3]
    dr = hist_dr.reshape(m, p, b, -1)
    wsh = weight[:, None, None, None]
    gram = jnp.cumsum(wsh * jnp.einsum("ipbd,jpbd->pbij", dr, dr), axis=0)  # [W+1, B, M, M]
    rhs = jnp.cumsum(weight[:, None, None] * jnp.einsum("ipbd,pbd->pbi", dr, r.reshape(p, b, -1)), axis=0)
    scale = jnp.trace(gram, axis1=-2, axis2=-1)[..., None, None] / m
    # Tikhonov relative to the Gram's size keeps gamma bounded when differences are (nearly) collinear; where a
    # prefix has no history at all the system is 0 = 0 and gamma is 0 (plain Picard)
    eye = jnp.eye(m, dtype=gram.dtype)
    gamma = jnp.linalg.solve(gram + (reg * scale + jnp.finfo(gram.dtype).tiny) * eye, rhs[..., None])[..., 0]
    gamma = jnp.where(jnp.isfinite(gamma), gamma, 0.0)
    step = jnp.einsum("pbi,ipbd->pbd", gamma, (hist_dx + hist_dr).reshape(m, p, b, -1))
    return f - step.reshape(f.shape)


def window_size(steps, picard_blocks, picard_window) -> int:
    """Points per round: picard_window, or ceil(steps / picard_blocks), or min(steps, 32)."""
    if picard_blocks is not None:
        blocks = positive_int("picard_blocks", picard_blocks)
        w = -(-steps // min(blocks, steps))
        if picard_window is not None and positive_int("picard_window", picard_window) != w:
            raise UsageError(f"--picard-blocks {blocks} means {w} steps per block; drop --picard-window or make it {w}.")
        return w
    if picard_window is not None:
        return min(positive_int("picard_window", picard_window), steps)
    return min(steps, DEFAULT_WINDOW)


def sample_picard(denoiser, x_T, sigmas, *, key, picard_mode: str = "sde", picard_blocks: int | None = None,
                  picard_iters: int | None = None, picard_tol: float | None = None, picard_window: int | None = None,
                  picard_anderson: int | None = None, picard_newton: bool = False):
    """PIADM-SDE/ODE (Chen, Ren, Ying, Rotskoff 2024) fixed rounds per block, or ParaDiGMS (Shih et al. 2023) with a
    tolerance, optionally Anderson-accelerated and/or quasi-Newton; converges to sample_ddpm (sde) / sample_euler
    (ode) from the same keys."""
    check_sigmas(sigmas)
    if picard_mode not in MODES:
        raise UsageError(f"unknown picard mode '{picard_mode}'; choose from: {', '.join(MODES)}.")
    eta = MODES[picard_mode]
    sig = jnp.asarray(sigmas, x_T.dtype)
    k = int(sig.shape[0]) - 1
    w = window_size(k, picard_blocks, picard_window)
    dim = int(np.prod(x_T.shape[1:]))
    memory = 0 if picard_anderson is None else positive_int("picard_anderson", picard_anderson, minimum=0)
    if picard_tol is not None:
        if not float(picard_tol) > 0:
            raise UsageError(f"--picard-tol must be positive (got {picard_tol}).")
        iters = 0
    else:
        # more than w rounds on a block of w steps cannot change it: after m rounds its first m steps are exact
        iters = min(w, positive_int("picard_iters", picard_iters) if picard_iters is not None else paper_iters(dim))
    tol2 = float(picard_tol) ** 2 if picard_tol is not None else 0.0
    floor = jnp.min(jnp.where(sig > 0, sig, jnp.inf))
    idx = jnp.arange(w + 1, dtype=jnp.int32)
    point_shape = (w + 1,) + (1,) * x_T.ndim

    def body(state):
        start, it, xs, rounds, bad, acc, lin = state
        new, d = picard_round(denoiser, xs, start, sig, key=key, eta=eta,
                              history=tuple(h[:-1] for h in lin) if picard_newton else None)
        bad = first_bad_point(new, start, bad)
        scale = jnp.maximum(sig[jnp.minimum(start + idx, k)], floor)
        if picard_tol is None:
            stride = jnp.where(it + 1 >= iters, w, 0)
            it = jnp.where(it + 1 >= iters, 0, it + 1)
        else:
            ok = (change_ratio(new, xs, scale) <= tol2) | (start + idx > k)
            ok = ok.at[0].set(True)
            # the first failing point was computed from converged predecessors: the window restarts there
            stride = jnp.where(jnp.all(ok), w, jnp.maximum(jnp.argmin(ok), 1))
        # shift the window; points past its old end start from a frozen-denoiser extrapolation of its last state
        stride = stride.astype(jnp.int32)
        src = jnp.minimum(idx + stride, w)
        nxt = new
        if memory:
            nxt, acc = accelerate(new, xs, acc, 1.0 / jnp.square(scale), stride, src, idx + stride > w)
        ahead = jax.lax.cond(stride > 0, lambda: extrapolate(nxt[w], d[w - 1], start + w, w, sig, key=key, eta=eta),
                             lambda: jnp.zeros_like(nxt[1:]))
        if picard_newton:  # each point's D and state, for next round's secant at the same step
            lin = (xs[src], jnp.concatenate([d, d[-1:]])[src], idx + stride < w)
        return start + stride, it, jnp.concatenate([nxt, ahead])[idx + stride], rounds + 1, bad, acc, lin

    def accelerate(new, xs, acc, weight, stride, src, entering):
        hist_dx, hist_dr, prev_x, prev_r, fresh = acc
        r = new - xs
        old = ~fresh.reshape(point_shape)  # a point's first round in the window has no difference yet
        hist_dx = jnp.concatenate([jnp.where(old, xs - prev_x, 0.0)[None], hist_dx[:-1]])
        hist_dr = jnp.concatenate([jnp.where(old, r - prev_r, 0.0)[None], hist_dr[:-1]])
        nxt = anderson_update(new, hist_dx, hist_dr, r, weight).at[stride].set(new[jnp.minimum(stride, w)])
        gone = entering.reshape((1,) + point_shape)
        acc = (jnp.where(gone, 0.0, hist_dx[:, src]), jnp.where(gone, 0.0, hist_dr[:, src]), xs[src], r[src],
               entering)
        return nxt, acc

    def cond(state):
        return state[0] < k

    xs0 = jnp.broadcast_to(x_T, (w + 1,) + x_T.shape)
    zero = jnp.asarray(0, jnp.int32)
    hist = jnp.zeros((memory,) + xs0.shape, x_T.dtype)
    acc = (hist, hist, xs0, jnp.zeros_like(xs0), jnp.ones(w + 1, bool)) if memory else ()
    lin = (xs0, jnp.zeros_like(xs0), jnp.zeros(w + 1, bool)) if picard_newton else ()
    state = (zero, zero, xs0, zero, jnp.asarray(-1, jnp.int32), acc, lin)
    _, _, xs, rounds, bad, _, _ = jax.lax.while_loop(cond, body, state)
    return SampleResult(xs[0], rounds * w, rounds, {"nonfinite_step": bad})

"""Block-parallel Picard sampling in sigma-space (PIADM, Chen et al. 2024; ParaDiGMS, Shih et al. 2023).

Each round evaluates the denoiser at a window of points of the sequential DDPM (sde) or Euler (ode) chain in one
batched call and recomputes the window's states by a parallel prefix, so the number of sequential calls falls well
below the number of steps while the result converges to the sequential sample from the same keys. The method, the
tolerance rule (a bound on the final relative distance to that sample) and the accelerations are in docs/picard.md.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from diffcli.errors import UsageError
from diffcli.solvers.base import SampleResult, per_sample_normal
from diffcli.solvers.options import PicardOptions
from diffcli.solvers.paradigms import (
    copy_starts,
    grid_values,
    paradigms_accepted,
    paradigms_round,
    paradigms_stride,
    vp_scale,
)
from diffcli.solvers.steps import call_points, check_sigmas, ddim_coefficients

MODES = {"sde": 1.0, "ode": 0.0}  # picard_mode -> DDIM eta of the underlying sequential step
# --picard-tol eps (window rule): a point is accepted when its change, relative to max(||D||, sigma), is within
# eps / TOL_SAFETY and never more than POINT_TOL_MAX, past which one change can move a sample to another mode
# (docs/picard.md derives both and gives the measurements behind them)
TOL_SAFETY = 3.0
POINT_TOL_MAX = 1e-2


class Anderson(NamedTuple):
    """Triangular Anderson memory of each window point: the last M differences of its state and residual."""

    dx: jax.Array  # [M, W+1, B, ...]
    dr: jax.Array  # [M, W+1, B, ...]
    prev_x: jax.Array  # [W+1, B, ...] last round's states
    prev_r: jax.Array  # [W+1, B, ...] last round's residuals F(X) - X
    fresh: jax.Array  # [W+1] points that entered the window this round (no difference yet)


class Secant(NamedTuple):
    """Each window point's state and denoiser value in its last round, for the quasi-Newton secant slope."""

    x: jax.Array  # [W+1, B, ...]
    d: jax.Array  # [W+1, B, ...]
    known: jax.Array  # [W+1]


class PicardState(NamedTuple):
    """The while-loop state: the window (xs[0] is the state at grid index `start`) and its memories."""

    start: jax.Array  # int32, grid index of xs[0]
    block_round: jax.Array  # int32, rounds spent on the current block (blocks rule)
    xs: jax.Array  # [W+1, B, ...]
    rounds: jax.Array  # int32
    evals: jax.Array  # int32, denoiser evaluations made (rows of the batched calls, per sample)
    points: jax.Array  # int32, real window points refined (ParaDiGMS's count)
    bad: jax.Array  # int32, first step whose state was NaN/inf, or -1
    anderson: Anderson | None
    secant: Secant | None


class Plan(NamedTuple):
    """The static settings of one run, resolved from PicardOptions and the grid."""

    rule: str  # "window" (slide past accepted points), "blocks" (fixed rounds per block) or "paradigms"
    window: int  # W, points refined per round
    iters: int  # blocks rule: rounds per block
    point_tol: float  # window rule: accepted relative change of a point; paradigms: its tolerance
    memory: int  # Anderson memory (0 = off)
    newton: bool
    eta: float  # 1 = DDPM (sde), 0 = Euler (ode)
    steps: int  # K, the grid's steps


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


def bucket_sizes(w: int) -> tuple[int, ...]:
    """The batch sizes (in points) a round may call the denoiser with: W and the powers of two below it."""
    return tuple(sorted({w} | {1 << k for k in range(max(w - 1, 0).bit_length())}))


def call_window(denoiser, xs, start, active, sig, key):
    """(D [W, B, ...] at the window's first `active` points, zeros after them; the evaluations made per sample).

    One batched call of the smallest bucket size that holds the active points, its spare rows repeating the last
    active point: no call is made past the grid's last step, and the spare rows are fewer than the active ones."""
    w = xs.shape[0] - 1
    k = sig.shape[0] - 1
    sizes = bucket_sizes(w)

    def branch(b):
        def run(xs):
            i = jnp.minimum(jnp.arange(b), active - 1)
            j = jnp.minimum(start + i, k - 1)
            d = call_points(denoiser, xs[i], sig[j], key, j)
            return jnp.concatenate([d, jnp.zeros((w - b,) + d.shape[1:], d.dtype)])
        return run

    table = jnp.asarray(sizes, jnp.int32)
    which = jnp.searchsorted(table, active).astype(jnp.int32)  # the smallest size >= active
    if len(sizes) == 1:
        return branch(w)(xs), table[0]
    return jax.lax.switch(which, [branch(b) for b in sizes], xs), table[which]


def picard_round(denoiser, xs, start, sig, *, key, eta, history=None, d=None):
    """One round on the window states xs [W+1, B, ...] (xs[0] = state at step `start`) -> (new states [W+1, ...],
    the denoiser values D [W, B, ...] at xs[:-1], or the given d). Steps past the grid's end are the identity.

    With history = (x_prev, d_prev, known) from the last round at the same steps, D is linearised around xs with a
    per-sample secant slope (quasi-Newton): the prefix then carries how a change of x_j moves D(x_j) too."""
    w = xs.shape[0] - 1
    r, noise, j = step_maps(start, w, sig, xs[0], key=key, eta=eta)
    if d is None:
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


def scaled_change(new, old, d, sig, start):
    """max over the batch of ||new - old|| / max(||D||, sigma) per window point [W+1] (docs/picard.md): the change
    measured against what it can do to the final sample. D is the point's denoiser value this round (the last
    point, which has none, takes its predecessor's); sigma is the point's noise level."""
    w = new.shape[0] - 1
    diff = (new - old).reshape(new.shape[0], new.shape[1], -1)
    size = jnp.sqrt(jnp.sum(jnp.square(d.reshape(w, new.shape[1], -1)), axis=-1))
    size = jnp.concatenate([size, size[-1:]])
    level = sig[jnp.minimum(start + jnp.arange(w + 1), sig.shape[0] - 1)]
    scale = jnp.maximum(jnp.maximum(size, level[:, None]), jnp.finfo(new.dtype).tiny)
    return jnp.max(jnp.sqrt(jnp.sum(diff * diff, axis=-1)) / scale, axis=1)


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


def window_stride(state: PicardState, new, d, plan: Plan, sig):
    """How far the window moves after a round.

    blocks: a whole block after `iters` rounds on it, else 0. window: to the first point whose scaled change
    exceeds plan.point_tol (its predecessors are accepted, so it was computed from accepted states), at least one
    step a round; a whole window when every point passed."""
    w = plan.window
    if plan.rule == "blocks":
        return jnp.where(state.block_round + 1 >= plan.iters, w, 0).astype(jnp.int32)
    idx = jnp.arange(w + 1, dtype=jnp.int32)
    ok = (scaled_change(new, state.xs, d, sig, state.start) <= plan.point_tol) | (state.start + idx > plan.steps)
    ok = ok.at[0].set(True)
    return jnp.where(jnp.all(ok), w, jnp.maximum(jnp.argmin(ok), 1)).astype(jnp.int32)


def anderson_mix(memory: Anderson, new, xs, weight, stride, w: int):
    """(the Anderson-mixed window, the memory shifted by `stride`). The new window start stays the plain value."""
    idx = jnp.arange(w + 1)
    point_shape = (w + 1,) + (1,) * (xs.ndim - 1)
    src, entering = jnp.minimum(idx + stride, w), idx + stride > w
    r = new - xs
    old = ~memory.fresh.reshape(point_shape)  # a point's first round in the window has no difference yet
    dx = jnp.concatenate([jnp.where(old, xs - memory.prev_x, 0.0)[None], memory.dx[:-1]])
    dr = jnp.concatenate([jnp.where(old, r - memory.prev_r, 0.0)[None], memory.dr[:-1]])
    mixed = anderson_update(new, dx, dr, r, weight).at[stride].set(new[jnp.minimum(stride, w)])
    gone = entering.reshape((1,) + point_shape)
    shifted = Anderson(jnp.where(gone, 0.0, dx[:, src]), jnp.where(gone, 0.0, dr[:, src]), xs[src], r[src], entering)
    return mixed, shifted


def paradigms_step(state: PicardState, plan: Plan, sig, key, d, active, evals) -> PicardState:
    """ParaDiGMS's round and window move (diffcli/solvers/paradigms.py), on the same state as diffcli's rules."""
    r, noise, _ = step_maps(state.start, plan.window, sig, state.xs[0], key=key, eta=plan.eta)
    new = paradigms_round(state.xs, d, r, noise, state.start, sig)
    stride = paradigms_stride(paradigms_accepted(new, state.xs, state.start, sig), plan.point_tol, active,
                              plan.window)
    xs = copy_starts(new, state.start, stride, active, sig)
    return state._replace(start=jnp.minimum(state.start + stride, plan.steps).astype(jnp.int32), xs=xs,
                          rounds=state.rounds + 1, evals=state.evals + evals, points=state.points + active,
                          bad=first_bad_point(new, state.start, state.bad))


def picard_step(denoiser, state: PicardState, plan: Plan, sig, key) -> PicardState:
    """One round and the window's advance: refine the window, move it by window_stride, and fill the points that
    enter it with a frozen-denoiser extrapolation of its last state."""
    w = plan.window
    idx = jnp.arange(w + 1, dtype=jnp.int32)
    active = jnp.minimum(w, plan.steps - state.start).astype(jnp.int32)  # the window's points at real steps
    d, evals = call_window(denoiser, state.xs, state.start, active, sig, key)
    if plan.rule == "paradigms":
        return paradigms_step(state, plan, sig, key, d, active, evals)
    history = None if state.secant is None else (state.secant.x[:-1], state.secant.d[:-1], state.secant.known[:-1])
    new, d = picard_round(denoiser, state.xs, state.start, sig, key=key, eta=plan.eta, history=history, d=d)
    bad = first_bad_point(new, state.start, state.bad)
    stride = window_stride(state, new, d, plan, sig)
    src = jnp.minimum(idx + stride, w)
    nxt, anderson = new, state.anderson
    if anderson is not None:
        floor = jnp.min(jnp.where(sig > 0, sig, jnp.inf))
        weight = 1.0 / jnp.square(jnp.maximum(sig[jnp.minimum(state.start + idx, plan.steps)], floor))
        nxt, anderson = anderson_mix(anderson, new, state.xs, weight, stride, w)
    ahead = jax.lax.cond(stride > 0,
                         lambda: extrapolate(nxt[w], d[w - 1], state.start + w, w, sig, key=key, eta=plan.eta),
                         lambda: jnp.zeros_like(nxt[1:]))
    secant = state.secant
    if secant is not None:  # each point's state and D this round, for next round's secant at the same step
        secant = Secant(state.xs[src], jnp.concatenate([d, d[-1:]])[src], idx + stride < w)
    block_round = jnp.where(stride > 0, 0, state.block_round + 1).astype(jnp.int32)
    start = jnp.minimum(state.start + stride, plan.steps).astype(jnp.int32)
    return PicardState(start, block_round, jnp.concatenate([nxt, ahead])[idx + stride], state.rounds + 1,
                       state.evals + evals, state.points + active, bad, anderson, secant)


def initial_state(x_T, plan: Plan, sig) -> PicardState:
    """Every window point starts at x_T (paradigms: at x_T in VP scaling, as ParaDiGMS does); memories start empty."""
    xs = jnp.broadcast_to(x_T, (plan.window + 1,) + x_T.shape)
    if plan.rule == "paradigms":
        s = grid_values(vp_scale(sig), 0, plan.window + 1)
        xs = (s[0] / s).reshape((-1,) + (1,) * x_T.ndim) * xs
    zero = jnp.asarray(0, jnp.int32)
    anderson = secant = None
    if plan.memory:
        hist = jnp.zeros((plan.memory,) + xs.shape, x_T.dtype)
        anderson = Anderson(hist, hist, xs, jnp.zeros_like(xs), jnp.ones(plan.window + 1, bool))
    if plan.newton:
        secant = Secant(xs, jnp.zeros_like(xs), jnp.zeros(plan.window + 1, bool))
    return PicardState(zero, zero, xs, zero, zero, zero, jnp.asarray(-1, jnp.int32), anderson, secant)


def point_tolerance(eps: float) -> float:
    """The window rule's per-point tolerance for --picard-tol eps: eps / TOL_SAFETY, at most POINT_TOL_MAX."""
    return min(eps / TOL_SAFETY, POINT_TOL_MAX)


def make_plan(opts: PicardOptions, steps: int, dim: int) -> Plan:
    """The run's static settings from the options, the grid's step count and the data dimension."""
    rule, w = opts.rule(), opts.window_size(steps)
    iters = 0
    if rule == "blocks":
        # more than w rounds on a block of w steps cannot change it: after m rounds its first m steps are exact
        iters = min(w, opts.picard_iters if opts.picard_iters is not None else paper_iters(dim))
    tol = {"window": point_tolerance(opts.tolerance()), "paradigms": opts.tolerance()}.get(rule, 0.0)
    return Plan(rule, w, iters, tol, opts.picard_anderson or 0, opts.newton(), MODES[opts.picard_mode], steps)


def run_plan(denoiser, x_T, sig, key, plan: Plan) -> PicardState:
    """Rounds until the window's start reaches the grid's end; the final state's xs[0] is the sample. The plan's
    tolerance and rounds per block may be traced values (one compiled program for a sweep of them)."""
    return jax.lax.while_loop(lambda s: s.start < plan.steps, lambda s: picard_step(denoiser, s, plan, sig, key),
                              initial_state(x_T, plan, sig))


def sample_picard(denoiser, x_T, sigmas, *, key, **options):
    """Picard rounds over windows of the sequential chain (PIADM-SDE/ODE, Chen et al. 2024; ParaDiGMS, Shih et al.
    2023), quasi-Newton and optionally Anderson-accelerated; converges to sample_ddpm (sde) / sample_euler (ode) from
    the same keys. Options: PicardOptions."""
    opts = PicardOptions(**options)
    check_sigmas(sigmas)
    sig = jnp.asarray(sigmas, x_T.dtype)
    plan = make_plan(opts, int(sig.shape[0]) - 1, math.prod(x_T.shape[1:]))
    state = run_plan(denoiser, x_T, sig, key, plan)
    return SampleResult(state.xs[0], state.evals, state.rounds, {"nonfinite_step": state.bad, "points": state.points})

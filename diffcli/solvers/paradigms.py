"""The ParaDiGMS round and acceptance test (Shih et al. 2023), in sigma-space, for `--picard-rule paradigms`.

ParaDiGMS keeps its states in variance-preserving (VP) scaling y = x / sqrt(1 + sigma^2). A round freezes every
point's whole step change y_step(y_j) - y_j (the sequential step without its noise), sums those changes and the
steps' noise from the window's start, and accepts point i while ||y_new_i - y_old_i||^2 / (dim var_i) <= tol^2, with
var_i the VP variance of the DDPM noise that step i adds (zero at the last steps, where only an exact zero passes).
Points entering the window start as copies of the window's last state in VP scaling. docs/picard.md compares this
with diffcli's own rule.
"""

from __future__ import annotations

import jax.numpy as jnp

from diffcli.solvers.steps import ddim_coefficients


def vp_scale(sig):
    """s = 1 / sqrt(1 + sigma^2): the VP state of the sigma-space state x is s x."""
    return 1.0 / jnp.sqrt(1.0 + sig * sig)


def noise_variance(sig):
    """var_i [K+1]: the VP variance of the DDPM (eta = 1) noise added by step i, and 0 after the last state. ParaDiGMS
    scales its error test by it in sde and ode mode alike."""
    _, n = ddim_coefficients(sig[:-1], sig[1:], 1.0)
    var = jnp.square(vp_scale(sig[1:]) * n)
    return jnp.concatenate([var, jnp.zeros((1,), sig.dtype)])


def grid_values(values, start, count: int):
    """values[start + i] for i < count, clamped at the grid's end; shaped [count, 1] to broadcast over a point."""
    idx = jnp.minimum(start + jnp.arange(count), values.shape[0] - 1)
    return values[idx]


def paradigms_round(xs, d, r, noise, start, sig):
    """New window states [W+1, B, ...] from the old ones xs (xs[0] at grid index `start`), the denoiser values d and
    the step maps (r, noise) of the W steps: y_new_m = y_0 + sum_{j<m} (y_step_j - y_j) + sum_{j<m} vp noise_j, with
    y_step_j the noiseless sequential step. Steps past the grid's end are the identity (r = 1, no noise)."""
    w = xs.shape[0] - 1
    bshape = (w + 1,) + (1,) * (xs.ndim - 1)
    s = grid_values(vp_scale(sig), start, w + 1).reshape(bshape)
    y = s * xs
    step = s[1:] * (d + r * (xs[:-1] - d))  # the noiseless step's state, VP-scaled at the next grid point
    delta = step - y[:-1] + s[1:] * noise
    y_new = jnp.concatenate([y[:1], y[:1] + jnp.cumsum(delta, axis=0)])
    return y_new / s


def paradigms_accepted(new, old, start, sig):
    """Per window point [W+1], max over the batch of ||y_new - y_old||^2 / (dim var_i): the ratio ParaDiGMS compares
    with tol^2 (infinite where var_i = 0 and the change is not exactly zero)."""
    w = new.shape[0] - 1
    s = grid_values(vp_scale(sig), start, w + 1)
    var = grid_values(noise_variance(sig), start, w + 1)
    diff = (new - old).reshape(new.shape[0], new.shape[1], -1) * s[:, None, None]
    sq = jnp.sum(diff * diff, axis=-1) / diff.shape[-1]
    ratio = jnp.where(sq > 0, sq / jnp.where(var > 0, var, 1.0)[:, None], 0.0)
    ratio = jnp.where((var[:, None] > 0) | (sq == 0), ratio, jnp.inf)
    return jnp.max(ratio, axis=1)


def paradigms_stride(ratio, tol: float, active, w: int):
    """ParaDiGMS's window move: to the first point (1..active) whose ratio exceeds tol^2, which becomes the new start
    (it was computed from accepted states); past all active points when every one passed; at most W."""
    idx = jnp.arange(w + 1)
    fail = (ratio > tol * tol) & (idx >= 1) & (idx <= active)
    first = jnp.where(jnp.any(fail), jnp.argmax(fail), active + 1)
    return jnp.minimum(first, w).astype(jnp.int32)


def copy_starts(new, start, stride, active, sig):
    """The window after a move by `stride`: points still inside the computed part keep their new state, points
    past it are copies, in VP scaling, of the last computed state (grid index start + active)."""
    w = new.shape[0] - 1
    idx = jnp.arange(w + 1)
    src = stride + idx
    s = vp_scale(sig)
    k = sig.shape[0] - 1
    last = new[jnp.minimum(active, w)]
    copy_scale = s[jnp.minimum(start + active, k)] / s[jnp.minimum(start + src, k)]
    bshape = (w + 1,) + (1,) * (new.ndim - 1)
    copies = copy_scale.reshape(bshape) * last[None]
    return jnp.where((src <= active).reshape(bshape), new[jnp.minimum(src, w)], copies)

"""Regression (GREG) estimate of a far stratum's total from i.i.d. draws, with auxiliaries whose totals are known.

Draws are i.i.d., uniform over all n_total rows (a draw outside the stratum counts with value and auxiliaries zero)
or with known probabilities p; the mean of y / p is unbiased for the stratum's total of y (Hansen-Hurwitz). Per
output pixel, y is regressed (weights 1 / p) on the auxiliaries z = (1, x, l, l x) (the normaliser on (1, l)),
centred on the fitting draws and scaled; the estimate is beta^T T_z + mean of (y - beta^T z) / p. Cross-fitted
(beta fitted on the odd draws, applied to the even ones and the other way round, averaged) it is exactly unbiased
for any fitted beta, since the two halves are independent; fitted on all draws it is the classical GREG, unbiased up
to O(1 / draws). Derivation: docs/golddiff.md.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

RIDGE = 1e-6  # relative to the draws' count, on scaled auxiliaries: keeps collinear ones (a constant pixel) solvable


class Draws(NamedTuple):
    """Per draw f and pixel p: in the stratum r [F], the pixel's value x [F, P] and logit l [F, P]; active [F] marks
    the draws that count (the rest is padding); inv_p the inverse draw probabilities of unequal-probability draws."""

    r: jnp.ndarray
    x: jnp.ndarray
    logit: jnp.ndarray
    active: jnp.ndarray
    inv_p: jnp.ndarray | None = None  # [F] 1 / each draw's probability (None: uniform, n_total)


class Totals(NamedTuple):
    """The stratum's known totals: rows n_r (scalar), and per pixel sum x, sum l, sum l x [P]."""

    n_r: jnp.ndarray
    x: jnp.ndarray
    logit: jnp.ndarray
    lx: jnp.ndarray


def _aux(d: Draws, xbar, lbar, with_x: bool) -> list:
    """The auxiliaries as A columns [F, P], centred on (xbar, lbar), zero outside the stratum (kept as separate
    columns: each sum below is one fused pass over [F, P], never an [F, P, A, A] product)."""
    r = jnp.broadcast_to(d.r[:, None].astype(d.logit.dtype), d.logit.shape)
    lc = r * (d.logit - lbar)
    if not with_x:
        return [r, lc]
    xc = d.x - xbar
    return [r, r * xc, lc, lc * xc]


def _aux_totals(t: Totals, xbar, lbar, with_x: bool) -> list:
    """_aux's totals over the stratum, per column [P]."""
    n_r = jnp.broadcast_to(t.n_r, t.logit.shape).astype(t.logit.dtype)
    tl = t.logit - lbar * n_r
    if not with_x:
        return [n_r, tl]
    return [n_r, t.x - xbar * n_r, tl, t.lx - xbar * t.logit - lbar * t.x + lbar * xbar * n_r]


def _fit(d: Draws, y, use, with_x: bool):
    """(xbar, lbar, scales [A][P], beta [A][P]) fitted on the draws `use` [F]."""
    u = use[:, None] * _rel_weights(d, use, y.dtype)
    w = u * d.r[:, None]
    cnt = jnp.maximum(jnp.sum(w), 1.0)
    xbar, lbar = jnp.sum(w * d.x, 0) / cnt, jnp.sum(w * d.logit, 0) / cnt
    n_fit = jnp.maximum(jnp.sum(use), 1).astype(y.dtype)
    cols = _aux(d, xbar, lbar, with_x)
    scales = [jnp.sqrt(jnp.sum(u * jnp.square(c), 0) / n_fit) for c in cols]
    scales = [jnp.where(sc > 0, sc, 1.0) for sc in scales]
    cols = [c / sc for c, sc in zip(cols, scales, strict=True)]
    a = len(cols)
    gram = [[None] * a for _ in range(a)]
    for i in range(a):
        for j in range(i + 1):
            gram[i][j] = gram[j][i] = jnp.sum(u * cols[i] * cols[j], 0) + (RIDGE * n_fit if i == j else 0.0)
    return xbar, lbar, scales, solve_spd(gram, [jnp.sum(u * c * y, 0) for c in cols])


def _inv_p(d: Draws, n_total: int, dtype):
    return jnp.full(d.r.shape, n_total, dtype) if d.inv_p is None else d.inv_p.astype(dtype)


def _rel_weights(d: Draws, use, dtype):
    """[F, 1] regression weights 1 / p of the draws `use`, relative to their mean (ones for uniform draws)."""
    if d.inv_p is None:
        return jnp.ones((d.r.shape[0], 1), dtype)
    w = d.inv_p.astype(dtype)
    return (w / jnp.maximum(jnp.sum(w * use) / jnp.maximum(jnp.sum(use), 1), 1e-30))[:, None]


def _apply(d: Draws, y, t: Totals, fit, use, n_total: int, with_x: bool):
    """The estimate of the stratum's total of y [P] from the draws `use` with a fitted beta: beta^T T_z plus the
    Hansen-Hurwitz estimate (mean of residual / p) of the residuals' total."""
    xbar, lbar, scales, beta = fit
    cols = _aux(d, xbar, lbar, with_x)
    pred = sum(b * c / sc for b, c, sc in zip(beta, cols, scales, strict=True))
    resid = jnp.sum((y - pred) * (use * _inv_p(d, n_total, y.dtype))[:, None], 0)
    draws = jnp.maximum(jnp.sum(use), 1).astype(y.dtype)
    tot = _aux_totals(t, xbar, lbar, with_x)
    return sum(b * tz / sc for b, tz, sc in zip(beta, tot, scales, strict=True)) + resid / draws


def regression_total(d: Draws, y, t: Totals, n_total: int, with_x: bool, crossfit: bool):
    """The far stratum's total of y [F, P] (zero outside it), per pixel [P]; zero without active draws."""
    if crossfit:
        odd = (jnp.arange(d.r.shape[0]) % 2 == 1) & d.active
        even = ~odd & d.active
        est = 0.5 * (_apply(d, y, t, _fit(d, y, odd, with_x), even, n_total, with_x)
                     + _apply(d, y, t, _fit(d, y, even, with_x), odd, n_total, with_x))
    else:
        est = _apply(d, y, t, _fit(d, y, d.active, with_x), d.active, n_total, with_x)
    return jnp.where(jnp.any(d.active), est, 0.0)


def horvitz_thompson(d: Draws, y, n_total: int):
    """The mean of y / p over the active draws: the plain unbiased estimate (no regression)."""
    draws = jnp.maximum(jnp.sum(d.active), 1).astype(y.dtype)
    return jnp.sum(y * (d.active * _inv_p(d, n_total, y.dtype))[:, None], 0) / draws


def solve_spd(a: list, b: list) -> list:
    """x with a x = b for many small symmetric positive definite systems, given as A x A nested lists of [P] arrays
    (b: A of them): an unrolled Cholesky in elementwise operations (LAPACK per 4 x 4 system costs far more)."""
    n = len(b)
    low = [[None] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            acc = a[i][j] - sum(low[i][k] * low[j][k] for k in range(j))
            low[i][j] = jnp.sqrt(jnp.maximum(acc, 1e-30)) if i == j else acc / low[j][j]
    y = []
    for i in range(n):
        y.append((b[i] - sum(low[i][k] * y[k] for k in range(i))) / low[i][i])
    x = [None] * n
    for i in reversed(range(n)):
        x[i] = (y[i] - sum(low[k][i] * x[k] for k in range(i + 1, n))) / low[i][i]
    return x

"""The stratified golden estimator: the near stratum (the nearest rows, by a complete proxy screen and exact
distances) summed exactly, and the far stratum (every other row) estimated from uniform draws with a regression
correction whose auxiliaries' totals follow from the index moments (moments.py, regression.py).

Per output pixel m, with logits l_nm (masked for pca-local) and a reference c_m:
  Z_m = sum_near exp(l_nm - c_m) + Zhat_far,m     Y_m = sum_near exp(l_nm - c_m) x_nm + Yhat_far,m
and the posterior mean Y_m / Z_m. With no far draws (k_t >= N) the near stratum is every row and the estimate is the
base's exact posterior mean. Derivation: docs/golddiff.md.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from diffcli.denoisers import softmax
from diffcli.denoisers.golden.moments import index_totals
from diffcli.denoisers.golden.plan import GoldenPlan, GoldenRows
from diffcli.denoisers.golden.regression import Draws, Totals, horvitz_thompson, regression_total
from diffcli.denoisers.golden.screen import proxy_distances
from diffcli.denoisers.golden.select import select
from diffcli.denoisers.pca_local import masked_distances, rows_per_chunk
from diffcli.denoisers.rows import split_chunks, to_float

PROPOSAL_UNIFORM = 0.2  # the uniform law's share in the far draws' proposal (a defensive mixture)
EMPIRICAL_ROW_FLOATS = 4  # float32 [D] arrays per row of an empirical chunk (values, logits, weights, products)


class StratifiedSubset(NamedTuple):
    """One query's strata: near rows [K, D] and kept [K]; far draws' rows [F, D], active [F], outside the near
    stratum [F] and inverse draw probabilities [F]."""

    near: jax.Array
    keep: jax.Array
    far: jax.Array
    active: jax.Array
    outside: jax.Array
    inv_p: jax.Array


def far_draws(plan: GoldenPlan, key, sigma):
    """(global row ids [F], active [F]): i.i.d. uniform draws over the index, the first f_t of them active."""
    ids = jax.random.randint(jax.random.fold_in(key, 1), (plan.far_slots,), 0, plan.n)
    return ids, jnp.arange(plan.far_slots) < plan.far_count(sigma)


def proposal_log_p(plan: GoldenPlan, rows: GoldenRows, x, sigma, near_ids):
    """log draw probabilities [N] over the far stratum (-inf on the near one): a mixture of the proxy's softmax
    weights (distances scaled by proxy_scale2, a lower bound on the full ones) and, with weight PROPOSAL_UNIFORM,
    the uniform law, so that no far row has a tiny probability."""
    dp = proxy_distances(rows.proxy, rows.half_psq, plan.proxy_map(x[None, :])[0])
    n = dp.shape[0]
    near = jnp.zeros(n, bool).at[jnp.where(near_ids >= 0, near_ids, n)].set(True, mode="drop")
    g = jnp.where(near, -jnp.inf, -plan.proxy_scale2 * dp / (2.0 * jnp.square(sigma)))
    log_is = g - jax.nn.logsumexp(g)
    n_far = jnp.maximum(n - jnp.sum(near), 1).astype(jnp.float32)
    mixed = jnp.logaddexp(jnp.log1p(-PROPOSAL_UNIFORM) + log_is, jnp.log(PROPOSAL_UNIFORM) - jnp.log(n_far))
    return jnp.where(near, -jnp.inf, mixed)


def stratified_select(plan: GoldenPlan, rows: GoldenRows, x, sigma, key):
    """One query's strata over all rows (the near stratum is golden's selection from a complete screen)."""
    (near, _, keep), diag = select(plan, rows, x, sigma, key)
    diag["far"] = plan.far_count(sigma)
    if plan.far_design == "uniform":
        ids, active = far_draws(plan, key, sigma)
        outside = ~jnp.any(ids[:, None] == diag["ids"][None, :], axis=1)
        inv_p = jnp.full(ids.shape, plan.n, jnp.float32)
        return StratifiedSubset(near, keep, to_float(rows.data[ids]), active, outside, inv_p), diag
    log_p = proposal_log_p(plan, rows, x, sigma, diag["ids"])
    ids = jax.random.categorical(jax.random.fold_in(key, 1), log_p, shape=(plan.far_slots,))
    active = jnp.arange(plan.far_slots) < diag["far"]
    n_far = plan.n - jnp.sum(keep)
    return StratifiedSubset(near, keep, to_float(rows.data[ids]), active & (n_far > 0), jnp.ones(ids.shape, bool),
                            jnp.exp(-log_p[ids])), diag


class NearSums(NamedTuple):
    """The near stratum's softmax partials, its sums of x, l and l x per pixel, and its row count."""

    p: softmax.Partials
    x: jax.Array
    logit: jax.Array
    lx: jax.Array
    count: jax.Array


def near_sums(distances, rows, keep, inv2var, chunk: int, axis: str | None = None) -> NearSums:
    """NearSums over centred rows [K, D] (kept [K]); distances(rows [C, D]) -> per-pixel squared distances [C, D].
    `axis`: inside shard_map, the mesh axis whose devices each hold part of the near stratum (merged exactly)."""
    rows, keep = split_chunks(rows, keep, chunk)
    dim = rows.shape[2]

    def update(acc, c, ok):
        logit = -distances(c) * inv2var
        okc = ok[:, None]
        lz = jnp.where(okc, logit, 0.0)
        return NearSums(softmax.fold_each(acc.p, jnp.where(okc, logit, -jnp.inf), c, axis=0),
                        acc.x + jnp.sum(jnp.where(okc, c, 0.0), 0), acc.logit + jnp.sum(lz, 0),
                        acc.lx + jnp.sum(lz * c, 0), acc.count + jnp.sum(ok))

    def body(acc, chunk_rows):
        c, ok = chunk_rows
        return jax.lax.cond(jnp.any(ok), lambda: update(acc, c, ok), lambda: acc), None

    zero = jnp.zeros((dim,), jnp.float32)
    init = NearSums(softmax.empty((dim,)), zero, zero, zero, jnp.int32(0))
    if axis is not None:
        init = jax.tree.map(lambda a: jax.lax.pcast(a, (axis,), to="varying"), init)
    acc, _ = jax.lax.scan(body, init, (rows, keep))
    if axis is None:
        return acc
    return NearSums(softmax.merge_across(acc.p, axis), *(jax.lax.psum(a, axis) for a in acc[1:]))


def combine(near: NearSums, far_logit, far_rows, sub: StratifiedSubset, totals, plan: GoldenPlan,
            skip_empty: bool = True):
    """The posterior mean [D] (centred) from the near sums, the far draws' logits and rows [F, D] and the index
    totals (sum x, sum l, sum l x) per pixel."""
    n = plan.n
    in_far = sub.active & sub.outside
    ref = jnp.maximum(near.p.m, jnp.max(jnp.where(in_far[:, None], far_logit, -jnp.inf), 0, initial=-jnp.inf))
    ref = jnp.where(jnp.isfinite(ref), ref, 0.0)
    w = jnp.where(in_far[:, None], jnp.exp(jnp.minimum(far_logit - ref, 0.0)), 0.0)
    n_near = near.count.astype(jnp.float32)
    tx, tl, tlx = totals
    far_totals = Totals(n - n_near, tx - near.x, tl - near.logit, tlx - near.lx)
    draws = Draws(in_far, far_rows, jnp.where(in_far[:, None], far_logit, 0.0), sub.active, sub.inv_p)
    def far():
        if plan.far_regression:
            return (jnp.maximum(regression_total(draws, w, far_totals, n, False, plan.crossfit), 0.0),
                    regression_total(draws, w * far_rows, far_totals, n, True, plan.crossfit))
        return horvitz_thompson(draws, w, n), horvitz_thompson(draws, w * far_rows, n)

    if skip_empty:  # no far draws (low noise): outside vmap the cond skips the regression's work
        z_far, y_far = jax.lax.cond(jnp.any(in_far), far, lambda: (jnp.zeros_like(ref), jnp.zeros_like(ref)))
    else:  # inside shard_map (the branches' device variance would differ); the regression gives zero itself
        z_far, y_far = far()
    scale = jnp.exp(near.p.m - ref)
    return (near.p.t * scale + y_far) / (near.p.s * scale + z_far)


def stratified_mean(plan: GoldenPlan, x, sigma, sub: StratifiedSubset, axis: str | None = None):
    """The base's posterior mean [D] of one query x [D] by the stratified estimator. `axis`: inside shard_map, the
    mesh axis whose devices each hold part of the near stratum (every device holds all the far draws)."""
    mom = plan.moments
    inv2var = 0.5 / jnp.square(sigma)
    xc = x - mom.mean
    near_rows, far_rows = sub.near - mom.mean, sub.far - mom.mean
    dim = x.shape[0]

    def finish(distances, totals, chunk):
        near = near_sums(distances, near_rows, sub.keep, inv2var, chunk, axis)
        far_logit = -distances(far_rows) * inv2var
        out = combine(near, far_logit, far_rows, sub, totals, plan, skip_empty=axis is None)
        return jnp.clip(out, mom.lo, mom.hi) + mom.mean

    if plan.masks is None:
        def full(c):
            return jnp.broadcast_to(jnp.sum(jnp.square(c - xc[None, :]), 1)[:, None], c.shape)

        chunk = rows_per_chunk(dim, EMPIRICAL_ROW_FLOATS, 1, plan.k_max)
        return finish(full, index_totals(mom, xc, inv2var), chunk)

    def branch(cls: int, band):
        mask = plan.masks.operand(band, cls)
        totals = index_totals(mom, xc, inv2var, mask, cls, band, plan.masks.band_slot[band])
        return finish(lambda c: masked_distances(xc, c, mask), totals, plan.subset_chunk(dim, cls))

    return plan.masks.per_query(sigma, branch)

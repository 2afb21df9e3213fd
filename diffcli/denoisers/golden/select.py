"""Golden stage 2, the fine selection: exact distances of the screened candidates, the k_t nearest kept."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffcli.denoisers.golden.plan import GoldenPlan, GoldenRows
from diffcli.denoisers.golden.screen import screen
from diffcli.denoisers.rows import to_float
from diffcli.denoisers.subset import tail_bounds


def exact_distances(rows, x, ok):
    """||x - rows_i||^2 of candidate rows [K, D] at full resolution, +inf where not ok [K]."""
    return jnp.where(ok, jnp.sum(jnp.square(rows - x[None, :]), axis=1), jnp.inf)


def select(plan: GoldenPlan, rows: GoldenRows, x, sigma, key):
    """Golden subset of one query x [D] over all rows: ((rows [K], squared distance minus the nearest's [K],
    kept [K]) with K = k_max, ascending, the first k_t kept; diagnostics: k, pool size, certified bound, the
    candidates-only bound and the kept ids)."""
    kk = plan.k_max
    m_t, k_t, p_keep = plan.sizes(sigma)
    cand, dprox, floor_rest = screen(plan, rows, plan.proxy_map(x[None, :])[0], p_keep, key)
    if dprox.shape[0] > kk:  # the (K+1)-th screened distance bounds everything the screen left out
        floor_rest = jnp.minimum(floor_rest, dprox[kk])
    cand, dprox = cand[:kk], dprox[:kk]
    cand_rows = to_float(rows.data[cand])
    neg, order = jax.lax.top_k(-exact_distances(cand_rows, x, jnp.isfinite(dprox)), kk)
    d_sorted, ids = -neg, cand[order]
    k_t, bounds = plan.subset_size(d_sorted, plan.floor(floor_rest, p_keep), sigma, k_t)
    keep = jnp.arange(kk) < k_t
    retrieved = tail_bounds(d_sorted, jnp.float32(jnp.inf), plan.n, sigma)  # the spec's formula, candidates only
    diag = {"k": k_t, "pool": m_t if plan.tol is None else jnp.int32(plan.n), "bound": bounds[k_t - 1],
            "bound_retrieved": retrieved[k_t - 1], "ids": jnp.where(keep, ids, -1)}
    return (cand_rows[order], d_sorted - d_sorted[0], keep), diag

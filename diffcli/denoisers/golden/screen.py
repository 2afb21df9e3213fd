"""Golden stage 1, the screen: a uniform random pool (expected size m_t) ranked by proxy distance to k_max + 1."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffcli.denoisers.golden.plan import GoldenPlan, GoldenRows
from diffcli.index.coarse import piece_distances
from diffcli.keys import id_uniforms


def proxy_distances(proxy_rows, half_psq, q):
    """||q - P(x_n)||^2 of rows [M, d] with half squared norms [M] (+inf rows stay +inf)."""
    return jnp.maximum(2.0 * (half_psq - proxy_rows @ q) + q @ q, 0.0)


def screen(plan: GoldenPlan, rows: GoldenRows, q, p_keep, key, offset=0):
    """Pool and proxy screen of one query's proxy q [d] over `rows`, whose global ids start at `offset`.

    Returns the nearest min(k_max + 1, M) of the M screened rows as (positions, ascending proxy distances, +inf for
    rows not in the pool) and a lower bound on the proxy distance of the members of unprobed coarse pieces (+inf
    without the coarse stage). A row's pool draw depends on (key, global id) only, so any split of the rows over
    devices draws the same pool.
    """
    count = rows.proxy.shape[0]
    if plan.coarse is None:
        pos = jnp.arange(count)
        inpool = id_uniforms(key, offset + pos) < p_keep
        dp = proxy_distances(rows.proxy, rows.half_psq, q)
        floor_rest = jnp.float32(jnp.inf)
    else:
        probed, floor_rest = plan.coarse.probe(q)
        k_pool, k_off = jax.random.split(key)
        members = rows.lists[probed].reshape(-1)
        extra, extra_ok = plan.coarse.extras(k_off, plan.k_max, probed)
        extra = extra - offset
        extra_ok = extra_ok & (extra >= 0) & (extra < count)  # the high-noise extras among these rows only
        inpool = jnp.concatenate([(members >= 0) & (id_uniforms(k_pool, offset + members) < p_keep), extra_ok])
        pos = jnp.clip(jnp.concatenate([members, extra]), 0, count - 1)
        extra_pos = pos[members.shape[0]:]
        dp = jnp.concatenate([piece_distances(rows.piece_proxy, rows.piece_half, probed, q),
                              proxy_distances(rows.proxy[extra_pos], rows.half_psq[extra_pos], q)])
    dp = jnp.where(inpool, dp, jnp.inf)
    neg, best = jax.lax.top_k(-dp, min(plan.k_max + 1, dp.shape[0]))
    return pos[best], -neg, floor_rest

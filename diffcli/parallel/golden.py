"""GoldDiff with the index rows sharded along N over a device mesh: local stages, then global merges of short lists.

Per query, each stage of diffcli/denoisers/golden runs on every device's own rows (the same plan, the same
`screen`), and only short lists cross devices:
1. screen: each device keeps its best k_max + 1 pool members (the pool draws are keyed by global id, so the pool is
   the one-device pool); an all-gather and a global top-k give the candidates and the screen's floor;
2. select: each device computes exact distances of its candidates; a second all-gather and top-k give the k_max
   nearest, from which k_t (schedule or certified tolerance) follows;
3. base: each device folds its kept rows into softmax partials (one per pixel for pca-local); pmax / psum merge
   them exactly, as the sharded empirical denoiser does.
With the clustered coarse stage every device holds its own members of every list piece; the probed pieces come from
the replicated centroids, so all devices probe the same pieces. The result equals the one-device golden up to float
rounding (ties between exactly equal distances aside).
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from diffcli.denoisers.base import AbstractDenoiser, exact_matmuls
from diffcli.denoisers.golden import GoldenPlan, GoldenRows, plan_and_rows
from diffcli.denoisers.golden.posterior import subset_mean
from diffcli.denoisers.golden.screen import screen
from diffcli.denoisers.golden.select import exact_distances
from diffcli.denoisers.golden.stratified import StratifiedSubset, far_draws, stratified_mean
from diffcli.denoisers.rows import pad_to, to_float
from diffcli.index.coarse import piece_blocks
from diffcli.parallel.denoiser import put_rows
from diffcli.parallel.mesh import AXIS, row_mesh
from diffcli.parallel.search import global_top_k


class ShardedGoldenDenoiser(AbstractDenoiser):
    """GoldDiff over an `empirical` or `pca-local` base with the index sharded over a 1-D mesh; see the module doc."""

    plan: GoldenPlan  # replicated
    rows: GoldenRows  # every array sharded along N: each device holds the same number of rows (+inf padding)
    mesh: Mesh = eqx.field(static=True)

    @exact_matmuls
    def __call__(self, x, sigma, *, key=None):
        flat, s, keys = self.plan.queries(x, sigma, key)

        stratified = self.plan.estimator == "stratified"
        chosen = self.select_stratified if stratified else self.select
        mean = stratified_mean if stratified else subset_mean

        def per_device(flat, s, keys, shard):
            x0, _ = self.plan.map_queries(lambda *a: chosen(shard, *a)[:2], flat, s, keys,
                                          finish=lambda *a: mean(self.plan, *a, axis=AXIS))
            return x0

        shard_spec = jax.tree.map(lambda _: P(AXIS), self.rows)
        run = jax.shard_map(per_device, mesh=self.mesh, in_specs=(P(), P(), P(), shard_spec), out_specs=P())
        return run(flat, s, keys, self.rows).reshape(x.shape)

    def select(self, shard: GoldenRows, x, sigma, key):
        """One query's golden subset among this device's rows: ((rows, distance minus the nearest's, kept), None);
        every device holds its own part of the same global subset."""
        plan, kk, rpp = self.plan, self.plan.k_max, shard.data.shape[0]
        offset = jax.lax.axis_index(AXIS) * rpp
        _, k_t, p_keep = plan.sizes(sigma)
        pos, dp, floor_rest = screen(plan, shard, plan.proxy_map(x[None, :])[0], p_keep, key, offset)
        gid = offset + pos
        # 1. the screen's global top-(k_max + 1): candidates, and the floor for everything left out
        take_all = min(kk + 1, self.mesh.size * dp.shape[0])
        neg_all, cand = global_top_k(-dp, gid, take_all)
        if take_all > kk:
            floor_rest = jnp.minimum(floor_rest, -neg_all[kk])
        in_cand = local_members(cand[:kk], jnp.isfinite(neg_all[:kk]), offset, rpp)[pos] & jnp.isfinite(dp)
        # 2. exact distances of this device's candidates; the global k_max nearest fix k_t
        rows = to_float(shard.data[pos])
        d = exact_distances(rows, x, in_cand)
        neg_d, nearest = global_top_k(-d, gid, kk)
        d_sorted = -neg_d
        k_t, _ = plan.subset_size(d_sorted, plan.floor(floor_rest, p_keep), sigma, k_t)
        kept = jnp.arange(kk) < k_t
        keep = local_members(nearest, kept, offset, rpp)[pos] & in_cand
        return (rows, d - d_sorted[0], keep), None, jnp.where(kept, nearest, -1)

    def select_stratified(self, shard: GoldenRows, x, sigma, key):
        """One query's strata: this device's part of the near stratum, and every far draw (each device gathers
        the draws among its rows; a sum over devices completes them)."""
        (rows, _, keep), _, near_ids = self.select(shard, x, sigma, key)
        rpp = shard.data.shape[0]
        ids, active = far_draws(self.plan, key, sigma)
        local = ids - jax.lax.axis_index(AXIS) * rpp
        mine = (local >= 0) & (local < rpp)
        far = jax.lax.psum(jnp.where(mine[:, None], to_float(shard.data[jnp.clip(local, 0, rpp - 1)]), 0.0), AXIS)
        outside = ~jnp.any(ids[:, None] == near_ids[None, :], axis=1)
        inv_p = jnp.full(ids.shape, self.plan.n, jnp.float32)
        return StratifiedSubset(rows, keep, far, active, outside, inv_p), None


def local_members(gids, use, offset, rows_per_part: int):
    """[rows_per_part] flags of this device's rows among global ids `gids` [K] (where `use`)."""
    local = gids - offset
    mine = use & (local >= 0) & (local < rows_per_part)
    # an index of rows_per_part is out of range and dropped (a negative one would wrap around)
    slot = jnp.where(mine, local, rows_per_part)
    return jnp.zeros(rows_per_part, bool).at[slot].set(True, mode="drop")


def local_lists(global_ids: np.ndarray, parts: int, rows_per_part: int) -> np.ndarray:
    """Piece member lists [P, L] of global ids (-1 padding) -> [parts * P, L_local] local positions per device."""
    per_part = []
    for j in range(parts):
        lo = j * rows_per_part
        mine = [row[(row >= lo) & (row < lo + rows_per_part)] - lo for row in global_ids]
        per_part.append(mine)
    width = max(1, max(len(m) for mine in per_part for m in mine))
    out = np.full((parts, len(global_ids), width), -1, np.int32)
    for j, mine in enumerate(per_part):
        for p, m in enumerate(mine):
            out[j, p, : len(m)] = m
    return out.reshape(parts * len(global_ids), width)


def shard_golden(plan: GoldenPlan, rows: dict, mesh: Mesh) -> ShardedGoldenDenoiser:
    """Lay out golden's rows (NumPy, from plan_and_rows) over `mesh` and place each device's block on it."""
    n = len(rows["data"])
    rpp = -(-n // mesh.size)
    total = rpp * mesh.size
    proxy = pad_to(rows["proxy"], total)
    pieces = (None, None, None)
    if rows["lists"] is not None:
        lists = local_lists(rows["lists"], mesh.size, rpp)
        # each device's pieces hold its own rows: shift local positions to rows of the padded global array
        first = np.repeat(np.arange(mesh.size) * rpp, len(lists) // mesh.size)[:, None]
        blocks, half = piece_blocks(proxy, np.where(lists >= 0, lists + first, -1))
        pieces = tuple(put_rows(mesh, a) for a in (lists, blocks, half))
    shard = GoldenRows(put_rows(mesh, pad_to(rows["data"], total)), put_rows(mesh, proxy),
                       put_rows(mesh, pad_to(rows["half_psq"], total, fill=np.inf)), *pieces)
    return ShardedGoldenDenoiser(plan, shard, mesh)


def build(index, opts) -> ShardedGoldenDenoiser:
    """Registry factory: golden with the index sharded over every device (any count, one included)."""
    plan, rows = plan_and_rows(index, opts)
    # the proxy proposal needs every row's proxy distance in one place: the sharded far draws are uniform
    plan = dataclasses.replace(plan, far_design="uniform")
    return shard_golden(plan, rows, row_mesh())

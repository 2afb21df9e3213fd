"""GoldDiff with the index rows sharded along N over a device mesh: local screens and top-k, then global merges.

Per query, each stage of diffcli/denoisers/golden.py runs on every device's own rows, and only short lists cross
devices:
1. proxy screen: each device scores its pool members (the same per-id draws as one device, `id_uniforms`) and keeps
   its best k_max + 1; an all-gather and a global top-k give the candidate list and the screen's floor;
2. fine stage: each device computes exact distances for its rows among the candidates; a second all-gather and
   top-k give the k_max nearest, from which k_t (schedule or certified tolerance) follows;
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

from diffcli.denoisers import softmax
from diffcli.denoisers.base import AbstractDenoiser, batch_sigma, exact_matmuls, flatten
from diffcli.denoisers.golden import (
    Coarse,
    golden_parts,
    id_uniforms,
    map_flat,
    piece_blocks,
    piece_distances,
    pool_and_size,
    probe,
    proxy_distances,
    query_keys,
    random_extras,
    screen_floor,
    subset_chunk,
    subset_size,
)
from diffcli.denoisers.pca_local import PixelMasks, masked_partials
from diffcli.denoisers.rows import pad_to
from diffcli.index.proxy import ProxyMap
from diffcli.parallel.denoiser import put_rows
from diffcli.parallel.mesh import AXIS, row_mesh
from diffcli.parallel.search import global_top_k


class RowShard(eqx.Module):
    """One device's rows (inside shard_map) or all of them (outside): the arrays sharded along N."""

    data: jax.Array  # [N_pad, D]
    proxy: jax.Array  # [N_pad, d]
    half_psq: jax.Array  # [N_pad], +inf on padding so a padding row is never screened in
    lists: jax.Array | None  # [parts * P, L]: each device's members of each list piece, as local row positions
    piece_proxy: jax.Array | None  # [parts * P, d, L]: those members' proxies, stored together (zero padding)
    piece_half: jax.Array | None  # [parts * P, L]: their half squared norms (+inf padding)


class ShardedGoldenDenoiser(AbstractDenoiser):
    """GoldDiff over an `empirical` or `pca-local` base with the index sharded over a 1-D mesh; see the module doc."""

    rows: RowShard
    proxy_map: ProxyMap
    masks: PixelMasks | None
    coarse: Coarse | None  # replicated: centroids, radii, piece of each id, the high-noise permutation
    n: int = eqx.field(static=True)
    k_min: int = eqx.field(static=True)
    k_max: int = eqx.field(static=True)
    tol: float | None = eqx.field(static=True)
    proxy_scale2: float = eqx.field(static=True)
    base: str = eqx.field(static=True)
    seed: int = eqx.field(static=True)
    rows_per_part: int = eqx.field(static=True)
    mesh: Mesh = eqx.field(static=True)

    @exact_matmuls
    def __call__(self, x, sigma, *, key=None):
        flat = flatten(x).astype(jnp.float32)
        s = batch_sigma(sigma, flat.shape[0])
        keys = query_keys(self.seed, key, s, flat.shape[0])
        shard_spec = jax.tree.map(lambda _: P(AXIS), self.rows)

        def per_device(flat, s, keys, shard):
            x0, _ = map_flat(self, lambda *a: self._select(shard, *a), flat, s, keys, finish=self._merged_base)
            return x0

        run = jax.shard_map(per_device, mesh=self.mesh, in_specs=(P(), P(), P(), shard_spec), out_specs=P())
        return run(flat, s, keys, self.rows).reshape(x.shape)

    def _select(self, shard: RowShard, x, sigma, key):
        """One query's golden subset among this device's rows: ((rows, distance minus the nearest's, kept), None);
        every device holds its own part of the same global subset."""
        kk, rpp = self.k_max, self.rows_per_part
        offset = jax.lax.axis_index(AXIS) * rpp
        _, k_t, p_keep = pool_and_size(self, sigma)
        q = self.proxy_map(x[None, :])[0]
        pos, dp, floor_rest = self._local_screen(shard, q, p_keep, key, offset)
        take = min(kk + 1, dp.shape[0])
        neg, best = jax.lax.top_k(-dp, take)
        pos, dp = pos[best], -neg
        gid = offset + pos
        # 1. the screen's global top-(k_max + 1): candidates, and the floor for everything left out
        take_all = min(kk + 1, self.mesh.size * take)
        neg_all, cand = global_top_k(-dp, gid, take_all)
        if take_all > kk:
            floor_rest = jnp.minimum(floor_rest, -neg_all[kk])
        floor = screen_floor(self, floor_rest, p_keep)
        in_cand = local_members(cand[:kk], jnp.isfinite(neg_all[:kk]), offset, rpp)[pos] & jnp.isfinite(dp)
        # 2. exact distances of this device's candidates; the global k_max nearest fix k_t
        rows = shard.data[pos]
        d = jnp.where(in_cand, jnp.sum(jnp.square(rows - x[None, :]), axis=1), jnp.inf)
        neg_d, nearest = global_top_k(-d, gid, kk)
        d_sorted = -neg_d
        k_t, _ = subset_size(self, d_sorted, floor, sigma, k_t)
        keep = local_members(nearest, jnp.arange(kk) < k_t, offset, rpp)[pos] & in_cand
        return (rows, d - d_sorted[0], keep), None

    def _local_screen(self, shard: RowShard, q, p_keep, key, offset):
        """(local row positions [M], proxy distances [M] (+inf if not in the pool), floor of unprobed pieces)."""
        if self.coarse is None:
            pos = jnp.arange(self.rows_per_part)
            dp = proxy_distances(shard.proxy, shard.half_psq, q)
            return pos, jnp.where(id_uniforms(key, offset + pos) < p_keep, dp, jnp.inf), jnp.float32(jnp.inf)
        probed, floor_rest = probe(self.coarse, q)
        k_pool, k_off = jax.random.split(key)
        members = shard.lists[probed].reshape(-1)
        extra, extra_ok = random_extras(self.coarse, k_off, self.n, self.k_max, probed)
        extra = extra - offset
        extra_ok = extra_ok & (extra >= 0) & (extra < self.rows_per_part)  # extras held by this device only
        inpool = jnp.concatenate([(members >= 0) & (id_uniforms(k_pool, offset + members) < p_keep), extra_ok])
        pos = jnp.clip(jnp.concatenate([members, extra]), 0, self.rows_per_part - 1)
        extra_pos = pos[members.shape[0]:]
        dp = jnp.concatenate([
            piece_distances(shard.piece_proxy, shard.piece_half, probed, q),
            proxy_distances(shard.proxy[extra_pos], shard.half_psq[extra_pos], q)])
        return pos, jnp.where(inpool, dp, jnp.inf), floor_rest

    def _merged_base(self, x, sigma, subset):
        """Softmax over every device's kept rows, from per-device partials merged exactly across devices."""
        rows, d_rel, keep = subset
        inv2var = 0.5 / jnp.square(sigma)
        if self.base == "empirical":
            logits = jnp.where(keep, -d_rel * inv2var, -jnp.inf)
            p = softmax.fold(softmax.empty((), rows.shape[1:]), logits, rows)
            return softmax.finish(softmax.merge_across(p, AXIS))

        def branch(cls: int, band):
            chunk = subset_chunk(self, rows.shape[1], cls)
            p = masked_partials(x, rows, keep, self.masks.operand(band, cls), inv2var, chunk, AXIS)
            return softmax.finish(softmax.merge_across(p, AXIS))  # per-pixel partials merge elementwise

        return self.masks.per_query(sigma, branch)


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


def shard_golden(rows: dict, rest: dict, mesh: Mesh) -> ShardedGoldenDenoiser:
    """Lay out golden's row arrays (NumPy, from golden_parts) over `mesh` and place each device's block on it."""
    n = len(rows["data"])
    rpp = -(-n // mesh.size)
    total = rpp * mesh.size
    proxy = pad_to(rows["proxy"], total)
    coarse, pieces = rest["coarse"], (None, None, None)
    if coarse is not None:
        lists = local_lists(np.asarray(coarse.search.ids), mesh.size, rpp)
        # each device's pieces hold its own rows: shift local positions to rows of the padded global array
        first = np.repeat(np.arange(mesh.size) * rpp, len(lists) // mesh.size)[:, None]
        blocks, half = piece_blocks(proxy, np.where(lists >= 0, lists + first, -1))
        pieces = tuple(put_rows(mesh, a) for a in (lists, blocks, half))
        rest = dict(rest, coarse=dataclasses.replace(coarse, piece_proxy=None, piece_half=None))
    shard = RowShard(put_rows(mesh, pad_to(rows["data"], total)), put_rows(mesh, proxy),
                     put_rows(mesh, pad_to(rows["half_psq"], total, fill=np.inf)), *pieces)
    return ShardedGoldenDenoiser(rows=shard, rows_per_part=rpp, mesh=mesh, **rest)


def build(index, opts) -> ShardedGoldenDenoiser:
    """Registry factory: golden with the index sharded over every device (any count, one included)."""
    rows, rest = golden_parts(index, opts)
    return shard_golden(rows, rest, row_mesh())

"""Sharded exact search over index rows: empirical posterior-mean partials merged by log-sum-exp, and top-k.

Each device scans its own rows; the cross-device merge is exact: with per-device (max m_j, sum s_j, weighted sum
t_j) and M = max_j m_j, the global sum is sum_j s_j exp(m_j - M) (and likewise for t_j), the same rescaling an
online softmax does between chunks (softmax.merge_across). Results therefore agree with one device up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from diffcli.denoisers import softmax
from diffcli.denoisers.empirical import chunk_logits
from diffcli.denoisers.rows import half_sq_norms, pad_to, stored_form, to_float
from diffcli.parallel.mesh import AXIS


@dataclass(frozen=True)
class ShardGeometry:
    """How n rows are laid out on `parts` devices: each holds `k_chunks` chunks of `chunk` rows (padding at the end)."""

    n: int
    parts: int
    chunk: int
    k_chunks: int

    @property
    def rows_per_part(self) -> int:
        return self.chunk * self.k_chunks

    @property
    def n_padded(self) -> int:
        return self.parts * self.rows_per_part

    def part_range(self, j: int) -> tuple[int, int]:
        """Real rows [lo, hi) held by part j (hi may equal lo for an all-padding part)."""
        lo = min(self.n, j * self.rows_per_part)
        return lo, min(self.n, lo + self.rows_per_part)


def geometry(n: int, parts: int, chunk: int) -> ShardGeometry:
    """Balanced layout: ceil(n / parts) rows per device, streamed in chunks of at most `chunk` rows."""
    if n < 1 or parts < 1 or chunk < 1:
        raise ValueError("n, parts and chunk must be positive")
    per_part = -(-n // parts)
    c = min(chunk, per_part)
    return ShardGeometry(n=n, parts=parts, chunk=c, k_chunks=-(-per_part // c))


def layout_rows(rows: np.ndarray, geom: ShardGeometry, first_row: int = 0, parts: int | None = None):
    """Rows [m, D] starting at global row `first_row` -> (chunks [parts*K, C, D], half squared norms [parts*K, C]).

    Rows keep their stored form (uint8 images); padding rows are zero with half norm +inf, so their softmax weight
    and top-k score are exactly zero / -inf.
    `parts` is how many devices' blocks `rows` covers (default: all of them, first_row = 0).
    """
    parts = geom.parts if parts is None else parts
    total = parts * geom.rows_per_part
    rows = stored_form(np.asarray(rows).reshape(len(rows), int(np.prod(rows.shape[1:]))))  # an empty block keeps D
    real = max(0, min(len(rows), geom.n - first_row, total))
    padded = pad_to(rows[:real], total)
    half = half_sq_norms(padded, np.arange(total) < real)
    k = parts * geom.k_chunks
    return padded.reshape(k, geom.chunk, -1), half.reshape(k, geom.chunk)


def local_partials(x, chunks, half_sqn, inv_var, axis: str | None = None) -> softmax.Partials:
    """Partials of queries x [B, D] over this device's chunks [K, C, D] (axis: the mesh axis inside shard_map)."""
    init = softmax.empty(x.shape[:1], x.shape[1:])
    if axis is not None:  # the carry mixes in per-device rows, so it varies over the mesh axis from the start
        init = softmax.varying(init, axis)

    def body(p, c):
        xs, hs = c
        xs = to_float(xs)  # one chunk in float32 at a time
        return softmax.fold(p, chunk_logits(x, xs, hs, inv_var), xs), None

    p, _ = jax.lax.scan(body, init, (chunks, half_sqn))
    return p


def posterior_mean_fn(mesh):
    """(x [B, D], inv_var [B], chunks, half_sqn) -> exact empirical posterior mean [B, D], rows sharded on `mesh`."""

    def per_device(x, inv_var, chunks, half_sqn):
        return softmax.finish(softmax.merge_across(local_partials(x, chunks, half_sqn, inv_var, AXIS), AXIS))

    return jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(AXIS), P(AXIS)), out_specs=P())


def merge_top_k(scores, ids, k: int):
    """Global top-k (largest scores) of candidate lists [..., M] with their global ids;
    ties go to the earlier column."""
    best, pos = jax.lax.top_k(scores, k)
    return best, jnp.take_along_axis(ids, pos, axis=-1)


def global_top_k(scores, ids, k: int, axis: str = AXIS):
    """Inside shard_map: every device's candidates [..., M] with global ids -> the k best over all devices [..., k].

    Candidates are gathered device by device, so among equal scores the earlier device (lower ids) wins.
    """
    # [parts, ..., M] -> [..., parts * M]
    every = jnp.moveaxis(jax.lax.all_gather(scores, axis, to="invarying"), 0, -2)
    every_ids = jnp.moveaxis(jax.lax.all_gather(ids, axis, to="invarying"), 0, -2)
    flat = every.reshape(*every.shape[:-2], -1)
    return merge_top_k(flat, every_ids.reshape(flat.shape), k)


def top_k_fn(mesh, k: int, rows_per_part: int):
    """(queries [B, d], scale [B], rows [N_pad, d], half_sqn [N_pad]) -> (squared distances [B, k], global ids [B, k]).

    Distances are ||q - a x_n||^2 with a per-query scale a > 0 (GoldDiff compares x_vp with sqrt(abar) x_n):
    each device keeps its local top-k of a<q, x_n> - a^2 ||x_n||^2 / 2, then one all-gather and a global top-k.
    Ties resolve to the lower global id, as on one device.
    """
    k_local = min(k, rows_per_part)

    def per_device(q, a, rows, half):
        score = a[:, None] * (q @ rows.T) - jnp.square(a)[:, None] * half[None, :]
        best, pos = jax.lax.top_k(score, k_local)
        gid = pos + jax.lax.axis_index(AXIS) * rows_per_part
        top, ids = global_top_k(best, gid, k)
        d2 = jnp.maximum(jnp.sum(q * q, axis=1)[:, None] - 2.0 * top, 0.0)
        return d2, ids

    return jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(AXIS), P(AXIS)), out_specs=(P(), P()))

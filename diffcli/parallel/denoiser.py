"""The exact empirical denoiser with its index rows sharded over a device mesh, and a sharded nearest-row search.

Same math as `diffcli.denoisers.empirical` (softmax over -||x - x_i||^2 / 2 sigma^2, streamed in chunks); each
device scans its rows and the partials are merged exactly (see parallel/search.py).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from diffcli.denoisers.base import AbstractDenoiser, batch_sigma, exact_matmuls, flatten
from diffcli.parallel.mesh import replicated, row_mesh, row_sharding
from diffcli.parallel.search import geometry, layout_rows, posterior_mean_fn, top_k_fn


def put_rows(mesh: Mesh, array: np.ndarray, *, local: bool = False) -> jax.Array:
    """Place a row-sharded array on `mesh`; with local=True, `array` is only this process's block (multi-host)."""
    sharding = row_sharding(mesh)
    if local:
        return jax.make_array_from_process_local_data(sharding, array)
    return jax.device_put(array, sharding)


def as_replicated(mesh: Mesh, x):
    """A query batch as an array replicated on every device of `mesh` (every process passes the same values)."""
    if jax.process_count() == 1:
        return jax.device_put(x, replicated(mesh))
    return jax.make_array_from_process_local_data(replicated(mesh), np.asarray(x))


class ShardedEmpiricalDenoiser(AbstractDenoiser):
    """Exact empirical posterior mean with the index sharded along N over a 1-D mesh (one shard per device)."""

    chunks: jax.Array  # [parts * K, C, D] in stored form (uint8 images), sharded along the leading axis
    half_sqn: jax.Array  # [parts * K, C]
    mesh: Mesh = eqx.field(static=True)

    @classmethod
    def from_data(cls, data, *, mesh: Mesh | None = None, chunk: int = 2048) -> ShardedEmpiricalDenoiser:
        """All rows are in this process: lay them out and place each device's block on it."""
        mesh = row_mesh() if mesh is None else mesh
        data = np.asarray(data).reshape(len(data), -1)  # stored uint8 images stay uint8
        chunks, half = layout_rows(data, geometry(len(data), mesh.size, chunk))
        return cls(put_rows(mesh, chunks), put_rows(mesh, half), mesh)

    @classmethod
    def from_local_rows(cls, rows, *, n: int, first_row: int, mesh: Mesh, chunk: int = 2048):
        """Multi-host: `rows` are this process's contiguous block starting at `first_row` (see host_row_range)."""
        geom = geometry(n, mesh.size, chunk)
        local_parts = len(mesh.local_devices)
        chunks, half = layout_rows(rows, geom, first_row=first_row, parts=local_parts)
        return cls(put_rows(mesh, chunks, local=True), put_rows(mesh, half, local=True), mesh)

    @exact_matmuls
    def __call__(self, x, sigma, *, key=None):
        flat = flatten(x).astype(jnp.float32)
        inv_var = 1.0 / jnp.square(batch_sigma(sigma, flat.shape[0]))
        out = posterior_mean_fn(self.mesh)(flat, inv_var, self.chunks, self.half_sqn)
        return out.reshape(x.shape)


class ShardedRows(eqx.Module):
    """Rows (e.g. proxy features) sharded along N, searched for each query's k nearest (exact, global ids)."""

    rows: jax.Array  # [N_pad, d]
    half_sqn: jax.Array  # [N_pad], +inf on padding
    n: int = eqx.field(static=True)
    rows_per_part: int = eqx.field(static=True)
    mesh: Mesh = eqx.field(static=True)

    @classmethod
    def from_data(cls, rows, *, mesh: Mesh | None = None) -> ShardedRows:
        mesh = row_mesh() if mesh is None else mesh
        rows = np.asarray(rows, np.float32).reshape(len(rows), -1)
        geom = geometry(len(rows), mesh.size, len(rows))
        flat, half = layout_rows(rows, geom)
        return cls(put_rows(mesh, flat.reshape(geom.n_padded, -1)), put_rows(mesh, half.reshape(-1)), len(rows),
                   geom.rows_per_part, mesh)

    def nearest(self, queries, k: int, scale=None):
        """(squared distances [B, k] ascending, global ids [B, k]) of ||q - scale * x_n||^2 (scale defaults to 1)."""
        if not 1 <= k <= self.n:
            raise ValueError(f"k={k} must be between 1 and the number of rows {self.n}")
        q = jnp.asarray(queries, jnp.float32).reshape(queries.shape[0], -1)
        a = jnp.ones(q.shape[0], jnp.float32) if scale is None else batch_sigma(scale, q.shape[0])
        return top_k_fn(self.mesh, k, self.rows_per_part)(q, a, self.rows, self.half_sqn)


def build(index, opts) -> ShardedEmpiricalDenoiser:
    """Registry factory: the empirical denoiser sharded over every device (any count, one included)."""
    return ShardedEmpiricalDenoiser.from_data(index.stored_rows(), chunk=opts.chunk_size)

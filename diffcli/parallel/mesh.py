"""A 1-D device mesh over index rows, and row padding so every device holds the same number of rows."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "rows"


def row_mesh(devices=None) -> Mesh:
    """A 1-D mesh named 'rows' over `devices` (default: all devices, every process); Auto axes so top_k works."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), (AXIS,), axis_types=(AxisType.Auto,))


def row_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh; the rest replicated."""
    return NamedSharding(mesh, P(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def padded_rows(n: int, parts: int, chunk: int = 1) -> int:
    """Smallest multiple of parts * chunk that holds n rows (at least one chunk per part)."""
    block = parts * chunk
    return max(block, -(-n // block) * block)


def pad_rows(a: np.ndarray, total: int, fill=0) -> np.ndarray:
    """Pad the leading axis of `a` to `total` rows with `fill`."""
    if len(a) > total:
        raise ValueError(f"{len(a)} rows do not fit in {total}")
    out = np.full((total, *a.shape[1:]), fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


def spread_leading(x):
    """Spread the leading axis of a traced array over the local devices when there are several (a 1-D mesh), so a
    batched call of many points runs on all of them; with one device, or an axis they do not divide, x as it is."""
    n = jax.local_device_count()
    if n <= 1 or x.shape[0] % n:
        return x
    mesh = jax.make_mesh((n,), ("points",), axis_types=(AxisType.Auto,), devices=jax.local_devices())
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P("points", *([None] * (x.ndim - 1)))))

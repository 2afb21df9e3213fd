"""A 1-D device mesh over index rows, its shardings, and spreading a batch of points over the local devices."""

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


def spread_leading(x):
    """Spread the leading axis of a traced array over the local devices when there are several (a 1-D mesh), so a
    batched call of many points runs on all of them; with one device, or an axis they do not divide, x as it is."""
    n = jax.local_device_count()
    if n <= 1 or x.shape[0] % n:
        return x
    mesh = jax.make_mesh((n,), ("points",), axis_types=(AxisType.Auto,), devices=jax.local_devices())
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P("points", *([None] * (x.ndim - 1)))))

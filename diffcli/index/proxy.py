"""Proxy features for the coarse retrieval stage: cheap, *linear* summaries of a sample.

Images: average pooling to 16x16 (14x14 for 28-px data), as GoldDiff does; vectors: projection on the top PCA
directions. Linearity matters: P(x0 + sigma*eps) = P(x0) + sigma*P(eps), so proxy distances of noisy queries
compare with proxies of clean training points exactly as full-resolution distances do.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np

PROXY_DIM_VECTORS = 64


def pool_factor(height: int) -> int:
    """The smallest factor f dividing `height` with height / f <= 16 (<= 14 for 28-px data, as in GoldDiff)."""
    target = 14 if height % 14 == 0 and height % 16 != 0 else 16
    return next(f for f in range(1, height + 1) if height % f == 0 and height // f <= target)


class ProxyMap(eqx.Module):
    """x [B, ...] in data space -> proxy features [B, d]; jit-able and holdable as a denoiser field."""

    shape: tuple[int, ...] = eqx.field(static=True)
    factor: int = eqx.field(static=True)
    basis: jnp.ndarray | None  # [D, d] for vectors, None for images

    def __call__(self, x):
        b = x.shape[0]
        if self.basis is not None:
            return x.reshape(b, -1) @ self.basis
        c, h, w = self.shape
        f = self.factor
        return x.reshape(b, c, h // f, f, w // f, f).mean(axis=(3, 5)).reshape(b, -1)


def proxy_map_for(kind: str, shape: tuple[int, ...], basis=None) -> ProxyMap:
    if kind == "image":
        return ProxyMap(shape=tuple(shape), factor=pool_factor(shape[1]), basis=None)
    return ProxyMap(shape=tuple(shape), factor=1, basis=jnp.asarray(basis, jnp.float32))


def index_proxy_map(index) -> ProxyMap:
    """The proxy map an index was built with."""
    return proxy_map_for(index.kind, index.shape, index.proxy_basis)


def proxy_features(index, x) -> jnp.ndarray:
    """Proxy features of data-space queries x [B, ...] for this index."""
    return index_proxy_map(index)(jnp.asarray(x, jnp.float32))


def vector_proxy_basis(components: np.ndarray, dim: int) -> np.ndarray:
    """[D, d] basis for vector data: the identity when D is small, else the top PCA directions."""
    if dim <= PROXY_DIM_VECTORS:
        return np.eye(dim, dtype=np.float32)
    return np.ascontiguousarray(components[:PROXY_DIM_VECTORS].T.astype(np.float32))


def compute_proxies(pmap: ProxyMap, data: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Proxy features of data-space rows [N, D], in chunks to bound memory."""
    shape = pmap.shape
    out = [np.asarray(pmap(jnp.asarray(data[i:i + chunk].reshape(-1, *shape)))) for i in range(0, len(data), chunk)]
    return np.concatenate(out).astype(np.float32)

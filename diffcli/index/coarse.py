"""Coarse (inverted-file) structure over the proxy vectors: k-means lists, probed at sampling time (IVF search).

Built once at index time: ~sqrt(N) lists by Lloyd's k-means in JAX; stored as "centroids" [L, d], "order" [N]
(index ids sorted by list) and "offsets" [L + 1]. At sampling time the lists are cut into pieces of at most a fixed
length (each piece keeps its list's centroid), so a probe gathers a fixed-shape block and jit never retraces, and
one oversized cluster cannot inflate the padding of all the others.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffcli.errors import DiffcliError

ASSIGN_CHUNK = 65536  # rows per assignment pass, so memory stays bounded at N = 1M


def default_lists(n: int) -> int:
    """About sqrt(N) lists (at least 1, at most N)."""
    return int(max(1, min(n, round(np.sqrt(n)))))


@jax.jit
def _assign(points, centroids):
    """Nearest centroid of each row and its squared distance (the ||p||^2 term is added back for the distance)."""
    half_c = 0.5 * jnp.sum(centroids * centroids, axis=1)
    score = points @ centroids.T - half_c[None, :]
    best = jnp.argmax(score, axis=1)
    sq = jnp.sum(points * points, axis=1) - 2.0 * jnp.take_along_axis(score, best[:, None], axis=1)[:, 0]
    return best.astype(jnp.int32), jnp.maximum(sq, 0.0)


def assign(points: np.ndarray, centroids: np.ndarray, chunk: int = ASSIGN_CHUNK):
    """(list id [N], squared distance [N]) of every row, streamed in chunks."""
    cj = jnp.asarray(centroids, jnp.float32)
    ids, dists = [], []
    for lo in range(0, len(points), chunk):
        i, d = _assign(jnp.asarray(points[lo:lo + chunk], jnp.float32), cj)
        ids.append(np.asarray(i))
        dists.append(np.asarray(d))
    return np.concatenate(ids), np.concatenate(dists)


def kmeans(points: np.ndarray, n_lists: int, *, seed: int = 0, iters: int = 12):
    """Lloyd's k-means from a random sample of the rows; an emptied list is re-seeded at the worst-fit row."""
    points = np.asarray(points, np.float32)
    n = len(points)
    rng = np.random.default_rng(seed)
    centroids = points[rng.choice(n, size=n_lists, replace=False)].copy()
    labels = np.zeros(n, np.int32)
    for _ in range(iters):
        labels, dist = assign(points, centroids)
        counts = np.bincount(labels, minlength=n_lists)
        sums = np.zeros((n_lists, points.shape[1]), np.float64)
        np.add.at(sums, labels, points)
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
        empty = np.flatnonzero(~filled)
        if len(empty):  # the rows farthest from their centroid seed the empty lists
            centroids[empty] = points[np.argsort(dist)[::-1][: len(empty)]]
    labels, _ = assign(points, centroids)
    return centroids, labels


def build_coarse(proxy: np.ndarray, *, seed: int = 0, n_lists: int | None = None, iters: int = 12) -> dict:
    """{'centroids' [L, d], 'order' [N], 'offsets' [L + 1]} of the proxy vectors (the /coarse group of the index)."""
    proxy = np.asarray(proxy, np.float32)
    n_lists = default_lists(len(proxy)) if n_lists is None else int(min(max(n_lists, 1), len(proxy)))
    centroids, labels = kmeans(proxy, n_lists, seed=seed, iters=iters)
    order = np.argsort(labels, kind="stable").astype(np.int64)
    counts = np.bincount(labels, minlength=n_lists)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return {"centroids": centroids.astype(np.float32), "order": order, "offsets": offsets}


def split_lists(coarse: dict, max_len: int | None = None):
    """Cut lists into pieces of at most `max_len` ids: (piece centroids [P, d], ids [P, max_len] padded with -1)."""
    centroids, order, offsets = (np.asarray(coarse[k]) for k in ("centroids", "order", "offsets"))
    sizes = np.diff(offsets)
    if max_len is None:  # twice the mean list length: balanced lists stay whole, a giant one is cut
        max_len = int(max(1, 2 * np.ceil(offsets[-1] / max(len(sizes), 1))))
    cents, rows = [], []
    for li, (lo, size) in enumerate(zip(offsets[:-1], sizes, strict=True)):
        for start in range(0, int(size), max_len):
            piece = order[lo + start: lo + min(start + max_len, size)]
            rows.append(np.pad(piece, (0, max_len - len(piece)), constant_values=-1))
            cents.append(centroids[li])
    if not rows:
        raise DiffcliError("the coarse structure of the index has no lists; rebuild the index.")
    return np.stack(cents).astype(np.float32), np.stack(rows).astype(np.int32)


class CoarseSearch(eqx.Module):
    """Probe the `nprobe` nearest list pieces of each query proxy; returns candidate ids (-1 = padding)."""

    centroids: jax.Array  # [P, d]
    ids: jax.Array  # [P, max_len] int32, -1 padding
    nprobe: int = eqx.field(static=True)

    @classmethod
    def from_coarse(cls, coarse: dict, nprobe: int | None = None, max_len: int | None = None) -> CoarseSearch:
        cents, ids = split_lists(coarse, max_len)
        lists = len(np.asarray(coarse["centroids"]))
        nprobe = default_nprobe(lists) if nprobe is None else int(nprobe)
        if nprobe < 1:
            raise DiffcliError(f"--golden-nprobe must be at least 1 (got {nprobe}).")
        # a probe of one list may touch several pieces: scale to pieces, never past the total
        pieces = int(min(len(ids), np.ceil(nprobe * len(ids) / lists)))
        return cls(jnp.asarray(cents), jnp.asarray(ids), pieces)

    def probe(self, q):
        """q [B, d] -> (candidate ids [B, nprobe * max_len], probed piece ids [B, nprobe])."""
        half_c = 0.5 * jnp.sum(self.centroids * self.centroids, axis=1)
        _, pieces = jax.lax.top_k(q @ self.centroids.T - half_c[None, :], self.nprobe)
        return self.ids[pieces].reshape(q.shape[0], -1), pieces


def default_nprobe(n_lists: int) -> int:
    """Lists scanned by default: a fixed 16, so the scanned share falls as sqrt(N) grows (sublinear cost; recall in
    benchmarks/bench_golden.py)."""
    return int(min(n_lists, 16))


def coarse_topk(search: CoarseSearch, proxy, q, k: int):
    """Approximate proxy top-k: ids [B, k] (-1 where fewer candidates) and squared proxy distances [B, k]."""
    cand, _ = search.probe(q)
    valid = cand >= 0
    rows = proxy[jnp.maximum(cand, 0)]  # [B, M, d]
    d = jnp.sum(jnp.square(rows - q[:, None, :]), axis=-1)
    d = jnp.where(valid, d, jnp.inf)
    k = min(k, cand.shape[1])
    neg, pos = jax.lax.top_k(-d, k)
    ids = jnp.take_along_axis(cand, pos, axis=1)
    return jnp.where(jnp.isfinite(neg), ids, -1), -neg


def exact_topk(proxy, q, k: int):
    """Brute-force proxy top-k (the reference the coarse stage is measured against)."""
    d = jnp.sum(q * q, axis=1)[:, None] - 2.0 * q @ proxy.T + jnp.sum(proxy * proxy, axis=1)[None, :]
    neg, ids = jax.lax.top_k(-d, k)
    return ids, -neg


def recall(found, truth) -> float:
    """Mean fraction of each row of `truth` ids present in the same row of `found`."""
    found, truth = np.asarray(found), np.asarray(truth)
    return float(np.mean([len(np.intersect1d(f, t)) / max(len(t), 1) for f, t in zip(found, truth, strict=True)]))

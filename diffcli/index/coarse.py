"""Coarse (inverted-file) structure over the proxy vectors: k-means lists, probed at sampling time (IVF search).

Built once at index time: ~sqrt(N) lists by Lloyd's k-means in JAX; stored as "centroids" [L, d], "order" [N]
(index ids sorted by list) and "offsets" [L + 1]. At sampling time the lists are cut into pieces of at most a fixed
length (each piece keeps its list's centroid), so a probe gathers a fixed-shape block and jit never retraces, and
one oversized cluster cannot inflate the padding of all the others. `CoarseStage` is the golden screen's use of them:
a probe with a certified floor for the unprobed pieces, and a random window of ids for the high-noise pool.
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


def list_sums(points: np.ndarray, labels: np.ndarray, n_lists: int, chunk: int = 16384) -> np.ndarray:
    """Float64 sum of the rows of each list [L, d]: a sparse one-hot [L, m] times each chunk of rows, which adds
    each list's rows in row order as np.add.at does, in a small fraction of its time at N = 1M."""
    from scipy.sparse import csr_matrix

    sums = np.zeros((n_lists, points.shape[1]), np.float64)
    for lo in range(0, len(points), chunk):
        lab = labels[lo:lo + chunk]
        one_hot = csr_matrix((np.ones(len(lab)), (lab, np.arange(len(lab)))), shape=(n_lists, len(lab)))
        sums += one_hot @ points[lo:lo + chunk].astype(np.float64)
    return sums


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
        sums = list_sums(points, labels, n_lists)
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


class CoarseStage(eqx.Module):
    """The probe of a golden screen (denoisers/golden): the nearest list pieces of a query, a lower bound for
    every member of the others, and a random window of ids (the high-noise pool). Member proxies are held apart,
    with the rows they belong to (`piece_blocks`), so a sharded index keeps each device's members on that device."""

    search: CoarseSearch  # the pieces' centroids and member ids, and how many are probed
    radius: jax.Array  # [P] max proxy distance of a piece's members to its centroid (slightly enlarged)
    piece_of: jax.Array  # [N] int32, each id's piece
    perm: jax.Array  # [N] a fixed random permutation: a random window of it is the high-noise pool

    def probe(self, q):
        """(probed pieces [nprobe], lower bound on the proxy distance of every member of an unprobed piece).

        Triangle inequality: no member of a piece with centroid c and radius r is nearer than (|q - c| - r)^2.
        """
        dc = jnp.sum(jnp.square(self.search.centroids - q[None, :]), axis=1)
        _, probed = jax.lax.top_k(-dc, self.search.nprobe)
        unprobed = jnp.ones_like(dc, bool).at[probed].set(False)
        gap = jnp.maximum(jnp.sqrt(jnp.maximum(dc, 0.0)) - self.radius, 0.0)
        return probed, jnp.min(jnp.where(unprobed, jnp.square(gap), jnp.inf))

    def extras(self, key, count: int, probed):
        """`count` ids from a random window of the fixed permutation, and which may be used: those already in a
        probed piece are dropped, so no id is a candidate twice."""
        n = self.perm.shape[0]
        start = jax.random.randint(key, (), 0, n)
        extra = self.perm[(start + jnp.arange(count)) % n]
        return extra, ~jnp.any(self.piece_of[extra][:, None] == probed[None, :], axis=1)


def coarse_stage(coarse: dict, proxy: np.ndarray, nprobe: int | None, seed: int) -> CoarseStage:
    """The golden screen's coarse stage from an index's coarse lists (`build_coarse`) and its proxies [N, d]."""
    search = CoarseSearch.from_coarse(coarse, nprobe)
    ids = np.asarray(search.ids)
    piece_of = np.zeros(len(proxy), np.int32)
    radius = np.zeros(len(ids), np.float32)
    cents = np.asarray(search.centroids)
    for p, row in enumerate(ids):
        row = row[row >= 0]
        piece_of[row] = p
        if len(row):
            radius[p] = np.sqrt(np.max(np.sum((proxy[row] - cents[p]) ** 2, axis=1)))
    perm = np.random.default_rng(seed).permutation(len(proxy)).astype(np.int32)
    return CoarseStage(search, jnp.asarray(radius * (1 + 1e-5) + 1e-6), jnp.asarray(piece_of), jnp.asarray(perm))


def piece_blocks(proxy: np.ndarray, ids: np.ndarray, batch: int = 256):
    """Member proxies of each piece, feature-major [P, d, L] (zero padding), and their half squared norms [P, L]
    (+inf padding), from member lists ids [P, L] of rows of `proxy` (-1 padding): the inverted-file layout, so a
    probe reads nprobe contiguous blocks instead of gathering scattered rows. Filled `batch` pieces at a time into
    one read-only, aligned array, so at N = 1M the layout costs its own size once (the CPU device shares it)."""
    from diffcli.denoisers.rows import aligned_empty, frozen

    p, length = ids.shape
    blocks = aligned_empty((p, proxy.shape[1], length), np.float32)
    half = np.empty((p, length), np.float32)
    for lo in range(0, p, batch):
        sub = ids[lo:lo + batch]
        members = np.where((sub >= 0)[..., None], proxy[np.maximum(sub, 0)], 0.0).astype(np.float32, copy=False)
        half[lo:lo + batch] = np.where(sub >= 0, 0.5 * np.einsum("pld,pld->pl", members, members), np.inf)
        blocks[lo:lo + batch] = members.transpose(0, 2, 1)
    return frozen(blocks), half


def piece_distances(piece_proxy, piece_half, probed, q):
    """||q - P(x_n)||^2 of the members of the probed pieces, flat [nprobe * L], from the blocks of `piece_blocks`,
    read one probed piece at a time.

    A lax.map over the probes keeps each step's gather at one block per vmapped query ([B, d, L]); gathering all
    probed blocks at once materialises [B, nprobe, d, L] (139 MB for 16 queries at N = 1M), whose fresh pages
    (page faults on every call) and copy cost several times the distances themselves. q @ [d, L] streams the
    block along its contiguous L axis (a third less time on CPU than [L, d] @ q).
    """
    dots = jax.lax.map(lambda p: q @ piece_proxy[p], probed)
    return jnp.maximum(2.0 * (piece_half[probed] - dots) + q @ q, 0.0).reshape(-1)


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

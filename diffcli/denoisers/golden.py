"""GoldDiff (Shang et al. 2026, "Fast and Scalable Analytical Diffusion"): a base denoiser restricted to a golden subset.

Per query and step: a uniform random pool (expected size m_t), a proxy screen to k_max candidates, a fine selection
of the k_t nearest at full resolution, and the base's exact softmax over those k_t only. Beyond the paper: a
certified tail bound per query (`diagnose`), a tolerance mode choosing k per query from that bound, and a sublinear
coarse stage (inverted lists over the proxies, index/coarse.py). Everything is padded to k_max and masked, so one
compiled function serves every step.

Sigma-space screen: the paper ranks ||P(x_vp) - sqrt(abar) P(x_n)||^2 with x_vp = sqrt(abar) x. P is linear, so that
equals abar ||P(x) - P(x_n)||^2: a positive per-query factor, the same ranking. The same holds at full resolution.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffcli.denoisers import softmax
from diffcli.denoisers.base import AbstractDenoiser, batch_sigma, exact_matmuls, flatten
from diffcli.denoisers.pca_local import PixelMasks, masked_posterior_mean, masks_for, rows_per_chunk
from diffcli.denoisers.rows import pad_rows
from diffcli.denoisers.subset import check_sizes, default_sizes, golden_sizes, smallest_k_for_tol, tail_bounds
from diffcli.errors import UsageError
from diffcli.index.coarse import CoarseSearch
from diffcli.index.proxy import ProxyMap, index_proxy_map

BASES = ("empirical", "pca-local")
ROWS_BUDGET = 1 << 26  # float32 elements of the gathered candidate rows of one sub-batch (256 MiB)
DIAG_CHUNK = 1024
MAX_SUB_BATCH = 16  # a solver batch is rarely larger
SUBSET_CHUNKS = 8  # a pca-local base streams the k_max rows in about this many chunks: those past k_t are skipped
MIN_SUBSET_CHUNK = 64


class Coarse(eqx.Module):
    """The probed inverted lists plus what the certificate needs: each id's piece and each piece's radius."""

    search: CoarseSearch
    piece_of: jax.Array  # [N] int32
    radius: jax.Array  # [P] max proxy distance of a piece's members to its centroid
    perm: jax.Array  # [N] a fixed random permutation: a random window of it is the high-noise pool
    # each piece's member proxies stored together (inverted-file layout), so a probe reads nprobe contiguous blocks
    # instead of gathering scattered rows from the whole proxy array (None in the sharded golden: each device holds
    # its own members' block); feature-major, so a block's distances are one vector-matrix product along L
    piece_proxy: jax.Array | None  # [P, d, L], zero padding
    piece_half: jax.Array | None  # [P, L] ||P(x_n)||^2 / 2, +inf padding


class GoldenDenoiser(AbstractDenoiser):
    """GoldDiff over an `empirical` or `pca-local` base; see the module docstring."""

    data: jax.Array  # [Np, D] rows padded to a multiple of DIAG_CHUNK (padding never selected)
    proxy: jax.Array  # [N, d]
    half_psq: jax.Array  # [N] ||P(x_n)||^2 / 2
    proxy_map: ProxyMap
    masks: PixelMasks | None
    coarse: Coarse | None
    n: int = eqx.field(static=True)
    k_min: int = eqx.field(static=True)
    k_max: int = eqx.field(static=True)
    tol: float | None = eqx.field(static=True)
    proxy_scale2: float = eqx.field(static=True)  # ||x - y||^2 >= proxy_scale2 * ||P x - P y||^2
    base: str = eqx.field(static=True)
    seed: int = eqx.field(static=True)

    # -- stages ------------------------------------------------------------------------------------------------
    def _screen(self, q, p_keep, key):
        """Proxy screen of one query: (candidate ids [K], proxy distances [K], lower bound for the rest)."""
        kk = self.k_max
        if self.coarse is None:
            ids = jnp.arange(self.n)
            inpool = id_uniforms(key, ids) < p_keep
            dp = proxy_distances(self.proxy, self.half_psq, q)
            floor_rest = jnp.float32(jnp.inf)
        else:
            c = self.coarse
            probed, floor_rest = probe(c, q)
            k_pool, k_off = jax.random.split(key)
            members = c.search.ids[probed].reshape(-1)
            extra, extra_ok = random_extras(c, k_off, self.n, kk, probed)
            ids = jnp.maximum(jnp.concatenate([members, extra]), 0)
            inpool = jnp.concatenate([(members >= 0) & (id_uniforms(k_pool, members) < p_keep), extra_ok])
            dp = jnp.concatenate([piece_distances(c.piece_proxy, c.piece_half, probed, q),
                                  proxy_distances(self.proxy[extra], self.half_psq[extra], q)])
        dp = jnp.where(inpool, dp, jnp.inf)
        take = min(kk + 1, dp.shape[0])
        neg, pos = jax.lax.top_k(-dp, take)
        if take > kk:  # the (K+1)-th screened distance bounds everything the screen left out
            floor_rest = jnp.minimum(floor_rest, -neg[kk])
        return ids[pos[:kk]], -neg[:kk], screen_floor(self, floor_rest, p_keep)

    def _select(self, x, sigma, key):
        """Golden subset of one query x [D]: ((rows [K, D], ascending distances [K], kept [K]), diagnostics)."""
        m_t, k_t, p_keep = pool_and_size(self, sigma)
        q = self.proxy_map(x[None, :])[0]
        cand, dprox, floor = self._screen(q, p_keep, key)
        ok = jnp.isfinite(dprox)
        rows = self.data[cand]
        d = jnp.where(ok, jnp.sum(jnp.square(rows - x[None, :]), axis=1), jnp.inf)
        neg, order = jax.lax.top_k(-d, self.k_max)
        d_sorted, ids, rows = -neg, cand[order], rows[order]
        k_t, bounds = subset_size(self, d_sorted, floor, sigma, k_t)
        keep = jnp.arange(self.k_max) < k_t
        retrieved = tail_bounds(d_sorted, jnp.float32(jnp.inf), self.n, sigma)  # the spec's formula, candidates only
        diag = {"k": k_t, "pool": m_t if self.tol is None else jnp.int32(self.n), "bound": bounds[k_t - 1],
                "bound_retrieved": retrieved[k_t - 1], "ids": jnp.where(keep, ids, -1)}
        return (rows, d_sorted, keep), diag

    def _base(self, x, sigma, subset):
        """The base's posterior mean of one query over its golden subset (rows, ascending distances, kept)."""
        rows, d_sorted, keep = subset
        inv2var = 0.5 / jnp.square(sigma)
        if self.base == "empirical":
            logits = jnp.where(keep, -(d_sorted - d_sorted[0]) * inv2var, -jnp.inf)
            return softmax.finish(softmax.fold(softmax.empty((), rows.shape[1:]), logits, rows))

        def branch(cls: int, band):
            chunk = subset_chunk(self, rows.shape[1], cls)
            return masked_posterior_mean(x, rows, keep, self.masks.operand(band, cls), inv2var, chunk)

        return self.masks.per_query(sigma, branch)

    # -- contract -----------------------------------------------------------------------------------------------
    @exact_matmuls
    def __call__(self, x, sigma, *, key=None):
        x0, _ = map_queries(self, self._select, x, sigma, key, finish=self._base)
        return x0.reshape(x.shape)

    @exact_matmuls
    def diagnose(self, x, sigma, *, key=None):
        """k, pool size, certified bound, the candidates-only bound and the realised (unmasked) tail mass per query."""

        def one(xq, s, k):
            subset, diag = self._select(xq, s, k)
            diag["tail_mass"] = self._tail_mass(xq, s, diag.pop("ids"))
            return subset, diag

        _, diag = map_queries(self, one, x, sigma, key)
        return diag

    def _tail_mass(self, x, sigma, ids):
        """1 - sum_{i in S} w_i of the full empirical posterior, as Z_out / Z (exact distances, streamed)."""
        inside = jnp.zeros(self.data.shape[0], bool).at[jnp.maximum(ids, 0)].max(ids >= 0)
        real = jnp.arange(self.data.shape[0]) < self.n
        chunks = self.data.reshape(-1, DIAG_CHUNK, self.data.shape[1])
        d = jax.lax.map(lambda c: jnp.sum(jnp.square(c - x[None, :]), axis=1), chunks).reshape(-1)
        logit = -d * (0.5 / jnp.square(sigma))
        log_in = jax.nn.logsumexp(jnp.where(inside & real, logit, -jnp.inf))
        log_out = jax.nn.logsumexp(jnp.where(~inside & real, logit, -jnp.inf))
        return jnp.exp(log_out - jnp.logaddexp(log_in, log_out))


# -- per-query pieces shared with the sharded golden (parallel/golden.py); `den` is either denoiser --------------
def id_uniforms(key, ids):
    """Uniform [0, 1) draws, one per global row id: a counter-based hash of (key, id), so a row's pool membership is
    the same whatever array, list piece or device holds it (the sharded golden relies on this)."""
    kd = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    h = _mix32(ids.astype(jnp.uint32) * jnp.uint32(0x9E3779B1) ^ kd[0].astype(jnp.uint32))
    h = _mix32(h ^ kd[1].astype(jnp.uint32))
    return (h >> 8).astype(jnp.float32) * jnp.float32(2.0 ** -24)


def _mix32(h):
    """MurmurHash3's 32-bit finaliser: every input bit flips each output bit with probability about 1/2."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def proxy_distances(proxy_rows, half_psq, q):
    """||q - P(x_n)||^2 of rows [M, d] with half squared norms [M] (+inf rows stay +inf)."""
    return jnp.maximum(2.0 * (half_psq - proxy_rows @ q) + q @ q, 0.0)


def piece_distances(piece_proxy, piece_half, probed, q):
    """proxy_distances of the members of the probed pieces, flat [nprobe * L], from feature-major blocks
    piece_proxy [P, d, L], read one probed piece at a time.

    A lax.map over the probes keeps each step's gather at one block per vmapped query ([B, d, L]); gathering all
    probed blocks at once materialises [B, nprobe, d, L] (139 MB for 16 queries at N = 1M), whose fresh pages
    (page faults on every call) and copy cost several times the distances themselves. q @ [d, L] streams the
    block along its contiguous L axis (a third less time on CPU than [L, d] @ q).
    """
    dots = jax.lax.map(lambda p: q @ piece_proxy[p], probed)
    return jnp.maximum(2.0 * (piece_half[probed] - dots) + q @ q, 0.0).reshape(-1)


def probe(coarse: Coarse, q):
    """(probed pieces [nprobe], lower bound on the proxy distance of every member of an unprobed piece).

    Triangle inequality: no member of a piece with centroid c and radius r is nearer than (|q - c| - r)^2.
    """
    dc = jnp.sum(jnp.square(coarse.search.centroids - q[None, :]), axis=1)
    _, probed = jax.lax.top_k(-dc, coarse.search.nprobe)
    unprobed = jnp.ones_like(dc, bool).at[probed].set(False)
    gap = jnp.maximum(jnp.sqrt(jnp.maximum(dc, 0.0)) - coarse.radius, 0.0)
    return probed, jnp.min(jnp.where(unprobed, jnp.square(gap), jnp.inf))


def random_extras(coarse: Coarse, key, n: int, count: int, probed):
    """`count` ids from a random window of the fixed permutation (the high-noise pool), and which may be used:
    those already in a probed piece are dropped, so no id is a candidate twice."""
    start = jax.random.randint(key, (), 0, n)
    extra = coarse.perm[(start + jnp.arange(count)) % n]
    return extra, ~jnp.any(coarse.piece_of[extra][:, None] == probed[None, :], axis=1)


def screen_floor(den, floor_rest, p_keep):
    """Full-resolution lower bound for every row the screen left out; only a complete screen (no random pool)
    certifies anything, and the proxy bound scales by proxy_scale2."""
    return jnp.where(p_keep >= 1.0, den.proxy_scale2 * floor_rest, 0.0)


def pool_and_size(den, sigma):
    """(m_t, k_t, pool probability) of one query; the tolerance mode screens the whole set, since only a complete
    screen certifies what it leaves out."""
    m_t, k_t = golden_sizes(sigma, den.n, den.k_min, den.k_max)
    p_keep = m_t.astype(jnp.float32) / den.n if den.tol is None else jnp.float32(1.0)
    return m_t, k_t, p_keep


def subset_size(den, d_sorted, floor, sigma, k_t):
    """(k actually used, certified bounds [K]) from the ascending exact candidate distances d_sorted [K]."""
    n_ok = jnp.sum(jnp.isfinite(d_sorted))
    bounds = tail_bounds(d_sorted, floor, den.n, sigma)
    if den.tol is not None:
        k_t = smallest_k_for_tol(bounds, den.k_min, den.tol, den.k_max)
    return jnp.maximum(jnp.minimum(k_t, n_ok), 1), bounds


def query_keys(seed: int, key, sigma, b: int):
    """One key per query and step: a new pool at every step even when the solver hands the same per-sample key."""
    if key is None:
        key = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(jnp.arange(b))
    tag = jax.lax.bitcast_convert_type(sigma.astype(jnp.float32), jnp.uint32)
    return jax.vmap(jax.random.fold_in)(key, tag)


def sub_batch(den, dim: int) -> int:
    """Queries vmapped together through the selection, so their gathered candidate rows fit ROWS_BUDGET."""
    return int(max(1, min(MAX_SUB_BATCH, ROWS_BUDGET // max(den.k_max * dim, 1))))


def subset_chunk(den, dim: int, cls: int) -> int:
    """Rows per chunk of a pca-local base over the subset: within memory, and at most about k_max / SUBSET_CHUNKS."""
    cap = max(MIN_SUBSET_CHUNK, -(-den.k_max // SUBSET_CHUNKS))
    return rows_per_chunk(dim, den.masks.row_width(cls), 1, min(cap, den.k_max))


def map_queries(den, select, x, sigma, key, finish=None):
    """map_flat over the batch x [B, ...] with per-query sigmas and keys."""
    flat = flatten(x).astype(jnp.float32)
    s = batch_sigma(sigma, flat.shape[0])
    return map_flat(den, select, flat, s, query_keys(den.seed, key, s, flat.shape[0]), finish)


def map_flat(den, select, flat, s, keys, finish=None):
    """(x0 [B, D] or None, out) for queries flat [B, D] with sigmas [B] and per-step keys [B].

    select(x, sigma, key) -> (subset, out) runs on vmapped sub-batches in a sequential map (bounded memory);
    finish(x, sigma, subset) -> x0 [D] then runs one query at a time for a pca-local base, so each query switches to
    its own mask class (a switch under vmap would run every branch), and vmapped for the empirical base.
    """
    b, dim = flat.shape
    sub = min(b, sub_batch(den, dim))
    pad = -b % sub  # filled with copies of the first query, dropped at the end

    def blocks(a):
        a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) if pad else a
        return a.reshape(-1, sub, *a.shape[1:])

    def run(args):
        x, sg, k = args
        subset, out = jax.vmap(select)(x, sg, k)
        if finish is None:
            return None, out
        if den.masks is None:
            return jax.vmap(finish)(x, sg, subset), out
        return jax.lax.map(lambda a: finish(*a), (x, sg, subset)), out

    res = jax.lax.map(run, (blocks(flat), blocks(s), blocks(keys)))
    return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:])[:b], res)


def proxy_scale2(pmap: ProxyMap) -> float:
    """c with ||v||^2 >= c ||P v||^2: f^2 for f x f average pooling (Cauchy-Schwarz), 1 for orthonormal projections."""
    return float(pmap.factor ** 2) if pmap.basis is None else 1.0


def build_coarse_stage(index, proxy: np.ndarray, nprobe, seed: int) -> Coarse:
    if index.coarse is None:
        raise UsageError("--golden-coarse needs an index built with coarse clusters; rebuild it with --coarse.")
    search = CoarseSearch.from_coarse(index.coarse, nprobe)
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
    piece_proxy, piece_half = piece_blocks(proxy, ids)
    return Coarse(search, jnp.asarray(piece_of), jnp.asarray(radius * (1 + 1e-5) + 1e-6), jnp.asarray(perm),
                  jnp.asarray(piece_proxy), jnp.asarray(piece_half))


def piece_blocks(proxy: np.ndarray, ids: np.ndarray):
    """Member proxies of each piece, feature-major [P, d, L] (zero padding), and their half squared norms [P, L]
    (+inf padding), from member lists ids [P, L] of rows of `proxy` (-1 padding)."""
    blocks = np.where((ids >= 0)[..., None], proxy[np.maximum(ids, 0)], 0.0).astype(np.float32)
    half = np.where(ids >= 0, 0.5 * np.einsum("pld,pld->pl", blocks, blocks), np.inf)
    return np.ascontiguousarray(blocks.transpose(0, 2, 1)), half.astype(np.float32)


def golden_parts(index, opts) -> tuple[dict, dict]:
    """(row arrays as NumPy: data [N, D], proxy [N, d], half_psq [N]; everything else a golden denoiser holds)."""
    if opts.golden_base not in BASES:
        raise UsageError(f"unknown golden base '{opts.golden_base}'; choose from: {', '.join(BASES)}.")
    n = index.n
    d_min, d_max = default_sizes(index.attrs.get("dataset"), n)
    k_max = opts.golden_k_max if opts.golden_k_max is not None else max(d_max, opts.golden_k_min or 0)
    if opts.golden_k_min is not None:
        k_min = opts.golden_k_min
    else:  # the tolerance mode picks k itself; otherwise the schedule's lower end
        k_min = 1 if opts.golden_tol is not None else min(d_min, k_max)
    k_min, k_max = check_sizes(int(k_min), int(k_max), n)
    if opts.golden_tol is not None and not 0.0 < float(opts.golden_tol) < 1.0:
        raise UsageError(f"--golden-tol must lie strictly between 0 and 1 (got {opts.golden_tol}).")
    proxy = np.asarray(index.proxy, np.float32)
    pmap = index_proxy_map(index)
    rows = {"data": np.asarray(index.train_data(), np.float32), "proxy": proxy,
            "half_psq": (0.5 * np.einsum("ij,ij->i", proxy, proxy)).astype(np.float32)}
    rest = dict(
        proxy_map=pmap,
        masks=masks_for(index, opts) if opts.golden_base == "pca-local" else None,
        coarse=build_coarse_stage(index, proxy, opts.golden_nprobe, opts.seed) if opts.golden_coarse else None,
        n=n, k_min=k_min, k_max=k_max,
        tol=None if opts.golden_tol is None else float(opts.golden_tol),
        proxy_scale2=proxy_scale2(pmap),
        base=opts.golden_base,
        seed=int(opts.seed),
    )
    return rows, rest


def build(index, opts) -> GoldenDenoiser:
    rows, rest = golden_parts(index, opts)
    padded, _ = pad_rows(rows["data"], DIAG_CHUNK)
    return GoldenDenoiser(data=jnp.asarray(padded), proxy=jnp.asarray(rows["proxy"]),
                          half_psq=jnp.asarray(rows["half_psq"]), **rest)

"""The plan both golden denoisers hold: GoldDiff's settings, its per-query sizes and certificate, query batching,
and the rows its stages read (all of them on one device, or one device's block in the sharded form)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffcli.denoisers.base import batch_sigma, flatten
from diffcli.denoisers.golden.moments import IndexMoments, index_moments
from diffcli.denoisers.pca_local import PixelMasks, masks_for, rows_per_chunk
from diffcli.denoisers.presets import default_sizes
from diffcli.denoisers.subset import check_sizes, golden_sizes, smallest_k_for_tol, tail_bounds, vp_noise_std
from diffcli.errors import UsageError
from diffcli.index.coarse import CoarseStage, coarse_stage
from diffcli.index.proxy import ProxyMap, index_proxy_map
from diffcli.keys import query_keys

BASES = ("empirical", "pca-local")
ESTIMATORS = ("paper", "stratified")
FAR_SHARE = 0.5  # the stratified estimator's far draws at high noise, as a share of k_t (they shrink with s_t)
ROWS_BUDGET = 1 << 26  # float32 elements of the gathered candidate rows of one sub-batch (256 MiB)
MAX_SUB_BATCH = 16  # a solver batch is rarely larger
SUBSET_CHUNKS = 8  # a pca-local base streams the k_max rows in about this many chunks: those past k_t are skipped
MIN_SUBSET_CHUNK = 64


class GoldenRows(eqx.Module):
    """The index rows the stages read, by position: all of them, or one device's block inside shard_map (a row's
    global id is then the block's first id plus its position)."""

    data: jax.Array  # [R, D], zero padding rows (never screened in)
    proxy: jax.Array  # [R', d] (R' <= R: the one-device form pads only data)
    half_psq: jax.Array  # [R'] ||P(x_n)||^2 / 2, +inf on padding
    lists: jax.Array | None  # [P, L] the coarse pieces' members among these rows, as positions (-1 padding)
    piece_proxy: jax.Array | None  # [P, d, L] their proxies, stored together (index/coarse.py: piece_blocks)
    piece_half: jax.Array | None  # [P, L] their half squared norms (+inf padding)


class GoldenPlan(eqx.Module):
    """GoldDiff's settings and the per-query arithmetic both golden denoisers share."""

    proxy_map: ProxyMap
    masks: PixelMasks | None  # the pca-local base's masks (None for the empirical base)
    coarse: CoarseStage | None  # the clustered screen (--golden-coarse)
    moments: IndexMoments | None  # the stratified estimator's index moments (None for the paper's)
    n: int = eqx.field(static=True)
    k_min: int = eqx.field(static=True)
    k_max: int = eqx.field(static=True)
    tol: float | None = eqx.field(static=True)
    proxy_scale2: float = eqx.field(static=True)  # ||x - y||^2 >= proxy_scale2 * ||P x - P y||^2
    base: str = eqx.field(static=True)
    seed: int = eqx.field(static=True)
    estimator: str = eqx.field(static=True, default="paper")
    far_slots: int = eqx.field(static=True, default=0)  # the stratified estimator's far draws (padded)
    far_share: float = eqx.field(static=True, default=FAR_SHARE)
    far_design: str = eqx.field(static=True, default="uniform")  # far draws: "uniform", or "proxy" (a proposal)
    far_regression: bool = eqx.field(static=True, default=True)  # the far totals regression-corrected (else plain)
    crossfit: bool = eqx.field(static=True, default=False)  # its regression fitted on one half, applied to the other

    def sizes(self, sigma):
        """(m_t, k_t, pool probability) of one query; the tolerance mode screens the whole set, since only a
        complete screen certifies what it leaves out. The stratified estimator screens the whole set too (its near
        stratum is a function of the query only) and keeps k_t minus its far draws."""
        m_t, k_t = golden_sizes(sigma, self.n, self.k_min, self.k_max)
        if self.estimator == "stratified":
            return jnp.int32(self.n), k_t - self.far_count(sigma), jnp.float32(1.0)
        p_keep = m_t.astype(jnp.float32) / self.n if self.tol is None else jnp.float32(1.0)
        return m_t, k_t, p_keep

    def far_count(self, sigma):
        """The stratified estimator's active far draws f_t: even, FAR_SHARE * s_t * k_t, none once k_t >= N."""
        _, k_t = golden_sizes(sigma, self.n, self.k_min, self.k_max)
        f = 2 * jnp.round(self.far_share * vp_noise_std(jnp.asarray(sigma, jnp.float32)) * k_t / 2).astype(jnp.int32)
        f = jnp.minimum(jnp.minimum(f, self.far_slots), 2 * ((k_t - 1) // 2))
        return jnp.where(k_t >= self.n, 0, f)

    def floor(self, floor_rest, p_keep):
        """Full-resolution lower bound for every row the screen left out, from the proxy one: only a complete
        screen (no random pool) certifies anything, and the proxy bound scales by proxy_scale2."""
        return jnp.where(p_keep >= 1.0, self.proxy_scale2 * floor_rest, 0.0)

    def subset_size(self, d_sorted, floor, sigma, k_t):
        """(k actually used, certified bounds [K]) from the ascending exact candidate distances d_sorted [K]."""
        n_ok = jnp.sum(jnp.isfinite(d_sorted))
        bounds = tail_bounds(d_sorted, floor, self.n, sigma)
        if self.tol is not None:
            k_t = smallest_k_for_tol(bounds, self.k_min, self.tol, self.k_max)
        return jnp.maximum(jnp.minimum(k_t, n_ok), 1), bounds

    def subset_chunk(self, dim: int, cls: int) -> int:
        """Rows per chunk of a pca-local base over the subset: within memory, and at most about k_max /
        SUBSET_CHUNKS."""
        cap = max(MIN_SUBSET_CHUNK, -(-self.k_max // SUBSET_CHUNKS))
        return rows_per_chunk(dim, self.masks.row_width(cls), 1, min(cap, self.k_max))

    def queries(self, x, sigma, key):
        """(flat queries [B, D] float32, sigmas [B], one key per query and step [B]) of a batch x [B, ...]."""
        flat = flatten(x).astype(jnp.float32)
        s = batch_sigma(sigma, flat.shape[0])
        return flat, s, query_keys(self.seed, key, s, flat.shape[0])

    def map_queries(self, select, flat, s, keys, finish=None):
        """(x0 [B, D] or None, out) for queries flat [B, D] with sigmas [B] and keys [B].

        select(x, sigma, key) -> (subset, out) runs on vmapped sub-batches in a sequential map (bounded memory);
        finish(x, sigma, subset) -> x0 [D] then runs one query at a time for a pca-local base, so each query switches
        to its own mask class (a switch under vmap would run every branch), and for the stratified estimator, whose
        per-query regression stays in cache and is skipped without far draws; vmapped otherwise.
        """
        b, dim = flat.shape
        sub = min(b, int(max(1, min(MAX_SUB_BATCH, ROWS_BUDGET // max(self.k_max * dim, 1)))))
        pad = -b % sub  # filled with copies of the first query, dropped at the end

        def blocks(a):
            a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) if pad else a
            return a.reshape(-1, sub, *a.shape[1:])

        def run(args):
            x, sg, k = args
            subset, out = jax.vmap(select)(x, sg, k)
            if finish is None:
                return None, out
            if self.masks is None and self.estimator == "paper":
                return jax.vmap(finish)(x, sg, subset), out
            return jax.lax.map(lambda a: finish(*a), (x, sg, subset)), out

        res = jax.lax.map(run, (blocks(flat), blocks(s), blocks(keys)))
        return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:])[:b], res)


def proxy_scale2(pmap: ProxyMap) -> float:
    """c with ||v||^2 >= c ||P v||^2: f^2 for f x f average pooling (Cauchy-Schwarz), 1 for orthonormal projections."""
    return float(pmap.factor ** 2) if pmap.basis is None else 1.0


def plan_and_rows(index, opts) -> tuple[GoldenPlan, dict]:
    """(the plan, the rows as NumPy: data [N, D], proxy [N, d], half_psq [N] and, with the coarse stage, the
    pieces' member ids `lists` [P, L], else None) for an index and GoldenOptions."""
    if opts.golden_base not in BASES:
        raise UsageError(f"unknown golden base '{opts.golden_base}'; choose from: {', '.join(BASES)}.")
    n = index.n
    d_min, d_max = default_sizes(index.dataset_name, n, per_class="class" in index.attrs)
    k_max = opts.golden_k_max if opts.golden_k_max is not None else max(d_max, opts.golden_k_min or 0)
    if opts.golden_k_min is not None:
        k_min = opts.golden_k_min
    else:  # the tolerance mode picks k itself; otherwise the schedule's lower end
        k_min = 1 if opts.golden_tol is not None else min(d_min, k_max)
    k_min, k_max = check_sizes(int(k_min), int(k_max), n)
    estimator = resolved_estimator(opts)
    if opts.golden_tol is not None and opts.golden_base != "empirical":
        raise UsageError("--golden-tol certifies the empirical base only (a pixel's masked distance has no lower "
                         "bound from the rows' full distances); use it with --golden-base empirical.")
    if opts.golden_tol is not None and not 0.0 < float(opts.golden_tol) < 1.0:
        raise UsageError(f"--golden-tol must lie strictly between 0 and 1 (got {opts.golden_tol}).")
    proxy = np.asarray(index.proxy, np.float32)
    pmap = index_proxy_map(index)
    masks = masks_for(index, opts) if opts.golden_base == "pca-local" else None
    coarse, lists = None, None
    if opts.golden_coarse:
        if index.coarse is None:
            raise UsageError("--golden-coarse needs an index built with coarse clusters; rebuild it with --coarse.")
        coarse = coarse_stage(index.coarse, proxy, opts.golden_nprobe, opts.seed)
        lists = np.asarray(coarse.search.ids)
    data = index.stored_rows()  # uint8 images stay uint8: candidates are converted where they are gathered
    plan = GoldenPlan(
        proxy_map=pmap,
        masks=masks,
        coarse=coarse,
        moments=index_moments(data, masks) if estimator == "stratified" else None,
        n=n, k_min=k_min, k_max=k_max,
        tol=None if opts.golden_tol is None else float(opts.golden_tol),
        proxy_scale2=proxy_scale2(pmap),
        base=opts.golden_base,
        seed=int(opts.seed),
        estimator=estimator,
        far_slots=far_slots(k_max, n) if estimator == "stratified" else 0,
    )
    rows = {"data": data, "proxy": proxy,
            "half_psq": (0.5 * np.einsum("ij,ij->i", proxy, proxy)).astype(np.float32), "lists": lists}
    return plan, rows


def far_slots(k_max: int, n: int, share: float = FAR_SHARE) -> int:
    """Padded far draws of the stratified estimator: share * k_max rounded to even, none when k_max >= N."""
    return 0 if k_max >= n else 2 * int(round(share * k_max / 2))


def resolved_estimator(opts) -> str:
    """The estimator GoldenOptions ask for: stratified unless given, paper under --golden-tol (whose certificate
    bounds the truncated subset); stratified with --golden-tol or --golden-coarse is refused."""
    est = getattr(opts, "golden_estimator", None)
    if est is not None and est not in ESTIMATORS:
        raise UsageError(f"unknown golden estimator '{est}'; choose from: {', '.join(ESTIMATORS)}.")
    if est == "stratified" and opts.golden_tol is not None:
        raise UsageError("--golden-tol certifies the truncated subset of the paper's estimator; "
                         "use it with --golden-estimator paper.")
    if est == "stratified" and opts.golden_coarse:
        raise UsageError("--golden-coarse screens a random pool, which the stratified estimator's near stratum "
                         "cannot use; use it with --golden-estimator paper.")
    if est is None:
        est = "paper" if opts.golden_tol is not None or opts.golden_coarse else DEFAULT_ESTIMATOR
    return est


DEFAULT_ESTIMATOR = "stratified"

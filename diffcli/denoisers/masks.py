"""PCA-locality masks (Lukoianov et al. 2025): binarised, row-normalised Wiener gain, stored as neighbour lists.

G(sigma) = U diag(lam / (lam + sigma^2)) U^T (+ r / (r + sigma^2) on the complement of U's span), R[i, j] =
G[i, j] / G[i, i], M[j, m] = |R[j, m]| >= thr * max|R|. The gain is built one column block at a time from the PCA
factors, so a 3x64x64 image never needs a dense 12288 x 12288 matrix; pixel m keeps the padded list of the j with
M[j, m] = 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffcli.denoisers.base import exact_matmuls

MAX_BANDS = 32  # distinct sigmas with their own mask; more sigmas share the nearest band in log sigma
COLUMN_BLOCK = 1024
HOST_CACHE_BYTES = 1 << 30  # up to D = 16384 the |R| matrix is kept on the host between the two passes


def band_sigmas(sigmas) -> np.ndarray:
    """The positive sigmas of a schedule, deduplicated; at most MAX_BANDS of them, spread evenly in log sigma."""
    if sigmas is None:
        return np.geomspace(0.002, 80.0, 16)
    s = np.unique(np.asarray(sigmas, np.float64))
    s = s[s > 0]
    if len(s) == 0:
        return np.geomspace(0.002, 80.0, 16)
    if len(s) > MAX_BANDS:
        s = s[np.unique(np.round(np.linspace(0, len(s) - 1, MAX_BANDS)).astype(int))]
    return s


def band_index(log_bands, sigma):
    """Index of the band nearest in log sigma (a lookup on a traced sigma: no float equality, no retrace)."""
    return jnp.argmin(jnp.abs(jnp.log(jnp.maximum(sigma, 1e-30))[:, None] - log_bands[None, :]), axis=1)


@jax.jit
@exact_matmuls
def _gain_block(comps, g, gr, cols):
    """Column block G[:, cols] of the Wiener gain."""
    vc = comps[:, cols]  # [k, b]
    block = comps.T @ ((g - gr)[:, None] * vc)  # V^T diag(g) V - gr V^T V, then + gr I below
    block = block.at[cols, jnp.arange(cols.shape[0])].add(gr)
    return block


@jax.jit
@exact_matmuls
def _gain_diag(comps, g, gr):
    sq = jnp.square(comps)
    return g @ sq + gr * (1.0 - jnp.sum(sq, axis=0))


def _blocks(dim: int, block: int):
    for lo in range(0, dim, block):
        yield np.arange(lo, min(lo + block, dim), dtype=np.int32)


def gain_mask_lists(components, variances, residual_variance, sigma, threshold, *, block=COLUMN_BLOCK):
    """Neighbour lists of one sigma: a list per output pixel m of the j with |R[j, m]| >= thr * max|R|."""
    comps = jnp.asarray(components, jnp.float32)
    lam = jnp.asarray(variances, jnp.float32)
    dim = comps.shape[1]
    resid = 0.0 if comps.shape[0] >= dim else float(residual_variance)
    s2 = float(sigma) ** 2
    g = lam / (lam + s2)
    gr = jnp.float32(resid / (resid + s2)) if resid > 0 else jnp.float32(0.0)
    diag = _gain_diag(comps, g, gr)
    # R[i, j] = G[i, j] / G[i, i]; rows with a vanishing diagonal are divided by 1, as the method specifies
    inv_diag = 1.0 / jnp.where(jnp.abs(diag) < 1e-6, 1.0, diag)

    def r_block(cols):
        return jnp.abs(_gain_block(comps, g, gr, jnp.asarray(cols)) * inv_diag[:, None])

    blocks = list(_blocks(dim, block))
    kept = []  # |R| blocks kept on the host when they fit, so the gain is computed once rather than twice
    rmax = 0.0
    for cols in blocks:
        r = r_block(cols)
        rmax = max(rmax, float(jnp.max(r)))
        if dim * dim * 4 <= HOST_CACHE_BYTES:
            kept.append(np.asarray(r))
    cut = threshold * rmax
    lists = []
    for i, cols in enumerate(blocks):
        keep = (kept[i] if kept else np.asarray(r_block(cols))) >= cut  # [D, b]: column m of the mask
        lists.extend(np.flatnonzero(keep[:, j]) for j in range(keep.shape[1]))
    return lists


def pad_lists(lists, width: int | None = None) -> np.ndarray:
    """[S][D] lists -> neighbours [S, D, W] int32, padded with index 0 (its weight comes from the counts)."""
    width = width or max(1, max(len(a) for band in lists for a in band))
    nbr = np.zeros((len(lists), len(lists[0]), width), np.int32)
    for i, band in enumerate(lists):
        for m, a in enumerate(band):
            nbr[i, m, : len(a)] = a
    return nbr


def build_masks(index, sigmas, threshold):
    """(band sigmas [S], per band a list of D neighbour-index arrays) for the index's PCA factors."""
    bands = band_sigmas(sigmas)
    lists = [gain_mask_lists(index.pca_components, index.pca_variances, index.residual_variance, s, threshold)
             for s in bands]
    return bands, lists


def dense_mask(lists, dim: int) -> np.ndarray:
    """The dense [D, D] mask M[j, m] of one band's lists (tests and small data only)."""
    m = np.zeros((dim, dim), bool)
    for col, rows in enumerate(lists):
        m[rows, col] = True
    return m

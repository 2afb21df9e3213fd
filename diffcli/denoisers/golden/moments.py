"""Data moments that give, in closed form, the totals over the whole index of the stratified estimator's auxiliaries:
per output pixel m, the sums over rows n of 1, x_nm, the logit l_nm = -d_nm / (2 sigma^2) and l_nm x_nm.

Rows are centred on the index mean (distances do not change; the posterior mean shifts by the mean). With
centred rows x_n, the query x, a pixel's mask M (M[j, m] = 1 when pixel m sees j; every j for the empirical base):
  sum_n d_nm      = sum_j M[j, m] (N x_j^2 - 2 x_j S1_j + Q_j)
  sum_n x_nm d_nm = S1_m sum_j M[j, m] x_j^2 - 2 sum_j M[j, m] C_mj x_j + sum_j M[j, m] T_mj
with S1 = sum_n x_n, Q_j = sum_n x_nj^2, C = sum_n x_n x_n^T and T_mj = sum_n x_nm x_nj^2. The masked matrices are
held per sigma band in the mask's own form (lists or dense). Derivation: docs/golddiff.md.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffcli.denoisers.pca_local import DenseMask, ListMask, PixelMasks
from diffcli.denoisers.rows import host_float, pad_to, to_float


class IndexMoments(eqx.Module):
    """Moments of the centred index rows (see the module doc) and each pixel's range (the output is clipped to it)."""

    mean: jax.Array  # [D] the index mean (rows are centred on it)
    lo: jax.Array  # [D] smallest centred value of each pixel
    hi: jax.Array  # [D] largest
    s1: jax.Array  # [D] sum of centred rows (zero up to rounding)
    q: jax.Array  # [D] sum of squares per pixel
    c: jax.Array | None  # [D, D] sum of outer products (empirical base)
    t: jax.Array | None  # [D] sum_j T_mj (empirical base)
    masked_c: tuple[jax.Array, ...] | None  # pca-local, per mask class: C_mj on the mask (list or dense form)
    masked_t: jax.Array | None  # [S, D] pca-local: sum_j M[j, m] T_mj per band
    n: int = eqx.field(static=True)


def mask_sum(vec, mask: ListMask | DenseMask | None):
    """sum_j M[j, m] vec_j for every pixel m (the plain sum, broadcast, without a mask)."""
    if mask is None:
        return jnp.broadcast_to(jnp.sum(vec), vec.shape)
    if isinstance(mask, DenseMask):
        return vec @ mask.m
    return jnp.sum(vec[mask.nbr] * mask.valid, axis=-1)


def masked_c_apply(mom: IndexMoments, x, mask, cls: int | None, slot):
    """sum_j M[j, m] C_mj x_j for every pixel m (C x without a mask)."""
    if mask is None:
        return mom.c @ x
    table = mom.masked_c[cls][slot]
    if isinstance(mask, DenseMask):
        return x @ table
    return jnp.sum(table * x[mask.nbr] * mask.valid, axis=-1)


def index_totals(mom: IndexMoments, x, inv2var, mask=None, cls: int | None = None, band=None, slot=None):
    """Totals over all N rows, per pixel [D]: (sum x_nm, sum l_nm, sum l_nm x_nm), for a centred query x [D]."""
    x2 = jnp.square(x)
    sum_d = mask_sum(mom.n * x2 - 2.0 * x * mom.s1 + mom.q, mask)
    t = mom.t if mask is None else mom.masked_t[band]
    sum_xd = mom.s1 * mask_sum(x2, mask) - 2.0 * masked_c_apply(mom, x, mask, cls, slot) + t
    return mom.s1, -inv2var * sum_d, -inv2var * sum_xd


MOMENT_BLOCK = 2048  # rows per block of the moment sums (float32 products on the device, summed in float64)


@functools.partial(jax.jit, static_argnames="full_t")
def _block_sums(block, ok, mean, full_t: bool):
    """One block's centred sums: (S1 [D], Q [D], C [D, D], T [D, D] or its row sums [D], min [D], max [D]); padding
    rows excluded."""
    xc = jnp.where(ok[:, None], to_float(block) - mean, 0.0)
    sq = jnp.square(xc)
    lo = jnp.min(jnp.where(ok[:, None], xc, jnp.inf), axis=0)
    hi = jnp.max(jnp.where(ok[:, None], xc, -jnp.inf), axis=0)
    t = xc.T @ sq if full_t else xc.T @ sq.sum(1)
    return xc.sum(0), sq.sum(0), xc.T @ xc, t, lo, hi


def centred_sums(stored: np.ndarray, mean: np.ndarray, full_t: bool, block: int = MOMENT_BLOCK):
    """(S1, Q, C, T (or its row sums unless full_t), lo, hi) of the rows in stored form [N, D] centred on `mean`,
    streamed in blocks of rows, so no float copy of the index is made; each block's products are float32 on the
    device, the totals float64."""
    n, dim = stored.shape
    block = min(block, n)
    acc = [np.zeros(dim), np.zeros(dim), np.zeros((dim, dim)), np.zeros((dim, dim) if full_t else dim)]
    lo, hi = np.full(dim, np.inf), np.full(dim, -np.inf)
    mean32 = jnp.asarray(mean, jnp.float32)
    for start in range(0, n, block):
        part = stored[start:start + block]
        ok = np.arange(block) < len(part)
        sums = _block_sums(jnp.asarray(pad_to(part, block)), jnp.asarray(ok), mean32, full_t)
        for a, s in zip(acc, sums[:4], strict=True):
            a += np.asarray(s, np.float64)
        lo, hi = np.minimum(lo, np.asarray(sums[4])), np.maximum(hi, np.asarray(sums[5]))
    return (*acc, lo, hi)


def row_mean(stored: np.ndarray, block: int = 65536) -> np.ndarray:
    """The float64 mean of rows in stored form, a block at a time."""
    total = np.zeros(stored.shape[1])
    for start in range(0, len(stored), block):
        total += host_float(stored[start:start + block]).sum(0, dtype=np.float64)
    return total / len(stored)


def index_moments(stored: np.ndarray, masks: PixelMasks | None) -> IndexMoments:
    """The moments of the index rows [N, D] in stored form (uint8 images or float32), per band for a pca-local
    base. The cost is N D^2 multiply-adds, made once when the denoiser is built."""
    mean = row_mean(stored)
    s1, q, c, t, lo, hi = centred_sums(stored, mean, full_t=masks is not None)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    common = dict(mean=f32(mean), lo=f32(lo), hi=f32(hi), s1=f32(s1), q=f32(q), n=len(stored))
    if masks is None:
        return IndexMoments(c=f32(c), t=f32(t), masked_c=None, masked_t=None, **common)
    tables, masked_t = [], np.zeros((len(masks.band_class), stored.shape[1]))
    slots, classes = np.asarray(masks.band_slot), np.asarray(masks.band_class)
    counts = np.asarray(masks.count)
    for cls, table in enumerate(masks.tables):
        tab = np.asarray(table)
        if masks.dense[cls]:  # table[s, j, m]: the mask; C is symmetric, so C_mj sits at [j, m]
            tables.append(f32(tab * c[None]))
            for band in np.flatnonzero(classes == cls):
                masked_t[band] = (tab[slots[band]] * t.T).sum(0)
        else:  # table[s, m, l]: neighbour l of pixel m
            rows = np.arange(stored.shape[1])[None, :, None]
            tables.append(f32(c[rows, tab]))
            for band in np.flatnonzero(classes == cls):
                nbr = tab[slots[band]]
                valid = np.arange(nbr.shape[1])[None, :] < counts[band][:, None]
                masked_t[band] = (t[np.arange(stored.shape[1])[:, None], nbr] * valid).sum(1)
    return IndexMoments(c=None, t=None, masked_c=tuple(tables), masked_t=f32(masked_t), **common)

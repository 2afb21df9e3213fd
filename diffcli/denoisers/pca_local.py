"""PCA-locality denoiser (Lukoianov et al. 2025, as used by GoldDiff): a per-pixel posterior over training images.

Output pixel m weighs image n by softmax_n(-d[n, m] / 2 sigma^2) with the masked distance
d[n, m] = sum_{j in nbr(m)} (x_j - x_{n,j})^2, where nbr(m) is the pixel's mask for the current sigma band (see
masks.py). The index is streamed in chunks with a per-pixel online log-sum-exp, so memory is bounded by one chunk
times the neighbour-list width, and the masked distance is a gather over the padded lists (O(N * D * L), never a
dense D x D product).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffcli.denoisers.base import AbstractDenoiser, batch_sigma, flatten
from diffcli.denoisers.masks import band_index, build_masks, default_threshold, pad_lists
from diffcli.errors import UsageError

GATHER_BUDGET = 1 << 25  # float32 elements of one gathered [rows, D, L] block (128 MiB)
ASSUMED_BATCH = 16


class PixelPartials(eqx.Module):
    """Per-pixel running (max logit, sum of exp, weighted sum of the pixel's values) of one query."""

    m: jax.Array  # [D]
    s: jax.Array  # [D]
    acc: jax.Array  # [D]


def empty_pixel_partials(dim: int) -> PixelPartials:
    return PixelPartials(jnp.full((dim,), -jnp.inf), jnp.zeros((dim,)), jnp.zeros((dim,)))


def masked_distances(x, rows, nbr, valid):
    """d[c, m] = sum_l valid[m, l] (x - rows[c])^2[nbr[m, l]] for one query x [D] and rows [C, D]."""
    diff2 = jnp.square(rows - x[None, :])
    return jnp.einsum("cml,ml->cm", diff2[:, nbr], valid)


def masked_update(p: PixelPartials, x, rows, row_ok, nbr, valid, inv2var) -> PixelPartials:
    """Fold rows [C, D] (row_ok [C] marks real rows) into one query's per-pixel partials."""
    logits = jnp.where(row_ok[:, None], -masked_distances(x, rows, nbr, valid) * inv2var, -jnp.inf)
    m_new = jnp.maximum(p.m, logits.max(axis=0))
    m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)  # a chunk of padding only must not make NaN
    scale = jnp.exp(p.m - m_safe)
    w = jnp.exp(logits - m_safe[None, :])
    return PixelPartials(m_new, p.s * scale + w.sum(axis=0), p.acc * scale + jnp.sum(w * rows, axis=0))


def valid_weights(count, width: int):
    """[.., D] counts -> [.., D, L] float weights (1 for real neighbours, 0 for padding)."""
    return (jnp.arange(width) < count[..., None]).astype(jnp.float32)


def masked_posterior_mean(x, rows, row_ok, nbr, valid, inv2var, chunk: int):
    """One query's per-pixel masked posterior mean over rows [K, D] (streamed in chunks of `chunk` rows)."""
    p = masked_partials(x, rows, row_ok, nbr, valid, inv2var, chunk)
    return p.acc / p.s


def masked_partials(x, rows, row_ok, nbr, valid, inv2var, chunk: int, axis: str | None = None) -> PixelPartials:
    """One query's per-pixel partials over rows [K, D] (streamed in chunks of `chunk` rows).

    `axis`: the mesh axis when called inside shard_map on one device's rows (the carry then varies over it).
    """
    k, dim = rows.shape
    chunk = max(1, min(chunk, k))
    pad = -(-k // chunk) * chunk - k
    rows = jnp.pad(rows, ((0, pad), (0, 0))).reshape(-1, chunk, dim)
    row_ok = jnp.pad(row_ok, (0, pad)).reshape(-1, chunk)

    def body(p, c):
        return masked_update(p, x, c[0], c[1], nbr, valid, inv2var), None

    init = empty_pixel_partials(dim)
    if axis is not None:
        init = jax.tree.map(lambda a: jax.lax.pcast(a, (axis,), to="varying"), init)
    p, _ = jax.lax.scan(body, init, (rows, row_ok))
    return p


def rows_per_chunk(dim: int, width: int, batch: int = 1, cap: int | None = None) -> int:
    """Rows per streamed chunk so that a gathered [batch, rows, D, L] block stays within GATHER_BUDGET."""
    c = max(1, GATHER_BUDGET // max(batch * dim * width, 1))
    return int(c if cap is None else max(1, min(c, cap)))


class PixelMasks(eqx.Module):
    """Per-band neighbour lists, the band lookup (nearest band in log sigma) and width classes.

    Each band belongs to a width class (a power of two covering its widest list) and its lists are stored padded to
    that width only, so narrow low-noise masks cost neither memory nor compute for the wide high-noise ones. Classes
    are lax.switch branches, so a traced sigma never retraces.
    """

    log_bands: jax.Array  # [S]
    count: jax.Array  # [S, D] int32
    band_class: jax.Array  # [S] int32, index into widths
    band_slot: jax.Array  # [S] int32, the band's row in its class's array
    nbr: tuple[jax.Array, ...]  # per class: [S_c, D, W_c] int32
    widths: tuple[int, ...] = eqx.field(static=True)

    def band(self, sigma):
        return band_index(self.log_bands, sigma)

    def lists(self, band, cls: int):
        """(neighbours [..., D, W], weights [..., D, W]) of bands `band` (any shape), all in width class `cls`."""
        width = self.widths[cls]
        return self.nbr[cls][self.band_slot[band]], valid_weights(self.count[band], width)


def width_classes(count: np.ndarray, minimum: int = 8):
    """(widths, class of each band): each band's widest list rounded up to a power of two, capped at the widest."""
    top = int(count.max())
    per_band = [min(top, max(minimum, 1 << int(np.ceil(np.log2(max(int(c.max()), 1)))))) for c in count]
    widths = tuple(sorted(set(per_band)))
    return widths, np.array([widths.index(w) for w in per_band], np.int32)


def masks_for(index, opts) -> PixelMasks:
    thr = opts.mask_threshold if opts.mask_threshold is not None else default_threshold(index.attrs.get("dataset"))
    if not 0.0 <= float(thr) <= 1.0:
        raise UsageError(f"--mask-threshold must lie in [0, 1] (got {thr}).")
    bands, lists = build_masks(index, opts.sigmas, float(thr))
    count = np.array([[len(a) for a in band] for band in lists], np.int32)
    widths, cls = width_classes(count)
    slot = np.zeros(len(bands), np.int32)
    per_class = []
    for c, w in enumerate(widths):
        members = np.flatnonzero(cls == c)
        slot[members] = np.arange(len(members))
        per_class.append(jnp.asarray(pad_lists([lists[i] for i in members], w)))
    return PixelMasks(jnp.asarray(np.log(bands), jnp.float32), jnp.asarray(count), jnp.asarray(cls),
                      jnp.asarray(slot), tuple(per_class), widths)


class PcaLocalDenoiser(AbstractDenoiser):
    """Full-scan PCA-locality denoiser: exact per-pixel masked softmax over the whole index."""

    data: jax.Array  # [Np, D], Np a multiple of every class's chunk
    row_ok: jax.Array  # [Np] bool
    masks: PixelMasks
    chunks: tuple[int, ...] = eqx.field(static=True)  # rows per chunk of each width class

    def __call__(self, x, sigma, *, key=None):
        flat = flatten(x).astype(jnp.float32)
        b, dim = flat.shape
        s = batch_sigma(sigma, b)
        band = self.masks.band(s)
        inv2var = 0.5 / jnp.square(s)
        update = jax.vmap(masked_update, in_axes=(0, 0, None, None, 0, 0, 0))

        def branch(cls: int, chunk: int):
            def run(_):
                nbr, valid = self.masks.lists(band, cls)

                def body(p, c):
                    return update(p, flat, c[0], c[1], nbr, valid, inv2var), None

                p0 = jax.vmap(lambda _: empty_pixel_partials(dim))(jnp.arange(b))
                rows = (self.data.reshape(-1, chunk, dim), self.row_ok.reshape(-1, chunk))
                p, _ = jax.lax.scan(body, p0, rows)
                return p.acc / p.s

            return run

        # the widest class any sample needs: every sample's lists fit, and equal sigmas (the usual batch) pay no more
        cls = jnp.max(self.masks.band_class[band])
        out = jax.lax.switch(cls, [branch(i, c) for i, c in enumerate(self.chunks)], None)
        return out.reshape(x.shape)


def class_chunks(dim: int, widths, batch: int, cap: int) -> tuple[int, ...]:
    """Rows per chunk of each width class, as powers of two (so one padded row count serves all)."""
    return tuple(1 << int(np.floor(np.log2(rows_per_chunk(dim, w, batch, cap)))) for w in widths)


def pad_rows(data: np.ndarray, multiple: int):
    """Rows [N, D] -> (rows [Np, D] zero-padded to a multiple, real-row flags [Np])."""
    n = len(data)
    np_ = -(-n // multiple) * multiple
    padded = np.zeros((np_, data.shape[1]), np.float32)
    padded[:n] = data
    return padded, np.arange(np_) < n


def chunk_rows(data: np.ndarray, chunk: int):
    """Rows [N, D] -> (chunks [K, C, D], real-row flags [K, C])."""
    chunk = max(1, min(chunk, len(data)))
    padded, ok = pad_rows(data, chunk)
    return padded.reshape(-1, chunk, data.shape[1]), ok.reshape(-1, chunk)


def build(index, opts) -> PcaLocalDenoiser:
    masks = masks_for(index, opts)
    data = index.train_data()
    chunks = class_chunks(data.shape[1], masks.widths, ASSUMED_BATCH, max(1, min(opts.chunk_size, len(data))))
    rows, ok = pad_rows(data, max(chunks))
    return PcaLocalDenoiser(jnp.asarray(rows), jnp.asarray(ok), masks, chunks)

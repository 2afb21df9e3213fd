"""PCA-locality denoiser (Lukoianov et al. 2025, as used by GoldDiff): a per-pixel posterior over training images.

Output pixel m weighs image n by softmax_n(-d[n, m] / 2 sigma^2) with the masked distance
d[n, m] = sum_{j in nbr(m)} (x_j - x_{n,j})^2, where nbr(m) is the pixel's mask for the current sigma band (see
masks.py). The index is streamed in chunks with a per-pixel online log-sum-exp, so memory is bounded by one chunk.

Two forms of the same mask, chosen per width class: a gather over padded neighbour lists (O(N * D * L), for narrow
masks or images too large for a D x D matrix) or a dense 0/1 matrix, where d = diff^2 @ M is one matrix product. A
gather runs far below the matmul roofline (on a 2-core CPU about 0.3 G elements/s against about 120 GFLOP/s), so
the product is faster once a list is wider than about D / 200; wide high-noise masks go dense while their bool
matrices fit DENSE_MASK_BYTES (every band of a 3x64x64 image does).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffcli.denoisers import softmax
from diffcli.denoisers.base import AbstractDenoiser, batch_sigma, exact_matmuls, flatten
from diffcli.denoisers.masks import band_index, build_masks, pad_lists
from diffcli.denoisers.presets import default_threshold
from diffcli.denoisers.rows import device_rows, pad_rows, split_chunks, to_float
from diffcli.errors import UsageError

GATHER_BUDGET = 1 << 25  # float32 elements of one gathered [rows, D, L] block (128 MiB)
DENSE_MASK_BYTES = 1 << 31  # bool D x D masks held for the dense classes (all 10 bands of D = 12288 need 1.5 GiB)
DENSE_FROM = 64  # a class of list width >= D / DENSE_FROM is dense (measured crossover about D / 200 on a CPU)
DENSE_ROW_FLOATS = 4  # float32 [D] arrays per row of a dense chunk (squared difference, distances, logits, weights)


class ListMask(eqx.Module):
    """A mask as padded neighbour lists: neighbours [D, W] and their 0/1 weights [D, W] (0 for padding)."""

    nbr: jax.Array
    valid: jax.Array


class DenseMask(eqx.Module):
    """A mask as a dense matrix M [D, D] (float 0/1) with M[j, m] = 1 for j in pixel m's neighbourhood."""

    m: jax.Array


def masked_distances(x, rows, mask: ListMask | DenseMask):
    """d[c, m] = sum over j in pixel m's neighbourhood of (x - rows[c])_j^2, for one query x [D] and rows [C, D]."""
    diff2 = jnp.square(rows - x[None, :])
    if isinstance(mask, DenseMask):  # full float32 precision comes from the callers' exact_matmuls
        return diff2 @ mask.m
    return jnp.einsum("cml,ml->cm", diff2[:, mask.nbr], mask.valid)


def masked_update(p: softmax.Partials, x, rows, row_ok, mask, inv2var) -> softmax.Partials:
    """Fold rows [C, D] in stored form (row_ok [C] marks real rows) into one query's per-pixel partials [D]."""
    rows = to_float(rows)  # one chunk in float32 at a time
    logits = jnp.where(row_ok[:, None], -masked_distances(x, rows, mask) * inv2var, -jnp.inf)
    return softmax.fold_each(p, logits, rows, axis=0)


def valid_weights(count, width: int):
    """[.., D] counts -> [.., D, L] float weights (1 for real neighbours, 0 for padding)."""
    return (jnp.arange(width) < count[..., None]).astype(jnp.float32)


def masked_posterior_mean(x, rows, row_ok, mask, inv2var, chunk: int):
    """One query's per-pixel masked posterior mean over rows [K, D] (streamed in chunks of `chunk` rows)."""
    return softmax.finish(masked_partials(x, rows, row_ok, mask, inv2var, chunk))


def masked_partials(x, rows, row_ok, mask, inv2var, chunk: int, axis: str | None = None) -> softmax.Partials:
    """One query's per-pixel partials [D] over rows [K, D] (streamed in chunks of `chunk` rows).

    `axis`: the mesh axis when called inside shard_map on one device's rows (the carry then varies over it).
    A chunk with no real row is skipped (a cond, not a masked update): a golden subset keeps a prefix of its k_max
    rows, so the chunks past k_t cost nothing when the query is not under vmap.
    """
    rows, row_ok = split_chunks(rows, row_ok, chunk)

    def body(p, c):
        return jax.lax.cond(jnp.any(c[1]), lambda: masked_update(p, x, c[0], c[1], mask, inv2var), lambda: p), None

    init = softmax.empty((rows.shape[2],))
    if axis is not None:
        init = softmax.varying(init, axis)
    p, _ = jax.lax.scan(body, init, (rows, row_ok))
    return p


def rows_per_chunk(dim: int, width: int, batch: int = 1, cap: int | None = None) -> int:
    """Rows per streamed chunk so that a [batch, rows, D, width] block stays within GATHER_BUDGET (width: the list
    width, or DENSE_ROW_FLOATS for a dense class; see PixelMasks.row_width)."""
    c = max(1, GATHER_BUDGET // max(batch * dim * width, 1))
    return int(c if cap is None else max(1, min(c, cap)))


class PixelMasks(eqx.Module):
    """Per-band masks, the band lookup (nearest band in log sigma) and width classes.

    Each band belongs to a width class (a power of two covering its widest list). A class is stored either as lists
    padded to its width or, when wide (see DENSE_FROM), as bool D x D matrices; either way narrow low-noise masks
    cost neither memory nor compute for the wide high-noise ones. A band is looked up in its own class only: the
    denoisers switch on each query's class (lax.switch outside any vmap runs one branch), so a batch of mixed sigmas
    (a Picard window) uses every sample's own mask and a traced sigma never retraces.
    """

    log_bands: jax.Array  # [S]
    count: jax.Array  # [S, D] int32
    band_class: jax.Array  # [S] int32, index into widths
    band_slot: jax.Array  # [S] int32, the band's row in its class's table
    tables: tuple[jax.Array, ...]  # per class: lists [S_c, D, W_c] int32, or dense [S_c, D, D] bool
    widths: tuple[int, ...] = eqx.field(static=True)
    dense: tuple[bool, ...] = eqx.field(static=True)

    def band(self, sigma):
        return band_index(self.log_bands, sigma)

    def operand(self, band, cls: int) -> ListMask | DenseMask:
        """The mask of one band (a scalar index) that belongs to class `cls`."""
        table = self.tables[cls][self.band_slot[band]]
        if self.dense[cls]:
            return DenseMask(table.astype(jnp.float32))
        return ListMask(table, valid_weights(self.count[band], self.widths[cls]))

    def row_width(self, cls: int) -> int:
        """float32 elements per row and pixel that a chunk of class `cls` holds (sizes chunks: rows_per_chunk)."""
        return DENSE_ROW_FLOATS if self.dense[cls] else self.widths[cls]

    def per_query(self, sigma, branch):
        """branch(cls, band) run for one query's sigma (a scalar) in that band's own class."""
        band = self.band(sigma[None])[0]
        return jax.lax.switch(self.band_class[band], [lambda b, c=c: branch(c, b) for c in range(len(self.widths))],
                              band)


def width_classes(count: np.ndarray, minimum: int = 8):
    """(widths, class of each band): each band's widest list rounded up to a power of two, capped at the widest."""
    top = int(count.max())
    per_band = [min(top, max(minimum, 1 << int(np.ceil(np.log2(max(int(c.max()), 1)))))) for c in count]
    widths = tuple(sorted(set(per_band)))
    return widths, np.array([widths.index(w) for w in per_band], np.int32)


def dense_classes(widths, band_class: np.ndarray, dim: int, budget: int) -> tuple[bool, ...]:
    """Widest first, a class is dense while its width is at least D / DENSE_FROM and its bands' bool D x D
    matrices still fit `budget` bytes (so dense classes are the widest ones)."""
    dense = [False] * len(widths)
    used = 0
    for c in reversed(range(len(widths))):
        need = int(np.sum(band_class == c)) * dim * dim
        if widths[c] * DENSE_FROM < dim or used + need > budget:
            break
        dense[c], used = True, used + need
    return tuple(dense)


def dense_table(lists, dim: int) -> np.ndarray:
    """[S][D] lists -> bool [S, D, D] with M[s, j, m] = 1 for j in lists[s][m]."""
    out = np.zeros((len(lists), dim, dim), bool)
    for i, band in enumerate(lists):
        for m, a in enumerate(band):
            out[i, a, m] = True
    return out


def masks_for(index, opts) -> PixelMasks:
    thr = opts.mask_threshold if opts.mask_threshold is not None else default_threshold(index.dataset_name)
    if not 0.0 <= float(thr) <= 1.0:
        raise UsageError(f"--mask-threshold must lie in [0, 1] (got {thr}).")
    bands, lists = build_masks(index, opts.sigmas, float(thr))
    count = np.array([[len(a) for a in band] for band in lists], np.int32)
    dim = count.shape[1]
    widths, cls = width_classes(count)
    dense = dense_classes(widths, cls, dim, DENSE_MASK_BYTES)
    slot = np.zeros(len(bands), np.int32)
    tables = []
    for c, w in enumerate(widths):
        members = np.flatnonzero(cls == c)
        slot[members] = np.arange(len(members))
        of_class = [lists[i] for i in members]
        tables.append(jnp.asarray(dense_table(of_class, dim) if dense[c] else pad_lists(of_class, w)))
    return PixelMasks(jnp.asarray(np.log(bands), jnp.float32), jnp.asarray(count), jnp.asarray(cls),
                      jnp.asarray(slot), tuple(tables), widths, dense)


class PcaLocalDenoiser(AbstractDenoiser):
    """Full-scan PCA-locality denoiser: exact per-pixel masked softmax over the whole index."""

    data: jax.Array  # [Np, D] in stored form (uint8 images), Np a multiple of every class's chunk
    row_ok: jax.Array  # [Np] bool
    masks: PixelMasks
    chunks: tuple[int, ...] = eqx.field(static=True)  # rows per chunk of each width class

    @exact_matmuls
    def __call__(self, x, sigma, *, key=None):
        flat = flatten(x).astype(jnp.float32)
        s = batch_sigma(sigma, flat.shape[0])

        def one(args):
            xq, sq = args
            inv2var = 0.5 / jnp.square(sq)

            def branch(cls: int, band):
                mask = self.masks.operand(band, cls)
                return masked_posterior_mean(xq, self.data, self.row_ok, mask, inv2var, self.chunks[cls])

            return self.masks.per_query(sq, branch)

        # one query at a time: each switches to its own band's class, and a query's work (N rows of its whole mask)
        # is large enough that batching queries would add nothing but memory
        return jax.lax.map(one, (flat, s)).reshape(x.shape)


def class_chunks(dim: int, masks: PixelMasks, cap: int) -> tuple[int, ...]:
    """Rows per chunk of each width class, as powers of two (so one padded row count serves all)."""
    return tuple(1 << int(np.floor(np.log2(rows_per_chunk(dim, masks.row_width(c), 1, cap))))
                 for c in range(len(masks.widths)))


def build(index, opts) -> PcaLocalDenoiser:
    masks = masks_for(index, opts)
    data = index.stored_rows()
    chunks = class_chunks(data.shape[1], masks, max(1, min(opts.chunk_size, len(data))))
    rows, ok = pad_rows(data, max(chunks))
    return PcaLocalDenoiser(device_rows(rows), jnp.asarray(ok), masks, chunks)

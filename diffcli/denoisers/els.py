"""Kamb & Ganguli (2024) equivariant local score machine (ELS) and its local-only variant (LS), circular padding.

ELS: output pixel q is the average of the centre pixels of every k x k patch of every training image at every
position p, weighted by softmax over (n, p) of -||patch_q(x) - patch_p(x_n)||^2 / 2 sigma^2. LS: only p = q.
The patch size grows with noise (a schedule, stretched over the sampler's sigmas); each size is its own compiled
branch, picked per sample by lax.switch on the sigma band, and the training images are streamed in chunks with a
per-pixel online log-sum-exp, so memory is bounded by one chunk.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffcli.denoisers import softmax
from diffcli.denoisers.base import AbstractDenoiser, batch_sigma, exact_matmuls
from diffcli.denoisers.masks import band_index, band_sigmas
from diffcli.denoisers.rows import chunk_rows
from diffcli.errors import UsageError

# Kamb & Ganguli's schedule calibrated on a CIFAR-10 U-Net, low -> high noise over 20 steps
CIFAR10_PATCH_SIZES = (3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 7, 9, 9, 11, 13, 13, 15, 17, 25)
CHUNK_BUDGET = 1 << 24  # float32 elements of one chunk's patch matrix plus its logits


def offsets(k: int) -> range:
    """Patch offsets of size k around the centre (symmetric for odd k; k = the side covers it exactly once)."""
    return range(-(k // 2), k - k // 2)


def patches(img, kh: int, kw: int):
    """img [C, H, W] -> circularly padded patches [H * W, C * kh * kw] (row = centre position)."""
    c, h, w = img.shape
    rolled = [jnp.roll(img, (-dy, -dx), axis=(1, 2)) for dy in offsets(kh) for dx in offsets(kw)]
    return jnp.stack(rolled, axis=1).transpose(2, 3, 0, 1).reshape(h * w, c * kh * kw)


def box_sum(img, kh: int, kw: int):
    """Circular k x k window sums of img [..., H, W] (the window of each centre position)."""
    out = jnp.zeros_like(img)
    for dy in offsets(kh):
        for dx in offsets(kw):
            out = out + jnp.roll(img, (-dy, -dx), axis=(-2, -1))
    return out


def stretch(sizes, count: int) -> np.ndarray:
    """A low -> high noise list of patch sizes stretched (nearest position) to `count` bands."""
    sizes = np.asarray(sizes)
    if count <= 1:
        return sizes[-1:] if count == 1 else sizes[:0]
    return sizes[np.round(np.linspace(0, len(sizes) - 1, count)).astype(int)]


class LocalScoreDenoiser(AbstractDenoiser):
    """ELS (equivariant=True) or LS (equivariant=False) over training images streamed in chunks."""

    chunks: jax.Array  # [K, Cn, C, H, W]
    row_ok: jax.Array  # [K, Cn]
    log_bands: jax.Array  # [S]
    band_branch: jax.Array  # [S] int32: which patch size a band uses
    sizes: tuple[tuple[int, int], ...] = eqx.field(static=True)
    equivariant: bool = eqx.field(static=True)

    def _one(self, x, sigma, kh: int, kw: int):
        c, h, w = x.shape
        inv2var = 0.5 / jnp.square(sigma)
        p0 = softmax.empty((h * w,), (c,))
        if self.equivariant:
            qp = patches(x, kh, kw)
            q2 = jnp.sum(qp * qp, axis=1)

            def body(p, chunk):
                imgs, ok = chunk
                tp = jax.vmap(lambda im: patches(im, kh, kw))(imgs).reshape(-1, qp.shape[1])
                t2 = jnp.sum(tp * tp, axis=1)
                d = jnp.maximum(q2[:, None] - 2.0 * qp @ tp.T + t2[None, :], 0.0)
                real = jnp.repeat(ok, h * w)
                logits = jnp.where(real[None, :], -d * inv2var, -jnp.inf)
                centres = imgs.transpose(0, 2, 3, 1).reshape(-1, c)
                return softmax.fold(p, logits, centres), None
        else:

            def body(p, chunk):
                imgs, ok = chunk
                d = box_sum(jnp.sum(jnp.square(imgs - x[None]), axis=1), kh, kw).reshape(imgs.shape[0], -1)
                logits = jnp.where(ok[:, None], -d * inv2var, -jnp.inf)  # [Cn, HW]
                centres = imgs.transpose(0, 2, 3, 1).reshape(imgs.shape[0], h * w, c)
                return softmax.fold_each(p, logits, centres, axis=0), None

        p, _ = jax.lax.scan(body, p0, (self.chunks, self.row_ok))
        return softmax.finish(p).T.reshape(c, h, w)

    @exact_matmuls
    def __call__(self, x, sigma, *, key=None):
        s = batch_sigma(sigma, x.shape[0])
        branch = self.band_branch[band_index(self.log_bands, s)]
        fns = [lambda xq, sq, kh=kh, kw=kw: self._one(xq, sq, kh, kw) for kh, kw in self.sizes]

        def one(args):
            xq, sq, bq = args
            return jax.lax.switch(bq, fns, xq, sq)

        return jax.lax.map(one, (x.astype(jnp.float32), s, branch))


def patch_plan(sigmas, sizes, shape):
    """(band sigmas [S], distinct clipped (kh, kw) sizes, branch index per band) for a schedule."""
    bands = band_sigmas(sigmas)  # ascending: low -> high noise, as the size list is written
    per_band = stretch(sizes, len(bands))
    _, h, w = shape
    clipped = [(int(min(k, h)), int(min(k, w))) for k in per_band]
    distinct = tuple(sorted(set(clipped)))
    return bands, distinct, np.array([distinct.index(k) for k in clipped], np.int32)


def _build(index, opts, equivariant: bool) -> LocalScoreDenoiser:
    if index.kind != "image":
        raise UsageError("the els and ls denoisers need an image index (they compare image patches).")
    sizes = opts.els_patch_sizes or CIFAR10_PATCH_SIZES
    if any(int(k) < 1 for k in sizes):
        raise UsageError(f"--els-patch-sizes must be positive whole numbers (got {','.join(map(str, sizes))}).")
    bands, distinct, branch = patch_plan(opts.sigmas, sizes, index.shape)
    c, h, w = index.shape
    kmax = max(kh * kw for kh, kw in distinct)
    per_image = h * w * (c * kmax + h * w) if equivariant else 4 * c * h * w
    chunk = int(max(1, min(opts.chunk_size, CHUNK_BUDGET // per_image)))
    rows, ok = chunk_rows(index.train_data(), chunk)
    return LocalScoreDenoiser(
        chunks=jnp.asarray(rows.reshape(rows.shape[0], rows.shape[1], c, h, w)), row_ok=jnp.asarray(ok),
        log_bands=jnp.asarray(np.log(bands), jnp.float32), band_branch=jnp.asarray(branch), sizes=distinct,
        equivariant=equivariant,
    )


def build_els(index, opts) -> LocalScoreDenoiser:
    return _build(index, opts, True)


def build_ls(index, opts) -> LocalScoreDenoiser:
    return _build(index, opts, False)

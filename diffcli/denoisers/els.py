"""Kamb & Ganguli (2024) equivariant local score machine (ELS) and its local-only variant (LS).

ELS: output pixel q is the average of the centre pixels of training patches, weighted by one softmax over every
(image n, position p) of -||patch_q(x) - patch_p(x_n)||^2 / 2 sigma^2. LS: only the patch at q, softmax over images.
Patch sets (`els_boundary`):
- "official" (Kamb & Ganguli's code): the query patch is padded circularly, the training patches are the
  (H - k + 1)(W - k + 1) of each image that fit inside it; the LS window is zero-padded (pixels outside drop out).
- "circular" (diffcli's own variant): training images are wrapped too (H W patches each); the LS window wraps.
The patch size is a function of sigma (els_scales.py); each size is its own compiled branch. A batch runs every
size one of its samples needs, all samples at once, with a per-sample sigma, and the training images are streamed
in chunks through one exact online softmax (softmax.py), so memory is bounded by one chunk.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffcli.denoisers import softmax
from diffcli.denoisers.base import AbstractDenoiser, batch_sigma, exact_matmuls
from diffcli.denoisers.els_scales import entry_index, schedule_points, sigma_edges
from diffcli.errors import UsageError

CHUNK_BUDGET = 1 << 24  # float32 logits of one chunk (all queries, all positions, all patches of the chunk)


def pad_images(imgs, kh: int, kw: int, mode: str):
    """imgs [..., H, W] padded by (kh // 2, kw // 2) on each side: 'wrap' (circular) or 'constant' (zeros)."""
    width = [(0, 0)] * (imgs.ndim - 2) + [(kh // 2, kh // 2), (kw // 2, kw // 2)]
    return jnp.pad(imgs, width, mode=mode)


def unfold(imgs, kh: int, kw: int):
    """imgs [n, C, H', W'] -> every patch that fits, [n, P, C * kh * kw] with P = (H' - kh + 1)(W' - kw + 1),
    rows in raster order of the patch's top-left corner, entries ordered (channel, dy, dx) as torch's F.unfold.
    Separable: kh row shifts, then kw column shifts of those (exact copies; kh + kw slices, not kh * kw)."""
    n, c, h, w = imgs.shape
    ph, pw = h - kh + 1, w - kw + 1
    rows = jnp.stack([imgs[:, :, dy:dy + ph, :] for dy in range(kh)], axis=2)  # [n, C, kh, ph, W]
    cols = jnp.stack([rows[..., dx:dx + pw] for dx in range(kw)], axis=3)  # [n, C, kh, kw, ph, pw]
    return cols.reshape(n, c * kh * kw, ph * pw).transpose(0, 2, 1)


def centres(imgs, kh: int, kw: int):
    """The centre pixels of unfold(imgs, kh, kw): [n, P, C]."""
    n, c, h, w = imgs.shape
    ph, pw = h - kh + 1, w - kw + 1
    mid = imgs[:, :, kh // 2:kh // 2 + ph, kw // 2:kw // 2 + pw]
    return mid.transpose(0, 2, 3, 1).reshape(n, ph * pw, c)


def box_sum(img, kh: int, kw: int, mode: str):
    """k x k window sums around every pixel of img [..., H, W], the window padded by `mode` ('constant': zeros)."""
    h, w = img.shape[-2:]
    padded = pad_images(img, kh, kw, mode)
    rows = sum(padded[..., dy:dy + h, :] for dy in range(kh))
    return sum(rows[..., dx:dx + w] for dx in range(kw))


def data_space(stored):
    """Stored images (uint8, or float32 already in data space) -> float32 in [-1, 1], as Index.train_data does."""
    if stored.dtype == jnp.uint8:
        return stored.astype(jnp.float32) / jnp.float32(127.5) - jnp.float32(1.0)
    return stored.astype(jnp.float32)


class LocalScoreDenoiser(AbstractDenoiser):
    """ELS (equivariant=True) or LS (equivariant=False) over the training images, one exact softmax per pixel."""

    images: jax.Array  # [N, C, H, W] in stored form
    log_edges: jax.Array  # [S - 1] float32, ascending: the log sigmas where the band changes
    band_branch: jax.Array  # [S] int32: which patch size a band uses
    sizes: tuple[tuple[int, int], ...] = eqx.field(static=True)
    equivariant: bool = eqx.field(static=True)
    boundary: str = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)

    def _chunks(self, per_image: int):
        """(images [K, c, C, H, W], real-row flags [K, c]) with c rows a chunk, c sized for `per_image` logits."""
        n = self.images.shape[0]
        c = int(max(1, min(self.chunk_size, n, CHUNK_BUDGET // max(per_image, 1))))
        pad = -n % c
        imgs = jnp.pad(self.images, ((0, pad),) + ((0, 0),) * (self.images.ndim - 1))
        ok = jnp.arange(n + pad) < n
        return imgs.reshape(-1, c, *self.images.shape[1:]), ok.reshape(-1, c)

    def _els(self, x, inv_var, kh: int, kw: int):
        """ELS posterior mean of every pixel of x [B, C, H, W]; inv_var [B] = 1 / sigma^2."""
        b, c, h, w = x.shape
        qp = unfold(pad_images(x, kh, kw, "wrap"), kh, kw)  # [B, HW, C k^2]: the circular query patches
        mode = "wrap" if self.boundary == "circular" else None
        per = h * w if mode else (h - kh + 1) * (w - kw + 1)  # training patches per image

        def body(p, chunk):
            stored, ok = chunk
            imgs = data_space(stored)
            src = pad_images(imgs, kh, kw, "wrap") if mode else imgs
            tp = unfold(src, kh, kw).reshape(-1, qp.shape[-1])  # [cn P, C k^2]
            half = 0.5 * jnp.sum(tp * tp, axis=1)
            half = jnp.where(jnp.repeat(ok, per), half, jnp.inf)  # padding rows: weight exactly 0
            # -||q - t||^2 / 2 sigma^2 up to the query's own ||q||^2, which is the same for every patch
            logits = (qp @ tp.T - half) * inv_var[:, None, None]  # [B, HW, cn P]
            vals = centres(src, kh, kw).reshape(-1, c)
            return softmax.fold(p, logits, vals), None

        imgs, ok = self._chunks(b * h * w * per)
        p, _ = jax.lax.scan(body, softmax.empty((b, h * w), (c,)), (imgs, ok))
        return softmax.finish(p).transpose(0, 2, 1).reshape(b, c, h, w)

    def _ls(self, x, inv_var, kh: int, kw: int):
        """LS posterior mean of every pixel: per pixel a softmax over images of the window's squared distance."""
        b, c, h, w = x.shape
        mode = "wrap" if self.boundary == "circular" else "constant"

        def body(p, chunk):
            stored, ok = chunk
            imgs = data_space(stored)  # [cn, C, H, W]
            sq = jnp.sum(jnp.square(x[:, None] - imgs[None]), axis=2)  # [B, cn, H, W]
            d = box_sum(sq, kh, kw, mode).reshape(b, imgs.shape[0], h * w)
            logits = jnp.where(ok[None, :, None], -0.5 * d * inv_var[:, None, None], -jnp.inf)
            vals = imgs.transpose(0, 2, 3, 1).reshape(1, imgs.shape[0], h * w, c)
            return softmax.fold_each(p, logits, vals, axis=1), None

        imgs, ok = self._chunks(b * h * w * max(c, 2))
        p, _ = jax.lax.scan(body, softmax.empty((b, h * w), (c,)), (imgs, ok))
        return softmax.finish(p).transpose(0, 2, 1).reshape(b, c, h, w)

    def branches(self, sigma):
        """The patch-size branch of each sigma [B]."""
        band = jnp.searchsorted(self.log_edges, jnp.log(jnp.maximum(sigma, 1e-30)))
        return self.band_branch[band]

    @exact_matmuls
    def __call__(self, x, sigma, *, key=None):
        x = x.astype(jnp.float32)
        s = batch_sigma(sigma, x.shape[0])
        inv_var = 1.0 / jnp.square(s)
        branch = self.branches(s)
        one = self._els if self.equivariant else self._ls
        out = jnp.zeros_like(x)
        for i, (kh, kw) in enumerate(self.sizes):  # every size a sample of the batch needs, on the whole batch
            use = branch == i
            got = jax.lax.cond(jnp.any(use), lambda kh=kh, kw=kw: one(x, inv_var, kh, kw), lambda: jnp.zeros_like(x))
            out = jnp.where(use[:, None, None, None], got, out)
        return out


def patch_plan(sigmas, shape, *, scales=None, patch_sizes=None, equivariant=True, boundary="official"):
    """(log band edges [S - 1], distinct (kh, kw) sizes, branch index per band [S]).

    With the schedule's sigmas: a band per sigma (nearest in log sigma), each with the size of its own sigma, so only
    the sizes the schedule uses are compiled. Without: the bands of the size schedule itself, exact for any sigma.
    """
    t, pairs = schedule_points(scales=scales, patch_sizes=patch_sizes, shape=shape, equivariant=equivariant,
                               boundary=boundary)
    s = None if sigmas is None else np.unique(np.asarray(sigmas, np.float64))
    s = None if s is None or not np.any(s > 0) else s[s > 0]
    if s is None:
        edges, per_band = sigma_edges(t), pairs
    else:
        edges = np.exp(0.5 * (np.log(s[1:]) + np.log(s[:-1])))
        per_band = [pairs[i] for i in entry_index(t, s)]
    distinct = tuple(sorted(set(per_band)))
    branch = np.array([distinct.index(k) for k in per_band], np.int32)
    return np.log(edges), distinct, branch


def _build(index, opts, equivariant: bool) -> LocalScoreDenoiser:
    if index.kind != "image":
        raise UsageError("the els and ls denoisers need an image index (they compare image patches).")
    log_edges, distinct, branch = patch_plan(opts.sigmas, index.shape, scales=opts.els_scales,
                                             patch_sizes=opts.els_patch_sizes, equivariant=equivariant,
                                             boundary=opts.els_boundary)
    images = np.asarray(index.images)
    if images.dtype != np.uint8:
        images = index.train_data()
    return LocalScoreDenoiser(
        images=jnp.asarray(images.reshape(-1, *index.shape)), log_edges=jnp.asarray(log_edges, jnp.float32),
        band_branch=jnp.asarray(branch), sizes=distinct, equivariant=equivariant, boundary=opts.els_boundary,
        chunk_size=int(opts.chunk_size),
    )


def build_els(index, opts) -> LocalScoreDenoiser:
    return _build(index, opts, True)


def build_ls(index, opts) -> LocalScoreDenoiser:
    return _build(index, opts, False)

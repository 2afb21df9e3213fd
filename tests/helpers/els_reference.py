"""A float64 NumPy transcription of Kamb & Ganguli's official ELS and LS rules (Kambm/convolutional_diffusion,
utils/idealscore.py: LocalEquivScoreModule and LocalScoreModule), the reference for diffcli's els.py.

Their modules take a VP point x_vp = a x0 + b eps (a = sqrt(1 - beta), b = sqrt(beta)) and return the score
-(x_vp - a E[centre]) / b^2; here a = 1 / sqrt(1 + sigma^2), b = sigma a, and the posterior mean is read back from
the score (Tweedie), so the comparison also checks diffcli's sigma-space form of their temperature.
- ELS: the query is padded circularly by k // 2 (F.pad mode='circular') and unfolded; the training patches are
  F.unfold(images, k, padding=0), only the ones that fit; exp_args = -(|q|^2 - 2 a q.p + a^2 |p|^2) / (2 b^2),
  normalised over (image, position) for each output pixel; the value is the patch's centre pixel, channels joint.
- LS: the per-pixel squared distance sum_c (x_vp - a x_n)^2 is unfolded with zero padding k // 2 and summed over the
  window, normalised over images; the value is the image's own pixel.
One batch holds every training image (their loader's per-batch mean is then a constant factor). `circular=True`
wraps the training images (and the LS window) too: diffcli's own variant, not theirs.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _unfold(img, k):
    """img [C, H', W'] -> patches [P, C * k * k] (every k x k patch that fits), P in raster order."""
    win = sliding_window_view(img, (k, k), axis=(1, 2))  # [C, ph, pw, k, k]
    c, ph, pw = win.shape[:3]
    return win.transpose(1, 2, 0, 3, 4).reshape(ph * pw, c * k * k)


def _softmax_mean(args, values, axis):
    w = np.exp(args - args.max(axis=axis, keepdims=True))
    return np.tensordot(w / w.sum(axis=axis, keepdims=True), values, axes=([axis], [0]))


def vp(sigma):
    """(a, b) of the VP point x_vp = a x for sigma-space noise level sigma."""
    a = 1.0 / np.sqrt(1.0 + sigma**2)
    return a, sigma * a


def els_score(x_vp, a, b, images, k, circular=False):
    """Official LocalEquivScoreModule.forward for one query x_vp [C, H, W] (float64)."""
    c, h, w = x_vp.shape
    d = k // 2
    xp = _unfold(np.pad(x_vp, ((0, 0), (d, d), (d, d)), mode="wrap"), k)  # [HW, C k^2]
    xnorms = (xp**2).sum(1)
    src = [np.pad(im, ((0, 0), (d, d), (d, d)), mode="wrap") if circular else im for im in images]
    patches = np.concatenate([_unfold(im, k) for im in src])  # [NP, C k^2]
    pnorms = (patches**2).sum(1)
    centre = (k * k) // 2
    pcenters = patches.reshape(len(patches), c, k * k)[:, :, centre]  # [NP, C]
    exp_args = -(xnorms[:, None] - 2 * a * xp @ patches.T + a**2 * pnorms[None]) / (2 * b**2)  # [HW, NP]
    mean_centre = _softmax_mean(exp_args.T, pcenters, 0)  # [HW, C]
    return -(x_vp - a * mean_centre.T.reshape(c, h, w)) / b**2


def ls_score(x_vp, a, b, images, k, circular=False):
    """Official LocalScoreModule.forward for one query x_vp [C, H, W] (float64)."""
    c, h, w = x_vp.shape
    d = k // 2
    diffs = x_vp[None] - a * np.asarray(images)  # [N, C, H, W]
    sq = (diffs**2).sum(1)  # [N, H, W]
    padded = np.pad(sq, ((0, 0), (d, d), (d, d)), mode="wrap" if circular else "constant")
    exp_args = -sliding_window_view(padded, (k, k), axis=(1, 2)).sum((-1, -2)) / (2 * b**2)  # [N, H, W]
    wts = np.exp(exp_args - exp_args.max(0, keepdims=True))
    wts /= wts.sum(0, keepdims=True)
    return -(wts[:, None] * diffs).sum(0) / b**2


def denoise(x, sigma, images, k, *, equivariant=True, circular=False):
    """The posterior mean D(x, sigma) of one sigma-space query x [C, H, W] through the official score (Tweedie)."""
    x = np.asarray(x, np.float64)
    images = np.asarray(images, np.float64)
    a, b = vp(float(sigma))
    score = (els_score if equivariant else ls_score)(a * x, a, b, images, k, circular)
    return (a * x + b**2 * score) / a


def sample_euler(x, sigmas, images, sizes, **kw):
    """Euler (DDIM, eta 0) in sigma-space from x at sigmas[0] down to sigmas[-1] = 0, patch size sizes[i] at step
    i: x <- D + (s'/s)(x - D)."""
    x = np.asarray(x, np.float64).copy()
    for i in range(len(sigmas) - 1):
        d = np.stack([denoise(xi, sigmas[i], images, sizes[i], **kw) for xi in x])
        x = d + (sigmas[i + 1] / sigmas[i]) * (x - d)
    return x

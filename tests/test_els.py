"""ELS and LS (Kamb & Ganguli) against a direct float64 NumPy implementation; LS with a whole-image patch = empirical."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

from diffcli.denoisers.els import CIFAR10_PATCH_SIZES, build_els, build_ls, patch_plan, stretch
from diffcli.denoisers.options import ElsOptions
from diffcli.index.store import Index

call = eqx.filter_jit(lambda d, x, s: d(x, s))


def tiny_index(n=5, shape=(2, 5, 4), seed=0):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n, *shape)).astype(np.uint8)
    data = imgs.reshape(n, -1).astype(np.float32) / 127.5 - 1
    z = np.zeros(data.shape[1], np.float32)
    return Index(kind="image", shape=shape, images=imgs, heldout=imgs[:1], proxy=data, mean=z,
                 pca_components=np.eye(len(z), dtype=np.float32)[:2], pca_variances=np.ones(2, np.float32),
                 residual_variance=0.0, attrs={"dataset": "shapes"})


def reference(x, train, k, sigma, equivariant):
    """Loop over every output pixel, training image and position, circular wrap, float64."""
    x, train = np.asarray(x, np.float64), np.asarray(train, np.float64)
    c, h, w = x.shape
    kh, kw = min(k, h), min(k, w)
    offh, offw = range(-(kh // 2), kh - kh // 2), range(-(kw // 2), kw - kw // 2)

    def patch(img, i, j):
        return np.stack([img[:, (i + a) % h, (j + b) % w] for a in offh for b in offw])

    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            q = patch(x, i, j)
            logits, centres = [], []
            positions = [(a, b) for a in range(h) for b in range(w)] if equivariant else [(i, j)]
            for img in train:
                for a, b in positions:
                    logits.append(-((q - patch(img, a, b)) ** 2).sum() / (2 * sigma**2))
                    centres.append(img[:, a, b])
            lg = np.array(logits)
            wt = np.exp(lg - lg.max())
            out[:, i, j] = (wt / wt.sum()) @ np.array(centres)
    return out


@pytest.mark.parametrize("equivariant", [True, False])
@pytest.mark.parametrize("k,sigma", [(3, 0.3), (3, 1.0), (5, 0.6)])
def test_matches_direct_float64(equivariant, k, sigma):
    idx = tiny_index()
    build = build_els if equivariant else build_ls
    den = build(idx, ElsOptions(sigmas=np.array([sigma, 0.0]), els_patch_sizes=(k,), chunk_size=2))
    train = idx.train_data().reshape(-1, *idx.shape)
    x = train[:2] + sigma * np.random.default_rng(1).standard_normal(train[:2].shape).astype(np.float32)
    got = np.asarray(call(den, jnp.asarray(x), sigma))
    for b in range(2):
        np.testing.assert_allclose(got[b], reference(x[b], train, k, sigma, equivariant), atol=2e-5)


def test_ls_with_whole_image_patch_equals_empirical():
    idx = tiny_index(n=7, shape=(1, 5, 5))
    sigma = 0.7
    den = build_ls(idx, ElsOptions(sigmas=np.array([sigma, 0.0]), els_patch_sizes=(9,), chunk_size=3))
    data = idx.train_data().astype(np.float64)
    x = data[:3] + sigma * np.random.default_rng(2).standard_normal(data[:3].shape)
    d = ((x[:, None] - data[None]) ** 2).sum(-1)
    w = np.exp(-(d - d.min(1, keepdims=True)) / (2 * sigma**2))
    ref = (w / w.sum(1, keepdims=True)) @ data
    got = np.asarray(call(den, jnp.asarray(x.reshape(3, *idx.shape), jnp.float32), sigma)).reshape(3, -1)
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_patch_schedule_grows_with_noise_and_selects_per_sample():
    sig = np.geomspace(0.01, 10, 20)[::-1]
    bands, sizes, branch = patch_plan(np.append(sig, 0.0), CIFAR10_PATCH_SIZES, (3, 32, 32))
    got = [sizes[b][0] for b in branch]
    assert got == list(CIFAR10_PATCH_SIZES) and np.all(np.diff(bands) > 0)
    assert list(stretch(CIFAR10_PATCH_SIZES, 10)) == sorted(stretch(CIFAR10_PATCH_SIZES, 10))
    _, sizes, _ = patch_plan(sig, CIFAR10_PATCH_SIZES, (1, 8, 8))  # clipped to the image
    assert max(k for k, _ in sizes) == 8
    idx = tiny_index()
    den = build_ls(idx, ElsOptions(sigmas=np.array([2.0, 0.1, 0.0]), els_patch_sizes=(1, 5)))
    train = idx.train_data().reshape(-1, *idx.shape)
    x = jnp.asarray(train[:2] + 0.05)
    both = np.asarray(call(den, x, jnp.asarray([0.1, 2.0])))
    np.testing.assert_allclose(both[0], reference(np.asarray(x[0]), train, 1, 0.1, False), atol=2e-5)
    np.testing.assert_allclose(both[1], reference(np.asarray(x[1]), train, 5, 2.0, False), atol=2e-5)

"""PCA-locality masks and denoiser against dense float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcli.denoisers import pca_local
from diffcli.denoisers.masks import band_sigmas, build_masks, dense_mask
from diffcli.denoisers.options import PcaLocalOptions
from diffcli.denoisers.pca_local import build, dense_classes
from diffcli.denoisers.presets import default_threshold
from diffcli.index.stats import pca_stats
from diffcli.index.store import Index


def image_index(n=40, shape=(2, 4, 4), seed=0, rank=None, dataset="shapes"):
    rng = np.random.default_rng(seed)
    # smooth-ish random images, so the gain has real structure
    base = rng.standard_normal((n, *shape)).cumsum(axis=-1).cumsum(axis=-2)
    imgs = np.clip((base / np.abs(base).max() + 1) * 127.5, 0, 255).astype(np.uint8)
    data = imgs.reshape(n, -1).astype(np.float32) / 127.5 - 1
    st = pca_stats(data)
    k = rank or data.shape[1]
    resid = float(st["variances"][k:].mean()) if k < data.shape[1] else 0.0
    return Index(kind="image", shape=shape, images=imgs, heldout=imgs[:2], proxy=data, mean=st["mean"],
                 pca_components=st["components"][:k], pca_variances=st["variances"][:k], residual_variance=resid,
                 attrs={"dataset": dataset})


def reference_mask(index, sigma, thr):
    v = index.pca_components.astype(np.float64)
    lam = index.pca_variances.astype(np.float64)
    d = v.shape[1]
    r = index.residual_variance if v.shape[0] < d else 0.0
    g = v.T @ np.diag(lam / (lam + sigma**2)) @ v + (r / (r + sigma**2)) * (np.eye(d) - v.T @ v)
    dg = np.diag(g).copy()
    dg[np.abs(dg) < 1e-6] = 1.0
    rr = g / dg[:, None]
    return np.abs(rr) >= thr * np.abs(rr).max()


def reference_denoise(x, data, mask, sigma):
    """x0[b, m] = sum_n softmax_n(-sum_j M[j, m] (x_j - x_nj)^2 / 2 sigma^2) x_n[m], in float64."""
    x, data = np.asarray(x, np.float64), np.asarray(data, np.float64)
    diff2 = (x[:, None, :] - data[None]) ** 2  # [B, N, D]
    d = diff2 @ mask.astype(np.float64)  # [B, N, D(m)]
    logit = -d / (2 * sigma**2)
    w = np.exp(logit - logit.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return np.einsum("bnm,nm->bm", w, data)


@pytest.mark.parametrize("rank", [None, 10])
@pytest.mark.parametrize("thr", [0.02, 0.1, 0.3])
def test_masks_match_dense_reference(rank, thr):
    idx = image_index(rank=rank)
    sig = [0.05, 0.5, 5.0]
    bands, lists = build_masks(idx, np.array(sig + [0.0]), thr)
    np.testing.assert_allclose(bands, sig)
    for i, s in enumerate(sig):
        ref = reference_mask(idx, s, thr)
        got = dense_mask(lists[i], idx.dim)
        # entries within float32 rounding of the cut may differ; there should be none or almost none
        assert (got != ref).sum() <= 2, (s, (got != ref).sum())


@pytest.fixture(params=["dense", "lists"])
def mask_form(request, monkeypatch):
    """Both storage forms of the masks: dense matrices (the default at these sizes) and padded neighbour lists."""
    if request.param == "lists":
        monkeypatch.setattr(pca_local, "DENSE_MASK_BYTES", 0)
    return request.param


@pytest.mark.parametrize("sigma", [0.02, 0.3, 2.0])
def test_matches_masked_reference(sigma, mask_form):
    idx = image_index()
    thr = 0.05
    den = build(idx, PcaLocalOptions(sigmas=np.array([sigma, 0.0]), mask_threshold=thr, chunk_size=7))
    data = idx.train_data()
    x = data[:5] + sigma * np.random.default_rng(1).standard_normal(data[:5].shape).astype(np.float32)
    ref = reference_denoise(x, data, reference_mask(idx, sigma, thr), sigma)
    got = np.asarray(den(jnp.asarray(x.reshape(5, *idx.shape)), sigma)).reshape(5, -1)
    np.testing.assert_allclose(got, ref, atol=5e-5)


def test_all_ones_mask_equals_empirical():
    idx = image_index(n=30)
    data = idx.train_data()
    den = build(idx, PcaLocalOptions(sigmas=np.array([0.4, 0.0]), mask_threshold=0.0, chunk_size=8))
    assert int(den.masks.count.min()) == idx.dim and den.masks.widths == (idx.dim,)
    x = data[:4] + 0.4 * np.random.default_rng(2).standard_normal(data[:4].shape).astype(np.float32)
    d = ((x[:, None].astype(np.float64) - data[None]) ** 2).sum(-1)
    w = np.exp(-(d - d.min(1, keepdims=True)) / (2 * 0.4**2))
    ref = (w / w.sum(1, keepdims=True)) @ data.astype(np.float64)
    got = np.asarray(den(jnp.asarray(x.reshape(4, *idx.shape)), 0.4)).reshape(4, -1)
    np.testing.assert_allclose(got, ref, atol=3e-5)


def test_band_lookup_nearest_in_log_sigma_and_no_retrace(traces):
    idx = image_index()
    sig = np.array([2.0, 0.5, 0.1, 0.0])
    den = build(idx, PcaLocalOptions(sigmas=sig, mask_threshold=0.05))
    x = jnp.asarray(idx.train_data()[:3].reshape(3, *idx.shape))
    f = jax.jit(traces.wrap(lambda d, x, s: d(x, s)))
    # a sigma near 0.5 in log space uses the 0.5 band: the same as calling exactly at 0.5 with that sigma's mask
    ref = reference_denoise(np.asarray(x).reshape(3, -1), idx.train_data(), reference_mask(idx, 0.5, 0.05), 0.45)
    np.testing.assert_allclose(np.asarray(f(den, x, 0.45)).reshape(3, -1), ref, atol=5e-5)
    assert traces.count == 1
    f(den, x, 0.11)
    assert traces.count == 1  # a new scalar sigma: no retrace
    f(den, x, jnp.asarray([0.1, 1.9, 0.6]))
    assert traces.count == 2  # [B] sigma is a new shape, traced once
    f(den, x, jnp.asarray([0.2, 0.3, 0.9]))
    assert traces.count == 2


def test_defaults():
    assert default_threshold("afhq") == 0.04 and default_threshold("mnist") == 0.02
    assert default_threshold("shapes") == 0.03 and default_threshold(None) == 0.03
    assert len(band_sigmas(np.geomspace(0.01, 10, 100))) == 32


def test_mixed_sigmas_in_one_batch_use_their_own_masks(mask_form):
    """A batch of samples at different sigmas (a Picard window) equals each sample denoised on its own."""
    idx = image_index(n=60, shape=(2, 6, 6))
    thr = 0.05
    sig = np.array([0.3, 2.0, 0.3], np.float32)
    den = build(idx, PcaLocalOptions(sigmas=np.array([2.0, 0.3, 0.0]), mask_threshold=thr, chunk_size=16))
    widths = den.masks.widths
    assert len(widths) == 2 and widths[0] < widths[1]  # narrow low-noise masks get their own class
    assert den.masks.dense == ((True, True) if mask_form == "dense" else (False, False))
    data = idx.train_data()
    x = data[:3] + sig[:, None] * np.random.default_rng(5).standard_normal(data[:3].shape).astype(np.float32)
    got = np.asarray(den(jnp.asarray(x.reshape(3, *idx.shape)), jnp.asarray(sig))).reshape(3, -1)
    for i in range(3):
        ref = reference_denoise(x[i:i + 1], data, reference_mask(idx, float(sig[i]), thr), float(sig[i]))
        np.testing.assert_allclose(got[i], ref[0], atol=5e-5)
    # a wrong band's mask moves the output by far more than the tolerance: the check can fail
    wrong = reference_denoise(x[:1], data, reference_mask(idx, 2.0, thr), 0.3)
    assert np.abs(wrong[0] - got[0]).max() > 1e-2


def test_dense_classes_take_the_widest_within_budget():
    widths = (8, 64, 512)
    band_class = np.array([0, 1, 1, 2])
    dim = 1024
    assert dense_classes(widths, band_class, dim, 10**9) == (False, True, True)  # 8 < 1024 / 64
    assert dense_classes(widths, band_class, dim, 3 * dim * dim) == (False, True, True)
    assert dense_classes(widths, band_class, dim, 2 * dim * dim) == (False, False, True)  # class 1 needs 2 more
    assert dense_classes(widths, band_class, dim, 0) == (False, False, False)


def test_picard_over_pca_local_reaches_the_sequential_sample(mask_form):
    """A Picard round evaluates the denoiser at every sigma of its block in one batch. One block of K rounds is exact
    (finite termination), so it must equal sequential Euler from the same noise: it does only if every sample in the
    batch uses its own sigma's mask (a batch-wide mask class put 0.29 between them)."""
    from diffcli.solvers import get_solver

    idx = image_index(n=60, shape=(2, 6, 6))
    sig = np.geomspace(3.0, 0.3, 8).tolist() + [0.0]  # the last D (at 0.3) depends on its mask
    den = build(idx, PcaLocalOptions(sigmas=np.array(sig), mask_threshold=0.2, chunk_size=16))
    assert len(den.masks.widths) > 1  # the window spans several mask classes
    x_t = 3.0 * jax.random.normal(jax.random.PRNGKey(2), (2, *idx.shape))
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    seq = get_solver("euler")(den, x_t, jnp.asarray(sig), key=keys).x0
    par = get_solver("picard")(den, x_t, jnp.asarray(sig), key=keys, picard_mode="ode", picard_blocks=1,
                               picard_iters=8).x0
    np.testing.assert_allclose(np.asarray(par), np.asarray(seq), atol=1e-4)

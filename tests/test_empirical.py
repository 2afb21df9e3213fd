"""The exact empirical denoiser against a float64 NumPy reference, including both limits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcli.denoisers.empirical import EmpiricalDenoiser, chunk_logits
from diffcli.denoisers.softmax import empty, finish, fold, merge


def reference(x, data, sigma):
    x, data = np.asarray(x, np.float64).reshape(len(x), -1), np.asarray(data, np.float64)
    d = ((x[:, None, :] - data[None]) ** 2).sum(-1)
    logits = -d / (2 * sigma**2)
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (w / w.sum(axis=1, keepdims=True)) @ data


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(0).uniform(-1, 1, (300, 16)).astype(np.float32)


@pytest.mark.parametrize("sigma", [1e-3, 1e-2, 0.1, 0.5, 1.0, 3.0, 10.0, 1e2, 1e3])
def test_matches_float64_reference(data, sigma):
    den = EmpiricalDenoiser.from_data(data, chunk=64)
    x = data[:6] + sigma * np.random.default_rng(1).standard_normal((6, 16)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(den(jnp.asarray(x), sigma)), reference(x, data, sigma), atol=2e-5, rtol=1e-4)


def test_limits_nearest_point_and_mean(data):
    den = EmpiricalDenoiser.from_data(data, chunk=50)
    x = np.random.default_rng(2).uniform(-1, 1, (5, 16)).astype(np.float32)
    nearest = data[((x[:, None] - data[None]) ** 2).sum(-1).argmin(1)]
    np.testing.assert_allclose(np.asarray(den(jnp.asarray(x), 1e-4)), nearest, atol=1e-6)
    np.testing.assert_allclose(np.asarray(den(jnp.asarray(x), 1e5)), np.broadcast_to(data.mean(0), (5, 16)), atol=1e-5)


def test_chunked_equals_unchunked_and_per_sample_sigma(data):
    x = jnp.asarray(data[:4] + 0.3)
    sig = jnp.asarray([0.05, 0.2, 1.0, 5.0])
    whole = EmpiricalDenoiser.from_data(data, chunk=300)(x, sig)
    for chunk in (7, 64, 299):  # 7 and 299 leave a padded last chunk
        np.testing.assert_allclose(np.asarray(EmpiricalDenoiser.from_data(data, chunk=chunk)(x, sig)),
                                   np.asarray(whole), atol=1e-6)
    for i in range(4):
        np.testing.assert_allclose(np.asarray(whole[i]), reference(np.asarray(x[i:i + 1]), data, float(sig[i]))[0],
                                   atol=2e-5)


def test_merge_of_partials_is_exact(data):
    x = jnp.asarray(data[:3] + 0.1)
    inv = jnp.full((3,), 1 / 0.3**2)
    xs = jnp.asarray(data)
    half = 0.5 * jnp.sum(xs * xs, axis=1)

    def part(lo, hi):
        return fold(empty((3,), (16,)), chunk_logits(x, xs[lo:hi], half[lo:hi], inv), xs[lo:hi])

    whole, merged = part(0, 300), merge(part(0, 120), part(120, 300))
    np.testing.assert_allclose(np.asarray(finish(merged)), np.asarray(finish(whole)), atol=1e-6)


def test_images_keep_their_shape_and_jit_does_not_recompile(digits_index, traces):
    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.options import StreamOptions

    den = build_denoiser("empirical", digits_index, StreamOptions(chunk_size=512))
    f = jax.jit(traces.wrap(lambda d, x, s: d(x, s)))
    x = jnp.zeros((3, 1, 8, 8))
    assert f(den, x, 1.0).shape == (3, 1, 8, 8)
    f(den, x + 1, 2.0)
    assert traces.count == 1  # new values of the same shapes: no retrace

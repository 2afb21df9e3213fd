"""The gmm denoiser against a float64 NumPy closed form, a Monte-Carlo posterior mean and its limits."""

import dataclasses

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from diffcli.denoisers.gmm import GMMDenoiser, build
from diffcli.errors import DiffcliError, UsageError
from tests.helpers.gaussian_oracle import x64


def mixture(dim=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    means = 2.0 * rng.standard_normal((k, dim))
    stds = rng.uniform(0.2, 0.8, k)
    weights = rng.uniform(0.5, 1.5, k)
    return means, stds, weights / weights.sum()


def numpy_posterior_mean(x, sigma, means, stds, weights):
    """E[x0 | x] in float64, written from the definition (component posteriors times Gaussian shrinkage)."""
    dim = x.shape[1]
    var = stds**2 + sigma**2
    sq = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    logp = np.log(weights) - 0.5 * dim * np.log(2 * np.pi * var) - 0.5 * sq / var
    r = np.exp(logp - logsumexp(logp, axis=1, keepdims=True))
    post = means[None] + (stds**2 / var)[None, :, None] * (x[:, None, :] - means[None])
    return (r[:, :, None] * post).sum(1)


@pytest.mark.parametrize("sigma", [0.01, 0.3, 1.0, 5.0, 80.0])
def test_matches_numpy_closed_form_float64(sigma):
    means, stds, weights = mixture()
    rng = np.random.default_rng(1)
    x = means[rng.integers(0, 3, 16)] + np.sqrt(0.25 + sigma**2) * rng.standard_normal((16, 5))
    with x64():
        den = GMMDenoiser.from_arrays(means, stds, weights, dtype=np.float64)
        got = np.asarray(den(jnp.asarray(x), sigma))
    np.testing.assert_allclose(got, numpy_posterior_mean(x, sigma, means, stds, weights), rtol=1e-10, atol=1e-10)


def test_float32_close_to_float64_and_per_sample_sigma():
    means, stds, weights = mixture()
    rng = np.random.default_rng(2)
    x = 3.0 * rng.standard_normal((6, 5))
    sig = np.array([0.05, 0.2, 0.5, 1.0, 3.0, 10.0])
    den = GMMDenoiser.from_arrays(means, stds, weights)
    got = np.asarray(eqx.filter_jit(lambda d, x, s: d(x, s))(den, jnp.asarray(x, jnp.float32),
                                                              jnp.asarray(sig, jnp.float32)))
    want = np.stack([numpy_posterior_mean(x[i:i + 1], s, means, stds, weights)[0] for i, s in enumerate(sig)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_monte_carlo_posterior_mean():
    """E[x0 | x] by self-normalised importance sampling from the prior: sum x0_i N(x; x0_i, s^2) / sum N(...)."""
    means, stds, weights = mixture(dim=2, k=3, seed=3)
    rng = np.random.default_rng(4)
    n, sigma = 400_000, 0.7
    labels = rng.choice(3, size=n, p=weights)
    x0 = means[labels] + stds[labels, None] * rng.standard_normal((n, 2))
    den = GMMDenoiser.from_arrays(means, stds, weights)
    for x in (means[0] + 0.3, 0.5 * (means[1] + means[2])):
        logw = -0.5 * ((x0 - x) ** 2).sum(1) / sigma**2
        w = np.exp(logw - logw.max())
        w /= w.sum()
        est = w @ x0
        se = np.sqrt(w**2 @ (x0 - est) ** 2)  # delta-method standard error of the ratio estimator
        got = np.asarray(den(jnp.asarray(x[None], jnp.float32), sigma))[0]
        assert np.all(np.abs(got - est) < 5 * se + 1e-4), (got, est, se)


def test_limits_large_and_small_sigma():
    means, stds, weights = mixture()
    with x64():
        den = GMMDenoiser.from_arrays(means, stds, weights, dtype=np.float64)
        x = jnp.asarray(np.random.default_rng(5).standard_normal((3, 5)))
        np.testing.assert_allclose(np.asarray(den(x, 1e6)), np.broadcast_to(weights @ means, (3, 5)), atol=1e-6)
        # a point at a component mean with a tiny sigma denoises to itself
        at_mean = jnp.asarray(means[:1])
        np.testing.assert_allclose(np.asarray(den(at_mean, 1e-6)), means[:1], atol=1e-9)


def test_image_shaped_input_and_bad_arrays():
    den = GMMDenoiser.from_arrays(np.zeros((2, 12)), [0.5, 0.5], [1, 1])
    x = jnp.ones((4, 3, 2, 2))
    np.testing.assert_allclose(np.asarray(den(x, 1.0)), 0.2 * np.ones((4, 3, 2, 2)), rtol=1e-6)
    with pytest.raises(UsageError):
        GMMDenoiser.from_arrays(np.zeros((2, 3)), [1.0], [1.0, 1.0])
    with pytest.raises(UsageError):
        GMMDenoiser.from_arrays(np.zeros((2, 3)), [1.0, -1.0], [1.0, 1.0])


def test_build_from_index(tmp_path):
    from diffcli.data import load_dataset
    from diffcli.index import open_index
    from diffcli.index.build import build_index

    index = open_index(build_index(load_dataset("gmm:dim=6,components=3,n=200"), tmp_path / "g.h5"))
    den = build(index, None)
    x = jnp.asarray(index.train_data()[:4])
    want = numpy_posterior_mean(np.asarray(x, np.float64), 0.5, index.gmm["means"].astype(np.float64),
                                index.gmm["stds"].astype(np.float64), index.gmm["weights"].astype(np.float64))
    np.testing.assert_allclose(np.asarray(den(x, 0.5)), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(DiffcliError, match="gmm dataset"):
        build(dataclasses.replace(index, gmm=None), None)

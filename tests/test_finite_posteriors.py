"""Posterior means are finite convex combinations of data rows for every finite x and sigma in [1e-4, 1e4].

Extreme inputs (|x| up to 1e6, the point Heun's first EDM step lands on) once made the empirical softmax return NaN.
Each denoiser is jitted once (fixed batch, [B] sigma) and fed hypothesis-drawn magnitudes and sigmas.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from diffcli.denoisers import build_denoiser
from diffcli.denoisers.options import denoiser_options

EPS = float(np.finfo(np.float32).eps)
BATCH = 2
SIGMAS = np.geomspace(1e-4, 1e4, 12)  # bands of the sigma-dependent denoisers span the whole tested range
PROPERTY = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

log_sigma = st.floats(-4.0, 4.0)
log_scale = st.floats(-3.0, 6.0)
seed = st.integers(0, 2**16)
around = st.sampled_from(["row", "origin"])


def queries(data, shape, log_scale, seed, around):
    """BATCH points: a data row (or the origin) plus 10^log_scale times a standard normal, float32."""
    rng = np.random.default_rng(seed)
    base = data[rng.integers(0, len(data), BATCH)] if around == "row" else np.zeros((BATCH, data.shape[1]))
    x = base + 10.0**log_scale * rng.standard_normal((BATCH, data.shape[1]))
    return jnp.asarray(x.reshape(BATCH, *shape), jnp.float32)


def check_in_box(out, lo, hi, scale=1.0):
    """Finite, and within [lo, hi] up to float32 rounding of a weighted mean of values of size `scale`."""
    out = np.asarray(out).reshape(BATCH, -1)
    assert np.all(np.isfinite(out))
    tol = 128 * EPS * scale
    assert np.all(out >= lo - tol) and np.all(out <= hi + tol), (out.min(), out.max(), lo.min(), hi.max())


@pytest.fixture(scope="module")
def digits(digits_index):
    data = np.asarray(digits_index.train_data(), np.float32)
    return digits_index, data, data.min(0), data.max(0)


def jitted(den):
    f = jax.jit(lambda d, x, s: d(x, s))
    return lambda x, s: f(den, x, jnp.full((BATCH,), s, jnp.float32))


ROW_MEANS = {  # denoisers whose output pixel m is a convex combination of the rows' pixel m
    "empirical": {},
    "empirical-sharded": {},
    "nearest": {},
    "pca-local": {"mask_threshold": 0.05},
    "golden": {"golden_base": "empirical", "golden_k_min": 8, "golden_k_max": 32},
    "golden-pca": {"golden_base": "pca-local", "golden_k_min": 8, "golden_k_max": 32, "mask_threshold": 0.05},
    "golden-sharded": {"golden_base": "pca-local", "golden_k_min": 8, "golden_k_max": 32, "mask_threshold": 0.05},
    "ls": {"els_patch_sizes": (3, 5)},
}


@pytest.fixture(scope="module", params=sorted(ROW_MEANS))
def row_mean_denoiser(request, digits):
    index, data, lo, hi = digits
    name = request.param
    kind = name.replace("golden-pca", "golden")
    opts = denoiser_options(kind, {"chunk_size": 512, **ROW_MEANS[name]}, sigmas=SIGMAS)
    den = build_denoiser(kind, index, opts)
    return jitted(den), data, index.shape, lo, hi


@given(log_sigma, log_scale, seed, around)
@example(-4.0, 6.0, 0, "row")  # the smallest sigma at the largest distance
@example(4.0, -3.0, 1, "row")  # the largest sigma next to the data
@PROPERTY
def test_row_means_stay_in_the_data_box(row_mean_denoiser, log_s, log_a, sd, ar):
    f, data, shape, lo, hi = row_mean_denoiser
    check_in_box(f(queries(data, shape, log_a, sd, ar), 10.0**log_s), lo, hi)


@pytest.fixture(scope="module")
def els(digits):
    index, data, _, _ = digits
    den = build_denoiser("els", index,
                         denoiser_options("els", {"chunk_size": 512, "els_patch_sizes": (3, 5)}, sigmas=SIGMAS))
    return jitted(den), data, index.shape


@given(log_sigma, log_scale, seed, around)
@example(-4.0, 6.0, 0, "row")
@PROPERTY
def test_els_stays_in_the_pixel_range(els, log_s, log_a, sd, ar):
    """ELS averages patch centres from every position, so its bound is the range of all pixels."""
    f, data, shape = els
    check_in_box(f(queries(data, shape, log_a, sd, ar), 10.0**log_s), data.min(), data.max())


@pytest.fixture(scope="module")
def wiener(digits):
    index, data, _, _ = digits
    den = jitted(build_denoiser("wiener", index, denoiser_options("wiener", {})))
    return den, data, index.shape, np.asarray(index.mean)


@given(log_sigma, log_scale, seed, around)
@example(-4.0, 6.0, 0, "row")
@PROPERTY
def test_wiener_is_a_finite_shrinkage(wiener, log_s, log_a, sd, ar):
    """Wiener is linear: every gain lies in [0, 1], so ||D(x) - mu|| <= ||x - mu|| (finite while x - mu is)."""
    f, data, shape, mu = wiener
    x = queries(data, shape, log_a, sd, ar)
    out = np.asarray(f(x, 10.0**log_s), np.float64).reshape(BATCH, -1)
    assert np.all(np.isfinite(out))
    c = np.asarray(x, np.float64).reshape(BATCH, -1) - mu.reshape(-1)
    norm = np.linalg.norm(c, axis=1)
    assert np.all(np.linalg.norm(out - mu.reshape(-1), axis=1) <= norm * (1 + 64 * EPS) + 64 * EPS)


@given(log_sigma, log_scale, seed)
@example(-4.0, 6.0, 0)
@PROPERTY
def test_gmm_is_finite_and_point_masses_stay_in_the_box(log_s, log_a, sd):
    """A mixture of point masses (stds 0) is the empirical denoiser of its means; with stds > 0 it is finite."""
    from diffcli.denoisers.gmm import GMMDenoiser

    rng = np.random.default_rng(0)
    means = rng.uniform(-1, 1, (5, 16))
    x = jnp.asarray(10.0**log_a * np.random.default_rng(sd).standard_normal((BATCH, 16)), jnp.float32)
    s = jnp.full((BATCH,), 10.0**log_s, jnp.float32)
    points = GMMDenoiser.from_arrays(means, np.zeros(5), np.full(5, 0.2))
    check_in_box(gmm_call(points, x, s), means.min(0), means.max(0))
    blobs = GMMDenoiser.from_arrays(means, np.full(5, 0.3), np.full(5, 0.2))
    assert np.all(np.isfinite(np.asarray(gmm_call(blobs, x, s))))


gmm_call = jax.jit(lambda d, x, s: d(x, s))


def heun_landing(den, data, shape, seed):
    """The point Heun's first EDM step from sigma 80 lands on with two steps (80 -> 0.002), from noise around rows."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray((data[rng.integers(0, len(data), BATCH)] + 80.0 * rng.standard_normal((BATCH, data.shape[1])))
                    .reshape(BATCH, *shape), jnp.float32)
    s, s_next = 80.0, 0.002
    d = den(x, s)
    x_euler = d + (s_next / s) * (x - d)
    d2 = den(x_euler, s_next)
    return x + (s_next - s) * 0.5 * ((x - d) / s + (x_euler - d2) / s_next)


@pytest.mark.parametrize("seed", [0, 1])
def test_heun_first_step_landing_point(row_mean_denoiser, seed):
    f, data, shape, lo, hi = row_mean_denoiser
    x = heun_landing(f, data, shape, seed)
    assert np.all(np.isfinite(np.asarray(x)))
    check_in_box(f(x, 0.002), lo, hi)


def test_default_two_step_heun_sampling_is_finite(digits):
    """`sample -n 1 --steps 2` with the defaults: empirical denoiser, Heun, EDM schedule 80 -> 0.002."""
    from diffcli.schedules.edm import get_sigmas_edm
    from diffcli.solvers.heun import sample_heun

    index, data, lo, hi = digits
    den = build_denoiser("empirical", index, denoiser_options("empirical", {}))
    x_T = 80.0 * jax.random.normal(jax.random.PRNGKey(0), (BATCH, *index.shape))
    res = sample_heun(den, x_T, jnp.asarray(get_sigmas_edm(2), jnp.float32))
    assert int(res.aux["nonfinite_step"]) == -1
    check_in_box(res.x0, lo, hi)

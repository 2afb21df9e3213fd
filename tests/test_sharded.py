"""Sharded exact search: 1, 2 and 8 (fake CPU) devices agree with each other and with float64 references."""


import numpy as np
import pytest

from diffcli.parallel.search import geometry, layout_rows
from tests.helpers.multidevice import CHUNKS, SIGMAS, B, D, K, N


def posterior_mean64(x, data, sigma):
    """Independent float64 reference via SciPy's log-sum-exp."""
    from scipy.special import logsumexp

    x, data = np.asarray(x, np.float64), np.asarray(data, np.float64)
    logits = -((x[:, None, :] - data[None]) ** 2).sum(-1) / (2 * sigma**2)
    w = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    return w @ data


@pytest.fixture(scope="module")
def runs(multidevice_runs):
    """{devices: (arrays, metadata)} of the sharded exact search on 1, 2 and 8 fake CPU devices (conftest.py)."""
    out = {}
    for devices, (arrays, meta) in multidevice_runs.items():
        assert meta["devices"] == devices
        out[devices] = (arrays["sharded"], meta["sharded"])
    return out


def test_each_device_holds_an_equal_padded_block(runs):
    for devices, (_, meta) in runs.items():
        per_part = -(-N // devices)
        g = geometry(N, devices, CHUNKS[devices])
        assert meta["shard_shapes"] == [[g.k_chunks, g.chunk, D]]
        assert g.rows_per_part >= per_part


@pytest.mark.parametrize("devices", [1, 2, 8])
def test_posterior_mean_matches_float64_reference(runs, devices):
    r, _ = runs[devices]
    for s, got in zip(SIGMAS, r["means"], strict=True):
        np.testing.assert_allclose(got, posterior_mean64(r["x"], r["data"], s), atol=3e-5, rtol=1e-4)
    np.testing.assert_array_equal(r["again"], r["means"][0])  # the same compiled program on the same inputs
    for i in range(B):
        np.testing.assert_allclose(r["per_sample"][i], posterior_mean64(r["x"][i:i + 1], r["data"], SIGMAS[i])[0],
                                   atol=3e-5, rtol=1e-4)


def test_device_counts_agree(runs):
    base = runs[1][0]
    for devices in (2, 8):
        r = runs[devices][0]
        np.testing.assert_allclose(r["means"], base["means"], atol=2e-6, rtol=1e-5)
        np.testing.assert_allclose(r["path"], base["path"], atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(r["ids"], base["ids"])
        np.testing.assert_allclose(r["d2"], base["d2"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("devices", [1, 8])
def test_top_k_matches_brute_force(runs, devices):
    r, _ = runs[devices]
    a = 0.8
    d2 = ((r["x"][:, None, :].astype(np.float64) - a * r["data"][None].astype(np.float64)) ** 2).sum(-1)
    expect = np.argsort(d2, axis=1, kind="stable")[:, :K]
    np.testing.assert_array_equal(r["ids"], expect)
    np.testing.assert_allclose(r["d2"], np.take_along_axis(d2, expect, 1), atol=1e-4, rtol=1e-5)


def test_layout_pads_with_zero_weight_rows():
    rows = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    g = geometry(10, 4, 2)  # 3 rows per part -> chunks of 2, two chunks per part, 16 slots
    chunks, half = layout_rows(rows, g)
    assert chunks.shape == (8, 2, 3) and half.shape == (8, 2)
    flat_rows, flat_half = chunks.reshape(-1, 3), half.reshape(-1)
    np.testing.assert_array_equal(flat_rows[:10], rows)
    assert np.all(flat_rows[10:] == 0) and np.all(np.isinf(flat_half[10:]))
    np.testing.assert_allclose(flat_half[:10], 0.5 * (rows.astype(np.float64) ** 2).sum(1))
    assert [g.part_range(j) for j in range(4)] == [(0, 4), (4, 8), (8, 10), (10, 10)]


def test_lse_merge_is_exact_for_any_split():
    """Splitting the rows anywhere and merging the partials gives the unsplit softmax (float64 reference)."""
    import jax.numpy as jnp

    from diffcli.denoisers.softmax import finish, merge
    from diffcli.parallel.search import local_partials

    rng = np.random.default_rng(3)
    data = rng.normal(size=(40, 5)).astype(np.float32)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    inv_var = jnp.full((3,), 1 / 0.2**2, jnp.float32)
    parts = []
    for lo, hi in ((0, 7), (7, 31), (31, 40)):
        c, h = layout_rows(data[lo:hi], geometry(hi - lo, 1, 4))
        parts.append(local_partials(jnp.asarray(x), jnp.asarray(c), jnp.asarray(h), inv_var))
    # An all-padding part must contribute nothing (and no NaN).
    c, h = layout_rows(np.zeros((0, 5), np.float32), geometry(1, 1, 4))
    parts.append(local_partials(jnp.asarray(x), jnp.asarray(c), jnp.asarray(h), inv_var))
    merged = parts[0]
    for p in parts[1:]:
        merged = merge(merged, p)
    np.testing.assert_allclose(np.asarray(finish(merged)), posterior_mean64(x, data, 0.2), atol=1e-5, rtol=1e-5)


def test_registry_builds_the_sharded_denoiser(digits_index):
    """`--denoiser empirical-sharded` on one device equals the lead's single-device empirical denoiser."""
    import jax.numpy as jnp

    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.empirical import EmpiricalDenoiser
    from diffcli.denoisers.options import StreamOptions
    from diffcli.parallel.denoiser import ShardedEmpiricalDenoiser

    den = build_denoiser("empirical-sharded", digits_index, StreamOptions(chunk_size=256))
    assert isinstance(den, ShardedEmpiricalDenoiser)
    data = digits_index.train_data()
    x = jnp.asarray(data[:4].reshape(4, *digits_index.shape) + 0.3)
    ref = EmpiricalDenoiser.from_data(data, chunk=256)
    for s in (0.05, 1.0, 20.0):
        np.testing.assert_allclose(np.asarray(den(x, s)), np.asarray(ref(x, s)), atol=2e-6, rtol=1e-5)

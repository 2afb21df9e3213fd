"""GoldDiff golden subset: truncation identity and certificate, sizes, equality with the base, tolerance mode."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffcli.denoisers import pca_local
from diffcli.denoisers.empirical import EmpiricalDenoiser
from diffcli.denoisers.golden import build
from diffcli.denoisers.golden.plan import DEFAULT_ESTIMATOR
from diffcli.denoisers.golden.screen import proxy_distances
from diffcli.denoisers.golden.select import select as select_subset
from diffcli.denoisers.masks import build_masks, dense_mask
from diffcli.denoisers.options import GoldenOptions, PcaLocalOptions
from diffcli.denoisers.pca_local import build as build_pca_local
from diffcli.denoisers.subset import golden_sizes, tail_bounds, truncation_parts
from diffcli.index.coarse import piece_distances
from diffcli.keys import id_uniforms, query_keys
from tests.helpers.indexes import make_index

# jitted once per denoiser structure; sigma is traced, so a new sigma never recompiles
call = eqx.filter_jit(lambda g, x, s, k=None: g(x, s, key=k))
diagnose = eqx.filter_jit(lambda g, x, s: g.diagnose(x, s))
select = eqx.filter_jit(lambda g, x, s, k: select_subset(g.plan, g.rows, x, s, k))


def softmax64(d, sigma):
    z = -(d - d.min()) / (2 * sigma**2)
    w = np.exp(z)
    return w / w.sum()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(3, 40), k=st.integers(1, 39), log_sigma=st.floats(-2.5, 1.0))
def test_truncation_identity_and_bound(seed, n, k, log_sigma):
    k = min(k, n - 1)
    sigma = 10.0**log_sigma
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((n, 5))
    x = rng.standard_normal(5) * 1.5
    d = ((data - x) ** 2).sum(1)
    w = softmax64(d, sigma)
    nearest = np.argsort(d)[:k]
    m, m_s, m_c, eps = truncation_parts(w, data, nearest)
    np.testing.assert_allclose(m - m_s, eps * (m_c - m_s), atol=1e-12)
    assert np.linalg.norm(m - m_s) <= 2 * eps * np.abs(np.linalg.norm(data, axis=1)).max() + 1e-12
    ds = np.sort(d)
    padded = np.concatenate([ds, np.full(40 - n, np.inf)])  # one shape for every example: no recompiles
    bound = float(tail_bounds(jnp.asarray(padded, jnp.float32), jnp.float32(jnp.inf), n, jnp.float32(sigma))[k - 1])
    closed = min((n - k) * np.exp(-(ds[k] - ds[0]) / (2 * sigma**2)), 1.0)
    assert eps <= closed * (1 + 1e-9) + 1e-300
    # the bound is float32: its logit (d_k - d_0) / 2 sigma^2 carries the rounding of d_k and d_0 (cancellation)
    logit_err = 4 * np.finfo(np.float32).eps * (abs(ds[k]) + abs(ds[0])) / (2 * sigma**2)
    assert abs(bound - closed) <= (1e-3 + 2 * logit_err) * closed + 1e-30


def test_sizes_follow_the_paper_schedule():
    n, k_min, k_max = 15000, 1000, 2000
    for sigma in (1e-3, 0.05, 0.5, 2.0, 50.0):
        lam = 1 - sigma / np.sqrt(1 + sigma**2)
        m, k = golden_sizes(jnp.float32(sigma), n, k_min, k_max)
        assert int(m) == int(np.clip(np.round(k_max + (n - k_max) * lam), k_max, n))
        assert int(k) == max(k_min, int(np.round(k_max - (k_max - k_min) * lam)))
    m, k = golden_sizes(jnp.float32(1e-6), n, k_min, k_max)
    assert (int(m), int(k)) == (n, k_min)
    m, k = golden_sizes(jnp.float32(1e6), n, k_min, k_max)
    assert (int(m), int(k)) == (k_max, k_max)


@pytest.fixture(scope="module")
def index():
    return make_index()


@pytest.mark.parametrize("base", ["empirical", "pca-local", "pca-local-lists"])
def test_full_subset_equals_base(index, base, monkeypatch):
    """k_min = k_max = N is the base itself, on a batch of mixed sigmas (each query in its own mask class)."""
    if base == "pca-local-lists":
        monkeypatch.setattr(pca_local, "DENSE_MASK_BYTES", 0)
        base = "pca-local"
    n = index.n
    sig = jnp.asarray([0.4, 3.0, 0.4, 0.05, 3.0])
    sigmas = np.array([3.0, 0.4, 0.05, 0.0])
    gold = build(index, GoldenOptions(sigmas=sigmas, golden_base=base, golden_k_min=n, golden_k_max=n,
                                      mask_threshold=0.05))
    ref = (EmpiricalDenoiser.from_data(index.train_data(), chunk=64) if base == "empirical"
           else build_pca_local(index, PcaLocalOptions(sigmas=sigmas, mask_threshold=0.05)))
    x = jnp.asarray(index.train_data()[:5].reshape(5, *index.shape)) + sig[:, None, None, None] * jax.random.normal(
        jax.random.PRNGKey(1), (5, *index.shape))
    np.testing.assert_allclose(np.asarray(call(gold, x, sig)), np.asarray(call(ref, x, sig)), atol=2e-6)


def test_golden_matches_float64_subset_softmax(index):
    """The output is the exact softmax over the subset that diagnose reports (checked in float64)."""
    sig = 0.3
    gold = build(index, GoldenOptions(golden_base="empirical", golden_k_min=10, golden_k_max=30,
                                      golden_estimator="paper"))
    x = jnp.asarray(index.train_data()[3:6].reshape(3, *index.shape)) + sig * jax.random.normal(
        jax.random.PRNGKey(2), (3, *index.shape))
    keys = jax.random.split(jax.random.PRNGKey(5), 3)
    out = np.asarray(call(gold, x, sig, keys)).reshape(3, -1)
    flat = query_keys(gold.plan.seed, keys, jnp.full((3,), sig), 3)
    data = index.train_data().astype(np.float64)
    for i in range(3):
        _, diag = select(gold, jnp.asarray(x[i].reshape(-1)), jnp.float32(sig), flat[i])
        ids = np.asarray(diag["ids"])
        ids = ids[ids >= 0]
        assert len(ids) == int(diag["k"])
        d = ((data[ids] - np.asarray(x[i], np.float64).reshape(-1)) ** 2).sum(1)
        np.testing.assert_allclose(out[i], softmax64(d, sig) @ data[ids], atol=3e-6)


def test_pca_local_base_over_a_prefix_subset_matches_float64():
    """A pca-local base over k_t < k_max kept rows (chunks past k_t are skipped) is the masked per-pixel softmax over
    exactly the reported subset, checked in float64."""
    idx = make_index(n=300)
    sig, thr = 0.5, 0.05
    gold = build(idx, GoldenOptions(sigmas=np.array([sig, 0.0]), golden_base="pca-local", golden_k_min=10,
                                      golden_k_max=200, mask_threshold=thr, golden_estimator="paper"))
    x = jnp.asarray(idx.train_data()[:3].reshape(3, *idx.shape)) + sig * jax.random.normal(
        jax.random.PRNGKey(3), (3, *idx.shape))
    keys = jax.random.split(jax.random.PRNGKey(6), 3)
    out = np.asarray(call(gold, x, sig, keys)).reshape(3, -1)
    flat = query_keys(gold.plan.seed, keys, jnp.full((3,), sig), 3)
    _, lists = build_masks(idx, np.array([sig, 0.0]), thr)
    mask = dense_mask(lists[0], idx.dim).astype(np.float64)
    data = idx.train_data().astype(np.float64)
    for i in range(3):
        _, diag = select(gold, jnp.asarray(x[i].reshape(-1)), jnp.float32(sig), flat[i])
        ids = np.asarray(diag["ids"])
        ids = ids[ids >= 0]
        assert 64 < len(ids) < 128  # two of the four 64-row chunks hold kept rows
        logit = -(((np.asarray(x[i], np.float64).reshape(-1) - data[ids]) ** 2) @ mask) / (2 * sig**2)
        w = np.exp(logit - logit.max(axis=0))
        np.testing.assert_allclose(out[i], (w * data[ids]).sum(0) / w.sum(0), atol=1e-5)


def test_tolerance_mode_certifies_its_subset(index):
    tol = 1e-3
    gold = build(index, GoldenOptions(golden_base="empirical", golden_k_max=index.n, golden_tol=tol))
    full_den = EmpiricalDenoiser.from_data(index.train_data())
    for sigma in (0.05, 0.3, 1.0, 3.0):
        check_tolerance(gold, full_den, index, sigma, tol)


def check_tolerance(gold, full_den, index, sigma, tol):
    x = jnp.asarray(index.train_data()[:6].reshape(6, *index.shape)) + sigma * jax.random.normal(
        jax.random.PRNGKey(3), (6, *index.shape))
    diag = diagnose(gold, x, jnp.float32(sigma))
    bound, tail = np.asarray(diag["bound"]), np.asarray(diag["tail_mass"])
    assert np.all(tail <= bound * (1 + 1e-3) + 1e-30)
    assert np.all(bound <= tol)
    full = np.asarray(call(full_den, x, jnp.float32(sigma)))
    err = np.abs(np.asarray(call(gold, x, jnp.float32(sigma))) - full).reshape(6, -1).max(1)
    assert np.all(err <= 2 * tol * np.abs(index.train_data()).max() + 1e-5)


def test_certified_bound_holds_in_schedule_mode(index):
    gold = build(index, GoldenOptions(golden_base="empirical", golden_k_min=20, golden_k_max=40,
                                      golden_estimator="paper"))
    for sigma in (0.02, 0.2, 1.0, 5.0):
        x = jnp.asarray(index.train_data()[:4].reshape(4, *index.shape)) + sigma * jax.random.normal(
            jax.random.PRNGKey(4), (4, *index.shape))
        diag = diagnose(gold, x, jnp.float32(sigma))
        assert np.all(np.asarray(diag["tail_mass"]) <= np.asarray(diag["bound"]) * (1 + 1e-3) + 1e-30)


def test_no_retrace_across_sigmas_and_pool_randomness(index, traces):
    gold = build(index, GoldenOptions(golden_base="pca-local", sigmas=np.array([2.0, 0.5, 0.05, 0.0]), golden_k_min=10,
                                        golden_k_max=30, mask_threshold=0.05, golden_estimator="paper"))
    f = jax.jit(traces.wrap(lambda g, x, s, k: g(x, s, key=k)))
    x = jnp.asarray(index.train_data()[:2].reshape(2, *index.shape))
    k1 = jax.random.split(jax.random.PRNGKey(0), 2)
    a = f(gold, x + 2.0, jnp.full((2,), 2.0), k1)
    f(gold, x, jnp.full((2,), 0.05), k1)
    assert traces.count == 1
    # at high noise the pool is random: another key gives another subset, so another value
    b = f(gold, x + 2.0, jnp.full((2,), 2.0), jax.random.split(jax.random.PRNGKey(9), 2))
    assert np.all(np.isfinite(np.asarray(a))) and not np.allclose(np.asarray(a), np.asarray(b))


def test_coarse_stage_with_all_lists_equals_full_screen(index):
    sig = 0.004  # low enough that the pool is the whole set in both modes (no random draw to differ)
    x = jnp.asarray(index.train_data()[:6].reshape(6, *index.shape)) + sig * jax.random.normal(
        jax.random.PRNGKey(6), (6, *index.shape))
    opts = dict(golden_base="empirical", golden_k_min=10, golden_k_max=30, golden_estimator="paper")
    full = np.asarray(call(build(index, GoldenOptions(**opts)), x, sig))
    lists = len(index.coarse["centroids"])
    every = np.asarray(call(build(index, GoldenOptions(**opts, golden_coarse=True, golden_nprobe=lists)), x, sig))
    np.testing.assert_allclose(every, full, atol=1e-5)  # all lists probed: the same screen


def test_piece_distances_match_the_rows_of_the_probed_pieces(index):
    """The probe's feature-major blocks give the same distances as the gathered proxy rows; padding is +inf."""
    den = build(index, GoldenOptions(golden_base="empirical", golden_k_min=10, golden_k_max=30, golden_coarse=True))
    rows, q = den.rows, den.rows.proxy[3] + 0.1
    probed = jnp.asarray([2, 0, 2])
    members = np.asarray(den.plan.coarse.search.ids[probed]).reshape(-1)
    np.testing.assert_array_equal(np.asarray(rows.lists[probed]).reshape(-1), members)  # integer ids: exact
    got = np.asarray(piece_distances(rows.piece_proxy, rows.piece_half, probed, q))
    ok = members >= 0
    want = np.asarray(proxy_distances(rows.proxy[members[ok]], rows.half_psq[members[ok]], q))
    np.testing.assert_allclose(got[ok], want, rtol=1e-5, atol=1e-5)
    assert np.all(np.isinf(got[~ok]))


def test_pool_draws_are_uniform_and_keyed_by_id():
    """A row's draw depends on (key, id) only: the same id gives the same draw in any array; draws look uniform."""
    key = jax.random.PRNGKey(7)
    ids = jnp.arange(200_000)
    u = np.asarray(id_uniforms(key, ids))
    assert 0.0 <= u.min() and u.max() < 1.0
    hist = np.bincount((u * 20).astype(int), minlength=20) / len(u)
    np.testing.assert_allclose(hist, 0.05, atol=0.003)  # 20 bins, about 10 standard errors of slack
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01  # neighbouring ids are not correlated
    pick = jnp.asarray([5, 199_999, 17, 5])
    # identity is the promise: integer hashing of (key, id) and an exact bits-to-float map, whatever the array
    np.testing.assert_array_equal(np.asarray(id_uniforms(key, pick)), u[[5, 199_999, 17, 5]])
    other = np.asarray(id_uniforms(jax.random.PRNGKey(8), ids))
    assert abs(np.corrcoef(u, other)[0, 1]) < 0.01 and np.mean(u == other) < 1e-3


def test_presets_agree_with_the_golddiff_recipe():
    """recipes/golddiff.toml's [datasets.NAME] tables state exactly the presets a run without a recipe gets, and its
    top level the paper's method (the paper's estimator, not the default), as the sample command reads it."""
    import os
    import tomllib

    from diffcli.cli.sample import read_recipe
    from diffcli.denoisers.presets import PAPER_METHOD, recipe_tables

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "golddiff.toml")
    with open(path, "rb") as f:
        assert tomllib.load(f)["datasets"] == recipe_tables()
    options = read_recipe(path, "afhq", None)
    assert {k: options[k] for k in PAPER_METHOD} == PAPER_METHOD
    assert PAPER_METHOD["golden_estimator"] != DEFAULT_ESTIMATOR


def test_default_sizes_and_thresholds_come_from_the_dataset_name():
    from diffcli.denoisers.presets import default_sizes, default_threshold

    assert default_sizes("afhq", 15000) == (1000, 2000) and default_sizes("imagenet64", 100) == (60, 100)
    assert default_sizes("digits", 1617) == (81, 162) and default_sizes(None, 300) == (32, 64)
    assert default_sizes("shapes", 15000) == (750, 1500)
    assert default_threshold("afhq") == 0.04 and default_threshold("digits") == 0.02
    assert default_threshold("gmm") == 0.03 and default_threshold(None) == 0.03
    assert make_index(n=20, dataset="afhq:res=64").dataset_name == "afhq"
    assert make_index(n=20, dataset="").dataset_name is None


def test_golden_reads_the_preset_of_its_index_dataset():
    gold = build(make_index(n=1000, dataset="imagenet64:classes=3"), GoldenOptions(golden_base="empirical"))
    assert (gold.plan.k_min, gold.plan.k_max) == (60, 120)

"""Golden's estimators: exactness at k = N, the index totals against float64 sums, unbiasedness of the regression
estimate of a far stratum's total, one compiled function across steps, refused combinations."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcli.denoisers import pca_local
from diffcli.denoisers.empirical import EmpiricalDenoiser
from diffcli.denoisers.golden import build
from diffcli.denoisers.golden.moments import index_totals
from diffcli.denoisers.golden.regression import Draws, Totals, horvitz_thompson, regression_total
from diffcli.denoisers.masks import build_masks, dense_mask
from diffcli.denoisers.options import GoldenOptions
from diffcli.errors import UsageError
from tests.helpers.indexes import make_index

call = eqx.filter_jit(lambda g, x, s, k=None: g(x, s, key=k))
SIGMAS = np.array([3.0, 0.4, 0.05, 0.0])


@pytest.fixture(scope="module")
def index():
    """A small index: 64 rows of 6 x 6 images (programs compile at the same cost whatever the size)."""
    return make_index(n=64, shape=(1, 6, 6))


def noisy(index, sig, rows=5, seed=1):
    sig = jnp.asarray(sig)
    return jnp.asarray(index.train_data()[:rows].reshape(rows, *index.shape)) + sig.reshape(-1, 1, 1, 1) * \
        jax.random.normal(jax.random.PRNGKey(seed), (rows, *index.shape))


def posterior_mean64(index, x, sigma, mask=None):
    """The exact posterior mean in float64 over all rows: one softmax, or with a mask M [D, D] one softmax per pixel
    m over the masked squared distances sum_j M[j, m] (x_j - x_nj)^2."""
    data = index.train_data().astype(np.float64)
    sq = np.square(np.asarray(x, np.float64).reshape(-1) - data)
    logit = -(sq.sum(1, keepdims=True) if mask is None else sq @ mask) / (2 * sigma**2)
    w = np.exp(logit - logit.max(0))
    return (w * data).sum(0) / w.sum(0)


@pytest.mark.parametrize("base", ["empirical", pytest.param("pca-local", marks=pytest.mark.slow)])
def test_paper_estimator_is_the_base_at_k_equals_n(index, base):
    """k_min = k_max = N: the paper's estimator is the base itself, the exact posterior mean over all rows (checked
    in float64, each query in its own mask band; the stratified one: tests/test_golden.py, whose default it is)."""
    n = index.n
    sig = np.array([0.4, 3.0, 0.05])
    gold = build(index, GoldenOptions(sigmas=SIGMAS, golden_base=base, golden_k_min=n, golden_k_max=n,
                                      mask_threshold=0.05, golden_estimator="paper"))
    x = noisy(index, sig, 3)
    got = np.asarray(call(gold, x, jnp.asarray(sig, jnp.float32))).reshape(3, -1)
    bands, lists = build_masks(index, SIGMAS, 0.05)
    for i, sigma in enumerate(sig):
        band = int(np.argmin(np.abs(np.log(bands) - np.log(sigma))))
        mask = None if base == "empirical" else dense_mask(lists[band], index.dim).astype(np.float64)
        np.testing.assert_allclose(got[i], posterior_mean64(index, x[i], sigma, mask), atol=1e-5)


@pytest.mark.slow
def test_stratified_resolves_to_the_base_once_k_t_reaches_n(index):
    """k_max = N > k_min: at high noise k_t = N (no far draws, every row near), the exact base; below, far draws."""
    n = index.n
    gold = build(index, GoldenOptions(sigmas=SIGMAS, golden_base="empirical", golden_k_min=n // 2, golden_k_max=n))
    assert gold.plan.estimator == "stratified" and gold.plan.far_slots == 0
    sig = jnp.float32(1e4)  # k_t rounds to k_max = N
    x = noisy(index, jnp.full((3,), sig), 3)
    ref = EmpiricalDenoiser.from_data(index.train_data(), chunk=64)
    np.testing.assert_allclose(np.asarray(call(gold, x, sig)), np.asarray(call(ref, x, sig)), atol=2e-5)


@pytest.mark.parametrize("form", ["dense", "lists", "empirical"])
def test_index_totals_match_float64_sums(index, form, monkeypatch):
    """sum_n x_nm, sum_n l_nm and sum_n l_nm x_nm from the moments equal the float64 sums over the centred rows."""
    if form == "lists":
        monkeypatch.setattr(pca_local, "DENSE_MASK_BYTES", 0)
    base = "empirical" if form == "empirical" else "pca-local"
    gold = build(index, GoldenOptions(sigmas=SIGMAS, golden_base=base, golden_k_min=10, golden_k_max=30,
                                      mask_threshold=0.05))
    mom, masks = gold.plan.moments, gold.plan.masks
    data = index.train_data().astype(np.float64)
    rows = data - data.mean(0)
    dim = rows.shape[1]
    bands, lists = build_masks(index, SIGMAS, 0.05)

    @jax.jit  # one program for both sigmas: the query, its sigma and 1 / (2 sigma^2) are arguments
    def totals(x, sigma, inv2var):
        if masks is None:
            return index_totals(mom, x, inv2var)
        return masks.per_query(sigma, lambda cls, band: index_totals(mom, x, inv2var, masks.operand(band, cls), cls,
                                                                     band, masks.band_slot[band]))

    for sigma in (3.0, 0.4):
        x = rows[7] + sigma * np.random.default_rng(2).standard_normal(dim)
        inv2var = 0.5 / sigma**2
        got = totals(jnp.asarray(x, jnp.float32), jnp.float32(sigma), jnp.float32(inv2var))
        if masks is None:
            m = np.ones((dim, dim))
        else:
            band = int(np.argmin(np.abs(np.log(bands) - np.log(sigma))))
            assert form != "dense" or masks.dense[int(masks.band_class[band])]
            m = dense_mask(lists[band], dim).astype(np.float64)
        logit = -(np.square(x - rows) @ m) * inv2var
        want = (rows.sum(0), logit.sum(0), (logit * rows).sum(0))
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=2e-5, atol=2e-5 * np.abs(w).max() + 1e-4)


def stratum(seed=0, n=40, pixels=3, spread=0.7):
    """A far stratum of n rows (the first 6 are near, outside it): values x, logits l, y = exp(l) x, totals."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, pixels))
    logit = spread * rng.standard_normal((n, pixels)) + 0.8 * x
    far = np.arange(n) >= 6
    f = far[:, None]
    totals = Totals(np.float64(far.sum()), (x * f).sum(0), (logit * f).sum(0), (logit * x * f).sum(0))
    return x, logit, far, totals, (np.exp(logit) * x * f).sum(0), (np.exp(logit) * f).sum(0)


def estimates(x, logit, far, totals, draws: int, reps: int, crossfit: bool):
    """[reps, P] regression estimates of the stratum's total of exp(l) x and of exp(l), and plain ones (one
    compiled program for all reps)."""
    n = len(x)

    def one(key):
        d, w, xs = stratum_draws(x, logit, far, draws, key)
        t = Totals(*(jnp.asarray(a) for a in totals))
        return (regression_total(d, w * xs, t, n, True, crossfit), regression_total(d, w, t, n, False, crossfit),
                horvitz_thompson(d, w * xs, n))

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(0), reps))


def stratum_draws(x, logit, far, draws, key):
    """(Draws, exp(l) [F, P] zero outside the stratum, x [F, P]) of `draws` uniform draws over all rows."""
    ids = jax.random.randint(key, (draws,), 0, len(x))
    r = jnp.asarray(far)[ids]
    xs, ls = jnp.asarray(x)[ids], jnp.asarray(logit)[ids]
    d = Draws(r, xs, jnp.where(r[:, None], ls, 0.0), jnp.ones(draws, bool))
    return d, jnp.where(r[:, None], jnp.exp(ls), 0.0), xs


def within_4_se(est, truth) -> bool:
    """Every pixel's mean over the samples lies within 4 standard errors of the truth."""
    return bool(np.all(np.abs(est.mean(0) - truth) <= 4 * est.std(0) / np.sqrt(len(est))))


def test_cross_fitted_regression_totals_are_unbiased():
    """Float64, 2000 samples of 16 draws: the cross-fitted estimate's mean lies within 4 standard errors of the true
    total, for the numerator (x, l, l x auxiliaries), the normaliser and the plain estimate; the normaliser fitted
    on all its draws (biased by O(1 / draws)) fails the same check, so the check can tell."""
    reps, draws = 2000, 16
    x, logit, far, totals, y_true, z_true = stratum()

    def one(key):
        d, w, xs = stratum_draws(x, logit, far, draws, key)
        return (regression_total(d, w * xs, t, len(x), True, True), regression_total(d, w, t, len(x), False, True),
                horvitz_thompson(d, w * xs, len(x)), regression_total(d, w, t, len(x), False, False))

    with jax.enable_x64(True):
        t = Totals(*(jnp.asarray(a) for a in totals))  # float64 totals, read by `one` when traced
        runs = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(0), reps))
        num, den, plain, fitted_den = (np.asarray(a) for a in runs)
    assert within_4_se(num, y_true) and within_4_se(den, z_true) and within_4_se(plain, y_true)
    assert not within_4_se(fitted_den, z_true)


@pytest.mark.slow
def test_fitted_regression_bias_shrinks_and_variance_drops():
    """The regression fitted on all draws (the estimator golden uses): its bias falls at least twice as fast as the
    draws grow fourfold (O(1 / draws)), and its variance is well below the plain estimate's."""
    with jax.enable_x64(True):
        x, logit, far, totals, y_true, _ = stratum()
        runs = {f: [np.asarray(a) for a in estimates(x, logit, far, totals, f, 4000, crossfit=False)]
                for f in (16, 64)}
    bias = {f: np.abs(r[0].mean(0) - y_true) for f, r in runs.items()}
    se = {f: r[0].std(0) / np.sqrt(4000) for f, r in runs.items()}
    assert np.all(bias[64] <= 0.5 * bias[16] + 4 * (se[16] + se[64]))
    for num, _, plain in runs.values():
        assert np.all(num.var(0) < 0.5 * plain.var(0))


@pytest.mark.slow
def test_regression_is_exact_when_y_is_linear_in_the_auxiliaries():
    """y = 2 - x + 3 l + 0.5 l x lies in the auxiliaries' span: every draw gives the exact total (both fits)."""
    with jax.enable_x64(True):
        x, logit, far, totals, _, _ = stratum(seed=3)
        n = len(x)
        y = (2 - x + 3 * logit + 0.5 * logit * x) * far[:, None]
        truth = y.sum(0)
        t = Totals(*(jnp.asarray(a) for a in totals))

        def one(key, crossfit):
            ids = jax.random.randint(key, (16,), 0, n)
            r = jnp.asarray(far)[ids]
            d = Draws(r, jnp.asarray(x)[ids], jnp.where(r[:, None], jnp.asarray(logit)[ids], 0.0), jnp.ones(16, bool))
            return regression_total(d, jnp.asarray(y)[ids], t, n, True, crossfit)

        for crossfit in (True, False):
            got = jax.jit(jax.vmap(lambda k, c=crossfit: one(k, c)))(jax.random.split(jax.random.PRNGKey(0), 3))
            np.testing.assert_allclose(np.asarray(got), np.broadcast_to(truth, got.shape), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_no_active_draws_give_a_zero_total():
    x, logit, far, totals, _, _ = stratum()
    d = Draws(jnp.ones(4, bool), jnp.asarray(x[:4], jnp.float32), jnp.asarray(logit[:4], jnp.float32),
              jnp.zeros(4, bool))
    got = regression_total(d, jnp.ones((4, 3)), Totals(*(jnp.asarray(a, jnp.float32) for a in totals)), 40, True,
                           True)
    assert np.all(np.asarray(got) == 0.0)


def test_stratified_is_one_compiled_function_across_steps(index, traces):
    """Sigmas in every mask band and new keys: one trace; at high noise another key draws another far sample."""
    gold = build(index, GoldenOptions(sigmas=SIGMAS, golden_base="pca-local", golden_k_min=10, golden_k_max=30,
                                      mask_threshold=0.05))
    assert gold.plan.estimator == "stratified"
    f = jax.jit(traces.wrap(lambda g, x, s, k: g(x, s, key=k)))
    x = jnp.asarray(index.train_data()[:2].reshape(2, *index.shape))
    k1 = jax.random.split(jax.random.PRNGKey(0), 2)
    a = f(gold, x + 2.0, jnp.full((2,), 3.0), k1)
    for s in (0.4, 0.05):
        f(gold, x, jnp.full((2,), s), k1)
    b = f(gold, x + 2.0, jnp.full((2,), 3.0), jax.random.split(jax.random.PRNGKey(9), 2))
    assert traces.count == 1
    assert np.all(np.isfinite(np.asarray(a))) and not np.allclose(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_near_stratum_certificate_holds(index):
    """The stratified estimator's near stratum comes from a complete screen: its certified bound on the empirical
    tail mass left out holds."""
    gold = build(index, GoldenOptions(golden_base="empirical", golden_k_min=20, golden_k_max=40))
    diagnose = eqx.filter_jit(lambda g, x, s: g.diagnose(x, s))
    for sigma in (0.05, 0.5):
        diag = diagnose(gold, noisy(index, jnp.full((4,), sigma), 4, seed=4), jnp.float32(sigma))
        assert np.all(np.asarray(diag["tail_mass"]) <= np.asarray(diag["bound"]) * (1 + 1e-3) + 1e-30)


@pytest.mark.parametrize("opts, words", [
    (dict(golden_base="empirical", golden_tol=1e-3, golden_estimator="stratified"), "--golden-estimator paper"),
    (dict(golden_base="empirical", golden_coarse=True, golden_estimator="stratified"), "--golden-estimator paper"),
    (dict(golden_base="pca-local", golden_tol=1e-3, golden_estimator="paper"), "--golden-base empirical"),
])
def test_refused_combinations(index, opts, words):
    with pytest.raises(UsageError, match=words):
        build(index, GoldenOptions(sigmas=SIGMAS, **opts))


def test_tolerance_and_coarse_modes_default_to_the_paper_estimator(index):
    for extra in (dict(golden_tol=1e-3), dict(golden_coarse=True)):
        assert build(index, GoldenOptions(golden_base="empirical", **extra)).plan.estimator == "paper"


@pytest.mark.slow
def test_proxy_proposal_is_a_law_over_the_far_stratum(index):
    """The far draws' proposal: probabilities sum to 1 over the far rows, none on the near ones, each at least the
    uniform share's floor."""
    from diffcli.denoisers.golden.stratified import PROPOSAL_UNIFORM, proposal_log_p

    gold = build(index, GoldenOptions(golden_base="empirical", golden_k_min=10, golden_k_max=30))
    near = jnp.asarray(np.r_[np.arange(12), -np.ones(18, int)])
    x = jnp.asarray(index.train_data()[5]) + 0.3
    p = np.exp(np.asarray(proposal_log_p(gold.plan, gold.rows, x, jnp.float32(0.5), near), np.float64))
    assert np.all(p[:12] == 0) and abs(p.sum() - 1) < 1e-5
    assert np.all(p[12:] >= PROPOSAL_UNIFORM / (index.n - 12) * (1 - 1e-5))

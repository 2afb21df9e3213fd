"""Chebyshev collocation: checked tables, spectral convergence on exact Gaussian flows, dimension-free GMM error."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcli.denoisers.gmm import GMMDenoiser
from diffcli.errors import UsageError
from diffcli.solvers import get_solver
from diffcli.solvers.chebyshev import chebyshev_table
from diffcli.solvers.exponential import exponential_table, kernel_weights, kernel_weights_np, monomial_integral
from diffcli.solvers.options import CollocationOptions
from diffcli.solvers.reference import reference_sample, solve_pf_ode
from tests.helpers.gaussian_oracle import (
    GaussianDenoiser,
    denoise,
    karras_sigmas,
    pf_ode_flow,
    random_gaussian,
    x64,
)
from tests.helpers.mixtures import separated_mixture

colloc = eqx.filter_jit(get_solver("collocation"))


@pytest.mark.parametrize("n", [1, 2, 5, 16, 40])
def test_table_nodes_and_spectral_integration(n):
    tab = chebyshev_table(n)  # builds only if its identities hold
    i = np.arange(1, n + 1)
    np.testing.assert_allclose(tab.nodes, 0.5 * (1 - np.cos((2 * i - 1) * np.pi / (2 * n))), atol=1e-15)
    assert abs(tab.weights.sum() - 1.0) < 1e-13
    if n >= 16:
        # a smooth non-polynomial integrand is integrated to near round-off (spectral accuracy)
        np.testing.assert_allclose(tab.matrix @ np.exp(tab.nodes), np.exp(tab.nodes) - 1, atol=1e-13)
        assert abs(tab.weights @ np.cos(3 * tab.nodes) - np.sin(3.0) / 3) < 1e-13


def test_diffrax_reference_matches_exact_gaussian_flow():
    mu, cov = random_gaussian(6, 0)
    x_t = 80.0 * np.random.default_rng(1).standard_normal((3, 6))
    with x64():
        den = GaussianDenoiser.from_cov(mu, cov)
        got, _ = jax.jit(lambda x: solve_pf_ode(den, x, 80.0, 0.002, rtol=1e-12, atol=1e-12))(jnp.asarray(x_t))
    want = pf_ode_flow(mu, cov, x_t, 80.0, 0.002)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("form", ["ei", pytest.param("plain", marks=pytest.mark.slow)])
def test_error_falls_exponentially_in_nodes(form):
    mu, cov = random_gaussian(6, 0)
    x_t = 80.0 * np.random.default_rng(1).standard_normal((3, 6))
    sig = karras_sigmas(10)
    want = denoise(mu, cov, pf_ode_flow(mu, cov, x_t, 80.0, 0.002), 0.002)
    nodes = np.array([2, 4, 6, 8])
    with x64():
        den = GaussianDenoiser.from_cov(mu, cov)
        errs = [np.max(np.abs(np.asarray(colloc(den, jnp.asarray(x_t), jnp.asarray(sig), colloc_nodes=int(d),
                                                  colloc_windows=10, colloc_tol=1e-13, colloc_form=form).x0) - want))
                for d in nodes]
    slope = np.polyfit(nodes, np.log10(errs), 1)[0]
    assert slope < -1.0, (slope, errs)  # at least a decade per extra node: exponential, not algebraic
    assert errs[-1] < 1e-7, errs


def test_counts_tolerance_and_final_denoise():
    mu, cov = random_gaussian(4, 3)
    with x64():
        den = GaussianDenoiser.from_cov(mu, cov)
        x_t = jnp.asarray(80.0 * np.random.default_rng(2).standard_normal((2, 4)))
        sig = jnp.asarray(karras_sigmas(5))
        fixed = colloc(den, x_t, sig, colloc_nodes=5, colloc_windows=3, colloc_iters=4)
        assert int(fixed.rounds) == 3 * 4 + 1 and int(fixed.nfe) == 3 * 4 * 5 + 1
        loose = colloc(den, x_t, sig, colloc_nodes=6, colloc_windows=6, colloc_tol=1e-2)
        tight = colloc(den, x_t, sig, colloc_nodes=6, colloc_windows=6, colloc_tol=1e-11)
        want = denoise(mu, cov, pf_ode_flow(mu, cov, np.asarray(x_t), 80.0, 0.002), 0.002)
        e_loose, e_tight = (np.max(np.abs(np.asarray(o.x0) - want)) for o in (loose, tight))
        assert int(loose.rounds) < int(tight.rounds) and e_tight < e_loose
        # without a trailing zero the sampler stops at sigma_min on the ODE path (no final denoise)
        open_end = colloc(den, x_t, sig[:-1], colloc_nodes=8, colloc_windows=8, colloc_iters=16)
        np.testing.assert_allclose(np.asarray(open_end.x0), pf_ode_flow(mu, cov, np.asarray(x_t), 80.0, 0.002),
                                   atol=1e-6)
        assert int(open_end.rounds) == 8 * 16


def gmm(dim, radius=2.0, std=0.3, dtype=np.float64):
    rng = np.random.default_rng(0)
    means = rng.standard_normal((4, dim))
    means *= radius / np.linalg.norm(means, axis=1, keepdims=True)
    return GMMDenoiser.from_arrays(means, np.full(4, std), np.full(4, 0.25), dtype=dtype)


@pytest.mark.slow
def test_gmm_error_roughly_flat_in_dimension():
    """Same windows, nodes and rounds at d = 16 and d = 1024 (means on a sphere of fixed radius): similar error."""
    sig = karras_sigmas(10)
    errs = {}
    with x64():
        for dim in (16, 1024):
            den = gmm(dim)
            x_t = jnp.asarray(80.0 * np.random.default_rng(dim).standard_normal((2, dim)))
            ref, _ = reference_sample(den, x_t, sig, rtol=1e-11, atol=1e-11)
            out = colloc(den, x_t, jnp.asarray(sig), colloc_nodes=8, colloc_windows=20, colloc_iters=8).x0
            errs[dim] = float(jnp.max(jnp.linalg.norm(out - ref, axis=1)))  # pathwise, not divided by ||x||
    assert errs[16] < 1e-3 and errs[1024] < 1e-3, errs
    assert errs[1024] < 10 * errs[16], errs


def test_usage_errors():
    den = gmm(4, dtype=np.float32)
    x_t = jnp.ones((1, 4))
    sig = jnp.asarray(karras_sigmas(4), jnp.float32)
    for bad in (dict(colloc_nodes=0), dict(colloc_windows=0), dict(colloc_iters=0), dict(colloc_tol=-1.0)):
        with pytest.raises(UsageError):
            get_solver("collocation")(den, x_t, sig, **bad)


def test_tolerance_bounds_the_final_relative_error():
    """--colloc-tol eps (and the defaults, eps 1e-4): every sample ends within eps of a float64 Dopri8 solve of the
    PF-ODE, relatively, on a well-separated 8-component mixture; a looser eps takes fewer rounds."""
    sig = karras_sigmas(8)
    with x64():
        den = separated_mixture()
        x_t = jnp.asarray(80.0 * np.random.default_rng(3).standard_normal((4, 16)))
        ref, _ = reference_sample(den, x_t, sig, rtol=1e-12, atol=1e-12)
        ref = np.asarray(ref)
        runs = {tol: colloc(den, x_t, jnp.asarray(sig), colloc_tol=tol) for tol in (1e-2, 1e-3)}
        runs[1e-4] = colloc(den, x_t, jnp.asarray(sig))
        explicit = colloc(den, x_t, jnp.asarray(sig), **CollocationOptions().flag_values())
    # identity is the promise: the defaults written out are the same options, hence the same compiled program
    np.testing.assert_array_equal(np.asarray(explicit.x0), np.asarray(runs[1e-4].x0))
    for tol, out in runs.items():
        err = np.linalg.norm(np.asarray(out.x0) - ref, axis=1) / np.linalg.norm(ref, axis=1)
        assert np.all(err <= tol), (tol, err)
    assert int(runs[1e-2].rounds) < int(runs[1e-4].rounds)


@pytest.mark.parametrize("n", [1, 3, 8, 16])
def test_exponential_weights_exact_on_polynomials_times_the_kernel(n):
    """Y_i = e^{h c_i} y0 - sum_j A_ij D_j integrates tau^p e^{h (c - tau)} exactly (p < n): checked against the
    closed form p! c^{p+1} sum_k (hc)^k / (k + p + 1)!; an entire D converges spectrally."""
    tab = exponential_table(n)  # builds only if its identities hold
    for h in (-4.0, -1.3, -0.05):
        full = kernel_weights_np(tab, h)
        for p in range(n):
            want = np.array([monomial_integral(c, h, p) for c in tab.ends])
            np.testing.assert_allclose(full @ tab.nodes**p, want, rtol=0, atol=1e-12 * n)
    h, b = -2.0, 1.5  # D(tau) = e^{b tau}: h int_0^1 e^{h (1 - t)} e^{b t} dt = h e^h (e^{b - h} - 1) / (b - h)
    exact = h * np.exp(h) * (np.exp(b - h) - 1) / (b - h)
    err = abs(kernel_weights_np(tab, h)[-1] @ np.exp(b * tab.nodes) - exact)
    assert err < max(1e-14, 2.0 ** (1 - n)), err


def test_exponential_weights_in_the_solver_dtype():
    """The compiled evaluation equals the float64 table, and loses no digits in float32 (no cancellation)."""
    tab = exponential_table(12)
    want = kernel_weights_np(tab, -3.1)
    with x64():
        mat, w = jax.jit(lambda h: kernel_weights(tab, h, jnp.float64))(jnp.float64(-3.1))
    np.testing.assert_allclose(np.concatenate([mat, w[None]]), want, rtol=0, atol=1e-14)
    mat32, w32 = jax.jit(lambda h: kernel_weights(tab, h, jnp.float32))(jnp.float32(-3.1))
    np.testing.assert_allclose(np.concatenate([mat32, w32[None]]), want, rtol=0, atol=2e-6)


class PolynomialInU(eqx.Module):
    """A denoiser that ignores x: D(x, sigma) = sum_k a_k (log sigma)^k (a point-mass data set when degree 0)."""

    coef: jax.Array  # [K, d]

    def __call__(self, x, sigma, *, key=None):
        u = jnp.log(sigma)[:, None, None]
        return jnp.sum(self.coef[None] * u ** jnp.arange(self.coef.shape[0])[None, :, None], axis=1) + 0 * x


def exact_for_polynomial_d(coef, x0, u0, u1):
    """x(u1) for dx/du = x - p(u) from x(u0) = x0, by the closed form of the linear ODE (numerical quadrature of
    e^{u1 - s} p(s) on a fine grid, float64)."""
    s = np.linspace(u0, u1, 200001)
    p = sum(c[None] * s[:, None] ** k for k, c in enumerate(coef))
    integrand = np.exp(u1 - s)[:, None] * p
    return np.exp(u1 - u0) * x0 - np.trapezoid(integrand, s, axis=0)


@pytest.mark.parametrize("n,form", [(3, "ei"), pytest.param(3, "plain", marks=pytest.mark.slow),
                                    pytest.param(1, "ei", marks=pytest.mark.slow),
                                    pytest.param(6, "ei", marks=pytest.mark.slow)])
def test_window_exact_when_d_is_a_polynomial_in_log_sigma(n, form):
    """The exponential form integrates the linear part exactly, so a D of degree < n in u (constant for one node: a
    point-mass data set, whose D is affine in x with zero slope) gives the exact flow with one long window at any
    node count; the plain form does not (x itself is not a polynomial in u)."""
    rng = np.random.default_rng(n)
    coef = rng.standard_normal((n, 3))
    sig = np.array([80.0, 0.05])
    x_t = 80.0 * rng.standard_normal((2, 3))
    want = np.stack([exact_for_polynomial_d(coef, x, np.log(80.0), np.log(0.05)) for x in x_t])
    with x64():
        den = PolynomialInU(jnp.asarray(coef))
        out = colloc(den, jnp.asarray(x_t), jnp.asarray(sig), colloc_nodes=n, colloc_windows=1, colloc_iters=2,
                     colloc_form=form)
    err = np.abs(np.asarray(out.x0) - want).max() / np.abs(want).max()
    assert err < 1e-8 if form == "ei" else err > 1e-3, err


@pytest.mark.slow
def test_warm_starts_change_the_rounds_not_the_fixed_point():
    sig = karras_sigmas(8)
    with x64():
        den = separated_mixture()
        x_t = jnp.asarray(80.0 * np.random.default_rng(5).standard_normal((2, 16)))
        runs = {warm: colloc(den, x_t, jnp.asarray(sig), colloc_windows=6, colloc_nodes=8, colloc_tol=1e-11,
                             colloc_warm=warm) for warm in (True, False)}
    np.testing.assert_allclose(np.asarray(runs[True].x0), np.asarray(runs[False].x0), rtol=0, atol=1e-9)
    assert int(runs[True].rounds) < int(runs[False].rounds)


@pytest.mark.slow
def test_windows_adapt_to_the_roughness_of_the_flow():
    """Adaptive windows are short where the mixture's modes separate (sigma near the component spread) and long at
    large and small sigma; a smooth (Gaussian) data set at the same tolerance takes fewer windows."""
    sig = karras_sigmas(8)
    with x64():
        den = separated_mixture()
        x_t = jnp.asarray(80.0 * np.random.default_rng(3).standard_normal((2, 16)))
        rough = colloc(den, x_t, jnp.asarray(sig), colloc_tol=1e-6)
        mu, cov = random_gaussian(16, 0)
        smooth = colloc(GaussianDenoiser.from_cov(mu, cov), x_t, jnp.asarray(sig), colloc_tol=1e-6)
    k = int(rough.aux["windows"])
    starts = np.log(np.asarray(rough.aux["sigma_starts"])[: k + 1])
    assert bool(rough.aux["finished"]) and k >= 3
    lengths = starts[:-1] - starts[1:]
    mid = np.exp(0.5 * (starts[:-1] + starts[1:]))
    shortest = np.argmin(lengths)
    assert 0.05 < mid[shortest] < 5.0, (mid, lengths)  # R = 2, std = 1/3: the modes separate there
    assert lengths[shortest] < 0.6 * max(lengths[0], lengths[-1]), lengths
    assert int(smooth.aux["windows"]) < k


def test_a_run_stopped_at_the_window_cap_is_refused_not_returned(monkeypatch):
    """Collocation that reaches its cap on windows before sigma_min reports it (finished False, the sigma reached), and
    `generate` turns that into one sentence instead of handing on an unfinished sample."""
    import diffcli.solvers.collocation as collocation
    from diffcli.errors import DiffcliError
    from diffcli.sample.batches import generate

    monkeypatch.setattr(collocation, "MAX_WINDOWS", 3)
    sig = karras_sigmas(8)
    den = separated_mixture()
    x_t = jnp.asarray(80.0 * np.random.default_rng(3).standard_normal((2, 16)), jnp.float32)
    res = get_solver("collocation")(den, x_t, jnp.asarray(sig, jnp.float32), colloc_tol=1e-4)
    reached = float(res.aux["sigma_reached"])
    assert not bool(res.aux["finished"]) and reached > 2 * sig[-2]
    with pytest.raises(DiffcliError, match=rf"stopped at sigma=[0-9.]+, short of sigma={sig[-2]:.4g}, at its cap"):
        generate(denoiser=den, solver=get_solver("collocation"), sigmas=sig, shape=(16,), ids=range(2), seed=0,
                 batch_size=2, solver_options={"colloc_tol": 1e-4})

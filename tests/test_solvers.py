"""Classic samplers on Gaussian data, where the PF-ODE flow and the DDPM law are closed forms (float64)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcli.denoisers.base import AbstractDenoiser
from diffcli.errors import UsageError
from diffcli.solvers import get_solver
from diffcli.solvers.base import per_sample_normal
from diffcli.solvers.ddpm import coupled_noise
from tests.helpers.gaussian_oracle import (
    GaussianDenoiser,
    ddim_law,
    denoise,
    karras_sigmas,
    pf_ode_flow,
    random_gaussian,
    x64,
)
from tests.helpers.tolerance import assert_close

DIM = 6


def problem(batch=4, seed=1):
    mu, cov = random_gaussian(DIM, 0)
    x_t = 80.0 * np.random.default_rng(seed).standard_normal((batch, DIM))
    return mu, cov, x_t


def ode_target(mu, cov, x_t, sigmas):
    """The limit of any ODE solver on this grid: exact flow to the last nonzero sigma, then its final denoise."""
    s_min = sigmas[-2]
    return denoise(mu, cov, pf_ode_flow(mu, cov, x_t, sigmas[0], s_min), s_min)


@pytest.mark.parametrize("name, order", [("euler", 1.0), ("heun", 2.0), ("dpmpp-2m", 2.0)])
def test_convergence_order(name, order):
    mu, cov, x_t = problem()
    steps = [16, 32, 64, 128]
    errors = []
    with x64():
        den = GaussianDenoiser.from_cov(mu, cov)
        solver = eqx.filter_jit(get_solver(name))
        for n in steps:
            sig = karras_sigmas(n)
            out = solver(den, jnp.asarray(x_t), jnp.asarray(sig), key=None)
            errors.append(np.max(np.abs(np.asarray(out.x0) - ode_target(mu, cov, x_t, sig))))
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.25, (slope, errors)


def test_step_to_zero_returns_the_denoised_point():
    mu, cov, x_t = problem()
    with x64():
        den = GaussianDenoiser.from_cov(mu, cov)
        sig = jnp.asarray([3.0, 0.0])
        for name in ("euler", "heun", "dpmpp-2m", "ddpm"):
            out = get_solver(name)(den, jnp.asarray(x_t), sig, key=jax.random.split(jax.random.PRNGKey(0), 4))
            # the solver's program and the eager call round differently: DIM products of size |x_t| per entry
            assert_close(out.x0, den(jnp.asarray(x_t), 3.0), dtype=np.float64, cond=DIM, scale=np.abs(x_t).max())
            assert int(out.nfe) == 1 and int(out.rounds) == 1


def test_nfe_and_rounds():
    mu, cov, x_t = problem()
    den = GaussianDenoiser.from_cov(mu, cov)
    sig = jnp.asarray(karras_sigmas(7), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jnp.asarray(x_t, jnp.float32)
    for name, nfe in (("euler", 7), ("heun", 13), ("dpmpp-2m", 7), ("ddpm", 7)):
        out = get_solver(name)(den, x, sig, key=keys)
        assert int(out.nfe) == nfe and int(out.rounds) == nfe and int(out.aux["nonfinite_step"]) == -1
        assert out.x0.dtype == jnp.float32


def test_ddpm_eta0_is_euler_and_one_step_is_the_posterior():
    mu, cov, x_t = problem()
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    with x64():
        den = GaussianDenoiser.from_cov(mu, cov)
        x = jnp.asarray(x_t)
        sig = jnp.asarray(karras_sigmas(9))
        e = get_solver("euler")(den, x, sig, key=keys).x0
        d0 = get_solver("ddpm")(den, x, sig, key=keys, eta=0.0).x0
        np.testing.assert_allclose(np.asarray(d0), np.asarray(e), rtol=1e-13, atol=1e-12)
        s, s1 = 2.0, 0.5
        out = get_solver("ddpm")(den, x, jnp.asarray([s, s1]), key=keys, eta=1.0).x0
        d = denoise(mu, cov, x_t, s)
        z = np.asarray(per_sample_normal(keys, 0, (DIM,), jnp.float64))
        want = d + (s1**2 / s**2) * (x_t - d) + s1 * np.sqrt(1 - s1**2 / s**2) * z
        np.testing.assert_allclose(np.asarray(out), want, rtol=1e-12, atol=1e-12)


def test_ddpm_law_matches_closed_form():
    """Monte-Carlo mean and covariance of ancestral sampling vs the exact Gaussian law of the discrete chain."""
    mu, cov = random_gaussian(2, 5, lam_range=(0.1, 1.0))
    n = 20000
    sig = karras_sigmas(8, sigma_max=10.0)
    with x64():
        den = GaussianDenoiser.from_cov(mu, cov)
        x_t = sig[0] * jax.random.normal(jax.random.PRNGKey(7), (n, 2), jnp.float64)
        keys = jax.random.split(jax.random.PRNGKey(8), n)
        out = np.asarray(get_solver("ddpm")(den, x_t, jnp.asarray(sig), key=keys).x0)
    mean, c = ddim_law(mu, cov, sig, eta=1.0)
    se = np.sqrt(np.diag(c) / n)
    assert np.all(np.abs(out.mean(0) - mean) < 5 * se)
    emp = np.cov(out.T)
    assert np.all(np.abs(emp - c) < 5 * np.sqrt((c**2 + np.outer(np.diag(c), np.diag(c))) / n))
    # and the discrete law is not the target law by accident: it depends on the steps
    assert not np.allclose(ddim_law(mu, cov, karras_sigmas(3, sigma_max=10.0), 1.0)[1], c, atol=1e-3)


def test_coupled_ddpm_on_a_subgrid_lands_on_the_same_states():
    """Driven by one Brownian path in 1/sigma^2, DDPM with an exact denoiser on a subgrid reproduces the fine run's
    states at the shared sigmas (point-mass data: every step samples the exact bridge). Independent noise does not."""
    c = np.array([0.3, -1.2, 0.5])
    fine = np.geomspace(80.0, 0.05, 41)
    coarse = fine[::8]
    with x64():
        den = GaussianDenoiser.from_cov(c, np.zeros((3, 3)))
        x_t = 80.0 * jax.random.normal(jax.random.PRNGKey(3), (6, 3), jnp.float64)
        z_fine, z_coarse = coupled_noise([fine, coarse], (6, 3), seed=4)
        run = get_solver("ddpm")
        keys = jax.random.split(jax.random.PRNGKey(5), 6)
        a = np.asarray(run(den, x_t, jnp.asarray(fine), key=keys, noise=jnp.asarray(z_fine, jnp.float64)).x0)
        b = np.asarray(run(den, x_t, jnp.asarray(coarse), key=keys, noise=jnp.asarray(z_coarse, jnp.float64)).x0)
        apart = np.asarray(run(den, x_t, jnp.asarray(coarse), key=keys).x0)
    np.testing.assert_allclose(b, a, atol=1e-5)
    assert np.abs(apart - a).max() > 1e-2


def test_coupled_noise_has_the_ddpm_law():
    """The coupled noise is i.i.d. standard normal per step: the chain's law is still the exact discrete law."""
    mu, cov = random_gaussian(2, 5, lam_range=(0.1, 1.0))
    n = 20000
    sig = karras_sigmas(8, sigma_max=10.0)
    z = coupled_noise([karras_sigmas(30, sigma_max=10.0), sig], (n, 2), seed=2)[1]
    assert np.all(z[-1] == 0)  # the step to sigma = 0 injects nothing
    with x64():
        den = GaussianDenoiser.from_cov(mu, cov)
        x_t = sig[0] * jax.random.normal(jax.random.PRNGKey(7), (n, 2), jnp.float64)
        out = np.asarray(get_solver("ddpm")(den, x_t, jnp.asarray(sig), key=None, noise=jnp.asarray(z, jnp.float64)).x0)
    mean, cv = ddim_law(mu, cov, sig, eta=1.0)
    assert np.all(np.abs(out.mean(0) - mean) < 5 * np.sqrt(np.diag(cv) / n))
    assert np.all(np.abs(np.cov(out.T) - cv) < 5 * np.sqrt((cv**2 + np.outer(np.diag(cv), np.diag(cv))) / n))


def test_ddpm_noise_shape_is_checked():
    den = GaussianDenoiser.from_cov(np.zeros(2), np.eye(2))
    with pytest.raises(UsageError, match="noise must have shape"):
        get_solver("ddpm")(den, jnp.ones((3, 2)), jnp.asarray([1.0, 0.5, 0.0]), key=None, noise=jnp.zeros((2, 2, 2)))


def test_determinism_and_batch_independence():
    mu, cov, x_t = problem(batch=5)
    den = GaussianDenoiser.from_cov(mu, cov)
    sig = jnp.asarray(karras_sigmas(6), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(11), 5)
    x = jnp.asarray(x_t, jnp.float32)
    solver = eqx.filter_jit(get_solver("ddpm"))
    a = np.asarray(solver(den, x, sig, key=keys).x0)
    b = np.asarray(solver(den, x, sig, key=keys).x0)
    np.testing.assert_array_equal(a, b)  # the same compiled program on the same inputs: bit-identical
    part = np.asarray(solver(den, x[:2], sig, key=keys[:2]).x0)
    np.testing.assert_allclose(part, a[:2], rtol=1e-5, atol=1e-5)
    other = np.asarray(solver(den, x, sig, key=jax.random.split(jax.random.PRNGKey(12), 5)).x0)
    assert np.max(np.abs(other - a)) > 1e-2


class NaNDenoiser(AbstractDenoiser):
    """Zero denoiser that goes NaN below sigma 1 (to test non-finite detection)."""

    def __call__(self, x, sigma, *, key=None):
        return jnp.where(jnp.reshape(sigma, (-1,) + (1,) * (x.ndim - 1)) < 1.0, jnp.nan, 0.0) * x


@pytest.mark.parametrize("name, step", [("euler", 3), ("heun", 2), ("dpmpp-2m", 3), ("ddpm", 3)])
def test_nonfinite_step_reported(name, step):
    """D is NaN from sigma 0.5 on: step 3 evaluates there, and Heun's correction of step 2 already does."""
    sig = jnp.asarray([8.0, 4.0, 2.0, 0.5, 0.1, 0.0], jnp.float32)
    out = get_solver(name)(NaNDenoiser(), jnp.ones((2, 3)), sig, key=jax.random.split(jax.random.PRNGKey(0), 2))
    assert int(out.aux["nonfinite_step"]) == step


def test_traced_sigmas_do_not_recompile():
    mu, cov, x_t = problem()
    den = GaussianDenoiser.from_cov(mu, cov)
    traces = []

    def run(d, x, s):
        traces.append(1)
        return get_solver("heun")(d, x, s, key=None).x0

    f = eqx.filter_jit(run)
    x = jnp.asarray(x_t, jnp.float32)
    a = f(den, x, jnp.asarray(karras_sigmas(5), jnp.float32))
    b = f(den, x, jnp.asarray(karras_sigmas(5, sigma_max=40.0), jnp.float32))
    assert len(traces) == 1 and not np.allclose(a, b)


def test_usage_errors():
    den = GaussianDenoiser.from_cov(np.zeros(2), np.eye(2))
    with pytest.raises(UsageError):
        get_solver("ddpm")(den, jnp.ones((1, 2)), jnp.asarray([1.0, 0.0]), key=None)
    with pytest.raises(UsageError):
        get_solver("ddpm")(den, jnp.ones((1, 2)), jnp.asarray([1.0, 0.0]),
                           key=jax.random.split(jax.random.PRNGKey(0), 1), eta=2.0)
    with pytest.raises(UsageError):
        get_solver("euler")(den, jnp.ones((1, 2)), jnp.asarray([1.0]), key=None)

"""Conversions between sigma-space and VP/DDPM, cosine, OU time, and score/eps/v predictions (float64 closed forms)."""

import numpy as np
import pytest

from diffcli import noise
from diffcli.errors import UsageError
from tests.helpers.gaussian_oracle import denoise, random_gaussian


def test_ddpm_alpha_bar_is_the_linear_beta_product():
    abar = noise.ddpm_alpha_bar()
    assert abar.shape == (1000,) and abar.dtype == np.float64
    betas = 1.0 - abar[1:] / abar[:-1]  # recovered per-step betas must be the linear ramp 1e-4 .. 0.02
    np.testing.assert_allclose(betas, np.linspace(1e-4, 0.02, 1000)[1:], rtol=1e-9, atol=1e-12)
    assert abar[0] == pytest.approx(1 - 1e-4, rel=1e-15)
    np.testing.assert_allclose(np.log(abar[-1]), np.sum(np.log1p(-np.linspace(1e-4, 0.02, 1000))), rtol=1e-12)


def test_ddpm_sigma_matches_definition_and_increases():
    s = noise.ddpm_sigmas()
    abar = noise.ddpm_alpha_bar()
    np.testing.assert_allclose(s, np.sqrt((1 - abar) / abar), rtol=1e-14)
    assert s[0] == pytest.approx(np.sqrt(1e-4 / (1 - 1e-4)), rel=1e-12)
    assert np.all(np.diff(s) > 0)


def test_ddpm_time_round_trips():
    t_int = np.arange(0, 1000, 37)
    np.testing.assert_allclose(noise.ddpm_sigma_to_t(noise.ddpm_t_to_sigma(t_int)), t_int, atol=1e-9)
    np.testing.assert_array_equal(noise.ddpm_sigma_to_t(noise.ddpm_t_to_sigma(t_int), nearest=True), t_int)
    t = np.random.default_rng(0).uniform(0, 999, 200)
    np.testing.assert_allclose(noise.ddpm_sigma_to_t(noise.ddpm_t_to_sigma(t)), t, atol=1e-8)
    # integer timesteps give the table values exactly; halfway is the geometric mean (linear in log sigma)
    np.testing.assert_allclose(noise.ddpm_t_to_sigma(t_int), noise.ddpm_sigmas()[t_int], rtol=1e-14)
    s = noise.ddpm_sigmas()
    assert noise.ddpm_t_to_sigma(10.5) == pytest.approx(np.sqrt(s[10] * s[11]), rel=1e-12)
    with pytest.raises(UsageError):
        noise.ddpm_t_to_sigma(1000.5)


def test_cosine_schedule_round_trips_and_matches_definition():
    t = np.linspace(0.0, 0.99, 101)
    sig = noise.cosine_t_to_sigma(t)
    assert sig[0] == pytest.approx(0.0, abs=1e-7) and np.all(np.diff(sig) > 0)
    f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(noise.alpha_bar_from_sigma(sig), f(t) / f(0.0), rtol=1e-12)
    np.testing.assert_allclose(noise.cosine_sigma_to_t(sig[1:]), t[1:], atol=1e-9)


def test_ou_time_and_state():
    sig = np.array([1e-3, 0.1, 1.0, 10.0, 80.0])
    t = noise.sigma_to_ou_time(sig)
    np.testing.assert_allclose(np.expm1(t), sig**2, rtol=1e-12)
    np.testing.assert_allclose(noise.ou_time_to_sigma(t), sig, rtol=1e-12)
    # x = x0 + sigma z maps to the OU marginal e^{-t/2} x0 + sqrt(1 - e^{-t}) z
    rng = np.random.default_rng(1)
    x0, z = rng.standard_normal(5), rng.standard_normal(5)
    x_ou = noise.to_ou(x0 + sig * z, sig)
    np.testing.assert_allclose(x_ou, np.exp(-t / 2) * x0 + np.sqrt(1 - np.exp(-t)) * z, rtol=1e-12)
    np.testing.assert_allclose(noise.from_ou(x_ou, t), x0 + sig * z, rtol=1e-12)
    np.testing.assert_allclose(noise.from_vp(noise.to_vp(x0, sig), sig), x0, rtol=1e-12)


def test_score_of_gaussian_matches_closed_form():
    mu, cov = random_gaussian(4, seed=3)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4)) * 2
    for sigma in (0.05, 0.7, 9.0):
        d = denoise(mu, cov, x, sigma)
        exact = -np.linalg.solve(cov + sigma**2 * np.eye(4), (x - mu).T).T  # grad log N(mu, S + sigma^2 I)
        np.testing.assert_allclose(noise.score_from_denoiser(x, d, sigma), exact, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(noise.denoiser_from_score(x, exact, sigma), d, rtol=1e-9, atol=1e-12)


def test_eps_and_v_round_trip_and_definitions():
    rng = np.random.default_rng(4)
    x0, eps = rng.standard_normal((2, 8))
    for sigma in (0.1, 1.0, 5.0):
        x = x0 + sigma * eps
        np.testing.assert_allclose(noise.eps_from_denoiser(x, x0, sigma), eps, rtol=1e-12)
        np.testing.assert_allclose(noise.denoiser_from_eps(x, eps, sigma), x0, rtol=1e-12)
        alpha, s = 1 / np.sqrt(1 + sigma**2), sigma / np.sqrt(1 + sigma**2)
        v = alpha * eps - s * x0  # Salimans & Ho's v for x_vp = alpha x0 + s eps
        np.testing.assert_allclose(noise.v_from_denoiser(x, x0, sigma), v, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(noise.denoiser_from_v(x, v, sigma), x0, rtol=1e-12, atol=1e-14)

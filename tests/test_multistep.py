"""DPM-Solver++(3M) and UniPC against their reference formulas and libraries, their orders and their exactness.

The references are float64 NumPy transcriptions, written loop by loop in the peer libraries' own variables, of
k-diffusion's sample_dpmpp_3m_sde (eta = 0) and of diffusers' UniPCMultistepScheduler (bh2, predict_x0, order 3);
with PyTorch and diffusers installed the real schedulers are driven by the same exact denoiser too."""

import math
from decimal import Decimal, localcontext

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcli.denoisers.gmm import GMMDenoiser
from diffcli.solvers import get_solver
from diffcli.solvers.dpmpp import phis
from diffcli.solvers.reference import reference_sample
from diffcli.solvers.unipc import lagrange_weights
from tests.helpers.gaussian_oracle import GaussianDenoiser, denoise, karras_sigmas, pf_ode_flow, random_gaussian, x64
from tests.helpers.mixtures import separated_mixture
from tests.helpers.tolerance import assert_close
from tests.test_solvers import NaNDenoiser

DIM = 6
MULTISTEP = ("dpmpp-3m", "unipc")
SOLVE = {name: eqx.filter_jit(get_solver(name)) for name in MULTISTEP}


# --- float64 transcriptions of the peer libraries -------------------------------------------------------------------


def kdiffusion_dpmpp_3m(model, x, sigmas):
    """k-diffusion sample_dpmpp_3m_sde with eta = 0 (no noise), variable for variable."""
    denoised_1 = denoised_2 = None
    h = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -np.log(sigmas[i]), -np.log(sigmas[i + 1])
            h = s - t
            h_eta = h * (0.0 + 1)
            x = np.exp(-h_eta) * x + -np.expm1(-h_eta) * denoised
            if h_2 is not None:
                r0 = h_1 / h
                r1 = h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = np.expm1(-h_eta) / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                r = h_1 / h
                d = (denoised - denoised_1) / r
                phi_2 = np.expm1(-h_eta) / h_eta + 1
                x = x + phi_2 * d
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def unipc_bh2_coefficients(lambdas, base, order, corrector):
    """diffusers' rks and rhos: the step from lambdas[base] to lambdas[base + 1] of the given order, with the model
    outputs at lambdas[base - i], i = 1..order-1 (and, for the corrector, the new one at lambdas[base + 1])."""
    h = lambdas[base + 1] - lambdas[base]
    rks = [(lambdas[base - i] - lambdas[base]) / h for i in range(1, order)] + [1.0]
    hh = -h
    h_phi_1 = np.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial_i = 1
    b_h = np.expm1(hh)
    rows, b = [], []
    for i in range(1, order + 1):
        rows.append(np.power(rks, i - 1))
        b.append(h_phi_k * factorial_i / b_h)
        factorial_i *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial_i
    r_mat, b = np.stack(rows), np.asarray(b)
    if corrector:
        rhos = np.array([0.5]) if order == 1 else np.linalg.solve(r_mat, b)
    elif order == 1:
        rhos = np.zeros(0)
    else:
        rhos = np.array([0.5]) if order == 2 else np.linalg.solve(r_mat[:-1, :-1], b[:-1])
    return h, rks, rhos, b_h


def diffusers_unipc(model, x, sigmas, solver_order=3):
    """diffusers UniPCMultistepScheduler.step in sigma-space (alpha = 1): bh2, predict_x0, lower_order_final."""
    with np.errstate(divide="ignore"):
        lambdas = -np.log(np.asarray(sigmas, np.float64))  # sigma = 0 gives lambda = inf, never used
    n = len(sigmas) - 1
    outputs = []  # model outputs, newest last
    last_sample, this_order = None, None
    for k in range(n):
        m = model(x, sigmas[k])
        if k > 0:  # UniC for the step k-1 -> k, with the order its predictor had
            h, rks, rhos, b_h = unipc_bh2_coefficients(lambdas, k - 1, this_order, corrector=True)
            m0 = outputs[-1]
            d1s = [(outputs[-(i + 1)] - m0) / rks[i - 1] for i in range(1, this_order)]
            corr = sum(rho * d for rho, d in zip(rhos[:-1], d1s, strict=True))
            x = np.exp(-h) * last_sample - np.expm1(-h) * m0 - b_h * (corr + rhos[-1] * (m - m0))
        outputs.append(m)
        this_order = min(solver_order, n - k, k + 1)
        last_sample = x
        if sigmas[k + 1] == 0:  # lambda_t = inf: sigma_t / sigma_s0 = 0, h_phi_1 = -1, no D1s
            x = m
            continue
        h, rks, rhos, b_h = unipc_bh2_coefficients(lambdas, k, this_order, corrector=False)
        d1s = [(outputs[-(i + 1)] - m) / rks[i - 1] for i in range(1, this_order)]
        pred = sum(rho * d for rho, d in zip(rhos, d1s, strict=True))
        x = np.exp(-h) * x - np.expm1(-h) * m - b_h * pred
    return x


REFERENCES = {"dpmpp-3m": kdiffusion_dpmpp_3m, "unipc": diffusers_unipc}


def numpy_model(den):
    return lambda x, s: np.asarray(den(jnp.asarray(x), jnp.full((x.shape[0],), s)))


# --- the peer formulas on an exact denoiser -------------------------------------------------------------------------

# 7 steps: orders 1, 2, 3, 3, 3 and UniPC's 2, 1 at the end; the second grid stops above 0
PEER_GRIDS = (karras_sigmas(7), np.geomspace(20.0, 0.05, 8))


@pytest.mark.parametrize("name", MULTISTEP)
def test_matches_the_peer_formulas(name):
    """float64, 8-d mixture: every ramp-up, full-order, ramp-down and final-denoise branch."""
    x_t = 40.0 * np.random.default_rng(0).standard_normal((4, 8))
    with x64():
        den = separated_mixture(dim=8, ratio=3.0)
        for sig in PEER_GRIDS:
            out = SOLVE[name](den, jnp.asarray(x_t), jnp.asarray(sig))
            want = REFERENCES[name](numpy_model(den), x_t, sig)
            # two float64 computations in a different order, through a denoiser of condition ~ R^2 / std^2 = 9
            assert_close(out.x0, want, dtype=np.float64, ulps=64, cond=9.0, err_msg=f"{name} {sig}")
            assert int(out.nfe) == int(out.rounds) == 7 and int(out.aux["nonfinite_step"]) == -1


def test_the_references_are_not_interchangeable():
    """The comparison above can fail: the two methods (and a one-step change of either) differ far beyond round-off."""
    x_t = 40.0 * np.random.default_rng(0).standard_normal((4, 8))
    sig = karras_sigmas(12)
    with x64():
        model = numpy_model(separated_mixture(dim=8, ratio=3.0))
        a, b = kdiffusion_dpmpp_3m(model, x_t, sig), diffusers_unipc(model, x_t, sig)
        c = diffusers_unipc(model, x_t, sig, solver_order=2)
    assert np.abs(a - b).max() > 1e-3 and np.abs(b - c).max() > 1e-4


def run_diffusers(scheduler, den, x_vp, steps):
    """(sigmas, x_T, x0) of a diffusers scheduler on its own grid from its state x_vp = x_T / sqrt(1 + sigma_max^2),
    its model the exact denoiser in x0 ("sample") form. The grid is made float64 so that only the scheduler's own
    arithmetic remains."""
    import torch

    scheduler.set_timesteps(steps)
    scheduler.sigmas = scheduler.sigmas.to(torch.float64)
    scheduler.set_begin_index(0)
    sig = scheduler.sigmas.numpy()
    model = numpy_model(den)
    sample = torch.from_numpy(x_vp)
    for k, t in enumerate(scheduler.timesteps):
        d = model(sample.numpy() * np.sqrt(1.0 + sig[k] ** 2), sig[k])
        sample = scheduler.step(torch.from_numpy(np.array(d)), t, sample).prev_sample
    return sig, x_vp * np.sqrt(1.0 + sig[0] ** 2), sample.numpy()


def test_matches_the_diffusers_schedulers(steps=7):
    """The real UniPCMultistepScheduler (bh2, order 3) and DPMSolverMultistepScheduler (dpmsolver++, order 3, heun
    warm-up: k-diffusion's) on their own Karras timesteps, driven by the exact denoiser in float64."""
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    common = dict(solver_order=3, prediction_type="sample", use_karras_sigmas=True, final_sigmas_type="zero")
    unipc = diffusers.UniPCMultistepScheduler(solver_type="bh2", predict_x0=True, **common)
    # lower_order_final off: the library otherwise drops to second order one step early on grids under 15 steps
    dpm = diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_type="heun",
                                                lower_order_final=False, **common)
    x_vp = np.random.default_rng(1).standard_normal((4, 8))
    with x64():
        den = separated_mixture(dim=8, ratio=3.0)
        for name, scheduler in (("unipc", unipc), ("dpmpp-3m", dpm)):
            sig, x_t, want = run_diffusers(scheduler, den, x_vp, steps)
            got = SOLVE[name](den, jnp.asarray(x_t), jnp.asarray(sig)).x0
            if name == "unipc":
                assert_close(got, want, dtype=np.float64, ulps=64, cond=9.0, err_msg=name)
            else:  # diffusers' DPM-Solver rounds its state to float32 on every step
                assert_close(got, want, dtype=np.float32, ulps=2 * steps, err_msg=name)


@pytest.mark.parametrize("name", MULTISTEP)
def test_nonfinite_step_reported(name):
    """D is NaN from sigma 0.5 on: step 3 evaluates there and its state is the first non-finite one."""
    sig = jnp.asarray([8.0, 4.0, 2.0, 0.5, 0.1, 0.0], jnp.float32)
    out = get_solver(name)(NaNDenoiser(), jnp.ones((2, 3)), sig, key=None)
    assert int(out.aux["nonfinite_step"]) == 3 and out.x0.dtype == jnp.float32


# --- exactness and orders -------------------------------------------------------------------------------------------


def test_point_mass_data_is_exact_on_any_grid():
    """D = c for every x and sigma: the exponential integrator's DDIM part is the exact flow c + (s'/s)(x - c), and
    every difference of D vanishes, so each step is exact whatever its length (uneven grid, ending above 0 or at 0)."""
    c = np.linspace(-1.0, 1.0, 8)
    x_t = 40.0 * np.random.default_rng(2).standard_normal((4, 8))
    uneven = np.sort(np.random.default_rng(3).uniform(0.01, 30.0, 8))[::-1]
    with x64():
        den = GMMDenoiser.from_arrays(np.tile(c, (8, 1)), np.zeros(8), np.full(8, 1 / 8), dtype=np.float64)
        for sig in (uneven, np.concatenate([uneven[:-1], [0.0]])):
            want = pf_ode_flow(c, np.zeros((8, 8)), x_t, sig[0], sig[-1])
            for name in MULTISTEP:
                got = SOLVE[name](den, jnp.asarray(x_t), jnp.asarray(sig)).x0
                assert_close(got, want, dtype=np.float64, ulps=64, scale=np.abs(x_t).max(), err_msg=name)


def fitted_order(name, steps, grid):
    """-slope of log(max error) against log(steps) on Gaussian data, the exact flow and final denoise the target."""
    mu, cov = random_gaussian(DIM, 0)
    x_t = 80.0 * np.random.default_rng(1).standard_normal((4, DIM))
    errors = []
    with x64():
        den = GaussianDenoiser.from_cov(mu, cov)
        for n in steps:
            sig = grid(n)
            got = np.asarray(SOLVE[name](den, jnp.asarray(x_t), jnp.asarray(sig)).x0)
            want = denoise(mu, cov, pf_ode_flow(mu, cov, x_t, sig[0], sig[-2]), sig[-2])
            errors.append(np.max(np.abs(got - want)))
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0], errors


def log_uniform(n):
    return np.concatenate([np.geomspace(80.0, 0.002, n), [0.0]])


def test_unipc_order():
    """UniPC-3 with its corrector is a fourth-order method (UniC-p raises UniP-p by one): Karras grids of 32-128."""
    order, errors = fitted_order("unipc", [32, 64, 128], karras_sigmas)
    assert abs(order - 4.0) < 0.3, (order, errors)


def test_dpmpp_3m_order():
    """The peer libraries' DPM-Solver++(3M) weights the second difference by h phi_3(-h) where the Taylor expansion
    has 2 h phi_3(-h) (docs/multistep.md): its local error keeps an h^3 term, so the method is of second order once
    the steps are small (log-uniform grids of 64-256 steps)."""
    order, errors = fitted_order("dpmpp-3m", [64, 128, 256], log_uniform)
    assert abs(order - 2.0) < 0.25, (order, errors)


@pytest.mark.slow
@pytest.mark.parametrize("name, order, grid", [("unipc", 4.0, karras_sigmas), ("dpmpp-3m", 2.0, log_uniform)])
def test_orders_on_a_mixture_against_dop853(name, order, grid):
    """8-component mixture in 16 dimensions (R/std 3), 8 samples, against diffrax's Dopri8 at rtol = atol = 1e-12 and
    the final denoise: 100-400 steps (measured slopes 4.05 and 2.01; docs/multistep.md)."""
    steps = [100, 200, 400]
    x_t = 80.0 * np.random.default_rng(1).standard_normal((8, 16))
    errors = []
    with x64():
        den = separated_mixture(dim=16, ratio=3.0)
        for n in steps:
            sig = grid(n)
            want = np.asarray(reference_sample(den, jnp.asarray(x_t), sig)[0])
            got = np.asarray(SOLVE[name](den, jnp.asarray(x_t), jnp.asarray(sig)).x0)
            errors.append(np.abs(got - want).max() / np.abs(want).max())
    fitted = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(fitted - order) < 0.25, (fitted, errors)


# --- the pieces -----------------------------------------------------------------------------------------------------


def exact_phis(x, count):
    """[phi_0(x), ..., phi_count(x)] to 60 digits: for |x| <= 5 the series of phi_count (80 terms, truncation below
    5^80/80! ~ 1e-63) and phi_j = 1/j! + x phi_{j+1}; beyond, the upward recursion from e^x (cancelling 2 digits)."""
    with localcontext() as ctx:
        ctx.prec = 60
        x = Decimal(float(x))
        if abs(x) <= 5:
            out = [sum(x**i / math.factorial(i + count) for i in range(80))]
            for j in reversed(range(count)):
                out.insert(0, Decimal(1) / math.factorial(j) + x * out[0])
            return out
        out = [x.exp()]
        for j in range(count):
            out.append((out[-1] - Decimal(1) / math.factorial(j)) / x)
        return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_phi_functions(dtype):
    """phi_0..phi_4 against exact rational values for x from -1e-6 to -30: no digits lost to cancellation at small
    |x| (where the upward recursion would lose eps / |x|^j) in either dtype."""
    xs = -np.concatenate([np.geomspace(1e-6, 30.0, 41), [0.999999, 1.0, 1.000001]]).astype(dtype)
    want = np.array([[float(v) for v in exact_phis(x, 4)] for x in xs]).T
    with x64():
        got = np.asarray(jax.jit(lambda x: jnp.stack(phis(x, 4)))(jnp.asarray(xs)))
    np.testing.assert_allclose(got, want, rtol=16 * np.finfo(dtype).eps, atol=0)


def test_lagrange_weights_solve_the_moment_equations():
    rng = np.random.default_rng(4)
    for size in (1, 2, 3):
        nodes, b = -rng.uniform(0.2, 3.0, size), rng.standard_normal(size)
        w = np.asarray(lagrange_weights(list(nodes), list(b)), np.float64)
        np.testing.assert_allclose(np.vander(nodes, increasing=True).T @ w, b, rtol=1e-13, atol=1e-13)

"""Picard (PIADM / ParaDiGMS) against the sequential samplers it must reproduce, on Gaussian and GMM data."""

import json
import os
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcli.denoisers.gmm import GMMDenoiser
from diffcli.errors import UsageError
from diffcli.solvers import get_solver
from diffcli.solvers.base import per_sample_normal
from diffcli.solvers.options import PicardOptions
from diffcli.solvers.picard import (
    MODES,
    POINT_TOL_MAX,
    TOL_SAFETY,
    affine_prefix,
    anderson_update,
    make_plan,
    picard_round,
    secant_slopes,
)
from tests.helpers.gaussian_oracle import GaussianDenoiser, karras_sigmas, random_gaussian, x64
from tests.helpers.mixtures import separated_mixture

SEQUENTIAL = {"sde": "ddpm", "ode": "euler"}
picard = eqx.filter_jit(get_solver("picard"))


def gmm_denoiser(dim=8, dtype=np.float64):
    rng = np.random.default_rng(0)
    means = rng.standard_normal((4, dim))
    means *= 2.0 / np.linalg.norm(means, axis=1, keepdims=True)
    return GMMDenoiser.from_arrays(means, np.full(4, 0.3), np.full(4, 0.25), dtype=dtype)


def start(batch=3, dim=8, steps=12, dtype=jnp.float64):
    sig = jnp.asarray(karras_sigmas(steps), dtype)
    x_t = sig[0] * jax.random.normal(jax.random.PRNGKey(0), (batch, dim), dtype)
    return x_t, sig, jax.random.split(jax.random.PRNGKey(1), batch)


def test_affine_prefix_matches_a_loop():
    rng = np.random.default_rng(0)
    r = rng.uniform(0, 1, (7, 1, 1))
    c = rng.standard_normal((7, 2, 3))
    x0 = rng.standard_normal((2, 3))
    with x64():
        got = np.asarray(affine_prefix(jnp.asarray(x0), jnp.asarray(r), jnp.asarray(c)))
    want, x = [], x0
    for m in range(7):
        x = r[m] * x + c[m]
        want.append(x)
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-13, atol=1e-13)


def rel_err(x, ref) -> float:
    """Relative distance ||x - ref|| / ||ref|| over the whole batch."""
    return float(np.linalg.norm(np.asarray(x) - ref) / np.linalg.norm(ref))


def sequential_path(den, x_t, sig, keys, eta):
    """All states of the sequential DDIM(eta) chain, stepped eagerly from the written-out update (independent code)."""
    xs = [np.asarray(x_t)]
    for j in range(sig.shape[0] - 1):
        s, s1 = float(sig[j]), float(sig[j + 1])
        d = np.asarray(den(jnp.asarray(xs[-1]), s))
        n = eta * s1 * np.sqrt(1 - (s1 / s) ** 2)
        z = np.asarray(per_sample_normal(keys, j, xs[-1].shape[1:], jnp.float64))
        xs.append(d + np.sqrt(s1**2 - n**2) / s * (xs[-1] - d) + n * z)
    return xs


def with_sequential(mode, steps):
    """(GMM denoiser, x_T, sigmas, keys, the sequential sample of `mode` from that noise); call under x64()."""
    den = gmm_denoiser()
    x_t, sig, keys = start(steps=steps)
    return den, x_t, sig, keys, np.asarray(get_solver(SEQUENTIAL[mode])(den, x_t, sig, key=keys).x0)


@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_reproduces_sequential(mode):
    """Window 1, blocks with as many rounds as steps, and a tiny tolerance all give the sequential sample."""
    with x64():
        den, x_t, sig, keys, seq = with_sequential(mode, steps=8)
        cases = (dict(picard_window=1), dict(picard_blocks=2, picard_iters=4), dict(picard_tol=1e-9, picard_window=3))
        for opts in cases:
            out = picard(den, x_t, sig, key=keys, picard_mode=mode, **opts)
            np.testing.assert_allclose(np.asarray(out.x0), seq, rtol=0, atol=1e-9, err_msg=str(opts))
            assert int(out.aux["nonfinite_step"]) == -1
            if "picard_window" in opts and opts["picard_window"] == 1:
                assert int(out.rounds) == 8 and int(out.nfe) == 8


def test_float32_window_one_matches_ddpm():
    den = gmm_denoiser(dtype=np.float32)
    x_t, sig, keys = start(steps=8, dtype=jnp.float32)
    seq = np.asarray(get_solver("ddpm")(den, x_t, sig, key=keys).x0)
    out = picard(den, x_t, sig, key=keys, picard_window=1)
    np.testing.assert_allclose(np.asarray(out.x0), seq, rtol=0, atol=1e-6 * np.abs(seq).max())


def run_rounds(den, x_t, sig, keys, eta, rounds):
    """Window states after each of `rounds` rounds on one window covering the whole grid."""
    w = sig.shape[0] - 1
    xs = jnp.broadcast_to(x_t, (w + 1,) + x_t.shape)
    round_ = jax.jit(lambda v: picard_round(den, v, jnp.int32(0), sig, key=keys, eta=eta)[0])
    out = []
    for _ in range(rounds):
        xs = round_(xs)
        out.append(np.asarray(xs))
    return out


@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_first_k_points_exact_after_k_rounds(mode):
    steps = 8
    with x64():
        den = gmm_denoiser()
        x_t, sig, keys = start(steps=steps)
        seq = sequential_path(den, x_t, sig, keys, MODES[mode])
        for k, xs in enumerate(run_rounds(den, x_t, sig, keys, MODES[mode], steps), start=1):
            err = [np.max(np.abs(xs[m] - seq[m])) for m in range(steps + 1)]
            assert max(err[:k + 1]) < 1e-10 * max(1.0, np.abs(seq[0]).max()), (k, err)
            if k < steps:
                assert err[k + 1] > 1e-8, (k, err)  # and no sooner: point k + 1 still depends on an old guess


def test_error_decays_geometrically_in_rounds():
    """Fixed noise, one window over the whole grid: the pathwise error to sequential DDPM falls at least
    geometrically."""
    steps = 24
    with x64():
        den = gmm_denoiser()
        x_t, sig, keys = start(steps=steps, batch=4)
        seq = sequential_path(den, x_t, sig, keys, 1.0)[-1]
        errs = [rel_err(xs[-1], seq) for xs in run_rounds(den, x_t, sig, keys, 1.0, 12)]
    rounds = np.arange(2, 13)
    errs = np.asarray(errs[1:])
    slope = np.polyfit(rounds, np.log(errs), 1)[0]
    assert np.all(np.diff(np.log(errs)) < 0), errs
    assert np.exp(slope) < 0.5, (np.exp(slope), errs)  # error shrinks by more than 2x per round


def test_tolerance_mode_rounds_and_accuracy():
    with x64():
        den = gmm_denoiser()
        x_t, sig, keys = start(steps=40)
        seq = np.asarray(get_solver("euler")(den, x_t, sig, key=keys).x0)
        loose = picard(den, x_t, sig, key=keys, picard_mode="ode", picard_tol=1e-2, picard_window=10)
        tight = picard(den, x_t, sig, key=keys, picard_mode="ode", picard_tol=1e-6, picard_window=10)
    e_loose, e_tight = (rel_err(o.x0, seq) for o in (loose, tight))
    assert e_tight < 1e-4 and e_tight < e_loose
    assert int(loose.rounds) < int(tight.rounds) <= 40 and int(loose.rounds) < 40
    for out in (loose, tight):  # every evaluation at a real step; spare rows only in the last, shorter windows
        assert int(out.aux["points"]) <= int(out.nfe) < 2 * int(out.aux["points"]) <= 2 * 10 * int(out.rounds)


class CountingDenoiser:
    """Records the rows of every call it receives (one entry per executed call, from inside the compiled loop)."""

    def __init__(self, inner):
        self.inner, self.rows = inner, []

    def __call__(self, x, sigma, *, key=None):
        jax.debug.callback(lambda s: self.rows.append(int(s.shape[0])), sigma)
        return self.inner(x, sigma, key=key)


@pytest.mark.parametrize("rule", ["blocks", "window", pytest.param("paradigms", marks=pytest.mark.slow)])
def test_nfe_counts_the_evaluations_made_and_none_past_the_last_step(rule):
    """13 steps in windows of 5: every rule's nfe is the rows the denoiser received, per sample. Blocks of 5, 5, 3
    with 2 rounds each refine 26 real points; the last block's call has 4 rows (the smallest size >= 3), not 5."""
    with x64():
        den = CountingDenoiser(gmm_denoiser())
        x_t, sig, keys = start(batch=3, steps=13)
        opts = dict(blocks=dict(picard_iters=2), window=dict(picard_tol=1e-3),
                    paradigms=dict(picard_rule="paradigms", picard_tol=1e-3))[rule]
        out = jax.jit(lambda x: get_solver("picard")(den, x, sig, key=keys, picard_window=5, **opts))(x_t)
        jax.block_until_ready(out)
    assert len(den.rows) == int(out.rounds) and sum(den.rows) == 3 * int(out.nfe), (den.rows, out)
    assert int(out.nfe) < 2 * int(out.aux["points"])
    if rule == "blocks":
        assert int(out.rounds) == 6 and int(out.aux["points"]) == 26 and int(out.nfe) == 28


def test_any_denoiser_gaussian_and_fixed_rounds_count():
    mu, cov = random_gaussian(5, 2)
    with x64():
        den = GaussianDenoiser.from_cov(mu, cov)
        x_t, sig, keys = start(dim=5, steps=12)
        out = picard(den, x_t, sig, key=keys, picard_blocks=3, picard_iters=2)
        seq = np.asarray(get_solver("ddpm")(den, x_t, sig, key=keys).x0)
    assert int(out.rounds) == 6 and int(out.nfe) == 24
    assert np.all(np.isfinite(np.asarray(out.x0))) and np.max(np.abs(np.asarray(out.x0) - seq)) > 1e-6


def test_anderson_update_is_triangular_and_plain_without_history():
    rng = np.random.default_rng(3)
    f, r = rng.standard_normal((6, 2, 4)), rng.standard_normal((6, 2, 4))
    dx, dr = rng.standard_normal((2, 6, 2, 4)), rng.standard_normal((2, 6, 2, 4))
    w = rng.uniform(0.5, 2.0, 6)
    with x64():
        a = np.asarray(anderson_update(*map(jnp.asarray, (f, dx, dr, r, w))))
        np.testing.assert_array_equal(np.asarray(anderson_update(*map(jnp.asarray, (f, 0 * dx, 0 * dr, r, w)))), f)
        # later points (3..5) changed: points 0..2 do not move
        dx2, dr2, r2 = dx.copy(), dr.copy(), r.copy()
        dx2[:, 3:], dr2[:, 3:], r2[3:] = 5.0, -7.0, 9.0
        b = np.asarray(anderson_update(*map(jnp.asarray, (f, dx2, dr2, r2, w))))
    np.testing.assert_allclose(b[:3], a[:3], rtol=1e-12, atol=1e-12)
    assert not np.allclose(b[3:], a[3:])
    # point 0 alone: gamma solves the 1-point weighted least squares (regularised by 1e-4 of the Gram's trace)
    g = np.einsum("ibd,jbd->bij", dr[:, 0], dr[:, 0]) * w[0]
    h = np.einsum("ibd,bd->bi", dr[:, 0], r[0]) * w[0]
    reg = 1e-4 * np.trace(g, axis1=1, axis2=2)[:, None, None] / 2 * np.eye(2)
    gamma = np.linalg.solve(g + reg, h[..., None])[..., 0]
    want = f[0] - np.einsum("bi,ibd->bd", gamma, dx[:, 0] + dr[:, 0])
    np.testing.assert_allclose(a[0], want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["sde", "ode"])
@pytest.mark.parametrize("accel", [dict(picard_anderson=2),
                                   pytest.param(dict(picard_newton=True), marks=pytest.mark.slow)])
def test_acceleration_keeps_the_fixed_point(mode, accel):
    with x64():
        den, x_t, sig, keys, seq = with_sequential(mode, steps=60)
        tight = picard(den, x_t, sig, key=keys, picard_mode=mode, picard_tol=1e-9, picard_window=32, **accel)
        one = picard(den, x_t, sig, key=keys, picard_mode=mode, picard_window=1, **accel)
    rel = [rel_err(o.x0, seq) for o in (tight, one)]
    assert rel[0] < 1e-7 and rel[1] < 1e-10, rel


@pytest.mark.slow
def test_anderson_accelerates_the_ode():
    """On the PF-ODE: far smaller error for the same fixed rounds, and fewer rounds at the same tolerance."""
    with x64():
        den = gmm_denoiser()
        x_t, sig, keys = start(steps=200)
        seq = np.asarray(get_solver("euler")(den, x_t, sig, key=keys).x0)
        runs = [picard(den, x_t, sig, key=keys, picard_mode="ode", picard_blocks=1, picard_iters=12, picard_anderson=m,
                       picard_newton=False) for m in (0, 2)]
        tol = [picard(den, x_t, sig, key=keys, picard_mode="ode", picard_tol=3e-3, picard_window=200, picard_anderson=m,
                      picard_newton=False) for m in (0, 2)]
    fixed = [rel_err(o.x0, seq) for o in runs]
    assert fixed[1] < fixed[0] / 10, fixed
    errs = [rel_err(o.x0, seq) for o in tol]
    assert int(tol[1].rounds) < int(tol[0].rounds) and errs[1] <= errs[0], (tol, errs)


def test_secant_slopes_are_exact_for_an_affine_denoiser_and_fill_forward():
    """D = m + lam x has slope lam along any move; unmoved points take the nearest earlier slope (first: 0)."""
    rng = np.random.default_rng(5)
    lam = np.array([0.3, 0.9])  # per sample
    x_prev, x = rng.standard_normal((2, 5, 2, 3))
    x[2] = x_prev[2]  # point 2 did not move
    d_prev, d = (1.0 + lam[None, :, None] * v for v in (x_prev, x))
    known = np.array([False, True, True, True, False])  # points 0 and 4 have no last round
    with x64():
        got = np.asarray(secant_slopes(*map(jnp.asarray, (x, d, x_prev, d_prev, known))))[..., 0]
    want = np.stack([np.zeros(2), lam, lam, lam, lam])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    with x64():  # slopes are capped at 4
        big = np.asarray(secant_slopes(*map(jnp.asarray, (x, 1e3 * x, x_prev, 1e3 * x_prev, known))))
    assert np.all(big[1:] == 4.0)


@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_newton_is_exact_in_two_rounds_when_the_jacobian_is_a_multiple_of_identity(mode):
    """Isotropic Gaussian data: D is affine with Jacobian v / (v + sigma^2) I, so the second round's secant slope is
    exact, the linearised prefix is the sequential chain itself, and 2 rounds per block give the sequential sample."""
    mu = np.linspace(-0.5, 0.5, 6)
    with x64():
        den = GaussianDenoiser.from_cov(mu, 0.4 * np.eye(6))
        x_t, sig, keys = start(dim=6, steps=12)
        seq = np.asarray(get_solver(SEQUENTIAL[mode])(den, x_t, sig, key=keys).x0)
        runs = [picard(den, x_t, sig, key=keys, picard_mode=mode, picard_blocks=2, picard_iters=2, picard_newton=n)
                for n in (True, False)]
    newton, plain = (rel_err(o.x0, seq) for o in runs)
    assert int(runs[0].rounds) == 4 and newton < 1e-12 and plain > 1e-4, (newton, plain)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_newton_cuts_rounds_on_a_gmm(mode):
    """Same tolerance, a window over the whole grid: under half the plain rounds, and no larger error."""
    with x64():
        den, x_t, sig, keys, seq = with_sequential(mode, steps=100)
        runs = [picard(den, x_t, sig, key=keys, picard_mode=mode, picard_tol=3e-3, picard_window=100, picard_newton=n)
                for n in (False, True)]
    plain, newton = (rel_err(o.x0, seq) for o in runs)
    assert 2 * int(runs[1].rounds) < int(runs[0].rounds) and newton <= plain, (runs, plain, newton)


def test_usage_errors():
    den = gmm_denoiser(dtype=np.float32)
    x_t, sig, keys = start(dtype=jnp.float32)
    for bad in (dict(picard_mode="sdx"), dict(picard_tol=0.0), dict(picard_iters=0), dict(picard_blocks=0),
                dict(picard_blocks=3, picard_window=7), dict(picard_anderson=-1), dict(picard_anderson=1.5),
                dict(picard_rule="pipeline"), dict(picard_rule="paradigms", picard_newton=True),
                dict(picard_rule="paradigms", picard_anderson=2), dict(picard_rule="paradigms", picard_iters=2),
                dict(picard_rule="window", picard_iters=2),
                dict(picard_rule="window", picard_blocks=2), dict(picard_rule="blocks", picard_tol=1e-3),
                dict(picard_blocks=2, picard_tol=1e-3), dict(picard_blocks=2, picard_window=6)):
        with pytest.raises(UsageError):
            get_solver("picard")(den, x_t, sig, key=keys, **bad)


def test_every_option_given_explicitly_is_the_default_run():
    """The pipeline passes every field of PicardOptions: that equals the call with none of them (one place)."""
    with x64():
        den, x_t, sig, keys, _ = with_sequential("sde", steps=12)
        implicit = picard(den, x_t, sig, key=keys)
        explicit = picard(den, x_t, sig, key=keys, **PicardOptions().flag_values())
    np.testing.assert_array_equal(np.asarray(implicit.x0), np.asarray(explicit.x0))
    plan = make_plan(PicardOptions(), 1000, 64)
    assert plan.rule == "window" and plan.newton and plan.window == 500 and plan.memory == 0
    assert make_plan(PicardOptions(picard_iters=3), 1000, 64).rule == "blocks"


def test_point_tolerance_is_eps_over_the_safety_factor_and_capped():
    """The acceptance test's tolerance: eps / TOL_SAFETY, never above POINT_TOL_MAX (docs/picard.md)."""
    for eps in (1e-6, 1e-3, TOL_SAFETY * POINT_TOL_MAX):
        assert make_plan(PicardOptions(picard_tol=eps), 1000, 64).point_tol == pytest.approx(eps / TOL_SAFETY)
    for eps in (0.1, 1.0, 10.0):
        assert make_plan(PicardOptions(picard_tol=eps), 1000, 64).point_tol == POINT_TOL_MAX
    assert make_plan(PicardOptions(picard_rule="paradigms", picard_tol=0.5), 1000, 64).point_tol == 0.5


@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_tolerance_bounds_the_final_relative_error(mode):
    """--picard-tol eps: every sample ends within eps of the sequential sample from the same keys, relatively, and
    nearest the same component, on a well-separated 8-component mixture (the exact denoiser); the defaults otherwise.
    The windows are short (32 points), where the test is most often applied. eps = 1 is a loose tolerance where the
    cap on the per-point tolerance decides: at 1 / TOL_SAFETY a sample ends nearest another component (sde)."""
    with x64():
        den = separated_mixture()
        x_t, sig, keys = start(batch=4, dim=16, steps=200)
        seq = np.asarray(get_solver(SEQUENTIAL[mode])(den, x_t, sig, key=keys).x0)
        runs = {tol: picard(den, x_t, sig, key=keys, picard_mode=mode, picard_tol=tol, picard_window=32)
                for tol in (1.0, 1e-2, 1e-4)}
    means = np.asarray(den.means)

    def nearest(x):
        return np.argmin(((x[:, None] - means[None]) ** 2).sum(-1), axis=1)

    for tol, out in runs.items():
        x = np.asarray(out.x0)
        err = np.linalg.norm(x - seq, axis=1) / np.linalg.norm(seq, axis=1)
        assert np.all(err <= tol), (mode, tol, err)
        np.testing.assert_array_equal(nearest(x), nearest(seq))
        assert int(out.rounds) < 200 // 2, (tol, int(out.rounds))  # and far fewer rounds than steps


RUNS = {"picard": ("picard", dict(picard_window=4, picard_iters=2, picard_newton=False)),
        "picard-newton": ("picard", dict(picard_window=4, picard_iters=2, picard_newton=True)),
        "collocation": ("collocation", dict(colloc_nodes=4, colloc_windows=2, colloc_iters=4))}
MULTI_DEVICE = r"""
import json, os, sys
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, os.environ["TESTS_DIR"])
from test_picard import RUNS, gmm_denoiser, start
from diffcli.solvers import get_solver
den = gmm_denoiser(dtype=np.float32)
x_t, sig, keys = start(batch=4, steps=8, dtype=jnp.float32)
out = {"devices": jax.device_count()}
for label, (name, opts) in RUNS.items():
    out[label] = np.asarray(jax.jit(lambda x: get_solver(name)(den, x, sig, key=keys, **opts).x0)(x_t)).tolist()
print(json.dumps(out))
"""


def test_sharded_over_eight_devices_matches_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               TESTS_DIR=os.path.dirname(__file__))
    proc = subprocess.run([sys.executable, "-c", MULTI_DEVICE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["devices"] == 8
    den = gmm_denoiser(dtype=np.float32)
    x_t, sig, keys = start(batch=4, steps=8, dtype=jnp.float32)
    for label, (name, opts) in RUNS.items():
        want = get_solver(name)(den, x_t, sig, key=keys, **opts).x0
        np.testing.assert_allclose(np.asarray(got[label]), np.asarray(want), rtol=1e-5, atol=1e-4, err_msg=label)

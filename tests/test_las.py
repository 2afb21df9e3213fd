"""LAS, AYS and the exact Gaussian evaluation: closed forms and independent float64 references."""

import itertools
import json

import jax
import numpy as np
import pytest
from scipy import integrate

from diffcli.errors import DiffcliError, UsageError
from diffcli.schedules import ays, get_schedule, las
from diffcli.schedules import gaussian as G
from diffcli.schedules.edm import get_sigmas_edm
from diffcli.schedules.families import get_sigmas_log_snr
from diffcli.schedules.grid import is_valid_schedule
from diffcli.schedules.loss import (
    LossCurve,
    isotonic_decreasing,
    measure_curves,
    measure_loss_curve,
    read_loss_log,
)
from tests.helpers.gaussian_oracle import GaussianDenoiser, ddim_law, random_gaussian

LAM = np.exp(np.linspace(np.log(0.05), np.log(2.0), 16))


def exact_curve(lam=LAM, size=200, lo=0.002, hi=80.0):
    grid = las.fine_grid(lo, hi, size)
    return LossCurve(grid, G.mmse(1 / grid**2, lam) / len(lam), np.full(size, 1e-3))


def girsanov_kl(sigmas, lam):
    """Independent reference for J: E int sigma^-3 ||D(x_s, s) - D(x_k, s_k)||^2 ds from the joint law of (x_s, x_k)."""
    s = np.asarray(sigmas, float)
    s = s[s > 0]
    total = 0.0
    for sk, s1 in zip(s[:-1], s[1:], strict=False):
        def integrand(u, sk=sk):
            v = lam + u**2  # Var c_u; c_k = c_u + sqrt(sk^2 - u^2) z
            g, gk = lam / (lam + u**2), lam / (lam + sk**2)
            return np.sum(g * g * v + gk * gk * (v + sk**2 - u**2) - 2 * g * gk * v) / u**3
        total += integrate.quad(integrand, s1, sk, epsabs=0, epsrel=1e-11, limit=200)[0]
    return total


def test_mmse_and_its_integral_are_closed_forms():
    g = np.array([0.0, 0.1, 3.0, 1e4])
    np.testing.assert_allclose(G.mmse(g, LAM), [np.sum(LAM / (1 + x * LAM)) for x in g], rtol=1e-14)
    assert G.mmse(np.inf, LAM) == 0.0
    val = integrate.quad(lambda x: G.mmse(x, LAM), 0.2, 50.0, epsrel=1e-12)[0]
    assert G.mmse_integral(0.2, 50.0, LAM) == pytest.approx(val, rel=1e-10)


@pytest.mark.parametrize("sched", [get_sigmas_edm(6, sigma_min=0.01, sigma_max=20.0),
                                   get_sigmas_log_snr(9, sigma_min=0.05, sigma_max=10.0)])
def test_j_is_the_girsanov_path_kl(sched):
    # J (from mmse, via the martingale identity) equals the path-space KL computed from the joint Gaussian law
    assert G.objective_j(sched, LAM) == pytest.approx(girsanov_kl(sched, LAM), rel=1e-8)


@pytest.mark.parametrize("steps", [4, 12])
def test_marginal_kl_is_bounded_by_j_and_vanishes_with_steps(steps):
    sched = get_sigmas_log_snr(steps, sigma_min=0.02, sigma_max=20.0)
    kl, j = G.marginal_kl(sched, LAM), G.objective_j(sched, LAM)
    assert 0 < kl <= j  # data processing: marginal KL <= path KL
    finer = get_sigmas_log_snr(4 * steps, sigma_min=0.02, sigma_max=20.0)
    assert G.marginal_kl(finer, LAM) < kl / 4  # first-order sampler: KL of the law falls at least like 1/K^2


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_sampler_law_matches_independent_oracle(eta):
    mu, cov = random_gaussian(5, seed=7)
    lam, basis = np.linalg.eigh(cov)
    sched = get_sigmas_edm(7, sigma_min=0.02, sigma_max=30.0)
    m, v = G.sampler_law(sched, lam, mean0=-(mu @ basis), eta=eta)
    mean_ref, cov_ref = ddim_law(mu, cov, sched, eta)
    np.testing.assert_allclose(mu + basis @ m, mean_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose((basis * v) @ basis.T, cov_ref, rtol=1e-10, atol=1e-12)
    # KL(data || output) from the eigen form equals the dense-matrix formula
    inv = np.linalg.inv(cov_ref)
    dense = 0.5 * (np.trace(inv @ cov) + (mean_ref - mu) @ inv @ (mean_ref - mu) - 5
                   + np.linalg.slogdet(cov_ref)[1] - np.linalg.slogdet(cov)[1])
    assert G.sampler_kl(sched, lam, mean0=-(mu @ basis), eta=eta) == pytest.approx(dense, rel=1e-9)


def test_measured_loss_curve_matches_mmse_and_the_martingale_identity():
    mu, cov = random_gaussian(8, seed=1)
    lam = np.linalg.eigvalsh(cov)
    rng = np.random.default_rng(0)
    held = rng.multivariate_normal(mu, cov, size=400).astype(np.float32)
    grid = np.exp(np.linspace(np.log(20.0), np.log(0.01), 10))
    den = GaussianDenoiser.from_cov(mu, cov)
    curve = measure_curves(den, held, grid, key=jax.random.PRNGKey(3), n_noise=2, batch_size=128)
    exact = G.mmse(1 / grid**2, lam) / 8
    assert np.all(np.abs(curve.loss - exact) < 4 * curve.stderr + 1e-5)
    # E||D(x_b) - D(x_a)||^2 = mmse(b) - mmse(a) for a less noisy than b (pairs from one chain)
    a, b = np.triu_indices(10, 1)  # descending grid: b is less noisy than a
    np.testing.assert_allclose(curve.pairs[a, b], exact[b] * 0 + exact[a] - exact[b], rtol=0.12, atol=2e-3)
    # the batch size does not change the result (per-example keys)
    again = measure_loss_curve(den, held, grid[::-1], key=jax.random.PRNGKey(3), n_noise=2, batch_size=50)
    np.testing.assert_allclose(again[0], curve.loss[::-1], rtol=1e-4)


def test_dp_finds_the_brute_force_minimum():
    rng = np.random.default_rng(5)
    sig = np.exp(np.linspace(np.log(10.0), np.log(0.05), 9))
    loss = np.sort(rng.uniform(0, 1, 9))[::-1] ** 2  # any non-increasing curve along increasing gamma
    cost = las.cost_matrix(1 / sig**2, loss)
    for nodes in (2, 3, 4, 5):
        path, val = las.dp_path(cost, nodes)
        brute = min((sum(cost[p, q] for p, q in zip(c[:-1], c[1:], strict=False)), c)
                    for c in ([0, *mid, 8] for mid in itertools.combinations(range(1, 8), nodes - 2)))
        assert val == pytest.approx(brute[0], rel=1e-12)
        assert list(path) == brute[1]


def test_cost_matrix_is_exact_for_piecewise_linear_loss():
    g = np.array([0.5, 1.0, 4.0, 9.0])
    lv = np.array([3.0, 2.0, 0.5, 0.1])
    c = las.cost_matrix(g, lv)
    ref = 0.5 * integrate.quad(lambda x: lv[0] - np.interp(x, g, lv), 0.5, 9.0, points=[1.0, 4.0])[0]
    assert c[0, 3] == pytest.approx(ref, rel=1e-12)
    assert np.isinf(c[2, 1]) and np.isinf(c[1, 1])


@pytest.mark.parametrize("rule", ["dp", "quantile"])
def test_las_on_exact_gaussian_beats_peers_in_j_and_converges_like_one_over_k(rule):
    curve = exact_curve()
    ks = np.array([33, 65, 129])  # the 1/K regime (at K < 30 the fitted slope is steeper, about -1.5)
    js = []
    for k in ks:
        s = las.fit_las(curve, k, rule=rule)["sigmas"]
        # the ends are the requested sigma_max and sigma_min, placed as given (identity), not computed
        assert is_valid_schedule(s) and len(s) == k + 1 and s[0] == 80.0 and s[-2] == 0.002
        js.append(G.objective_j(s, LAM))
        assert js[-1] < G.objective_j(get_sigmas_edm(k), LAM)
        assert js[-1] < G.objective_j(get_sigmas_log_snr(k), LAM)
    slope = np.polyfit(np.log(ks - 1), np.log(js), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.1)


@pytest.mark.parametrize("k", [5, 10, 20, 50])
def test_default_rule_has_the_lowest_exact_output_kl_on_gaussian_data(k):
    """The default (lambda) rule against the closed-form KL(data || output) of both first-order samplers (ddpm, ddim):
    below EDM, log-SNR, DDIM vp-leading and the J-optimal grid at every K."""
    curve = exact_curve(size=400)
    fitted = las.fit_las(curve, k)["sigmas"]
    assert is_valid_schedule(fitted) and len(fitted) == k + 1 and fitted[0] == 80.0 and fitted[-2] == 0.002
    path_optimal = las.fit_las(curve, k, rule="dp")["sigmas"]
    peers = (get_sigmas_edm(k), get_sigmas_log_snr(k), get_schedule("vp-leading", k, sigma_min=0.002, sigma_max=80.0),
             path_optimal)
    for eta in (1.0, 0.0):
        kl = G.sampler_kl(fitted, LAM, eta=eta)
        peer_kl = [G.sampler_kl(s, LAM, eta=eta) for s in peers]
        assert kl < min(peer_kl), (eta, kl, peer_kl)
    # it gives up J (the path-space KL) to win on the output law
    assert G.objective_j(fitted, LAM) > G.objective_j(path_optimal, LAM)


def test_lambda_rule_is_the_dp_on_log_gamma():
    """Rule lambda is J's exact DP with log(gamma) as the variable;
    per unit log-SNR it spends more steps at high noise."""
    curve = exact_curve(size=400)
    grid = las.fine_grid(0.002, 80.0, las.FINE_GRID)
    lv = las.loss_on(grid, curve.sigma, las.smooth_in_gamma(curve))
    path, _ = las.dp_path(las.cost_matrix(np.log(1.0 / grid**2), lv), 7)
    lam_rule, j_rule = (las.fit_las(curve, 7, rule=r)["sigmas"] for r in ("lambda", "dp"))
    np.testing.assert_allclose(lam_rule[:-1], grid[path])
    assert np.all(lam_rule[1:-2] > j_rule[1:-2])


@pytest.mark.parametrize("k", [5, 10, 20])
def test_weighted_rule_beats_edm_log_snr_and_j_on_gaussian_data(k):
    """The weighted rule (an option) against the closed-form output KL, as the default was before."""
    curve = exact_curve(size=400)
    weighted = las.fit_las(curve, k, rule="weighted")["sigmas"]
    assert is_valid_schedule(weighted) and len(weighted) == k + 1 and weighted[0] == 80.0 and weighted[-2] == 0.002
    path_optimal = las.fit_las(curve, k, rule="dp")["sigmas"]
    # the rule models the stochastic sampler; the deterministic one also gains from K = 10 (at K = 5 log-SNR is 9%
    # better there)
    for eta in (1.0, 0.0) if k >= 10 else (1.0,):
        kl = G.sampler_kl(weighted, LAM, eta=eta)
        peers = [G.sampler_kl(s, LAM, eta=eta) for s in (get_sigmas_edm(k), get_sigmas_log_snr(k), path_optimal)]
        assert kl < min(peers), (eta, kl, peers)
    # the weighted rule gives up J (the path-space KL) to win on the output law
    assert G.objective_j(weighted, LAM) > G.objective_j(path_optimal, LAM)


def test_quantile_rule_is_near_the_dp_optimum_and_the_continuum_formula():
    curve = exact_curve(size=400)
    k = 33
    j_dp = G.objective_j(las.fit_las(curve, k, rule="dp")["sigmas"], LAM)
    j_q = G.objective_j(las.fit_las(curve, k, rule="quantile")["sigmas"], LAM)
    # both are optimal up to the 512-point grid the DP works on (the quantile rule is not restricted to it)
    assert abs(j_q / j_dp - 1) < 0.02
    gam = np.exp(np.linspace(np.log(1 / 80.0**2), np.log(1 / 0.002**2), 20001))
    dl = np.sum(LAM**2 / (1 + gam[:, None] * LAM) ** 2, axis=1)  # |l'| for the total mmse
    c_total = np.trapezoid(np.sqrt(dl), gam)
    # the continuum error (int sqrt|l'|)^2 / (4 (K - 1)) is asymptotic: the ratio tends to 1 as K grows
    ratio = [G.objective_j(las.fit_las(curve, n, rule="quantile")["sigmas"], LAM) / (c_total**2 / (4 * (n - 1)))
             for n in (k, 129)]
    assert 1.0 < ratio[1] < 1.05 and ratio[1] < ratio[0] < 1.25


def test_fit_las_edge_cases():
    curve = exact_curve()
    np.testing.assert_array_equal(las.fit_las(curve, 1)["sigmas"], [80.0, 0.0])
    np.testing.assert_array_equal(las.fit_las(curve, 2)["sigmas"], [80.0, 0.002, 0.0])
    with pytest.raises(UsageError, match="rule"):
        las.fit_las(curve, 5, rule="median")
    flat = LossCurve(curve.sigma, np.ones_like(curve.loss), curve.stderr)
    with pytest.raises(DiffcliError, match="flat"):
        las.fit_las(flat, 5, rule="quantile")


def test_isotonic_fit_is_the_least_squares_projection():
    rng = np.random.default_rng(2)
    y = np.linspace(3, 0, 30) + rng.normal(0, 0.5, 30)
    w = rng.uniform(0.5, 2, 30)
    fit = isotonic_decreasing(y, w)
    assert np.all(np.diff(fit) <= 1e-12)
    from scipy.optimize import isotonic_regression

    np.testing.assert_allclose(fit, isotonic_regression(y, weights=w, increasing=False).x, rtol=1e-10)


def test_loss_logs_convert_to_x0_loss(tmp_path):
    from diffcli import noise

    t = np.array([999, 500, 500, 100, 10])
    sigma = noise.ddpm_t_to_sigma(t)
    x0_loss = np.array([0.9, 0.5, 0.7, 0.2, 0.01])
    # eps loss = x0 loss / sigma^2
    rows = ["timestep,loss"] + [f"{a},{float(b)!r}" for a, b in zip(t, x0_loss / sigma**2, strict=False)]
    p = tmp_path / "log.csv"
    p.write_text("\n".join(rows) + "\n")
    curve = read_loss_log(str(p), "eps")
    np.testing.assert_allclose(curve.sigma, noise.ddpm_t_to_sigma([999, 500, 100, 10]), rtol=1e-12)
    np.testing.assert_allclose(curve.loss, [0.9, 0.6, 0.2, 0.01], rtol=1e-10)
    assert curve.stderr[1] == pytest.approx(0.1, rel=1e-9) and np.isnan(curve.stderr[0])
    s = np.array([10.0, 1.0, 0.1])
    j = tmp_path / "log.json"
    v_loss = np.array([0.5, 0.3, 0.01]) * (1 + 1 / s**2)  # v loss = x0 loss (1 + gamma)
    j.write_text(json.dumps({"sigma": s.tolist(), "loss": v_loss.tolist()}))
    np.testing.assert_allclose(read_loss_log(str(j), "v").loss, [0.5, 0.3, 0.01], rtol=1e-12)
    lam_edm = (s**2 + 0.25) / (s * 0.5) ** 2
    edm_loss = np.array([0.5, 0.3, 0.01]) * lam_edm
    j.write_text(json.dumps([{"sigma": float(a), "loss": float(b)} for a, b in zip(s, edm_loss, strict=False)]))
    np.testing.assert_allclose(read_loss_log(str(j), "edm").loss, [0.5, 0.3, 0.01], rtol=1e-12)
    bad = tmp_path / "bad.csv"
    bad.write_text("step,value\n1,2\n")
    with pytest.raises(DiffcliError, match="'sigma' or 'timestep' column"):
        read_loss_log(str(bad), "x0")
    with pytest.raises(UsageError, match="loss kind"):
        read_loss_log(str(p), "score")


def _cosine_sigmas(steps: int) -> np.ndarray:
    """sigma_t of a discrete cosine VP model (diffusers' squaredcos_cap_v2), written out here from its betas."""
    f = np.cos((np.arange(steps + 1) / steps + 0.008) / 1.008 * np.pi / 2) ** 2
    abar = np.cumprod(1.0 - np.minimum(1.0 - f[1:] / f[:-1], 0.999))
    return np.sqrt((1.0 - abar) / abar)


def test_loss_logs_of_other_timestep_tables_map_through_that_table(tmp_path):
    table = _cosine_sigmas(4000)
    t = np.array([3999, 2000, 2000, 400, 40])
    x0_loss = np.array([0.9, 0.5, 0.7, 0.2, 0.01])
    p = tmp_path / "cosine.csv"
    p.write_text("t,loss\n" + "".join(f"{a},{float(b)!r}\n" for a, b in zip(t, x0_loss / table[t] ** 2,
                                                                             strict=True)))
    curve = read_loss_log(str(p), "eps", timestep_sigmas=table)
    np.testing.assert_allclose(curve.sigma, table[[3999, 2000, 400, 40]], rtol=1e-12)
    np.testing.assert_allclose(curve.loss, [0.9, 0.6, 0.2, 0.01], rtol=1e-10)
    # between timesteps log sigma is linear
    p.write_text("timestep,loss\n10.5,1.0\n20,1.0\n")
    assert read_loss_log(str(p), "x0", timestep_sigmas=table).sigma[1] == pytest.approx(
        np.sqrt(table[10] * table[11]), rel=1e-12)
    with pytest.raises(UsageError, match=r"past the 4000 timesteps of the model.s table \[0, 3999\]"):
        p.write_text("t,loss\n4000,1.0\n10,1.0\n")
        read_loss_log(str(p), "x0", timestep_sigmas=table)
    p.write_text("sigma,loss\n1.0,0.5\n0.1,0.1\n")
    with pytest.raises(UsageError, match="apply to a timestep column only"):
        read_loss_log(str(p), "x0", timestep_sigmas=table)


def test_ays_recovers_the_gaussian_euler_optimum():
    c = 0.7  # isotropic Gaussian, std c: Euler's output is the exact flow times prod cos(theta_k - theta_k+1)
    obj = lambda s: G.sampler_kl(np.append(s, 0.0), [c * c], eta=0.0)
    for steps in (6, 10):
        found, best = ays.coordinate_search(obj, get_sigmas_edm(steps)[:-1])
        ref = ays.get_sigmas_ays_gaussian(steps, c=c)[:-1]
        np.testing.assert_allclose(found, ref, rtol=2e-4)
        assert best == pytest.approx(obj(ref), rel=1e-6)
        # and the closed form beats the peers on the same exact KL
        assert obj(ref) < obj(get_sigmas_edm(steps)[:-1]) and obj(ref) < obj(get_sigmas_log_snr(steps)[:-1])


def test_ays_klub_from_exact_pairs_is_j_and_search_matches_dp():
    grid = las.fine_grid(0.002, 80.0, 160)
    m = G.mmse(1 / grid**2, LAM) / len(LAM)
    pairs = np.abs(m[:, None] - m[None, :])  # the exact denoiser's pair discrepancies
    klub = ays.klub_from_pairs(grid, pairs)
    sched = get_sigmas_edm(12)
    assert klub(sched) * len(LAM) == pytest.approx(G.objective_j(sched, LAM), rel=2e-3)
    fit = ays.fit_ays(klub, 12)
    assert is_valid_schedule(fit["sigmas"]) and len(fit["sigmas"]) == 13
    j_ays = G.objective_j(fit["sigmas"], LAM)
    j_dp = G.objective_j(las.fit_las(exact_curve(), 12, rule="dp")["sigmas"], LAM)
    assert j_dp <= j_ays * 1.001 and j_ays < 1.02 * j_dp


def test_incremental_search_equals_full_evaluation():
    grid = las.fine_grid(0.002, 80.0, 120)
    m = G.mmse(1 / grid**2, LAM)
    klub = ays.klub_from_pairs(grid, np.abs(m[:, None] - m[None, :]))
    start = get_sigmas_edm(8)[:-1]
    fast = ays.coordinate_search(klub, start)
    slow = ays.coordinate_search(lambda s: klub(s), start)  # no interval_cost: every candidate evaluated in full
    np.testing.assert_allclose(fast[0], slow[0], rtol=1e-9)
    assert fast[1] == pytest.approx(slow[1], rel=1e-9) and fast[1] == pytest.approx(klub(fast[0]), rel=1e-9)
    exact = G.j_objective(LAM)
    assert exact.interval_cost(start[:-1], start[1:]).sum() == pytest.approx(G.objective_j(start, LAM), rel=1e-12)

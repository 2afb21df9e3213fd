"""Exact float64 answers for Gaussian data N(mu, U diag(lam) U^T): mmse, the LAS objective J, and the exact law (hence
KL) of the first-order DDIM(eta) sampler on any schedule. Everything is per eigen-direction, so no D x D matrix is
formed.

Notation: gamma = 1/sigma^2; in the eigenbasis c = U^T (x - mu) and the exact denoiser is c -> lam/(lam + sigma^2) c.
"""

from __future__ import annotations

import numpy as np


def _lam(lam) -> np.ndarray:
    return np.atleast_1d(np.asarray(lam, np.float64))


def mmse(gamma, lam) -> np.ndarray:
    """Total mmse(gamma) = sum_j lam_j / (1 + gamma lam_j) (gamma may be an array; inf gives 0)."""
    g = np.asarray(gamma, np.float64)[..., None]
    with np.errstate(invalid="ignore"):
        out = np.sum(_lam(lam) / (1.0 + g * _lam(lam)), axis=-1)
    return np.where(np.isinf(np.asarray(gamma, np.float64)), 0.0, out)


def mmse_integral(g0, g1, lam) -> np.ndarray:
    """int_{g0}^{g1} mmse(gamma) dgamma = sum_j log((1 + g1 lam_j) / (1 + g0 lam_j)) (I-MMSE)."""
    lam = _lam(lam)
    g0 = np.asarray(g0, np.float64)[..., None]
    g1 = np.asarray(g1, np.float64)[..., None]
    return np.sum(np.log1p(g1 * lam) - np.log1p(g0 * lam), axis=-1)


def objective_j(sigmas, lam) -> float:
    """J = 1/2 sum_k int_{gamma_k}^{gamma_{k+1}} [mmse(gamma_k) - mmse(gamma)] dgamma over the positive sigmas.

    J is the path-space (Girsanov) KL between the exact reverse SDE and the frozen-denoiser SDE from sigma_max to
    sigma_min; the final jump to sigma = 0 is common to every schedule with the same sigma_min and is left out.
    """
    s = np.asarray(sigmas, np.float64)
    s = s[s > 0]
    return float(np.sum(interval_j(s[:-1], s[1:], lam)))


def interval_j(upper, lower, lam) -> np.ndarray:
    """Per-interval terms of J: 1/2 [mmse(g0) (g1 - g0) - int_{g0}^{g1} mmse] for sigma pairs (upper > lower > 0)."""
    g0 = 1.0 / np.square(np.asarray(upper, np.float64))
    g1 = 1.0 / np.square(np.asarray(lower, np.float64))
    return 0.5 * (mmse(g0, lam) * (g1 - g0) - mmse_integral(g0, g1, lam))


def j_objective(lam):
    """J as a function of a schedule, carrying `interval_cost` so a coordinate search can update it locally."""

    def objective(sigmas) -> float:
        return objective_j(sigmas, lam)

    objective.interval_cost = lambda upper, lower: interval_j(upper, lower, lam)
    return objective


def sampler_law(sigmas, lam, *, mean0=None, eta: float = 1.0, start: str = "prior"):
    """Mean [k] and variance [k] of c = U^T (x - mu) after DDIM(eta) on `sigmas` (eta 1: DDPM, 0: Euler), float64.

    start "prior": x_T = sigma_max z (c starts at mean -U^T mu = `mean0` and variance sigma_max^2);
    start "marginal": x_T from the true marginal N(mu, S + sigma_max^2 I) (mean 0, variance lam + sigma_max^2).
    Each step c' = (g + r (1 - g)) c + n z, with g = lam/(lam + s^2) and (r, n) the DDIM coefficients.
    """
    lam = _lam(lam)
    sig = np.asarray(sigmas, np.float64)
    if start == "prior":
        m = np.zeros_like(lam) if mean0 is None else np.asarray(mean0, np.float64).copy()
        v = np.full_like(lam, sig[0] ** 2)
    elif start == "marginal":
        m, v = np.zeros_like(lam), lam + sig[0] ** 2
    else:
        raise ValueError(f"start must be 'prior' or 'marginal' (got {start!r}).")
    for s, s_next in zip(sig[:-1], sig[1:], strict=False):
        ratio = s_next / s
        n = eta * s_next * np.sqrt(max(1.0 - ratio * ratio, 0.0))
        r = np.sqrt(max(s_next * s_next - n * n, 0.0)) / s
        g = lam / (lam + s * s)
        a = g + r * (1.0 - g)
        m, v = a * m, a * a * v + n * n
    return m, v


def kl_gaussian_diag(m_p, v_p, m_q, v_q) -> float:
    """KL(N(m_p, diag v_p) || N(m_q, diag v_q))."""
    m_p, v_p, m_q, v_q = (np.asarray(a, np.float64) for a in (m_p, v_p, m_q, v_q))
    return float(0.5 * np.sum(v_p / v_q + (m_q - m_p) ** 2 / v_q - 1.0 + np.log(v_q / v_p)))


def sampler_kl(sigmas, lam, *, mean0=None, eta: float = 1.0) -> float:
    """Exact KL(data || output) of DDIM(eta) from x_T = sigma_max z down to the schedule's last value (usually 0)."""
    sig = np.asarray(sigmas, np.float64)
    m, v = sampler_law(sig, lam, mean0=mean0, eta=eta, start="prior")
    target_v = _lam(lam) + sig[-1] ** 2
    return kl_gaussian_diag(np.zeros_like(m), target_v, m, v)


def marginal_kl(sigmas, lam, *, eta: float = 1.0) -> float:
    """Exact KL(p_{sigma_min} || q_{sigma_min}): the sampler started from the true marginal, stopped at sigma_min.

    Only discretisation error enters, so by data processing it is at most J (see objective_j)."""
    sig = np.asarray(sigmas, np.float64)
    sig = sig[sig > 0]
    m, v = sampler_law(sig, lam, eta=eta, start="marginal")
    return kl_gaussian_diag(np.zeros_like(m), _lam(lam) + sig[-1] ** 2, m, v)

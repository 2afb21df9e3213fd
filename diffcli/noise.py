"""Conversions at the edge between sigma-space (x = x0 + sigma eps) and the VP/DDPM, cosine and OU parameterisations.

All functions are float64 NumPy (they build grids and convert logs); the score/eps helpers are plain arithmetic and
work on NumPy or JAX arrays alike.
"""

from __future__ import annotations

import functools

import numpy as np

from diffcli.errors import UsageError

DDPM_BETA_START = 1e-4
DDPM_BETA_END = 0.02
DDPM_STEPS = 1000
SIGMA_MIN = 0.002  # the EDM range (Karras et al. 2022): every named schedule's default ends
SIGMA_MAX = 80.0
COSINE_OFFSET = 0.008  # Nichol & Dhariwal 2021, s in f(t) = cos^2((t + s) / (1 + s) * pi / 2)


# --- VP <-> sigma, pointwise --------------------------------------------------------------------------------------

def sigma_from_alpha_bar(alpha_bar):
    """sigma = sqrt((1 - abar) / abar): the VP point sqrt(abar) x0 + sqrt(1 - abar) eps, rescaled to sigma-space."""
    a = np.asarray(alpha_bar, np.float64)
    return np.sqrt((1.0 - a) / a)


def alpha_bar_from_sigma(sigma):
    """abar = 1 / (1 + sigma^2)."""
    return 1.0 / (1.0 + np.square(np.asarray(sigma, np.float64)))


def to_vp(x, sigma):
    """x_vp = sqrt(abar) x = x / sqrt(1 + sigma^2) (also the OU state x_ou)."""
    return x / np.sqrt(1.0 + np.square(sigma))


def from_vp(x_vp, sigma):
    """The sigma-space point of a VP/OU state at noise level sigma."""
    return x_vp * np.sqrt(1.0 + np.square(sigma))


# --- the linear-beta DDPM (Ho et al. 2020) ------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _ddpm_alpha_bar(beta_start: float, beta_end: float, steps: int) -> np.ndarray:
    betas = np.linspace(beta_start, beta_end, steps, dtype=np.float64)
    out = np.cumprod(1.0 - betas)
    out.setflags(write=False)
    return out


def ddpm_alpha_bar(beta_start: float = DDPM_BETA_START, beta_end: float = DDPM_BETA_END,
                   steps: int = DDPM_STEPS) -> np.ndarray:
    """abar_t = prod_{s<=t} (1 - beta_s) for the linear-beta DDPM, t = 0 .. steps - 1 (float64, read-only)."""
    return _ddpm_alpha_bar(float(beta_start), float(beta_end), int(steps))


def ddpm_sigmas(**kw) -> np.ndarray:
    """sigma_t of the linear-beta DDPM, increasing in t (t = 0 .. 999)."""
    return sigma_from_alpha_bar(ddpm_alpha_bar(**kw))


def ddpm_t_to_sigma(t, **kw):
    """DDPM timestep (integer or continuous in [0, T-1]) -> sigma; between integers, log sigma is linear
    (k-diffusion)."""
    return table_t_to_sigma(t, ddpm_sigmas(**kw))


def table_t_to_sigma(t, sigmas):
    """Timestep (integer or continuous in [0, T-1]) of a discrete model with sigma_t = sigmas[t] -> sigma;
    between integers, log sigma is linear."""
    log_s = np.log(np.asarray(sigmas, np.float64))
    tt = np.asarray(t, np.float64)
    if np.any(~np.isfinite(tt)) or np.any(tt < 0) or np.any(tt > len(log_s) - 1):
        raise UsageError(f"timesteps must lie in [0, {len(log_s) - 1}] for a model of {len(log_s)} timesteps.")
    return np.exp(np.interp(tt, np.arange(len(log_s), dtype=np.float64), log_s))


def ddpm_sigma_to_t(sigma, *, nearest: bool = False, **kw):
    """sigma -> continuous DDPM timestep (inverse of ddpm_t_to_sigma, clamped to [0, T-1]);
    nearest=True rounds in log sigma."""
    log_s = np.log(ddpm_sigmas(**kw))
    ls = np.log(np.asarray(sigma, np.float64))
    if nearest:
        return np.abs(ls[..., None] - log_s).argmin(axis=-1)
    return np.interp(ls, log_s, np.arange(len(log_s), dtype=np.float64))


# --- the cosine VP schedule (Nichol & Dhariwal 2021), continuous t in [0, 1] ---------------------------------------

def _cos_f(t, s=COSINE_OFFSET):
    return np.cos((np.asarray(t, np.float64) + s) / (1.0 + s) * np.pi / 2) ** 2


def cosine_t_to_sigma(t, s: float = COSINE_OFFSET):
    """abar(t) = f(t)/f(0) with f = cos^2((t + s)/(1 + s) pi/2); sigma = sqrt(1/abar - 1) (infinite at t = 1)."""
    with np.errstate(divide="ignore"):
        return np.sqrt(np.maximum(_cos_f(0.0, s) / _cos_f(t, s) - 1.0, 0.0))


def cosine_sigma_to_t(sigma, s: float = COSINE_OFFSET):
    """The inverse of cosine_t_to_sigma in closed form: t = (1 + s) (2/pi) arccos(sqrt(abar f(0))) - s."""
    abar = alpha_bar_from_sigma(sigma)
    return (1.0 + s) * (2.0 / np.pi) * np.arccos(np.sqrt(abar * _cos_f(0.0, s))) - s


# --- OU time (dx = -x/2 dt + dB), used by the Picard and collocation papers ----------------------------------------

def sigma_to_ou_time(sigma):
    """t = log(1 + sigma^2), i.e. sigma^2 = e^t - 1."""
    return np.log1p(np.square(np.asarray(sigma, np.float64)))


def ou_time_to_sigma(t):
    """sigma = sqrt(e^t - 1)."""
    return np.sqrt(np.expm1(np.asarray(t, np.float64)))


def to_ou(x, sigma):
    """x_ou = x / sqrt(1 + sigma^2)."""
    return to_vp(x, sigma)


def from_ou(x_ou, t):
    """The sigma-space point of an OU state at OU time t: x = x_ou e^{t/2}."""
    return x_ou * np.exp(0.5 * np.asarray(t))


# --- predictions: score, eps, v <-> denoiser ------------------------------------------------------------------------

def score_from_denoiser(x, d, sigma):
    """grad log p_sigma(x) = (D - x) / sigma^2 (Tweedie)."""
    return (d - x) / sigma**2


def denoiser_from_score(x, score, sigma):
    """D = x + sigma^2 score."""
    return x + sigma**2 * score


def eps_from_denoiser(x, d, sigma):
    """eps_hat = (x - D) / sigma."""
    return (x - d) / sigma


def denoiser_from_eps(x, eps, sigma):
    """D = x - sigma eps_hat."""
    return x - sigma * eps


def v_from_denoiser(x, d, sigma):
    """VP v-prediction (Salimans & Ho 2022): v = alpha eps - s x0 with alpha = 1/sqrt(1+sigma^2), s = sigma alpha."""
    alpha = 1.0 / np.sqrt(1.0 + sigma**2)
    return alpha * eps_from_denoiser(x, d, sigma) - sigma * alpha * d


def denoiser_from_v(x, v, sigma):
    """x0 = alpha x_vp - s v = alpha^2 x - sigma alpha v."""
    alpha = 1.0 / np.sqrt(1.0 + sigma**2)
    return alpha**2 * x - sigma * alpha * v

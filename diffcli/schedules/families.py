"""Closed-form schedule families: uniform log-SNR, DDIM leading timesteps of the linear-beta DDPM, cosine VP."""

from __future__ import annotations

import numpy as np

from diffcli import noise
from diffcli.errors import UsageError
from diffcli.noise import SIGMA_MAX, SIGMA_MIN
from diffcli.schedules.grid import append_zero, check_range, check_steps, pin_endpoints


def get_sigmas_log_snr(steps, *, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, **_) -> np.ndarray:
    """Uniform in log sigma (= log-SNR; DPM-Solver, k-diffusion 'exponential'), then 0."""
    n = check_steps(steps)
    lo, hi = check_range(sigma_min, sigma_max)
    sig = np.exp(np.linspace(np.log(hi), np.log(lo), n)) if n > 1 else np.array([hi])
    return append_zero(pin_endpoints(sig, hi, lo) if n > 1 else sig)


def get_sigmas_vp_leading(steps, **_) -> np.ndarray:
    """DDIM 'leading' timesteps (Song et al. 2021; GoldDiff): t = k * (1000 // steps), k = steps-1 .. 0,
    as sigmas, then 0.

    The DDPM fixes the range (sigma(999) ~ 157, sigma(0) ~ 0.01), so sigma_min and sigma_max are ignored.
    """
    n = check_steps(steps)
    if n > noise.DDPM_STEPS:
        raise UsageError(f"vp-leading allows at most {noise.DDPM_STEPS} steps (got {n}).")
    ratio = noise.DDPM_STEPS // n
    t = np.arange(n - 1, -1, -1) * ratio
    return append_zero(noise.ddpm_sigmas()[t])


def get_sigmas_cosine(steps, *, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, **_) -> np.ndarray:
    """Uniform in the time of the cosine VP schedule (Nichol & Dhariwal 2021) between sigma_max and sigma_min,
    then 0."""
    n = check_steps(steps)
    lo, hi = check_range(sigma_min, sigma_max)
    if n == 1:
        return append_zero([hi])
    t = np.linspace(noise.cosine_sigma_to_t(hi), noise.cosine_sigma_to_t(lo), n)
    return append_zero(pin_endpoints(noise.cosine_t_to_sigma(t), hi, lo))

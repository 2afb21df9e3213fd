"""The EDM sigma grid (Karras et al. 2022, eq. 5)."""

from __future__ import annotations

import numpy as np

from diffcli.errors import UsageError
from diffcli.noise import SIGMA_MAX, SIGMA_MIN
from diffcli.schedules.grid import append_zero, check_range, check_steps, pin_endpoints


def get_sigmas_edm(steps, *, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=7.0, **_) -> np.ndarray:
    """Karras et al. 2022 eq. 5: sigma_i = (s_max^{1/rho} + i/(N-1) (s_min^{1/rho} - s_max^{1/rho}))^rho, then 0."""
    n = check_steps(steps)
    lo, hi = check_range(sigma_min, sigma_max)
    if not float(rho) > 0:
        raise UsageError(f"--rho must be positive (got {rho}).")
    ramp = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    inv = 1.0 / float(rho)
    sig = (hi**inv + ramp * (lo**inv - hi**inv)) ** float(rho)
    return append_zero(pin_endpoints(sig, hi, lo) if n > 1 else [hi])

"""Checks shared by every schedule: step counts, sigma ranges, and the k-diffusion habit of a trailing 0."""

from __future__ import annotations

import math

import numpy as np

from diffcli.errors import UsageError

MEMORY_LIMIT = 2 << 30  # bytes: a schedule fit refuses to build tables larger than this (2 GiB)


def gib(nbytes: float) -> str:
    """A byte count in GiB for messages (at least two significant digits)."""
    return f"{nbytes / (1 << 30):.3g} GiB"


def check_steps(steps) -> int:
    """A whole number of steps >= 1 (one-sentence usage error otherwise)."""
    if isinstance(steps, bool) or int(steps) != steps or int(steps) < 1:
        raise UsageError(f"--steps must be a whole number of at least 1 (got {steps}).")
    return int(steps)


def check_range(sigma_min, sigma_max) -> tuple[float, float]:
    """0 < sigma_min < sigma_max, both finite."""
    lo, hi = float(sigma_min), float(sigma_max)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo < hi):
        raise UsageError(f"need 0 < --sigma-min < --sigma-max, both finite (got {sigma_min} and {sigma_max}).")
    return lo, hi


def append_zero(sigmas) -> np.ndarray:
    """The positive sigmas followed by 0, as float64."""
    return np.concatenate([np.asarray(sigmas, np.float64), [0.0]])


def pin_endpoints(sigmas: np.ndarray, sigma_max: float, sigma_min: float) -> np.ndarray:
    """Set the first and last positive sigma exactly (closed forms lose the last bits through exp/pow)."""
    out = np.array(sigmas, np.float64)
    out[0] = sigma_max
    if len(out) > 1:
        out[-1] = sigma_min
    return out


def is_valid_schedule(sigmas) -> bool:
    """Finite, 1-D, at least 2 values, strictly descending, ending in exactly 0."""
    s = np.asarray(sigmas, np.float64)
    return bool(s.ndim == 1 and len(s) >= 2 and np.all(np.isfinite(s)) and s[-1] == 0.0 and np.all(np.diff(s) < 0))

"""Per-sample agreement with a reference run from the same noise: MSE on [0, 1] and r2
(the analytical-diffusion protocol)."""

from __future__ import annotations

import numpy as np

from diffcli.errors import DiffcliError


def to_unit(x: np.ndarray) -> np.ndarray:
    """Data-space images in [-1, 1] -> [0, 1], clamped (the scale both MSE and r2 are reported on)."""
    return np.clip((np.asarray(x, np.float64) + 1.0) / 2.0, 0.0, 1.0)


def per_sample_mse(samples: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mean squared error per sample, [n]."""
    a, b = _pair(samples, reference)
    return np.mean((a - b) ** 2, axis=1)


def per_sample_r2(samples: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """r2 = 1 - SS_res / (D var(reference sample)) per sample; NaN where the reference sample is constant."""
    a, b = _pair(samples, reference)
    ss_res = np.sum((a - b) ** 2, axis=1)
    ss_tot = b.shape[1] * np.var(b, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)


def fidelity(samples: np.ndarray, reference: np.ndarray, *, images: bool) -> dict:
    """MSE and mean r2 against the reference; images are compared on [0, 1] clamped, vectors as they are."""
    a = to_unit(samples) if images else np.asarray(samples, np.float64)
    b = to_unit(reference) if images else np.asarray(reference, np.float64)
    mse, r2 = per_sample_mse(a, b), per_sample_r2(a, b)
    valid = np.isfinite(r2)
    return {
        "mse": float(np.mean(mse)),
        "r2": float(np.mean(r2[valid])) if valid.any() else float("nan"),
        "mse_scale": "[0,1] clamped" if images else "data space",
        "n_compared": int(len(mse)),
        "per_sample_mse": mse,
        "per_sample_r2": r2,
    }


def _pair(samples, reference) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(samples, np.float64)
    b = np.asarray(reference, np.float64)
    if a.shape != b.shape:
        raise DiffcliError(f"samples {a.shape} and reference {b.shape} do not have the same shape.")
    return a.reshape(len(a), -1), b.reshape(len(b), -1)

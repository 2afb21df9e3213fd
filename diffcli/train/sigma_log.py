"""The per-sigma loss log: x0-prediction MSE per dimension on held-out data over a sigma grid (LAS input)."""

from __future__ import annotations

import csv

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffcli.io.atomic import atomic_path, write_json
from diffcli.train.loss import x0_mse


def log_sigma_grid(sigma_min: float = 0.002, sigma_max: float = 80.0, n: int = 40) -> np.ndarray:
    """Log-spaced sigmas covering the EDM range."""
    return np.geomspace(sigma_min, sigma_max, n)


def loss_curve(model, heldout: np.ndarray, sigmas: np.ndarray, *, seed: int, max_rows: int = 512) -> np.ndarray:
    """x0-MSE per dimension at each sigma, same noise per sigma index (a function of seed alone)."""
    x0 = jnp.asarray(heldout[:max_rows])
    f = eqx.filter_jit(x0_mse)
    base = jax.random.PRNGKey(seed)
    return np.array([float(f(model, x0, jnp.float32(s), jax.random.fold_in(base, i))) for i, s in enumerate(sigmas)])


def write_loss_log(stem: str, sigmas: np.ndarray, losses: np.ndarray, *, info: dict) -> tuple[str, str]:
    """Write STEM.loss.csv (sigma,loss) and STEM.loss.json; the loss is x0-MSE per dimension (--loss-kind x0)."""
    csv_path, json_path = stem + ".loss.csv", stem + ".loss.json"
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sigma", "loss"])
        w.writerows([f"{s:.9g}", f"{v:.9g}"] for s, v in zip(sigmas, losses, strict=True))
    curve = {"sigma": [float(s) for s in sigmas], "loss": [float(v) for v in losses]}
    write_json(json_path, {"loss_kind": "x0", "per": "dimension", "source": "held-out", "loss_curve": curve, **info})
    return csv_path, json_path

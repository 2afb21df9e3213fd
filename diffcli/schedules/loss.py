"""Denoising-loss curves l(sigma) for LAS and AYS: measured on held-out data, or read from a training log.

Convention: l(sigma) = E||D(x0 + sigma eps, sigma) - x0||^2 / dim (x0-prediction MSE per dimension).
Measurement runs one nested forward chain per held-out example and noise draw (x_{s'} = x_s + sqrt(s'^2 - s^2) z),
so the same evaluations also give the pair discrepancies E||D(x_a, a) - D(x_b, b)||^2 / dim that AYS's KL bound
needs, and neighbouring sigmas share noise (common random numbers keep the curve smooth).
"""

from __future__ import annotations

import csv
import json
import os
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffcli import noise
from diffcli.errors import DiffcliError, UsageError

LOSS_KINDS = ("x0", "eps", "v", "edm")


class LossCurve(NamedTuple):
    """sigma [G] descending, loss [G] and stderr [G] (per dimension, x0-prediction); pairs [G, G] or None."""

    sigma: np.ndarray
    loss: np.ndarray
    stderr: np.ndarray
    pairs: np.ndarray | None = None


# --- measuring ------------------------------------------------------------------------------------------------------

def check_grid(sigmas_grid) -> np.ndarray:
    """Distinct finite positive sigmas, returned descending."""
    grid = np.asarray(sigmas_grid, np.float64)
    if grid.ndim != 1 or len(grid) < 2 or np.any(~np.isfinite(grid)) or np.any(grid <= 0):
        raise UsageError("a loss-curve grid needs at least 2 finite positive sigmas.")
    desc = np.sort(grid)[::-1]
    if np.any(np.diff(desc) == 0):
        raise UsageError("a loss-curve grid must not repeat a sigma.")
    return desc


def _batch_stats(denoiser, shape, key, sig_up, x0, ids, weights, draw):
    """Per-example errors [G, B] and weighted pair sums [G, G] for one batch along nested chains (ascending sigma)."""
    g, dim = sig_up.shape[0], x0.shape[1]
    ks = jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(key, draw), i))(ids)
    eps = jax.vmap(lambda k: jax.random.normal(k, (g, dim), jnp.float32))(ks).transpose(1, 0, 2)  # [G, B, D]
    incr = jnp.sqrt(jnp.diff(jnp.square(sig_up), prepend=0.0))  # sqrt(s_j^2 - s_{j-1}^2)
    noisy = x0[None] + jnp.cumsum(incr[:, None, None] * eps, axis=0)

    def one(j, x):
        dk = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 1 << 20), j))(ks)
        out = denoiser(x.reshape((x.shape[0],) + shape), jnp.full((x.shape[0],), sig_up[j], x.dtype), key=dk)
        return out.reshape(x.shape).astype(jnp.float32)

    d = jax.lax.map(lambda a: one(*a), (jnp.arange(g), noisy))  # sequential over sigmas: bounded memory
    err = jnp.mean(jnp.square(d - x0[None]), axis=-1)
    sq = jnp.sum(jnp.square(d), axis=-1) @ weights  # [G]
    gram = jnp.einsum("abd,cbd,b->ac", d, d, weights)
    return err, (sq[:, None] + sq[None, :] - 2.0 * gram) / dim


def measure_curves(denoiser, heldout, sigmas_grid, *, key, n_noise: int = 1, batch_size: int = 64,
                   shape=None, progress=None) -> LossCurve:
    """Loss curve (mean and standard error over examples) and pair discrepancies of `denoiser` on held-out data.

    heldout is [M, ...] in data space; `shape` is one sample's shape for the denoiser (default heldout.shape[1:]).
    Example i's noise comes from fold_in(fold_in(key, draw), i), so results do not depend on batch_size.
    """
    held = np.asarray(heldout, np.float32)
    m = held.shape[0]
    if m < 2:
        raise DiffcliError("measuring a loss curve needs at least 2 held-out examples.")
    shape = tuple(shape) if shape is not None else tuple(held.shape[1:])
    flat = held.reshape(m, -1)
    desc = check_grid(sigmas_grid)
    sig_up = jnp.asarray(desc[::-1], jnp.float32)
    g = len(desc)
    bs = max(1, min(int(batch_size), m))
    # the denoiser is an argument (not a closure) so its arrays are not baked into the program as constants
    fn = eqx.filter_jit(lambda den, x0, ids, w, draw: _batch_stats(den, shape, key, sig_up, x0, ids, w, draw))
    per_example = np.zeros((g, m))
    pairs = np.zeros((g, g))
    for draw in range(int(n_noise)):
        for start in range(0, m, bs):
            ids = np.arange(start, min(start + bs, m))
            pad = bs - len(ids)  # pad to a fixed batch so the jitted function compiles once; pads weigh 0
            idx = np.concatenate([ids, np.full(pad, ids[-1])])
            w = np.concatenate([np.ones(len(ids)), np.zeros(pad)]).astype(np.float32)
            err, pair = fn(denoiser, jnp.asarray(flat[idx]), jnp.asarray(idx, jnp.int32), jnp.asarray(w), draw)
            per_example[:, ids] += np.asarray(err, np.float64)[:, : len(ids)] / n_noise
            pairs += np.asarray(pair, np.float64)
            if progress is not None:
                progress(1)
    mean = per_example.mean(axis=1)[::-1]
    stderr = (per_example.std(axis=1, ddof=1) / np.sqrt(m))[::-1]
    pairs = np.maximum(pairs / (m * n_noise), 0.0)[::-1, ::-1]
    return LossCurve(desc, mean, stderr, pairs)


def measure_loss_curve(denoiser, heldout, sigmas_grid, *, key, n_noise: int = 1, batch_size: int = 64, shape=None):
    """(mean [G], stderr [G]) of the per-dimension x0-prediction MSE at each sigma of the grid (in the grid's order)."""
    curve = measure_curves(denoiser, heldout, sigmas_grid, key=key, n_noise=n_noise, batch_size=batch_size,
                           shape=shape)
    # return in the caller's order
    pos = {s: i for i, s in enumerate(curve.sigma)}
    order = [pos[s] for s in np.asarray(sigmas_grid, np.float64)]
    return curve.loss[order], curve.stderr[order]


# --- conversions and training logs ------------------------------------------------------------------------------------

def to_x0_loss(loss, sigma, kind: str, *, sigma_data: float = 0.5):
    """Per-sigma loss of another parameterisation -> x0-prediction MSE (gamma = 1/sigma^2).

    eps: ||eps_hat - eps||^2 = ||x0_hat - x0||^2 / sigma^2, so x0 = eps * sigma^2 = eps / gamma;
    v (VP): x0 error = sigma/sqrt(1+sigma^2) * v error, so x0 = v / (1 + gamma);
    edm: the EDM-weighted loss lambda(sigma) ||x0_hat - x0||^2, lambda = (sigma^2 + sd^2) / (sigma sd)^2.
    """
    loss = np.asarray(loss, np.float64)
    s2 = np.square(np.asarray(sigma, np.float64))
    if kind == "x0":
        return loss
    if kind == "eps":
        return loss * s2
    if kind == "v":
        return loss * s2 / (1.0 + s2)
    if kind == "edm":
        return loss * s2 * sigma_data**2 / (s2 + sigma_data**2)
    raise UsageError(f"unknown loss kind '{kind}'; choose from: {', '.join(LOSS_KINDS)}.")


SIGMA_COLUMNS = ("sigma", "noise_level")
TIME_COLUMNS = ("timestep", "t")
LOSS_COLUMNS = ("loss", "mse")


def _records(path) -> list[dict]:
    """Rows of a CSV (with a header) or JSON (list of objects, or an object of equal-length lists)."""
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, newline="") as f:
            if ext == ".json":
                doc = json.load(f)
                if isinstance(doc, dict):
                    doc = doc.get("loss_curve", doc)
                    keys = [k for k, v in doc.items() if isinstance(v, list)]
                    n = {len(doc[k]) for k in keys}
                    if len(n) != 1:
                        raise DiffcliError(f"loss file '{path}' needs lists of equal length.")
                    return [{k: doc[k][i] for k in keys} for i in range(n.pop())]
                if isinstance(doc, list) and all(isinstance(r, dict) for r in doc):
                    return doc
                raise DiffcliError(f"loss file '{path}' must hold a list of records or an object of lists.")
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise DiffcliError(f"loss file '{path}' does not exist.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise DiffcliError(f"loss file '{path}' is not readable ({type(exc).__name__}).") from None


def _pick(row: dict, names) -> str | None:
    lower = {str(k).strip().lower(): k for k in row}
    return next((lower[n] for n in names if n in lower), None)


def read_loss_log(path, kind: str = "x0", *, sigma_data: float = 0.5, timestep_sigmas=None) -> LossCurve:
    """A loss curve from a training log (CSV with header or JSON) with a sigma or timestep column and a loss.

    Columns: sigma (or noise_level) | timestep (or t: 0..T-1 of a discrete model whose sigma_t is
    timestep_sigmas[t], by default the linear-beta DDPM of 1000 steps; log sigma linear in between); loss (or mse);
    optional stderr. Rows at the same sigma are averaged, and their spread gives the standard error.
    """
    if kind not in LOSS_KINDS:
        raise UsageError(f"unknown loss kind '{kind}'; choose from: {', '.join(LOSS_KINDS)}.")
    rows = _records(path)
    if not rows:
        raise DiffcliError(f"loss file '{path}' has no rows.")
    s_col, t_col, l_col = _pick(rows[0], SIGMA_COLUMNS), _pick(rows[0], TIME_COLUMNS), _pick(rows[0], LOSS_COLUMNS)
    e_col = _pick(rows[0], ("stderr",))
    if l_col is None or (s_col is None and t_col is None):
        raise DiffcliError(f"loss file '{path}' needs a 'sigma' or 'timestep' column and a 'loss' column.")
    try:
        x = np.array([float(r[s_col if s_col is not None else t_col]) for r in rows])
        loss = np.array([float(r[l_col]) for r in rows])
        err = np.array([float(r[e_col]) for r in rows]) if e_col is not None else None
    except (TypeError, ValueError):
        raise DiffcliError(f"loss file '{path}' has a value that is not a number.") from None
    if np.any(~np.isfinite(x)) or np.any(~np.isfinite(loss)) or np.any(loss < 0):
        raise DiffcliError(f"loss file '{path}' has a non-finite or negative value.")
    if s_col is not None and timestep_sigmas is not None:
        raise UsageError(f"loss file '{path}' has a sigma column; the --model-noise, --model-timesteps and "
                         "--model-beta-* flags apply to a timestep column only.")
    table = noise.ddpm_sigmas() if timestep_sigmas is None else timestep_sigmas
    if s_col is None and np.any(x > len(table) - 1):
        raise UsageError(f"loss file '{path}' has timesteps up to {x.max():g}, past the {len(table)} timesteps of "
                         f"the model's table [0, {len(table) - 1}]; name its table with --model-timesteps and "
                         "--model-noise.")
    sigma = x if s_col is not None else noise.table_t_to_sigma(x, table)
    if np.any(sigma <= 0):
        raise DiffcliError(f"loss file '{path}' has a sigma that is not positive.")
    loss = to_x0_loss(loss, sigma, kind, sigma_data=sigma_data)
    uniq, inv, counts = np.unique(sigma, return_inverse=True, return_counts=True)
    if len(uniq) < 2:
        raise DiffcliError(f"loss file '{path}' needs losses at 2 or more noise levels.")
    mean = np.bincount(inv, loss) / counts
    if err is not None:
        err = to_x0_loss(err, sigma, kind, sigma_data=sigma_data)
        se = np.sqrt(np.bincount(inv, err**2)) / counts
    else:
        var = np.bincount(inv, (loss - mean[inv]) ** 2) / np.maximum(counts - 1, 1)
        se = np.where(counts > 1, np.sqrt(var / counts), np.nan)
    return LossCurve(uniq[::-1], mean[::-1], se[::-1], None)


# --- smoothing ------------------------------------------------------------------------------------------------------

def isotonic_decreasing(values, weights=None) -> np.ndarray:
    """Weighted least-squares non-increasing fit (pool adjacent violators) in the given order."""
    y = np.asarray(values, np.float64)
    w = np.ones_like(y) if weights is None else np.asarray(weights, np.float64)
    blocks: list[list[float]] = []  # [weighted mean, weight, count]
    for yi, wi in zip(y, w, strict=False):
        blocks.append([yi, wi, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return np.concatenate([np.full(c, m) for m, _, c in blocks])


def smooth_in_gamma(curve: LossCurve) -> np.ndarray:
    """The loss made non-increasing in gamma = 1/sigma^2 (non-decreasing in sigma),
    weighted by 1/stderr^2 when known."""
    se = np.asarray(curve.stderr, np.float64)
    ok = np.all(np.isfinite(se)) and np.all(se > 0)
    w = 1.0 / se**2 if ok else None
    # curve.sigma is descending, i.e. gamma ascending: the fit must be non-increasing along the array
    return isotonic_decreasing(curve.loss, w)

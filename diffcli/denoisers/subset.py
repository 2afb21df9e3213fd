"""Golden-subset arithmetic (GoldDiff, Shang et al. 2026): time-aware sizes and the truncation certificate.

Sizes follow the authors' schedule with lambda_t = 1 - s_t, s_t the VP noise std of the current sigma
(x_vp = x / sqrt(1 + sigma^2), so s_t = sigma / sqrt(1 + sigma^2)). The certificate: for a subset S of k points
with smallest squared distance d_(1), and d_next a lower bound on the squared distance of every point outside S,
eps_S = 1 - sum_{i in S} w_i <= Z_out / Z_in <= (N - k) exp(-(d_next - d_(1)) / (2 sigma^2)).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from diffcli.errors import UsageError


def check_sizes(k_min: int, k_max: int, n: int) -> tuple[int, int]:
    if not 1 <= k_min <= k_max:
        raise UsageError(f"--golden-k-min and --golden-k-max need 1 <= k-min <= k-max (got {k_min} and {k_max}).")
    return int(min(k_min, n)), int(min(k_max, n))


def vp_noise_std(sigma):
    """s_t = sqrt(1 - abar) of the VP process with the same signal-to-noise ratio as sigma."""
    return sigma / jnp.sqrt(1.0 + jnp.square(sigma))


def golden_sizes(sigma, n: int, k_min: int, k_max: int):
    """(pool size m_t, subset size k_t) as int32 for sigma (scalar or [B]), GoldDiff's schedule."""
    lam = 1.0 - vp_noise_std(jnp.asarray(sigma, jnp.float32))
    m = jnp.clip(jnp.round(k_max + (n - k_max) * lam), k_max, n)
    k = jnp.maximum(k_min, jnp.round(k_max - (k_max - k_min) * lam))
    return m.astype(jnp.int32), jnp.minimum(k, k_max).astype(jnp.int32)


def tail_bounds(d_sorted, d_floor, n: int, sigma):
    """Certified eps bounds for every prefix size k = 1..K of ascending distances d_sorted [K].

    d_floor lower-bounds the distance of every point that is not among the K (inf when there is none);
    d_next(k) = min(d_(k+1), d_floor). Returns [K], clipped to 1 (eps never exceeds 1).
    """
    kk = d_sorted.shape[0]
    nxt = jnp.concatenate([d_sorted[1:], jnp.full((1,), jnp.inf, d_sorted.dtype)])
    nxt = jnp.minimum(nxt, d_floor)
    k = jnp.arange(1, kk + 1, dtype=jnp.float32)
    gap = (nxt - d_sorted[0]) / (2.0 * jnp.square(sigma))
    bound = (n - k) * jnp.exp(-jnp.where(jnp.isnan(gap), jnp.inf, gap))
    return jnp.minimum(jnp.where(k >= n, 0.0, bound), 1.0)


def smallest_k_for_tol(bounds, k_min: int, tol, k_cap):
    """The smallest k >= k_min with bounds[k - 1] <= tol (k_cap if none; never above k_cap)."""
    k = jnp.arange(1, bounds.shape[0] + 1)
    ok = (bounds <= tol) & (k >= k_min)
    first = jnp.where(jnp.any(ok), jnp.argmax(ok) + 1, k_cap)
    return jnp.minimum(first, k_cap).astype(jnp.int32)


def truncation_parts(w: np.ndarray, data: np.ndarray, subset: np.ndarray):
    """(full mean m, subset mean m_S, complement mean m_{S^c}, eps_S) of weights w [N] over rows data [N, D]."""
    inside = np.zeros(len(w), bool)
    inside[subset] = True
    eps = w[~inside].sum()  # summed directly, not 1 - mass, so a tiny tail keeps its digits
    m_s = (w[inside] @ data[inside]) / w[inside].sum()
    m_c = (w[~inside] @ data[~inside]) / max(eps, np.finfo(float).tiny)
    return w @ data, m_s, m_c, eps

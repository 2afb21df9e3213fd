"""Posterior progressive concentration (GoldDiff): effective support of the empirical posterior along real trajectories.

Per sigma of a DDIM (Euler in sigma-space) run: the smallest k holding 1 - eps of the posterior mass, the
participation ratio 1 / sum w^2, the golden subset's size, certified bound and realised tail mass, and the recall
of the true top-k_t (full-resolution) among the exact proxy screen's and the coarse screen's k_max candidates.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from diffcli.index.coarse import CoarseSearch, coarse_topk, exact_topk

SUPPORT_EPS = 1e-3


def sq_distances(x, data, chunk: int = 1024) -> np.ndarray:
    """Squared distances [B, N] of queries x [B, D] to rows data [N, D] (float64, exact differences, chunked)."""
    x = np.asarray(x, np.float64)
    return np.concatenate([((x[:, None, :] - data[None, lo:lo + chunk].astype(np.float64)) ** 2).sum(-1)
                           for lo in range(0, len(data), chunk)], axis=1)


def posterior_weights(x, data, sigma: float, chunk: int = 1024, d=None) -> np.ndarray:
    """Empirical posterior weights [B, N] of queries x [B, D] (float64)."""
    d = sq_distances(x, data, chunk) if d is None else d
    z = -(d - d.min(axis=1, keepdims=True)) / (2.0 * sigma**2)
    w = np.exp(z)
    return w / w.sum(axis=1, keepdims=True)


def effective_support(w, eps: float = SUPPORT_EPS) -> np.ndarray:
    """Smallest k whose k largest weights hold at least 1 - eps of the mass, per row of w [B, N]."""
    c = np.cumsum(np.sort(w, axis=1)[:, ::-1], axis=1)
    return np.minimum((c < 1.0 - eps).sum(axis=1) + 1, w.shape[1])


def participation_ratio(w) -> np.ndarray:
    """1 / sum_i w_i^2 per row: N for uniform weights, 1 for a point mass."""
    return 1.0 / np.sum(np.square(w), axis=1)


def top_k_recall(candidates, d, k) -> np.ndarray:
    """Per row, the fraction of the k nearest ids (by distances d [B, N], k per row) found in candidates [B, M]."""
    order = np.argsort(d, axis=1, kind="stable")
    return np.array([np.isin(order[b, : int(k[b])], candidates[b]).mean() for b in range(len(d))])


_call = eqx.filter_jit(lambda den, x, s, k: den(x, s, key=k))
_diagnose = eqx.filter_jit(lambda den, x, s, k: den.diagnose(x, s, key=k))


def concentration_along_trajectories(index, denoiser, sigmas, x_t, keys, *, golden=None, coarse=None) -> list[dict]:
    """Step Euler (DDIM, eta 0) with `denoiser` from x_t and measure concentration at every sigma but the last 0.

    `golden` (a GoldenDenoiser) adds its k, bound and realised tail mass; `coarse` (a CoarseSearch) adds its recall.
    """
    data = index.train_data()
    proxy = jnp.asarray(index.proxy)
    from diffcli.index.proxy import proxy_features

    x, rows = jnp.asarray(x_t, jnp.float32), []
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, i)
        flat = np.asarray(x).reshape(len(x), -1)
        dist = sq_distances(flat, data)
        w = posterior_weights(flat, data, s, d=dist)
        row = {"step": i, "sigma": s, "support": effective_support(w).tolist(),
               "participation": participation_ratio(w).tolist()}
        if golden is not None:
            diag = {k: np.asarray(v) for k, v in _diagnose(golden, x, jnp.float32(s), step_keys).items()}
            row.update(golden_k=diag["k"].tolist(), bound=diag["bound"].tolist(), tail_mass=diag["tail_mass"].tolist())
            q = proxy_features(index, x)
            exact_ids, _ = exact_topk(proxy, q, golden.plan.k_max)
            row["proxy_recall"] = top_k_recall(np.asarray(exact_ids), dist, diag["k"]).tolist()
            if coarse is not None:
                ids, _ = coarse_topk(coarse, proxy, q, golden.plan.k_max)
                row["coarse_recall"] = top_k_recall(np.asarray(ids), dist, diag["k"]).tolist()
        d = _call(denoiser, x, jnp.float32(s), step_keys)
        x = d + (s_next / s) * (x - d)  # Euler in sigma-space; the last step (to 0) is exactly D
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per-step means (and max for bounds and tail mass) of the per-sample lists."""
    out = []
    for r in rows:
        s = {"step": r["step"], "sigma": r["sigma"]}
        for key, value in r.items():
            if isinstance(value, list):
                v = np.asarray(value, np.float64)
                s[f"{key}_mean"] = float(v.mean())
                if key in ("bound", "tail_mass", "support"):
                    s[f"{key}_max"] = float(v.max())
        out.append(s)
    return out


def coarse_search_for(index, nprobe=None) -> CoarseSearch | None:
    return None if index.coarse is None else CoarseSearch.from_coarse(index.coarse, nprobe)


def run_concentration(index, *, denoiser: str = "golden", base: str = "pca-local", schedule: str = "vp-leading",
                      steps: int = 10, num_samples: int = 16, seed: int = 0, golden_k_min=None, golden_k_max=None,
                      golden_tol=None, golden_nprobe=None, mask_threshold=None, chunk_size: int = 2048) -> dict:
    """Sample `num_samples` trajectories with `denoiser` and return per-step concentration rows and their summary."""
    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.golden import GoldenDenoiser
    from diffcli.denoisers.options import GoldenOptions, denoiser_options
    from diffcli.sample.batches import initial_noise, solver_keys
    from diffcli.schedules import get_schedule

    sigmas = np.asarray(get_schedule(schedule, steps), np.float64)
    settings = dict(chunk_size=chunk_size, golden_base=base, mask_threshold=mask_threshold, golden_k_min=golden_k_min,
                    golden_k_max=golden_k_max, golden_tol=golden_tol, golden_nprobe=golden_nprobe)
    den = build_denoiser(denoiser, index, denoiser_options(denoiser, settings, sigmas=sigmas, seed=seed))
    golden = den if isinstance(den, GoldenDenoiser) else build_denoiser(
        "golden", index, GoldenOptions.from_settings(settings, sigmas=sigmas, seed=seed))
    ids = np.arange(num_samples)
    x_t = float(sigmas[0]) * initial_noise(seed, ids, index.shape)
    rows = concentration_along_trajectories(index, den, sigmas, x_t, solver_keys(seed, ids), golden=golden,
                                            coarse=coarse_search_for(index, golden_nprobe))
    return {"dataset": index.attrs.get("dataset"), "n": index.n, "denoiser": denoiser, "base": base,
            "schedule": schedule, "steps": steps, "num_samples": num_samples, "seed": seed,
            "k_min": golden.plan.k_min, "k_max": golden.plan.k_max, "support_eps": SUPPORT_EPS,
            "summary": summarise(rows), "per_sample": rows}


def save_support_plot(path, result: dict, *, formats=("png",)) -> list[str]:
    """Effective support, participation ratio and golden k, and the certified bound, against sigma (log-log)."""
    from diffcli.io.plot import concentration_figure, save_figure

    return save_figure(concentration_figure(result), path, formats=formats)

"""Memorisation: each sample's nearest and second-nearest training points; d1 / d2 < 1/3 counts as a copy."""

from __future__ import annotations

import numpy as np

from diffcli.index.store import to_data_space

MEMORISED_RATIO = 1.0 / 3.0  # the usual criterion (Carlini et al. 2023; Yoon et al. 2023)


def nearest_two(queries: np.ndarray, data: np.ndarray, *, chunk: int = 4096, shortlist: int = 8):
    """Exact (d1, d2, i1, i2): L2 distances to the two nearest rows of `data` (brute force, chunked).

    `data` may be stored rows (uint8 images, converted to data space a chunk at a time) or float rows. Candidates
    come from the expanded form ||q||^2 - 2 q.x + ||x||^2 in float32; the shortlist is then rescored
    directly in float64, so an exact copy gives d1 = 0 rather than rounding noise.
    """
    q = np.asarray(queries, np.float32).reshape(len(queries), -1)
    x = np.asarray(data).reshape(len(data), -1)
    if len(x) < 2:
        raise ValueError("memorisation needs at least two training points")
    k = min(shortlist, len(x))
    best_d = np.full((len(q), k), np.inf, np.float32)
    best_i = np.zeros((len(q), k), np.int64)
    qn = np.sum(q * q, axis=1, keepdims=True)
    for start in range(0, len(x), chunk):
        block = to_data_space(x[start : start + chunk])
        d = qn - 2.0 * q @ block.T + np.sum(block * block, axis=1)[None]
        cand_d = np.concatenate([best_d, d], axis=1)
        cand_i = np.concatenate([best_i, np.arange(start, start + len(block))[None].repeat(len(q), 0)], axis=1)
        top = np.argpartition(cand_d, k - 1, axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(cand_d, top, 1), np.take_along_axis(cand_i, top, 1)
    near = to_data_space(x[best_i.reshape(-1)]).reshape(*best_i.shape, -1).astype(np.float64)
    exact = np.sqrt(np.sum((q[:, None].astype(np.float64) - near) ** 2, axis=2))
    order = np.argsort(exact, axis=1, kind="stable")
    exact, best_i = np.take_along_axis(exact, order, 1), np.take_along_axis(best_i, order, 1)
    return exact[:, 0], exact[:, 1], best_i[:, 0], best_i[:, 1]


def memorisation(samples: np.ndarray, train: np.ndarray, *, ratio: float = MEMORISED_RATIO) -> dict:
    """Fraction of samples with d1/d2 < ratio, plus the distribution of d1 as pixel L2 per dimension."""
    d1, d2, i1, _ = nearest_two(samples, train)
    dim = int(np.prod(np.shape(samples)[1:]))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(d2 > 0, d1 / np.where(d2 > 0, d2, 1.0), 0.0)  # two identical nearest copies: still a copy
    memorised = r < ratio
    d1_dim = d1 / np.sqrt(dim)
    q = np.quantile(d1_dim, [0.0, 0.1, 0.5, 0.9, 1.0])
    return {
        "memorized_fraction": float(np.mean(memorised)),
        "memorized_ratio_threshold": float(ratio),
        "d1_per_dim": {**dict(zip(("min", "p10", "median", "p90", "max"), map(float, q), strict=True)),
                       "mean": float(d1_dim.mean())},
        "d1": d1,
        "d2": d2,
        "nearest": i1,
        "memorized": memorised,
    }


def memorisation_by_class(samples: np.ndarray, labels: np.ndarray, train: np.ndarray, train_labels: np.ndarray, *,
                          ratio: float = MEMORISED_RATIO) -> dict:
    """{class id (as text): memorised fraction of that class's samples}, each sample's nearest and second-nearest
    rows searched among its own class's training rows only (the rows a conditional run sampled from)."""
    flat = np.asarray(samples).reshape(len(samples), -1)
    out = {}
    for label in np.unique(labels):
        rows = np.flatnonzero(train_labels == label)
        if len(rows) < 2:
            raise ValueError(f"class {int(label)} has {len(rows)} training rows; memorisation needs at least two")
        out[str(int(label))] = memorisation(flat[labels == label], train[rows], ratio=ratio)["memorized_fraction"]
    return out

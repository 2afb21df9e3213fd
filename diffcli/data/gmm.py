"""A Gaussian mixture in `dim` dimensions: the exact-score testbed (its parameters travel with the index)."""

import numpy as np

from diffcli.data.base import Dataset
from diffcli.data.spec import check_params, float_param, int_param

PARAMS = ("dim", "components", "radius", "std", "seed", "n")


def gmm_parameters(dim: int, components: int, radius: float, std: float, seed: int):
    """Means uniformly on the sphere of `radius`, equal weights, one isotropic `std` per component."""
    rng = np.random.default_rng([seed, 1])
    directions = rng.standard_normal((components, dim))
    means = radius * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    return (means.astype(np.float32), np.full(components, std, np.float32),
            np.full(components, 1.0 / components, np.float32))


def draw(means, stds, weights, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """n exact samples and their component labels."""
    labels = rng.choice(len(weights), size=n, p=weights / weights.sum())
    x = means[labels] + stds[labels, None] * rng.standard_normal((n, means.shape[1]))
    return x.astype(np.float32), labels


def load(params, *, root=None, limit=None):
    check_params("gmm", params, PARAMS)
    dim = int_param(params, "dim", 16, minimum=1)
    k = int_param(params, "components", 4, minimum=1)
    radius = float_param(params, "radius", 2.0)
    std = float_param(params, "std", 0.3, positive=True)
    seed = int_param(params, "seed", 0)
    n = int_param(params, "n", 2000, minimum=2)
    if limit is not None:
        n = min(n, limit)
    means, stds, weights = gmm_parameters(dim, k, radius, std, seed)
    rng = np.random.default_rng([seed, 2])
    train, labels = draw(means, stds, weights, n, rng)
    heldout, held_labels = draw(means, stds, weights, max(1, min(2000, n // 10)), rng)
    spec = f"gmm:dim={dim},components={k},radius={radius:g},std={std:g},seed={seed},n={n}"
    return Dataset(
        spec=spec, kind="vector", train=train, heldout=heldout, labels=labels, heldout_labels=held_labels,
        extra={"gmm/means": means, "gmm/stds": stds, "gmm/weights": weights},
    )

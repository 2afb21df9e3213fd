"""Gaussian-mixture testbeds with an exact denoiser."""

import numpy as np

from diffcli.denoisers.gmm import GMMDenoiser


def separated_mixture(dim=16, ratio=6.0, components=8, radius=2.0):
    """8 equal-weight isotropic components, means on a sphere of radius R, std R / ratio (R/std = ratio)."""
    rng = np.random.default_rng(7)
    means = rng.standard_normal((components, dim))
    means *= radius / np.linalg.norm(means, axis=1, keepdims=True)
    return GMMDenoiser.from_arrays(means, np.full(components, radius / ratio), np.full(components, 1.0 / components),
                                   dtype=np.float64)

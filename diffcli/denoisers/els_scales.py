"""Patch sizes of ELS and LS as a function of the noise level: Kamb & Ganguli's calibrations, or a user's list.

Their calibrations (Kambm/convolutional_diffusion, files/scales_*.pt) are per dataset and backbone, measured at
32 x 32 on their cosine schedule at t = i/20, i = 1..20, and stored with the size for t = i/20 at index i - 1. Their
schedule is the "legacy" cosine, beta(t) = 1 - cos^2(t / 1.008 * pi / 2), so sigma = tan(t pi / (2 * 1.008)) and
t = 1.008 * (2 / pi) * arctan(sigma). A schedule here is a list of (t, size) points; sigma takes the size of the
nearest t. The rules (also in the README):
- a named calibration: entry j at t = (j + 1)/20, as it was measured;
- a user list of L sizes (low to high noise): entry i at t = i/L, the grid the official sampler reads its list on,
  so an official scales file given as a list runs as the official sampler runs it;
- a calibration on images of another side is scaled proportionally, k -> the odd number nearest k * side / 32
  (halves round up, at least 1), per axis; a user list is taken as given;
- every size is capped at what the machine can use: the official ELS patch set needs k <= side (the training
  patches that fit), the circular one k < side; the zero-padded LS window stops changing at 2 * side - 1, the
  circular one at side.
"""

from __future__ import annotations

import numpy as np

from diffcli.errors import UsageError
from diffcli.noise import COSINE_OFFSET, cosine_sigma_to_t, cosine_t_to_sigma

CALIBRATION_STEPS = 20
CALIBRATION_SIDE = 32

# entry j is the size measured at t = (j + 1) / 20, low noise to high (scales_calibration.py stores t = i/20 at i - 1)
CALIBRATIONS: dict[str, tuple[int, ...]] = {
    "mnist-resnet-circular": (3, 3, 5, 5, 5, 7, 7, 9, 9, 9, 11, 11, 11, 11, 9, 9, 7, 7, 3, 3),
    "mnist-resnet-zeros": (3, 3, 5, 5, 5, 7, 7, 7, 9, 9, 11, 11, 11, 11, 13, 15, 15, 15, 15, 15),
    "mnist-unet-zeros": (3, 3, 3, 5, 5, 7, 7, 7, 9, 9, 9, 11, 13, 15, 17, 21, 23, 23, 25, 27),
    "fashionmnist-resnet-zeros": (3, 3, 5, 5, 7, 7, 9, 9, 9, 11, 11, 11, 13, 13, 13, 15, 15, 15, 17, 17),
    "fashionmnist-unet-zeros": (3, 3, 5, 5, 7, 7, 7, 9, 11, 11, 11, 13, 15, 15, 21, 23, 25, 25, 25, 25),
    "cifar10-resnet-circular": (3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 9, 9, 11, 11, 13, 13, 15, 15, 15),
    "cifar10-resnet-zeros": (3, 3, 3, 3, 5, 5, 5, 7, 7, 7, 7, 9, 9, 11, 11, 13, 15, 17, 17, 17),
    "cifar10-unet-zeros": (3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 7, 9, 9, 11, 13, 13, 15, 17, 25),
    "celeba-resnet-zeros": (3, 3, 3, 5, 5, 5, 5, 5, 7, 7, 9, 9, 9, 11, 11, 11, 13, 15, 19, 19),
    "celeba-unet-zeros": (3, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5, 5, 7, 7, 9, 9, 9, 13, 19, 27),
}
for _name, _sizes in CALIBRATIONS.items():  # checked data: 20 odd sizes each
    assert len(_sizes) == CALIBRATION_STEPS and all(k % 2 == 1 for k in _sizes), _name
BOUNDARIES = ("official", "circular")


def official_t(sigma):
    """The official sampler's t for sigma: t = 1.008 (2/pi) arctan(sigma) (their cosine without the offset in t)."""
    return (1.0 + COSINE_OFFSET) * cosine_sigma_to_t(sigma, s=0.0)


def official_sigma(t):
    """The inverse of official_t: sigma = tan(t pi / (2 * 1.008))."""
    return cosine_t_to_sigma(np.asarray(t, np.float64) / (1.0 + COSINE_OFFSET), s=0.0)


def default_scales(channels: int, boundary: str) -> str:
    """The calibration used when none is named: the circular-padding ResNet of the grey (MNIST) or colour (CIFAR-10)
    family. ELS pads its query circularly, as those networks pad, and on digits it was the closest to the reference
    network of the calibrations measured (benchmarks/results/compare_analytic_els_variants*.json)."""
    family = "mnist" if channels == 1 else "cifar10"
    return f"{family}-resnet-circular"


def nearest_odd(v: float) -> int:
    """The odd whole number nearest v (halves round up), at least 1."""
    return max(1, 2 * int(np.floor((float(v) - 1.0) / 2.0 + 0.5)) + 1)


def scaled(k: int, side: int) -> int:
    """A 32 px calibration's size k on images of `side` pixels: the odd number nearest k * side / 32."""
    return k if side == CALIBRATION_SIDE else nearest_odd(k * side / CALIBRATION_SIDE)


def largest(side: int, equivariant: bool, boundary: str) -> int:
    """The largest odd patch size the machine can use along an axis of `side` pixels."""
    if equivariant:
        top = side if boundary == "official" else side - 1
    else:
        top = 2 * side - 1 if boundary == "official" else side
    return max(1, top if top % 2 else top - 1)


def schedule_points(*, scales: str | None, patch_sizes, shape, equivariant: bool, boundary: str):
    """(t [L] ascending, sizes [(kh, kw)] * L) for the options given: a user list, a named calibration, or the
    default calibration of the image's channels and the boundary."""
    if boundary not in BOUNDARIES:
        raise UsageError(f"--els-boundary '{boundary}' is not one of: {', '.join(BOUNDARIES)}.")
    c, h, w = shape
    cap_h, cap_w = largest(h, equivariant, boundary), largest(w, equivariant, boundary)
    if patch_sizes is not None:
        if scales is not None:
            raise UsageError("give --els-scales or --els-patch-sizes, not both.")
        sizes = [int(k) for k in patch_sizes]
        if any(k < 1 or k % 2 == 0 for k in sizes):
            raise UsageError(f"--els-patch-sizes must be odd whole numbers (got {','.join(map(str, sizes))}).")
        t = np.arange(len(sizes), dtype=np.float64) / len(sizes)
        pairs = [(min(k, cap_h), min(k, cap_w)) for k in sizes]
        return t, pairs
    name = scales or default_scales(c, boundary)
    if name not in CALIBRATIONS:
        raise UsageError(f"--els-scales '{name}' is not one of: {', '.join(CALIBRATIONS)}.")
    t = np.arange(1, CALIBRATION_STEPS + 1, dtype=np.float64) / CALIBRATION_STEPS
    pairs = [(min(scaled(k, h), cap_h), min(scaled(k, w), cap_w)) for k in CALIBRATIONS[name]]
    return t, pairs


def entry_index(t_points, sigma) -> np.ndarray:
    """The schedule entry of each sigma: the nearest t point (ties to the lower one)."""
    t_points = np.asarray(t_points, np.float64)
    mids = 0.5 * (t_points[1:] + t_points[:-1])
    return np.searchsorted(mids, official_t(np.asarray(sigma, np.float64)), side="left")


def sigma_edges(t_points) -> np.ndarray:
    """The sigmas at which the entry changes (between consecutive t points), ascending, float64."""
    t_points = np.asarray(t_points, np.float64)
    return official_sigma(0.5 * (t_points[1:] + t_points[:-1]))


def sizes_at(sigmas, **kw) -> list[tuple[int, int]]:
    """The (kh, kw) used at each sigma (for reports and tests)."""
    t, pairs = schedule_points(**kw)
    return [pairs[i] for i in entry_index(t, np.atleast_1d(sigmas))]

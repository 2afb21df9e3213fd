"""Procedural RGB shapes: filled discs, squares and triangles of random colours on random backgrounds.

Deterministic from a seed; image i is the same whatever n is (images are drawn in fixed-size chunks, each
from its own generator), so a larger n only appends images — the scaling testbed.
"""

import numpy as np

from diffcli.data.base import split_arrays
from diffcli.data.spec import check_params, int_param

CHUNK = 1024
MAX_SHAPES = 3


def _masks(kind, cx, cy, size, angle, xs, ys):
    """Boolean masks [B, H, W] of one shape slot for a chunk of images."""
    dx, dy = xs[None] - cx[:, None, None], ys[None] - cy[:, None, None]
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = c * dx + s * dy, -s * dx + c * dy  # coordinates in the shape's own frame
    r = size[:, None, None]
    disc = u * u + v * v <= r * r
    square = (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    # Equilateral triangle: inside all three half-planes whose normals point to the vertices at 0, 120, 240 deg.
    tri = np.ones_like(disc)
    for k in range(3):
        a = 2 * np.pi * k / 3
        tri &= np.cos(a) * u + np.sin(a) * v <= 0.5 * r
    kind = kind[:, None, None]
    return np.where(kind == 0, disc, np.where(kind == 1, square, tri))


def render_chunk(seed: int, chunk: int, count: int, res: int) -> np.ndarray:
    """`count` images of chunk `chunk` as uint8 [count, 3, res, res]."""
    rng = np.random.default_rng([seed, chunk])
    ys, xs = np.meshgrid(np.arange(res) + 0.5, np.arange(res) + 0.5, indexing="ij")
    # Draw every random number for the full chunk so image i never depends on `count`.
    background = rng.integers(0, 256, (CHUNK, 3))
    n_shapes = rng.integers(1, MAX_SHAPES + 1, CHUNK)
    kinds = rng.integers(0, 3, (MAX_SHAPES, CHUNK))
    colours = rng.integers(0, 256, (MAX_SHAPES, CHUNK, 3))
    cx, cy = rng.uniform(0.15, 0.85, (2, MAX_SHAPES, CHUNK)) * res
    sizes = rng.uniform(0.12, 0.3, (MAX_SHAPES, CHUNK)) * res
    angles = rng.uniform(0, 2 * np.pi, (MAX_SHAPES, CHUNK))
    img = np.broadcast_to(background[:count, :, None, None], (count, 3, res, res)).copy()
    for j in range(MAX_SHAPES):
        sl = slice(0, count)
        mask = _masks(kinds[j, sl], cx[j, sl], cy[j, sl], sizes[j, sl], angles[j, sl], xs, ys)
        mask &= (n_shapes[sl] > j)[:, None, None]
        img = np.where(mask[:, None], colours[j, sl, :, None, None], img)
    return img.astype(np.uint8)


def render(n: int, res: int, seed: int = 0) -> np.ndarray:
    """n images, uint8 [n, 3, res, res]."""
    chunks = [render_chunk(seed, c, min(CHUNK, n - c * CHUNK), res) for c in range(-(-n // CHUNK))]
    return np.concatenate(chunks) if chunks else np.zeros((0, 3, res, res), np.uint8)


def load(params, *, root=None, limit=None):
    check_params("shapes", params, ("res", "n", "seed"))
    res = int_param(params, "res", 32, choices=(16, 32, 64))
    n = int_param(params, "n", 5000, minimum=2)
    seed = int_param(params, "seed", 0)
    if limit is not None:
        n = min(n, limit)
    images = render(n, res, seed)
    return split_arrays(f"shapes-{seed}", f"shapes:res={res},n={n},seed={seed}", "image", images)

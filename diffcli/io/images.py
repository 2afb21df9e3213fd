"""PNG grids of image samples."""

from __future__ import annotations

import math

import numpy as np

from diffcli.io.atomic import atomic_path


def to_uint8_hwc(x: np.ndarray) -> np.ndarray:
    """Data-space images [n, C, H, W] in [-1, 1] -> uint8 [n, H, W, C] (clipped)."""
    u8 = np.clip(np.rint((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return u8.transpose(0, 2, 3, 1)


def tile(images: np.ndarray, *, ncol: int | None = None, pad: int = 1) -> np.ndarray:
    """uint8 [n, H, W, C] -> one [rows*(H+pad)+pad, cols*(W+pad)+pad, C] mosaic on a grey background."""
    n, h, w, c = images.shape
    ncol = ncol or int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 128, np.uint8)
    for k in range(n):
        r, q = divmod(k, ncol)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[k]
    return canvas


def save_grid(path, samples: np.ndarray, *, ncol: int | None = None, min_cell: int = 48) -> None:
    """Save data-space image samples [n, C, H, W] as a PNG grid; small images are enlarged (nearest) to be seen."""
    from PIL import Image

    imgs = to_uint8_hwc(samples)
    scale = max(1, min_cell // imgs.shape[1])
    if scale > 1:
        imgs = imgs.repeat(scale, axis=1).repeat(scale, axis=2)
    grid = tile(imgs, ncol=ncol, pad=max(1, scale // 2))  # a gap that stays visible after enlarging
    mode = "L" if grid.shape[2] == 1 else "RGB"
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(grid[..., 0] if mode == "L" else grid)).save(tmp, format="PNG")

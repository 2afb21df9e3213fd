"""The PNG evaluation report: samples beside their nearest training images, and the metric table as text."""

from __future__ import annotations

import numpy as np

from diffcli.io.atomic import atomic_path
from diffcli.io.images import tile, to_uint8_hwc


def metric_lines(scalars: dict) -> list[str]:
    """One 'name: value' line per scalar metric."""
    lines = []
    for k, v in scalars.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b:.4g}" for a, b in v.items())
        elif isinstance(v, float):
            v = f"{v:.5g}"
        lines.append(f"{k}: {v}")
    return lines


def pairs_mosaic(samples: np.ndarray, nearest: np.ndarray, *, count: int = 16, cell: int = 48) -> np.ndarray:
    """uint8 mosaic: each column pair is a sample (left) and its nearest training image (right)."""
    n = min(count, len(samples))
    both = np.stack([samples[:n], nearest[:n]], axis=1).reshape(2 * n, *samples.shape[1:])
    imgs = to_uint8_hwc(both)
    scale = max(1, cell // imgs.shape[1])
    imgs = imgs.repeat(scale, axis=1).repeat(scale, axis=2)
    if imgs.shape[3] == 1:
        imgs = imgs.repeat(3, axis=3)
    return tile(imgs, ncol=min(16, 2 * n), pad=2)


def write_report(path, scalars: dict, *, samples: np.ndarray | None = None, nearest: np.ndarray | None = None) -> None:
    """Write the report PNG (the image pairs only when the data are images and nearest neighbours are known)."""
    from PIL import Image, ImageDraw

    lines = metric_lines(scalars)
    mosaic = pairs_mosaic(samples, nearest) if samples is not None and nearest is not None else None
    line_h, text_w = 14, max(len(s) for s in lines) * 7 + 20
    width = max(text_w, 0 if mosaic is None else mosaic.shape[1])
    top = 0 if mosaic is None else mosaic.shape[0] + 10
    canvas = Image.new("RGB", (width, top + line_h * len(lines) + 20), "white")
    if mosaic is not None:
        canvas.paste(Image.fromarray(np.ascontiguousarray(mosaic)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((10, top + 10 + i * line_h), line, fill="black")
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")

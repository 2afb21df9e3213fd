"""A small log-log line plot drawn with Pillow (matplotlib is not a dependency)."""

from __future__ import annotations

import math

import numpy as np

from diffcli.io.atomic import atomic_path

W, H, LEFT, RIGHT, TOP, BOTTOM = 760, 460, 70, 170, 30, 50
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def save_loglog(path, x, curves: dict, *, title: str = "", xlabel: str = "sigma") -> None:
    """Curves {label: y} against x, both axes logarithmic (non-positive values are skipped), with a legend."""
    from PIL import Image, ImageDraw

    x = np.asarray(x, np.float64)
    ys = {k: np.asarray(v, np.float64) for k, v in curves.items()}
    pos = np.concatenate([v[(v > 0) & np.isfinite(v)] for v in ys.values()] + [np.array([1.0])])
    xl, xh = math.log10(x[x > 0].min()), math.log10(x[x > 0].max())
    yl, yh = math.log10(pos.min()), math.log10(pos.max())
    xh, yh = max(xh, xl + 1e-6), max(yh, yl + 1e-6)
    px = lambda v: LEFT + (math.log10(v) - xl) / (xh - xl) * (W - LEFT - RIGHT)
    py = lambda v: TOP + (yh - math.log10(v)) / (yh - yl) * (H - TOP - BOTTOM)
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([LEFT, TOP, W - RIGHT, H - BOTTOM], outline="black")
    for e in range(math.ceil(xl - 1e-9), math.floor(xh + 1e-9) + 1):
        d.line([px(10.0**e), H - BOTTOM, px(10.0**e), H - BOTTOM + 5], fill="black")
        d.text((px(10.0**e) - 10, H - BOTTOM + 8), f"1e{e}", fill="black")
    for e in range(math.ceil(yl - 1e-9), math.floor(yh + 1e-9) + 1):
        d.line([LEFT - 5, py(10.0**e), LEFT, py(10.0**e)], fill="black")
        d.text((8, py(10.0**e) - 6), f"1e{e}", fill="black")
    d.text((LEFT + (W - LEFT - RIGHT) // 2 - 15, H - 18), xlabel, fill="black")
    d.text((LEFT, 8), title, fill="black")
    for i, (label, y) in enumerate(ys.items()):
        colour = COLOURS[i % len(COLOURS)]
        pts = [(px(a), py(b)) for a, b in zip(x, y, strict=True) if a > 0 and b > 0 and np.isfinite(b)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        for p in pts:
            d.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=colour)
        d.line([W - RIGHT + 10, TOP + 10 + 18 * i, W - RIGHT + 30, TOP + 10 + 18 * i], fill=colour, width=3)
        d.text((W - RIGHT + 35, TOP + 4 + 18 * i), label, fill="black")
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")

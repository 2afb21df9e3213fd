"""A small log-log line plot drawn with Pillow (matplotlib is not a dependency): several named series, decade grid."""

from __future__ import annotations

import math

import numpy as np

from diffcli.io.atomic import atomic_path

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]


def _span(values):
    lo, hi = math.log10(min(values)), math.log10(max(values))
    return (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo, hi)


def save_line_plot(path, series: dict, *, title: str = "", xlabel: str = "", ylabel: str = "",
                   size=(760, 480)) -> None:
    """series: name -> (x, y) with positive values; drawn on log-log axes with markers and a legend."""
    from PIL import Image, ImageDraw

    left, right, top, bottom = 70, 170, 30, 50
    w, h = size
    pts = {k: (np.asarray(x, float), np.asarray(y, float)) for k, (x, y) in series.items()}
    pts = {k: (x[(x > 0) & (y > 0)], y[(x > 0) & (y > 0)]) for k, (x, y) in pts.items()}
    xs = np.concatenate([x for x, _ in pts.values() if x.size] or [np.ones(1)])
    ys = np.concatenate([y for _, y in pts.values() if y.size] or [np.ones(1)])
    (x0, x1), (y0, y1) = _span(xs), _span(ys)

    def to_px(x, y):
        px = left + (math.log10(x) - x0) / (x1 - x0) * (w - left - right)
        py = h - bottom - (math.log10(y) - y0) / (y1 - y0) * (h - top - bottom)
        return px, py

    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for d in range(math.floor(x0), math.ceil(x1) + 1):
        if x0 <= d <= x1:
            px, _ = to_px(10.0**d, 10.0**y0)
            draw.line([(px, top), (px, h - bottom)], fill="#e0e0e0")
            draw.text((px - 10, h - bottom + 5), f"1e{d}", fill="black")
    for d in range(math.floor(y0), math.ceil(y1) + 1):
        if y0 <= d <= y1:
            _, py = to_px(10.0**x0, 10.0**d)
            draw.line([(left, py), (w - right, py)], fill="#e0e0e0")
            draw.text((5, py - 6), f"1e{d}", fill="black")
    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for i, (name, (x, y)) in enumerate(pts.items()):
        colour = COLOURS[i % len(COLOURS)]
        order = np.argsort(x)
        line = [to_px(a, b) for a, b in zip(x[order], y[order], strict=True)]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        for px, py in line:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        draw.line([(w - right + 10, top + 10 + 16 * i), (w - right + 30, top + 10 + 16 * i)], fill=colour, width=3)
        draw.text((w - right + 35, top + 4 + 16 * i), name, fill="black")
    draw.text((left, 8), title, fill="black")
    draw.text((left + (w - left - right) // 2 - 40, h - 22), xlabel, fill="black")
    draw.text((5, 8), ylabel, fill="black")
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")

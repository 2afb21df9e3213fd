"""A loss-curve plot (log-log) with the fitted schedule's sigmas marked, drawn with Pillow (no matplotlib)."""

from __future__ import annotations

import math

import numpy as np

from diffcli.io.atomic import atomic_path

W, H, LEFT, RIGHT, TOP, BOTTOM = 720, 440, 70, 20, 30, 50


def _decades(lo: float, hi: float) -> list[int]:
    return list(range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1))


def save_loss_plot(path, sigma, loss, schedule, *, smoothed=None, title: str = "") -> None:
    """loss vs sigma on log axes (measured: grey, smoothed: blue) with the schedule's positive sigmas as red marks."""
    from PIL import Image, ImageDraw

    sigma = np.asarray(sigma, np.float64)
    loss = np.asarray(loss, np.float64)
    sched = np.asarray(schedule, np.float64)
    sched = sched[sched > 0]
    curves = [loss] + ([np.asarray(smoothed, np.float64)] if smoothed is not None else [])
    pos = np.concatenate([c[c > 0] for c in curves]) if any(np.any(c > 0) for c in curves) else np.array([1.0])
    xs = np.concatenate([sigma, sched])
    x_lo, x_hi = math.log10(xs.min()), math.log10(xs.max())
    y_lo, y_hi = math.log10(pos.min()), math.log10(pos.max())
    x_hi, y_hi = max(x_hi, x_lo + 1e-6), max(y_hi, y_lo + 1e-6)
    px = lambda s: LEFT + (math.log10(s) - x_lo) / (x_hi - x_lo) * (W - LEFT - RIGHT)
    py = lambda v: TOP + (y_hi - math.log10(max(v, 10**y_lo))) / (y_hi - y_lo) * (H - TOP - BOTTOM)

    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([LEFT, TOP, W - RIGHT, H - BOTTOM], outline="black")
    for e in _decades(10**x_lo, 10**x_hi):
        if x_lo - 1e-9 <= e <= x_hi + 1e-9:
            x = px(10.0**e)
            d.line([x, H - BOTTOM, x, H - BOTTOM + 5], fill="black")
            d.text((x - 10, H - BOTTOM + 8), f"1e{e}", fill="black")
    for e in _decades(10**y_lo, 10**y_hi):
        if y_lo - 1e-9 <= e <= y_hi + 1e-9:
            y = py(10.0**e)
            d.line([LEFT - 5, y, LEFT, y], fill="black")
            d.text((8, y - 6), f"1e{e}", fill="black")
    d.text((W // 2 - 20, H - 18), "sigma", fill="black")
    d.text((LEFT, 8), title or "loss per dimension vs sigma", fill="black")
    for c, colour in zip(curves, ("gray", "blue"), strict=False):
        pts = [(px(s), py(v)) for s, v in sorted(zip(sigma, c, strict=False)) if v > 0]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
    ref = curves[-1]
    order = np.argsort(sigma)
    for s in sched:
        x = px(s)
        v = float(np.interp(math.log(s), np.log(sigma[order]), ref[order]))
        d.line([x, TOP, x, H - BOTTOM], fill=(255, 200, 200))
        if v > 0:
            d.ellipse([x - 4, py(v) - 4, x + 4, py(v) + 4], fill="red")
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")

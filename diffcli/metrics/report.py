"""The evaluation report: each sample beside its nearest training image (with d1/d2, copies marked), the metrics as
a table with what they mean, and the reference comparison. A PNG (matplotlib) and optionally one HTML page."""

from __future__ import annotations

import base64
import html
import io
import math
import os

import numpy as np

from diffcli.metrics.memorisation import MEMORISED_RATIO

# what each metric says, in a few words (a metric not listed is shown without a meaning)
MEANINGS = {
    "samples": "the samples file evaluated",
    "reference": "the reference run (same noise)",
    "index": "the training index",
    "n_samples": "samples evaluated",
    "mse": "mean squared error to the reference sample from the same noise",
    "r2": "r² to the reference sample (1 = identical; mean over samples)",
    "mse_scale": "the scale MSE and r² are computed on",
    "n_compared": "samples matched with the reference by id",
    "memorized_fraction": "share of samples that copy a training image (d1/d2 below the threshold)",
    "memorized_fraction_per_class": "per class: share of its samples copying a training image of that class",
    "memorized_ratio_threshold": "d1/d2 below this counts as a copy",
    "d1_per_dim": "distance to the nearest training image, per dimension",
    "feature_space": "features the distribution metrics are computed in",
    "feature_dim": "dimension of that feature space",
    "frechet": "Fréchet distance between sample and training features (lower is closer)",
    "kid": "kernel inception-style distance, unbiased MMD² (lower is closer)",
    "kid_std": "standard deviation of KID over subsets",
    "kid_subset_size": "subset size of the KID estimate",
    "precision": "share of samples inside the training manifold (fidelity)",
    "recall": "share of training images inside the samples' manifold (diversity)",
    "coverage": "share of training neighbourhoods holding a sample",
    "nn_k": "k of the k-NN manifold balls (precision, recall, coverage)",
    "sliced_w2": "sliced Wasserstein-2 distance to the training rows",
    "mmd2": "RBF-kernel MMD² to the training rows",
    "mmd_bandwidth": "RBF bandwidth of MMD²",
    "mode_weight_tv": "total variation between found and true mode weights",
    "mode_weight_max_error": "largest error of a mode's weight",
    "gaussian_kl": "KL(samples' Gaussian fit || target Gaussian)",
    "gaussian_w2": "Wasserstein-2 between the samples' Gaussian fit and the target",
    "report": "the PNG report",
    "report_html": "the HTML report",
}
REFERENCE_KEYS = ("mse", "r2", "mse_scale", "n_compared")
PAIR_COUNT = 16


def format_value(v) -> str:
    """A metric value for people: floats to 4-5 significant digits, dicts as name=value pairs."""
    if isinstance(v, dict):
        return ", ".join(f"{a}={format_value(b)}" for a, b in v.items())
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.5g}"
    return str(v)


def metric_rows(scalars: dict) -> list[tuple[str, str, str]]:
    """(name, value, meaning) per scalar metric, in the order given."""
    return [(k, format_value(v), MEANINGS.get(k, "")) for k, v in scalars.items()]


def metric_lines(scalars: dict) -> list[str]:
    """One 'name: value' line per scalar metric."""
    return [f"{k}: {v}" for k, v, _ in metric_rows(scalars)]


def distance_ratios(d1, d2) -> np.ndarray:
    """d1/d2 per sample (0 where two training images tie at distance 0: still a copy)."""
    d1, d2 = np.asarray(d1, np.float64), np.asarray(d2, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d2 > 0, d1 / np.where(d2 > 0, d2, 1.0), 0.0)


def _image(x: np.ndarray) -> np.ndarray:
    """One data-space image [C, H, W] -> uint8 [H, W] (grey) or [H, W, 3]."""
    from diffcli.io.images import to_uint8_hwc

    u8 = to_uint8_hwc(np.asarray(x)[None])[0]
    return u8[..., 0] if u8.shape[2] == 1 else u8


# the pairs mosaic, in pixels: a strip for the pair's name above, a frame round the two images, a strip for d1/d2 below
HEAD_PX, FOOT_PX, FRAME_PX, INNER_PX, OUTER_PX = 26, 30, 4, 6, 28
COPY_RGB, PLAIN_RGB = (214, 39, 40), (200, 200, 200)


def pairs_mosaic(samples, nearest, ratios=None, *, per_row: int = 4, threshold: float = MEMORISED_RATIO):
    """RGB uint8 mosaic of (sample | nearest) pairs, enlarged like the sample grid, each framed (red: a copy).

    Returns (mosaic, places): places[i] = (x_centre, y_head, y_foot) in mosaic pixels, where pair i's name and its
    d1/d2 go.
    """
    from diffcli.io.images import enlarge, to_uint8_hwc

    n = len(samples)
    both = to_uint8_hwc(np.stack([samples, nearest], axis=1).reshape(2 * n, *np.shape(samples)[1:]))
    both, _ = enlarge(both)
    if both.shape[3] == 1:
        both = both.repeat(3, axis=3)
    h, w = both.shape[1:3]
    pair_w, pair_h = 2 * w + INNER_PX + 2 * FRAME_PX, h + 2 * FRAME_PX
    cols, rows = min(per_row, n), -(-n // per_row)
    cell_w, cell_h = pair_w + OUTER_PX, HEAD_PX + pair_h + FOOT_PX
    mosaic = np.full((rows * cell_h, cols * cell_w - OUTER_PX, 3), 255, np.uint8)
    places = []
    for i in range(n):
        r, q = divmod(i, per_row)
        x0, y0 = q * cell_w, r * cell_h + HEAD_PX
        copy = ratios is not None and ratios[i] < threshold
        mosaic[y0: y0 + pair_h, x0: x0 + pair_w] = COPY_RGB if copy else PLAIN_RGB
        mosaic[y0 + FRAME_PX: y0 + FRAME_PX + h, x0 + FRAME_PX: x0 + pair_w - FRAME_PX] = 255
        for j in range(2):
            left = x0 + FRAME_PX + j * (w + INNER_PX)
            mosaic[y0 + FRAME_PX: y0 + FRAME_PX + h, left: left + w] = both[2 * i + j]
        places.append((x0 + pair_w / 2, y0 - HEAD_PX / 2, y0 + pair_h + FOOT_PX / 2))
    return mosaic, places


def _wrap(text: str, width_px: float, pt: float) -> list[str]:
    import textwrap

    from diffcli.io.plot import DPI

    chars = max(8, int(width_px / (0.52 * pt * DPI / 72)))
    return textwrap.wrap(text, chars) or [""]


def report_figure(scalars: dict, *, samples=None, nearest=None, ratios=None, title: str = "diffcli evaluate",
                  count: int = PAIR_COUNT, threshold: float = MEMORISED_RATIO, per_row: int = 4):
    """The report as a matplotlib Figure, laid out in pixels: the title; the (sample | nearest training image) pairs
    with d1/d2 under each, copies framed in red; the comparison with the reference run; the metric table with what
    each metric means. Returns the Figure (its texts and the one mosaic image are what tests count)."""
    from matplotlib.lines import Line2D

    from diffcli.io.plot import COLOURS, DPI, LABEL_PT, TICK_PT, TITLE_PT, new_figure

    n = 0 if samples is None or nearest is None else min(count, len(samples))
    mosaic, places = pairs_mosaic(samples[:n], nearest[:n], ratios, per_row=per_row, threshold=threshold) if n \
        else (None, [])
    margin, row_px = 20, 1.7 * TICK_PT * DPI / 72
    width = max(1200, 0 if mosaic is None else mosaic.shape[1] + 2 * margin)
    col_x = [margin, margin + 0.22 * (width - 2 * margin), margin + 0.5 * (width - 2 * margin)]
    col_w = [col_x[1] - col_x[0] - 10, col_x[2] - col_x[1] - 10, width - margin - col_x[2]]
    tables = []
    ref = {k: scalars[k] for k in REFERENCE_KEYS if k in scalars}
    rest = {k: (os.path.basename(v) if k in ("samples", "reference", "index") and isinstance(v, str) else v)
            for k, v in scalars.items() if k not in REFERENCE_KEYS}
    for heading, part in (("comparison with the reference run (same noise)", ref), ("metrics", rest)):
        if part:
            rows = [[_wrap(c, w, TICK_PT) for c, w in zip(row, col_w, strict=True)] for row in metric_rows(part)]
            tables.append((heading, rows))
    copies = 0 if ratios is None else int(np.sum(np.asarray(ratios)[:n] < threshold))
    intro = [] if not n else _wrap(
        f"Each sample (left) beside its nearest training image (right). d1/d2 = distance to the nearest / to the "
        f"second nearest training image; framed in red: a copy (d1/d2 < {threshold:.3g}): {copies} of these {n}.",
        width - 2 * margin, LABEL_PT)
    y = margin + 30
    layout = {"intro": y}
    y += len(intro) * row_px + (10 if n else 0)
    layout["mosaic"] = y
    y += 0 if mosaic is None else mosaic.shape[0] + 10
    for heading, rows in tables:
        layout[heading] = y
        y += 2.2 * row_px + sum(max(len(c) for c in row) for row in rows) * row_px + 16
    height = y + margin
    fig = new_figure(width / DPI, height / DPI, layout=None)

    def text(x, y, s, **kw):
        fig.text(x / width, 1 - y / height, s, va="top", **kw)

    text(margin, margin, title, fontsize=TITLE_PT + 2, fontweight="bold")
    for k, line in enumerate(intro):
        text(margin, layout["intro"] + k * row_px, line, fontsize=LABEL_PT)
    if mosaic is not None:
        top = layout["mosaic"]
        ax = fig.add_axes((margin / width, 1 - (top + mosaic.shape[0]) / height, mosaic.shape[1] / width,
                           mosaic.shape[0] / height))
        ax.imshow(mosaic, interpolation="nearest", aspect="auto")
        ax.set_axis_off()
        for i, (xc, y_head, y_foot) in enumerate(places):
            ax.text(xc, y_head, f"sample {i}  |  nearest", ha="center", va="center", fontsize=TICK_PT)
            if ratios is not None:
                copy = ratios[i] < threshold
                ax.text(xc, y_foot, f"d1/d2 = {ratios[i]:.3f}" + ("  copy" if copy else ""), ha="center",
                        va="center", fontsize=TICK_PT + 1, color=COLOURS[1] if copy else "black",
                        fontweight="bold" if copy else "normal")
    for heading, rows in tables:
        y = layout[heading]
        text(margin, y, heading, fontsize=LABEL_PT + 1, fontweight="bold")
        y += 1.2 * row_px
        for x, name in zip(col_x, ("metric", "value", "meaning"), strict=True):
            text(x, y, name, fontsize=TICK_PT, fontweight="bold")
        y += row_px
        for row in rows:
            fig.add_artist(Line2D([margin / width, 1 - margin / width], [1 - (y - 3) / height] * 2, color="0.8",
                                  linewidth=0.8, transform=fig.transFigure))
            for x, cell in zip(col_x, row, strict=True):
                text(x, y, "\n".join(cell), fontsize=TICK_PT, linespacing=1.35)
            y += max(len(c) for c in row) * row_px
    return fig


def report_html(scalars: dict, *, samples=None, nearest=None, ratios=None, title: str = "diffcli evaluate",
                count: int = PAIR_COUNT, threshold: float = MEMORISED_RATIO) -> str:
    """One self-contained HTML page: the pairs as embedded PNGs (pixel-exact, enlarged), and the tables."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
             "body{font-family:sans-serif;margin:1.5em;max-width:70em}"
             "table{border-collapse:collapse;margin:.5em 0 1.5em}"
             "td,th{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}"
             ".pairs{display:flex;flex-wrap:wrap;gap:14px}.pair{text-align:center;padding:6px;border:3px solid #ccc}"
             ".pair.copy{border-color:#d62728}.pair img{image-rendering:pixelated;margin:0 2px}"
             ".copy .r{color:#d62728;font-weight:bold}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    n = 0 if samples is None or nearest is None else min(count, len(samples))
    if n:
        parts.append(f"<h2>Samples and their nearest training images</h2><p>Left: the sample; right: its nearest "
                     f"training image. d1/d2 = distance to the nearest / to the second nearest; framed in red: a copy "
                     f"(d1/d2 &lt; {threshold:.3g}).</p><div class='pairs'>")
        for i in range(n):
            copy = ratios is not None and ratios[i] < threshold
            ratio = "" if ratios is None else f"d1/d2 = {ratios[i]:.3f}" + (" (copy)" if copy else "")
            imgs = "".join(f"<img alt='{a}' src='data:image/png;base64,{_png_base64(x)}'>"
                           for a, x in (("sample", samples[i]), ("nearest", nearest[i])))
            parts.append(f"<div class='pair{' copy' if copy else ''}'><div>sample {i} | nearest</div>{imgs}"
                         f"<div class='r'>{ratio}</div></div>")
        parts.append("</div>")
    for heading, keys in (("Comparison with the reference run (same noise)",
                           [k for k in REFERENCE_KEYS if k in scalars]),
                          ("Metrics", [k for k in scalars if k not in REFERENCE_KEYS])):
        if keys:
            body = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td><td>{esc(m)}</td></tr>"
                           for k, v, m in metric_rows({k: scalars[k] for k in keys}))
            parts.append(f"<h2>{heading}</h2><table><tr><th>metric</th><th>value</th><th>meaning</th></tr>{body}</table>")
    parts.append("</body></html>\n")
    return "".join(parts)


def _png_base64(x: np.ndarray) -> str:
    from PIL import Image

    from diffcli.io.images import MIN_CELL, enlarge

    big, _ = enlarge(np.atleast_3d(_image(x))[None], MIN_CELL)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(big[0, ..., 0] if big.shape[3] == 1 else big[0])).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write_report(path, scalars: dict, *, samples=None, nearest=None, ratios=None, html_path=None,
                 title: str = "diffcli evaluate", formats=("png",)) -> list[str]:
    """Write the report PNG at `path` (+ other `formats`) and/or the HTML page at `html_path`; pairs only when the
    data are images and their nearest training images are known. Returns the paths written."""
    from diffcli.io.atomic import atomic_path
    from diffcli.io.plot import save_figure

    if ratios is not None:
        ratios = np.asarray(ratios, np.float64)
    written = []
    if path is not None:
        fig = report_figure(scalars, samples=samples, nearest=nearest, ratios=ratios, title=title)
        written += save_figure(fig, path, formats=formats)
    if html_path is not None:
        page = report_html(scalars, samples=samples, nearest=nearest, ratios=ratios, title=title)
        with atomic_path(html_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
        written.append(str(html_path))
    return written

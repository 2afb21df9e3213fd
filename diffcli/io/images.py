"""PNG grids of image samples, drawn pixel-exact with Pillow: small images enlarged (nearest) to be seen."""

from __future__ import annotations

import math

import numpy as np

from diffcli.io.atomic import atomic_path

MIN_CELL = 96  # cells are enlarged by an integer factor to at least this many pixels
MAX_CELLS = 256  # at most this many samples are shown
GAP_GREY = 128
LABEL_PX = 16  # height of the class names' type


def to_uint8_hwc(x: np.ndarray) -> np.ndarray:
    """Data-space images [n, C, H, W] in [-1, 1] -> uint8 [n, H, W, C] (clipped)."""
    u8 = np.clip(np.rint((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return u8.transpose(0, 2, 3, 1)


def tile(images: np.ndarray, *, ncol: int | None = None, pad: int = 1) -> np.ndarray:
    """uint8 [n, H, W, C] -> one [rows*(H+pad)+pad, cols*(W+pad)+pad, C] mosaic on a grey background."""
    n, h, w, c = images.shape
    ncol = ncol or int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), GAP_GREY, np.uint8)
    for k in range(n):
        r, q = divmod(k, ncol)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[k]
    return canvas


def enlarge(images: np.ndarray, min_cell: int = MIN_CELL) -> tuple[np.ndarray, int]:
    """uint8 [n, H, W, C] enlarged (nearest) by the smallest integer factor making cells >= min_cell;
    (images, factor)."""
    scale = max(1, -(-int(min_cell) // max(images.shape[1], images.shape[2])))
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    return images, scale


def gap_for(cell: int) -> int:
    """The gap between cells: visible whatever the cell size."""
    return max(4, cell // 16)


def font(size: int = LABEL_PX):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or built without FreeType: the small bitmap font
        return ImageFont.load_default()


def grid_layout(samples: np.ndarray, *, ncol: int | None = None, labels=None,
                max_cells: int = MAX_CELLS) -> tuple[list[list[int]], list]:
    """Which sample goes in which cell: (rows of sample indices, the class of each row or None per row).

    Without labels: row-major, the first `max_cells` samples, `ncol` columns (a square-ish grid by default).
    With labels: one class per row (classes in ascending order), at most `ncol` samples of it (by default as many as
    the largest class has, capped so the grid holds at most `max_cells` cells).
    """
    n = len(samples)
    if max_cells < 1:
        raise ValueError("max_cells must be at least 1")
    if labels is None:
        n = min(n, max_cells)
        cols = int(ncol or math.ceil(math.sqrt(n)))
        return [list(range(lo, min(lo + cols, n))) for lo in range(0, n, cols)], [None] * math.ceil(n / cols)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} samples")
    classes = np.unique(labels)
    members = [np.flatnonzero(labels == c).tolist() for c in classes]
    cols = int(ncol or max(1, min(max(len(m) for m in members), max_cells // len(classes) or 1)))
    rows, names = [], []
    for c, m in zip(classes, members, strict=True):
        if len(rows) * cols >= max_cells:
            break
        rows.append(m[:cols])
        names.append(c.item() if hasattr(c, "item") else c)
    return rows, names


def grid_image(samples: np.ndarray, *, ncol: int | None = None, labels=None, label_names=None,
               max_cells: int = MAX_CELLS, min_cell: int = MIN_CELL) -> np.ndarray:
    """The grid as a uint8 array [H, W, C] (C = 1 for grey samples without labels, else 3); see `save_grid`."""
    imgs, _ = enlarge(to_uint8_hwc(samples), min_cell)
    n, h, w, c = imgs.shape
    rows, classes = grid_layout(samples, ncol=ncol, labels=labels, max_cells=max_cells)
    pad = gap_for(h)
    cols = max(len(r) for r in rows)
    order = [i for r in rows for i in r]
    if labels is None:
        return tile(imgs[order], ncol=cols, pad=pad)
    if c == 1:
        imgs = imgs.repeat(3, axis=3)
    cells = np.full((len(rows) * cols, h, w, 3), GAP_GREY, np.uint8)
    for r, row in enumerate(rows):
        cells[r * cols: r * cols + len(row)] = imgs[row]
    mosaic = tile(cells, ncol=cols, pad=pad)
    names = [_class_name(k, label_names) for k in classes]
    return _with_row_names(mosaic, names, [pad + r * (h + pad) + h // 2 for r in range(len(rows))])


def _class_name(k, label_names) -> str:
    if label_names is None:
        return f"class {k}"
    try:
        return str(label_names[k])
    except (IndexError, KeyError, TypeError):
        return f"class {k}"


def _with_row_names(mosaic: np.ndarray, names: list[str], centres: list[int]) -> np.ndarray:
    """A white column left of `mosaic` with each row's name, vertically centred on it."""
    from PIL import Image, ImageDraw

    f = font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(probe.textbbox((0, 0), s, font=f)[2] for s in names) + 16
    canvas = Image.new("RGB", (width + mosaic.shape[1], mosaic.shape[0]), "white")
    canvas.paste(Image.fromarray(np.ascontiguousarray(mosaic)), (width, 0))
    draw = ImageDraw.Draw(canvas)
    for name, y in zip(names, centres, strict=True):
        draw.text((width - 8, y), name, fill="black", font=f, anchor="rm")
    return np.asarray(canvas)


def save_grid(path, samples: np.ndarray, *, ncol: int | None = None, labels=None, label_names=None,
              max_cells: int = MAX_CELLS, min_cell: int = MIN_CELL) -> None:
    """Save data-space image samples [n, C, H, W] as a PNG grid.

    Each image is enlarged by an integer factor (nearest neighbour) to at least `min_cell` pixels, with a grey gap
    between cells; at most `max_cells` cells are shown, `ncol` per row (square-ish by default). With `labels` (one
    class per sample), each row holds one class, its name (`label_names[label]`, else "class k") at the row start.
    """
    from PIL import Image

    grid = grid_image(samples, ncol=ncol, labels=labels, label_names=label_names, max_cells=max_cells,
                      min_cell=min_cell)
    image = Image.fromarray(np.ascontiguousarray(grid[..., 0] if grid.shape[2] == 1 else grid))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")

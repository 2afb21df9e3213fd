"""Procedural RGB shapes: filled discs, squares and triangles of random colours on random backgrounds.

Deterministic from a seed; image i is the same whatever n is (images are drawn in fixed-size chunks, each
from its own generator, and every chunk's random numbers are drawn whole), so a larger n only appends images —
the scaling testbed — and any chunk can be rendered alone, which is how the stream reads them.

`classes=K` (K = b^3, b = 1..10) labels each image by its background colour: each channel cut into b equal-width
bins, label = (r_bin * b + g_bin) * b + b_bin. The images do not change; 1000 classes of a 1.28M-image set hold
about 1,280 images each, the size of an ImageNet class.
"""

import numpy as np

from diffcli.data.base import StreamedDataset, heldout_split, split_arrays
from diffcli.data.spec import check_params, int_param
from diffcli.errors import UsageError

CHUNK = 1024
MAX_SHAPES = 3
CLASS_COUNTS = tuple(b ** 3 for b in range(1, 11))


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


def _render(seed: int, chunk: int, count: int, res: int):
    """(uint8 images [count, 3, res, res], background colours [count, 3]) of chunk `chunk`."""
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
    return img.astype(np.uint8), background[:count]


def render_chunk(seed: int, chunk: int, count: int, res: int) -> np.ndarray:
    """`count` images of chunk `chunk` as uint8 [count, 3, res, res]."""
    return _render(seed, chunk, count, res)[0]


def background_labels(background: np.ndarray, classes: int) -> np.ndarray:
    """Class of each background colour [B, 3] (0..255): b bins per channel, b^3 = classes."""
    b = round(classes ** (1 / 3))
    bins = background.astype(np.int64) * b // 256
    return (bins[:, 0] * b + bins[:, 1]) * b + bins[:, 2]


def render_range(start: int, stop: int, res: int, seed: int = 0, classes: int = 0):
    """Images start..stop-1 (uint8 [stop - start, 3, res, res]) and their labels (None when classes is 0)."""
    images, labels = [], []
    for c in range(start // CHUNK, -(-stop // CHUNK)):
        lo, hi = c * CHUNK, min((c + 1) * CHUNK, stop)
        img, bg = _render(seed, c, hi - lo, res)
        cut = max(start - lo, 0)
        images.append(img[cut:])
        labels.append(background_labels(bg[cut:], classes) if classes else None)
    if not images:
        return np.zeros((0, 3, res, res), np.uint8), None if not classes else np.zeros(0, np.int64)
    return np.concatenate(images), np.concatenate(labels) if classes else None


def render(n: int, res: int, seed: int = 0) -> np.ndarray:
    """n images, uint8 [n, 3, res, res]."""
    return render_range(0, n, res, seed)[0]


def _params(params, limit):
    check_params("shapes", params, ("res", "n", "seed", "classes"))
    res = int_param(params, "res", 32, choices=(16, 32, 64))
    n = int_param(params, "n", 5000, minimum=2)
    seed = int_param(params, "seed", 0)
    classes = int_param(params, "classes", 0)
    if classes and classes not in CLASS_COUNTS:
        raise UsageError(f"dataset parameter classes={classes} must be a cube: one of "
                         f"{', '.join(map(str, CLASS_COUNTS))}.")
    if limit is not None:
        n = min(n, limit)
    spec = f"shapes:res={res},n={n},seed={seed}" + (f",classes={classes}" if classes else "")
    return res, n, seed, classes, spec


def _info(classes):
    if not classes:
        return {}
    b = round(classes ** (1 / 3))
    return {"classes": [f"background {r},{g},{bb} of {b}" for r in range(b) for g in range(b) for bb in range(b)]}


def load(params, *, root=None, limit=None):
    res, n, seed, classes, spec = _params(params, limit)
    images, labels = render_range(0, n, res, seed, classes)
    return split_arrays(f"shapes-{seed}", spec, "image", images, labels, info=_info(classes))


def stream(params, *, root=None, limit=None) -> StreamedDataset:
    """The same dataset as `load`, rendered chunk by chunk; the held-out rows are kept aside as they pass."""
    res, n, seed, classes, spec = _params(params, limit)
    _, held_ids = heldout_split(n, f"shapes-{seed}")
    kept: dict[int, tuple] = {}

    def read(size):
        for lo in range(0, n, size):
            hi = min(lo + size, n)
            images, labels = render_range(lo, hi, res, seed, classes)
            held = held_ids[(held_ids >= lo) & (held_ids < hi)]
            keep = np.ones(hi - lo, bool)
            keep[held - lo] = False
            for i in held:
                # a copy: a view would keep the whole chunk alive, and held-out rows fall in every chunk
                kept[int(i)] = (images[i - lo].copy(), None if labels is None else labels[i - lo])
            yield images[keep], None if labels is None else labels[keep]

    def heldout():
        if len(kept) < len(held_ids):  # no full pass yet: render the held-out rows alone
            for i in held_ids:
                images, labels = render_range(int(i), int(i) + 1, res, seed, classes)
                kept[int(i)] = (images[0], None if labels is None else labels[0])
        images = np.stack([kept[int(i)][0] for i in held_ids])
        labels = np.array([kept[int(i)][1] for i in held_ids], np.int64) if classes else None
        return images, labels

    return StreamedDataset(spec=spec, kind="image", shape=(3, res, res), n=n - len(held_ids),
                           labelled=bool(classes), read=read, heldout=heldout, n_heldout=len(held_ids),
                           info=_info(classes))

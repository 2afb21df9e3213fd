"""Any folder of images (searched recursively; first-level subfolders are classes), centre-cropped and resized.

Every Pillow mode is decoded by its value range into 8-bit RGB: 16-bit grey (I;16*, and 'I', read as 0..65535) is
scaled by 255/65535, float 'F' is read as [0, 1] when its maximum is at most 1 and as [0, 255] otherwise, and any
alpha (LA, PA, RGBA, a palette or grey image with a transparent colour) is composited over a white background.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib

import numpy as np

from diffcli.data.base import split_arrays
from diffcli.data.spec import MAX_RES, check_params, int_param
from diffcli.errors import DiffcliError, UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_IMAGE_PIXELS = 1 << 26  # 67M pixels (e.g. 8192 x 8192): larger declared sizes are refused as decompression bombs
ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels are composited over white
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# what a damaged or foreign file can raise while Pillow decodes it
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error)


def list_images(root: str) -> list[str]:
    """Image paths below root, sorted so the order never depends on the file system."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        found += [os.path.join(folder, f) for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES)]
    return found


def _grey8(values: np.ndarray, top: float):
    """A grey PIL image from values on [0, top], rounded to uint8."""
    from PIL import Image

    v = np.nan_to_num(np.asarray(values, np.float64), nan=0.0, posinf=top, neginf=0.0)
    return Image.fromarray(np.rint(np.clip(v, 0.0, top) * (255.0 / top)).astype(np.uint8))


def to_rgb8(img):
    """Any PIL image -> an RGB image with 8 bits per channel, decoded by the value range of its mode."""
    from PIL import Image

    mode = img.mode
    if mode in SIXTEEN_BIT_MODES:  # 16-bit grey ('I' as PNG and TIFF usually carry it): 65535 is white
        img = _grey8(np.asarray(img), 65535.0)
    elif mode == "F":
        v = np.asarray(img, np.float64)
        finite = v[np.isfinite(v)]
        img = _grey8(v, 1.0 if finite.size == 0 or finite.max() <= 1.0 else 255.0)
    elif mode == "1":
        img = img.convert("L")
    has_alpha = img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or (
        img.mode in ("L", "P", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def centre_square(img, res: int) -> np.ndarray:
    """Centre-crop a PIL image to a square, resize to res x res RGB, return uint8 [3, res, res]."""
    from PIL import Image

    img = to_rgb8(img)
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((res, res), Image.BICUBIC)
    return np.asarray(img, np.uint8).transpose(2, 0, 1)


def read_image(source, res: int, what: str) -> np.ndarray:
    """Decode one image file (a path or a binary file object) to uint8 [3, res, res]; any failure names `what`."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below instead
            with Image.open(source) as img:
                w, h = img.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise _too_large(what, w, h)
                if w < 1 or h < 1:
                    raise DiffcliError(f"{what} declares an empty image ({w} x {h} pixels).")
                return centre_square(img, res)
    except Image.DecompressionBombError:
        raise DiffcliError(f"{what} declares an image too large to decode safely (a decompression bomb?); "
                           f"images of at most {MAX_IMAGE_PIXELS} pixels are read.") from None
    except MemoryError:
        raise DiffcliError(f"{what} is too large to decode in the memory available.") from None
    except DECODE_ERRORS:
        raise DiffcliError(f"{what} could not be read as an image (it is damaged or not an image file).") from None


def _too_large(what: str, w: int, h: int) -> DiffcliError:
    return DiffcliError(f"{what} declares {w} x {h} pixels, more than the {MAX_IMAGE_PIXELS} read safely "
                        "(a decompression bomb?); shrink it or remove it from the folder.")


def check_res(res: int) -> int:
    """A resolution the readers accept: 4..MAX_RES."""
    if isinstance(res, bool) or not isinstance(res, (int, np.integer)) or not 4 <= res <= MAX_RES:
        raise UsageError(f"resolution {res} is out of range; use a whole number from 4 to {MAX_RES}.")
    return int(res)


def load_folder_images(root: str, res: int, limit: int | None = None, *, progress=None):
    """(uint8 [N, 3, res, res], labels [N], class_names): labels from the first path component below root."""
    res = check_res(res)
    if not root or not os.path.isdir(root):
        raise DiffcliError(f"image folder '{root}' does not exist.")
    paths = list_images(root)[:limit]
    if not paths:
        raise DiffcliError(f"no images ({', '.join(IMAGE_SUFFIXES)}) were found under '{root}'.")
    rel_first = [os.path.relpath(p, root).split(os.sep)[0] if os.sep in os.path.relpath(p, root) else "" for p in paths]
    class_names = sorted(set(rel_first))
    lookup = {name: i for i, name in enumerate(class_names)}
    images = np.empty((len(paths), 3, res, res), np.uint8)
    for i, path in enumerate(paths):
        images[i] = read_image(path, res, f"'{path}'")
        if progress is not None:
            progress(i + 1, len(paths))
    return images, np.array([lookup[c] for c in rel_first], np.int64), class_names


def load(params, *, root=None, limit=None):
    check_params("folder", params, ("res", "path"))
    res = int_param(params, "res", 32, minimum=4, maximum=MAX_RES)
    root = params.get("path", root)
    if root is None:
        raise UsageError("the folder dataset needs --root PATH (or folder:path=PATH).")
    images, labels, classes = load_folder_images(root, res, limit)
    if len(images) < 2:
        raise DiffcliError(f"image folder '{root}' holds only {len(images)} image; at least 2 are needed, since "
                           "one is held out from training.")
    name = f"folder:path={os.path.abspath(root)},res={res}"
    return split_arrays(name, name, "image", images, labels, info={"classes": classes, "source": os.path.abspath(root)})

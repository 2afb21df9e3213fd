"""Any folder of images (searched recursively; first-level subfolders are classes), centre-cropped and resized."""

from __future__ import annotations

import os

import numpy as np

from diffcli.data.base import split_arrays
from diffcli.data.spec import check_params, int_param
from diffcli.errors import DiffcliError, UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_images(root: str) -> list[str]:
    """Image paths below root, sorted so the order never depends on the file system."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        found += [os.path.join(folder, f) for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES)]
    return found


def centre_square(img, res: int) -> np.ndarray:
    """Centre-crop a PIL image to a square, resize to res x res RGB, return uint8 [3, res, res]."""
    from PIL import Image

    img = img.convert("RGB")
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((res, res), Image.BICUBIC)
    return np.asarray(img, np.uint8).transpose(2, 0, 1)


def load_folder_images(root: str, res: int, limit: int | None = None, *, progress=None):
    """(uint8 [N, 3, res, res], labels [N], class_names): labels from the first path component below root."""
    from PIL import Image, UnidentifiedImageError

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
        try:
            with Image.open(path) as img:
                images[i] = centre_square(img, res)
        except (UnidentifiedImageError, OSError):
            raise DiffcliError(f"'{path}' could not be read as an image.") from None
        if progress is not None:
            progress(i + 1, len(paths))
    return images, np.array([lookup[c] for c in rel_first], np.int64), class_names


def load(params, *, root=None, limit=None):
    check_params("folder", params, ("res", "path"))
    res = int_param(params, "res", 32, minimum=4)
    root = params.get("path", root)
    if root is None:
        raise UsageError("the folder dataset needs --root PATH (or folder:path=PATH).")
    images, labels, classes = load_folder_images(root, res, limit)
    name = f"folder:path={os.path.abspath(root)},res={res}"
    return split_arrays(name, name, "image", images, labels, info={"classes": classes, "source": os.path.abspath(root)})

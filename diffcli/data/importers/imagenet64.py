"""ImageNet 64x64: the downsampled npz batches (Chrabaszcz et al. 2017, loaded with allow_pickle=False) or an
EDM-style dataset (folder or zip with dataset.json, as written by EDM's dataset_tool.py)."""

from __future__ import annotations

import glob
import io
import json
import os
import re
import zipfile

import numpy as np

from diffcli.data.base import split_arrays
from diffcli.data.importers.common import dataset_root, keep_class, not_prepared, official_split, spec_of
from diffcli.data.spec import MAX_RES, check_params, int_param
from diffcli.errors import DiffcliError

NAME = "imagenet64"
N_CLASSES = 1000
HELDOUT_CAP = 10000  # held-out rows: a fixed subset of the 50,000 validation images


def batch_files(root: str) -> tuple[list[str], list[str]]:
    """(train_data_batch_*.npz sorted by batch number, val_data*.npz) anywhere below root."""
    def number(p):
        m = re.search(r"(\d+)\.npz$", p)
        return int(m.group(1)) if m else 0

    train = sorted(glob.glob(os.path.join(root, "**", "train_data_batch_*.npz"), recursive=True), key=number)
    val = sorted(glob.glob(os.path.join(root, "**", "val_data*.npz"), recursive=True))
    return train, val


def read_npz_batch(path: str, res: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [n, 3, res, res], labels 0-based) of one batch; rows are R, G, B planes (already CHW)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data, labels = z["data"], np.asarray(z["labels"]).astype(np.int64).reshape(-1)
    except KeyError:
        raise DiffcliError(f"'{path}' has no 'data' and 'labels' arrays; it is not an ImageNet-64 npz batch.") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        raise DiffcliError(f"'{path}' is truncated, damaged or holds pickled objects; download it again.") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * res * res or len(labels) != len(data):
        raise DiffcliError(f"'{path}' does not hold uint8 rows of 3x{res}x{res} pixels with one label each.")
    if labels.size and (labels.min() < 1 or labels.max() > N_CLASSES):
        raise DiffcliError(f"'{path}' has labels outside 1..{N_CLASSES}.")
    return data.reshape(-1, 3, res, res), labels - 1


def npz_count(path: str) -> int:
    """Rows of the 'data' array of an npz batch, from the .npy header alone."""
    try:
        with zipfile.ZipFile(path) as z, z.open("data.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape = read(f)[0]
            return int(shape[0])
    except (KeyError, OSError, ValueError, zipfile.BadZipFile):
        raise DiffcliError(f"'{path}' is not a readable npz batch with a 'data' array.") from None


def read_npz_set(paths, limit):
    images, labels, left = [], [], limit
    for path in paths:
        if left is not None and left <= 0:
            break
        img, lab = read_npz_batch(path)
        images.append(img[:left])
        labels.append(lab[:left])
        left = None if left is None else left - len(images[-1])
    return np.concatenate(images), np.concatenate(labels)


class EdmSource:
    """An EDM dataset: dataset.json {"labels": [[relative path, label], ...] or null} and the images,
    in a folder or zip."""

    def __init__(self, path: str):
        self.path = path
        self.zip = zipfile.ZipFile(path) if os.path.isfile(path) else None

    def read(self, name: str) -> bytes:
        try:
            if self.zip is not None:
                return self.zip.read(name)
            with open(os.path.join(self.path, name), "rb") as f:
                return f.read()
        except (KeyError, OSError, zipfile.BadZipFile):
            raise DiffcliError(f"'{name}' is missing or unreadable in the EDM dataset '{self.path}'.") from None

    def entries(self) -> list[tuple[str, int | None]]:
        try:
            meta = json.loads(self.read("dataset.json"))
        except json.JSONDecodeError:
            raise DiffcliError(f"dataset.json in '{self.path}' is not valid JSON.") from None
        labels = meta.get("labels") if isinstance(meta, dict) else None
        if labels is None:
            names = self.zip.namelist() if self.zip is not None else [
                os.path.relpath(os.path.join(d, f), self.path) for d, _, fs in os.walk(self.path) for f in fs]
            return [(n, None) for n in sorted(n for n in names if n.lower().endswith((".png", ".jpg", ".jpeg")))]
        return sorted((str(n), int(lab)) for n, lab in labels)


def edm_location(root: str) -> str | None:
    """root itself if it holds dataset.json, else the one .zip in root, else None."""
    if os.path.isfile(os.path.join(root, "dataset.json")):
        return root
    zips = sorted(glob.glob(os.path.join(root, "*.zip")))
    return zips[0] if len(zips) == 1 else None


def read_edm(location: str, res: int, limit: int | None):
    from diffcli.data.folder import read_image

    src = EdmSource(location)
    entries = src.entries()[:limit]
    if not entries:
        raise DiffcliError(f"the EDM dataset '{location}' lists no images.")
    images = np.empty((len(entries), 3, res, res), np.uint8)
    for i, (name, _) in enumerate(entries):
        images[i] = read_image(io.BytesIO(src.read(name)), res, f"'{name}' in '{location}'")
    labels = None if entries[0][1] is None else np.array([lab for _, lab in entries], np.int64)
    return images, labels


def load(params, *, root=None, limit=None):
    """ImageNet-64 (1.28M train / 50k val, 1000 classes); `class=K` keeps one class (1-based npz labels -> 0-based)."""
    check_params(NAME, params, ("class", "res"))
    res = int_param(params, "res", 64, minimum=4, maximum=MAX_RES)
    root = dataset_root(NAME, root)
    if not os.path.isdir(root):
        raise not_prepared(NAME, root)
    classes = [str(i) for i in range(N_CLASSES)]
    spec = spec_of(NAME, params)
    train_paths, val_paths = batch_files(root)
    if train_paths:
        if res != 64:
            raise DiffcliError("the ImageNet-64 npz batches are 64x64; leave res at 64 or use an EDM folder.")
        train, train_labels = read_npz_set(train_paths, limit)
        if val_paths:
            test, test_labels = read_npz_set(val_paths, limit)
        else:
            test, test_labels = train[:0], train_labels[:0]
        train, train_labels = keep_class(params, train, train_labels, classes)
        test, test_labels = keep_class(params, test, test_labels, classes)
        return official_split(NAME, spec, train, train_labels, test, test_labels,
                              info={"source": root, "format": "npz"}, cap=HELDOUT_CAP)
    location = edm_location(root)
    if location is None:
        raise not_prepared(NAME, root, "train_data_batch_*.npz, dataset.json or one EDM .zip")
    images, labels = read_edm(location, res, limit)
    if labels is not None:
        images, labels = keep_class(params, images, labels, classes)
    return split_arrays(NAME, spec, "image", images, labels, info={"source": location, "format": "edm"})


def npz_rows(path: str, size: int, res: int = 64):
    """The rows of an npz batch's 'data' array, `size` at a time (uint8 [m, 3, res, res]), read straight from its
    zip member so that a 1.6 GB batch is never whole in memory."""
    try:
        with zipfile.ZipFile(path) as z, z.open("data.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            if dtype != np.uint8 or len(shape) != 2 or shape[1] != 3 * res * res or fortran:
                raise DiffcliError(f"'{path}' does not hold uint8 rows of 3x{res}x{res} pixels with one label each.")
            for lo in range(0, shape[0], size):
                m = min(size, shape[0] - lo)
                raw = f.read(m * shape[1])
                if len(raw) != m * shape[1]:
                    raise EOFError
                yield np.frombuffer(raw, np.uint8).reshape(m, 3, res, res)
    except KeyError:
        raise DiffcliError(f"'{path}' has no 'data' and 'labels' arrays; it is not an ImageNet-64 npz batch.") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        raise DiffcliError(f"'{path}' is truncated, damaged or holds pickled objects; download it again.") from None


def npz_labels(path: str) -> np.ndarray:
    """The 0-based labels of an npz batch, checked as `read_npz_batch` checks them (without reading the rows)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            labels = np.asarray(z["labels"]).astype(np.int64).reshape(-1)
    except KeyError:
        raise DiffcliError(f"'{path}' has no 'data' and 'labels' arrays; it is not an ImageNet-64 npz batch.") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        raise DiffcliError(f"'{path}' is truncated, damaged or holds pickled objects; download it again.") from None
    if len(labels) != npz_count(path):
        raise DiffcliError(f"'{path}' does not hold uint8 rows of 3x64x64 pixels with one label each.")
    if labels.size and (labels.min() < 1 or labels.max() > N_CLASSES):
        raise DiffcliError(f"'{path}' has labels outside 1..{N_CLASSES}.")
    return labels - 1


def stream_npz(paths, limit, wanted, size):
    """(rows, labels) chunks of the npz batches in order, cut at `limit` rows, keeping the rows where
    `wanted(labels)` is true."""
    left = limit
    for path in paths:
        if left is not None and left <= 0:
            return
        labels = npz_labels(path)[:left]
        lo = 0
        for rows in npz_rows(path, size):
            rows = rows[:len(labels) - lo]
            if len(rows) == 0:
                break
            lab = labels[lo:lo + len(rows)]
            keep = wanted(lab)
            yield rows[keep], lab[keep]
            lo += len(rows)
        left = None if left is None else left - len(labels)


def stream(params, *, root=None, limit=None):
    """ImageNet-64 npz batches read in chunks (the rows, labels and split of `load`); the held-out set is the
    official subset of the validation batch, gathered in one streamed pass. EDM folders are read by `load`."""
    from diffcli.data.base import StreamedDataset, split_seed

    check_params(NAME, params, ("class", "res"))
    res = int_param(params, "res", 64, minimum=4, maximum=MAX_RES)
    root_path = dataset_root(NAME, root)
    if not os.path.isdir(root_path):
        raise not_prepared(NAME, root_path)
    train_paths, val_paths = batch_files(root_path)
    if not train_paths:
        return load(params, root=root, limit=limit)
    if res != 64:
        raise DiffcliError("the ImageNet-64 npz batches are 64x64; leave res at 64 or use an EDM folder.")
    k = int_param(params, "class", None, minimum=0)
    if k is not None and k >= N_CLASSES:
        raise DiffcliError(f"class={k} is out of range; this dataset has classes 0..{N_CLASSES - 1}.")

    def wanted(lab):
        return np.ones(len(lab), bool) if k is None else lab == k

    def labels_of(paths):
        left, out = limit, []
        for path in paths:
            if left is not None and left <= 0:
                break
            lab = npz_labels(path)[:left]
            out.append(lab[wanted(lab)])
            left = None if left is None else left - len(lab)
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    n, val_labels = len(labels_of(train_paths)), labels_of(val_paths)
    if len(val_labels) == 0:  # no held-out images (no val file, or a class filter): `load` splits train instead
        return load(params, root=root, limit=limit)
    if n == 0:
        raise DiffcliError(f"dataset '{spec_of(NAME, params)}' has no training images after filtering.")
    keep_ids = (np.sort(np.random.default_rng(split_seed(NAME)).permutation(len(val_labels))[:HELDOUT_CAP])
                if len(val_labels) > HELDOUT_CAP else np.arange(len(val_labels)))

    def heldout():
        rows, pos = [], 0
        for chunk, _ in stream_npz(val_paths, limit, wanted, 8192):
            sel = keep_ids[(keep_ids >= pos) & (keep_ids < pos + len(chunk))] - pos
            rows.append(chunk[sel])
            pos += len(chunk)
        return np.concatenate(rows), val_labels[keep_ids]

    return StreamedDataset(spec=spec_of(NAME, params), kind="image", shape=(3, 64, 64), n=n, labelled=True,
                           read=lambda size: stream_npz(train_paths, limit, wanted, size), heldout=heldout,
                           n_heldout=len(keep_ids), info={"source": root_path, "format": "npz"})

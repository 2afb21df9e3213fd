"""MNIST and Fashion-MNIST from their published IDX files (gzip), read with numpy only (LeCun et al. 1998 format)."""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np

from diffcli.data.importers.common import dataset_root, keep_class, official_split, require, spec_of
from diffcli.data.spec import check_params
from diffcli.errors import DiffcliError

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def idx_header(f, path) -> tuple[int, ...]:
    """Dimensions from an IDX header: magic 0x00 0x00 <type 0x08 = uint8> <ndim>, then ndim big-endian uint32."""
    magic = f.read(4)
    if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] != 0x08:
        raise DiffcliError(f"'{path}' is not an uint8 IDX file (bad magic number).")
    raw = f.read(4 * magic[3])
    if len(raw) < 4 * magic[3]:
        raise DiffcliError(f"'{path}' is truncated (incomplete IDX header).")
    return struct.unpack(f">{magic[3]}I", raw)


def idx_count(path: str) -> int:
    """Number of records an IDX gz file declares (reads only the header)."""
    try:
        with gzip.open(path, "rb") as f:
            return idx_header(f, path)[0]
    except (OSError, EOFError, zlib.error):
        raise DiffcliError(f"'{path}' is not a readable gzip file.") from None


def read_idx(path: str, limit: int | None = None) -> np.ndarray:
    """uint8 array [n, ...] of an IDX gz file (only the first `limit` records are read)."""
    try:
        with gzip.open(path, "rb") as f:
            dims = idx_header(f, path)
            n = dims[0] if limit is None else min(dims[0], limit)
            size = n * int(np.prod(dims[1:], dtype=np.int64))
            raw = f.read(size)
    except (OSError, EOFError, zlib.error):
        raise DiffcliError(f"'{path}' is truncated or not a gzip file; download it again.") from None
    if len(raw) < size:
        raise DiffcliError(f"'{path}' is truncated ({len(raw)} of {size} data bytes); download it again.")
    return np.frombuffer(raw, np.uint8).reshape(n, *dims[1:])


def load_idx_dataset(name: str, class_names, params, root, limit):
    check_params(name, params, ("class",))
    root = dataset_root(name, root)
    tr_img, tr_lab, te_img, te_lab = require(name, root, *FILES)
    train, train_labels = read_idx(tr_img, limit), read_idx(tr_lab, limit).astype(np.int64)
    test, test_labels = read_idx(te_img, limit), read_idx(te_lab, limit).astype(np.int64)
    if len(train) != len(train_labels) or len(test) != len(test_labels):
        raise DiffcliError(f"the image and label files of '{name}' under '{root}' hold different counts.")
    if train.ndim != 3 or train.shape[1:] != test.shape[1:]:
        raise DiffcliError(f"the IDX image files of '{name}' under '{root}' do not hold [N, H, W] images of one size.")
    train, train_labels = keep_class(params, train[:, None], train_labels, class_names)
    test, test_labels = keep_class(params, test[:, None], test_labels, class_names)
    return official_split(name, spec_of(name, params), train, train_labels, test, test_labels,
                          info={"source": root, "classes": list(class_names)})


def load_mnist(params, *, root=None, limit=None):
    """MNIST: 60k/10k 28x28 grey digits."""
    return load_idx_dataset("mnist", tuple(str(d) for d in range(10)), params, root, limit)


def load_fashion(params, *, root=None, limit=None):
    """Fashion-MNIST (Xiao et al. 2017): 60k/10k 28x28 grey clothing images, the same IDX layout as MNIST."""
    return load_idx_dataset("fashion-mnist", FASHION_CLASSES, params, root, limit)

"""CIFAR-10 from the published *binary* version (Krizhevsky 2009): 3073-byte records, never the pickled one.

Reads the extracted `cifar-10-batches-bin/` folder, or straight from `cifar-10-binary.tar.gz` without extracting.
"""

from __future__ import annotations

import os
import tarfile
import zlib

import numpy as np

from diffcli.data.importers.common import dataset_root, keep_class, not_prepared, official_split, spec_of
from diffcli.data.spec import check_params
from diffcli.errors import DiffcliError

FOLDER = "cifar-10-batches-bin"
ARCHIVE = "cifar-10-binary.tar.gz"
TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST = ("test_batch.bin",)
RECORD = 1 + 3 * 32 * 32  # label byte, then R, G, B planes of 32x32 (already CHW)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def parse_records(raw: bytes, where: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [n, 3, 32, 32], int64 labels [n]) from whole records."""
    if len(raw) % RECORD:
        raise DiffcliError(f"'{where}' is truncated or not a CIFAR-10 binary batch ({len(raw)} bytes is not a whole "
                           f"number of {RECORD}-byte records).")
    rec = np.frombuffer(raw, np.uint8).reshape(-1, RECORD)[:limit]
    labels = rec[:, 0].astype(np.int64)
    if labels.size and labels.max() >= len(CLASSES):
        raise DiffcliError(f"'{where}' has label {labels.max()}; CIFAR-10 labels are 0..9.")
    return rec[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def record_count(path: str) -> int:
    size = os.path.getsize(path)
    if size % RECORD:
        raise DiffcliError(f"'{path}' is truncated or not a CIFAR-10 binary batch.")
    return size // RECORD


def read_batches(source, names, limit):
    """Concatenate batches (from `source(name) -> bytes`) until `limit` records are read."""
    images, labels = [], []
    left = limit
    for name in names:
        if left is not None and left <= 0:
            break
        img, lab = parse_records(source(name), name, left)
        images.append(img)
        labels.append(lab)
        left = None if left is None else left - len(img)
    return np.concatenate(images), np.concatenate(labels)


def folder_source(folder):
    def read(name):
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            raise DiffcliError(f"'{path}' is missing; the CIFAR-10 folder is incomplete "
                               "(see data_manifests/cifar10.toml).")
        with open(path, "rb") as f:
            return f.read()

    return read


def archive_source(path):
    """Read every batch in one pass over the gzip stream (a tar.gz has no random access), on first use."""
    members: dict[str, bytes] = {}

    def read_all():
        wanted = {f"{FOLDER}/{n}" for n in TRAIN + TEST}
        try:
            with tarfile.open(path, "r:gz") as tar:
                for member in tar:
                    if member.name in wanted and member.isfile():
                        members[member.name.split("/")[-1]] = tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError, zlib.error):
            raise DiffcliError(f"'{path}' is truncated or damaged; download it again.") from None

    def read(name):
        if not members:
            read_all()
        if name not in members:
            raise DiffcliError(f"'{path}' has no member {FOLDER}/{name}; it is not the CIFAR-10 binary archive.")
        return members[name]

    return read


def _source(params, root):
    check_params("cifar10", params, ("class",))
    root = dataset_root("cifar10", root)
    folder, archive = os.path.join(root, FOLDER), os.path.join(root, ARCHIVE)
    if os.path.isdir(folder):
        return root, folder_source(folder)
    if os.path.isfile(archive):
        return root, archive_source(archive)
    raise not_prepared("cifar10", root, f"{FOLDER}/ or {ARCHIVE}")


def load(params, *, root=None, limit=None):
    """CIFAR-10: 50k/10k 32x32 RGB, 10 classes."""
    root, source = _source(params, root)
    train, train_labels = read_batches(source, TRAIN, limit)
    test, test_labels = read_batches(source, TEST, limit)
    train, train_labels = keep_class(params, train, train_labels, CLASSES)
    test, test_labels = keep_class(params, test, test_labels, CLASSES)
    return official_split("cifar10", spec_of("cifar10", params), train, train_labels, test, test_labels,
                          info={"source": root, "classes": list(CLASSES)})


def stream_batches(source, names, limit, params):
    """(images, labels) of each batch in turn, cut at `limit` records and filtered by `class=K` as `load` does."""
    left = limit
    for name in names:
        if left is not None and left <= 0:
            return
        img, lab = parse_records(source(name), name, left)
        left = None if left is None else left - len(img)
        yield keep_class(params, img, lab, CLASSES)


def stream(params, *, root=None, limit=None):
    """CIFAR-10 one 10,000-record batch at a time (the rows and split of `load`); the test batch is the held-out
    set, read whole. A class filter that leaves no test image falls back to `load` (a held-out split of train)."""
    from diffcli.data.base import StreamedDataset

    root, source = _source(params, root)
    test, test_labels = read_batches(source, TEST, limit)
    test, test_labels = keep_class(params, test, test_labels, CLASSES)
    if len(test) == 0:
        return load(params, root=root, limit=limit)
    n = sum(len(lab) for _, lab in stream_batches(source, TRAIN, limit, params))
    if n == 0:
        raise DiffcliError(f"dataset '{spec_of('cifar10', params)}' has no training images after filtering.")

    def read(size):
        for img, lab in stream_batches(source, TRAIN, limit, params):
            for lo in range(0, len(img), size):
                yield img[lo:lo + size], lab[lo:lo + size]

    return StreamedDataset(spec=spec_of("cifar10", params), kind="image", shape=(3, 32, 32), n=n, labelled=True,
                           read=read, heldout=lambda: (test, test_labels), n_heldout=len(test),
                           info={"source": root, "classes": list(CLASSES)})

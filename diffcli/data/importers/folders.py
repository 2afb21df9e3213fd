"""CelebA-HQ and AFHQ from image folders (layouts in data_manifests/), through the shared folder reader."""

from __future__ import annotations

import os

import numpy as np

from diffcli.data.base import split_arrays
from diffcli.data.folder import load_folder_images
from diffcli.data.importers.common import dataset_root, keep_class, not_prepared, official_split, spec_of
from diffcli.data.spec import MAX_RES, check_params, int_param
from diffcli.errors import DiffcliError


def aligned_labels(labels, names, reference) -> np.ndarray:
    """Relabel a split's class ids so the same class name has the same id as in the training split."""
    lookup = {n: i for i, n in enumerate(reference)}
    missing = sorted(set(names) - set(lookup))
    if missing:
        raise DiffcliError(f"the held-out split has class folder '{missing[0]}' that the training split lacks.")
    return np.array([lookup[names[k]] for k in labels], np.int64)


def load_split_folders(name, params, root, limit):
    """root/train/<class>/... (+ root/val/<class>/... as held-out) with class labels kept."""
    res = int_param(params, "res", 64, minimum=4, maximum=MAX_RES)
    train, train_labels, classes = load_folder_images(os.path.join(root, "train"), res, limit)
    val_dir = os.path.join(root, "val")
    if os.path.isdir(val_dir):
        test, test_labels, val_classes = load_folder_images(val_dir, res, limit)
        test_labels = aligned_labels(test_labels, val_classes, classes)
    else:
        test, test_labels = train[:0], train_labels[:0]
    train, train_labels = keep_class(params, train, train_labels, classes)
    test, test_labels = keep_class(params, test, test_labels, classes)
    return official_split(name, spec_of(name, params), train, train_labels, test, test_labels,
                          info={"source": root, "classes": classes})


def load_afhq(params, *, root=None, limit=None):
    """AFHQ (Choi et al. 2020, StarGAN v2): train/{cat,dog,wild} and val/{cat,dog,wild}, 512 px, resized to res."""
    check_params("afhq", params, ("res", "class"))
    root = dataset_root("afhq", root)
    if not os.path.isdir(os.path.join(root, "train")):
        raise not_prepared("afhq", root, "train/")
    return load_split_folders("afhq", params, root, limit)


def load_celebahq(params, *, root=None, limit=None):
    """CelebA-HQ (Karras et al. 2018): a flat folder of 30k faces, or StarGAN v2's train/val/{female,male} split."""
    check_params("celebahq", params, ("res", "class"))
    root = dataset_root("celebahq", root)
    if not os.path.isdir(root):
        raise not_prepared("celebahq", root)
    if os.path.isdir(os.path.join(root, "train")):
        return load_split_folders("celebahq", params, root, limit)
    if "class" in params:
        raise DiffcliError("a flat CelebA-HQ folder has no classes; class= needs the train/val/{female,male} layout.")
    res = int_param(params, "res", 64, minimum=4, maximum=MAX_RES)
    images, labels, classes = load_folder_images(root, res, limit)
    spec = spec_of("celebahq", params)
    keep_labels = labels if len(classes) > 1 else None
    return split_arrays("celebahq", spec, "image", images, keep_labels, info={"source": root, "classes": classes})

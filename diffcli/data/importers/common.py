"""Shared importer plumbing: data roots, the "not prepared" error, official splits and class filtering."""

from __future__ import annotations

import os

import numpy as np

from diffcli.data.base import Dataset, heldout_split, split_seed
from diffcli.data.spec import int_param
from diffcli.errors import DiffcliError


def data_home() -> str:
    """$DIFFCLI_DATA, default ~/.cache/diffcli/data."""
    return os.environ.get("DIFFCLI_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "diffcli", "data")


def dataset_root(name: str, root: str | None) -> str:
    return os.path.abspath(os.path.expanduser(root)) if root else os.path.join(data_home(), name)


def not_prepared(name: str, root: str, missing: str | None = None) -> DiffcliError:
    what = f" ('{missing}' is missing)" if missing else ""
    return DiffcliError(
        f"dataset '{name}' is not prepared: put its files in '{root}'{what} or pass --root PATH; "
        f"data_manifests/{name}.toml (shown by `diffcli datasets info {name}`) says what to download and the layout."
    )


def require(name: str, root: str, *relative: str) -> list[str]:
    """Absolute paths of required files/folders under root, or the not-prepared error naming the first missing one."""
    if not os.path.isdir(root):
        raise not_prepared(name, root)
    paths = [os.path.join(root, r) for r in relative]
    for rel, path in zip(relative, paths, strict=True):
        if not os.path.exists(path):
            raise not_prepared(name, root, rel)
    return paths


def keep_class(params, images, labels, class_names):
    """Optional `class=K` parameter: keep one class (GoldDiff's class-conditional ImageNet protocol)."""
    k = int_param(params, "class", None, minimum=0)
    if k is None:
        return images, labels
    if k >= len(class_names):
        raise DiffcliError(f"class={k} is out of range; this dataset has classes 0..{len(class_names) - 1}.")
    keep = labels == k
    return images[keep], labels[keep]


def official_split(name: str, spec: str, train, train_labels, test, test_labels, *, info, cap: int = 10000) -> Dataset:
    """Train on the official training set; held-out = the official test set (a fixed subset of at most `cap`)."""
    if len(test) > cap:
        keep = np.sort(np.random.default_rng(split_seed(name)).permutation(len(test))[:cap])
        test, test_labels = test[keep], None if test_labels is None else test_labels[keep]
    if len(train) == 0:
        raise DiffcliError(f"dataset '{spec}' has no training images after filtering.")
    if len(test) == 0 and len(train) == 1:
        raise DiffcliError(f"dataset '{spec}' has 1 training image and no held-out images; at least 2 images are "
                           "needed, since one is held out from training.")
    if len(test) == 0:  # e.g. a class filter that removed every test image: hold out from train instead
        train_ids, held_ids = heldout_split(len(train), name)
        test, test_labels = train[held_ids], None if train_labels is None else train_labels[held_ids]
        train, train_labels = train[train_ids], None if train_labels is None else train_labels[train_ids]
    return Dataset(spec=spec, kind="image", train=train, heldout=test, labels=train_labels,
                   heldout_labels=test_labels, info=info)


def spec_of(name: str, params: dict) -> str:
    """Canonical spec string (sorted parameters), so the default index path is stable."""
    return name if not params else name + ":" + ",".join(f"{k}={params[k]}" for k in sorted(params))

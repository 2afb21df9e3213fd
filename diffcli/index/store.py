"""Reading and writing the index file (layout in DESIGN.md); opening validates before anything is used."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from diffcli.errors import DiffcliError
from diffcli.io.atomic import atomic_path

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Index:
    """An opened index, held in memory as NumPy arrays.

    `images`/`heldout` keep the stored form (uint8 [N, C, H, W] for images, float32 [N, D] for vectors);
    `train_data()` and `heldout_data()` give float32 [N, D] in data space ([-1, 1] for images).
    """

    kind: str  # "image" or "vector"
    shape: tuple[int, ...]  # one sample's data shape: (C, H, W) or (D,)
    images: np.ndarray
    heldout: np.ndarray
    proxy: np.ndarray  # float32 [N, d], coarse retrieval features (see index/proxy.py)
    mean: np.ndarray  # float32 [D]
    pca_components: np.ndarray  # float32 [k, D], orthonormal rows, by decreasing variance
    pca_variances: np.ndarray  # float32 [k]
    residual_variance: float  # mean variance per direction outside the k components (0 when k = D)
    attrs: dict
    labels: np.ndarray | None = None
    gmm: dict | None = None  # {"means": [K, D], "stds": [K], "weights": [K]}
    coarse: dict | None = None  # {"centroids": [L, d], "order": [N], "offsets": [L + 1]}
    proxy_basis: np.ndarray | None = None  # [D, d] for vector data; None for images (average pooling)
    path: str | None = field(default=None, compare=False)

    @property
    def n(self) -> int:
        return int(self.images.shape[0])

    @property
    def dim(self) -> int:
        return int(np.prod(self.shape))

    def train_data(self) -> np.ndarray:
        return to_data_space(self.images)

    def heldout_data(self) -> np.ndarray:
        return to_data_space(self.heldout)


def to_data_space(stored: np.ndarray) -> np.ndarray:
    """Stored rows -> float32 [N, D] in data space (uint8 images map to [-1, 1])."""
    flat = stored.reshape(stored.shape[0], -1)
    if stored.dtype == np.uint8:
        return flat.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return flat.astype(np.float32, copy=False)


def to_stored_images(x: np.ndarray) -> np.ndarray:
    """Data-space images in [-1, 1] -> uint8 (rounded, clipped)."""
    return np.clip(np.rint((np.asarray(x) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _fail(path, why: str) -> DiffcliError:
    return DiffcliError(f"'{path}' is not a usable diffcli index: {why}.")


def open_index(path: str | os.PathLike) -> Index:
    """Open and validate an index file; any problem is one clear sentence."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DiffcliError(f"index file '{path}' does not exist.")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise _fail(path, "it is not an HDF5 file or it is truncated") from None
    try:
        with f:
            return _read(f, path)
    except (KeyError, OSError, ValueError, TypeError) as exc:
        raise _fail(path, f"it is damaged or incomplete ({type(exc).__name__})") from None


def index_attrs(path: str | os.PathLike) -> dict:
    """The validated metadata of an index (kind, shape, n, dataset, ...) without reading its arrays."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DiffcliError(f"index file '{path}' does not exist.")
    try:
        with h5py.File(path, "r") as f:
            return _attrs(f, path)
    except OSError:
        raise _fail(path, "it is not an HDF5 file or it is truncated") from None


def _attrs(f: h5py.File, path: str) -> dict:
    attrs = {k: _plain(v) for k, v in f.attrs.items()}
    if attrs.get("format") != "diffcli-index":
        raise _fail(path, "it was not written by diffcli index-build")
    version = int(attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise _fail(path, f"format version {version} is not the supported version {FORMAT_VERSION}; rebuild it")
    return attrs


def _read(f: h5py.File, path: str) -> Index:
    attrs = _attrs(f, path)
    for name in ("images", "heldout", "proxy", "stats/mean", "stats/pca_components", "stats/pca_variances"):
        if name not in f:
            raise _fail(path, f"the dataset '/{name}' is missing")
    shape = tuple(int(s) for s in attrs["shape"])
    images, heldout, proxy = f["images"][...], f["heldout"][...], f["proxy"][...]
    n = int(attrs["n"])
    if images.shape != (n, *shape) or heldout.shape[1:] != shape or proxy.shape[0] != n:
        raise _fail(path, "its array shapes disagree with its metadata")
    dim = int(np.prod(shape))
    comps = f["stats/pca_components"][...]
    if f["stats/mean"].shape != (dim,) or comps.shape[1] != dim:
        raise _fail(path, "its statistics do not match the data dimension")
    gmm = {k: f[f"gmm/{k}"][...] for k in ("means", "stds", "weights")} if "gmm" in f else None
    coarse = {k: f[f"coarse/{k}"][...] for k in f["coarse"]} if "coarse" in f else None
    return Index(
        kind=str(attrs["kind"]),
        shape=shape,
        images=images,
        heldout=heldout,
        proxy=proxy.astype(np.float32),
        mean=f["stats/mean"][...].astype(np.float32),
        pca_components=comps.astype(np.float32),
        pca_variances=f["stats/pca_variances"][...].astype(np.float32),
        residual_variance=float(attrs.get("residual_variance", 0.0)),
        attrs=attrs,
        labels=f["labels"][...] if "labels" in f else None,
        gmm=gmm,
        coarse=coarse,
        proxy_basis=f["stats/proxy_basis"][...] if "stats/proxy_basis" in f else None,
        path=path,
    )


def _plain(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def write_index(path: str | os.PathLike, *, arrays: dict[str, np.ndarray], attrs: dict) -> None:
    """Write datasets (keys are HDF5 paths such as 'images' or 'stats/mean') and attributes atomically."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, value in arrays.items():
                if value is not None:
                    f.create_dataset(name, data=value)
            for key, value in attrs.items():
                if value is not None:
                    f.attrs[key] = value

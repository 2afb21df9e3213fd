"""Reading and writing the index file (layout in DESIGN.md); opening validates before anything is used."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from diffcli.data.spec import parse_spec
from diffcli.errors import DiffcliError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Index:
    """An opened index as NumPy arrays: in memory, except `images` and `proxy` of a large file, which are read-only
    maps of the file (`file_rows`), so opening costs no copy and the rows live in the page cache.

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

    @property
    def dataset_name(self) -> str | None:
        """The name part of the dataset spec the index was built from ('shapes' for 'shapes:res=32'), or None."""
        spec = self.attrs.get("dataset")
        return parse_spec(str(spec))[0] if spec else None

    def train_data(self) -> np.ndarray:
        """float32 [N, D] in data space: a full copy; denoisers keep `stored_rows()` and convert chunks instead."""
        return to_data_space(self.images)

    def heldout_data(self) -> np.ndarray:
        return to_data_space(self.heldout)

    def stored_rows(self) -> np.ndarray:
        """The training rows [N, D] in their stored dtype (uint8 images, float32 vectors), no copy made."""
        return self.images.reshape(self.n, -1)


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


KINDS = ("image", "vector")


def open_index(path: str | os.PathLike) -> Index:
    """Open and validate an index file; any problem is one clear sentence."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DiffcliError(f"index file '{path}' does not exist.")
    if os.path.isdir(path):
        raise DiffcliError(f"index file '{path}' is a folder; pass the .h5 file.")
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
    if os.path.isdir(path):
        raise DiffcliError(f"index file '{path}' is a folder; pass the .h5 file.")
    try:
        with h5py.File(path, "r") as f:
            return _attrs(f, path)
    except OSError:
        raise _fail(path, "it is not an HDF5 file or it is truncated") from None


ROW_FIELDS = ("images", "heldout")


def read_rows(path: str | os.PathLike, start: int, stop: int, *, field: str = "images") -> np.ndarray:
    """Rows start..stop (clipped to the stored rows) of `field` in data space, float32 [stop - start, D], reading
    only those rows; the metadata and the field's dtype and shape are checked as open_index checks them."""
    if field not in ROW_FIELDS:
        raise ValueError(f"field must be one of {ROW_FIELDS}, not {field!r}")
    path = os.fspath(path)
    attrs = index_attrs(path)
    kind, shape, n = str(attrs["kind"]), tuple(int(s) for s in attrs["shape"]), int(attrs["n"])
    try:
        with h5py.File(path, "r") as f:
            ds = _array(f, path, field)
            _check_dtype(path, field, ds, kind)
            _check_shape(path, field, ds, shape, n)
            lo, hi = max(0, int(start)), min(int(stop), ds.shape[0])
            if hi <= lo:
                return np.zeros((0, int(np.prod(shape))), np.float32)
            rows = ds[lo:hi]
    except (KeyError, OSError, ValueError, TypeError) as exc:
        raise _fail(path, f"it is damaged or incomplete ({type(exc).__name__})") from None
    if kind == "vector" and not np.all(np.isfinite(rows)):
        raise _fail(path, "its data rows hold NaN or infinite values")
    return to_data_space(rows)


def _whole(value) -> int | None:
    """value as an int when it is a whole number (not a bool), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return None


def _attrs(f: h5py.File, path: str) -> dict:
    attrs = {k: _plain(v) for k, v in f.attrs.items()}
    if attrs.get("format") != "diffcli-index":
        raise _fail(path, "it was not written by diffcli index-build")
    version = _whole(attrs.get("format_version"))
    if version != FORMAT_VERSION:
        shown = attrs.get("format_version", "missing")
        raise _fail(path, f"format version {shown} is not the supported version {FORMAT_VERSION}; rebuild it")
    kind = attrs.get("kind")
    if kind not in KINDS:
        raise _fail(path, f"its kind attribute {kind!r} is not one of: {', '.join(KINDS)}")
    raw = attrs.get("shape")
    shape = [_whole(s) for s in raw] if isinstance(raw, list) else None
    want = 3 if kind == "image" else 1
    if shape is None or len(shape) != want or any(s is None or s < 1 for s in shape):
        raise _fail(path, f"its shape attribute {raw!r} is not {want} positive whole number{'s' if want > 1 else ''} "
                          f"as a{'n' if kind == 'image' else ''} {kind} index needs")
    n = _whole(attrs.get("n"))
    if n is None or n < 1:
        raise _fail(path, f"its n attribute {attrs.get('n')!r} is not a positive whole number")
    if kind == "image":
        for key, value in (("channels", shape[0]), ("resolution", shape[-1])):
            if key in attrs and _whole(attrs[key]) != value:
                raise _fail(path, f"its {key} attribute {attrs[key]!r} disagrees with its shape {tuple(shape)}")
    return attrs


def _array(f: h5py.File, path: str, name: str, *, required: bool = True):
    """The HDF5 dataset `name` (a dataset, not a group), or None when optional and absent."""
    if name not in f:
        if required:
            raise _fail(path, f"the dataset '/{name}' is missing")
        return None
    obj = f[name]
    if not isinstance(obj, h5py.Dataset):
        raise _fail(path, f"'/{name}' is not a dataset")
    return obj


def _check_rows(path, name, arr, rows, dtype_kind: str):
    if arr.dtype.kind not in dtype_kind:
        raise _fail(path, f"'/{name}' has dtype {arr.dtype}, which is not the {_DTYPE_NAMES[dtype_kind]} it needs")
    if arr.ndim != 1 or arr.shape[0] != rows:
        raise _fail(path, f"'/{name}' has shape {arr.shape} but the index has {rows} such rows")


_DTYPE_NAMES = {"iu": "integer type", "f": "floating type"}


def _check_dtype(path, name: str, arr, kind: str) -> None:
    """Stored rows ('/images', '/heldout': an array or an HDF5 dataset) are uint8 for images, floating for vectors."""
    if (arr.dtype != np.uint8) if kind == "image" else (arr.dtype.kind != "f"):
        stored = "uint8" if kind == "image" else "floating"
        raise _fail(path, f"'/{name}' has dtype {arr.dtype}, but an {kind} index stores {stored} rows")


def _check_shape(path, name: str, arr, shape: tuple, n: int) -> None:
    """'/images' holds n rows of the index's shape, '/heldout' any number of them."""
    if name == "images" and arr.shape != (n, *shape):
        raise _fail(path, f"'/images' has shape {arr.shape}, but its metadata says {(n, *shape)}")
    if len(arr.shape) != len(shape) + 1 or tuple(arr.shape[1:]) != shape:
        raise _fail(path, f"'/{name}' has shape {arr.shape}, but its rows must have shape {shape}")


def _read(f: h5py.File, path: str) -> Index:
    attrs = _attrs(f, path)
    kind, shape, n = str(attrs["kind"]), tuple(int(s) for s in attrs["shape"]), int(attrs["n"])
    dim = int(np.prod(shape))
    for name in ("images", "heldout", "proxy", "stats/mean", "stats/pca_components", "stats/pca_variances"):
        _array(f, path, name)
    images, heldout, proxy = file_rows(f, "images"), f["heldout"][...], file_rows(f, "proxy")
    for name, arr in (("images", images), ("heldout", heldout)):
        _check_dtype(path, name, arr, kind)
    for name, arr in (("images", images), ("heldout", heldout)):
        _check_shape(path, name, arr, shape, n)
    if heldout.shape[0] == 0:
        raise _fail(path, "it has 0 held-out rows; rebuild it from a dataset of at least 2 samples")
    if "n_heldout" in attrs and _whole(attrs["n_heldout"]) != heldout.shape[0]:
        raise _fail(path, f"its n_heldout attribute {attrs['n_heldout']!r} disagrees with the "
                          f"{heldout.shape[0]} rows of '/heldout'")
    if kind == "vector" and not (np.all(np.isfinite(images)) and np.all(np.isfinite(heldout))):
        raise _fail(path, "its data rows hold NaN or infinite values")
    if proxy.ndim != 2 or proxy.shape[0] != n or proxy.shape[1] < 1 or proxy.dtype.kind != "f":
        raise _fail(path, f"'/proxy' has shape {proxy.shape} and dtype {proxy.dtype}, but it must be floating "
                          f"[{n}, d] (one row per training row)")
    if not np.all(np.isfinite(proxy)):
        raise _fail(path, "'/proxy' holds NaN or infinite values")
    mean = f["stats/mean"][...]
    comps = f["stats/pca_components"][...]
    variances = f["stats/pca_variances"][...]
    if mean.shape != (dim,):
        raise _fail(path, f"'/stats/mean' has shape {mean.shape}, but the data dimension is {dim}")
    if comps.ndim != 2 or comps.shape[1] != dim or comps.shape[0] > dim:
        raise _fail(path, f"'/stats/pca_components' has shape {comps.shape}, but it must be [k, {dim}] with "
                          f"k <= {dim}")
    if variances.shape != (comps.shape[0],):
        raise _fail(path, f"'/stats/pca_variances' has shape {variances.shape}, but there are {comps.shape[0]} "
                          "PCA components")
    for name, arr in (("stats/mean", mean), ("stats/pca_components", comps), ("stats/pca_variances", variances)):
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)):
            raise _fail(path, f"'/{name}' is not an array of finite floating-point numbers")
    if np.any(variances < 0):
        raise _fail(path, "'/stats/pca_variances' holds negative variances")
    residual = attrs.get("residual_variance", 0.0)
    if isinstance(residual, bool) or not isinstance(residual, (int, float)) or not (math.isfinite(residual)
                                                                                   and residual >= 0):
        raise _fail(path, f"its residual_variance attribute {residual!r} is not a finite number >= 0")
    basis = _proxy_basis(f, path, kind, shape, dim, proxy.shape[1])
    labels = _labels(f, path, attrs, n, heldout.shape[0])
    gmm = _gmm(f, path, dim)
    coarse = _coarse(f, path, n, proxy.shape[1])
    _check_class_stats(f, path, n, dim, labels)
    return Index(
        kind=kind,
        shape=shape,
        images=images,
        heldout=heldout,
        proxy=proxy.astype(np.float32, copy=False),
        mean=mean.astype(np.float32),
        pca_components=comps.astype(np.float32),
        pca_variances=variances.astype(np.float32),
        residual_variance=float(residual),
        attrs=attrs,
        labels=labels,
        gmm=gmm,
        coarse=coarse,
        proxy_basis=basis,
        path=path,
    )


MAP_ROWS_FROM = 1 << 26  # bytes: a row array at least this large is mapped from the file, not read into memory


def file_rows(f: h5py.File, name: str) -> np.ndarray:
    """The dataset `name` as a read-only memory map of the file when it is stored contiguous and uncompressed and
    is at least MAP_ROWS_FROM bytes, else read into memory. Index files are replaced by renaming a
    finished file over them, never rewritten in place, so a map stays valid for as long as it is held."""
    ds = f[name]
    offset = ds.id.get_offset()
    big = ds.size * ds.dtype.itemsize >= MAP_ROWS_FROM
    if not big or ds.chunks is not None or ds.compression is not None or offset is None or ds.size == 0:
        return ds[...]
    return np.memmap(f.filename, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape)


def _proxy_basis(f, path, kind, shape, dim, d):
    """The vector proxy basis [D, d] (required for vectors); for images, checks that d is the pooled size."""
    ds = _array(f, path, "stats/proxy_basis", required=kind == "vector")
    if kind == "image":
        from diffcli.index.proxy import pool_factor

        c, h, w = shape
        fac = pool_factor(h)
        if w % fac or d != c * (h // fac) * (w // fac):
            raise _fail(path, f"'/proxy' has {d} features per row, which do not match {c} x {h} x {w} images "
                              f"pooled by {fac}")
        return None if ds is None else ds[...]
    basis = ds[...]
    if basis.shape != (dim, d) or basis.dtype.kind != "f" or not np.all(np.isfinite(basis)):
        raise _fail(path, f"'/stats/proxy_basis' has shape {basis.shape}, but it must be finite [{dim}, {d}]")
    return basis


def _labels(f, path, attrs, n, n_held):
    labels = _array(f, path, "labels", required=False)
    held = _array(f, path, "heldout_labels", required=False)
    classes = attrs.get("classes")
    count = len(classes) if isinstance(classes, list) and classes else None
    out = []
    for name, ds, rows in (("labels", labels, n), ("heldout_labels", held, n_held)):
        if ds is None:
            out.append(None)
            continue
        arr = ds[...]
        _check_rows(path, name, arr, rows, "iu")
        if len(arr) and (arr.min() < 0 or (count is not None and arr.max() >= count)):
            top = f"0..{count - 1}" if count is not None else "0 or more"
            raise _fail(path, f"'/{name}' holds class ids outside {top}")
        out.append(arr)
    return out[0]


def _gmm(f, path, dim):
    if "gmm" not in f:
        return None
    parts = {k: _array(f, path, f"gmm/{k}")[...] for k in ("means", "stds", "weights")}
    k = parts["means"].shape[0] if parts["means"].ndim == 2 else -1
    if (k < 1 or parts["means"].shape[1] != dim or parts["stds"].shape != (k,) or parts["weights"].shape != (k,)
            or not all(np.all(np.isfinite(v)) for v in parts.values())):
        raise _fail(path, f"its '/gmm' parameters are not finite means [K, {dim}], stds [K] and weights [K]")
    return parts


CLASS_STATS = ("count", "mean", "pca_components", "pca_variances", "residual_variance")


def _check_class_stats(f, path, n, dim, labels) -> None:
    """The per-class statistics (/class_stats, docs/index.md), checked by shape and counts; their arrays stay in the
    file until `class_statistics_of` reads one class."""
    if "class_stats" not in f:
        return
    ds = {k: _array(f, path, f"class_stats/{k}") for k in CLASS_STATS}
    count = ds["count"][...]
    k = count.shape[0] if count.ndim == 1 else -1
    r = ds["pca_components"].shape[1] if ds["pca_components"].ndim == 3 else -1
    if (k < 1 or count.dtype.kind not in "iu" or ds["mean"].shape != (k, dim) or r < 0
            or ds["pca_components"].shape != (k, r, dim) or ds["pca_variances"].shape != (k, r)
            or ds["residual_variance"].shape != (k,)):
        raise _fail(path, f"its '/class_stats' arrays are not count [K], mean [K, {dim}], pca_components "
                          f"[K, r, {dim}], pca_variances [K, r] and residual_variance [K]")
    if (labels is not None and not np.array_equal(count, np.bincount(labels, minlength=k)[:k])) or count.sum() != n:
        raise _fail(path, "'/class_stats/count' disagrees with the labels of its rows")


def class_statistics_of(path: str | os.PathLike, label: int) -> dict | None:
    """One class's stored statistics {'count', 'mean' [D], 'components' [k, D], 'variances' [k],
    'residual_variance'} (padding past the class's own rank dropped), or None when the index has none for it."""
    with h5py.File(os.fspath(path), "r") as f:
        if "class_stats" not in f or not 0 <= label < f["class_stats/count"].shape[0]:
            return None
        g = f["class_stats"]
        variances = g["pca_variances"][label]
        k = int(min(max(int(g["count"][label]) - 1, 0), len(variances)))
        return {"count": int(g["count"][label]), "mean": g["mean"][label], "components": g["pca_components"][label, :k],
                "variances": variances[:k], "residual_variance": float(g["residual_variance"][label])}


def _coarse(f, path, n, d):
    """The coarse lists, checked: centroids [L, d], order a permutation of 0..N-1, offsets 0 = o_0 <= ... = N."""
    if "coarse" not in f:
        return None
    cents, order, offsets = (_array(f, path, f"coarse/{k}")[...] for k in ("centroids", "order", "offsets"))
    if cents.ndim != 2 or cents.shape[0] < 1 or cents.shape[1] != d or cents.dtype.kind != "f":
        raise _fail(path, f"'/coarse/centroids' has shape {cents.shape}, but it must be floating [L, {d}] with L >= 1")
    if not np.all(np.isfinite(cents)):
        raise _fail(path, "'/coarse/centroids' holds NaN or infinite values")
    _check_rows(path, "coarse/order", order, n, "iu")
    if order.min() < 0 or order.max() >= n:
        raise _fail(path, f"'/coarse/order' holds row ids outside 0..{n - 1}")
    if not np.all(np.bincount(order.astype(np.int64), minlength=n) == 1):
        raise _fail(path, f"'/coarse/order' is not a permutation of 0..{n - 1} (some rows repeat, others are missing)")
    _check_rows(path, "coarse/offsets", offsets, cents.shape[0] + 1, "iu")
    if offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0):
        raise _fail(path, f"'/coarse/offsets' must rise from 0 to {n} without falling")
    return {"centroids": cents, "order": order, "offsets": offsets}


def _plain(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def write_index(path: str | os.PathLike, *, arrays: dict[str, np.ndarray], attrs: dict) -> None:
    """Write datasets (keys are HDF5 paths such as 'images' or 'stats/mean') and attributes atomically.

    A full disk or an unwritable folder is one DiffcliError sentence and leaves no partial file (io/hdf5.py)."""
    from diffcli.io.hdf5 import arrays_nbytes, write_hdf5

    def fill(f):
        for name, value in arrays.items():
            if value is not None:
                f.create_dataset(name, data=value)
        for key, value in attrs.items():
            if value is not None:
                f.attrs[key] = value

    write_hdf5(path, fill, nbytes=arrays_nbytes(arrays))


def class_names(attrs: dict) -> list[str] | None:
    """The names of an index's classes (its attribute "classes": folder names, CIFAR-10 names), or None."""
    names = attrs.get("classes")
    return [str(s) for s in names] if isinstance(names, list) and names else None


STORED_CLASS_STATS_ABOVE = 4096  # above this dimension a class's PCA is read from the file's class_stats, not redone


def stored_class_stats(index: Index, label: int, count: int) -> dict | None:
    """The class's mean and PCA factors as index-build stored them (`class_statistics_of`), or None when the index
    has none or they do not describe `count` rows (an index restricted in memory is not its file)."""
    if index.path is None:
        return None
    try:
        st = class_statistics_of(index.path, int(label))
    except OSError:
        return None
    if st is None or st["count"] != count:
        return None
    comps = np.asarray(st["components"], np.float32)
    real = np.any(comps != 0, axis=1)  # no padding rows, whatever the stored rank
    return {"mean": np.asarray(st["mean"], np.float32), "components": comps[real],
            "variances": np.asarray(st["variances"], np.float32)[real],
            "residual_variance": max(float(st["residual_variance"]), 0.0)}


def class_rows(index: Index, label: int, *, shrinkage: float | None = None) -> Index:
    """The index restricted to the training rows of class `label`: a class-conditional index.

    images, proxy, labels and the coarse lists are filtered together (row ids renumbered 0..N_c-1 in their stored
    order; lists left empty are dropped). The mean is the class's own; the covariance factors (PCA) are the class's
    covariance shrunk toward the index's global one, (1 - lam) Sigma_c + lam Sigma_global, re-eigendecomposed
    (index/shrinkage.py): lam = `shrinkage`, or by default the class's Ledoit-Wolf intensity. The class covariance
    is recomputed exactly from its rows up to D = 4096; above, the PCA index-build stored for the class is read
    (`stored_class_stats`), and recomputed from the rows (randomized PCA) only where the file has none. A GMM
    index keeps component `label` alone (its labels are component ids). `attrs` gain "class", "class_shrinkage"
    and n becomes N_c, so N-relative defaults (golden's k) follow the class size. The held-out rows are kept whole
    (their labels are not loaded), and `path` is None: the file's rows are not this index's rows.
    """
    from diffcli.index.shrinkage import class_intensity, shrink_covariance
    from diffcli.index.stats import pca_stats

    if index.labels is None:
        raise DiffcliError("this index has no labels, so it has no classes.")
    rows = np.flatnonzero(index.labels == label)
    if rows.size == 0:
        raise DiffcliError(f"class {label} has no training rows in this index.")
    images = index.images[rows]
    data = to_data_space(images)
    glob = {"mean": index.mean, "components": index.pca_components, "variances": index.pca_variances,
            "residual_variance": index.residual_variance}
    lam = class_intensity(data, glob) if shrinkage is None else float(shrinkage)
    own = stored_class_stats(index, int(label), rows.size) if index.dim > STORED_CLASS_STATS_ABOVE else None
    stats = shrink_covariance(own or pca_stats(data), glob, lam, index.dim)
    del data
    coarse = None
    if index.coarse is not None:
        renum = np.full(index.n, -1, np.int64)
        renum[rows] = np.arange(rows.size)
        cents, order, offsets = index.coarse["centroids"], index.coarse["order"], index.coarse["offsets"]
        kept, members, sizes = [], [], []
        for lst in range(len(cents)):
            ids = renum[order[offsets[lst]:offsets[lst + 1]]]
            ids = ids[ids >= 0]
            if ids.size:
                kept.append(lst)
                members.append(ids)
                sizes.append(ids.size)
        coarse = {"centroids": cents[kept], "order": np.concatenate(members).astype(order.dtype),
                  "offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(offsets.dtype)}
    gmm = None
    if index.gmm is not None and 0 <= label < len(index.gmm["weights"]):
        gmm = {"means": index.gmm["means"][label:label + 1], "stds": index.gmm["stds"][label:label + 1],
               "weights": np.ones(1, index.gmm["weights"].dtype)}
    names = class_names(index.attrs)
    attrs = {**index.attrs, "n": int(rows.size), "class": int(label), "class_shrinkage": lam,
             "residual_variance": stats["residual_variance"]}
    if names is not None and label < len(names):
        attrs["class_name"] = names[label]
    return Index(kind=index.kind, shape=index.shape, images=images, heldout=index.heldout, proxy=index.proxy[rows],
                 mean=stats["mean"], pca_components=stats["components"], pca_variances=stats["variances"],
                 residual_variance=stats["residual_variance"], attrs=attrs, labels=index.labels[rows], gmm=gmm,
                 coarse=coarse, proxy_basis=index.proxy_basis, path=None)

"""Build the HDF5 index from a dataset, and find-or-build the default index of a dataset spec.

The build streams: the training rows arrive in blocks (`dataset.chunks`), are written to the file as they come,
and every statistic is accumulated block by block, so peak memory is the proxies [N, d] plus a few blocks and
D x D sums, whatever N is. Layout and derivations: docs/index.md.
"""

from __future__ import annotations

import hashlib
import os
import re

import numpy as np

from diffcli import __version__
from diffcli.errors import DiffcliError
from diffcli.index.proxy import compute_proxies, proxy_map_for, vector_proxy_basis
from diffcli.index.stats import DENSE_LIMIT, RANDOMIZED_RANK, CovarianceSum, pca_stats, streamed_pca
from diffcli.index.store import FORMAT_VERSION, to_data_space, write_index  # noqa: F401  (write_index re-exported)

BLOCK = 8192  # rows per block: statistics and proxies are computed over these blocks, whatever the source's chunks
CLASS_RANK = 64  # PCA components kept per class (a class of N_c rows has at most N_c - 1)
CLASS_BUFFER = 1 << 29  # bytes of stored rows of one group of classes gathered at once for their statistics
IN_MEMORY_MAX = 1 << 28  # an index file up to this size is assembled in memory (2x its size), larger ones in place


def diffcli_home() -> str:
    return os.environ.get("DIFFCLI_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "diffcli")


def default_index_path(spec: str, limit: int | None = None, root: str | None = None) -> str:
    """$DIFFCLI_HOME/indexes/<readable slug>-<short hash>.h5 for a dataset spec (and its root folder, if any)."""
    key = f"{spec}|limit={limit}|root={None if root is None else os.path.abspath(root)}"
    slug = re.sub(r"[^A-Za-z0-9=,.-]+", "_", spec)[:60].strip("_")
    return os.path.join(diffcli_home(), "indexes", f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.h5")


def content_sha256(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def reblock(chunks, size: int):
    """Regroup a stream of (rows, labels or None) chunks into blocks of exactly `size` rows (the last may be
    shorter), so what is computed per block does not depend on how the source cut its chunks."""
    rows, labels, held = [], [], 0
    for r, lab in chunks:
        rows.append(r)
        labels.append(lab)
        held += len(r)
        while held >= size:
            all_rows = np.concatenate(rows) if len(rows) > 1 else rows[0]
            all_labels = None if labels[0] is None else (np.concatenate(labels) if len(labels) > 1 else labels[0])
            yield all_rows[:size], None if all_labels is None else all_labels[:size]
            rows, held = [all_rows[size:]], held - size
            labels = [None if all_labels is None else all_labels[size:]]
    if held:
        yield np.concatenate(rows), None if labels[0] is None else np.concatenate(labels)


def proxy_dim(kind: str, shape: tuple[int, ...]) -> int:
    if kind == "image":
        from diffcli.index.proxy import pool_factor

        c, h, w = shape
        f = pool_factor(h)
        return c * (h // f) * (w // f)
    return int(min(int(np.prod(shape)), 64))


def build_index(dataset, path, *, report=lambda msg: None, coarse: bool = True) -> str:
    """Compute statistics and proxies of `dataset` (a Dataset or a StreamedDataset) and write the index file
    atomically, streaming its rows; returns the path."""
    from diffcli.io.hdf5 import write_hdf5

    shape, n = tuple(int(s) for s in dataset.shape), int(dataset.n)
    if n < 1:
        raise DiffcliError(f"dataset '{dataset.spec}' has no training rows.")
    dim = int(np.prod(shape))
    item = np.dtype(dataset.dtype).itemsize
    stats_bytes = 4 * dim * (dim if dim <= DENSE_LIMIT else RANDOMIZED_RANK)
    if dataset.labelled:  # an upper bound on the per-class statistics
        stats_bytes += 4 * dim * (CLASS_RANK + 1) * min(n, len(dataset.info.get("classes", ())) or n)
    nbytes = (n + dataset.n_heldout) * dim * item + 4 * n * proxy_dim(dataset.kind, shape) + 16 * n + stats_bytes
    write_hdf5(path, lambda f: _fill(f, dataset, shape, report, coarse), nbytes=nbytes, in_memory_max=IN_MEMORY_MAX)
    return os.fspath(path)


def _fill(f, dataset, shape, report, coarse) -> None:
    """Write every dataset and attribute of the index into the open HDF5 file `f`."""
    kind, n, dim = dataset.kind, int(dataset.n), int(np.prod(shape))
    report(f"streaming {n} samples of dimension {dim} into the index")
    images = f.create_dataset("images", (n, *shape), dtype=dataset.dtype)
    hasher = hashlib.sha256()
    labels = np.empty(n, np.int64) if dataset.labelled else None
    moments = CovarianceSum(dim, diagonal=dim > DENSE_LIMIT)
    pmap = proxy_map_for(kind, shape) if kind == "image" else None
    proxy = np.empty((n, proxy_dim(kind, shape)), np.float32) if pmap is not None else None
    pos = 0
    for rows, labs in reblock(dataset.chunks(BLOCK), BLOCK):
        if pos + len(rows) > n:
            raise DiffcliError(f"dataset '{dataset.spec}' yielded more than its {n} training rows; its files changed "
                               "while the index was built.")
        stop = pos + len(rows)
        images[pos:stop] = rows
        hasher.update(np.ascontiguousarray(rows).tobytes())
        x = to_data_space(rows)
        moments.add(x)
        if proxy is not None:
            proxy[pos:stop] = compute_proxies(pmap, x)
        if labels is not None:
            labels[pos:stop] = labs
        pos = stop
    if pos != n:
        raise DiffcliError(f"dataset '{dataset.spec}' yielded {pos} training rows, not {n}; its files changed while "
                           "the index was built.")
    report("PCA statistics")
    if dim <= DENSE_LIMIT:
        stats = moments.stats()
    else:
        stats = streamed_pca(lambda: read_blocks(images), n=n, mean=moments.mean(),
                             total_variance=moments.total_variance())
    basis = None
    if proxy is None:  # vectors: the proxy is a projection on the top PCA directions, known only now
        basis = vector_proxy_basis(stats["components"], dim)
        pmap = proxy_map_for(kind, shape, basis)
        proxy = np.concatenate([compute_proxies(pmap, x) for x in read_blocks(images)])
    heldout, heldout_labels = dataset.heldout_rows()
    hasher.update(np.ascontiguousarray(heldout).tobytes())
    arrays = {
        "heldout": heldout,
        "proxy": proxy,
        "labels": labels,
        "heldout_labels": heldout_labels,
        "stats/mean": stats["mean"],
        "stats/pca_components": stats["components"],
        "stats/pca_variances": stats["variances"],
        "stats/proxy_basis": basis,
        **dataset.extra,
    }
    if labels is not None:
        report("per-class statistics")
        count = len(dataset.info["classes"]) if "classes" in dataset.info else int(labels.max()) + 1
        arrays.update({f"class_stats/{k}": v for k, v in class_statistics(images, labels, count).items()})
    if coarse:
        from diffcli.index.coarse import build_coarse

        report("coarse clusters of the proxies")
        arrays.update({f"coarse/{k}": v for k, v in build_coarse(proxy, seed=0).items()})
    for name, value in arrays.items():
        if value is not None:
            f.create_dataset(name, data=value)
    attrs = {
        "format": "diffcli-index",
        "format_version": FORMAT_VERSION,
        "dataset": dataset.spec,
        "kind": kind,
        "shape": np.array(shape, np.int64),
        "resolution": shape[-1] if kind == "image" else 0,
        "channels": shape[0] if kind == "image" else 0,
        "n": n,
        "n_heldout": len(heldout),
        "residual_variance": stats["residual_variance"],
        "content_sha256": hasher.hexdigest(),
        "diffcli_version": __version__,
    }
    # the dataset's own attributes never replace the index's ("format": "npz" is kept as "source_format")
    attrs.update({(f"source_{k}" if k in attrs else k): v for k, v in dataset.info.items()
                  if isinstance(v, (str, int, float))})
    if "classes" in dataset.info:
        attrs["classes"] = np.array(dataset.info["classes"], dtype=object).astype("S")
    for key, value in attrs.items():
        f.attrs[key] = value


def read_blocks(images, size: int = BLOCK):
    """The stored rows of an HDF5 dataset in data space, float32 [b, D] blocks, one pass."""
    for lo in range(0, images.shape[0], size):
        yield to_data_space(images[lo:lo + size])


def class_groups(counts: np.ndarray, row_bytes: int, budget: int = CLASS_BUFFER) -> list[list[int]]:
    """Classes in groups whose rows together fit in `budget` bytes (a class larger than that is a group alone)."""
    groups, current, used = [], [], 0
    for c in np.flatnonzero(counts):
        size = int(counts[c]) * row_bytes
        if current and used + size > budget:
            groups.append(current)
            current, used = [], 0
        current.append(int(c))
        used += size
    return groups + ([current] if current else [])


def class_statistics(images, labels: np.ndarray, n_classes: int, *, rank: int = CLASS_RANK,
                     budget: int = CLASS_BUFFER) -> dict:
    """Per-class count, mean and top-`rank` PCA (`pca_stats(rows, rank=...)`) of the stored rows, stacked by label:
    {'count' [K], 'mean' [K, D], 'pca_components' [K, r, D], 'pca_variances' [K, r], 'residual_variance' [K]}
    (zero padding past a class's own rank). Rows are gathered one group of classes at a time, one pass over
    `images` (an HDF5 dataset or an array) per group, so memory stays within `budget`."""
    n, dim = images.shape[0], int(np.prod(images.shape[1:]))
    counts = np.bincount(labels, minlength=n_classes).astype(np.int64)
    r = int(max(1, min(rank, dim, counts.max() - 1)))  # no class has more components than its rows - 1
    out = {"count": counts, "mean": np.zeros((n_classes, dim), np.float32),
           "pca_components": np.zeros((n_classes, r, dim), np.float32),
           "pca_variances": np.zeros((n_classes, r), np.float32), "residual_variance": np.zeros(n_classes)}
    for group in class_groups(counts, dim * images.dtype.itemsize, budget):
        rows = {c: np.empty((counts[c], dim), images.dtype) for c in group}
        filled = dict.fromkeys(group, 0)
        member = np.zeros(n_classes, bool)
        member[group] = True
        for lo in range(0, n, BLOCK):
            lab = labels[lo:lo + BLOCK]
            if not member[lab].any():
                continue
            block = images[lo:lo + BLOCK].reshape(len(lab), dim)
            for c in np.unique(lab[member[lab]]):
                picked = block[lab == c]
                rows[c][filled[c]:filled[c] + len(picked)] = picked
                filled[c] += len(picked)
        for c in group:
            st = pca_stats(to_data_space(rows.pop(c)), rank=r)
            k = len(st["variances"])
            out["mean"][c] = st["mean"]
            out["pca_components"][c, :k] = st["components"]
            out["pca_variances"][c, :k] = st["variances"]
            out["residual_variance"][c] = st["residual_variance"]
    return out


def ensure_index(spec: str, *, root: str | None = None, limit: int | None = None, report=lambda msg: None) -> str:
    """The default index of `spec`, built on first use (and said so through `report`)."""
    from diffcli.data import DATASETS, parse_spec, stream_dataset
    from diffcli.registry import resolve

    path = default_index_path(spec, limit, root)
    if os.path.exists(path):
        return path
    resolve("dataset", DATASETS, parse_spec(spec)[0])  # an unknown name fails before anything is announced
    dataset = stream_dataset(spec, root=root, limit=limit)  # so does data that is not prepared
    report(f"no index for '{spec}' yet; building it at {path}")
    return build_index(dataset, path, report=report)

"""Build the HDF5 index from a dataset, and find-or-build the default index of a dataset spec."""

from __future__ import annotations

import hashlib
import os
import re

import numpy as np

from diffcli import __version__
from diffcli.index.proxy import compute_proxies, proxy_map_for, vector_proxy_basis
from diffcli.index.stats import pca_stats
from diffcli.index.store import FORMAT_VERSION, to_data_space, write_index


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


def build_index(dataset, path, *, report=lambda msg: None, coarse: bool = True) -> str:
    """Compute statistics and proxies of `dataset` and write the index file atomically; returns the path."""
    train = to_data_space(dataset.train)
    shape = tuple(int(s) for s in dataset.train.shape[1:])
    report(f"statistics of {len(train)} samples of dimension {train.shape[1]}")
    stats = pca_stats(train)
    basis = None if dataset.kind == "image" else vector_proxy_basis(stats["components"], train.shape[1])
    report("proxy features")
    proxy = compute_proxies(proxy_map_for(dataset.kind, shape, basis), train)
    arrays = {
        "images": dataset.train,
        "heldout": dataset.heldout,
        "proxy": proxy,
        "labels": dataset.labels,
        "heldout_labels": dataset.heldout_labels,
        "stats/mean": stats["mean"],
        "stats/pca_components": stats["components"],
        "stats/pca_variances": stats["variances"],
        "stats/proxy_basis": basis,
        **dataset.extra,
    }
    if coarse:
        from diffcli.index.coarse import build_coarse

        report("coarse clusters of the proxies")
        arrays.update({f"coarse/{k}": v for k, v in build_coarse(proxy, seed=0).items()})
    attrs = {
        "format": "diffcli-index",
        "format_version": FORMAT_VERSION,
        "dataset": dataset.spec,
        "kind": dataset.kind,
        "shape": np.array(shape, np.int64),
        "resolution": shape[-1] if dataset.kind == "image" else 0,
        "channels": shape[0] if dataset.kind == "image" else 0,
        "n": len(dataset.train),
        "n_heldout": len(dataset.heldout),
        "residual_variance": stats["residual_variance"],
        "content_sha256": content_sha256(dataset.train, dataset.heldout),
        "diffcli_version": __version__,
        **{k: v for k, v in dataset.info.items() if isinstance(v, (str, int, float))},
    }
    if "classes" in dataset.info:
        attrs["classes"] = np.array(dataset.info["classes"], dtype=object).astype("S")
    write_index(path, arrays=arrays, attrs=attrs)
    return os.fspath(path)


def ensure_index(spec: str, *, root: str | None = None, limit: int | None = None, report=lambda msg: None) -> str:
    """The default index of `spec`, built on first use (and said so through `report`)."""
    from diffcli.data import DATASETS, load_dataset, parse_spec
    from diffcli.registry import resolve

    path = default_index_path(spec, limit, root)
    if os.path.exists(path):
        return path
    resolve("dataset", DATASETS, parse_spec(spec)[0])  # an unknown name fails before anything is announced
    dataset = load_dataset(spec, root=root, limit=limit)  # so does data that is not prepared
    report(f"no index for '{spec}' yet; building it at {path}")
    return build_index(dataset, path, report=report)

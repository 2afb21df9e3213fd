"""Small in-memory indexes shared by several test files (and the multi-device worker)."""

from __future__ import annotations

import numpy as np

from diffcli.index.coarse import build_coarse
from diffcli.index.proxy import compute_proxies, proxy_map_for
from diffcli.index.stats import pca_stats
from diffcli.index.store import Index


def make_index(n=120, shape=(1, 8, 8), seed=0, dataset="shapes"):
    """n noisy copies of 6 smooth prototypes as uint8 images, with PCA stats, proxies and a coarse structure."""
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((6, *shape)).cumsum(-1)
    imgs = protos[rng.integers(0, 6, n)] + 0.4 * rng.standard_normal((n, *shape))
    imgs = np.clip((imgs / np.abs(imgs).max() + 1) * 127.5, 0, 255).astype(np.uint8)
    data = imgs.reshape(n, -1).astype(np.float32) / 127.5 - 1
    s = pca_stats(data)
    proxy = compute_proxies(proxy_map_for("image", shape), data)
    return Index(kind="image", shape=shape, images=imgs, heldout=imgs[:2], proxy=proxy, mean=s["mean"],
                 pca_components=s["components"], pca_variances=s["variances"], residual_variance=0.0,
                 attrs={"dataset": dataset}, coarse=build_coarse(proxy, seed=0))

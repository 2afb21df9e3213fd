"""Coarse inverted lists: structure, recall against brute force, exact when every list is probed; nearest baseline."""

import jax.numpy as jnp
import numpy as np
import pytest

from diffcli.denoisers.empirical import EmpiricalDenoiser
from diffcli.denoisers.nearest import NearestDenoiser
from diffcli.index.coarse import (
    CoarseSearch,
    assign,
    build_coarse,
    coarse_stage,
    coarse_topk,
    exact_topk,
    piece_blocks,
    piece_distances,
    recall,
    split_lists,
)


@pytest.fixture(scope="module")
def clustered():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((30, 16)) * 4
    pts = centres[rng.integers(0, 30, 3000)] + rng.standard_normal((3000, 16))
    return pts.astype(np.float32)


def test_structure(clustered):
    c = build_coarse(clustered, seed=0)
    n_lists = len(c["centroids"])
    assert n_lists == round(np.sqrt(len(clustered)))
    assert np.array_equal(np.sort(c["order"]), np.arange(len(clustered)))
    assert c["offsets"][0] == 0 and c["offsets"][-1] == len(clustered) and np.all(np.diff(c["offsets"]) >= 0)
    labels, _ = assign(clustered, c["centroids"])
    for li in range(n_lists):  # every list holds exactly the rows whose nearest centroid it is
        members = c["order"][c["offsets"][li]:c["offsets"][li + 1]]
        assert np.array_equal(np.sort(members), np.flatnonzero(labels == li))
    cents, ids = split_lists(c, max_len=7)
    got = ids[ids >= 0]
    assert ids.shape[1] == 7 and np.array_equal(np.sort(got), np.arange(len(clustered)))


def test_recall_against_brute_force(clustered):
    c = build_coarse(clustered, seed=1)
    q = jnp.asarray(clustered[:64] + 0.5 * np.random.default_rng(2).standard_normal((64, 16)).astype(np.float32))
    proxy = jnp.asarray(clustered)
    truth, _ = exact_topk(proxy, q, 20)
    few, _ = coarse_topk(CoarseSearch.from_coarse(c, nprobe=1), proxy, q, 20)
    default, _ = coarse_topk(CoarseSearch.from_coarse(c), proxy, q, 20)
    r1, rd = recall(few, truth), recall(default, truth)
    assert 0.5 < r1 <= rd and rd >= 0.95  # clustered data: a few lists hold almost all true neighbours
    every, d_every = coarse_topk(CoarseSearch.from_coarse(c, nprobe=len(c["centroids"])), proxy, q, 20)
    _, d_true = exact_topk(proxy, q, 20)
    assert recall(every, truth) == 1.0
    np.testing.assert_allclose(np.asarray(d_every), np.asarray(d_true), rtol=1e-4, atol=1e-3)


def test_nearest_is_argmin(clustered):
    data = clustered[:500]
    den = NearestDenoiser(*(lambda e: (e.chunks, e.half_sqn))(EmpiricalDenoiser.from_data(data, chunk=64)))
    x = data[:10] + np.random.default_rng(3).standard_normal((10, 16)).astype(np.float32)
    d = ((x[:, None].astype(np.float64) - data[None]) ** 2).sum(-1)
    ref = data[d.argmin(1)]
    gap = np.sort(d, axis=1)[:, 1] - d.min(1)
    assert np.all(gap > 1e-3 * d.min(1))  # no near tie, so float32 rounding on any CPU picks the same row
    # identity is the promise: the output is the chosen training row itself, copied, not computed
    np.testing.assert_array_equal(np.asarray(den(jnp.asarray(x), 1.0)), ref)


def test_coarse_stage_floor_bounds_every_unprobed_member(clustered):
    """The probe's floor is at most the proxy distance of every member of an unprobed piece (triangle inequality);
    the extras are a window of one permutation with the probed pieces' members flagged."""
    import jax

    stage = coarse_stage(build_coarse(clustered, seed=0), clustered, 4, seed=0)
    ids = np.asarray(stage.search.ids)
    blocks, half = piece_blocks(clustered, ids)
    assert sorted(np.asarray(stage.perm)) == list(range(len(clustered)))
    rng = np.random.default_rng(1)
    for q in clustered[rng.integers(0, len(clustered), 5)] + rng.standard_normal((5, 16)).astype(np.float32):
        probed, floor = stage.probe(jnp.asarray(q))
        probed = np.asarray(probed)
        d = ((clustered - q) ** 2).sum(1)
        others = np.setdiff1d(ids[np.setdiff1d(np.arange(len(ids)), probed)], [-1])
        assert float(floor) <= d[others].min() * (1 + 1e-5) + 1e-5
        members = ids[probed].reshape(-1)
        got = np.asarray(piece_distances(jnp.asarray(blocks), jnp.asarray(half), jnp.asarray(probed), jnp.asarray(q)))
        np.testing.assert_allclose(got[members >= 0], d[members[members >= 0]], rtol=1e-4, atol=1e-3)
        extra, ok = stage.extras(jax.random.PRNGKey(2), 50, jnp.asarray(probed))
        np.testing.assert_array_equal(~np.asarray(ok), np.isin(np.asarray(extra), members))

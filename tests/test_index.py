"""The HDF5 index: round trip, statistics, proxies, validation of foreign and damaged files."""

import h5py
import numpy as np
import pytest

from diffcli.data import load_dataset
from diffcli.errors import DiffcliError
from diffcli.index import open_index
from diffcli.index.build import build_index
from diffcli.index.proxy import pool_factor, proxy_features
from diffcli.index.stats import pca_stats


def test_round_trip_keeps_data_and_metadata(digits_index):
    ds = load_dataset("digits")
    assert np.array_equal(digits_index.images, ds.train)
    assert np.array_equal(digits_index.heldout, ds.heldout)
    assert digits_index.attrs["format_version"] == 1 and digits_index.attrs["n"] == len(ds.train)
    assert len(digits_index.attrs["content_sha256"]) == 64
    x = digits_index.train_data()
    assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 1.0


def test_pca_stats_match_numpy_covariance():
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((500, 12)) @ rng.standard_normal((12, 12))).astype(np.float32)
    st = pca_stats(data)
    cov = np.cov(data.astype(np.float64), rowvar=False)
    recon = st["components"].T.astype(np.float64) @ np.diag(st["variances"]) @ st["components"].astype(np.float64)
    np.testing.assert_allclose(recon, cov, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(st["mean"], data.mean(0), atol=1e-5)
    assert np.all(np.diff(st["variances"]) <= 0)


def test_randomized_pca_above_dense_limit(monkeypatch):
    import diffcli.index.stats as stats

    monkeypatch.setattr(stats, "DENSE_LIMIT", 8)
    monkeypatch.setattr(stats, "RANDOMIZED_RANK", 4)
    rng = np.random.default_rng(1)
    data = (rng.standard_normal((400, 4)) * [5, 4, 3, 2]) @ np.linalg.qr(rng.standard_normal((20, 4)))[0].T
    data = (data + 0.01 * rng.standard_normal((400, 20))).astype(np.float32)
    st = stats.pca_stats(data)
    exact = np.sort(np.linalg.eigvalsh(np.cov(data, rowvar=False)))[::-1][:4]
    np.testing.assert_allclose(st["variances"], exact, rtol=1e-3)
    assert 0 < st["residual_variance"] < 1e-3


def test_proxy_is_linear_average_pooling(digits_index):
    assert pool_factor(64) == 4 and pool_factor(28) == 2 and pool_factor(32) == 2 and pool_factor(8) == 1
    x = digits_index.train_data()[:5].reshape(5, 1, 8, 8)
    np.testing.assert_allclose(np.asarray(proxy_features(digits_index, x)), digits_index.proxy[:5], atol=1e-6)


def test_image_proxy_pools_to_16(shapes_index_path):
    idx = open_index(shapes_index_path)
    assert idx.proxy.shape == (idx.n, 3 * 16 * 16)
    ds = load_dataset("shapes:res=32,n=20")
    x = (ds.train.astype(np.float32) / 127.5 - 1)
    ref = x.reshape(len(x), 3, 16, 2, 16, 2).mean(axis=(3, 5)).reshape(len(x), -1)
    from diffcli.index.proxy import proxy_map_for

    np.testing.assert_allclose(np.asarray(proxy_map_for("image", (3, 32, 32))(x)), ref, atol=1e-6)


def test_vector_index_keeps_gmm_parameters(tmp_path):
    path = build_index(load_dataset("gmm:dim=100,components=2,n=300"), tmp_path / "g.h5", coarse=False)
    idx = open_index(path)
    assert idx.kind == "vector" and idx.shape == (100,)
    assert idx.gmm["means"].shape == (2, 100) and idx.proxy.shape == (idx.n, 64)
    np.testing.assert_allclose(idx.proxy, idx.train_data() @ idx.proxy_basis, atol=1e-4)


def test_foreign_truncated_and_missing_files_are_refused(tmp_path, digits_index_path):
    with pytest.raises(DiffcliError, match="does not exist"):
        open_index(tmp_path / "missing.h5")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DiffcliError, match="not written by diffcli"):
        open_index(foreign)
    data = open(digits_index_path, "rb").read()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(DiffcliError, match="not a usable diffcli index"):
        open_index(truncated)
    text = tmp_path / "text.h5"
    text.write_text("hello")
    with pytest.raises(DiffcliError, match="not an HDF5 file"):
        open_index(text)


def test_wrong_version_is_refused(tmp_path, digits_index_path):
    import shutil

    copy = tmp_path / "old.h5"
    shutil.copy(digits_index_path, copy)
    with h5py.File(copy, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(DiffcliError, match="format version 99"):
        open_index(copy)


def test_failed_write_keeps_the_previous_index(tmp_path):
    """A build that fails half-way through writing leaves the earlier file intact and no temporary behind."""
    ds = load_dataset("digits")
    path = build_index(ds, tmp_path / "x.h5", coarse=False)
    before = open(path, "rb").read()
    ds.extra["zz/bad"] = np.array([object()], dtype=object)  # h5py cannot store this: the write fails late
    with pytest.raises(TypeError):
        build_index(ds, path, coarse=False)
    assert [p.name for p in tmp_path.iterdir()] == ["x.h5"]
    assert open(path, "rb").read() == before


def test_class_statistics_are_read_one_class_at_a_time_and_checked(digits_index_path, tmp_path):
    import shutil

    from diffcli.index.store import class_statistics_of

    idx = open_index(digits_index_path)
    st = class_statistics_of(digits_index_path, 3)
    rows = idx.train_data()[idx.labels == 3].astype(np.float64)
    assert st["count"] == len(rows)
    np.testing.assert_allclose(st["mean"], rows.mean(0), atol=1e-6)
    lam = np.linalg.eigvalsh(np.cov(rows, rowvar=False))[::-1]
    np.testing.assert_allclose(st["variances"], lam[:len(st["variances"])], rtol=1e-4, atol=1e-6 * lam[0])
    assert class_statistics_of(digits_index_path, 10) is None
    bad = tmp_path / "bad.h5"
    shutil.copy(digits_index_path, bad)
    with h5py.File(bad, "r+") as f:
        f["class_stats/count"][0] += 1
    with pytest.raises(DiffcliError, match="class_stats/count' disagrees"):
        open_index(bad)

"""Class covariance shrinkage (index/shrinkage.py): the two ends, both eigendecompositions against float64 dense
references, the Ledoit-Wolf intensity against its element-wise definition, the masks rebuilt from the shrunk
covariance, and the --class-shrinkage flag."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from diffcli.cli import app
from diffcli.denoisers.masks import dense_mask, gain_mask_lists
from diffcli.index.shrinkage import dense_covariance, ledoit_wolf_intensity, shrink_covariance
from diffcli.index.store import class_rows

runner = CliRunner()


def global_stats(index):
    return {"mean": index.mean, "components": index.pca_components, "variances": index.pca_variances,
            "residual_variance": index.residual_variance}


def class_cov(index, label):
    return np.cov(index.train_data()[index.labels == label].astype(np.float64), rowvar=False)


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_the_ends_are_the_class_and_the_global_statistics(digits_index, lam):
    sub = class_rows(digits_index, 3, shrinkage=lam)
    want = class_cov(digits_index, 3) if lam == 0 else np.cov(digits_index.train_data().astype(np.float64),
                                                                rowvar=False)
    got = dense_covariance({"components": sub.pca_components, "variances": sub.pca_variances,
                            "residual_variance": sub.residual_variance}, digits_index.dim)
    np.testing.assert_allclose(got, want, atol=2e-6 * np.abs(want).max())
    np.testing.assert_allclose(np.sort(sub.pca_variances)[::-1], np.linalg.eigvalsh(want)[::-1].clip(0),
                               atol=2e-6 * np.abs(want).max())
    np.testing.assert_allclose(sub.mean, digits_index.train_data()[digits_index.labels == 3].mean(0), atol=1e-6)
    assert sub.attrs["class_shrinkage"] == lam


def low_rank(rng, dim, k, scale):
    q, _ = np.linalg.qr(rng.standard_normal((dim, k)))
    return {"mean": rng.standard_normal(dim).astype(np.float32), "components": q.T.astype(np.float32),
            "variances": (scale * rng.uniform(0.5, 3.0, k)).astype(np.float32), "residual_variance": 0.05 * scale}


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("shared", [0, 3])  # global directions the class basis already holds (dropped once)
def test_low_rank_mix_is_exact_in_the_span_of_both_bases(lam, shared):
    rng = np.random.default_rng(1)
    dim = 40
    cls, glob = low_rank(rng, dim, 6, 1.0), low_rank(rng, dim, 9, 2.0)
    if shared:  # the global basis spans 3 of the class's directions, rotated among its own
        q, _ = np.linalg.qr(np.concatenate([cls["components"][:shared].T, glob["components"][shared:].T], axis=1))
        glob["components"] = q.T.astype(np.float32)
    got = shrink_covariance(cls, glob, lam, dim, dense_limit=0)  # the path taken above DENSE_LIMIT
    want = (1 - lam) * dense_covariance(cls, dim) + lam * dense_covariance(glob, dim)
    np.testing.assert_allclose(dense_covariance(got, dim), want, atol=1e-5)
    assert got["components"].shape[0] == 15 - shared
    u = got["components"].astype(np.float64)
    np.testing.assert_allclose(u @ u.T, np.eye(len(u)), atol=1e-6)
    # the dense path gives the same matrix
    np.testing.assert_allclose(dense_covariance(shrink_covariance(cls, glob, lam, dim), dim), want, atol=1e-5)


def test_ledoit_wolf_intensity_matches_its_element_wise_definition():
    rng = np.random.default_rng(2)
    n, dim = 12, 5
    x = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim))
    target = low_rank(rng, dim, 3, 1.0)
    xc = x - x.mean(0)
    w = xc[:, :, None] * xc[:, None, :]  # w_kij
    s = n / (n - 1) * w.mean(0)
    var = n / (n - 1) ** 3 * ((w - w.mean(0)) ** 2).sum(0)
    want = np.clip(var.sum() / ((s - dense_covariance(target, dim)) ** 2).sum(), 0, 1)
    assert ledoit_wolf_intensity(x, target) == pytest.approx(want, rel=1e-6)  # float32 factors: orthonormal to 1e-7


def test_default_intensity_is_ledoit_wolf(digits_index):
    rows = digits_index.train_data()[digits_index.labels == 3]
    lam = ledoit_wolf_intensity(rows, global_stats(digits_index))
    assert 0 < lam < 1
    assert class_rows(digits_index, 3).attrs["class_shrinkage"] == pytest.approx(lam)


def reference_mask(cov, sigma, threshold):
    """float64 mask from the explicit covariance: G = Sigma (Sigma + sigma^2 I)^-1, R = G / diag(G), |R| >= thr max."""
    vals, vecs = np.linalg.eigh(cov)
    vals = vals.clip(0)
    g = (vecs * (vals / (vals + sigma**2))) @ vecs.T
    d = np.diag(g)
    r = np.abs(g / np.where(np.abs(d) < 1e-6, 1.0, d)[:, None])
    return r, threshold * r.max()


@pytest.mark.parametrize("sigma", [0.05, 5.0])
def test_masks_from_shrunk_covariance_match_a_float64_reference(digits_index, sigma):
    lam, thr = 0.3, 0.02
    sub = class_rows(digits_index, 3, shrinkage=lam)
    cov = (1 - lam) * class_cov(digits_index, 3) + lam * np.cov(digits_index.train_data().astype(np.float64),
                                                                 rowvar=False)
    r, cut = reference_mask(cov, sigma, thr)
    got = dense_mask(gain_mask_lists(sub.pca_components, sub.pca_variances, sub.residual_variance, sigma, thr),
                     digits_index.dim)
    decided = np.abs(r - cut) > 1e-4 * r.max()  # entries whose side of the cut float32 rounding cannot change
    assert decided.mean() > 0.99
    np.testing.assert_array_equal(got[decided], (r >= cut)[decided])


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("args, words", [
    (["--class-shrinkage", "0.5"], "give --class too"),
    (["--class", "3", "--denoiser", "empirical", "--class-shrinkage", "0.5"], "this run uses --denoiser empirical"),
    (["--class", "3", "--denoiser", "golden", "--golden-base", "empirical", "--class-shrinkage", "0.5"],
     "--golden-base pca-local only"),
    (["--class", "3", "--denoiser", "wiener", "--class-shrinkage", "1.5"], "class-shrinkage"),
])
def test_class_shrinkage_is_refused_where_it_does_not_apply(digits_index_path, tmp_path, args, words):
    res = invoke("sample", "--index", digits_index_path, "--out", tmp_path / "never", "--steps", "2", "-n", "2",
                 *args)
    assert res.exit_code == 2 and words in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "never").exists()


def test_class_shrinkage_reaches_the_wiener_denoiser(digits_index_path, digits_index, tmp_path):
    import h5py

    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.options import ContextOnly

    res = invoke("sample", "--index", digits_index_path, "--out", tmp_path / "o", "--class", "3", "--denoiser",
                 "wiener", "--class-shrinkage", "0.25", "--steps", "1", "-n", "2", "--solver", "euler", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["settings"]["class_shrinkage"] == 0.25 and out["class_shrinkage_used"] == {"3": 0.25}
    with h5py.File(tmp_path / "o" / "samples.h5") as f:
        samples, noise = f["samples"][...].reshape(2, -1), f["noise"][...].reshape(2, -1)
        assert json.loads(f.attrs["settings_json"])["class_shrinkage_used"] == {"3": 0.25}
    # one Euler step from sigma_max to 0 is one denoiser call: D(x_T, sigma_max)
    from diffcli.sample.run import sigmas_for
    from diffcli.sample.settings import resolve_settings

    sigmas = sigmas_for(resolve_settings({"steps": 1, "solver": "euler"}))
    den = build_denoiser("wiener", class_rows(digits_index, 3, shrinkage=0.25), ContextOnly())
    want = np.asarray(den(noise.reshape(2, 1, 8, 8), float(sigmas[0]))).reshape(2, -1)
    np.testing.assert_allclose(samples, want, atol=1e-5)
    assert not np.allclose(samples, np.asarray(build_denoiser("wiener", class_rows(digits_index, 3, shrinkage=0.0),
                                                              ContextOnly())(noise.reshape(2, 1, 8, 8),
                                                                             float(sigmas[0]))).reshape(2, -1),
                           atol=1e-3)


@pytest.mark.parametrize("denoiser, extra", [("wiener", {}), ("pca-local", {}), ("golden", {}),
                                             ("golden-sharded", {"golden_base": "pca-local"})])
def test_class_shrinkage_is_accepted_where_the_class_covariance_is_read(denoiser, extra):
    from diffcli.sample.settings import resolve_settings

    settings = resolve_settings({"class_": "3", "denoiser": denoiser, "class_shrinkage": 0.5, **extra})
    assert settings.run.class_shrinkage == 0.5


def test_above_the_dense_limit_the_stored_class_pca_is_read(digits_index_path, tmp_path, monkeypatch):
    import shutil

    import h5py

    from diffcli.index import open_index, store

    path = tmp_path / "digits.h5"
    shutil.copy(digits_index_path, path)
    with h5py.File(path, "r+") as f:  # a marked class PCA: the variances doubled
        f["class_stats/pca_variances"][3] = 2 * f["class_stats/pca_variances"][3]
        stored = {"components": f["class_stats/pca_components"][3], "variances": f["class_stats/pca_variances"][3],
                  "residual_variance": float(f["class_stats/residual_variance"][3])}
    index = open_index(path)
    monkeypatch.setattr(store, "STORED_CLASS_STATS_ABOVE", 0)
    sub = class_rows(index, 3, shrinkage=0.0)
    got = dense_covariance({"components": sub.pca_components, "variances": sub.pca_variances,
                            "residual_variance": sub.residual_variance}, index.dim)
    want = dense_covariance(stored, index.dim)
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
    monkeypatch.setattr(store, "STORED_CLASS_STATS_ABOVE", 4096)  # at D = 64 the rows are used
    mine = class_rows(index, 3, shrinkage=0.0)
    np.testing.assert_allclose(mine.pca_variances.max(), np.linalg.eigvalsh(class_cov(index, 3)).max(), rtol=1e-5)

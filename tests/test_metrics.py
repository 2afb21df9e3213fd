"""Metrics against hand-computed values and independent float64 formulas."""

import numpy as np
import pytest
from scipy import linalg, stats

from diffcli.metrics import distribution, fidelity, frechet, gaussian, memorisation


def test_mse_and_r2_by_hand():
    ref = np.array([[-1.0, 0.0, 1.0, 0.0]])  # [0,1] scale: 0, .5, 1, .5 -> var = 0.125
    out = np.array([[-1.0, 0.0, 0.0, 3.0]])  # [0,1] scale: 0, .5, .5, 1 (clamped from 2)
    res = fidelity.fidelity(out, ref, images=True)
    assert res["mse"] == pytest.approx((0.25 + 0.25) / 4)
    assert res["r2"] == pytest.approx(1 - 0.5 / (4 * 0.125))
    assert res["mse_scale"] == "[0,1] clamped"


def test_r2_is_one_for_identical_and_averages_per_sample():
    rng = np.random.default_rng(0)
    ref = rng.uniform(-1, 1, (5, 1, 4, 4))
    assert fidelity.fidelity(ref, ref, images=True)["r2"] == pytest.approx(1.0)
    out = ref + 0.1 * rng.standard_normal(ref.shape)
    a, b = fidelity.to_unit(out).reshape(5, -1), fidelity.to_unit(ref).reshape(5, -1)
    manual = np.mean([1 - np.sum((x - y) ** 2) / (16 * np.var(y)) for x, y in zip(a, b, strict=True)])
    assert fidelity.fidelity(out, ref, images=True)["r2"] == pytest.approx(manual)


def test_vectors_are_not_clamped():
    res = fidelity.fidelity(np.array([[3.0, 5.0]]), np.array([[1.0, 5.0]]), images=False)
    assert res["mse"] == pytest.approx(2.0)


def test_frechet_identical_sets_is_zero_and_matches_numpy_formula():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 6))
    b = 0.7 * rng.standard_normal((250, 6)) @ rng.standard_normal((6, 6)) + 0.3
    assert frechet.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet.frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)


def test_gaussian_kl_and_w2_closed_forms():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    s0, s1 = a @ a.T + np.eye(4), b @ b.T + 0.5 * np.eye(4)
    m0, m1 = rng.standard_normal(4), rng.standard_normal(4)
    inv1 = np.linalg.inv(s1)
    kl = 0.5 * (np.trace(inv1 @ s0) + (m1 - m0) @ inv1 @ (m1 - m0) - 4 + np.log(np.linalg.det(s1) / np.linalg.det(s0)))
    assert gaussian.kl_gaussians(m0, s0, m1, s1) == pytest.approx(kl, rel=1e-10)
    # 1-D: W2 = sqrt((m0-m1)^2 + (sd0-sd1)^2); KL by Monte-Carlo-free scipy entropy identity
    w = gaussian.w2_gaussians([1.0], [[4.0]], [3.0], [[9.0]])
    assert w == pytest.approx(np.sqrt(4.0 + 1.0))
    assert gaussian.kl_gaussians([0.0], [[1.0]], [0.0], [[1.0]]) == pytest.approx(0.0, abs=1e-12)


def test_kid_unbiased_on_known_case():
    # For x, y from the same law the unbiased MMD^2 has expectation exactly 0: average over many draws.
    rng = np.random.default_rng(3)
    vals = [frechet.kid(rng.standard_normal((20, 3)), rng.standard_normal((20, 3)))["kid"] for _ in range(400)]
    se = np.std(vals) / np.sqrt(len(vals))
    assert abs(np.mean(vals)) < 3 * se
    # and it equals the formula written out with explicit loops on a tiny case
    x, y = rng.standard_normal((4, 2)), rng.standard_normal((5, 2))
    k = lambda u, v: (u @ v / 2 + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(4) for j in range(4) if i != j) / 12
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(x[i], y[j]) for i in range(4) for j in range(5)) / 20
    assert frechet.kid(x, y)["kid"] == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    # a shifted law is clearly positive
    assert frechet.kid(rng.standard_normal((200, 3)), rng.standard_normal((200, 3)) + 1.0)["kid"] > 0.1


def test_memorisation_flags_copies_not_fresh_samples():
    rng = np.random.default_rng(4)
    train = rng.uniform(-1, 1, (500, 64)).astype(np.float32)
    copies = train[[3, 77, 400]] + 1e-3 * rng.standard_normal((3, 64)).astype(np.float32)
    fresh = rng.uniform(-1, 1, (5, 64)).astype(np.float32)
    res = memorisation.memorisation(np.concatenate([copies, fresh]), train)
    assert res["memorized"].tolist() == [True] * 3 + [False] * 5
    assert res["nearest"][:3].tolist() == [3, 77, 400]
    assert res["memorized_fraction"] == pytest.approx(3 / 8)
    exact = memorisation.memorisation(train[:2], train)
    assert exact["d1"].tolist() == [0.0, 0.0]


def test_nearest_two_matches_brute_force_across_chunks():
    rng = np.random.default_rng(5)
    q, x = rng.standard_normal((7, 5)), rng.standard_normal((123, 5))
    d1, d2, i1, i2 = memorisation.nearest_two(q, x, chunk=10)
    d = np.sqrt(((q[:, None] - x[None]) ** 2).sum(-1))
    order = np.argsort(d, axis=1)
    assert (i1 == order[:, 0]).all() and (i2 == order[:, 1]).all()
    np.testing.assert_allclose(d1, d[np.arange(7), order[:, 0]], rtol=1e-6)


def test_nearest_two_reads_stored_uint8_rows_as_data_space():
    from diffcli.index.store import to_data_space

    rng = np.random.default_rng(7)
    stored = rng.integers(0, 256, (50, 16), dtype=np.uint8)
    q = to_data_space(stored[[4, 9]]) + 0.01
    got = memorisation.nearest_two(q, stored, chunk=7)
    want = memorisation.nearest_two(q, to_data_space(stored))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def labelled_index():
    """A tiny image index of two classes: rows 0..5 class 0, rows 6..11 class 1 (random, well apart)."""
    import dataclasses

    from tests.helpers.indexes import make_index

    index = make_index(n=12, shape=(1, 4, 4), seed=8)
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, index.images.shape, dtype=np.uint8)
    return dataclasses.replace(index, images=images, labels=np.repeat([0, 1], 6))


def test_per_class_memorisation_searches_each_class_rows_only():
    from diffcli.metrics.evaluate import evaluate

    index = labelled_index()
    train = index.train_data()
    # class 0: two copies of class-0 rows; class 1: a copy of a class-0 row (not a copy within class 1) and a copy
    # of a class-1 row
    x = train[[0, 3, 1, 8]] + 1e-4
    labels = np.array([0, 0, 1, 1])
    s = {"samples": x.reshape(4, 1, 4, 4), "ids": np.arange(4), "settings": {"seed": 0}, "labels": labels}
    res = evaluate(s, index=index)
    assert res["memorized_fraction"] == 1.0  # against every row, all four copy something
    assert res["memorized_fraction_per_class"] == {"0": 1.0, "1": 0.5}
    # the same by brute force in float64 within each class
    for c in (0, 1):
        rows = train[index.labels == c].astype(np.float64)
        d = np.sort(np.sqrt(((x[labels == c, None].astype(np.float64) - rows[None]) ** 2).sum(-1)), axis=1)
        assert np.mean(d[:, 0] / d[:, 1] < memorisation.MEMORISED_RATIO) == res["memorized_fraction_per_class"][str(c)]
    # an unlabelled sample file has no per-class figure; a labelled one against an unlabelled index is refused
    assert "memorized_fraction_per_class" not in evaluate({**s, "labels": None}, index=index)
    import dataclasses

    from diffcli.errors import DiffcliError

    with pytest.raises(DiffcliError, match="index has no labels"):
        evaluate(s, index=dataclasses.replace(index, labels=None))


def test_precision_recall_coverage():
    rng = np.random.default_rng(6)
    real = rng.standard_normal((200, 2))
    same = frechet.precision_recall_coverage(real, rng.standard_normal((200, 2)))
    assert same["precision"] > 0.8 and same["recall"] > 0.8 and same["coverage"] > 0.8
    collapsed = frechet.precision_recall_coverage(real, 0.05 * rng.standard_normal((200, 2)))
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.3 and collapsed["coverage"] < 0.3
    far = frechet.precision_recall_coverage(real, rng.standard_normal((200, 2)) + 10)
    assert far["precision"] == 0.0 and far["coverage"] == 0.0


def test_sliced_w2_on_a_shift_and_1d_quantiles():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4000, 3))
    # a shift by v: every 1-D projection shifts by <theta, v>; E<theta, v>^2 = |v|^2 / d
    v = np.array([1.0, -2.0, 0.5])
    sw = distribution.sliced_w2(x, x + v, projections=2000)
    assert sw == pytest.approx(np.linalg.norm(v) / np.sqrt(3), rel=0.05)
    a, b = rng.standard_normal(3000), 2 * rng.standard_normal(2000) + 1
    assert distribution.quantile_w2_1d(a, b) == pytest.approx(1.0 + 1.0, rel=0.1)  # (m)^2 + (s1 - s2)^2
    assert stats.wasserstein_distance(a, a) == distribution.quantile_w2_1d(a, a) == 0.0


def test_mmd_rbf_matches_explicit_sum():
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((6, 2)), rng.standard_normal((5, 2)) + 0.5
    h = 1.3
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * h * h))
    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(a, b) for a in x for b in y) / 30
    assert distribution.mmd_rbf(x, y, bandwidth=h)["mmd2"] == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_mode_weight_error():
    gmm = {"means": np.array([[-5.0, 0.0], [5.0, 0.0]]), "stds": np.array([0.5, 0.5]), "weights": np.array([0.5, 0.5])}
    rng = np.random.default_rng(9)
    x = np.concatenate([gmm["means"][0] + 0.5 * rng.standard_normal((30, 2)),
                        gmm["means"][1] + 0.5 * rng.standard_normal((70, 2))])
    res = distribution.mode_weight_error(x, gmm)
    assert res["mode_weight_tv"] == pytest.approx(0.2)
    assert res["mode_weights"].tolist() == pytest.approx([0.3, 0.7])


def test_pca_whitened_features_have_unit_variance():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((2000, 5)) * np.array([3.0, 2.0, 1.0, 0.5, 0.1])
    mean = x.mean(0)
    w, v = np.linalg.eigh(np.cov(x, rowvar=False))
    comps, var = v[:, ::-1].T, w[::-1]
    f = frechet.pca_whitened_features(x, mean, comps, var, k=3)
    np.testing.assert_allclose(np.var(f, axis=0, ddof=1), 1.0, rtol=1e-8)

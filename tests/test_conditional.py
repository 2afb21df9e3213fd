"""Conditional sampling (`sample --class`): the class index, every analytical denoiser, the forms of --class."""

import dataclasses
import json
import os

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from diffcli.cli import app
from diffcli.index.stats import pca_stats
from diffcli.index.store import class_rows
from diffcli.sample.classes import parse_classes

runner = CliRunner()
FAST = ["--steps", "2", "-n", "2", "--json"]
DENOISERS = ["empirical", "empirical-sharded", "wiener", "pca-local", "golden", "golden-sharded", "nearest", "els",
             "ls"]
MEMORISING = {"empirical", "empirical-sharded", "golden", "golden-sharded", "nearest"}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def sample(index_path, out, *args):
    res = invoke("sample", "--index", index_path, "--out", out, *args)
    assert res.exit_code == 0, res.output
    with h5py.File(os.path.join(out, "samples.h5")) as f:
        return f["samples"][...].reshape(len(f["ids"]), -1), f["labels"][...], f["ids"][...]


def nearest_labels(index, samples):
    train = index.train_data().astype(np.float64)
    d = ((samples[:, None, :].astype(np.float64) - train[None]) ** 2).sum(-1)
    return index.labels[d.argmin(1)]


def test_class_index_holds_the_class_rows_and_their_own_statistics(digits_index):
    sub = class_rows(digits_index, 3, shrinkage=0.0)  # no shrinkage toward the global covariance
    rows = digits_index.labels == 3
    np.testing.assert_array_equal(sub.images, digits_index.images[rows])
    np.testing.assert_array_equal(sub.proxy, digits_index.proxy[rows])
    assert sub.n == rows.sum() == sub.attrs["n"] and np.all(sub.labels == 3) and sub.attrs["class"] == 3
    own = pca_stats(digits_index.train_data()[rows])
    np.testing.assert_allclose(sub.mean, own["mean"], atol=1e-6)
    np.testing.assert_allclose(sub.pca_variances, own["variances"], rtol=1e-4, atol=1e-6)
    c = sub.coarse  # the coarse lists: a permutation of the class's rows, offsets rising to N_c
    assert sorted(c["order"].tolist()) == list(range(sub.n)) and c["offsets"][-1] == sub.n
    assert len(c["centroids"]) == len(c["offsets"]) - 1


def test_conditional_posterior_is_the_posterior_over_the_class_rows(digits_index):
    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.options import StreamOptions

    den = build_denoiser("empirical", class_rows(digits_index, 3), StreamOptions())
    ys = digits_index.train_data()[digits_index.labels == 3].astype(np.float64)
    x = np.random.default_rng(0).standard_normal((4, 64))
    for sigma in (0.3, 1.0, 5.0):
        logits = -((x[:, None] - ys[None]) ** 2).sum(-1) / (2 * sigma**2)
        w = np.exp(logits - logits.max(1, keepdims=True))
        want = (w / w.sum(1, keepdims=True)) @ ys  # float64 brute force over the class's rows
        got = np.asarray(den(x.astype(np.float32).reshape(4, 1, 8, 8), sigma)).reshape(4, -1)
        np.testing.assert_allclose(got, want, atol=2e-4)


def test_golden_defaults_follow_the_class_size(digits_index):
    from diffcli.denoisers.golden.plan import plan_and_rows
    from diffcli.denoisers.options import GoldenOptions

    sub = class_rows(digits_index, 3)
    plan, _ = plan_and_rows(sub, GoldenOptions())
    assert (plan.k_min, plan.k_max) == (round(sub.n / 20), round(sub.n / 10))


@pytest.mark.parametrize("name", DENOISERS)
def test_every_analytical_denoiser_honours_class(name, digits_index_path, digits_index, tmp_path):
    from diffcli.denoisers import build_denoiser
    from diffcli.sample.batches import generate
    from diffcli.sample.settings import resolve_settings
    from diffcli.schedules import get_schedule
    from diffcli.solvers import get_solver

    samples, labels, _ = sample(digits_index_path, tmp_path / "o", "--denoiser", name, "--class", "3", *FAST)
    assert labels.tolist() == [3, 3]
    # the same run by hand over the class-only index
    settings = resolve_settings({"denoiser": name})
    sigmas = get_schedule("edm", 2)
    opts = dataclasses.replace(settings.denoiser, sigmas=sigmas, seed=0)
    den = build_denoiser(name, class_rows(digits_index, 3), opts)
    want = generate(denoiser=den, solver=get_solver("heun"), sigmas=sigmas, shape=(1, 8, 8), ids=np.arange(2),
                    seed=0, batch_size=64, solver_options=settings.solver.flag_values()).samples
    np.testing.assert_allclose(samples, want.reshape(2, -1), atol=1e-5)
    if name in MEMORISING:  # two steps end at sigma 0.002: each sample is (nearly) a row of class 3
        assert nearest_labels(digits_index, samples).tolist() == [3, 3]


def test_several_classes_cycle_and_shards_merge(digits_index_path, digits_index, tmp_path):
    args = ["--denoiser", "nearest", "--class", "3,5", "--steps", "2", "-n", "5"]
    samples, labels, _ = sample(digits_index_path, str(tmp_path / "all"), *args)
    assert labels.tolist() == [3, 5, 3, 5, 3]
    assert nearest_labels(digits_index, samples).tolist() == [3, 5, 3, 5, 3]
    for i in range(2):
        sample(digits_index_path, str(tmp_path / f"s{i}"), *args, "--shard", f"{i}/2")
    res = invoke("merge", tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "m")
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "m" / "samples.h5") as f:
        assert f["labels"][...].tolist() == [3, 5, 3, 5, 3]
        np.testing.assert_array_equal(f["samples"][...].reshape(5, -1), samples)
    assert (tmp_path / "m" / "grid.png").exists()


def test_all_is_a_balanced_sweep(digits_index_path, tmp_path):
    _, labels, _ = sample(digits_index_path, str(tmp_path / "o"), "--denoiser", "nearest", "--class", "all",
                          "--steps", "2", "-n", "20")
    assert np.bincount(labels).tolist() == [2] * 10


def test_class_names_are_matched(digits_index):
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    named = dataclasses.replace(digits_index, attrs={**digits_index.attrs, "classes": names})
    assert parse_classes("three", named) == [3]
    assert parse_classes("Five,1", named) == [5, 1]


@pytest.mark.parametrize("which, spec, words", [("digits", "11", "unknown class '11'"),
                                                 ("digits", "3,x", "unknown class 'x'"),
                                                 ("shapes", "1", "has no labels")])
def test_bad_class_is_one_sentence_and_no_folder(which, spec, words, digits_index_path, shapes_index_path, tmp_path):
    index = digits_index_path if which == "digits" else shapes_index_path
    out = tmp_path / "never"
    res = invoke("sample", "--index", index, "--out", out, "--class", spec, "--steps", "2", "-n", "2")
    assert res.exit_code == 2 and words in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not out.exists()


@pytest.mark.parametrize("denoiser", ["empirical", "wiener"])  # a memorising one; a generalising one (shrunk)
def test_class_3_samples_look_like_3s(denoiser, digits_index_path, digits_index, tmp_path):
    samples, labels, _ = sample(digits_index_path, str(tmp_path / "o"), "--class", "3", "--steps", "8", "-n", "8",
                                "--solver", "euler", "--denoiser", denoiser)
    train, y = digits_index.train_data(), digits_index.labels  # a nearest-centroid classifier of the training split
    centroids = np.stack([train[y == k].mean(0) for k in range(10)])
    predicted = ((samples[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert predicted.tolist() == [3] * 8 and labels.tolist() == [3] * 8


def test_json_records_the_class(digits_index_path, tmp_path):
    res = invoke("sample", "--index", digits_index_path, "--out", tmp_path / "o", "--class", "7", "--denoiser",
                 "nearest", *FAST)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["settings"]["class_"] == "7"
    # peak memory per device (or of the process where the backend keeps no count), positive
    assert out["peak_memory"] and all(m["peak_bytes"] > 0 for m in out["peak_memory"])
    assert {m["measure"] for m in out["peak_memory"]} <= {"device peak_bytes_in_use", "process peak RSS"}

"""Datasets: determinism, ranges, splits, spec parsing and errors."""

import numpy as np
import pytest

from diffcli.data import load_dataset, parse_spec
from diffcli.data.base import heldout_split
from diffcli.data.shapes import render
from diffcli.errors import UsageError


def test_digits_are_the_real_bundled_images():
    ds = load_dataset("digits")
    assert ds.train.dtype == np.uint8 and ds.train.shape[1:] == (1, 8, 8)
    assert len(ds.train) + len(ds.heldout) == 1797
    assert ds.train.max() == 255 and ds.train.min() == 0
    assert set(np.unique(ds.labels)) == set(range(10))


def test_split_is_deterministic_disjoint_and_complete():
    a_train, a_held = heldout_split(1000, "x")
    b_train, b_held = heldout_split(1000, "x")
    assert np.array_equal(a_train, b_train) and np.array_equal(a_held, b_held)
    assert len(np.intersect1d(a_train, a_held)) == 0 and len(a_train) + len(a_held) == 1000
    assert not np.array_equal(heldout_split(1000, "y")[1], a_held)


def test_shapes_prefix_stable_and_seeded():
    small, large = render(10, 16, seed=3), render(1500, 16, seed=3)
    assert np.array_equal(small, large[:10])
    assert not np.array_equal(render(10, 16, seed=4), small)
    assert small.shape == (10, 3, 16, 16) and small.dtype == np.uint8
    # Every image has a shape drawn on its background: at least two distinct colours.
    assert all(len(np.unique(im.reshape(3, -1), axis=1).T) >= 2 for im in small)


def test_gmm_stores_its_parameters_and_matches_them():
    ds = load_dataset("gmm:dim=8,components=3,radius=4,std=0.2,n=3000")
    means = ds.extra["gmm/means"]
    assert means.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 4.0, rtol=1e-5)
    # Each training point is within a few stds of its own component mean.
    d = np.linalg.norm(ds.train[:, None] - means[None], axis=2).min(axis=1)
    assert np.quantile(d, 0.99) < 0.2 * (np.sqrt(8) + 3)


def test_folder_reads_classes_and_resizes(tmp_path):
    from PIL import Image

    for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for k in range(3):
            Image.new("RGB", (40, 30), colour).save(tmp_path / cls / f"{k}.png")
    ds = load_dataset("folder:res=16", root=str(tmp_path))
    both = np.concatenate([ds.train, ds.heldout])
    assert both.shape == (6, 3, 16, 16)
    labels = np.concatenate([ds.labels, ds.heldout_labels])
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert ds.info["classes"] == ["cat", "dog"]


@pytest.mark.parametrize(
    "spec, fragment",
    [("nope", "unknown dataset"), ("shapes:res=33", "res=33"), ("shapes:bogus=1", "no parameter 'bogus'"),
     ("gmm:dim=x", "not a whole number"), ("shapes:res", "malformed")],
)
def test_bad_specs_are_usage_errors(spec, fragment):
    with pytest.raises(UsageError, match=fragment):
        load_dataset(spec)


def test_parse_spec():
    assert parse_spec("shapes:res=32, n=10") == ("shapes", {"res": "32", "n": "10"})
    assert parse_spec("digits") == ("digits", {})


def test_shapes_ranges_classes_and_stream_match_the_whole():
    from diffcli.data import stream_dataset
    from diffcli.data.shapes import background_labels, render_range

    whole = render(2100, 16, seed=2)
    part, _ = render_range(1000, 2050, 16, seed=2)  # starts mid-chunk, ends mid-chunk
    np.testing.assert_array_equal(part, whole[1000:2050])
    plain, labelled = load_dataset("shapes:res=16,n=300"), load_dataset("shapes:res=16,n=300,classes=27")
    np.testing.assert_array_equal(plain.train, labelled.train)  # labels never change the images
    assert plain.labels is None and labelled.labels.max() < 27 and len(np.unique(labelled.labels)) > 15
    assert len(labelled.info["classes"]) == 27
    bg = np.array([[0, 0, 0], [255, 255, 255], [85, 86, 170], [128, 0, 255]])
    np.testing.assert_array_equal(background_labels(bg, 27), [0, 26, 0 * 9 + 1 * 3 + 1, 1 * 9 + 0 + 2])
    st = stream_dataset("shapes:res=16,n=300,classes=27")
    chunks = list(st.chunks(64))
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), labelled.train)
    np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]), labelled.labels)
    held, held_labels = st.heldout_rows()
    np.testing.assert_array_equal(held, labelled.heldout)
    np.testing.assert_array_equal(held_labels, labelled.heldout_labels)
    fresh = stream_dataset("shapes:res=16,n=300,classes=27").heldout_rows()  # before any pass: rendered alone
    np.testing.assert_array_equal(fresh[0], labelled.heldout)
    assert st.spec == labelled.spec and st.n == len(labelled.train)
    with pytest.raises(UsageError, match="classes=10 must be a cube"):
        load_dataset("shapes:res=16,n=30,classes=10")

"""Importers read tiny files written here in each published format: IDX gz, CIFAR binary, npz, EDM, folders."""

import filecmp
import os
import tarfile

import numpy as np
import pytest

from diffcli.data import load_dataset
from diffcli.errors import DiffcliError
from tests.helpers.importer_files import (
    make_cifar,
    make_class_folders,
    make_edm,
    make_imagenet_npz,
    make_mnist,
    write_idx_gz,
)


@pytest.fixture(autouse=True)
def private_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFCLI_DATA", str(tmp_path / "data"))


def test_mnist_idx_gz_pixels_labels_and_official_split(tmp_path):
    arrays = make_mnist(tmp_path / "data" / "mnist")
    ds = load_dataset("mnist")  # default root $DIFFCLI_DATA/mnist
    np.testing.assert_array_equal(ds.train[:, 0], arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(ds.labels, arrays["train-labels-idx1-ubyte.gz"])
    np.testing.assert_array_equal(ds.heldout[:, 0], arrays["t10k-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(ds.heldout_labels, arrays["t10k-labels-idx1-ubyte.gz"])
    assert ds.kind == "image" and ds.train.dtype == np.uint8 and ds.info["classes"] == [str(d) for d in range(10)]
    small = load_dataset("mnist", limit=4)
    np.testing.assert_array_equal(small.train[:, 0], arrays["train-images-idx3-ubyte.gz"][:4])


def test_fashion_class_filter_and_explicit_root(tmp_path):
    arrays = make_mnist(tmp_path / "fm", seed=4)
    k = int(np.bincount(arrays["train-labels-idx1-ubyte.gz"]).argmax())
    ds = load_dataset(f"fashion-mnist:class={k}", root=str(tmp_path / "fm"))
    keep = arrays["train-labels-idx1-ubyte.gz"] == k
    keep_test = arrays["t10k-labels-idx1-ubyte.gz"] == k
    want = np.concatenate([arrays["train-images-idx3-ubyte.gz"][keep], arrays["t10k-images-idx3-ubyte.gz"][keep_test]])
    got = np.concatenate([ds.train[:, 0], ds.heldout[:, 0]])
    assert sorted(a.tobytes() for a in got) == sorted(a.tobytes() for a in want)
    assert len(ds.train) >= keep.sum() - 1 and len(ds.heldout) >= 1
    assert set(ds.labels.tolist()) == {k} and ds.spec == f"fashion-mnist:class={k}"
    with pytest.raises(DiffcliError, match="class=12 is out of range"):
        load_dataset("fashion-mnist:class=12", root=str(tmp_path / "fm"))


def test_idx_bad_magic_and_truncation(tmp_path):
    root = tmp_path / "data" / "mnist"
    arrays = make_mnist(root)
    write_idx_gz(root / "t10k-labels-idx1-ubyte.gz", arrays["t10k-labels-idx1-ubyte.gz"][:3])
    with pytest.raises(DiffcliError, match="different counts"):
        load_dataset("mnist")
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DiffcliError, match="truncated or not a gzip file"):
        load_dataset("mnist")


def test_truncated_archive_loses_nothing_already_built(tmp_path):
    from diffcli.index import open_index
    from diffcli.index.build import build_index

    root = tmp_path / "data" / "mnist"
    make_mnist(root)
    index = tmp_path / "idx" / "mnist.h5"
    build_index(load_dataset("mnist"), index, coarse=False)
    before = index.read_bytes()
    path = root / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DiffcliError, match="truncated"):
        build_index(load_dataset("mnist"), index, coarse=False)
    assert index.read_bytes() == before and os.listdir(index.parent) == ["mnist.h5"]
    assert open_index(index).n == 12


def test_cifar_folder_and_archive_agree(tmp_path):
    batches = make_cifar(tmp_path / "folder")
    make_cifar(tmp_path / "archive", archive=True)
    a = load_dataset("cifar10", root=str(tmp_path / "folder"))
    b = load_dataset("cifar10", root=str(tmp_path / "archive"))
    train = np.concatenate([batches[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
    labels = np.concatenate([batches[f"data_batch_{i}.bin"][1] for i in range(1, 6)])
    np.testing.assert_array_equal(a.train, train)
    np.testing.assert_array_equal(a.labels, labels)
    np.testing.assert_array_equal(a.heldout, batches["test_batch.bin"][0])
    for field in ("train", "heldout", "labels", "heldout_labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.info["classes"][0] == "airplane" and a.train.shape[1:] == (3, 32, 32)
    assert len(load_dataset("cifar10", root=str(tmp_path / "archive"), limit=4).train) == 4


def test_cifar_damage_is_one_sentence(tmp_path):
    make_cifar(tmp_path / "f")
    batch = tmp_path / "f" / "cifar-10-batches-bin" / "data_batch_2.bin"
    batch.write_bytes(batch.read_bytes()[:-10])
    with pytest.raises(DiffcliError, match="whole number of 3073-byte records"):
        load_dataset("cifar10", root=str(tmp_path / "f"))
    make_cifar(tmp_path / "a", archive=True)
    arc = tmp_path / "a" / "cifar-10-binary.tar.gz"
    arc.write_bytes(arc.read_bytes()[:200])
    with pytest.raises(DiffcliError, match="truncated or damaged"):
        load_dataset("cifar10", root=str(tmp_path / "a"))
    # A tar without the expected members is not the CIFAR archive.
    with tarfile.open(tmp_path / "a" / "cifar-10-binary.tar.gz", "w:gz"):
        pass
    with pytest.raises(DiffcliError, match="has no member"):
        load_dataset("cifar10", root=str(tmp_path / "a"))


def test_imagenet_npz_batches_labels_zero_based(tmp_path):
    batches, val = make_imagenet_npz(tmp_path / "in")
    ds = load_dataset("imagenet64", root=str(tmp_path / "in"))
    np.testing.assert_array_equal(ds.train.reshape(len(ds.train), -1), np.concatenate([b[0] for b in batches]))
    np.testing.assert_array_equal(ds.labels, np.concatenate([b[1] for b in batches]) - 1)
    np.testing.assert_array_equal(ds.heldout.reshape(2, -1), val[0])
    assert ds.train.shape[1:] == (3, 64, 64)
    # Channel planes: the first 4096 bytes of a row are the red plane.
    np.testing.assert_array_equal(ds.train[0, 0].reshape(-1), batches[0][0][0, :4096])
    assert len(load_dataset("imagenet64", root=str(tmp_path / "in"), limit=5).train) == 5


def test_imagenet_npz_with_pickled_objects_is_refused(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    np.savez(root / "train_data_batch_1.npz", data=np.array([{"evil": 1}], dtype=object), labels=np.array([1]))
    with pytest.raises(DiffcliError, match="pickled objects"):
        load_dataset("imagenet64", root=str(root))


@pytest.mark.parametrize("as_zip", [False, True])
def test_edm_dataset_folder_and_zip(tmp_path, as_zip):
    images, labels = make_edm(tmp_path / "edm", n=6, res=8, as_zip=as_zip)
    ds = load_dataset("imagenet64:res=8", root=str(tmp_path / "edm"))
    all_images = np.concatenate([ds.train, ds.heldout])
    all_labels = np.concatenate([ds.labels, ds.heldout_labels])
    # Same pixels (8 px sources at res 8: no resampling) and labels, whatever the split put where.
    got = {(img.tobytes(), lab) for img, lab in zip(all_images, all_labels, strict=True)}
    want = {(img.transpose(2, 0, 1).tobytes(), lab) for img, lab in zip(images, labels, strict=True)}
    assert got == want and ds.info["format"] == "edm"


def test_afhq_classes_and_val_split(tmp_path):
    make_class_folders(tmp_path / "data" / "afhq")
    ds = load_dataset("afhq:res=8")
    assert ds.info["classes"] == ["cat", "dog", "wild"]
    assert len(ds.train) == 9 and len(ds.heldout) == 6
    np.testing.assert_array_equal(ds.labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(ds.heldout_labels, [0, 0, 1, 1, 2, 2])
    dogs = load_dataset("afhq:res=8,class=1")
    assert len(dogs.train) == 3 and set(dogs.labels.tolist()) == {1}


def test_celebahq_flat_folder(tmp_path):
    make_class_folders(tmp_path / "tmp")
    flat = tmp_path / "data" / "celebahq"
    flat.mkdir(parents=True)
    for i, p in enumerate(sorted((tmp_path / "tmp" / "train").rglob("*.png"))):
        p.rename(flat / f"{i:05d}.png")
    ds = load_dataset("celebahq:res=8")
    assert ds.labels is None and len(ds.train) + len(ds.heldout) == 9


@pytest.mark.parametrize("name", ["afhq", "celebahq", "cifar10", "mnist", "fashion-mnist", "imagenet64"])
def test_unprepared_dataset_names_where_and_manifest(tmp_path, name):
    with pytest.raises(DiffcliError) as exc:
        load_dataset(name)
    msg = str(exc.value)
    assert str(tmp_path / "data" / name) in msg and f"data_manifests/{name}.toml" in msg
    assert "\n" not in msg and msg.count(". ") == 0


def test_sample_without_prepared_afhq_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from diffcli.cli import app

    res = CliRunner().invoke(app, ["sample", "--dataset", "afhq", "-o", str(tmp_path / "o"), "-n", "2"])
    assert res.exit_code == 1
    errors = [ln for ln in res.output.strip().splitlines() if ln.startswith("diffcli: error:")]
    assert len(errors) == 1 and "dataset 'afhq' is not prepared" in errors[0] and "afhq.toml" in errors[0]
    assert res.output.strip().endswith(errors[0]) and "Traceback" not in res.output


def test_packaged_manifests_equal_repository_copies():
    from diffcli.data import DATASETS
    from diffcli.data.manifests import PACKAGED, REPO, load_manifest, manifest_names

    names = sorted(f for f in os.listdir(REPO) if f.endswith(".toml"))
    assert names == sorted(f for f in os.listdir(PACKAGED) if f.endswith(".toml"))
    match, mismatch, errors = filecmp.cmpfiles(REPO, PACKAGED, names, shallow=False)
    assert not mismatch and not errors
    for name in manifest_names():
        m = load_manifest(name)
        assert name in DATASETS and m.layouts and m.licence and m.how_to_get.strip()
        for lay in m.layouts:
            for e in lay.entries:
                assert e.md5 is None or (len(e.md5) == 32 and int(e.md5, 16) >= 0)


def streamed(ds):
    """(train rows, labels, held-out rows, held-out labels) of a dataset read through its chunks."""
    parts = list(ds.chunks(2))
    held, held_labels = ds.heldout_rows()
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), held, held_labels)


@pytest.mark.parametrize("archive", [False, True])
@pytest.mark.parametrize("spec, limit", [("cifar10", None), ("cifar10", 7), ("cifar10:class=3", None)])
def test_cifar_stream_equals_load(tmp_path, archive, spec, limit):
    from diffcli.data import stream_dataset
    from diffcli.data.base import StreamedDataset

    make_cifar(tmp_path / "c", per_batch=6, archive=archive)
    ds = load_dataset(spec, root=str(tmp_path / "c"), limit=limit)
    st = stream_dataset(spec, root=str(tmp_path / "c"), limit=limit)
    assert isinstance(st, StreamedDataset) or len(ds.heldout) == 0
    got = streamed(st)
    for a, b in zip(got, (ds.train, ds.labels, ds.heldout, ds.heldout_labels), strict=True):
        np.testing.assert_array_equal(a, b)
    assert st.n == len(ds.train) and st.spec == ds.spec and st.info == ds.info


@pytest.mark.parametrize("spec, limit", [("imagenet64", None), ("imagenet64", 5), ("imagenet64:class=0", None)])
def test_imagenet_stream_equals_load(tmp_path, spec, limit):
    from diffcli.data import stream_dataset
    from diffcli.data.base import StreamedDataset

    make_imagenet_npz(tmp_path / "in", sizes=(5, 4), n_val=3)
    if "class" in spec:  # class 0 (label 1) in both splits
        for p in sorted((tmp_path / "in").rglob("*.npz")):
            with np.load(p) as z:
                data, labels = z["data"], z["labels"].copy()
            labels[::2] = 1
            np.savez_compressed(p, data=data, labels=labels)  # compressed members stream as well
    ds = load_dataset(spec, root=str(tmp_path / "in"), limit=limit)
    st = stream_dataset(spec, root=str(tmp_path / "in"), limit=limit)
    assert isinstance(st, StreamedDataset)
    got = streamed(st)
    for a, b in zip(got, (ds.train, ds.labels, ds.heldout, ds.heldout_labels), strict=True):
        np.testing.assert_array_equal(a, b)
    assert st.n == len(ds.train) and st.spec == ds.spec


def test_imagenet_heldout_cap_and_cli_build(tmp_path, monkeypatch):
    """The held-out subset of a large validation set is the official one; `index-build --dataset imagenet64
    --root DIR` streams the batches into an index that keeps the labels."""
    from typer.testing import CliRunner

    from diffcli.cli import app
    from diffcli.data import stream_dataset
    from diffcli.data.importers import imagenet64
    from diffcli.index import open_index

    make_imagenet_npz(tmp_path / "in", sizes=(6, 5), n_val=7)
    monkeypatch.setattr(imagenet64, "HELDOUT_CAP", 4)  # 4 of the 7 validation rows
    full = load_dataset("imagenet64", root=str(tmp_path / "in"))
    assert len(full.heldout) == 4
    held, held_labels = stream_dataset("imagenet64", root=str(tmp_path / "in")).heldout_rows()
    np.testing.assert_array_equal(held, full.heldout)
    np.testing.assert_array_equal(held_labels, full.heldout_labels)
    out = tmp_path / "i.h5"
    res = CliRunner().invoke(app, ["index-build", "--dataset", "imagenet64", "--root", str(tmp_path / "in"),
                                   "--out", str(out), "--no-coarse", "--json"])
    assert res.exit_code == 0, res.output
    idx = open_index(out)
    np.testing.assert_array_equal(idx.labels, full.labels)
    np.testing.assert_array_equal(idx.images, full.train)
    np.testing.assert_array_equal(idx.heldout, full.heldout)
    assert idx.n == 11

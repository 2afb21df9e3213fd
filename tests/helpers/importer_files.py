"""Writers of tiny files in each real dataset's published format (shared by the importer and datasets CLI tests)."""

import gzip
import io
import json
import os
import struct
import tarfile
import zipfile

import numpy as np


def write_idx_gz(path, array: np.ndarray) -> None:
    """IDX: 0x00 0x00 0x08 (uint8) ndim, big-endian uint32 dims, raw bytes; gzip-compressed."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def make_mnist(root, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    os.makedirs(root, exist_ok=True)
    for name, a in arrays.items():
        write_idx_gz(os.path.join(root, name), a)
    return arrays


def cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    raw = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1).tobytes()
    return images, labels, raw


def make_cifar(root, per_batch=3, archive=False):
    """Five train batches and a test batch; extracted folder or cifar-10-binary.tar.gz."""
    os.makedirs(root, exist_ok=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    batches = {name: cifar_batch(per_batch, k) for k, name in enumerate(names)}
    if archive:
        with tarfile.open(os.path.join(root, "cifar-10-binary.tar.gz"), "w:gz") as tar:
            for name, (_, _, raw) in batches.items():
                info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    else:
        os.makedirs(os.path.join(root, "cifar-10-batches-bin"), exist_ok=True)
        for name, (_, _, raw) in batches.items():
            with open(os.path.join(root, "cifar-10-batches-bin", name), "wb") as f:
                f.write(raw)
    return batches


def make_imagenet_npz(root, sizes=(4, 3), n_val=2):
    """Downsampled-ImageNet npz batches: data uint8 [n, 12288] (R, G, B planes), labels 1..1000."""
    rng = np.random.default_rng(1)
    sub = os.path.join(root, "Imagenet64_train_npz")
    os.makedirs(sub, exist_ok=True)
    out = []
    for k, n in enumerate(sizes, start=1):
        data, labels = rng.integers(0, 256, (n, 12288), dtype=np.uint8), rng.integers(1, 1001, n)
        np.savez(os.path.join(sub, f"train_data_batch_{k}.npz"), data=data, labels=labels)
        out.append((data, labels))
    val = rng.integers(0, 256, (n_val, 12288), dtype=np.uint8), rng.integers(1, 1001, n_val)
    np.savez(os.path.join(root, "val_data.npz"), data=val[0], labels=val[1])
    return out, val


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def make_edm(root, n=5, res=8, as_zip=False):
    """EDM dataset_tool layout: 00000/img00000000.png ... plus dataset.json {"labels": [[name, label], ...]}."""
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (n, res, res, 3), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 1000, n)]
    files = {f"00000/img{i:08d}.png": png_bytes(images[i]) for i in range(n)}
    meta = json.dumps({"labels": [[name, labels[i]] for i, name in enumerate(files)]}).encode()
    os.makedirs(root, exist_ok=True)
    if as_zip:
        with zipfile.ZipFile(os.path.join(root, "imagenet-64x64.zip"), "w") as z:
            z.writestr("dataset.json", meta)
            for name, data in files.items():
                z.writestr(name, data)
    else:
        for name, data in {**files, "dataset.json": meta}.items():
            os.makedirs(os.path.dirname(os.path.join(root, name)) or root, exist_ok=True)
            with open(os.path.join(root, name), "wb") as f:
                f.write(data)
    return images, labels


def make_class_folders(root, classes=("cat", "dog", "wild"), per_class=(3, 2), res=8):
    """train/<class>/*.png and val/<class>/*.png (AFHQ / StarGAN v2 layout)."""
    rng = np.random.default_rng(3)
    for split, n in zip(("train", "val"), per_class, strict=True):
        for c in classes:
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
            for i in range(n):
                with open(os.path.join(root, split, c, f"{i:03d}.png"), "wb") as f:
                    f.write(png_bytes(rng.integers(0, 256, (res, res, 3), dtype=np.uint8)))

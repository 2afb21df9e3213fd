"""Datasets by name, addressed as NAME or NAME:key=value,... (see data/spec.py).

Each loader is `load(params: dict[str, str], *, root: str | None, limit: int | None) -> Dataset`; datasets that
can be large also have a streaming reader (STREAMS) returning a StreamedDataset with the same rows.
"""

from diffcli.data.base import Dataset, StreamedDataset
from diffcli.data.spec import parse_spec
from diffcli.registry import resolve

DATASETS = {
    "digits": "diffcli.data.digits:load",
    "shapes": "diffcli.data.shapes:load",
    "gmm": "diffcli.data.gmm:load",
    "folder": "diffcli.data.folder:load",
    # Real datasets in their published formats; layouts in data_manifests/<name>.toml.
    "mnist": "diffcli.data.importers.mnist:load_mnist",
    "fashion-mnist": "diffcli.data.importers.mnist:load_fashion",
    "cifar10": "diffcli.data.importers.cifar:load",
    "celebahq": "diffcli.data.importers.folders:load_celebahq",
    "afhq": "diffcli.data.importers.folders:load_afhq",
    "imagenet64": "diffcli.data.importers.imagenet64:load",
}

STREAMS = {
    "shapes": "diffcli.data.shapes:stream",
    "cifar10": "diffcli.data.importers.cifar:stream",
    "imagenet64": "diffcli.data.importers.imagenet64:stream",
}


def load_dataset(spec: str, *, root: str | None = None, limit: int | None = None) -> Dataset:
    """Load the dataset a spec names (deterministic; the train / held-out split is part of the result)."""
    name, params = parse_spec(spec)
    return resolve("dataset", DATASETS, name)(params, root=root, limit=limit)


def stream_dataset(spec: str, *, root: str | None = None, limit: int | None = None) -> Dataset | StreamedDataset:
    """The dataset a spec names, as a stream of chunks where its reader can stream, else loaded whole (small data);
    either way `index-build` reads it through `.chunks(size)` and gets the same rows."""
    name, params = parse_spec(spec)
    resolve("dataset", DATASETS, name)  # an unknown name is refused as load_dataset refuses it
    if name not in STREAMS:
        return load_dataset(spec, root=root, limit=limit)
    return resolve("dataset", STREAMS, name)(params, root=root, limit=limit)


__all__ = ["DATASETS", "STREAMS", "Dataset", "StreamedDataset", "load_dataset", "parse_spec", "stream_dataset"]

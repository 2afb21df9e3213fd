"""Datasets by name, addressed as NAME or NAME:key=value,... (see data/spec.py).

Each loader is `load(params: dict[str, str], *, root: str | None, limit: int | None) -> Dataset`.
"""

from diffcli.data.base import Dataset
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


def load_dataset(spec: str, *, root: str | None = None, limit: int | None = None) -> Dataset:
    """Load the dataset a spec names (deterministic; the train / held-out split is part of the result)."""
    name, params = parse_spec(spec)
    return resolve("dataset", DATASETS, name)(params, root=root, limit=limit)


__all__ = ["DATASETS", "Dataset", "load_dataset", "parse_spec"]

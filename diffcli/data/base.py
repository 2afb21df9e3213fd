"""What a dataset loader returns, and the deterministic train / held-out split."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from diffcli.errors import DiffcliError


@dataclass
class Dataset:
    """A loaded dataset. Images are uint8 [N, C, H, W] (data space [-1, 1] = u8 / 127.5 - 1); vectors float32 [N, D].

    `extra` holds arrays stored in the index as they are (keys are HDF5 paths, e.g. "gmm/means");
    `info` holds attributes (e.g. {"source": ...}).
    """

    spec: str
    kind: str  # "image" or "vector"
    train: np.ndarray
    heldout: np.ndarray
    labels: np.ndarray | None = None
    heldout_labels: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(len(self.train))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.train.shape[1:])

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    @property
    def n_heldout(self) -> int:
        return int(len(self.heldout))

    @property
    def dtype(self) -> np.dtype:
        return self.train.dtype

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """The training rows in order, `size` at a time, with their labels (None when unlabelled)."""
        for lo in range(0, self.n, size):
            yield self.train[lo:lo + size], None if self.labels is None else self.labels[lo:lo + size]

    def heldout_rows(self) -> tuple[np.ndarray, np.ndarray | None]:
        return self.heldout, self.heldout_labels


@dataclass
class StreamedDataset:
    """A dataset read in chunks, never whole: what `index-build` consumes for large data.

    `read(size)` yields (training rows, labels or None) in index order; `heldout()` returns the held-out rows and
    labels (small: at most a few thousand rows), and may be called after a pass of `read` that gathered them.
    The rows and their order are exactly those of the in-memory loader of the same spec.
    """

    spec: str
    kind: str
    shape: tuple[int, ...]
    n: int
    labelled: bool
    read: Callable[[int], Iterator[tuple[np.ndarray, np.ndarray | None]]]
    heldout: Callable[[], tuple[np.ndarray, np.ndarray | None]]
    n_heldout: int
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.uint8))
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        return self.read(size)

    def heldout_rows(self) -> tuple[np.ndarray, np.ndarray | None]:
        return self.heldout()


def split_seed(name: str) -> int:
    """A fixed seed per dataset name, so the split never depends on Python's hash randomisation."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def heldout_split(n: int, name: str, fraction: float = 0.1, cap: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train_ids, heldout_ids), both sorted; held-out is `fraction` of n, at most `cap`, at least 1."""
    n_held = int(min(cap, max(1, round(n * fraction))))
    perm = np.random.default_rng(split_seed(name)).permutation(n)
    return np.sort(perm[n_held:]), np.sort(perm[:n_held])


def split_arrays(name, spec, kind, data, labels=None, **kwargs) -> Dataset:
    """Split `data` (and labels) into a Dataset with the deterministic held-out split."""
    if len(data) < 2:
        raise DiffcliError(f"dataset '{spec}' has only {len(data)} sample; at least 2 are needed, since one is "
                           "held out from training.")
    train_ids, held_ids = heldout_split(len(data), name)
    return Dataset(
        spec=spec,
        kind=kind,
        train=data[train_ids],
        heldout=data[held_ids],
        labels=None if labels is None else labels[train_ids],
        heldout_labels=None if labels is None else labels[held_ids],
        **kwargs,
    )

"""The HDF5 dataset index: one file holding the training set, held-out split, proxy features and statistics."""

from diffcli.index.store import FORMAT_VERSION, Index, open_index

__all__ = ["FORMAT_VERSION", "Index", "open_index"]

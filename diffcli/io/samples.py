"""Sample files: OUT/samples.h5 with `samples`, `noise`, `ids` and every setting as attributes."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from diffcli import __version__
from diffcli.errors import DiffcliError
from diffcli.io.hdf5 import arrays_nbytes, write_hdf5

FORMAT = "diffcli-samples"


def write_samples(path, *, samples, noise, ids, settings: dict, sigmas, labels=None) -> None:
    """Write the samples file atomically; `settings` (JSON-able) are stored one attribute each and as JSON.
    `labels`: each sample's class (a conditional run, --class), stored as the dataset `labels`."""
    arrays = {"samples": np.asarray(samples, np.float32), "noise": np.asarray(noise, np.float32),
              "ids": np.asarray(ids, np.int64)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels, np.int64)

    def fill(f):
        for name, value in arrays.items():
            f.create_dataset(name, data=value)
        f.attrs["format"] = FORMAT
        f.attrs["diffcli_version"] = __version__
        f.attrs["sigmas"] = np.asarray(sigmas, np.float64)
        f.attrs["settings_json"] = json.dumps(settings, sort_keys=True, default=str)
        for key, value in settings.items():
            if value is not None and isinstance(value, (str, int, float, bool)):
                f.attrs[key] = value

    write_hdf5(path, fill, nbytes=arrays_nbytes(arrays))


def read_samples(path) -> dict:
    """{'samples', 'noise', 'ids', 'labels' (None unless conditional), 'sigmas', 'settings'} of a samples file;
    a foreign or damaged file is refused."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DiffcliError(f"samples file '{path}' does not exist.")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT or "samples" not in f:
                raise DiffcliError(f"'{path}' is not a diffcli samples file.")
            return {
                "samples": f["samples"][...],
                "noise": f["noise"][...] if "noise" in f else None,
                "ids": f["ids"][...] if "ids" in f else np.arange(f["samples"].shape[0]),
                "labels": f["labels"][...] if "labels" in f else None,
                "sigmas": np.asarray(f.attrs.get("sigmas", [])),
                "settings": json.loads(f.attrs.get("settings_json", "{}")),
            }
    except OSError:
        raise DiffcliError(f"'{path}' is not an HDF5 file or it is truncated.") from None
    except json.JSONDecodeError:
        raise DiffcliError(f"samples file '{path}' has a settings_json attribute that is not valid JSON.") from None
    except TypeError:
        raise DiffcliError(f"samples file '{path}' has a settings_json attribute that is not text.") from None

"""Writing HDF5 files so that a full disk is a clean error, never a crash.

HDF5 that fails to write its metadata while closing a file leaves h5py objects that crash the interpreter later
(a segmentation fault after "Can't close file ... No space left on device"). So a file of up to IN_MEMORY_MAX bytes
of arrays is built entirely in memory (the core driver, no backing store) and its image is written with plain
Python I/O: the disk is touched only by ordinary writes. That costs about twice the file size in extra peak memory
for that moment (the in-memory file and its image; measured: a 400 MiB index raised peak RSS from 453 to 1254 MiB,
in the same time as a direct write). Larger files (a 256 px CelebA-HQ or ImageNet-64 index) are written by HDF5
directly, with no extra memory, after checking that the free space covers them; should the disk still fill up, the
flush fails first, the temporary file is emptied so that HDF5 can close it, and the error is one sentence.
"""

from __future__ import annotations

import os
import uuid

import h5py
import numpy as np

from diffcli.errors import DiffcliError, write_error
from diffcli.io.atomic import atomic_path, write_bytes

IN_MEMORY_MAX = 1 << 30  # bytes of array data up to which the file is built in memory
_OVERHEAD = 1 << 20


def write_hdf5(path, fill, *, nbytes: int, in_memory_max: int = IN_MEMORY_MAX) -> None:
    """Write an HDF5 file atomically; `fill(f)` creates its datasets and attributes, `nbytes` is their size (files
    of up to `in_memory_max` bytes are built in memory)."""
    path = os.fspath(path)
    if nbytes <= in_memory_max:
        with h5py.File(f"diffcli-{uuid.uuid4().hex}.h5", "w", driver="core", backing_store=False) as f:
            fill(f)
            f.flush()
            image = f.id.get_file_image()
        write_bytes(path, image)
        return
    with atomic_path(path) as tmp:
        _check_free_space(tmp, path, nbytes + _OVERHEAD)
        f = h5py.File(tmp, "w")
        try:
            fill(f)
            f.flush()
        except OSError as exc:
            os.truncate(tmp, 0)  # give the space back so that HDF5 can write its metadata and close cleanly
            f.close()
            raise write_error(exc, path) from None
        except BaseException:
            os.truncate(tmp, 0)
            f.close()
            raise
        f.close()


def _check_free_space(tmp: str, path: str, needed: int) -> None:
    st = os.statvfs(os.path.dirname(os.path.abspath(tmp)))
    free = st.f_bavail * st.f_frsize
    if free < needed:
        raise DiffcliError(f"cannot write '{path}': there is no space left on device for its {needed / 2**20:.0f} MiB "
                           f"({free / 2**20:.0f} MiB free); free some space or choose another output path.")


def arrays_nbytes(arrays) -> int:
    """Bytes of the non-None arrays of a dict or list."""
    values = arrays.values() if isinstance(arrays, dict) else arrays
    return int(sum(np.asarray(v).nbytes for v in values if v is not None))

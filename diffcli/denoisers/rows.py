"""Index rows padded and cut into fixed-size chunks, so one compiled scan serves any N.

Rows keep their stored form on the device (uint8 images, float32 vectors: `stored_form`) and become float32 data
space only inside a kernel, one chunk at a time (`to_float`), so no float32 [N, D] copy of an image index exists.
Padding rows are zero and flagged as not real (row_ok False, or a half squared norm of +inf), which gives them a
softmax weight of exactly zero and a top-k score of -inf wherever they are streamed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

HALF_NORM_BLOCK = 1 << 16  # rows converted to float at a time when half squared norms are computed on the host


def stored_form(data: np.ndarray) -> np.ndarray:
    """Rows [N, ...] -> [N, D] as the device keeps them: uint8 images stay uint8, anything else becomes float32."""
    data = np.asarray(data)
    flat = data.reshape(len(data), int(np.prod(data.shape[1:])))  # an empty block keeps D
    return flat if flat.dtype == np.uint8 else np.asarray(flat, np.float32)


def device_rows(rows: np.ndarray) -> jax.Array:
    """Host rows onto the default device. On the CPU a read-only, 64-byte-aligned, contiguous array (the memory
    map of an index file's rows, or a padded copy made by `pad_to`) is shared with the device array, not copied:
    no one can write it, so sharing is safe, and the rows are held once. Anything else is copied (jnp.asarray)."""
    if (isinstance(rows, np.ndarray) and not rows.flags.writeable and rows.flags.c_contiguous
            and rows.ctypes.data % 64 == 0 and jax.default_backend() == "cpu"):
        return jax.device_put(rows, may_alias=True)
    return jnp.asarray(rows)


def to_float(rows):
    """Stored rows -> float32 data space inside a kernel: uint8 images x / 127.5 - 1 (as store.to_data_space),
    float rows unchanged."""
    if rows.dtype == jnp.uint8:
        return rows.astype(jnp.float32) / jnp.float32(127.5) - jnp.float32(1.0)
    return rows.astype(jnp.float32)


def host_float(rows: np.ndarray) -> np.ndarray:
    """to_float on the host (NumPy), for a block of rows."""
    if rows.dtype == np.uint8:
        return rows.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return np.asarray(rows, np.float32)


def padded_length(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that holds n rows."""
    return -(-n // multiple) * multiple


def aligned_empty(shape, dtype, align: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on an `align`-byte boundary (what the CPU device can share)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def frozen(a: np.ndarray) -> np.ndarray:
    """`a` made read-only: a host array built once and handed to the device, which `device_rows` may then share."""
    a.flags.writeable = False
    return a


def pad_to(a: np.ndarray, total: int, fill=0) -> np.ndarray:
    """The leading axis of `a` padded to `total` rows with `fill`, as a new read-only, aligned array (so
    `device_rows` shares it rather than copying it); `a` itself when it already has `total` rows (callers never
    write the result, and a memory-mapped index then reaches the device uncopied)."""
    if len(a) > total:
        raise ValueError(f"{len(a)} rows do not fit in {total}")
    if len(a) == total:
        return a
    out = aligned_empty((total, *a.shape[1:]), a.dtype)
    out[: len(a)] = a
    out[len(a):] = fill
    return frozen(out)


def pad_rows(data: np.ndarray, multiple: int):
    """Rows [N, D] -> (rows [Np, D] in stored form (stored_form) zero-padded to a multiple of `multiple`, real-row
    flags [Np])."""
    total = padded_length(len(data), multiple)
    return pad_to(stored_form(data), total), np.arange(total) < len(data)


def chunk_rows(data: np.ndarray, chunk: int):
    """Rows [N, D] -> (chunks [K, C, D], real-row flags [K, C]) with C = min(chunk, N) rows a chunk."""
    chunk = max(1, min(chunk, len(data)))
    padded, ok = pad_rows(data, chunk)
    return padded.reshape(-1, chunk, *padded.shape[1:]), ok.reshape(-1, chunk)


def half_sq_norms(rows: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """||x_i||^2 / 2 of the data-space rows (uint8 converted exactly as to_float does, a block at a time) as float32,
    summed in float64, +inf on padding rows, for rows [..., D] in stored form and flags [...]."""
    flat = rows.reshape(-1, rows.shape[-1])
    half = np.empty(len(flat), np.float64)
    for lo in range(0, len(flat), HALF_NORM_BLOCK):
        block = host_float(flat[lo:lo + HALF_NORM_BLOCK])
        half[lo:lo + len(block)] = 0.5 * np.einsum("ij,ij->i", block, block, dtype=np.float64)
    return np.where(ok, half.reshape(rows.shape[:-1]), np.inf).astype(np.float32)


def split_chunks(rows, row_ok, chunk: int):
    """Traced rows [K, D] and flags [K] -> chunks [ceil(K / c), c, D] and flags, c = min(chunk, K) (inside jit)."""
    k = rows.shape[0]
    chunk = max(1, min(chunk, k))
    pad = padded_length(k, chunk) - k
    rows = jnp.pad(rows, ((0, pad), (0, 0))).reshape(-1, chunk, rows.shape[1])
    return rows, jnp.pad(row_ok, (0, pad)).reshape(-1, chunk)

"""Index rows padded and cut into fixed-size chunks, so one compiled scan serves any N.

Padding rows are zero and flagged as not real (row_ok False, or a half squared norm of +inf), which gives them a
softmax weight of exactly zero and a top-k score of -inf wherever they are streamed.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def padded_length(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that holds n rows."""
    return -(-n // multiple) * multiple


def pad_to(a: np.ndarray, total: int, fill=0) -> np.ndarray:
    """The leading axis of `a` padded to `total` rows with `fill`."""
    if len(a) > total:
        raise ValueError(f"{len(a)} rows do not fit in {total}")
    out = np.full((total, *a.shape[1:]), fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


def pad_rows(data: np.ndarray, multiple: int):
    """Rows [N, D] -> (float32 rows [Np, D] zero-padded to a multiple of `multiple`, real-row flags [Np])."""
    total = padded_length(len(data), multiple)
    return pad_to(np.asarray(data, np.float32), total), np.arange(total) < len(data)


def chunk_rows(data: np.ndarray, chunk: int):
    """Rows [N, D] -> (chunks [K, C, D], real-row flags [K, C]) with C = min(chunk, N) rows a chunk."""
    chunk = max(1, min(chunk, len(data)))
    padded, ok = pad_rows(data, chunk)
    return padded.reshape(-1, chunk, *padded.shape[1:]), ok.reshape(-1, chunk)


def half_sq_norms(rows: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """||x_i||^2 / 2 as float32 (summed in float64), +inf on padding rows, for rows [..., D] and flags [...]."""
    half = 0.5 * np.einsum("...i,...i->...", rows, rows, dtype=np.float64)
    return np.where(ok, half, np.inf).astype(np.float32)


def split_chunks(rows, row_ok, chunk: int):
    """Traced rows [K, D] and flags [K] -> chunks [ceil(K / c), c, D] and flags, c = min(chunk, K) (inside jit)."""
    k = rows.shape[0]
    chunk = max(1, min(chunk, k))
    pad = padded_length(k, chunk) - k
    rows = jnp.pad(rows, ((0, pad), (0, 0))).reshape(-1, chunk, rows.shape[1])
    return rows, jnp.pad(row_ok, (0, pad)).reshape(-1, chunk)

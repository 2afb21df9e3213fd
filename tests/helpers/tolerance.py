"""Tolerances for comparing results of two different compiled programs, devices or libraries.

XLA's CPU code depends on the CPU model (Intel or AMD, AVX2 or AVX-512, aarch64): two programs that compute the same
value in a different order, fused differently or vectorised differently, may differ in the last bits. Such
comparisons use a tolerance of a few roundings of the dtype, amplified by the problem's conditioning; bit-identity
is asserted only where it is the promise (the same program on the same inputs, a resumed run, merged shards,
integer ids, uint8 images, PRNG keys).
"""

from __future__ import annotations

import numpy as np


def eps(dtype=np.float32) -> float:
    """Machine epsilon of a floating dtype."""
    return float(np.finfo(dtype).eps)


def rel_tol(dtype=np.float32, cond: float = 1.0, ulps: float = 8.0) -> float:
    """`ulps` roundings of `dtype`, amplified by the condition number `cond` of the computation."""
    return float(ulps * cond * eps(dtype))


def assert_close(actual, desired, *, dtype=np.float32, cond: float = 1.0, ulps: float = 8.0, scale=None,
                 err_msg: str = "") -> None:
    """|actual - desired| <= tol * (|desired| + scale) elementwise, with tol = ulps * cond * eps(dtype).

    `scale` is the magnitude the rounding errors are relative to (default: max |desired|), so entries that cancel to
    about 0 in a result of size O(scale) are not held to a relative bound no reordering could meet.
    """
    a = np.asarray(actual, np.float64)
    d = np.asarray(desired, np.float64)
    tol = rel_tol(dtype, cond, ulps)
    mag = float(np.max(np.abs(d), initial=0.0)) if scale is None else float(scale)
    np.testing.assert_allclose(a, d, rtol=tol, atol=tol * mag, err_msg=err_msg)

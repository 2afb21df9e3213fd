"""This machine's own roofline, measured in the same run as a benchmark: float32 matmul FLOP/s and memory GB/s."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np


def best_time(fn, *args, repeats: int = 5) -> float:
    """Best wall time of fn(*args) after one warm-up (compile) call; blocks on the result."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.min(times))


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    t = best_time(jax.jit(lambda x, y: x @ y), a, a, repeats=repeats)
    return 2 * n**3 / t / 1e9


def memory_gbs(megabytes: int = 512, repeats: int = 5) -> float:
    """Read bandwidth: a jitted sum over a large array (bytes read / time)."""
    a = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
    t = best_time(jax.jit(jnp.sum), a, repeats=repeats)
    return a.size * 4 / t / 1e9


def measure(quick: bool = False) -> dict:
    return {"matmul_gflops": matmul_gflops(1024 if quick else 2048), "memory_gbs": memory_gbs(128 if quick else 512),
            "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend()}

"""Every multi-device result the tests check, computed once per device count.

A fake device count (XLA_FLAGS=--xla_force_host_platform_device_count=D) must be set before jax is imported, so
each count other than the test process's own needs a fresh interpreter; one interpreter per count computes every
result (sharded exact search, sharded golden) and writes them to OUT/D.npz and OUT/D.json, which tests/test_sharded.py
and tests/test_sharded_golden.py check. Run as `python -m tests.helpers.multidevice D OUT` (see `start`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# tests/test_sharded.py: the exact empirical denoiser over rows sharded along N
N, D, B = 203, 12, 6
SIGMAS = [1e-3, 0.05, 0.3, 1.0, 5.0, 1e3]
K = 7
CHUNKS = {1: 64, 2: 32, 8: 16}  # rows per chunk, per device count

# tests/test_sharded_golden.py: the sharded golden against the one-device golden
GOLDEN_N = 120
GOLDEN_SIGMAS = [40.0, 2.0, 0.5, 0.08]  # one per query: high noise (random pool) to low noise (near the nearest image)
GOLDEN_CONFIGS = {
    "empirical": dict(golden_base="empirical", golden_k_min=12, golden_k_max=30),
    "pca-local-coarse": dict(golden_base="pca-local", golden_k_min=12, golden_k_max=30, golden_coarse=True,
                             golden_nprobe=2),
    "tolerance": dict(golden_base="empirical", golden_k_max=60, golden_tol=1e-3),
}


def sharded_empirical(devices: int) -> tuple[dict, dict]:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from diffcli.parallel.denoiser import ShardedEmpiricalDenoiser, ShardedRows
    from diffcli.parallel.mesh import row_mesh

    rng = np.random.default_rng(0)
    data = rng.uniform(-1, 1, (N, D)).astype(np.float32)
    x = (data[:B] + 0.4 * rng.standard_normal((B, D))).astype(np.float32)
    mesh = row_mesh()
    den = ShardedEmpiricalDenoiser.from_data(data, mesh=mesh, chunk=CHUNKS[devices])
    call = eqx.filter_jit(lambda d, x, s: d(x, s))
    means = [np.asarray(call(den, x, s)) for s in SIGMAS]
    again = np.asarray(call(den, x, SIGMAS[0]))  # second call: cached, same answer
    # Per-sample sigma and use inside a lax.scan (as a solver would).
    per_sample = np.asarray(call(den, x, jnp.asarray(SIGMAS[:B], jnp.float32)))
    sig = jnp.asarray([2.0, 1.0, 0.5, 0.0], jnp.float32)

    def euler(d, x):
        def step(x, s):
            return x + (s[1] - s[0]) * (x - d(x, s[0])) / s[0], None

        return jax.lax.scan(step, x, jnp.stack([sig[:-1], sig[1:]], 1))[0]

    path = np.asarray(eqx.filter_jit(euler)(den, x))
    rows = ShardedRows.from_data(data, mesh=mesh)
    d2, ids = eqx.filter_jit(lambda r, q, a: r.nearest(q, K, a))(rows, x, jnp.full((B,), 0.8))
    shard_shapes = sorted({tuple(s.data.shape) for s in den.chunks.addressable_shards})
    arrays = dict(means=np.stack(means), again=again, per_sample=per_sample, path=path, d2=np.asarray(d2),
                  ids=np.asarray(ids), data=data, x=x)
    return arrays, {"shard_shapes": [list(s) for s in shard_shapes]}


def sharded_golden(devices: int) -> tuple[dict, dict]:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.options import GoldenOptions
    from tests.helpers.indexes import make_index

    index = make_index(n=GOLDEN_N)
    sig = jnp.asarray(GOLDEN_SIGMAS, jnp.float32)
    x = jnp.asarray(index.train_data()[:len(sig)].reshape(len(sig), *index.shape))
    x = x + sig[:, None, None, None] * jax.random.normal(jax.random.PRNGKey(1), x.shape)
    keys = jax.random.split(jax.random.PRNGKey(4), len(sig))
    call = eqx.filter_jit(lambda d, x, s, k: d(x, s, key=k))
    out, meta = {}, {}
    for name, cfg in GOLDEN_CONFIGS.items():
        opts = GoldenOptions(sigmas=np.asarray(GOLDEN_SIGMAS + [0.0]), **cfg)
        den = build_denoiser("golden-sharded", index, opts)
        out[name] = np.asarray(call(den, x, sig, keys))
        meta[name] = sorted({tuple(s.data.shape) for s in den.rows.data.addressable_shards})
        # the coarse stage's member proxies live in the row shards, never replicated on every device
        assert (den.rows.piece_proxy is None) == (den.plan.coarse is None)
        if den.rows.piece_proxy is not None:
            assert den.rows.piece_proxy.shape[0] == devices * len(den.plan.coarse.radius)
        if devices == 1:
            out[name + "/one-device"] = np.asarray(call(build_denoiser("golden", index, opts), x, sig, keys))
    return out, {"shard_shapes": {k: [list(s) for s in v] for k, v in meta.items()}}


def compute(devices: int, out_dir: str) -> None:
    """Every result for this process's device count, written to OUT/D.npz (arrays) and OUT/D.json (metadata)."""
    import jax

    assert jax.device_count() == devices, jax.devices()
    arrays, meta = {}, {"devices": jax.device_count()}
    for prefix, job in (("sharded", sharded_empirical), ("golden", sharded_golden)):
        a, m = job(devices)
        arrays.update({f"{prefix}/{k}": v for k, v in a.items()})
        meta[prefix] = m
    np.savez(os.path.join(out_dir, f"{devices}.npz"), **arrays)
    with open(os.path.join(out_dir, f"{devices}.json"), "w") as f:
        json.dump(meta, f)


def with_devices(devices: int) -> str:
    """XLA_FLAGS for a fresh interpreter with `devices` fake CPU devices, keeping the test run's other XLA flags."""
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    return " ".join([*kept, f"--xla_force_host_platform_device_count={devices}"])


def start(devices: int, out_dir: str) -> subprocess.Popen:
    """A fresh interpreter with `devices` fake CPU devices running `compute` (the caller waits, with a timeout)."""
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, XLA_FLAGS=with_devices(devices), JAX_PLATFORMS="cpu", PYTHONPATH=path)
    return subprocess.Popen([sys.executable, "-m", "tests.helpers.multidevice", str(devices), out_dir], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def load(devices: int, out_dir: str) -> tuple[dict, dict]:
    """({"sharded": arrays, "golden": arrays}, metadata) written by `compute`."""
    with np.load(os.path.join(out_dir, f"{devices}.npz")) as z:
        flat = dict(z)
    arrays = {p: {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith(p + "/")}
              for p in ("sharded", "golden")}
    with open(os.path.join(out_dir, f"{devices}.json")) as f:
        return arrays, json.load(f)


if __name__ == "__main__":
    compute(int(sys.argv[1]), sys.argv[2])

"""Sharded golden: 1, 2 and 8 (fake CPU) devices give the one-device golden's output, for both bases, with and
without the clustered coarse stage, and in the certified tolerance mode."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SIGMAS = [40.0, 2.0, 0.5, 0.08]  # one per query: high noise (random pool) to low noise (near the nearest image)
CONFIGS = {
    "empirical": dict(base="empirical", golden_k_min=12, golden_k_max=30),
    "pca-local-coarse": dict(base="pca-local", golden_k_min=12, golden_k_max=30, golden_coarse=True,
                             golden_nprobe=2),
    "tolerance": dict(base="empirical", golden_k_max=60, golden_tol=1e-3),
}

# Runs in a fresh interpreter: XLA_FLAGS must be set before jax is imported to fake the devices.
WORKER = textwrap.dedent(
    """
    import json, sys
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np
    args = json.loads(sys.argv[1])
    sys.path.insert(0, args["tests"])
    from test_golden import make_index
    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.options import DenoiserOptions
    assert jax.device_count() == args["devices"], jax.devices()
    index = make_index(n=args["n"])
    sig = jnp.asarray(args["sigmas"], jnp.float32)
    x = jnp.asarray(index.train_data()[:len(sig)].reshape(len(sig), *index.shape))
    x = x + sig[:, None, None, None] * jax.random.normal(jax.random.PRNGKey(1), x.shape)
    keys = jax.random.split(jax.random.PRNGKey(4), len(sig))
    call = eqx.filter_jit(lambda d, x, s, k: d(x, s, key=k))
    out, meta = {}, {}
    for name, cfg in args["configs"].items():
        opts = DenoiserOptions(sigmas=np.asarray(args["sigmas"] + [0.0]), **cfg)
        den = build_denoiser("golden-sharded", index, opts)
        out[name] = np.asarray(call(den, x, sig, keys))
        meta[name] = sorted({tuple(s.data.shape) for s in den.rows.data.addressable_shards})
        # the coarse stage's member proxies live in the row shards, never replicated on every device
        assert den.coarse is None or den.coarse.piece_proxy is None
        if den.rows.piece_proxy is not None:
            assert den.rows.piece_proxy.shape[0] == args["devices"] * len(den.coarse.radius)
        if args["devices"] == 1:
            out[name + "/one-device"] = np.asarray(call(build_denoiser("golden", index, opts), x, sig, keys))
    np.savez(args["out"], **out)
    print(json.dumps({"devices": jax.device_count(), "shard_shapes": meta}))
    """
)


def start_worker(devices: int, out) -> subprocess.Popen:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    args = dict(devices=devices, n=120, sigmas=SIGMAS, configs=CONFIGS, tests=HERE, out=str(out))
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{devices: (outputs, metadata)}; the three interpreters run side by side (most of their time is compiling)."""
    tmp = tmp_path_factory.mktemp("sharded_golden")
    procs = {d: start_worker(d, tmp / f"g{d}.npz") for d in (1, 2, 8)}
    result = {}
    for d, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        result[d] = (dict(np.load(tmp / f"g{d}.npz")), json.loads(stdout.strip().splitlines()[-1]))
    return result


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_device_count_equals_one_device_golden(runs, name):
    reference = runs[1][0][f"{name}/one-device"]
    assert np.all(np.isfinite(reference))
    for devices in (1, 2, 8):
        assert runs[devices][1]["devices"] == devices
        np.testing.assert_allclose(runs[devices][0][name], reference, atol=3e-6, rtol=1e-5)


def test_rows_are_split_evenly(runs):
    """120 rows of 64 pixels: 60 per device on 2 devices, 15 on 8."""
    for devices, rows in ((1, 120), (2, 60), (8, 15)):
        for shapes in runs[devices][1]["shard_shapes"].values():
            assert shapes == [[rows, 64]]


def test_cli_samples_with_the_sharded_golden(tmp_path, digits_index_path):
    """`sample --denoiser golden-sharded` writes the samples `--denoiser golden` writes (same noise and pools)."""
    import h5py
    from typer.testing import CliRunner

    from diffcli.cli import app

    common = ["sample", "--index", str(digits_index_path), "--base", "empirical", "--golden-k-min", "40",
              "--golden-k-max", "80", "--solver", "ddpm", "--steps", "4", "-n", "4", "--json"]
    samples = {}
    for name in ("golden", "golden-sharded"):
        res = CliRunner().invoke(app, [*common, "--denoiser", name, "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        with h5py.File(tmp_path / name / "samples.h5") as f:
            samples[name] = f["samples"][:]
    np.testing.assert_allclose(samples["golden-sharded"], samples["golden"], atol=1e-5)

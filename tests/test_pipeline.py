"""The sampling pipeline: per-sample noise, batch-size invariance, memorisation with the exact denoiser."""

import jax
import numpy as np

from diffcli.denoisers.empirical import EmpiricalDenoiser
from diffcli.sample.batches import generate, initial_noise, shard_ids, solver_keys
from diffcli.schedules import get_schedule
from diffcli.solvers import get_solver
from tests.helpers.tolerance import assert_close


def test_noise_depends_on_seed_and_id_only():
    a = np.asarray(initial_noise(0, [0, 1, 2, 3], (1, 8, 8)))
    b = np.asarray(initial_noise(0, [2, 3], (1, 8, 8)))
    # ids [0..3] and [2, 3] are two compiled programs: the same noise up to a few float32 roundings of its size
    assert_close(a[2:], b, dtype=np.float32, ulps=4)
    assert not np.allclose(np.asarray(initial_noise(1, [0], (1, 8, 8))), a[:1])
    k = solver_keys(0, [5, 6])
    assert not np.array_equal(np.asarray(jax.random.key_data(k[0])), np.asarray(jax.random.key_data(k[1])))
    np.testing.assert_array_equal(jax.random.key_data(solver_keys(0, [6])[0]), jax.random.key_data(k[1]))  # keys: bits


def test_shard_ids_partition_the_run():
    parts = [shard_ids(10, (i, 3)) for i in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    assert parts[1].tolist() == [1, 4, 7]


def test_stochastic_solver_is_batch_size_invariant():
    data = np.random.default_rng(0).uniform(-1, 1, (200, 6)).astype(np.float32)
    den = EmpiricalDenoiser.from_data(data, chunk=64)
    sig = get_schedule("edm", 8, sigma_min=0.01, sigma_max=10.0)
    runs = [generate(denoiser=den, solver=get_solver("ddpm"), sigmas=sig, shape=(6,), ids=np.arange(5), seed=3,
                     batch_size=b) for b in (1, 2, 5)]
    for r in runs[1:]:
        np.testing.assert_allclose(r.samples, runs[0].samples, atol=1e-5)
    assert runs[0].nfe == 8


def test_exact_empirical_heun_memorises_digits(digits_index):
    """With the exact empirical score a fine sampler reproduces training points (a correctness check)."""
    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.options import StreamOptions

    den = build_denoiser("empirical", digits_index, StreamOptions())
    run = generate(denoiser=den, solver=get_solver("heun"), sigmas=get_schedule("edm", 18), shape=digits_index.shape,
                   ids=np.arange(16), seed=0, batch_size=16)
    train = digits_index.train_data().astype(np.float64)
    x = run.samples.reshape(16, -1).astype(np.float64)
    d = np.sqrt(((x[:, None] - train[None]) ** 2).sum(-1))
    d.sort(axis=1)
    per_dim = d[:, 0] / np.sqrt(train.shape[1])
    assert np.all(per_dim < 0.02), per_dim  # within 1% of the [-1, 1] range of a training image
    assert np.all(d[:, 0] / d[:, 1] < 1 / 3)  # memorised by the usual criterion
    assert run.nfe == 35

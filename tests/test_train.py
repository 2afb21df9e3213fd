"""Training: EDM preconditioning, loss decrease, bit-for-bit resume, model files, the neural denoiser."""

import csv

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffcli.denoisers.neural import build, load_neural
from diffcli.denoisers.options import NeuralOptions
from diffcli.errors import DiffcliError, UsageError
from diffcli.models.file import read_header
from diffcli.models.precond import build_model, default_config, edm_coefficients
from diffcli.train.loop import TrainSettings, batch_indices, train


def _blobs(n=96, seed=0):
    """A tiny image set: bright squares at random places on a dark 8x8 canvas."""
    rng = np.random.default_rng(seed)
    x = -np.ones((n, 1, 8, 8), np.float32)
    for i, (r, c) in enumerate(rng.integers(0, 6, (n, 2))):
        x[i, 0, r : r + 3, c : c + 3] = 1.0
    return x


def test_edm_coefficients_closed_form():
    sigma, sd = np.array([0.1, 1.0, 10.0]), 0.5
    c_skip, c_out, c_in, c_noise = map(np.asarray, edm_coefficients(jnp.asarray(sigma), sd))
    np.testing.assert_allclose(c_skip, sd**2 / (sigma**2 + sd**2), rtol=1e-6)
    np.testing.assert_allclose(c_out, sigma * sd / np.sqrt(sigma**2 + sd**2), rtol=1e-6)
    np.testing.assert_allclose(c_in, 1 / np.sqrt(sigma**2 + sd**2), rtol=1e-6)
    np.testing.assert_allclose(c_noise, np.log(sigma) / 4, rtol=1e-6)
    np.testing.assert_allclose(c_out**2, (sigma * sd) ** 2 / (sigma**2 + sd**2), rtol=1e-6)


@pytest.mark.parametrize("shape", [pytest.param((1, 8, 8), marks=pytest.mark.slow),
                                   pytest.param((3, 16, 16), marks=pytest.mark.slow), (7,)])
def test_untrained_model_is_c_skip_times_x(shape):
    cfg = default_config(shape, 0.5, width=8)
    model = build_model(cfg, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, *shape))
    sigma = jnp.array([0.3, 4.0])
    c_skip = 0.25 / (sigma**2 + 0.25)
    out = eqx.filter_jit(lambda m, a, b: m(a, b))(model, x, sigma)  # zero output layer: F = 0 at initialisation
    np.testing.assert_allclose(out, c_skip.reshape((-1,) + (1,) * len(shape)) * x, rtol=1e-5)
    assert eqx.filter_eval_shape(lambda m: m.features(x, sigma), model).shape[0] == 2


def test_batches_are_epoch_permutations():
    seen = np.concatenate([batch_indices(3, s, 50, 10) for s in range(5)])
    assert sorted(seen.tolist()) == list(range(50))
    assert not np.array_equal(batch_indices(3, 0, 50, 10), batch_indices(3, 5, 50, 10))
    assert np.array_equal(batch_indices(3, 7, 50, 10), batch_indices(3, 7, 50, 10))


def _settings(**kw):
    base = dict(steps=24, batch_size=16, lr=5e-3, warmup=2, save_every=12, width=8, seed=1)
    return TrainSettings(**{**base, **kw})


DATA = _blobs(64)  # one data set (one sigma_data) so every run below reuses one compiled step


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("train") / "m.eqx")
    return out, train(DATA, DATA[:16], _settings(), out=out, dataset="blobs", log_every=4)


def test_loss_decreases_and_files_are_written(trained):
    out, res = trained
    losses = [loss for _, loss in res["history"]]
    assert np.mean(losses[-2:]) < 0.7 * losses[0]
    with open(res["loss_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and all(float(r["loss"]) >= 0 for r in rows)
    sig = np.array([float(r["sigma"]) for r in rows])
    assert np.all(np.diff(sig) > 0)
    # x0-MSE per dim tends to the data variance at large sigma and to ~0 at small sigma
    assert float(rows[0]["loss"]) < 0.05 * np.var(DATA) < float(rows[-1]["loss"])
    header, _ = read_header(out, "model")
    assert header["config"]["kind"] == "unet" and header["info"]["steps"] == 24
    from diffcli.schedules.loss import read_loss_log  # the log is schedule-fit's --loss-file input

    for path in (res["loss_csv"], res["loss_json"]):
        curve = read_loss_log(path, "x0")
        np.testing.assert_allclose(np.sort(curve.sigma), sig, rtol=1e-6)


def test_resume_is_bit_for_bit(trained, tmp_path):
    straight, _ = trained
    parted = str(tmp_path / "b.eqx")
    train(DATA, DATA[:16], _settings(steps=12), out=parted)  # "interrupted" after the checkpoint at step 12
    res = train(DATA, DATA[:16], _settings(), out=parted, resume=True)
    assert res["resumed_from"] == 12
    ha, _ = read_header(straight, "model")
    hb, _ = read_header(parted, "model")
    assert ha["payload_sha256"] == hb["payload_sha256"]
    assert read_header(straight + ".ckpt", "checkpoint")[0]["payload_sha256"] == \
        read_header(parted + ".ckpt", "checkpoint")[0]["payload_sha256"]
    # a different seed would give a different model: the comparison above can fail
    assert read_header(straight + ".ckpt", "checkpoint")[0]["step"] == 24
    # and resuming with a different run identity is refused in one sentence
    with pytest.raises(DiffcliError, match="different lr"):
        train(DATA, DATA[:16], _settings(lr=1e-2), out=parted, resume=True)


def test_corrupted_and_foreign_files_are_refused(trained, tmp_path):
    out, _ = trained
    blob = bytearray(open(out, "rb").read())
    blob[-10] ^= 0xFF
    bad = tmp_path / "bad.eqx"
    bad.write_bytes(bytes(blob))
    with pytest.raises(DiffcliError, match="truncated or corrupted"):
        load_neural(str(bad))
    (tmp_path / "short.eqx").write_bytes(bytes(blob[: len(blob) // 2]))
    with pytest.raises(DiffcliError, match="truncated or corrupted"):
        load_neural(str(tmp_path / "short.eqx"))
    (tmp_path / "foreign.eqx").write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(DiffcliError, match="not written by diffcli train"):
        load_neural(str(tmp_path / "foreign.eqx"))
    with pytest.raises(DiffcliError, match="holds a checkpoint"):
        load_neural(out + ".ckpt")
    ckpt = tmp_path / "c.eqx"
    ckpt_blob = bytearray(open(out + ".ckpt", "rb").read())
    ckpt_blob[-3] ^= 0x01
    (tmp_path / "c.eqx.ckpt").write_bytes(bytes(ckpt_blob))
    with pytest.raises(DiffcliError, match="checkpoint file: it is truncated or corrupted"):
        train(DATA, DATA[:16], _settings(steps=30), out=str(ckpt), resume=True)


def test_neural_denoiser_matches_model_and_checks_shape(trained):
    out, _ = trained

    class FakeIndex:
        shape = (1, 8, 8)

    den = build(FakeIndex(), NeuralOptions(model=out))
    xs = jnp.asarray(DATA[:4])
    call = eqx.filter_jit(lambda d, a, s: d(a, s))
    np.testing.assert_allclose(call(den, xs, 0.7), call(den.model, xs, jnp.full((4,), 0.7)), rtol=1e-5)
    np.testing.assert_array_equal(call(den, xs, 0.0), xs)  # sigma = 0 returns x exactly, no NaN from ln(0)
    FakeIndex.shape = (1, 16, 16)
    with pytest.raises(DiffcliError, match="shape"):
        build(FakeIndex(), NeuralOptions(model=out))
    with pytest.raises(UsageError, match="--model"):
        build(FakeIndex(), NeuralOptions())


def test_bad_settings_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="batch-size"):
        train(_blobs(8), _blobs(2), _settings(batch_size=64), out=str(tmp_path / "m.eqx"))
    with pytest.raises(UsageError, match="--lr"):
        train(_blobs(8), _blobs(2), _settings(lr=0.0), out=str(tmp_path / "m.eqx"))


@pytest.mark.slow
def test_mlp_for_vectors_trains(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((128, 4)) * 0.2 + np.array([1.0, -1.0, 0.5, 0.0])).astype(np.float32)
    res = train(x, x[:16], TrainSettings(steps=20, batch_size=32, lr=3e-3, warmup=5, width=16, save_every=100),
                out=str(tmp_path / "v.eqx"), log_every=5)
    assert res["config"]["kind"] == "mlp"
    losses = [loss for _, loss in res["history"]]
    assert losses[-1] < losses[0]

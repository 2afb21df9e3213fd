"""`diffcli evaluate` through CliRunner: the default subcommand, metrics in JSON, the PNG report, clear refusals."""

import json

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

from diffcli.cli import app
from diffcli.data import load_dataset
from diffcli.index.build import build_index
from diffcli.io.samples import write_samples
from diffcli.metrics import fidelity

runner = CliRunner()


@pytest.fixture(scope="module")
def digits_index(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("idx") / "digits.h5")
    return build_index(load_dataset("digits", limit=300), path, coarse=False)


@pytest.fixture(scope="module")
def files(digits_index, tmp_path_factory):
    """samples.h5 = 3 exact training copies + 5 noise images; reference.h5 = a perturbation of them (same ids)."""
    from diffcli.index import open_index

    d = tmp_path_factory.mktemp("runs")
    idx = open_index(digits_index)
    rng = np.random.default_rng(0)
    train = idx.train_data().reshape(-1, *idx.shape)
    x = np.concatenate([train[[5, 17, 40]], rng.uniform(-1, 1, (5, *idx.shape))]).astype(np.float32)
    ref = np.clip(x + 0.3 * rng.standard_normal(x.shape), -1, 1).astype(np.float32)
    ids = np.arange(8)
    paths = {}
    for name, arr, ids_, seed in [("s", x, ids, 0), ("r", ref[::-1], ids[::-1], 0), ("other", ref, ids, 7)]:
        paths[name] = str(d / f"{name}.h5")
        write_samples(paths[name], samples=arr, noise=arr, ids=ids_, settings={"seed": seed, "denoiser": name},
                      sigmas=[80.0, 0.0])
    return paths, x, ref


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_reference_metrics_match_by_ids(files):
    paths, x, ref = files
    out = _json(runner.invoke(app, ["evaluate", paths["s"], "--reference", paths["r"], "--json"]))
    want = fidelity.fidelity(x, ref, images=True)  # r.h5 stores the rows reversed: matching must use the ids
    assert out["mse"] == pytest.approx(want["mse"]) and out["r2"] == pytest.approx(want["r2"])
    assert out["n_compared"] == 8 and out["mse_scale"] == "[0,1] clamped"
    explicit = _json(runner.invoke(app, ["evaluate", "samples", paths["s"], "--reference", paths["r"], "--json"]))
    assert explicit["mse"] == out["mse"]


def test_index_metrics_flag_copies_and_name_the_feature_space(files, digits_index, tmp_path):
    paths, _, _ = files
    report = str(tmp_path / "report.png")
    out = _json(runner.invoke(app, ["evaluate", paths["s"], "--index", digits_index, "--json", "--report", report]))
    assert out["memorized_fraction"] == pytest.approx(3 / 8)
    assert out["feature_space"].startswith("pca-whitened-")
    for key in ("frechet", "kid", "precision", "recall", "coverage", "d1_per_dim"):
        assert key in out
    assert out["d1_per_dim"]["min"] == 0.0
    from PIL import Image

    with Image.open(report) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_user_features_and_model_features(files, digits_index, tmp_path):
    paths, x, _ = files
    rng = np.random.default_rng(1)
    feats = tmp_path / "f.npz"
    np.savez(feats, samples=rng.standard_normal((8, 3)), train=rng.standard_normal((50, 3)))
    out = _json(runner.invoke(app, ["evaluate", paths["s"], "--index", digits_index, "--features", str(feats),
                                    "--json"]))
    assert out["feature_space"] == "user:f.npz" and out["feature_dim"] == 3
    np.savez(feats, samples=rng.standard_normal((4, 3)), train=rng.standard_normal((50, 3)))
    bad = runner.invoke(app, ["evaluate", paths["s"], "--index", digits_index, "--features", str(feats)])
    assert bad.exit_code == 1 and "4 sample rows" in bad.stderr

    from diffcli.models.precond import build_model, default_config
    from diffcli.models.saved import save_model

    cfg = default_config((1, 8, 8), 0.6, width=8)
    model = str(tmp_path / "m.eqx")
    save_model(model, build_model(cfg, jax.random.PRNGKey(0)), cfg, {})
    out = _json(runner.invoke(app, ["evaluate", paths["s"], "--index", digits_index, "--model", model, "--json",
                                    "--max-reference", "64"]))
    assert out["feature_space"].startswith("reference-net-bottleneck(m.eqx") and out["feature_dim"] == 16


def test_refusals_are_one_sentence(files, tmp_path):
    paths, _, _ = files
    foreign = tmp_path / "foreign.h5"
    foreign.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    for args, code, words in [
        ([str(foreign), "--reference", paths["r"]], 1, "not an HDF5 file or it is truncated"),
        ([paths["s"], "--reference", paths["other"]], 1, "same noise"),
        ([paths["s"]], 2, "nothing to compare against"),
        ([str(tmp_path / "missing.h5"), "--reference", paths["r"]], 1, "does not exist"),
        ([paths["s"], "--reference", paths["r"], "--model", "m.eqx"], 2, "need the training set"),
    ]:
        res = runner.invoke(app, ["evaluate", *args])
        assert res.exit_code == code, res.output
        assert words in res.stderr and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_vector_metrics_on_a_gaussian_target(tmp_path):
    ds = load_dataset("gmm:dim=3,components=1,std=0.5,n=600")
    index = build_index(ds, str(tmp_path / "g.h5"), coarse=False)
    rng = np.random.default_rng(2)
    mean = ds.extra["gmm/means"][0]
    good = (mean + 0.5 * rng.standard_normal((400, 3))).astype(np.float32)
    bad = (mean + 1.5 * rng.standard_normal((400, 3))).astype(np.float32)
    out = {}
    for name, arr in (("good", good), ("bad", bad)):
        path = str(tmp_path / f"{name}.h5")
        write_samples(path, samples=arr, noise=arr, ids=np.arange(400), settings={"seed": 0}, sigmas=[1.0, 0.0])
        out[name] = _json(runner.invoke(app, ["evaluate", path, "--index", index, "--json"]))
    for key in ("sliced_w2", "mmd2", "gaussian_kl", "gaussian_w2"):
        assert out["good"][key] < out["bad"][key]
    # W2 between N(m, 0.25 I) and N(m, 2.25 I) in 3-D is sqrt(3) * (1.5 - 0.5); the fit is close to it
    assert out["bad"]["gaussian_w2"] == pytest.approx(np.sqrt(3.0), rel=0.1)
    assert out["good"]["mode_weight_tv"] == 0.0


def test_train_command_refusals(tmp_path):
    for args, code, words in [
        (["--dataset", "digits", "--index", "x.h5"], 2, "not both"),
        (["--index", str(tmp_path / "missing.h5")], 1, "does not exist"),
        (["--dataset", "nosuchdata"], 2, "unknown dataset"),
    ]:
        res = runner.invoke(app, ["train", *args, "--out", str(tmp_path / "m.eqx")])
        assert res.exit_code == code, res.output
        assert words in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_train_command_end_to_end(digits_index, tmp_path):
    out = str(tmp_path / "m.eqx")
    res = _json(runner.invoke(app, ["train", "--index", digits_index, "--steps", "4", "--batch-size", "16",
                                    "--width", "8", "--save-every", "2", "--out", out, "--json"]))
    assert res["steps"] == 4 and res["model"] == out
    again = _json(runner.invoke(app, ["train", "--index", digits_index, "--steps", "6", "--batch-size", "16",
                                      "--width", "8", "--save-every", "2", "--out", out, "--resume", "--json"]))
    assert again["resumed_from"] == 4

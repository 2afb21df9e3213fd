"""The CLI through CliRunner and `python -m diffcli`: the default run, files written, every bad input."""

import json
import os
import subprocess
import sys

import h5py
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from diffcli.cli import app
from tests.helpers.tolerance import assert_close

runner = CliRunner()
SMALL = ["--steps", "4", "-n", "6", "--batch-size", "4", "--json"]


def invoke(*args):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def sampled(tmp_path_factory, digits_index_path):
    out = tmp_path_factory.mktemp("s") / "run"
    res = invoke("sample", "--index", digits_index_path, "--solver", "euler", "--out", str(out), *SMALL)
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_sample_writes_samples_noise_settings_and_grid(sampled):
    out, summary = sampled
    assert summary["n"] == 6 and summary["nfe"] == 4 and summary["rounds"] == 4 and summary["seconds"] > 0
    with h5py.File(out / "samples.h5") as f:
        assert f["samples"].shape == (6, 1, 8, 8) and f["samples"].dtype == np.float32
        assert f["noise"].shape == (6, 1, 8, 8)
        assert f.attrs["solver"] == "euler" and f.attrs["seed"] == 0 and f.attrs["steps"] == 4
        assert len(f.attrs["sigmas"]) == 5 and f.attrs["sigmas"][-1] == 0
        assert f.attrs["diffcli_version"]
        np.testing.assert_allclose(f["noise"][...].std(), f.attrs["sigmas"][0], rtol=0.2)
    assert (out / "grid.png").stat().st_size > 0


def test_same_seed_same_samples_whatever_the_batch_size(sampled, tmp_path, digits_index_path):
    out, _ = sampled
    res = invoke("sample", "--index", digits_index_path, "--solver", "euler", "--out", str(tmp_path / "b"),
                 "--steps", "4", "-n", "6", "--batch-size", "6")
    assert res.exit_code == 0, res.output
    with h5py.File(out / "samples.h5") as a, h5py.File(tmp_path / "b" / "samples.h5") as b:
        # batches of 4 and 6 are two compiled programs: the same noise up to a few float32 roundings of its size
        assert_close(a["noise"][...], b["noise"][...], dtype=np.float32, ulps=4)
        np.testing.assert_allclose(a["samples"][...], b["samples"][...], atol=1e-5)


def test_shards_are_the_matching_slices(sampled, tmp_path, digits_index_path):
    out, _ = sampled
    res = invoke("sample", "--index", digits_index_path, "--solver", "euler", "--out", str(tmp_path / "s"),
                 "--shard", "1/3", *SMALL)
    assert res.exit_code == 0, res.output
    with h5py.File(out / "samples.h5") as a, h5py.File(tmp_path / "s" / "samples.h5") as b:
        assert b["ids"][...].tolist() == [1, 4]
        np.testing.assert_allclose(b["samples"][...], a["samples"][...][[1, 4]], atol=1e-5)


def test_existing_output_refused_then_overwritten(sampled, digits_index_path):
    out, _ = sampled
    args = ["sample", "--index", digits_index_path, "--solver", "euler", "--out", str(out), *SMALL]
    res = invoke(*args)
    assert res.exit_code == 1 and "--overwrite" in res.stderr
    assert invoke(*args, "--overwrite").exit_code == 0


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["--denoiser", "magic"], 2, "unknown denoiser 'magic'; choose from:"),
        (["--solver", "rk99"], 2, "unknown solver 'rk99'"),
        (["--schedule", "zigzag"], 2, "zigzag"),
        (["--dataset", "imaginary"], 2, "unknown dataset 'imaginary'"),
        (["--steps", "0"], 2, "--steps"),
        (["-n", "0"], 2, "--num-samples"),
        (["--shard", "3/2"], 2, "--shard"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_code(tmp_path, args, code, fragment):
    res = invoke("sample", "--out", str(tmp_path / "o"), *args)
    assert res.exit_code == code, res.output
    assert fragment in res.stderr
    assert "Traceback" not in res.output and len(res.stderr.strip().splitlines()) == 1


def test_missing_truncated_and_foreign_index(tmp_path, digits_index_path):
    bad = tmp_path / "t.h5"
    bad.write_bytes(open(digits_index_path, "rb").read()[:5000])
    foreign = tmp_path / "f.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    for path, fragment in ((tmp_path / "none.h5", "does not exist"), (bad, "not a usable"), (foreign, "not written")):
        res = invoke("sample", "--index", str(path), "--out", str(tmp_path / "o"), "--overwrite")
        assert res.exit_code == 1 and fragment in res.stderr and "Traceback" not in res.output


def test_nan_during_sampling_is_named(tmp_path, digits_index_path, monkeypatch):
    import diffcli.denoisers.empirical as emp

    real = emp.EmpiricalDenoiser.__call__
    monkeypatch.setattr(emp.EmpiricalDenoiser, "__call__",
                        lambda self, x, s, key=None: real(self, x, s) / (jnp.max(jnp.asarray(s)) > 1.0))
    res = invoke("sample", "--index", digits_index_path, "--solver", "euler", "--steps", "6", "-n", "2",
                 "--out", str(tmp_path / "nan"))
    assert res.exit_code == 1 and "NaN or inf at step" in res.stderr and "sigma=" in res.stderr
    assert not (tmp_path / "nan" / "samples.h5").exists()


def test_recipe_fills_only_unset_options(tmp_path, digits_index_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('solver = "euler"\nsteps = 3\nnum_samples = 2\n[datasets.digits]\nsteps = 5\n')
    res = invoke("sample", "--recipe", str(recipe), "--dataset", "digits", "--steps", "2", "--json",
                 "--out", str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n"] == 2 and summary["nfe"] == 2  # explicit --steps 2 beats the recipe's 5 and 3
    recipe.write_text('solvr = "euler"\n')
    res = invoke("sample", "--recipe", str(recipe), "--out", str(tmp_path / "r2"))
    assert res.exit_code == 2 and "unknown option 'solvr'" in res.stderr


def test_index_build_command(tmp_path):
    res = invoke("index-build", "--dataset", "shapes:res=16,n=50", "--out", str(tmp_path / "s.h5"), "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n"] + summary["n_heldout"] == 50 and summary["shape"] == [3, 16, 16]


def test_python_dash_m_in_a_subprocess(tmp_path, digits_index_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "diffcli", "sample", "--index", str(digits_index_path), "--solver", "euler",
         "--out", str(tmp_path / "p"), *SMALL], capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] == 6
    bad = subprocess.run([sys.executable, "-m", "diffcli", "sample", "--solver", "nope"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "unknown solver" in bad.stderr and "Traceback" not in bad.stderr


def test_picard_newton_flag_reaches_the_solver(tmp_path, digits_index_path):
    """Two rounds on one 4-step window with the (smooth) Wiener denoiser: the quasi-Newton run lands nearer the
    sequential euler sample than plain Picard."""
    runs = {"euler": ["--solver", "euler"]}
    for flag in ("--picard-newton", "--no-picard-newton"):
        runs[flag] = ["--solver", "picard", "--picard-mode", "ode", "--picard-window", "4", "--picard-iters", "2", flag]
    samples = {}
    for name, args in runs.items():
        res = invoke("sample", "--index", digits_index_path, "--denoiser", "wiener", *args, "--out",
                     str(tmp_path / name), *SMALL)
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["rounds"] == (4 if name == "euler" else 2)
        with h5py.File(tmp_path / name / "samples.h5") as f:
            samples[name] = f["samples"][...]
    errs = {k: float(np.linalg.norm(v - samples["euler"])) for k, v in samples.items() if k != "euler"}
    assert errs["--picard-newton"] < errs["--no-picard-newton"], errs

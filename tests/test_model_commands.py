"""Networks from outside in the commands other than `sample`: `schedule-fit` measures a wrapped network's loss curve
(a JAX or PyTorch network that returns the exact eps of the index's Gaussian mixture must give the `gmm` denoiser's
curve from the same noise), refuses flags that do not apply in one sentence, and `evaluate` reads samples made with
such a network."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from diffcli.cli import app
from tests.test_model_wrappers import write_mixture_net
from tests.test_torch_bridge import SKIP, TORCH_MIXTURE

runner = CliRunner()
DIM = 5
FIT = ["schedule-fit", "--examples", "12", "--grid-points", "8", "--batch-size", "12", "--steps", "5", "--no-plot",
       "--json"]


@pytest.fixture(scope="module")
def mixture_index(tmp_path_factory):
    """(folder, index path, JAX model spec) of a gmm index and a JAX network returning its exact eps on sigma."""
    from diffcli.data import load_dataset
    from diffcli.index import open_index
    from diffcli.index.build import build_index

    d = tmp_path_factory.mktemp("modelcmd")
    idx = build_index(load_dataset(f"gmm:dim={DIM},components=3,n=200"), d / "g.h5", coarse=False)
    g = open_index(idx).gmm
    model = write_mixture_net(d / "net.py", g["means"], g["stds"], g["weights"])
    return d, str(idx), f"{model}:exact_eps"


def fit(index, out, *args):
    res = runner.invoke(app, [*FIT, "--index", index, "--out", str(out), *args])
    doc = json.loads(open(out).read()) if res.exit_code == 0 else None
    return res, doc


def test_schedule_fit_measures_a_jax_model_as_the_exact_denoiser(mixture_index):
    d, index, spec = mixture_index
    res, want = fit(index, d / "gmm.json", "--denoiser", "gmm")
    assert res.exit_code == 0, res.output
    res, got = fit(index, d / "jax.json", "--denoiser", "jax", "--model", spec)
    assert res.exit_code == 0, res.output
    a, b = np.array(got["loss_curve"]["loss"]), np.array(want["loss_curve"]["loss"])
    assert a.shape == (8,) and np.all(b > 0)
    np.testing.assert_allclose(a, b, rtol=2e-3)  # float32 x - sigma * (x - x0) / sigma against x0
    np.testing.assert_allclose(got["sigmas"], want["sigmas"], rtol=1e-3)
    src = got["source"]
    # the resolved parameterisation (here from the factory's declaration) is recorded with the model spec
    assert (src["denoiser"], src["model"], src["model_output"], src["model_noise"]) == ("jax", spec, "eps", "ve")


def test_schedule_fit_refuses_what_does_not_apply_in_one_sentence(mixture_index, tmp_path):
    d, index, spec = mixture_index
    cases = [
        (["--index", index, "--denoiser", "empirical", "--model-output", "eps"], 2,
         "--model-output applies to --denoiser jax, torch, diffusers only; this run uses --denoiser empirical."),
        (["--loss-file", str(tmp_path / "log.csv"), "--model", spec], 2,
         "--model applies when the loss curve is measured (--dataset/--index), not with --loss-file."),
        (["--index", index, "--denoiser", "jax", "--model", spec, "--model-noise", "vp-linear"], 2,
         "--model-noise vp-linear contradicts"),
        (["--index", index, "--denoiser", "jax", "--model", str(tmp_path / "none.py:f")], 1, "does not exist."),
        (["--index", index, "--denoiser", "jax", "--model", spec, "--model-output", "y0"], 2,
         "--model-output 'y0' is not one of: x0, eps, v, edm."),
        (["--index", index, "--denoiser", "neural"], 2, "the neural denoiser needs a model file"),
    ]
    for args, code, text in cases:
        res = runner.invoke(app, [*FIT, "--out", str(tmp_path / "s.json"), *args])
        assert res.exit_code == code and text in res.stderr, (args, res.output)
        assert "Traceback" not in res.output and res.stderr.count("\n") == 1


def test_schedule_fit_measures_a_torch_model_as_the_exact_denoiser(mixture_index):
    pytest.importorskip("torch", reason=SKIP)
    from diffcli.index import open_index

    d, index, _ = mixture_index
    g = open_index(index).gmm
    path = d / "torch_net.py"
    path.write_text(TORCH_MIXTURE.format(**{k: json.dumps(np.asarray(g[k]).tolist())
                                            for k in ("means", "stds", "weights")}))
    res, want = fit(index, d / "gmm_t.json", "--denoiser", "gmm")
    assert res.exit_code == 0, res.output
    res, got = fit(index, d / "torch.json", "--denoiser", "torch", "--model", f"{path}:make", "--model-device", "cpu")
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(got["loss_curve"]["loss"], want["loss_curve"]["loss"], rtol=5e-3)
    assert (got["source"]["model_output"], got["source"]["model_noise"]) == ("eps", "vp-linear")


def test_evaluate_reads_samples_made_with_a_jax_model(mixture_index):
    d, index, spec = mixture_index
    common = ["sample", "--index", index, "--solver", "heun", "--steps", "6", "-n", "6", "--json"]
    res = runner.invoke(app, [*common, "--denoiser", "jax", "--model", spec, "--out", str(d / "s_jax")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*common, "--denoiser", "gmm", "--out", str(d / "s_gmm")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", str(d / "s_jax" / "samples.h5"), "--reference",
                              str(d / "s_gmm" / "samples.h5"), "--index", index, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    # the wrapped network is the exact denoiser, so its samples match the gmm run's to float32 round-off
    r2 = [v for k, v in out.items() if "r2" in k and isinstance(v, float)]
    assert r2 and min(r2) > 0.9999, out


EDM_NET = """
import equinox as eqx
import jax

from diffcli.models.saved import load_model


class Batched(eqx.Module):
    \"\"\"diffcli's raw network F(c_in x, c_noise) for one sample, mapped over a batch.\"\"\"

    net: eqx.Module

    def __call__(self, x, c_noise):
        return jax.vmap(self.net)(x, c_noise)


def build():
    model, config, _ = load_model({path!r})
    return {{"apply": Batched(model.net), "output": "edm", "noise": "ve", "sigma_data": model.sigma_data}}
"""


@pytest.mark.slow  # building diffcli's network skeleton twice costs ~10 s of CPU (eager initialisation)
def test_diffcli_network_driven_from_outside_equals_the_neural_denoiser(mixture_index):
    """The same weights through --denoiser jax (EDM parameterisation, declared by the factory) and --denoiser neural:
    the wrapper's EDM preconditioning must reproduce diffcli's own to float32 round-off at every noise level."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from diffcli.models.precond import ModelConfig, build_model
    from diffcli.models.saved import save_model

    d, index, _ = mixture_index
    config = ModelConfig("mlp", (DIM,), 1.3, width=32, depth=2, emb_dim=16)
    save_model(d / "mlp.eqx", build_model(config, jax.random.PRNGKey(3)), config, {"steps": 0})
    (d / "edm_net.py").write_text(EDM_NET.format(path=str(d / "mlp.eqx")))
    from diffcli.denoisers import build_denoiser
    from diffcli.denoisers.options import ModelOptions, NeuralOptions
    from diffcli.index import open_index

    idx = open_index(index)
    neural = build_denoiser("neural", idx, NeuralOptions(model=str(d / "mlp.eqx")))
    outside = build_denoiser("jax", idx, ModelOptions(model=f"{d / 'edm_net.py'}:build"))
    assert outside.recorded()["model_sigma_data"] == pytest.approx(1.3)
    sigma = jnp.repeat(jnp.array([0.01, 0.5, 5.0, 80.0]), 4)
    x = sigma[:, None] * jax.random.normal(jax.random.PRNGKey(0), (16, DIM))
    call = eqx.filter_jit(lambda den, a, s: den(a, s))
    want, got = np.asarray(call(neural, x, sigma)), np.asarray(call(outside, x, sigma))
    assert np.abs(want).max() > 0.01
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * max(1.0, np.abs(want).max()))


def test_bench_neural_merge_keeps_the_other_parts_of_the_same_network():
    from benchmarks.bench_neural import merged

    config = {"kind": "unet", "shape": (3, 16, 16), "mults": (1, 2, 2)}
    earlier = json.loads(json.dumps({"network": {"config": config}, "picard": {"rows": [1]},
                                     "timings_s": {"picard": 5.0, "total": 5.0}}))  # as read back from the file
    res = {"network": {"config": config}, "las": {"rows": [2]}, "timings_s": {"las": 7.0, "total": 7.0}}
    doc = merged(earlier, res)
    assert doc["picard"] == {"rows": [1]} and doc["las"] == {"rows": [2]}
    assert doc["timings_s"] == {"picard": 5.0, "las": 7.0, "total": 7.0}
    other = {**res, "network": {"config": {**config, "shape": (1, 8, 8)}}}
    assert merged(earlier, other) is other  # another network's parts are not mixed in

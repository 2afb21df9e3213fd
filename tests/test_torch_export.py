"""diffcli's networks mirrored in PyTorch: the mirror of a small U-Net (and residual MLP), weights perturbed off
their initial values, gives the same D(x, sigma) through the torch bridge as the equinox network does in JAX; a
float64 mirror is the reference. Samplers driven through the bridge equal the JAX ones, `diffcli sample --denoiser
torch --model diffcli.models.torch_export:build` equals `--denoiser neural` on the same model file, and a missing or
mismatched model file is one sentence. Skipped without the `torch` extra."""

import json

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from diffcli.denoisers.neural import NeuralDenoiser
from diffcli.errors import DiffcliError
from diffcli.models.precond import ModelConfig, build_model
from tests.helpers.tolerance import assert_close

torch = pytest.importorskip("torch", reason="needs the torch extra (pip install -e '.[torch]')")

from diffcli.models import torch_export  # noqa: E402  (imports torch)
from diffcli.models.torch_bridge import torch_network  # noqa: E402
from diffcli.models.wrappers import ModelDenoiser, resolve_parameterisation  # noqa: E402

UNET = ModelConfig("unet", (1, 8, 8), 0.6, width=8, mults=(1, 2), blocks=1, emb_dim=16)
MLP = ModelConfig("mlp", (6,), 1.3, width=16, emb_dim=16, depth=3)
SIGMAS = np.array([0.002, 0.03, 0.4, 1.0, 7.0, 80.0], np.float32)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These networks are tiny: PyTorch's thread pool only adds its start-up and, on a loaded machine, waits on
    threads the OS has not scheduled (seconds per call instead of milliseconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def perturbed(config: ModelConfig, seed: int = 0):
    """A fresh network with every weight moved off its initial value (the zero output layer, GroupNorm's ones and
    zeros), so every layer and its mirror's copy matter."""
    model = build_model(config, jax.random.PRNGKey(seed))
    leaves, tree = jax.tree_util.tree_flatten(eqx.filter(model, eqx.is_array))
    rng = np.random.default_rng(seed)  # NumPy draws: no compile per weight shape
    moved = [jnp.asarray(w + 0.1 * rng.standard_normal(w.shape).astype(np.float32)) for w in leaves]
    return eqx.combine(jax.tree_util.tree_unflatten(tree, moved), model)


def bridged(model, config: ModelConfig, dtype) -> ModelDenoiser:
    """The mirror behind the torch bridge, wrapped by the parameterisation it declares."""
    net = torch_export.mirror(model.net, dtype)
    param = resolve_parameterisation({}, torch_export.declaration(config.sigma_data))
    return ModelDenoiser.wrap(torch_network(net, config.shape, device="cpu"), param)


def network_condition(module) -> float:
    """How much float32 rounding the network can amplify: the number of weighted layers (a bound on the longest
    path) times sqrt(largest fan-in) (a dot product of n terms carries about sqrt(n) roundings)."""
    layers = [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    fan_in = max(m.weight[0].numel() for m in layers)
    return len(layers) * float(np.sqrt(fan_in))


def noisy(config: ModelConfig, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, (len(SIGMAS), *config.shape))
    eps = rng.standard_normal(x0.shape)
    return (x0 + SIGMAS.reshape((-1,) + (1,) * len(config.shape)) * eps).astype(np.float32)


@pytest.mark.parametrize("config", [UNET, MLP], ids=["unet", "mlp"])
def test_the_mirror_gives_the_networks_denoiser(config):
    model = perturbed(config)
    x, s = jnp.asarray(noisy(config)), jnp.asarray(SIGMAS)
    jax_d = np.asarray(jax.jit(lambda d, x, s: d(x, s))(NeuralDenoiser(model), x, s))
    ref = bridged(model, config, torch.float64)  # the mirror in float64: the reference for both float32 programs
    want = np.asarray(ref(x, s))
    assert ref.net.fn.host.dtype == torch.float64
    cond = network_condition(torch_export.mirror(model.net))
    f32 = np.asarray(jax.jit(lambda d, x, s: d(x, s))(bridged(model, config, torch.float32), x, s))
    for got, name in ((jax_d, "equinox in JAX"), (f32, "the float32 mirror")):
        for i, sigma in enumerate(SIGMAS):  # per sample: D is O(|x|) at large sigma, O(1) at small
            assert_close(got[i], want[i], dtype=np.float32, cond=cond, scale=np.abs(want[i]).max(),
                         err_msg=f"{name}, sigma {sigma}")
    # the check can fail: a network with one bias off by 0.1 is far outside that tolerance
    nudged = eqx.tree_at(lambda m: m.net.embed.lin2.bias, model, model.net.embed.lin2.bias + 0.1)
    off = np.asarray(bridged(nudged, config, torch.float64)(x, s))
    assert np.abs(off - want).max() > 10 * 8 * cond * np.finfo(np.float32).eps * np.abs(want).max()


@pytest.mark.parametrize("solver, options", [
    ("euler", {}), ("picard", {"picard_mode": "ode"}),
    pytest.param("ddpm", {}, marks=pytest.mark.slow),
    pytest.param("picard", {"picard_mode": "sde"}, marks=pytest.mark.slow),
])
def test_samplers_through_the_bridge_equal_the_jax_ones(solver, options):
    from diffcli.sample.batches import initial_noise, solver_keys
    from diffcli.schedules import get_schedule
    from diffcli.solvers import get_solver

    model = perturbed(UNET)
    den = bridged(model, UNET, torch.float32)
    host = den.net.fn.host
    steps = 6
    sigmas = jnp.asarray(get_schedule("edm", steps, sigma_min=0.002, sigma_max=80.0), jnp.float32)
    ids = np.arange(2)
    x_t = float(sigmas[0]) * initial_noise(0, ids, UNET.shape)
    keys = solver_keys(0, ids)
    run = eqx.filter_jit(lambda d, x, k: get_solver(solver)(d, x, sigmas, key=k, **options))
    want = run(NeuralDenoiser(model), x_t, keys)
    host.calls = host.rows = 0
    got = run(den, x_t, keys)
    assert int(np.max(got.rounds)) == int(np.max(want.rounds)) and int(np.max(got.nfe)) == int(np.max(want.nfe))
    assert host.rows == int(np.max(got.nfe)) * len(ids)  # every evaluation ran in PyTorch
    # each step passes the denoiser's rounding on, amplified at most by the step count
    cond = steps * network_condition(torch_export.mirror(model.net))
    assert_close(got.x0, want.x0, dtype=np.float32, cond=cond, scale=np.abs(np.asarray(want.x0)).max(),
                 err_msg=f"{solver} {options}")


@pytest.mark.slow
def test_sample_with_the_exported_factory_equals_the_neural_denoiser(digits_index_path, tmp_path, monkeypatch):
    from diffcli.cli import app
    from diffcli.models.saved import save_model

    model_file = str(tmp_path / "small.eqx")
    save_model(model_file, perturbed(UNET), UNET, {"dataset": "digits"})
    monkeypatch.setenv(torch_export.MODEL_ENV, model_file)
    runner = CliRunner()
    common = ["sample", "--index", digits_index_path, "--solver", "heun", "--steps", "5", "-n", "3", "--json"]
    outs = {}
    for name, flags in (("neural", ["--denoiser", "neural", "--model", model_file]),
                        ("torch", ["--denoiser", "torch", "--model", "diffcli.models.torch_export:build",
                                   "--model-device", "cpu"])):
        res = runner.invoke(app, [*common, *flags, "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["n"] == 3
        with h5py.File(tmp_path / name / "samples.h5") as f:
            outs[name] = f["samples"][...]
            if name == "torch":
                assert f.attrs["denoiser"] == "torch"
    cond = 2 * 5 * network_condition(torch_export.mirror(perturbed(UNET).net))  # heun: two evaluations per step
    assert_close(outs["torch"], outs["neural"], dtype=np.float32, cond=cond, scale=np.abs(outs["neural"]).max())


def test_a_missing_or_mismatched_model_file_is_one_sentence(tmp_path, monkeypatch):
    from diffcli.models.external import call_factory
    from diffcli.models.saved import save_model

    spec = "diffcli.models.torch_export:build"
    monkeypatch.delenv(torch_export.MODEL_ENV, raising=False)
    with pytest.raises(DiffcliError, match=r"raised DiffcliError: set DIFFCLI_TORCH_EXPORT to the model file"):
        call_factory(spec, (1, 8, 8), denoiser="torch")
    monkeypatch.setenv(torch_export.MODEL_ENV, str(tmp_path / "absent.eqx"))
    with pytest.raises(DiffcliError, match=r"absent.eqx' does not exist"):
        call_factory(spec, (1, 8, 8), denoiser="torch")
    path = tmp_path / "mlp.eqx"
    save_model(str(path), build_model(MLP, jax.random.PRNGKey(0)), MLP, {})
    monkeypatch.setenv(torch_export.MODEL_ENV, str(path))
    with pytest.raises(DiffcliError, match=r"trained on samples of shape \(6,\), not \(1, 8, 8\)"):
        call_factory(spec, (1, 8, 8), denoiser="torch")
    returned = call_factory(spec, (6,), denoiser="torch")
    assert isinstance(returned["module"], torch_export.ResMLP)
    assert returned["model_output"] == "edm" and returned["model_sigma_data"] == pytest.approx(1.3)
    with pytest.raises(DiffcliError, match="no PyTorch mirror of a Linear"):
        torch_export.mirror(eqx.nn.Linear(2, 2, key=jax.random.PRNGKey(0)))

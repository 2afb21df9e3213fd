"""PyTorch networks behind jax.pure_callback: an exact mixture denoiser written in PyTorch equals `gmm` through every
solver (one Picard round is one batched PyTorch call), diffusers folders run `diffcli sample` end to end, and every
bad model or folder is one sentence. The tests that run PyTorch skip without the `torch` extra."""

import json
import sys

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from diffcli.denoisers.gmm import GMMDenoiser
from diffcli.denoisers.options import TorchModelOptions
from diffcli.errors import DiffcliError
from diffcli.models.torch_bridge import scheduler_parameterisation
from tests.helpers.gaussian_oracle import x64
from tests.helpers.tolerance import assert_close
from tests.test_model_wrappers import SOLVER_NAMES, SOLVER_SIGMAS

runner = CliRunner()
SKIP = "needs the torch extra (pip install -e '.[torch]')"
DIM = 5

TORCH_MIXTURE = """
import math

import numpy as np
import torch

MEANS, STDS, WEIGHTS = {means}, {stds}, {weights}


class MixtureEps(torch.nn.Module):
    \"\"\"eps of an isotropic Gaussian mixture for a linear-beta DDPM: input x_vp, fractional timestep t.\"\"\"

    def __init__(self, dtype):
        super().__init__()
        abar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
        self.register_buffer("log_sigmas", torch.tensor(0.5 * np.log((1 - abar) / abar), dtype=dtype))
        self.register_buffer("means", torch.tensor(MEANS, dtype=dtype))
        self.register_buffer("stds", torch.tensor(STDS, dtype=dtype))
        self.register_buffer("log_w", torch.log(torch.tensor(WEIGHTS, dtype=dtype)))

    def forward(self, x_vp, t):
        lo = t.floor().clamp(0, len(self.log_sigmas) - 2)
        i = lo.long()
        sigma = torch.exp(torch.lerp(self.log_sigmas[i], self.log_sigmas[i + 1], t - lo))
        x = x_vp.reshape(len(t), -1) * torch.sqrt(1 + sigma[:, None] ** 2)
        var = self.stds[None] ** 2 + sigma[:, None] ** 2
        sq = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)
        r = torch.softmax(self.log_w - 0.5 * x.shape[1] * torch.log(var) - 0.5 * sq / var, dim=1)
        shrink = self.stds[None] ** 2 / var
        x0 = x * (r * shrink).sum(1, keepdim=True) + (r * (1 - shrink)) @ self.means
        return ((x - x0) / sigma[:, None]).reshape(x_vp.shape)


def make(shape):
    return MixtureEps(torch.float32), "eps", "vp-linear"


def make64():
    return {{"module": MixtureEps(torch.float64), "output": "eps", "noise": "vp-linear", "timesteps": 1000}}


def boom():
    raise ValueError("checkpoint missing")


def wrong_shape():
    return lambda x, t: x[:, :2], "eps"
"""


def mixture(dim=DIM, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return 2.0 * rng.standard_normal((k, dim)), rng.uniform(0.2, 0.8, k), np.full(k, 1.0 / k)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason=SKIP)


@pytest.fixture(scope="module")
def torch_file(tmp_path_factory):
    means, stds, weights = mixture()
    path = tmp_path_factory.mktemp("torchnet") / "mixture_net.py"
    path.write_text(TORCH_MIXTURE.format(**{k: json.dumps(np.asarray(v).tolist()) for k, v in
                                            (("means", means), ("stds", stds), ("weights", weights))}))
    return str(path)


def build_torch(spec, **opts):
    from diffcli.denoisers.torch_model import build_torch as build

    return build(type("I", (), {"shape": (DIM,)})(), TorchModelOptions(model=spec, model_device="cpu", **opts))


def test_the_bridge_is_exact_in_float64(torch, torch_file):
    means, stds, weights = mixture()
    rng = np.random.default_rng(1)
    with x64():
        den = build_torch(f"{torch_file}:make64")
        gmm = GMMDenoiser.from_arrays(means, stds, weights, dtype=np.float64)
        table = np.exp(np.asarray(den.log_sigmas))
        call = jax.jit(lambda d, x, s: d(x, s))
        for sigma in [*table[[0, 5, 300, 900]], *np.geomspace(0.02, 80.0, 5)]:
            x = means[rng.integers(0, 3, 8)] + np.sqrt(0.3 + sigma**2) * rng.standard_normal((8, DIM))
            got = call(den, jnp.asarray(x), jnp.full(8, sigma))
            assert got.dtype == jnp.float64
            assert_close(got, gmm(jnp.asarray(x), jnp.full(8, sigma)), dtype=np.float64, ulps=64, cond=8.0,
                         scale=np.abs(x).max() + 1.0, err_msg=f"sigma={sigma:.4g}")


def test_every_solver_runs_pytorch_as_the_exact_denoiser_and_picard_rounds_are_one_call(torch, torch_file):
    from diffcli.sample.batches import generate
    from diffcli.solvers import get_solver

    means, stds, weights = mixture()
    den = build_torch(f"{torch_file}:make")
    host = den.net.fn.host
    gmm = GMMDenoiser.from_arrays(means, stds, weights)
    sigmas = SOLVER_SIGMAS  # inside the DDPM table's sigmas
    n = 4
    for name in SOLVER_NAMES:
        # the reference runs are the programs test_model_wrappers compiles (the same shapes): one compile per suite
        kw = dict(solver=get_solver(name), sigmas=sigmas, shape=(DIM,), ids=np.arange(n), seed=3, batch_size=n)
        host.calls = host.rows = 0
        got = generate(denoiser=den, **kw)
        want = generate(denoiser=gmm, **kw)
        assert_close(got.samples, want.samples, dtype=np.float32, ulps=64, cond=16.0, err_msg=name)
        assert host.rows == got.nfe * n, name  # every evaluation went through PyTorch, none twice
        if name == "picard":  # one round, one batched call of window x batch rows
            assert host.calls == got.rounds and got.nfe > got.rounds


def test_vmap_is_one_call(torch, torch_file):
    den = build_torch(f"{torch_file}:make")
    host = den.net.fn.host
    host.calls = host.rows = 0
    x = jnp.ones((3, 4, DIM), jnp.float32)
    s = jnp.array([0.5, 1.0, 2.0], jnp.float32)
    out = jax.jit(jax.vmap(lambda x, s: den(x, s)))(x, s)
    assert out.shape == x.shape and (host.calls, host.rows) == (1, 12)
    direct = den(x.reshape(12, DIM), jnp.repeat(s, 4))
    assert_close(out.reshape(12, DIM), direct, dtype=np.float32, ulps=8)


@pytest.mark.parametrize("factory, pattern", [
    ("boom", "the model factory '.*:boom' raised ValueError: checkpoint missing."),
    ("wrong_shape", r"returned shape \(2, 2\) for a batch of shape \(2, 5\)."),
])
def test_bad_torch_models_are_one_sentence(torch, torch_file, factory, pattern):
    with pytest.raises(DiffcliError, match=pattern):
        build_torch(f"{torch_file}:{factory}")


def test_a_missing_extra_is_one_sentence(monkeypatch):
    from diffcli.denoisers.torch_model import build_diffusers, build_torch

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    index = type("I", (), {"shape": (1, 8, 8)})()
    with pytest.raises(DiffcliError, match=r"^the torch denoiser needs PyTorch: pip install -e '.\[torch\]'.$"):
        build_torch(index, TorchModelOptions(model="x.py:f"))
    with pytest.raises(DiffcliError, match=r"^the diffusers denoiser needs PyTorch: pip install -e '.\[torch\]'.$"):
        build_diffusers(index, TorchModelOptions(model="."))


# --- diffusers -------------------------------------------------------------------------------------------------------

def test_scheduler_configs_map_to_the_parameterisation():
    got = scheduler_parameterisation({"_class_name": "DDPMScheduler", "beta_schedule": "linear", "beta_start": 0.0001,
                                      "beta_end": 0.02, "num_train_timesteps": 1000,
                                      "prediction_type": "epsilon"}, source="s")
    assert got == {"model_noise": "vp-linear", "model_output": "eps", "model_timesteps": 1000,
                   "model_beta_start": 0.0001, "model_beta_end": 0.02}
    got = scheduler_parameterisation({"beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction",
                                      "num_train_timesteps": 4000}, source="s")
    assert got == {"model_noise": "vp-cosine", "model_output": "v", "model_timesteps": 4000}
    assert scheduler_parameterisation({"prediction_type": "sample"}, source="s")["model_output"] == "x0"
    bad = [({"beta_schedule": "scaled_linear"}, "beta_schedule 'scaled_linear' is not supported; diffcli reads "
                                                "linear and squaredcos_cap_v2."),
           ({"prediction_type": "flow"}, "prediction_type 'flow' is not supported"),
           ({"trained_betas": [0.1, 0.2]}, "trained_betas is not supported"),
           ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr is not supported"),
           ({"_class_name": "ScoreSdeVeScheduler"}, "ScoreSdeVeScheduler schedule is not supported")]
    for config, pattern in bad:
        with pytest.raises(DiffcliError, match=pattern):
            scheduler_parameterisation(config, source="s")


@pytest.fixture(scope="module")
def unet_folder(torch, tmp_path_factory):
    diffusers = pytest.importorskip("diffusers", reason=SKIP)
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D",) * 2,
                                 up_block_types=("UpBlock2D",) * 2)
    folder = tmp_path_factory.mktemp("diffusers") / "tiny"
    unet.save_pretrained(folder)
    diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                            prediction_type="v_prediction").save_pretrained(folder / "scheduler")
    return folder, unet.eval()


def test_a_diffusers_folder_is_its_unet_on_its_scheduler(torch, unet_folder):
    from diffcli.denoisers.torch_model import build_diffusers
    from diffcli.models.wrappers import Parameterisation, vp_sigmas

    folder, unet = unet_folder
    den = build_diffusers(type("I", (), {"shape": (1, 8, 8)})(), TorchModelOptions(model=str(folder),
                                                                                   model_device="cpu"))
    assert (den.param.model_output, den.param.model_noise, den.param.model_timesteps) == ("v", "vp-cosine", 1000)
    # at the table's sigma of timestep 250: D = x / (1 + s^2) - s / sqrt(1 + s^2) * v(x / sqrt(1 + s^2), 250)
    s = float(vp_sigmas(Parameterisation(model_noise="vp-cosine"))[250])
    x = (np.random.default_rng(0).standard_normal((3, 1, 8, 8)) * np.sqrt(1 + s * s)).astype(np.float32)
    with torch.no_grad():
        x_vp = torch.from_numpy((x / np.sqrt(1 + s * s)).astype(np.float32))
        v = unet(x_vp, torch.full((3,), 250.0)).sample.numpy()
    want = x / (1 + s * s) - s / np.sqrt(1 + s * s) * v
    got = np.asarray(den(jnp.asarray(x), jnp.full(3, s, jnp.float32)))
    assert_close(got, want, dtype=np.float32, ulps=64, cond=4.0, scale=np.abs(x).max())


def test_sample_runs_a_diffusers_folder_with_picard(unet_folder, digits_index_path, tmp_path):
    from diffcli.cli import app

    folder, _ = unet_folder
    res = runner.invoke(app, ["sample", "--index", digits_index_path, "--denoiser", "diffusers", "--model",
                              str(folder), "--model-device", "cpu", "--solver", "picard", "--steps", "4", "-n", "3",
                              "--batch-size", "3", "--json", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n"] == 3 and summary["rounds"] >= 1
    with h5py.File(tmp_path / "run" / "samples.h5") as f:
        assert f["samples"].shape == (3, 1, 8, 8) and np.all(np.isfinite(f["samples"][...]))
        assert f.attrs["denoiser"] == "diffusers" and f.attrs["model"] == str(folder)
    assert (tmp_path / "run" / "grid.png").stat().st_size > 0


def test_bad_diffusers_folders_are_one_sentence(unet_folder, tmp_path):
    import shutil

    from diffcli.denoisers.torch_model import build_diffusers
    from diffcli.errors import UsageError

    folder, _ = unet_folder
    index = type("I", (), {"shape": (1, 8, 8)})()
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    noweights = tmp_path / "noweights"
    noweights.mkdir()
    shutil.copy(folder / "config.json", noweights / "config.json")
    (noweights / "scheduler_config.json").write_text(json.dumps({"beta_schedule": "linear"}))
    scaled = tmp_path / "scaled"
    shutil.copytree(folder, scaled)
    (scaled / "scheduler" / "scheduler_config.json").write_text(json.dumps({"beta_schedule": "scaled_linear"}))
    nosched = tmp_path / "nosched"
    shutil.copytree(folder, nosched)
    shutil.rmtree(nosched / "scheduler")
    cases = [
        (tmp_path / "missing", DiffcliError, "model folder '.*missing' does not exist."),
        (tmp_path / "file.txt", DiffcliError, "is a file; the diffusers denoiser needs a folder"),
        (tmp_path / "empty", DiffcliError, r"has no config.json \(nor unet/config.json\)"),
        (other, DiffcliError, "holds a UNet2DConditionModel; diffcli runs unconditional UNet2DModel folders."),
        (noweights, DiffcliError, "cannot be loaded by diffusers: "),
        (scaled, DiffcliError, "beta_schedule 'scaled_linear' is not supported"),
        (nosched, DiffcliError, "has no scheduler config .*; add it or pass --model-output and --model-noise."),
    ]
    for path, kind, pattern in cases:
        with pytest.raises(kind, match=pattern) as info:
            build_diffusers(index, TorchModelOptions(model=str(path), model_device="cpu"))
        assert "\n" not in str(info.value), path
    with pytest.raises(DiffcliError, match=r"takes images of 1 channels; this index holds samples of shape \(5,\)"):
        build_diffusers(type("I", (), {"shape": (5,)})(), TorchModelOptions(model=str(folder)))
    with pytest.raises(UsageError, match="--model-output eps contradicts"):
        build_diffusers(index, TorchModelOptions(model=str(folder), model_output="eps", model_device="cpu"))
    den = build_diffusers(index, TorchModelOptions(model=str(nosched), model_output="eps", model_noise="vp-linear",
                                                   model_device="cpu"))
    assert den.param.model_output == "eps"


def test_torch_flags_are_refused_for_other_denoisers(digits_index_path, tmp_path):
    from diffcli.cli import app

    res = runner.invoke(app, ["sample", "--index", digits_index_path, "--denoiser", "jax", "--model", "m.py:f",
                              "--model-device", "cpu", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--model-device applies to --denoiser torch, diffusers only" in res.stderr



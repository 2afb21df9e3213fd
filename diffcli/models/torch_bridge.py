"""PyTorch networks (and local diffusers model folders) behind diffcli's denoiser contract.

The network runs in PyTorch, called from inside the jitted solvers through `jax.pure_callback`: one batch in, one
batch out. Under `jax.vmap` the callback is called once with the mapped axes broadcast in front
(vmap_method="broadcast_all") and flattened into the batch here, so stacked calls (Picard's rounds) stay one PyTorch
call. torch and diffusers are the optional extra `torch`, imported only when one of these denoisers is chosen.
"""

from __future__ import annotations

import json
import os
import warnings

import jax
import numpy as np

from diffcli.errors import DiffcliError, UsageError
from diffcli.models.wrappers import first_line

INSTALL = "pip install -e '.[torch]'"
SCHEDULE_NOISE = {"linear": "vp-linear", "squaredcos_cap_v2": "vp-cosine"}
PREDICTION_OUTPUT = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
SCHEDULER_FILES = (os.path.join("scheduler", "scheduler_config.json"), "scheduler_config.json")
UNET_CLASSES = ("UNet2DModel",)


def import_torch(denoiser: str = "torch"):
    try:
        import torch
    except ImportError:
        raise DiffcliError(f"the {denoiser} denoiser needs PyTorch: {INSTALL}.") from None
    return torch


def import_diffusers():
    import_torch("diffusers")
    try:
        import diffusers
    except ImportError:
        raise DiffcliError(f"the diffusers denoiser needs diffusers: {INSTALL}.") from None
    return diffusers


def torch_device(name: str):
    """'auto' (cuda when PyTorch sees a GPU), 'cpu', 'cuda' or 'cuda:N' as a torch.device; one sentence otherwise."""
    torch = import_torch()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--model-device '{name}' is not a PyTorch device (auto, cpu, cuda or cuda:N).") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DiffcliError(f"--model-device {name}: PyTorch sees no CUDA GPU here; use --model-device cpu.")
    return device


class TorchNetwork:
    """The host side of the bridge: NumPy batch (and timesteps) in, NumPy batch out. `calls` counts its calls and
    `rows` the samples it evaluated, so tests can see that a batched solver round is one call."""

    def __init__(self, module, sample_shape: tuple[int, ...], device, *, source: str):
        torch = import_torch()
        if isinstance(module, torch.nn.Module):
            module = module.eval().to(device)
            first = next(iter(module.parameters()), None)
            if first is None:
                first = next(iter(module.buffers()), None)
            self.dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        else:
            self.dtype = torch.float32
        self.module, self.sample_shape, self.device, self.source = module, tuple(sample_shape), device, source
        self.calls = 0
        self.rows = 0

    def __call__(self, x, t):
        torch = import_torch()
        x, t = np.asarray(x), np.asarray(t)
        lead = x.shape[: x.ndim - len(self.sample_shape)]  # [B], or [V, B] under vmap (broadcast_all)
        xb = np.ascontiguousarray(x.reshape((-1, *self.sample_shape)))
        tb = np.array(np.broadcast_to(t, lead).reshape(-1))
        # On CPU torch.from_numpy shares the callback's buffer (no copy). On a GPU the batch goes device -> host for
        # the callback and host -> device for PyTorch (and back); handing the device buffer over with DLPack
        # (torch.from_dlpack on a jax.Array) would avoid both copies, which pure_callback's NumPy interface does not.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # read, never written
            xt = torch.from_numpy(xb).to(self.device, self.dtype)
            tt = torch.from_numpy(tb).to(self.device, self.dtype)
            out = self.module(xt, tt)
            out = getattr(out, "sample", out)  # diffusers models return an output object
            if isinstance(out, (tuple, list)):
                out = out[0]
            out = out.detach().to("cpu").numpy()
        self.calls += 1
        self.rows += xb.shape[0]
        if out.shape != xb.shape:
            raise DiffcliError(f"{self.source} returned shape {out.shape} for a batch of shape {xb.shape}.")
        return out.astype(x.dtype, copy=False).reshape(x.shape)

    def check(self) -> None:
        """One real call on a batch of two samples: a network that fails or returns the wrong shape is one
        sentence before any sampling."""
        x = np.zeros((2, *self.sample_shape), np.float32)
        try:
            self(x, np.full((2,), 1.0, np.float32))
        except DiffcliError:
            raise
        except Exception as exc:  # the user's network may raise anything
            raise DiffcliError(f"{self.source} failed on a batch of shape {x.shape}: "
                               f"{type(exc).__name__}: {first_line(exc)}.") from None
        finally:
            self.calls = self.rows = 0


class JaxSide:
    """The JAX side: `f(x, t)` for the wrapper, a pure_callback into the host network (hashable, so static)."""

    def __init__(self, host: TorchNetwork):
        self.host = host

    def __call__(self, x, t):
        out = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return jax.pure_callback(self.host, out, x, t.astype(x.dtype), vmap_method="broadcast_all")


def torch_network(module, sample_shape, *, device: str = "auto", source: str = "the model") -> JaxSide:
    """A PyTorch module `module(x, t) -> output` as a JAX-callable network, checked on a batch of two samples."""
    host = TorchNetwork(module, sample_shape, torch_device(device), source=source)
    host.check()
    return JaxSide(host)


# --- diffusers model folders ----------------------------------------------------------------------------------------

def read_json(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as exc:
        raise DiffcliError(f"{what} '{path}' cannot be read: {first_line(exc)}.") from None
    if not isinstance(value, dict):
        raise DiffcliError(f"{what} '{path}' is not a JSON object.")
    return value


def find_scheduler_config(folder: str) -> str | None:
    for name in SCHEDULER_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def scheduler_parameterisation(config: dict, *, source: str) -> dict:
    """The parameterisation a diffusers scheduler config declares (DDPM-family keys and their defaults)."""
    cls = str(config.get("_class_name", ""))
    if "Ve" in cls and "beta_schedule" not in config:
        raise DiffcliError(f"{source}: the {cls} schedule is not supported (diffcli reads VP schedulers with "
                           "beta_schedule linear or squaredcos_cap_v2).")
    if config.get("trained_betas") is not None:
        raise DiffcliError(f"{source}: a scheduler with trained_betas is not supported (diffcli reads beta_schedule "
                           "linear or squaredcos_cap_v2).")
    if config.get("rescale_betas_zero_snr"):
        raise DiffcliError(f"{source}: rescale_betas_zero_snr is not supported (its last timestep has infinite "
                           "sigma).")
    schedule = config.get("beta_schedule", "linear")
    if schedule not in SCHEDULE_NOISE:
        raise DiffcliError(f"{source}: beta_schedule '{schedule}' is not supported; diffcli reads "
                           f"{' and '.join(SCHEDULE_NOISE)}.")
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_OUTPUT:
        raise DiffcliError(f"{source}: prediction_type '{prediction}' is not supported; diffcli reads "
                           f"{', '.join(PREDICTION_OUTPUT)}.")
    declared = {"model_noise": SCHEDULE_NOISE[schedule], "model_output": PREDICTION_OUTPUT[prediction],
                "model_timesteps": int(config.get("num_train_timesteps", 1000))}
    if schedule == "linear":
        declared["model_beta_start"] = float(config.get("beta_start", 0.0001))
        declared["model_beta_end"] = float(config.get("beta_end", 0.02))
    return declared


def unet_folder(folder: str) -> str:
    """The folder holding the UNet's config.json: the model folder itself, or its unet/ (a pipeline folder)."""
    if not folder:
        raise UsageError("the diffusers denoiser needs --model DIR (a UNet2DModel saved with save_pretrained).")
    if not os.path.exists(folder):
        raise DiffcliError(f"model folder '{folder}' does not exist.")
    if not os.path.isdir(folder):
        raise DiffcliError(f"--model '{folder}' is a file; the diffusers denoiser needs a folder written by "
                           "save_pretrained.")
    for sub in (folder, os.path.join(folder, "unet")):
        if os.path.isfile(os.path.join(sub, "config.json")):
            return sub
    raise DiffcliError(f"model folder '{folder}' has no config.json (nor unet/config.json); save the model with "
                       "save_pretrained.")


def load_diffusers(folder: str, sample_shape: tuple[int, ...], *, device: str = "auto"
                   ) -> tuple[JaxSide, dict | None]:
    """(network, the parameterisation its scheduler config declares, None without one) from a local diffusers
    folder; every fault is one sentence."""
    source = f"model folder '{folder}'"
    where = unet_folder(folder)
    config = read_json(os.path.join(where, "config.json"), "model config")
    cls = config.get("_class_name")
    if cls not in UNET_CLASSES:
        raise DiffcliError(f"{source} holds a {cls or 'model of unknown class'}; diffcli runs unconditional "
                           f"{', '.join(UNET_CLASSES)} folders.")
    sched = find_scheduler_config(folder) or (find_scheduler_config(where) if where != folder else None)
    declared = None
    if sched is not None:
        declared = scheduler_parameterisation(read_json(sched, "scheduler config"), source=source)
    channels = config.get("in_channels")
    if len(sample_shape) != 3 or (channels is not None and int(channels) != sample_shape[0]):
        raise DiffcliError(f"{source} takes images of {channels} channels; this index holds samples of shape "
                           f"{tuple(sample_shape)}.")
    diffusers = import_diffusers()
    try:
        model = getattr(diffusers, cls).from_pretrained(where, low_cpu_mem_usage=False)  # no accelerate needed
    except Exception as exc:  # missing weights, a broken file, a config diffusers refuses
        raise DiffcliError(f"{source} cannot be loaded by diffusers: "
                           f"{type(exc).__name__}: {first_line(exc)}.") from None
    return torch_network(model, sample_shape, device=device, source=source), declared

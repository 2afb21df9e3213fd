"""Each denoiser's own options (flag, default, help, check); `build(index, opts)` reads the fields it names.

`sigmas` and `seed` are context, filled by the caller: the schedule the denoiser will be called on (for per-step
precomputation) and the run's seed. This module imports no JAX, so the command line can list every flag cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffcli.denoisers.els_scales import CALIBRATIONS
from diffcli.errors import UsageError
from diffcli.options import Options, context, option


def chunk_size_option():
    return option(2048, minimum=1, help="Index rows per streamed chunk.")


def mask_threshold_option():
    return option(None, kind=float, minimum=0.0,
                  help="mask threshold on the Wiener gain (default: the dataset's preset).")


def model_option():
    return option(None, kind=str, help="the model: a file from diffcli train (neural), FILE.py:FACTORY or "
                                       "MODULE:FACTORY (jax, torch), a diffusers model folder (diffusers).")


@dataclass(frozen=True)
class ContextOnly(Options):
    """A denoiser with no flags of its own (gmm, wiener)."""

    sigmas: np.ndarray | None = context()
    seed: int = context(0)


@dataclass(frozen=True)
class StreamOptions(Options):
    """Full scans that stream the index in chunks (empirical and its sharded form, nearest)."""

    chunk_size: int = chunk_size_option()
    sigmas: np.ndarray | None = context()
    seed: int = context(0)


@dataclass(frozen=True)
class PcaLocalOptions(Options):
    chunk_size: int = chunk_size_option()
    mask_threshold: float | None = mask_threshold_option()
    sigmas: np.ndarray | None = context()
    seed: int = context(0)


@dataclass(frozen=True)
class GoldenOptions(Options):
    golden_base: str = option("pca-local", choices=("pca-local", "empirical"),
                              help="the denoiser whose weights the golden subset restricts.")
    golden_k_min: int | None = option(None, kind=int, minimum=1,
                                      help="subset size at low noise (default: the dataset's preset).")
    golden_k_max: int | None = option(None, kind=int, minimum=1,
                                      help="subset size at high noise (default: the dataset's preset).")
    golden_tol: float | None = option(None, kind=float, positive=True,
                                      help="certified tail-mass tolerance; sizes the subset itself.")
    golden_estimator: str | None = option(None, kind=str, choices=("paper", "stratified"),
                                          help="paper (random pool, softmax over the subset) or stratified (nearest "
                                               "rows exactly plus regression-corrected uniform draws; the default, "
                                               "paper under --golden-tol or --golden-coarse).")
    golden_coarse: bool = option(False, help="the clustered (sublinear) coarse stage.")
    golden_nprobe: int | None = option(None, kind=int, minimum=1,
                                       help="clusters scanned by the coarse stage.")
    mask_threshold: float | None = mask_threshold_option()
    sigmas: np.ndarray | None = context()
    seed: int = context(0)


@dataclass(frozen=True)
class ElsOptions(Options):
    """ELS and LS (els.py): the patch set and the patch size as a function of sigma (els_scales.py)."""

    els_boundary: str = option("official", choices=("official", "circular"),
                               help="patch set: official (circular query, training patches that fit, zero-padded "
                                    "LS window) or circular (diffcli's own: training images wrap too).")
    els_scales: str | None = option(None, kind=str, choices=tuple(CALIBRATIONS),
                                    help="a named patch-size calibration of Kamb and Ganguli, scaled from 32 px "
                                         "to the image side (names in the README; default: their MNIST ResNet "
                                         "circular one for grey images, their CIFAR-10 one for colour).")
    els_patch_sizes: str | tuple | None = option(None, kind=(str, tuple),
                                                 help="odd patch sizes, comma list from low to high noise: entry i "
                                                      "at cosine time t = i/len (instead of --els-scales).")
    chunk_size: int = chunk_size_option()
    sigmas: np.ndarray | None = context()
    seed: int = context(0)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "els_patch_sizes", parse_patch_sizes(self.els_patch_sizes))
        if self.els_patch_sizes is not None and self.els_scales is not None:
            raise UsageError("give --els-scales or --els-patch-sizes, not both.")


@dataclass(frozen=True)
class NeuralOptions(Options):
    model: str | None = model_option()
    sigmas: np.ndarray | None = context()
    seed: int = context(0)


@dataclass(frozen=True)
class ModelOptions(Options):
    """A network from outside (jax): its parameterisation; a flag the user leaves out is filled by the model's own
    declaration (the factory's dict or tuple, a diffusers scheduler config), then by the default in its help."""

    model: str | None = model_option()
    model_output: str | None = option(None, kind=str, choices=("x0", "eps", "v", "edm"),
                                      help="what the network predicts: x0, eps (noise), v (VP velocity) or edm "
                                           "(F of D = c_skip x + c_out F(c_in x, ln(sigma)/4)); default eps.")
    model_noise: str | None = option(None, kind=str, choices=("ve", "vp-linear", "vp-cosine"),
                                     help="what the network is conditioned on: ve (sigma; input x) or the "
                                          "timestep of a VP model with linear or cosine betas (input "
                                          "x / sqrt(1 + sigma^2)); default vp-linear.")
    model_timesteps: int | None = option(None, kind=int, minimum=2,
                                         help="training timesteps T of a VP model (default 1000).")
    model_timestep_mode: str | None = option(None, kind=str, choices=("fractional", "nearest"),
                                             help="sigma -> VP timestep: fractional (log-sigma interpolation "
                                                  "between the training timesteps) or nearest; default "
                                                  "fractional.")
    model_sigma_data: float | None = option(None, kind=float, positive=True,
                                            help="sigma_data of an edm network (default 0.5).")
    model_beta_start: float | None = option(None, kind=float, positive=True,
                                            help="first beta of a vp-linear model (default 1e-4).")
    model_beta_end: float | None = option(None, kind=float, positive=True,
                                          help="last beta of a vp-linear model (default 0.02).")
    sigmas: np.ndarray | None = context()
    seed: int = context(0)


@dataclass(frozen=True)
class TorchModelOptions(ModelOptions):
    """A PyTorch network (torch: FILE.py:FACTORY; diffusers: a model folder), run by PyTorch on model_device."""

    model_device: str = option("auto", help="where PyTorch runs the network: auto (cuda when available), cpu, "
                                            "cuda or cuda:N.")


def parse_patch_sizes(value) -> tuple[int, ...] | None:
    """'3,5,7' or [3, 5, 7] -> (3, 5, 7); anything else (no sizes, sizes below 1, even sizes) is one sentence."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        sizes = tuple(int(str(v).strip()) for v in parts)
    except ValueError:
        raise UsageError(f"--els-patch-sizes '{value}' is not a comma-separated list of whole numbers.") from None
    if not sizes or min(sizes) < 1:
        raise UsageError(f"--els-patch-sizes '{value}' needs one or more sizes of at least 1.")
    if any(k % 2 == 0 for k in sizes):
        raise UsageError(f"--els-patch-sizes '{value}' needs odd sizes (a patch has a centre pixel).")
    return sizes


DENOISER_OPTIONS = {
    "empirical": StreamOptions,
    "empirical-sharded": StreamOptions,
    "gmm": ContextOnly,
    "wiener": ContextOnly,
    "pca-local": PcaLocalOptions,
    "golden": GoldenOptions,
    "golden-sharded": GoldenOptions,
    "els": ElsOptions,
    "ls": ElsOptions,
    "nearest": StreamOptions,
    "neural": NeuralOptions,
    "jax": ModelOptions,
    "torch": TorchModelOptions,
    "diffusers": TorchModelOptions,
}


def denoiser_options(name: str, settings: dict, *, sigmas=None, seed: int = 0) -> Options:
    """The options object of denoiser `name` from a settings dict (keys of other components are not read)."""
    from diffcli.errors import unknown_choice

    if name not in DENOISER_OPTIONS:
        raise unknown_choice("denoiser", name, DENOISER_OPTIONS)
    return DENOISER_OPTIONS[name].from_settings(settings, sigmas=sigmas, seed=seed)


"""Denoisers by name. Each factory is `build(index, opts) -> AbstractDenoiser`, with opts
the denoiser's own options class (denoisers/options.py)."""

from diffcli.registry import resolve

DENOISERS = {
    "empirical": "diffcli.denoisers.empirical:build",
    "empirical-sharded": "diffcli.parallel.denoiser:build",  # index rows sharded over every device
    "gmm": "diffcli.denoisers.gmm:build",
    "wiener": "diffcli.denoisers.wiener:build",
    "pca-local": "diffcli.denoisers.pca_local:build",
    "golden": "diffcli.denoisers.golden:build",
    "golden-sharded": "diffcli.parallel.golden:build",  # index rows sharded over every device
    "els": "diffcli.denoisers.els:build_els",
    "ls": "diffcli.denoisers.els:build_ls",
    "nearest": "diffcli.denoisers.nearest:build",
    "neural": "diffcli.denoisers.neural:build",
    "jax": "diffcli.denoisers.jax_model:build",  # a JAX network from FILE.py:FACTORY or package.module:FACTORY
    "torch": "diffcli.denoisers.torch_model:build_torch",  # a PyTorch module, run behind a host callback
    "diffusers": "diffcli.denoisers.torch_model:build_diffusers",  # a local diffusers UNet2DModel folder
}


def denoiser_factory(name: str):
    """The factory registered as `name`; unknown names are a usage error listing the choices."""
    return resolve("denoiser", DENOISERS, name)


def build_denoiser(name: str, index, opts):
    """The denoiser `name` over `index`."""
    return denoiser_factory(name)(index, opts)

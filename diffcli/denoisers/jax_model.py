"""A JAX network from outside as a denoiser: `--denoiser jax --model FILE.py:FACTORY` (or package.module:FACTORY)."""

from __future__ import annotations

from diffcli.models.external import call_factory, given_parameterisation, split_returned
from diffcli.models.wrappers import ModelDenoiser, check_on_batch, resolve_parameterisation


def build(index, opts) -> ModelDenoiser:
    """The factory's JAX-traceable `f(x, t_or_sigma)`, wrapped by its parameterisation and traced once on a small
    batch of the index's shape."""
    shape = tuple(int(v) for v in index.shape)
    returned = call_factory(opts.model, shape, denoiser="jax")
    net, declared = split_returned(returned, spec=opts.model)
    source = f"the model '{opts.model}'"
    param = resolve_parameterisation(given_parameterisation(opts), declared, source=source)
    denoiser = ModelDenoiser.wrap(net, param, source=source)
    check_on_batch(denoiser, shape)
    return denoiser

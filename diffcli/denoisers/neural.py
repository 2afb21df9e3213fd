"""The trained reference network as a denoiser: an EDM-preconditioned U-Net/MLP loaded from a model file."""

from __future__ import annotations

import jax.numpy as jnp

from diffcli.denoisers.base import AbstractDenoiser, batch_sigma
from diffcli.errors import DiffcliError, UsageError
from diffcli.models.precond import EDMPrecond


class NeuralDenoiser(AbstractDenoiser):
    """D(x, sigma) from the network; at sigma = 0 it returns x exactly (c_skip = 1, c_out = 0)."""

    model: EDMPrecond

    def __call__(self, x, sigma, *, key=None):
        s = batch_sigma(sigma, x.shape[0])
        safe = jnp.maximum(s, 1e-6)  # ln(0) in c_noise would poison the output through 0 * nan
        out = self.model(x, safe)
        return jnp.where((s > 0).reshape((-1,) + (1,) * (x.ndim - 1)), out, x)

    def features(self, x, sigma):
        """The network's bottleneck features [B, F] at noise level sigma."""
        return self.model.features(x, batch_sigma(sigma, x.shape[0]))


def load_neural(path: str, shape: tuple[int, ...] | None = None) -> NeuralDenoiser:
    """Load a model file; refuse one trained on another data shape."""
    from diffcli.models.saved import load_model

    model, config, _ = load_model(path)
    if shape is not None and tuple(config.shape) != tuple(shape):
        raise DiffcliError(f"model '{path}' was trained on samples of shape {tuple(config.shape)}, not {tuple(shape)}.")
    return NeuralDenoiser(model)


def build(index, opts) -> NeuralDenoiser:
    """Factory for `--denoiser neural --model FILE`."""
    if not opts.model:
        raise UsageError("the neural denoiser needs a model file: pass --model FILE (from diffcli train).")
    return load_neural(opts.model, tuple(index.shape))
